//! Our wheel installer against uv's: the same wheels installed by `uv pip
//! install --link-mode copy` and by `imgbuild` (skeleton + one layer per wheel,
//! unpacked at the same absolute venv path) must give the same tree, file for
//! file: path, content, permission bits and symlink targets.
//!
//! What uv creates that we deliberately do not (and so the comparison skips):
//! - `bin/activate*`, `bin/deactivate.bat`, `bin/pydoc.bat`: shell conveniences
//!   the image does not need (see src/python/venv.rs);
//! - `.lock`: uv's lock file for concurrent installs into the venv;
//! - `*.dist-info/uv_cache.json` and `*.dist-info/direct_url.json`, with their
//!   RECORD rows: uv's cache bookkeeping (it holds a timestamp) and PEP 610 data
//!   for URL installs; an image installs from a lockfile.
//!
//! Needs `uv` (0.13.9, which scripts/setup.sh pins) and `python3.11` on PATH; the real-wheels test also needs
//! PyPI (through `uv lock` and `pip download`).

use imgbuild::layer::tar::{write_tar, NoExternal};
use imgbuild::layer::{ImagePath, LayerPlan};
use imgbuild::python::install::{plan_install, WheelContent};
use imgbuild::python::venv::{skeleton, VenvTarget};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod wheel_support;
use wheel_support::{SyntheticWheel, Tree};

/// Runs a command with umask 022, as an image build would see files, and
/// fails the test with its output if it fails.
fn run(cmd: &str, args: &[&str], cwd: &Path) -> String {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(cmd)
        .args(args)
        .current_dir(cwd);
    // Keep the user's uv settings out of the comparison.
    for var in [
        "UV_COMPILE_BYTECODE",
        "UV_LINK_MODE",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "UV_FIND_LINKS",
    ] {
        c.env_remove(var);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A venv made by `uv venv` at `<root>/app/.venv`, and the target that names it.
struct UvVenv {
    root: PathBuf,
    venv: PathBuf,
    cache: PathBuf,
}

impl UvVenv {
    fn create(root: &Path) -> Self {
        let venv = root.join("app/.venv");
        let cache = root.join("uv-cache");
        fs::create_dir_all(root).unwrap();
        run(
            "uv",
            &[
                "venv",
                "--no-config",
                "--quiet",
                "--python",
                "python3.11",
                venv.to_str().unwrap(),
            ],
            root,
        );
        UvVenv {
            root: root.to_path_buf(),
            venv,
            cache,
        }
    }

    fn python(&self) -> String {
        self.venv.join("bin/python").to_string_lossy().into_owned()
    }

    /// uv installs from a find-links directory as it would from an index.
    fn install(&self, find_links: &Path, requirements: &[&str]) {
        let (python, cache, links) = (
            self.python(),
            self.cache.to_string_lossy().into_owned(),
            find_links.to_string_lossy().into_owned(),
        );
        let mut args = vec![
            "pip",
            "install",
            "--no-config",
            "--quiet",
            "--python",
            &python,
            "--cache-dir",
            &cache,
            "--no-deps",
            "--no-index",
            "--offline",
            "--link-mode",
            "copy",
            "--find-links",
            &links,
        ];
        args.extend_from_slice(requirements);
        run("uv", &args, &self.root);
    }

    /// The target our code installs into: the very path, interpreter and
    /// version uv used, so shebangs and pyvenv.cfg can match byte for byte.
    fn target(&self) -> VenvTarget {
        let interpreter = fs::read_link(self.venv.join("bin/python"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let cfg = fs::read_to_string(self.venv.join("pyvenv.cfg")).unwrap();
        let version = cfg
            .lines()
            .find_map(|l| l.strip_prefix("version_info = "))
            .expect("pyvenv.cfg has version_info");
        let v: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
        VenvTarget {
            venv: ImagePath::new(self.venv.to_str().unwrap()).unwrap(),
            interpreter,
            version: (v[0], v[1], v[2]),
        }
    }
}

/// Writes each layer as a tar and unpacks it over `root`, in order, as a
/// container runtime would.
fn unpack_layers(root: &Path, target: &VenvTarget, wheels: &[PathBuf]) {
    unpack(root, &skeleton(target), &mut NoExternal);
    for wheel in wheels {
        let install = plan_install(wheel, target).unwrap_or_else(|e| panic!("{e}"));
        let mut content = WheelContent::open(wheel).unwrap();
        unpack(root, &install.plan, &mut content);
    }
}

fn unpack(root: &Path, plan: &LayerPlan, external: &mut dyn imgbuild::layer::tar::ExternalContent) {
    let tar = write_tar(plan, 0, external, Vec::new()).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.unpack(root).unwrap();
}

/// Paths (relative to the venv) that only uv writes, by design.
fn uv_only(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel == ".lock"
        || (rel.starts_with("bin/")
            && (name.starts_with("activate") || name == "deactivate.bat" || name == "pydoc.bat"))
        || (rel.contains(".dist-info/") && (name == "uv_cache.json" || name == "direct_url.json"))
}

fn compare(uv: &UvVenv, ours_root: &Path) {
    let ours_venv = ours_root.join(uv.venv.strip_prefix("/").unwrap());
    let theirs = Tree::read(&uv.venv, uv_only);
    let ours = Tree::read(&ours_venv, |_| false);
    assert!(
        theirs.len() > 10,
        "uv's venv looks empty: {:?}",
        theirs.paths()
    );
    if let Some(diff) = theirs.diff(&ours) {
        panic!(
            "our install differs from uv's (left: uv at {}, right: ours at {}):\n{diff}",
            uv.venv.display(),
            ours_venv.display()
        );
    }
}

/// The synthetic wheels: every feature of the install algorithm we implement.
fn synthetic_wheels(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let demo = SyntheticWheel::new("demo_pkg", "1.0", "py3-none-any", true)
        .dir("demo_pkg/")
        .file("demo_pkg/__init__.py", b"from .cli import app\n", 0o644)
        .file("demo_pkg/cli.py", b"class app:\n    @staticmethod\n    def main():\n        return 0\n", 0o644)
        .file("demo_pkg/tool.sh", b"#!/bin/sh\necho tool\n", 0o755)
        .file("demo_pkg/data/empty.txt", b"", 0o644)
        // A namespace package: no __init__.py anywhere on the way down.
        .file("nspkg/sub/mod.py", b"VALUE = 2\n", 0o644)
        .file("demo_pkg-1.0.data/scripts/runme", b"#!python\nprint('run')\n", 0o644)
        .file("demo_pkg-1.0.data/scripts/runw", b"#!pythonw\nprint('gui')\n", 0o644)
        // uv replaces the whole first line, whatever follows `#!python`.
        .file("demo_pkg-1.0.data/scripts/runme3", b"#!python3 -u\nprint('3')\n", 0o644)
        .file("demo_pkg-1.0.data/scripts/crlf", b"#!python -E\r\nprint('dos')\r\n", 0o644)
        .file("demo_pkg-1.0.data/scripts/plain.sh", b"#!/bin/sh\necho plain\n", 0o644)
        .file("demo_pkg-1.0.data/scripts/binary", b"\x7fELF\x02\x01\x01\x00not really", 0o755)
        // Shadowed by the console script of the same name: uv drops it.
        .file("demo_pkg-1.0.data/scripts/democli", b"#!python\nprint('shadowed')\n", 0o644)
        .file("demo_pkg-1.0.data/headers/demo.h", b"int demo;\n", 0o644)
        .file("demo_pkg-1.0.data/headers/sub/inner.h", b"int inner;\n", 0o644)
        .file("demo_pkg-1.0.data/data/share/demo/a.txt", b"data\n", 0o644)
        .file("demo_pkg-1.0.data/data/etc/demo.conf", b"x = 1\n", 0o644)
        .file("demo_pkg-1.0.data/purelib/pure_extra.py", b"P = 1\n", 0o644)
        .file("demo_pkg-1.0.data/platlib/plat_extra/__init__.py", b"Q = 1\n", 0o644)
        .entry_points(
            "[console_scripts]\ndemocli = demo_pkg.cli:app.main\ndemo-two=demo_pkg.cli:app [extra]\n\n[gui_scripts]\ndemogui = demo_pkg:app\n\n[demo.plugins]\nignored = demo_pkg:app\n",
        );
    let abi3 = SyntheticWheel::new("Fast.Ext", "2.0", "cp32-abi3-manylinux_2_17_x86_64", false)
        .file("fast_ext/__init__.py", b"from ._native import *\n", 0o644)
        .file(
            "fast_ext/_native.abi3.so",
            b"\x7fELF\x02\x01\x01\x00dummy shared object",
            0o755,
        )
        .file("fast_ext/py.typed", b"", 0o644)
        .file(
            "fast_ext-2.0.data/scripts/fast-tool",
            b"#!python\nimport fast_ext\n",
            0o755,
        )
        .entry_points("[console_scripts]\nfast = fast_ext:main\n");
    vec![(demo.write(dir), "demo-pkg"), (abi3.write(dir), "fast-ext")]
}

#[test]
fn synthetic_wheels_install_like_uv() {
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    fs::create_dir_all(&wheels).unwrap();
    let built = synthetic_wheels(&wheels);
    for (wheel, requirement) in &built {
        install_both_ways_and_compare(&tmp.path().join(requirement), &wheels, wheel, requirement);
    }
    // Shebangs longer than 127 bytes, or with a space, go through /bin/sh.
    let (demo, requirement) = &built[0];
    let long = tmp.path().join("long").join("d".repeat(100));
    let spaced = tmp.path().join("with space");
    for root in [long, spaced] {
        let uv = install_both_ways_and_compare(&root, &wheels, demo, requirement);
        let launcher = fs::read_to_string(uv.venv.join("bin/democli")).unwrap();
        assert!(launcher.starts_with("#!/bin/sh\n'''exec' '"), "{launcher}");
    }
}

fn install_both_ways_and_compare(
    case: &Path,
    wheels: &Path,
    wheel: &Path,
    requirement: &str,
) -> UvVenv {
    let uv = UvVenv::create(&case.join("uv"));
    uv.install(wheels, &[requirement]);
    let ours = case.join("ours");
    unpack_layers(&ours, &uv.target(), &[wheel.to_path_buf()]);
    compare(&uv, &ours);
    uv
}

#[test]
fn unsafe_wheels_are_refused_with_the_entry_named() {
    let tmp = tempfile::tempdir().unwrap();
    let target = VenvTarget {
        venv: ImagePath::new("app/.venv").unwrap(),
        interpreter: "/usr/bin/python3.11".into(),
        version: (3, 11, 7),
    };
    let cases: [(&str, SyntheticWheel); 4] = [
        (
            "../evil.py",
            SyntheticWheel::new("evil", "1.0", "py3-none-any", true).file(
                "../evil.py",
                b"x",
                0o644,
            ),
        ),
        (
            "/etc/evil",
            SyntheticWheel::new("evil", "1.0", "py3-none-any", true).file("/etc/evil", b"x", 0o644),
        ),
        (
            "evil\\..\\..\\x",
            SyntheticWheel::new("evil", "1.0", "py3-none-any", true).file(
                "evil\\..\\..\\x",
                b"x",
                0o644,
            ),
        ),
        (
            "evil/link",
            SyntheticWheel::new("evil", "1.0", "py3-none-any", true)
                .symlink("evil/link", "/etc/passwd"),
        ),
    ];
    for (i, (entry, wheel)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        fs::create_dir_all(&dir).unwrap();
        let path = wheel.write(&dir);
        let err = plan_install(&path, &target).expect_err(entry).to_string();
        assert!(
            err.contains(entry.replace('\\', "\\\\").as_str()) || err.contains(entry),
            "{err}"
        );
        assert!(err.contains("evil-1.0-py3-none-any.whl"), "{err}");
    }
    let dup = SyntheticWheel::new("dup", "1.0", "py3-none-any", true)
        .file("dup/a.py", b"1", 0o644)
        .file("dup/./a.py", b"2", 0o644)
        .write(tmp.path());
    let err = plan_install(&dup, &target).unwrap_err().to_string();
    assert!(err.contains("dup/./a.py") && err.contains("twice"), "{err}");
}

#[test]
fn corrupt_content_is_caught_while_streaming() {
    let tmp = tempfile::tempdir().unwrap();
    let target = VenvTarget {
        venv: ImagePath::new("app/.venv").unwrap(),
        interpreter: "/usr/bin/python3.11".into(),
        version: (3, 11, 7),
    };
    let wheel = SyntheticWheel::new("liar", "1.0", "py3-none-any", true)
        .file("liar/__init__.py", b"honest\n", 0o644)
        .record_override("liar/__init__.py", b"something else\n")
        .write(tmp.path());
    let install = plan_install(&wheel, &target).unwrap();
    let mut content = WheelContent::open(&wheel).unwrap();
    let err = write_tar(&install.plan, 0, &mut content, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("liar/__init__.py") && err.contains("RECORD"),
        "{err}"
    );
}

/// The FastAPI closure, resolved and downloaded fresh, installed both ways.
#[test]
fn real_fastapi_wheels_install_like_uv() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = \"probe\"\nversion = \"0.0.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"fastapi\", \"uvicorn[standard]\"]\n",
    )
    .unwrap();
    run(
        "uv",
        &[
            "lock",
            "--no-config",
            "--quiet",
            "--exclude-newer",
            "2026-11-01T00:00:00Z",
        ],
        &project,
    );
    run(
        "uv",
        &[
            "export",
            "--no-config",
            "--quiet",
            "--frozen",
            "--no-hashes",
            "--no-emit-project",
            "--format",
            "requirements-txt",
            "-o",
            "reqs.txt",
        ],
        &project,
    );
    let wheels = tmp.path().join("wheels");
    run(
        "python3.11",
        &[
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            wheels.to_str().unwrap(),
            "-r",
            "reqs.txt",
        ],
        &project,
    );
    let mut files: Vec<PathBuf> = fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected the FastAPI closure, got {files:?}"
    );

    let uv = UvVenv::create(&tmp.path().join("uv"));
    let reqs = project.join("reqs.txt");
    uv.install(&wheels, &["-r", reqs.to_str().unwrap()]);
    let ours = tmp.path().join("ours");
    unpack_layers(&ours, &uv.target(), &files);
    compare(&uv, &ours);

    // The launchers point at the venv's python, and platlib wheels (C
    // extensions) were part of the comparison.
    let bin = uv.venv.join("bin/uvicorn");
    let ours_bin = ours.join(bin.strip_prefix("/").unwrap());
    assert!(fs::read_to_string(&ours_bin)
        .unwrap()
        .starts_with(&format!("#!{}\n", uv.python())));
    let extensions = walkdir::WalkDir::new(&ours)
        .into_iter()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "so")
        })
        .count();
    assert!(
        extensions > 3,
        "expected the C extensions of pydantic-core, uvloop, httptools, ...; found {extensions}"
    );
}
