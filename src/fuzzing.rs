//! Entry points for the cargo-fuzz targets in `fuzz/` and for the test that
//! replays their regression corpus (`tests/fuzz_regressions.rs`). Not an API:
//! each function feeds arbitrary bytes to one parser the way a build would and
//! panics only where the parser broke a promise (a panic, or a round trip that
//! does not hold). See docs/reliability.md, "Fuzzing".

use crate::dockerignore::{self, Matcher};
use crate::lock::{self, IndexFile, LockError, LockOptions, SimpleIndex};
use crate::python::interpreter::{self, Libc, PythonInfo};
use crate::python::markers::MarkerEnv;
use crate::python::rootfs::RootFs;
use crate::python::tags::{Tags, WheelFilename};
use crate::python::venv::VenvTarget;
use crate::reference::{self, Reference};
use crate::registry::auth;
use std::fs;
use std::path::{Path, PathBuf};

/// The fuzz targets, as named in `fuzz/Cargo.toml` and under `fuzz/corpus/`.
pub const TARGETS: &[&str] = &[
    "reference",
    "lock",
    "spec",
    "www_authenticate",
    "wheel_filename",
    "dist_info",
    "dockerignore",
    "wheel",
    "base_layer",
];

/// A directory for the targets that read files (a requirements file, a wheel,
/// a spec's project directory). Made once per process; removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> std::io::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("imgbuild-fuzz").tempdir()?;
        // What a spec may name: an app directory and the lockfiles beside it.
        fs::create_dir_all(dir.path().join("app/src"))?;
        fs::write(dir.path().join("uv.lock"), "version = 1\n")?;
        fs::write(dir.path().join("requirements.txt"), "")?;
        fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"demo\"\n",
        )?;
        Ok(Scratch { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `target` on `data`; unknown targets panic (a typo in a corpus path).
pub fn run(target: &str, data: &[u8], scratch: &Scratch) {
    match target {
        "reference" => reference_target(data),
        "lock" => lock_target(data, scratch),
        "spec" => spec_target(data, scratch),
        "www_authenticate" => www_authenticate(data),
        "wheel_filename" => wheel_filename(data),
        "dist_info" => crate::python::install::fuzz_dist_info(data),
        "dockerignore" => dockerignore_target(data),
        "wheel" => wheel(data, scratch),
        "base_layer" => base_layer(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The interpreter most targets plan for; `musl` picks Alpine's libc.
fn python(arch: &str, musl: bool) -> PythonInfo {
    PythonInfo {
        interpreter: "/usr/local/bin/python3.12".into(),
        version: (3, 12, 7),
        abi_tag: "cp312".into(),
        soabi: format!("cpython-312-{arch}-linux-gnu"),
        free_threaded: false,
        libc: if musl {
            Libc::Musl { major: 1, minor: 2 }
        } else {
            Libc::Glibc {
                major: 2,
                minor: 36,
            }
        },
        arch: arch.into(),
        prefix: "/usr/local".into(),
        externally_managed: false,
    }
}

/// An image reference parses the way `docker pull` reads it, and what it
/// prints parses back to the same reference.
fn reference_target(data: &[u8]) {
    let s = text(data);
    let _ = reference::normalise_registry(&s);
    let _ = reference::api_host(&s);
    let Ok(r) = Reference::parse(&s) else {
        return;
    };
    let shown = r.to_string();
    let again = Reference::parse(&shown)
        .unwrap_or_else(|e| panic!("{s:?} parsed, but its display {shown:?} does not: {e}"));
    assert_eq!(again, r, "{s:?} and its display {shown:?} differ");
    let _ = (r.api_host(), r.name(), r.manifest_reference());
    let _ = r.with_tag("v1.0");
    let _ = r.with_repository("team/other");
}

/// A package index that lists one universal wheel for every project.
struct OneWheelIndex;

impl SimpleIndex for OneWheelIndex {
    fn project_files(&self, index_url: &str, project: &str) -> Result<Vec<IndexFile>, LockError> {
        let filename = format!("{}-1.0-py3-none-any.whl", project.replace('-', "_"));
        Ok(vec![IndexFile {
            url: format!("{}/{filename}", index_url.trim_end_matches('/')),
            filename,
            sha256: Some("a".repeat(64)),
            size: Some(1),
            upload_time: None,
            yanked: false,
            requires_python: None,
        }])
    }
}

/// uv.lock, pylock.toml, requirements.txt, poetry.lock and pdm.lock (the
/// first byte picks which), then wheel selection for the packages they give.
fn lock_target(data: &[u8], scratch: &Scratch) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let info = python("x86_64", which & 0x80 != 0);
    let env = MarkerEnv::for_target(&info).expect("the fuzzing interpreter is valid");
    let opts = LockOptions {
        extras: vec!["extra".into()],
        groups: vec!["dev".into()],
        index_url: Some("http://127.0.0.1:1/simple".into()),
        ..Default::default()
    };
    let text = text(rest);
    let result = match which % 5 {
        0 => lock::uv::parse(&text, "uv.lock", &opts, &env),
        1 => lock::pylock::parse(&text, "pylock.toml", &opts, &env),
        2 => {
            let path = scratch.path().join("requirements.txt");
            fs::write(&path, rest).expect("scratch is writable");
            lock::requirements::load(&path, &opts, &env, &OneWheelIndex)
        }
        3 => lock::poetry::parse(&text, "poetry.lock", &opts, &env),
        _ => lock::pdm::parse(&text, "pdm.lock", &opts, &env),
    };
    if let Ok(packages) = result {
        let _ = lock::select::select_wheels(&packages, &Tags::for_target(&info), "linux/amd64");
    }
}

/// imgbuild.toml, or pyproject.toml's [tool.imgbuild] when the first byte is odd.
fn spec_target(data: &[u8], scratch: &Scratch) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let pyproject = which & 1 == 1;
    let file: PathBuf = scratch.path().join(if pyproject {
        "pyproject.toml"
    } else {
        "imgbuild.toml"
    });
    if let Ok(spec) = crate::spec::parse(&text(rest), &file, pyproject, scratch.path()) {
        let _ = spec.app_excludes();
    }
}

/// Challenges as a registry's 401 sends them.
fn www_authenticate(data: &[u8]) {
    let challenges = auth::parse_www_authenticate(&text(data));
    for c in &challenges {
        let _ = (c.param("realm"), c.param("service"), c.param("scope"));
    }
    let _ = auth::preferred_challenge(challenges);
}

/// A wheel file name, ranked against a glibc and a musl target.
fn wheel_filename(data: &[u8]) {
    let Ok(wheel) = WheelFilename::parse(&text(data)) else {
        return;
    };
    let _ = wheel.tag_string();
    for tags in [
        Tags::for_target(&python("x86_64", false)),
        Tags::for_target(&python("aarch64", true)),
    ] {
        let _ = tags.priority(&wheel);
    }
}

/// `.dockerignore` text, then (after a NUL) paths, one a line, to match.
/// A pattern made by `literal_pattern(path)` excludes exactly that path.
fn dockerignore_target(data: &[u8]) {
    let text = text(data);
    let (patterns, paths) = text
        .split_once('\0')
        .unwrap_or((&text, "a/b.py\nsrc\n.git/x"));
    let _ = dockerignore::clean(patterns);
    if let Ok(matcher) = Matcher::parse(patterns) {
        for path in paths.lines() {
            let _ = matcher.is_excluded(path, false);
            let _ = matcher.may_reinclude_below(path);
        }
    }
    for path in paths.lines() {
        let clean = dockerignore::clean(path);
        // Only paths inside the context are ever matched.
        if clean == "." || clean == ".." || clean.starts_with("../") || clean.starts_with('/') {
            continue;
        }
        let literal = dockerignore::literal_pattern(path);
        let matcher = Matcher::from_lines([literal.as_str()])
            .unwrap_or_else(|e| panic!("literal pattern {literal:?} for {path:?} is refused: {e}"));
        assert!(
            matcher.is_excluded(path, false),
            "literal pattern {literal:?} does not exclude {path:?}"
        );
    }
}

/// A wheel archive planned into a venv and written as a layer, every entry
/// streamed and checked against RECORD, as a build does.
fn wheel(data: &[u8], scratch: &Scratch) {
    let path = scratch.path().join("demo-1.0-py3-none-any.whl");
    fs::write(&path, data).expect("scratch is writable");
    let venv = crate::layer::path::ImagePath::new("app/.venv").expect("a valid image path");
    let target =
        VenvTarget::new(venv, "/usr/local/bin/python3.12", (3, 12, 7)).expect("a valid target");
    let Ok(install) = crate::python::install::plan_install(&path, &target) else {
        return;
    };
    let Ok(mut content) = crate::python::install::WheelContent::open(&path) else {
        return;
    };
    let _ = crate::layer::tar::write_tar(&install.plan, 0, &mut content, std::io::sink());
}

/// A base layer (a tar, gzipped when it starts with gzip's magic), applied to
/// an empty root and searched for a Python.
fn base_layer(data: &[u8]) {
    let media_type = if data.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let Ok(tar) = crate::layer::compress::decompressed(media_type, data) else {
        return;
    };
    let mut rootfs = RootFs::new();
    if rootfs.apply_layer(tar, &RootFs::python_relevant).is_err() {
        return;
    }
    let _ = interpreter::detect(&rootfs, None);
    let _ = interpreter::detect(&rootfs, Some("/opt/python/bin:/usr/bin"));
}
