//! Every CPython from 3.9 to 3.15 on the default path (issue 22): the same small
//! FastAPI app (fixtures/pythons-api), built with default settings (bytecode on) on
//! Debian's own Python of each suite, gives the same digest from two cold caches,
//! serves /health under podman from the Python it was built for, and imports every
//! module it loads (the stdlib's included) from a pyc, compiling none.
//!
//! The bases come from `scripts/build-base-image.sh` with SUITE and PYTHON set (about
//! a minute each the first time, then cached); amd64 only, to keep the cost down.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Removes a test's project directory (caches and outputs) when dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One Debian Python: the suite, the interpreter package, and the version it gives.
struct DebianPython {
    suite: &'static str,
    package: &'static str,
    minor: &'static str,
}

#[test]
fn python_3_9_on_bullseye() {
    check(DebianPython {
        suite: "bullseye",
        package: "python3",
        minor: "3.9",
    });
}

#[test]
fn python_3_11_on_bookworm() {
    check(DebianPython {
        suite: "bookworm",
        package: "python3",
        minor: "3.11",
    });
}

#[test]
fn python_3_13_on_trixie() {
    check(DebianPython {
        suite: "trixie",
        package: "python3",
        minor: "3.13",
    });
}

#[test]
fn python_3_14_on_sid() {
    check(DebianPython {
        suite: "sid",
        package: "python3",
        minor: "3.14",
    });
}

/// sid carries python3.15 beside its default python3 (3.14): the base has only
/// /usr/bin/python3.15, which imgbuild finds on PATH as the newest python3.X.
#[test]
fn python_3_15_on_sid() {
    check(DebianPython {
        suite: "sid",
        package: "python3.15",
        minor: "3.15",
    });
}

fn check(py: DebianPython) {
    let base = support::base::debian_python_base("amd64", py.suite, py.package, &[]);
    let project = locked_project(&base);
    let _removed = Removed(project.clone());

    let first = build(&project, "cache-a", "out-a");
    let second = build(&project, "cache-b", "out-b");
    assert_eq!(
        first, second,
        "Python {}: two builds from two cold caches gave different digests",
        py.minor
    );

    records_its_python(&project.join("out-a"), py.minor);
    let reference = format!("oci:{}:latest", project.join("out-a").display());
    let image = support::podman::import(&reference, None);
    serves_health(&image, py.minor);
    loads_only_pycs(&image, py.minor);
    support::podman::remove_image(&image);
}

/// A locked copy of the fixture with settings for `base` and nothing else: every
/// other setting (bytecode among them) is the default.
fn locked_project(base: &Path) -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture("pythons-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"pythons_api.main:app\"\nexclude = [\"cache-*\", \"out-*\"]\n",
            base.display()
        ),
    )
    .unwrap();
    project
}

/// The manifest's record (for `imgbuild rebase`) names the base's Python and
/// the pyc magic number its interpreter writes (all of CPython's end in \r\n).
fn records_its_python(layout: &Path, minor: &str) {
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let record: serde_json::Value = serde_json::from_str(
        manifest["annotations"]["dev.imgbuild.image"]
            .as_str()
            .expect("the manifest has a record"),
    )
    .unwrap();
    let version = record["python"]["version"].as_str().unwrap_or_default();
    assert!(version.starts_with(&format!("{minor}.")), "{record}");
    let magic = record["pyc-magic"].as_str().unwrap_or_default();
    assert!(
        magic.len() == 8 && magic.ends_with("0d0a"),
        "Python {minor}: {record}"
    );
}

/// `imgbuild build` with its own cache; returns the digest it printed.
fn build(project: &Path, cache: &str, out: &str) -> String {
    let output = support::imgbuild_command(
        project,
        &[
            "build",
            "--output",
            &format!("oci:{out}"),
            "--cache-dir",
            cache,
        ],
    )
    .output()
    .expect("run imgbuild");
    support::last_line(&output, "imgbuild build")
}

/// The image's own command serves /health, from the Python the base has.
fn serves_health(image: &str, minor: &str) {
    let container = support::podman::run_detached(image, &[], 8000);
    let body = container.wait_ready("/health", Duration::from_secs(60));
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON from /health");
    assert_eq!(health["status"], "ok", "{body}");
    let served_by = health["python"].as_str().unwrap_or_default();
    assert!(
        served_by.starts_with(&format!("{minor}.")),
        "/health was served by Python {served_by}, not {minor}: {body}"
    );
}

/// Imports the app and the server the way the image's command does, in a read-only
/// container, with `-v`: Python says "code object from '<x>.py'" for each module it
/// compiles from source and "<pyc> matches <x>.py" for each pyc it takes.
fn loads_only_pycs(image: &str, minor: &str) {
    let run = support::podman::run_to_completion_with(
        &["--read-only", "--entrypoint", "/app/.venv/bin/python"],
        image,
        &[
            "-v",
            "-X",
            "importtime",
            "-c",
            "import uvicorn.main, pythons_api.main",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let compiled = support::podman::compiled_at_start(&run.stderr);
    assert!(
        compiled.is_empty(),
        "Python {minor} compiled at start: {compiled:#?}"
    );
    let tag = format!("cpython-{}", minor.replace('.', ""));
    let from_pycs = run
        .stderr
        .lines()
        .filter(|l| l.contains(&format!(".{tag}.pyc matches ")))
        .count();
    // The app, fastapi, pydantic, uvicorn and the stdlib under them: hundreds.
    assert!(
        from_pycs > 100,
        "Python {minor}: only {from_pycs} modules came from pycs:\n{}",
        run.stderr
    );
    for pyc in [
        format!("/app/pythons_api/__pycache__/main.{tag}.pyc matches /app/pythons_api/main.py"),
        format!("/usr/lib/python{minor}/__pycache__/typing.{tag}.pyc matches"),
    ] {
        assert!(run.stderr.contains(&pyc), "no {pyc:?} in:\n{}", run.stderr);
    }
    assert!(
        run.stderr.contains("import time:") && run.stderr.contains("pythons_api.main"),
        "{}",
        run.stderr
    );
    eprintln!("Python {minor}: {from_pycs} modules loaded from pycs, none compiled");
}

/// A base whose Python is newer than imgbuild knows (its files say 3.16) fails
/// before anything runs, in one line naming the version and `bytecode = false`.
#[test]
fn a_python_newer_than_imgbuild_knows_fails_in_one_line() {
    let sysconfig =
        b"build_time_vars = {'SOABI': 'cpython-316-x86_64-linux-gnu', 'VERSION': '3.16'}\n";
    let files: [(&str, &[u8]); 3] = [
        (
            "usr/lib/python3.11/_sysconfigdata__linux_x86_64-linux-gnu.py",
            sysconfig,
        ),
        (
            "usr/lib/python3.11/_sysconfigdata__x86_64-linux-gnu.py",
            sysconfig,
        ),
        (
            "usr/include/python3.16/patchlevel.h",
            b"#define PY_VERSION \"3.16.0\"\n",
        ),
    ];
    let base = support::base::with_files(&support::base::base_image("amd64"), &files);
    let tmp = support::target_tempdir("pythons-316-");
    let source = support::fixture_without_dependencies("pythons-api", &tmp.path().join("app"));
    std::fs::write(
        source.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"pythons_api.main:app\"\n",
            base.display()
        ),
    )
    .unwrap();
    let out = support::imgbuild_command(&source, &["build", "--output", "oci:out"])
        .output()
        .expect("run imgbuild");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 3.16 base built: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for word in ["Python 3.16.0", "`bytecode = false`", "3.9 to 3.15"] {
        assert!(errors[0].contains(word), "{word:?} not in {:?}", errors[0]);
    }
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert!(!source.join("out").exists(), "an image was written");
}
