//! The compile driver: one fresh interpreter per call (a package, or the
//! app), files in sorted order, each compiled as `py_compile` would with its
//! final in-image path as `dfile` into a PEP 552 hash-based pyc.
//!
//! Sources go to the interpreter on its stdin and pycs come back on its
//! stdout: no file is written for either. Staging them as files cost three
//! file creations and two deletions per source, and ext4 makes a creation
//! slow right after many deletions (its inode allocator steps over recently
//! freed inodes): a quarter of a cold numpy/pandas/scipy build's CPU.

use super::runner::Interpreter;
use super::{BytecodeError, Mode};
use crate::layer::ImagePath;
use crate::sandbox::{Scratch, Watchdog};
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::thread::JoinHandle;

/// Reads, on stdin, `SIZE DLEN\n` then the dfile's DLEN bytes and the
/// source's SIZE bytes, for each file; writes, on stdout, `SIZE\n` and the
/// pyc's bytes, or one `FAIL\t<line>\t<message>\n` line, for each in turn.
///
/// It does what `py_compile.compile` does for a hash-based pyc (`compile` with
/// `dont_inherit`, `_code_to_hash_pyc` over `_imp.source_hash`), with only
/// the modules every interpreter has frozen in: importing `py_compile`
/// compiles enum, re, traceback and tokenize from source on a base without
/// stdlib pycs, about 85 ms of every interpreter's start. The imports stay
/// exactly these: marshal marks a string interned depending on which modules
/// the interpreter has loaded, so they are part of the pycs' bytes.
///
/// The number `source_hash` is keyed with is `_RAW_MAGIC_NUMBER` up to 3.13;
/// 3.14 removed it for the same value as `_imp.pyc_magic_number_token`, hence
/// the getattr fallback rather than a version switch. What it needs is looked
/// up once before the first source, so an interpreter whose internals differ
/// (one newer than imgbuild knows) says so in one `UNSUPPORTED` line on
/// stderr, read by [`unsupported`], instead of a traceback. Its new names
/// are one letter long, as CPython keeps one shared object per one-letter
/// string: with this driver the 3.11 pycs of the stdlib, fastapi, uvicorn
/// and numpy stayed byte for byte those of the one before it.
const DRIVER: &str = r#"
import os, sys, _imp, _frozen_importlib_external as ext
checked = {"checked-hash": True, "unchecked-hash": False}[sys.argv[1]]
src, out = sys.stdin.buffer, sys.stdout.buffer
try:
    m = getattr(ext, "_RAW_MAGIC_NUMBER", None) or _imp.pyc_magic_number_token
    h, p = _imp.source_hash, ext._code_to_hash_pyc
except AttributeError as e:
    sys.stderr.write("UNSUPPORTED\t%d.%d.%d\t%s\n" % (sys.version_info[:3] + (e,)))
    sys.exit(3)
while True:
    head = src.readline()
    if not head:
        break
    size, dlen = (int(x) for x in head.split())
    dfile = os.fsdecode(src.read(dlen))
    data = src.read(size)
    try:
        code = compile(data, dfile, "exec", dont_inherit=True, optimize=-1)
    except Exception as v:
        line = getattr(v, "lineno", None) or ""
        msg = (getattr(v, "msg", None) or str(v)).replace("\n", " ").replace("\t", " ")
        out.write(("FAIL\t%s\t%s: %s\n" % (line, type(v).__name__, msg)).encode("utf-8", "backslashreplace"))
        continue
    pyc = p(code, h(m, data), checked)
    del code
    out.write(b"%d\n" % len(pyc))
    out.write(pyc)
out.flush()
"#;

/// One `.py` to compile: where it will be in the image, and where its bytes are now.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: ImagePath,
    pub host: PathBuf,
}

/// A source that did not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub path: ImagePath,
    pub line: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}, line {l}: {}", self.path.absolute(), self.message),
            None => write!(f, "{}: {}", self.path.absolute(), self.message),
        }
    }
}

/// What one interpreter made: each pyc's path in the image and its bytes.
#[derive(Debug, Default)]
pub struct Compiled {
    pub pycs: Vec<(ImagePath, Vec<u8>)>,
    pub failed: Vec<Failure>,
}

/// `dir/__pycache__/name.cpython-311.pyc` for `dir/name.py` (PEP 3147).
pub fn pyc_path(source: &ImagePath, cache_tag: &str) -> Option<ImagePath> {
    let stem = source.file_name().strip_suffix(".py")?;
    let name = format!("__pycache__/{stem}.{cache_tag}.pyc");
    match source.parent() {
        Some(dir) => dir.join(&name).ok(),
        None => ImagePath::new(&name).ok(),
    }
}

/// Compiles `sources` (sorted here by image path, read from their host
/// files) in one fresh interpreter. `label` names the package or the app in
/// errors.
pub fn compile(
    interp: &Interpreter,
    mode: Mode,
    label: &str,
    mut sources: Vec<Source>,
) -> Result<Compiled, BytecodeError> {
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    if sources.is_empty() {
        return Ok(Compiled::default());
    }
    let mut session = Session::start(interp, mode, label)?;
    for s in &sources {
        let data = std::fs::read(&s.host).map_err(|source| BytecodeError::Stage {
            label: label.to_owned(),
            path: s.host.display().to_string(),
            source,
        })?;
        session.add(&s.path, &data);
    }
    session.finish()
}

/// One interpreter compiling the sources it is given, in the order given.
pub struct Session {
    label: String,
    cache_tag: String,
    child: Child,
    /// Kills the interpreter at its deadline.
    watchdog: Watchdog,
    /// The sandbox's scratch directory, kept while the interpreter runs.
    _scratch: Scratch,
    stdin: Option<io::BufWriter<ChildStdin>>,
    /// Read on their own threads, so the interpreter never blocks on a full pipe.
    stdout: JoinHandle<io::Result<Vec<Answer>>>,
    stderr: JoinHandle<io::Result<Vec<u8>>>,
    paths: Vec<ImagePath>,
}

impl Session {
    pub fn start(interp: &Interpreter, mode: Mode, label: &str) -> Result<Session, BytecodeError> {
        let _span = crate::trace::span(|| format!("bytecode: start the interpreter for {label}"));
        let (mut cmd, scratch) = interp.command()?;
        let mut child = cmd
            .args(["-c", DRIVER, mode.invalidation()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| driver_err(label, e.to_string()))?;
        let out = io::BufReader::new(child.stdout.take().expect("piped"));
        let stdout = std::thread::spawn(move || read_answers(out));
        let mut err = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut all = Vec::new();
            err.read_to_end(&mut all).map(|_| all)
        });
        let stdin = io::BufWriter::with_capacity(64 << 10, child.stdin.take().expect("piped"));
        let watchdog = Watchdog::start(child.id(), interp.time_limit());
        Ok(Session {
            label: label.to_owned(),
            cache_tag: interp.cache_tag.clone(),
            child,
            watchdog,
            _scratch: scratch,
            stdin: Some(stdin),
            stdout,
            stderr,
            paths: Vec::new(),
        })
    }

    /// Sends one source, to be compiled as `path` in the image.
    pub fn add(&mut self, path: &ImagePath, source: &[u8]) {
        self.paths.push(path.clone());
        // A closed pipe means the interpreter stopped: finish() says why.
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        let dfile = path.absolute();
        let sent = writeln!(stdin, "{} {}", source.len(), dfile.len())
            .and_then(|()| stdin.write_all(dfile.as_bytes()))
            .and_then(|()| stdin.write_all(source));
        if sent.is_err() {
            self.stdin = None;
        }
    }

    /// Waits for the interpreter and reads its answers, one per source.
    pub fn finish(mut self) -> Result<Compiled, BytecodeError> {
        let label = self.label.clone();
        let _span =
            crate::trace::span(|| format!("bytecode: {} sources of {label}", self.paths.len()));
        if let Some(mut stdin) = self.stdin.take() {
            // Closing stdin (by dropping it) ends the driver's loop.
            let _ = stdin.flush();
        }
        let status = self.child.wait();
        let killed = self.watchdog.done();
        let status = status.map_err(|e| driver_err(&label, e.to_string()))?;
        let stdout = self
            .stdout
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("reader panicked")));
        let stderr = self
            .stderr
            .join()
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if killed {
            return Err(driver_err(
                &label,
                "it ran past its time limit and was stopped".into(),
            ));
        }
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            if let Some(e) = unsupported(&stderr) {
                return Err(e);
            }
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(driver_err(
                &label,
                last.map_or_else(|| status.to_string(), |l| l.trim().to_owned()),
            ));
        }
        let answers = stdout.map_err(|e| driver_err(&label, e.to_string()))?;
        if answers.len() != self.paths.len() {
            return Err(driver_err(
                &label,
                format!("{} answers for {} sources", answers.len(), self.paths.len()),
            ));
        }
        let mut compiled = Compiled::default();
        for (path, answer) in self.paths.into_iter().zip(answers) {
            match answer {
                Answer::Pyc(bytes) => {
                    if let Some(at) = pyc_path(&path, &self.cache_tag) {
                        compiled.pycs.push((at, bytes));
                    }
                }
                Answer::Failed { line, message } => compiled.failed.push(Failure {
                    path,
                    line,
                    message,
                }),
            }
        }
        Ok(compiled)
    }
}

/// What the driver said of one source.
enum Answer {
    Pyc(Vec<u8>),
    Failed { line: Option<u32>, message: String },
}

/// The driver's answers as they come: each pyc is read into its own buffer,
/// never the whole output into one.
fn read_answers(mut out: impl BufRead) -> io::Result<Vec<Answer>> {
    let mut answers = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if out.read_until(b'\n', &mut line)? == 0 {
            return Ok(answers);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        if let Some(fail) = text.strip_prefix("FAIL\t") {
            let (at, message) = fail.split_once('\t').unwrap_or(("", fail));
            answers.push(Answer::Failed {
                line: at.parse().ok(),
                message: message.to_owned(),
            });
            continue;
        }
        let size: usize = text
            .parse()
            .map_err(|_| io::Error::other(format!("unexpected driver output {text:?}")))?;
        let mut pyc = vec![0; size];
        out.read_exact(&mut pyc)?;
        answers.push(Answer::Pyc(pyc));
    }
}

/// The driver's `UNSUPPORTED\tVERSION\tREASON` line, if it wrote one: the
/// interpreter lacks an internal the driver compiles with.
fn unsupported(stderr: &str) -> Option<BytecodeError> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("UNSUPPORTED\t"))?;
    let (version, reason) = line.split_once('\t').unwrap_or((line, ""));
    Some(BytecodeError::UnsupportedInternals {
        version: version.to_owned(),
        reason: reason.trim().to_owned(),
    })
}

fn driver_err(label: &str, reason: String) -> BytecodeError {
    BytecodeError::Driver {
        label: label.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pycs_go_in_the_sources_pycache_with_the_cache_tag() {
        let p = |s: &str| ImagePath::new(s).unwrap();
        assert_eq!(
            pyc_path(
                &p("app/.venv/lib/python3.11/site-packages/yaml/__init__.py"),
                "cpython-311"
            ),
            Some(p(
                "app/.venv/lib/python3.11/site-packages/yaml/__pycache__/__init__.cpython-311.pyc"
            ))
        );
        assert_eq!(
            pyc_path(&p("main.py"), "cpython-312"),
            Some(p("__pycache__/main.cpython-312.pyc"))
        );
        assert_eq!(pyc_path(&p("app/data.txt"), "cpython-311"), None);
    }

    #[test]
    fn missing_internals_are_one_line_naming_the_version_and_the_way_out() {
        let stderr =
            "UNSUPPORTED\t3.16.0\tmodule '_imp' has no attribute 'pyc_magic_number_token'\n";
        let err = unsupported(stderr).expect("an unsupported interpreter");
        let text = err.to_string();
        assert!(text.contains("Python 3.16.0"), "{text}");
        assert!(text.contains("pyc_magic_number_token"), "{text}");
        assert!(text.contains("`bytecode = false`"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(unsupported("Traceback (most recent call last):\nMemoryError\n").is_none());
    }

    #[test]
    fn failures_show_the_image_path_and_line() {
        let f = Failure {
            path: ImagePath::new("app/main.py").unwrap(),
            line: Some(3),
            message: "SyntaxError: invalid syntax".into(),
        };
        assert_eq!(
            f.to_string(),
            "/app/main.py, line 3: SyntaxError: invalid syntax"
        );
    }
}
