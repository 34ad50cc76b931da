//! One run of the PEP 517 driver (driver.py) in the sandbox: its stdout is
//! one JSON line and, for a wheel, the wheel's bytes, streamed into the
//! store; its stderr is kept (the last 64 KiB) for the error and for -v.

use crate::python::bytecode::runner::Interpreter;
use crate::sandbox::Watchdog;
use crate::store::Store;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const DRIVER: &str = include_str!("driver.py");
/// How much of the build's output is kept for the error and for -v.
const TAIL: usize = 64 << 10;
/// A built wheel larger than this is refused.
const WHEEL_LIMIT: u64 = 2 << 30;
/// Fixed, so a backend that stamps files (wheel's zip dates) stamps them the same.
pub const SOURCE_DATE_EPOCH: &str = "315532800";

/// What one run gave.
pub enum Outcome {
    /// The backend asked for these requirements besides the environment's.
    Missing(Vec<String>),
    /// A wheel, in the store.
    Wheel {
        filename: String,
        digest: crate::digest::Digest,
        size: u64,
    },
    /// The run failed: its output's tail, and the limit it ran past if so.
    Failed {
        log: String,
        timed_out: Option<Duration>,
    },
}

/// The driver's inputs, as the host sees them.
pub struct Inputs<'a> {
    pub sdist: &'a Path,
    pub env: &'a Path,
    pub backend: &'a str,
    pub backend_path: &'a [String],
    /// Requirements the host has settled (pinned, or not for this target).
    pub known: &'a [String],
}

#[derive(serde::Deserialize)]
struct Header {
    missing: Option<Vec<String>>,
    wheel: Option<String>,
    size: Option<u64>,
}

/// Runs the driver once; `Err` only for what is not the build's fault
/// (the sandbox, the store, a broken pipe).
pub fn run(interp: &Interpreter, store: &Store, inputs: &Inputs) -> Result<Outcome, String> {
    let sdist_dir = inputs.sdist.parent().expect("a file in the store");
    let (mut cmd, _scratch, seen) = interp
        .build_command(
            &[sdist_dir, inputs.env],
            &[
                ("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH),
                // A compiler on the whole base is found where the base keeps it.
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ],
        )
        .map_err(|e| crate::text::error_chain(&e))?;
    let sdist_name = inputs.sdist.file_name().expect("a file name");
    cmd.arg("-c")
        .arg(DRIVER)
        .arg(seen[0].join(sdist_name))
        .arg(&seen[1])
        .arg(inputs.backend)
        .arg(serde_json::to_string(inputs.backend_path).expect("strings"))
        .arg(serde_json::to_string(inputs.known).expect("strings"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("the base's Python did not start: {e}"))?;
    let limit = interp.build_time_limit();
    let watchdog = Watchdog::start(child.id(), limit);
    let mut err = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || keep_tail(&mut err));
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let read = read_result(&mut out, store);
    // Whatever the driver left unread is drained, so it never blocks on a full pipe.
    let _ = io::copy(&mut out, &mut io::sink());
    let status = child.wait().map_err(|e| e.to_string())?;
    let timed_out = watchdog.done().then_some(limit);
    let log = stderr.join().unwrap_or_default();
    match read? {
        Some(outcome) if status.success() || matches!(outcome, Outcome::Missing(_)) => Ok(outcome),
        _ => Ok(Outcome::Failed { log, timed_out }),
    }
}

/// The header line and, for a wheel, its bytes into the store.
fn read_result(out: &mut BufReader<impl Read>, store: &Store) -> Result<Option<Outcome>, String> {
    let mut line = Vec::new();
    out.by_ref()
        .take(TAIL as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    let Ok(header) = serde_json::from_slice::<Header>(&line) else {
        return Ok(None);
    };
    if let Some(missing) = header.missing {
        return Ok(Some(Outcome::Missing(missing)));
    }
    let (Some(filename), Some(size)) = (header.wheel, header.size) else {
        return Ok(None);
    };
    if size > WHEEL_LIMIT {
        return Err(format!("the built wheel {filename} is over 2 GiB"));
    }
    let (digest, written, ()) = store
        .write_blob(|w| io::copy(&mut out.take(size), w).map(|_| ()))
        .map_err(|e| crate::text::error_chain(&e))?;
    if written != size {
        return Ok(None);
    }
    Ok(Some(Outcome::Wheel {
        filename,
        digest,
        size,
    }))
}

/// The last [`TAIL`] bytes of a stream, as text.
fn keep_tail(r: &mut impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * TAIL {
            kept.drain(..kept.len() - TAIL);
        }
    }
    if kept.len() > TAIL {
        kept.drain(..kept.len() - TAIL);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// What a failed build's output says a C extension lacked: the compiler,
/// or the Python headers.
pub fn missing_for_c(log: &str) -> Option<&'static str> {
    if log
        .lines()
        .any(|l| l.contains("Python.h: No such file or directory"))
    {
        return Some("the base lacks the Python headers (Python.h; Debian: python3-dev)");
    }
    wanted_a_compiler(log).then_some("the base has no C compiler")
}

/// Whether a failed build's output says a C (or C++) compiler was missing.
fn wanted_a_compiler(log: &str) -> bool {
    log.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        let compiler = ["gcc", "'cc'", "g++", "c++", "clang"]
            .iter()
            .any(|c| l.contains(c));
        (compiler
            && (l.contains("no such file or directory")
                || l.contains("not found")
                || l.contains("unable to execute")))
            || l.contains("unknown compiler")
            || l.contains("no c compiler")
            || l.contains("no cmake_c_compiler")
    })
}

/// The last line of a build's output that says something.
pub fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_compiler_is_recognised_in_the_output_of_common_backends() {
        for log in [
            "building 'x._speedups' extension\nerror: command 'x86_64-linux-gnu-gcc' failed: No such file or directory\n",
            "error: command 'cc' failed: No such file or directory",
            "../meson.build:1:0: ERROR: Unknown compiler(s): [['cc'], ['gcc'], ['clang']]",
        ] {
            assert!(wanted_a_compiler(log), "{log}");
        }
        assert!(!wanted_a_compiler(
            "ModuleNotFoundError: No module named 'setuptools_scm'"
        ));
    }

    #[test]
    fn the_tail_keeps_the_end_of_a_long_output() {
        let text = format!("{}\nTHE END\n", "x".repeat(5 * TAIL));
        let got = keep_tail(&mut text.as_bytes());
        assert_eq!(got.len(), TAIL);
        assert!(got.ends_with("THE END\n"));
        assert_eq!(last_line(&got), "THE END");
    }
}
