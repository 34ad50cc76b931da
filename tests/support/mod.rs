//! Shared helpers for the end-to-end tests: the Debian base images, podman, and uv.
//!
//! Each test crate includes this with `mod support;` and uses only part of it, so the
//! unused rest must not warn.
#![allow(dead_code)]

pub mod base;
pub mod containerd;
pub mod fake_registry;
pub mod https;
pub mod layout;
pub mod podman;
pub mod push;
pub mod registry;
pub mod synthetic;
pub mod uv;

use std::path::PathBuf;

/// The imgbuild binary under test, run in `cwd` with `args`, without a
/// SOURCE_DATE_EPOCH from the caller's environment.
pub fn imgbuild_command(cwd: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// [`imgbuild_command`] with its output captured and no credentials from the
/// machine: no config.json, auth file or IMGBUILD_* variables.
pub fn without_credentials(cwd: &std::path::Path, args: &[&str]) -> std::process::Command {
    let isolated = cwd.join(".no-credentials");
    std::fs::create_dir_all(&isolated).unwrap();
    let mut cmd = imgbuild_command(cwd, args);
    cmd.env_remove("IMGBUILD_USERNAME")
        .env_remove("IMGBUILD_PASSWORD")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("DOCKER_CONFIG", &isolated)
        .env("XDG_RUNTIME_DIR", &isolated)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// imgbuild run in `cwd` with `args` and no credentials from the machine.
#[allow(dead_code)]
pub fn run_isolated(cwd: &std::path::Path, args: &[&str]) -> Run {
    Run::from(
        without_credentials(cwd, args)
            .output()
            .expect("cannot run imgbuild"),
    )
}

/// How an imgbuild run ended, with its output as text.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn must_succeed(self, what: &str) -> Run {
        assert!(
            self.success,
            "imgbuild {what} failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `cmd`, panicking with its stderr unless it succeeds; returns its output.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (run scripts/setup.sh): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The stdout of a run that must have succeeded; panics with both streams otherwise.
pub fn stdout_ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last line (the digest imgbuild prints) of a run that must have succeeded.
pub fn last_line(out: &std::process::Output, what: &str) -> String {
    stdout_ok(out, what)
        .lines()
        .last()
        .expect("a digest line")
        .to_string()
}

/// A fresh temporary directory named `PREFIX…` under cargo's target tmp dir.
pub fn target_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("cannot create a temp dir under the cargo target dir")
}

/// The repository root, where `scripts/`, `fixtures/` and `images/` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture project under `fixtures/`, e.g. `fixture("hello-api")`.
pub fn fixture(name: &str) -> PathBuf {
    let dir = repo_root().join("fixtures").join(name);
    assert!(dir.is_dir(), "no fixture directory {}", dir.display());
    dir
}

/// A copy of fixture `name` at `dest` whose pyproject.toml declares no
/// dependencies, for builds without a lockfile (a project that declares some
/// and has no lockfile is refused: its image would not start).
pub fn fixture_without_dependencies(name: &str, dest: &std::path::Path) -> PathBuf {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture(name))
        .arg(dest)
        .status()
        .expect("run cp");
    assert!(status.success(), "copying fixture {name}");
    let pyproject = std::fs::read_to_string(dest.join("pyproject.toml")).unwrap();
    let start = pyproject
        .find("dependencies = [")
        .expect("a dependencies list");
    let end = start + pyproject[start..].find("\n]").unwrap() + 2;
    std::fs::write(
        dest.join("pyproject.toml"),
        format!("{}{}", &pyproject[..start], &pyproject[end..]),
    )
    .unwrap();
    dest.to_path_buf()
}
