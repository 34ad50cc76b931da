//! The compile driver: one fresh interpreter per call (a package, or the
//! app), files in sorted order, each compiled by `py_compile` with its final
//! in-image path as `dfile` into a PEP 552 hash-based pyc.

use super::runner::Interpreter;
use super::{BytecodeError, Mode};
use crate::layer::ImagePath;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

/// Reads NUL-separated (source, dfile, cfile) triples on stdin; prints one
/// `FAIL <index> <line> <message>` line per file that does not compile.
///
/// It does what `py_compile.compile` does for a hash-based pyc (read, `compile`
/// with `dont_inherit`, `_code_to_hash_pyc` over `_imp.source_hash`), with
/// only the modules every interpreter has frozen in: importing `py_compile`
/// compiles enum, re, traceback and tokenize from source on a base without
/// stdlib pycs, about 85 ms of every interpreter's start.
const DRIVER: &str = r#"
import os, sys, _imp, _frozen_importlib_external as ext
checked = {"checked-hash": True, "unchecked-hash": False}[sys.argv[1]]
items = sys.stdin.buffer.read().split(b"\0")
for n in range(len(items) // 3):
    src, dfile, cfile = (os.fsdecode(x) for x in items[3 * n:3 * n + 3])
    with open(src, "rb") as f:
        data = f.read()
    try:
        code = compile(data, dfile, "exec", dont_inherit=True, optimize=-1)
    except Exception as v:
        line = getattr(v, "lineno", None) or ""
        msg = (getattr(v, "msg", None) or str(v)).replace("\n", " ").replace("\t", " ")
        sys.stdout.write("FAIL\t%d\t%s\t%s: %s\n" % (n, line, type(v).__name__, msg))
        continue
    pyc = ext._code_to_hash_pyc(code, _imp.source_hash(ext._RAW_MAGIC_NUMBER, data), checked)
    del code
    os.makedirs(os.path.dirname(cfile), exist_ok=True)
    with open(cfile, "wb") as f:
        f.write(pyc)
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

/// Compiles `sources` (sorted here by image path) in one fresh interpreter.
/// `label` names the package or the app in errors.
pub fn compile(
    interp: &Interpreter,
    mode: Mode,
    label: &str,
    mut sources: Vec<Source>,
    scratch: &std::path::Path,
) -> Result<Compiled, BytecodeError> {
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Compiled::default();
    if sources.is_empty() {
        return Ok(out);
    }
    let driver_err = |reason: String| BytecodeError::Driver {
        label: label.to_owned(),
        reason,
    };
    let mut input = Vec::new();
    let mut cfiles = Vec::new();
    for (n, s) in sources.iter().enumerate() {
        let cfile = scratch.join(format!("{n}.pyc"));
        for part in [
            s.host.as_os_str().as_encoded_bytes(),
            s.path.absolute().as_bytes(),
            cfile.as_os_str().as_encoded_bytes(),
        ] {
            input.extend_from_slice(part);
            input.push(0);
        }
        cfiles.push(cfile);
    }
    let mut child = interp
        .command()
        .args(["-c", DRIVER, mode.invalidation()])
        .current_dir(scratch)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| driver_err(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let result = child
        .wait_with_output()
        .map_err(|e| driver_err(e.to_string()))?;
    let _ = writer.join();
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(driver_err(last.map_or_else(
            || result.status.to_string(),
            |l| l.trim().to_owned(),
        )));
    }
    let mut failed = vec![false; sources.len()];
    for line in String::from_utf8_lossy(&result.stdout).lines() {
        let mut parts = line.splitn(4, '\t');
        if parts.next() != Some("FAIL") {
            continue;
        }
        let (Some(n), Some(l), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(n) = n.parse::<usize>().ok().filter(|n| *n < sources.len()) else {
            continue;
        };
        failed[n] = true;
        out.failed.push(Failure {
            path: sources[n].path.clone(),
            line: l.parse().ok(),
            message: msg.to_owned(),
        });
    }
    for (n, s) in sources.iter().enumerate() {
        if failed[n] {
            continue;
        }
        let Some(pyc) = pyc_path(&s.path, &interp.cache_tag) else {
            continue;
        };
        let bytes = std::fs::read(&cfiles[n])
            .map_err(|e| driver_err(format!("no pyc for {}: {e}", s.path.absolute())))?;
        out.pycs.push((pyc, bytes));
    }
    Ok(out)
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
