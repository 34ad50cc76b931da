//! Lockfiles for the fixture projects, made at test time by uv.
//!
//! No lockfile is committed: a lock names its package index, and the repository must not.
//! `--exclude-newer` pins the resolution to a date so reruns resolve the same versions.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages uploaded after this are invisible to the resolver.
pub const EXCLUDE_NEWER: &str = "2026-11-01T00:00:00Z";

/// Copies `project_dir` (a fixture such as `fixtures/hello-api`) into a fresh directory
/// under the cargo target's tmp dir, runs `uv lock` there, and returns the copy, which
/// then holds `uv.lock`. Each call gets its own copy, so tests may edit it.
pub fn uv_lock(project_dir: &Path) -> PathBuf {
    let name = project_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".into());
    let dir = super::target_tempdir(&format!("uv-{name}-")).keep();
    copy_project(project_dir, &dir);
    uv(&dir, &["lock", "--exclude-newer", EXCLUDE_NEWER]);
    assert!(
        dir.join("uv.lock").is_file(),
        "uv lock wrote no uv.lock in {}",
        dir.display()
    );
    dir
}

/// `uv export --format requirements-txt` (with hashes) of a locked project; returns the
/// path of the written `requirements.txt`.
pub fn uv_export_requirements(dir: &Path) -> PathBuf {
    let out = dir.join("requirements.txt");
    uv(
        dir,
        &[
            "export",
            "--format",
            "requirements-txt",
            "--frozen",
            "--no-emit-project",
            "--output-file",
            "requirements.txt",
        ],
    );
    out
}

/// `uv export --format pylock.toml` of a locked project; returns the path of the written
/// `pylock.toml`.
pub fn uv_export_pylock(dir: &Path) -> PathBuf {
    let out = dir.join("pylock.toml");
    uv(
        dir,
        &[
            "export",
            "--format",
            "pylock.toml",
            "--frozen",
            "--no-emit-project",
            "--output-file",
            "pylock.toml",
        ],
    );
    out
}

/// Runs `uv ARGS` in `dir`, panicking with its output on failure.
pub fn uv(dir: &Path, args: &[&str]) {
    let out = Command::new("uv")
        .args(args)
        .current_dir(dir)
        // Resolve with the host's Python; never download an interpreter.
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_NO_PROGRESS", "1")
        .output()
        .expect("cannot run uv; run scripts/setup.sh (pip install uv)");
    super::stdout_ok(&out, &format!("uv {} in {}", args.join(" "), dir.display()));
}

/// Copies the project's source files, leaving out what a developer's checkout may hold
/// but a fixture must not carry into a test (a venv, a stale lock, bytecode).
fn copy_project(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap_or_else(|e| panic!("cannot walk {}: {e}", from.display()));
        let rel = entry
            .path()
            .strip_prefix(from)
            .expect("walkdir stays under its root");
        let skip = rel.components().any(|c| {
            let c = c.as_os_str();
            c == ".venv" || c == "__pycache__"
        }) || rel == Path::new("uv.lock");
        if skip {
            continue;
        }
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)
        } else {
            std::fs::copy(entry.path(), &dest).map(|_| ())
        }
        .unwrap_or_else(|e| {
            panic!(
                "cannot copy {} to {}: {e}",
                entry.path().display(),
                dest.display()
            )
        });
    }
}

/// `lock` (a uv.lock or poetry.lock text) with every sha256 in `package`'s
/// `[[package]]` block (its sdist's and its wheels') replaced by zeros, a
/// hash no index publishes.
pub fn with_zeroed_hashes(lock: &str, package: &str) -> String {
    let start = lock
        .find(&format!("name = \"{package}\""))
        .unwrap_or_else(|| panic!("{package} in the lock"));
    let end = lock[start..]
        .find("[[package]]")
        .map_or(lock.len(), |i| start + i);
    let zeros = format!("sha256:{}", "0".repeat(64));
    let mut block = lock[start..end].to_string();
    let mut from = 0;
    while let Some(i) = block[from..].find("sha256:").map(|i| from + i) {
        block.replace_range(i..i + zeros.len(), &zeros);
        from = i + zeros.len();
    }
    format!("{}{block}{}", &lock[..start], &lock[end..])
}
