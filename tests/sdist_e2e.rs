//! Packages that publish only an sdist (issue 22): built into wheels by the
//! base image's own Python inside the sandbox, with build requirements
//! pinned from the package index as of the lock's date. Locks are made at
//! test time; the local sdists are written here, one per build backend.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes `dists/NAME-VERSION.tar.gz` under `project` holding `files`
/// (paths inside the sdist's top directory) and a PKG-INFO.
fn sdist(project: &Path, name: &str, version: &str, files: &[(&str, &str)]) {
    let top = format!("{name}-{version}");
    let work = project.join("sdist-src");
    let root = work.join(&top);
    for (path, body) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    std::fs::write(
        root.join("PKG-INFO"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(project.join("dists")).unwrap();
    let archive = project.join("dists").join(format!("{top}.tar.gz"));
    support::run_ok(
        Command::new("tar")
            .arg("czf")
            .arg(&archive)
            .arg("-C")
            .arg(&work)
            .arg(&top),
    );
    std::fs::remove_dir_all(&work).unwrap();
}

/// A FastAPI project whose `extra` dependencies come from `sources`
/// (`name = { path = "dists/…" }` lines), locked at test time.
fn project(dir: &Path, extra: &[&str], sources: &[&str]) -> PathBuf {
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("svc")).unwrap();
    std::fs::write(project.join("svc/__init__.py"), "").unwrap();
    std::fs::write(
        project.join("svc/main.py"),
        "from fastapi import FastAPI\napp = FastAPI()\n\n@app.get(\"/health\")\ndef health():\n    return {\"ok\": True}\n",
    )
    .unwrap();
    let deps: Vec<String> = ["fastapi>=0.110", "uvicorn>=0.27"]
        .iter()
        .chain(extra)
        .map(|d| format!("\"{d}\""))
        .collect();
    std::fs::write(
        project.join("pyproject.toml"),
        format!(
            "[project]\nname = \"svc\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [{}]\n\n[tool.uv]\npackage = false\n\n[tool.uv.sources]\n{}\n",
            deps.join(", "),
            sources.join("\n")
        ),
    )
    .unwrap();
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"svc.main:app\"\nlockfile = \"uv.lock\"\n",
            support::base::base_image("amd64").display()
        ),
    )
    .unwrap();
    support::uv::uv(
        &project,
        &["lock", "--exclude-newer", support::uv::EXCLUDE_NEWER],
    );
    project
}

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    support::imgbuild_command(cwd, args)
        .output()
        .expect("run imgbuild")
}

/// Builds into `out` with its own cache `cache` (both beside the project,
/// so neither goes into the app layer); returns the digest and stderr.
fn build(project: &Path, cache: &str, out: &str) -> (String, String) {
    let cache = format!("../{cache}");
    let o = imgbuild(
        project,
        &["build", "-v", "--cache-dir", &cache, "--output", out],
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "imgbuild build failed:\n{stderr}");
    (support::last_line(&o, "imgbuild build"), stderr)
}

const HATCH: &[(&str, &str)] = &[
    (
        "pyproject.toml",
        "[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n\n[project]\nname = \"hatchpkg\"\nversion = \"1.0\"\n",
    ),
    ("hatchpkg/__init__.py", "BACKEND = \"hatchling\"\n"),
];

const POETRY: &[(&str, &str)] = &[
    (
        "pyproject.toml",
        "[build-system]\nrequires = [\"poetry-core>=1.0\"]\nbuild-backend = \"poetry.core.masonry.api\"\n\n[tool.poetry]\nname = \"poetpkg\"\nversion = \"1.0\"\ndescription = \"\"\nauthors = []\n\n[tool.poetry.dependencies]\npython = \">=3.8\"\nuuid = \"1.30\"\n",
    ),
    ("poetpkg/__init__.py", "BACKEND = \"poetry-core\"\n"),
];

const FLIT: &[(&str, &str)] = &[
    (
        "pyproject.toml",
        "[build-system]\nrequires = [\"flit_core>=3.2,<4\"]\nbuild-backend = \"flit_core.buildapi\"\n\n[project]\nname = \"flitpkg\"\nversion = \"1.0\"\ndescription = \"a flit package\"\n",
    ),
    ("flitpkg/__init__.py", "BACKEND = \"flit_core\"\n"),
];

/// A setup.py that tries to read `secret` on the host and reach the network,
/// and records what it got in the package it builds.
fn nosy_setup(secret: &Path) -> String {
    NOSY_SETUP.replace("SECRET", &secret.display().to_string())
}

const NOSY_SETUP: &str = r#"
import os, socket
from setuptools import setup
seen = []
for path in ["SECRET", "/root/.docker/config.json"]:
    try:
        seen.append(open(path).read())
    except Exception:
        pass
try:
    socket.create_connection(("127.0.0.1", 22), 2)
    seen.append("network")
except Exception:
    pass
os.makedirs("nosy", exist_ok=True)
with open("nosy/__init__.py", "w") as f:
    f.write("SEEN = %r\n" % (seen,))
setup(name="nosy", version="1.0", packages=["nosy"])
"#;

#[test]
fn sdist_only_packages_of_every_backend_build_in_the_sandbox_reproducibly_and_import() {
    let dir = support::target_tempdir("sdist-backends-");
    let root = dir.path();
    std::fs::create_dir_all(root.join("project")).unwrap();
    let p = root.join("project");
    sdist(&p, "hatchpkg", "1.0", HATCH);
    sdist(&p, "poetpkg", "1.0", POETRY);
    sdist(&p, "flitpkg", "1.0", FLIT);
    let secret = root.join("secret");
    std::fs::write(&secret, "host secret").unwrap();
    sdist(&p, "nosy", "1.0", &[("setup.py", &nosy_setup(&secret))]);
    // pypika 0.48.9 publishes only an sdist with a setup.py (setuptools'
    // legacy backend); uuid 1.30 (pulled in by poetpkg) is a transitive one.
    let project = project(
        root,
        &["pypika==0.48.9", "hatchpkg", "poetpkg", "flitpkg", "nosy"],
        &[
            "hatchpkg = { path = \"dists/hatchpkg-1.0.tar.gz\" }",
            "poetpkg = { path = \"dists/poetpkg-1.0.tar.gz\" }",
            "flitpkg = { path = \"dists/flitpkg-1.0.tar.gz\" }",
            "nosy = { path = \"dists/nosy-1.0.tar.gz\" }",
        ],
    );
    let (first, log) = build(&project, "cache-1", "oci:../out-1");
    for built in [
        "pypika 0.48.9: built pypika-0.48.9-",
        "uuid 1.30: built uuid-1.30-",
        "hatchpkg 1.0: built hatchpkg-1.0-py",
        "with hatchling.build (hatchling ",
        "with poetry.core.masonry.api (poetry-core ",
        "with flit_core.buildapi (flit-core ",
        "with setuptools.build_meta:__legacy__ (setuptools ",
    ] {
        assert!(log.contains(built), "no `{built}` in:\n{log}");
    }
    // A second cold cache builds every sdist again, to the same bytes.
    let (second, _) = build(&project, "cache-2", "oci:../out-2");
    assert_eq!(first, second, "two cold builds gave two digests");
    // A warm build takes the wheels it built from the store.
    let (warm, warm_log) = build(&project, "cache-1", "oci:../out-3");
    assert_eq!(warm, first);
    assert!(!warm_log.contains(": built "), "{warm_log}");

    let archive = root.join("svc.tar");
    let o = imgbuild(
        &project,
        &[
            "build",
            "--cache-dir",
            "../cache-1",
            "--output",
            &format!("docker-archive:{}", archive.display()),
            "--sbom",
            "../sbom.spdx.json",
            "--provenance",
            "../provenance.json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    the_documents_name_the_sdists_and_their_build_requirements(root);
    let image = support::podman::import(&format!("docker-archive:{}", archive.display()), None);
    let run = support::podman::run_to_completion_with(
        &["--read-only", "--entrypoint", "/app/.venv/bin/python"],
        &image,
        &[
            "-c",
            "import pypika, hatchpkg, poetpkg, flitpkg, nosy\nfrom importlib.metadata import version\nprint(hatchpkg.BACKEND, poetpkg.BACKEND, flitpkg.BACKEND, version('uuid'), pypika.__version__, nosy.SEEN)",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    // The setup.py saw neither the host's files nor the network.
    assert_eq!(
        run.stdout.trim(),
        "hatchling poetry-core flit_core 1.30 0.48.9 []"
    );
}

/// The SBOM lists each sdist the lock names, says what the image holds in
/// its place, and lists the build requirements as build dependencies, not
/// as contents; the provenance lists them as resolved dependencies and the
/// built wheels as byproducts.
fn the_documents_name_the_sdists_and_their_build_requirements(root: &Path) {
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join(name)).unwrap()).unwrap()
    };
    let sbom = read("sbom.spdx.json");
    let packages = sbom["packages"].as_array().unwrap();
    let pypika = packages
        .iter()
        .find(|p| p["name"] == "pypika" && p["versionInfo"] == "0.48.9")
        .expect("pypika in the SBOM");
    assert_eq!(pypika["packageFileName"], "PyPika-0.48.9.tar.gz");
    assert!(pypika["comment"]
        .as_str()
        .unwrap()
        .contains("the image holds pypika-0.48.9-"));
    let setuptools = packages
        .iter()
        .find(|p| p["name"] == "setuptools")
        .expect("setuptools, a build requirement, in the SBOM");
    let relation = |id: &serde_json::Value| -> Vec<String> {
        sbom["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["spdxElementId"] == *id || r["relatedSpdxElement"] == *id)
            .map(|r| r["relationshipType"].as_str().unwrap().to_owned())
            .collect()
    };
    let kinds = relation(&setuptools["SPDXID"]);
    assert!(
        kinds.iter().all(|k| k == "BUILD_DEPENDENCY_OF"),
        "{kinds:?}"
    );
    assert!(!kinds.is_empty());
    let check = Command::new("/opt/imgbuild-sbom-tools/bin/pyspdxtools")
        .arg("-i")
        .arg(root.join("sbom.spdx.json"))
        .output()
        .expect("pyspdxtools: run scripts/setup.sh --deps-only");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let provenance = read("provenance.json");
    let deps = provenance["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let hatchling = deps
        .iter()
        .find(|d| d["name"].as_str().unwrap().starts_with("hatchling-"))
        .expect("hatchling's wheel among the resolved dependencies");
    assert_eq!(
        hatchling["annotations"]["buildRequirementOf"],
        serde_json::json!(["hatchpkg 1.0"])
    );
    let byproducts = provenance["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    let built: Vec<&str> = byproducts
        .iter()
        .map(|b| b["annotations"]["builtFrom"].as_str().unwrap())
        .collect();
    assert_eq!(built.len(), 6, "{built:?}");
    assert!(built.contains(&"PyPika-0.48.9.tar.gz"), "{built:?}");
}

/// An sdist whose setup.py builds one C extension module, `cext.answer()`.
const CEXT: &[(&str, &str)] = &[
    (
        "setup.py",
        "from setuptools import setup, Extension\nsetup(name=\"cext\", version=\"1.0\", ext_modules=[Extension(\"cext\", [\"cext.c\"])])\n",
    ),
    (
        "cext.c",
        r#"#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&module); }
"#,
    ),
];

/// A project depending on the C extension sdist, on `base` (an OCI layout).
fn cext_project(root: &Path, base: &Path) -> PathBuf {
    let p = root.join("project");
    std::fs::create_dir_all(&p).unwrap();
    sdist(&p, "cext", "1.0", CEXT);
    let project = project(
        root,
        &["cext"],
        &["cext = { path = \"dists/cext-1.0.tar.gz\" }"],
    );
    let spec = std::fs::read_to_string(project.join("imgbuild.toml")).unwrap();
    let default_base = support::base::base_image("amd64");
    std::fs::write(
        project.join("imgbuild.toml"),
        spec.replace(
            &default_base.display().to_string(),
            &base.display().to_string(),
        ),
    )
    .unwrap();
    project
}

#[test]
fn an_sdist_with_a_c_extension_builds_with_the_compiler_of_a_dev_base() {
    let dir = support::target_tempdir("sdist-cext-dev-");
    let base = support::base::base_image_with("amd64", &["gcc", "libc6-dev", "python3-dev"]);
    let project = cext_project(dir.path(), &base);
    let archive = dir.path().join("cext.tar");
    let out = format!("docker-archive:{}", archive.display());
    let (first, log) = build(&project, "cache-1", &out);
    assert!(
        log.contains("building it again with the whole base"),
        "{log}"
    );
    assert!(
        log.contains("cext 1.0: built cext-1.0-cp311-cp311-linux_x86_64.whl"),
        "{log}"
    );
    let (second, _) = build(&project, "cache-2", "oci:../out-2");
    assert_eq!(first, second, "two cold builds gave two digests");
    let image = support::podman::import(&out, None);
    let run = support::podman::run_to_completion_with(
        &["--read-only", "--entrypoint", "/app/.venv/bin/python"],
        &image,
        &["-c", "import cext; print(cext.answer())"],
    );
    assert_eq!((run.status, run.stdout.trim()), (0, "42"), "{}", run.stderr);
}

#[test]
fn an_sdist_with_a_c_extension_fails_in_one_line_on_a_base_without_a_compiler() {
    let dir = support::target_tempdir("sdist-cext-");
    let root = dir.path();
    let project = cext_project(root, &support::base::base_image("amd64"));
    let o = imgbuild(
        &project,
        &["build", "--cache-dir", "cache", "--output", "oci:out"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    assert!(
        line.starts_with(
            "error: cext 1.0: its sdist has C (or C++) extensions, and the base has no C compiler"
        ),
        "{stderr}"
    );
    assert!(line.contains("path source"), "{stderr}");
    assert!(!project.join("out").exists(), "an image was written");
}
