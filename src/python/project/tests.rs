use super::*;
use std::fs;

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

const HATCH: &str = "[project]\nname = \"Hello-World\"\nversion = \"0.3.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"fastapi >= 0.110\", \"uvicorn[standard]>=0.27,<1\"]\n[project.optional-dependencies]\nyaml = [\"pyyaml; python_version < '3.13'\"]\n[project.scripts]\nhello = \"hello_world.cli:main\"\n[project.entry-points.\"demo.plugins\"]\nx = \"hello_world:x\"\n[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n";

#[test]
fn a_hatchling_src_layout_is_read_from_pyproject() {
    let dir = project(&[(PYPROJECT, HATCH), ("src/hello_world/__init__.py", "")]);
    let p = read(dir.path(), None).unwrap().unwrap();
    assert_eq!(
        (p.name.as_str(), p.version.as_str()),
        ("Hello-World", "0.3.0")
    );
    assert_eq!(
        p.roots,
        vec![ImportRoot {
            dir: dir.path().join("src"),
            names: vec!["hello_world".into()]
        }]
    );
    assert_eq!(
        p.metadata(),
        "Metadata-Version: 2.4\nName: Hello-World\nVersion: 0.3.0\nRequires-Python: >=3.11\nRequires-Dist: fastapi>=0.110\nRequires-Dist: uvicorn[standard]<1,>=0.27\nProvides-Extra: yaml\nRequires-Dist: pyyaml; (python_version < \"3.13\") and extra == \"yaml\"\n"
    );
    assert_eq!(
        p.entry_points_txt().unwrap(),
        "[console_scripts]\nhello = hello_world.cli:main\n\n[demo.plugins]\nx = hello_world:x\n"
    );
    assert_eq!(p.wheel_filename(), "hello_world-0.3.0-py3-none-any.whl");
}

#[test]
fn virtual_projects_are_not_packages() {
    let dir = project(&[(PYPROJECT, "[project]\nname = \"a\"\nversion = \"1\"\n")]);
    assert_eq!(read(dir.path(), None).unwrap(), None);
    let text = format!("{HATCH}[tool.uv]\npackage = false\n");
    let dir = project(&[(PYPROJECT, &text), ("src/hello_world/__init__.py", "")]);
    assert_eq!(read(dir.path(), None).unwrap(), None);
}

#[test]
fn each_backend_finds_its_packages() {
    let cases: &[(&str, &[&str], &str, &[&str])] = &[
        (
            "[tool.hatch.build.targets.wheel]\npackages = [\"lib/pkg\"]\n",
            &["lib/pkg/__init__.py"],
            "lib",
            &["pkg"],
        ),
        (
            "[build-system]\nbuild-backend = \"setuptools.build_meta\"\n[tool.setuptools.packages.find]\nwhere = [\"src\"]\n",
            &["src/alpha/__init__.py", "src/beta/__init__.py", "src/tests/__init__.py"],
            "src",
            &["alpha", "beta"],
        ),
        (
            "[build-system]\nbuild-backend = \"setuptools.build_meta\"\n[tool.setuptools]\npackage-dir = {\"\" = \"code\"}\n",
            &["code/gamma/__init__.py"],
            "code",
            &["gamma"],
        ),
        (
            "[build-system]\nbuild-backend = \"uv_build\"\n[tool.uv.build-backend]\nmodule-root = \"\"\nmodule-name = \"delta\"\n",
            &["delta/__init__.py"],
            "",
            &["delta"],
        ),
        (
            "[build-system]\nbuild-backend = \"flit_core.buildapi\"\n[tool.flit.module]\nname = \"eps\"\n",
            &["eps.py"],
            "",
            &["eps.py"],
        ),
        ("", &["my_app/__init__.py"], "", &["my_app"]),
        (
            "[build-system]\nbuild-backend = \"setuptools.build_meta\"\n",
            &["api/__init__.py", "worker/__init__.py", "tests/__init__.py"],
            "",
            &["api", "worker"],
        ),
    ];
    for (extra, files, root, names) in cases {
        let mut text = "[project]\nname = \"my-app\"\nversion = \"1.0\"\n".to_string();
        if !extra.contains("[build-system]") {
            text += "[build-system]\nbuild-backend = \"hatchling.build\"\n";
        }
        text += extra;
        let mut all: Vec<(&str, &str)> = vec![(PYPROJECT, &text)];
        all.extend(files.iter().map(|f| (*f, "")));
        let dir = project(&all);
        let p = read(dir.path(), None)
            .unwrap_or_else(|e| panic!("{extra}: {e}"))
            .unwrap();
        let want = if root.is_empty() {
            dir.path().to_path_buf()
        } else {
            dir.path().join(root)
        };
        assert_eq!(p.roots.len(), 1, "{extra}");
        assert_eq!(p.roots[0].dir, want, "{extra}");
        assert_eq!(
            p.roots[0].names,
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "{extra}"
        );
    }
}

#[test]
fn compiled_backends_are_refused_with_the_way_out() {
    let dir = project(&[(
        PYPROJECT,
        "[project]\nname = \"fast\"\nversion = \"1\"\n[build-system]\nbuild-backend = \"maturin\"\n",
    )]);
    let e = read(dir.path(), None).unwrap_err().to_string();
    assert!(
        e.contains("maturin") && e.contains("project-wheel") && e.contains("pyproject.toml"),
        "{e}"
    );
    let dir = project(&[
        (PYPROJECT, "[project]\nname = \"ext\"\nversion = \"1\"\n[build-system]\nbuild-backend = \"setuptools.build_meta\"\n"),
        ("setup.py", "from setuptools import setup, Extension\nsetup(ext_modules=[Extension('x', ['x.c'])])\n"),
    ]);
    let e = read(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("ext_modules"), "{e}");
}

#[test]
fn a_dynamic_version_comes_from_the_lock() {
    let text = HATCH.replace("version = \"0.3.0\"\n", "dynamic = [\"version\"]\n");
    let dir = project(&[(PYPROJECT, &text), ("src/hello_world/__init__.py", "")]);
    let e = read(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("dynamic"), "{e}");
    assert_eq!(
        read(dir.path(), Some("0.9")).unwrap().unwrap().version,
        "0.9"
    );
}

#[test]
fn the_wheel_is_deterministic_and_installs_like_any_wheel() {
    let dir = project(&[
        (PYPROJECT, HATCH),
        ("src/hello_world/__init__.py", "X = 1\n"),
    ]);
    let p = read(dir.path(), None).unwrap().unwrap();
    let pth = Placement::Pth(vec!["/app/src".into()]);
    let a = p.write_wheel(&pth).unwrap();
    assert_eq!(a, p.write_wheel(&pth).unwrap());
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join(p.wheel_filename());
    fs::write(&path, &a).unwrap();
    let target = crate::python::venv::VenvTarget::new(
        crate::layer::ImagePath::new("/app/.venv").unwrap(),
        "/usr/bin/python3.11",
        (3, 11, 2),
    )
    .unwrap();
    let install = crate::python::install::plan_install(&path, &target).unwrap();
    let paths: Vec<String> = install.plan.entries().map(|(p, _)| p.to_string()).collect();
    let sp = "app/.venv/lib/python3.11/site-packages";
    for want in [
        format!("{sp}/_hello_world.pth"),
        format!("{sp}/hello_world-0.3.0.dist-info/METADATA"),
        format!("{sp}/hello_world-0.3.0.dist-info/RECORD"),
        format!("{sp}/hello_world-0.3.0.dist-info/INSTALLER"),
        format!("{sp}/hello_world-0.3.0.dist-info/entry_points.txt"),
        "app/.venv/bin/hello".into(),
    ] {
        assert!(
            paths.iter().any(|p| p.trim_start_matches('/') == want),
            "{want} not in {paths:?}"
        );
    }
    // Copied sources for a project outside the tree.
    let copy = p.write_wheel(&Placement::Copy).unwrap();
    fs::write(&path, &copy).unwrap();
    let install = crate::python::install::plan_install(&path, &target).unwrap();
    assert!(install.plan.entries().any(|(p, _)| p
        .as_str()
        .ends_with("site-packages/hello_world/__init__.py")));
}

#[test]
fn a_pyproject_that_is_a_fifo_or_a_device_is_refused_at_once() {
    use crate::project_file::tests::{mkfifo, within_seconds};
    for fifo in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pyproject.toml");
        if fifo {
            mkfifo(&file);
        } else {
            std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        }
        let d = dir.path().to_path_buf();
        let e = within_seconds(move || read(&d, None).unwrap_err().to_string());
        let kind = if fifo { "a FIFO" } else { "a device" };
        assert!(e.contains("pyproject.toml is") && e.contains(kind), "{e}");
    }
}
