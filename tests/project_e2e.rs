//! The project itself in the image, and images refused before they ship.
//!
//! Each fixture under `fixtures/proj-*` is built with the `imgbuild` binary, loaded
//! into podman and run. Lockfiles are made at test time by uv (`--exclude-newer`),
//! so the tests that lock need the package index configured for uv.

mod support;

use imgbuild::layer::ImagePath;
use imgbuild::python::project::{self, Placement};
use imgbuild::python::venv::VenvTarget;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    support::imgbuild_command(cwd, args)
        .output()
        .expect("run imgbuild")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `imgbuild.toml` in `dir` and runs `imgbuild build --output OUTPUT`.
fn build_to(dir: &Path, spec: &str, output: &str) -> Output {
    std::fs::write(dir.join("imgbuild.toml"), spec).unwrap();
    imgbuild(
        dir,
        &["build", "--output", output, "--cache-dir", &cache_dir()],
    )
}

/// Writes `imgbuild.toml` in `dir` and builds a docker archive; returns its path.
fn build_ok(dir: &Path, spec: &str) -> PathBuf {
    let archive = dir.join("image.tar");
    let o = build_to(dir, spec, &format!("docker-archive:{}", archive.display()));
    assert!(
        o.status.success(),
        "imgbuild build failed in {}:\n{}",
        dir.display(),
        text(&o.stderr)
    );
    archive
}

/// Builds and expects a one-line error naming every `expect`, with no output written.
fn build_refused(dir: &Path, spec: &str, expect: &[&str]) -> String {
    let out = dir.join("refused-layout");
    let o = build_to(dir, spec, &format!("oci:{}", out.display()));
    let stderr = text(&o.stderr);
    assert!(!o.status.success(), "the build should fail:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"))
        .to_owned();
    for e in expect {
        assert!(line.contains(e), "{e:?} not in {line}");
    }
    assert!(!out.exists(), "a refused build wrote {}", out.display());
    line
}

fn cache_dir() -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("project-e2e-cache");
    dir.display().to_string()
}

fn base(packages: &[&str]) -> String {
    format!(
        "oci:{}:latest",
        support::base::base_image_with("amd64", packages).display()
    )
}

/// A fresh copy of a fixture directory.
fn copy_fixture(name: &str) -> PathBuf {
    let dir = support::target_tempdir(&format!("{name}-")).keep();
    let from = support::fixture(name);
    for e in walkdir::WalkDir::new(&from).sort_by_file_name() {
        let e = e.unwrap();
        let dest = dir.join(e.path().strip_prefix(&from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
    dir
}

fn run(archive: &Path, cmd: &[&str]) -> String {
    let image = format!("docker-archive:{}", archive.display());
    let r = support::podman::run_to_completion(&image, cmd);
    assert_eq!(r.status, 0, "{cmd:?} failed: {}\n{}", r.stdout, r.stderr);
    r.stdout
}

fn serve_health(archive: &Path) -> String {
    let image = format!("docker-archive:{}", archive.display());
    let c = support::podman::run_detached(&image, &[], 8000);
    c.wait_ready("/health", Duration::from_secs(60))
}

#[test]
fn a_src_layout_hatchling_project_serves_runs_its_script_and_knows_its_version() {
    let dir = support::uv::uv_lock(&support::fixture("proj-src-hatch"));
    // Only `base` and `app`: the project's dist-info and .pth make src/ importable.
    let archive = build_ok(
        &dir,
        &format!("base = \"{}\"\napp = \"proj_hello.main:app\"\n", base(&[])),
    );
    let health = serve_health(&archive);
    assert!(health.contains("\"version\":\"1.2.3\""), "{health}");
    assert_eq!(run(&archive, &["proj-hello"]).trim(), "proj-hello 1.2.3");
    let v = run(
        &archive,
        &[
            "python",
            "-c",
            "import importlib.metadata as m; print(m.version('proj-hello'))",
        ],
    );
    assert_eq!(v.trim(), "1.2.3");
}

/// Ours against `uv sync --no-editable` for the src-layout fixture. uv copies the
/// sources into site-packages; we leave them in the app layer and point a `.pth` at
/// them, so the comparison is of what can be imported, not of the files.
#[test]
fn the_project_install_matches_uv_sync_no_editable_where_it_matters() {
    let dir = support::uv::uv_lock(&support::fixture("proj-src-hatch"));
    support::uv::uv(
        &dir,
        &[
            "sync",
            "--frozen",
            "--no-editable",
            "--python",
            "python3.11",
        ],
    );
    let venv = dir.join(".venv");
    let site = venv.join("lib/python3.11/site-packages");
    let dist_info = site.join("proj_hello-1.2.3.dist-info");
    assert!(dist_info.is_dir(), "uv made no {}", dist_info.display());

    // Ours, installed at the same absolute venv path so the launchers compare.
    let p = project::read(&dir, None).unwrap().unwrap();
    let wheel_dir = tempfile::tempdir().unwrap();
    let wheel = wheel_dir.path().join(p.wheel_filename());
    std::fs::write(
        &wheel,
        p.write_wheel(&Placement::Pth(vec![dir.join("src").display().to_string()]))
            .unwrap(),
    )
    .unwrap();
    let python = std::fs::read_link(venv.join("bin/python")).unwrap();
    let target = VenvTarget::new(
        ImagePath::new(venv.to_str().unwrap()).unwrap(),
        python.to_str().unwrap(),
        (3, 11, 0),
    )
    .unwrap();
    let install = imgbuild::python::install::plan_install(&wheel, &target).unwrap();
    let ours = |rel: &str| -> Vec<u8> {
        let path = ImagePath::new(&format!("{}/{rel}", venv.display())).unwrap();
        match &install
            .plan
            .get(&path)
            .unwrap_or_else(|| panic!("we install no {rel}"))
            .kind
        {
            imgbuild::layer::EntryKind::File {
                content: imgbuild::layer::Content::Bytes(b),
                ..
            } => b.clone(),
            other => panic!("{rel}: {other:?}"),
        }
    };

    // The console-script launcher: the same bytes.
    assert_eq!(
        text(&ours("bin/proj-hello")),
        std::fs::read_to_string(venv.join("bin/proj-hello")).unwrap()
    );
    // entry_points.txt: the same text.
    let sp = "lib/python3.11/site-packages/proj_hello-1.2.3.dist-info";
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
    let mut from_wheel = |name: &str| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut zip.by_name(name).unwrap(), &mut s).unwrap();
        s
    };
    assert_eq!(
        from_wheel("proj_hello-1.2.3.dist-info/entry_points.txt"),
        std::fs::read_to_string(dist_info.join("entry_points.txt")).unwrap()
    );
    // METADATA: name, version and Requires-Dist.
    let fields = |m: &str| -> Vec<String> {
        m.lines()
            .take_while(|l| !l.is_empty())
            .filter(|l| {
                l.starts_with("Name:")
                    || l.starts_with("Version:")
                    || l.starts_with("Requires-Dist:")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        fields(&from_wheel("proj_hello-1.2.3.dist-info/METADATA")),
        fields(&std::fs::read_to_string(dist_info.join("METADATA")).unwrap())
    );
    assert_eq!(text(&ours(&format!("{sp}/INSTALLER"))), "uv");
    assert_eq!(
        std::fs::read_to_string(dist_info.join("INSTALLER")).unwrap(),
        "uv"
    );

    // Importable top-level modules: uv's copies in site-packages, ours through the .pth.
    let theirs: BTreeSet<String> = std::fs::read_dir(&site)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == "proj_hello")
        .collect();
    // The .pth is a file of the wheel, installed as it is.
    assert!(install
        .plan
        .get(
            &ImagePath::new(&format!(
                "{}/lib/python3.11/site-packages/_proj_hello.pth",
                venv.display()
            ))
            .unwrap()
        )
        .is_some());
    let pth = from_wheel("_proj_hello.pth");
    let ours_top: BTreeSet<String> = pth
        .lines()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("__init__.py").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ours_top, theirs);
    assert_eq!(ours_top, p.top_level_names().into_iter().collect());
}

#[test]
fn a_uv_workspace_and_a_path_dependency_outside_the_tree_import_and_serve() {
    let root = copy_fixture("proj-workspace");
    let app = root.join("app");
    support::uv::uv(
        &app,
        &["lock", "--exclude-newer", support::uv::EXCLUDE_NEWER],
    );
    let archive = build_ok(
        &app,
        &format!("base = \"{}\"\napp = \"ws_app.main:app\"\n", base(&[])),
    );
    let health = serve_health(&archive);
    assert!(health.contains("HELLO FROM THE WORKSPACE!"), "{health}");
    let versions = run(
        &archive,
        &[
            "python",
            "-c",
            "import importlib.metadata as m, ext_util; print(m.version('ws-app'), m.version('ws-greeting'), m.version('ext-util'), ext_util.__file__)",
        ],
    );
    let fields: Vec<&str> = versions.split_whitespace().collect();
    assert_eq!(&fields[..3], ["0.1.0", "0.2.0", "0.3.0"]);
    // Outside the source tree, the dependency's files are in site-packages (its own layer).
    assert!(fields[3].contains("/site-packages/ext_util/"), "{versions}");
}

#[test]
fn setuptools_src_layout_and_flat_layout_import() {
    for (fixture, module, dist, value) in [
        (
            "proj-setuptools",
            "st_pkg",
            "st-pkg",
            "setuptools src layout 2.0.0",
        ),
        ("proj-flat", "flat_pkg", "flat-pkg", "flat layout 3.0.0"),
    ] {
        let dir = copy_fixture(fixture);
        let archive = build_ok(
            &dir,
            &format!("base = \"{}\"\napp = \"{module}:app\"\n", base(&[])),
        );
        let out = run(
            &archive,
            &[
                "python",
                "-c",
                &format!(
                    "import os, importlib.metadata as m, {module}; os.chdir('/'); print({module}.VALUE, m.version('{dist}'))"
                ),
            ],
        );
        assert_eq!(out.trim(), value, "{fixture}");
    }
}

#[test]
fn a_compiled_backend_is_refused_and_a_prebuilt_project_wheel_works() {
    let dir = copy_fixture("proj-compiled");
    let spec = format!("base = \"{}\"\napp = \"fast_pkg:app\"\n", base(&[]));
    build_refused(
        &dir,
        &spec,
        &["pyproject.toml", "fast-pkg", "maturin", "project-wheel"],
    );

    // Stand-in for `maturin build`: a platform wheel holding the package.
    let wheel = dir.join("dist/fast_pkg-0.1.0-cp311-cp311-manylinux_2_17_x86_64.whl");
    std::fs::create_dir_all(wheel.parent().unwrap()).unwrap();
    write_wheel(
        &wheel,
        "fast_pkg-0.1.0",
        &[(
            "fast_pkg/__init__.py",
            &std::fs::read(dir.join("python/fast_pkg/__init__.py")).unwrap(),
        )],
        "cp311-cp311-manylinux_2_17_x86_64",
    );
    let archive = build_ok(
        &dir,
        &format!(
            "{spec}project-wheel = \"dist/fast_pkg-0.1.0-cp311-cp311-manylinux_2_17_x86_64.whl\"\n"
        ),
    );
    let out = run(
        &archive,
        &[
            "python",
            "-c",
            "import os, importlib.metadata as m; os.chdir('/'); import fast_pkg; print(fast_pkg.__file__, m.version('fast-pkg'))",
        ],
    );
    assert!(
        out.contains("site-packages/fast_pkg/__init__.py 0.1.0"),
        "{out}"
    );
}

#[test]
fn a_misspelt_app_module_is_refused_with_nothing_written() {
    let dir = copy_fixture("proj-flat");
    let line = build_refused(
        &dir,
        &format!("base = \"{}\"\napp = \"flat_pkg.mian:app\"\n", base(&[])),
        &["imgbuild.toml", "app", "flat_pkg.mian"],
    );
    assert!(line.contains("is not in the image"), "{line}");
}

#[test]
fn numpy_needs_libstdcxx_from_the_base() {
    let dir = support::uv::uv_lock(&support::fixture("proj-numpy"));
    build_refused(
        &dir,
        &format!("base = \"{}\"\napp = \"app:app\"\n", base(&[])),
        &["numpy", "libstdc++.so.6", "libstdc++6"],
    );
    let archive = build_ok(
        &dir,
        &format!("base = \"{}\"\napp = \"app:app\"\n", base(&["libstdc++6"])),
    );
    let out = run(
        &archive,
        &[
            "python",
            "-c",
            "import numpy, pandas; print(numpy.arange(4).sum(), pandas.Series([1, 2]).sum())",
        ],
    );
    assert_eq!(out.trim(), "6 3");
}

/// A minimal valid wheel: the files, METADATA, WHEEL and RECORD.
fn write_wheel(path: &Path, dist: &str, files: &[(&str, &[u8])], tag: &str) {
    use base64::Engine as _;
    use sha2::Digest as _;
    use std::io::Write as _;
    let (name, version) = dist.rsplit_once('-').unwrap();
    let mut all: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    all.push((
        format!("{dist}.dist-info/METADATA"),
        format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {version}\n",
            name.replace('_', "-")
        )
        .into_bytes(),
    ));
    all.push((
        format!("{dist}.dist-info/WHEEL"),
        format!("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n")
            .into_bytes(),
    ));
    let mut record = String::new();
    for (n, b) in &all {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b));
        record += &format!("{n},sha256={h},{}\n", b.len());
    }
    record += &format!("{dist}.dist-info/RECORD,,\n");
    all.push((format!("{dist}.dist-info/RECORD"), record.into_bytes()));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (n, b) in all {
        zip.start_file(
            n,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        zip.write_all(&b).unwrap();
    }
    zip.finish().unwrap();
}
