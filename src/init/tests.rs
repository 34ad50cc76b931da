use super::*;

struct Project(tempfile::TempDir);

impl Project {
    fn new() -> Project {
        Project(tempfile::tempdir().unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn write(&self, rel: &str, text: &str) -> &Project {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }
    fn init(&self, opts: &InitOptions) -> Result<Report, InitError> {
        init(self.path(), opts)
    }
}

/// Writes each (path under `root`, text), making directories as needed.
pub(super) fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn with_base(base: &str) -> InitOptions {
    InitOptions {
        base: Some(base.into()),
        ..InitOptions::default()
    }
}

fn texts(r: &Report, kind: NoteKind) -> Vec<String> {
    r.notes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|n| n.text.clone())
        .collect()
}

const FLAT_PYPROJECT: &str =
    "[project]\nname = \"hello-api\"\nrequires-python = \">=3.11\"\ndependencies = [\"fastapi\"]\n";

#[test]
fn flat_layout_writes_a_spec_that_loads() {
    let p = Project::new();
    p.write("pyproject.toml", FLAT_PYPROJECT)
        .write("uv.lock", "version = 1\n")
        .write(
            "hello_api/main.py",
            "from fastapi import FastAPI\n\napp = FastAPI()\n\n@app.get(\"/health\")\ndef health():\n    return {}\n",
        )
        .write("tests/test_main.py", "app = FastAPI()\n")
        .write(".venv/lib/x.py", "app = FastAPI()\n");
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    assert!(r.complete);
    assert_eq!(r.file, p.path().join("imgbuild.toml"));
    assert_eq!(
        texts(&r, NoteKind::Found),
        [
            "app hello_api.main:app (FastAPI in hello_api/main.py:3)",
            "lockfile uv.lock",
            "health route GET /health (hello_api/main.py:5)",
            "base oci:./base:latest (from --base)",
        ]
    );
    assert!(texts(&r, NoteKind::Missing).is_empty());
    let spec = crate::spec::load(None, p.path()).unwrap();
    assert_eq!(spec.base, "oci:./base:latest");
    assert_eq!(spec.app.as_deref(), Some("hello_api.main:app"));
    assert_eq!(spec.app_dir, None);
    assert_eq!(spec.lockfile, Some(p.path().join("uv.lock")));
    assert!(p.read("imgbuild.toml").contains("health = \"/health\""));
}

#[test]
fn src_layout_sets_app_dir_and_lists_scripts_as_comments() {
    let p = Project::new();
    p.write(
        "pyproject.toml",
        "[project]\nname = \"orders-svc\"\nrequires-python = \">=3.12\"\n\n[project.scripts]\norders-migrate = \"orders_svc.migrate:main\"\n",
    )
    .write(
        "src/orders_svc/app.py",
        "from starlette.applications import Starlette\nfrom starlette.routing import Route\n\napp = Starlette(routes=[Route(\"/healthz\", ok)])\n",
    )
    .write("src/orders_svc/admin.py", "admin = FastAPI()\n");
    let r = p.init(&InitOptions::default()).unwrap();
    assert!(!r.complete, "no base was given");
    let text = p.read("imgbuild.toml");
    assert!(text.contains("\napp = \"orders_svc.app:app\"\n"), "{text}");
    assert!(text.contains("\napp-dir = \"src\"\n"), "{text}");
    assert!(
        text.contains("\n# base = \"python:3.12-slim-trixie\"\n"),
        "{text}"
    );
    assert!(
        text.contains("\n# init = [\"orders-migrate\"]   # orders_svc.migrate:main\n"),
        "{text}"
    );
    assert!(text.contains("health = \"/healthz\""), "{text}");
    let guessed = texts(&r, NoteKind::Guessed);
    assert!(
        guessed[0].starts_with("app orders_svc.app:app (Starlette in src/orders_svc/app.py:4); also found orders_svc.admin:admin"),
        "{guessed:?}"
    );
    assert!(
        guessed[1].starts_with("base python:3.12-slim-trixie from requires-python \">=3.12\""),
        "{guessed:?}"
    );
    assert_eq!(
        texts(&r, NoteKind::Missing),
        ["lockfile: none of uv.lock, pylock.toml, poetry.lock, pdm.lock, requirements.txt; run `uv lock`, or the image gets no packages"]
    );
    // With the base uncommented, the settings load as written.
    std::fs::write(
        p.path().join("imgbuild.toml"),
        text.replace("# base = ", "base = "),
    )
    .unwrap();
    let spec = crate::spec::load(None, p.path()).unwrap();
    assert_eq!(spec.app_dir.as_deref(), Some("src"));
}

#[test]
fn never_overwrites_without_force() {
    let p = Project::new();
    p.write("main.py", "app = FastAPI()\n")
        .write("imgbuild.toml", "# mine\n");
    let e = p.init(&with_base("b")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "imgbuild.toml exists; pass --force to replace it"
    );
    assert_eq!(p.read("imgbuild.toml"), "# mine\n");
    let forced = InitOptions {
        force: true,
        ..with_base("b")
    };
    p.init(&forced).unwrap();
    assert!(p.read("imgbuild.toml").contains("app = \"main:app\""));
}

#[test]
fn pyproject_mode_appends_or_replaces_the_tool_table() {
    let p = Project::new();
    let original =
        "[project]\nname = \"svc\"  # keep this comment\n\n[tool.ruff]\nline-length = 100\n";
    p.write("pyproject.toml", original)
        .write("svc/main.py", "app = FastAPI()\n");
    let opts = InitOptions {
        pyproject: true,
        ..with_base("b")
    };
    p.init(&opts).unwrap();
    let text = p.read("pyproject.toml");
    assert!(
        text.starts_with(original),
        "the rest is kept as written:\n{text}"
    );
    assert!(text.contains("\n[tool.imgbuild]\n# Written by"), "{text}");
    assert!(!p.path().join("imgbuild.toml").exists());
    let spec = crate::spec::load(None, p.path()).unwrap();
    assert_eq!(spec.app.as_deref(), Some("svc.main:app"));

    let e = p.init(&opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pyproject.toml already has a [tool.imgbuild] table; pass --force to replace it"
    );
    // Writing imgbuild.toml would override it silently: refused too.
    let e = p.init(&with_base("b")).unwrap_err();
    assert!(matches!(e, InitError::Shadowed), "{e}");

    p.write(
        "pyproject.toml",
        &format!("{original}\n[tool.imgbuild]\nbase = \"old\"\napp = \"x:y\"\n[tool.imgbuild.env]\nA = \"1\"\n\n[tool.black]\nx = 1\n"),
    );
    let forced = InitOptions {
        force: true,
        ..opts
    };
    p.init(&forced).unwrap();
    let text = p.read("pyproject.toml");
    assert!(
        !text.contains("old") && !text.contains("A = \"1\""),
        "{text}"
    );
    assert!(text.contains("[tool.black]\nx = 1\n"), "{text}");
    assert_eq!(text.matches("[tool.imgbuild]").count(), 1, "{text}");
    assert_eq!(crate::spec::load(None, p.path()).unwrap().base, "b");
}

#[test]
fn bad_input_writes_nothing() {
    let p = Project::new();
    p.write("main.py", "app = FastAPI()\n");
    let e = p.init(&with_base("  ")).unwrap_err();
    assert!(matches!(e, InitError::Invalid { .. }), "{e}");
    assert!(!p.path().join("imgbuild.toml").exists());

    let e = p
        .init(&InitOptions {
            pyproject: true,
            ..with_base("b")
        })
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--pyproject: no pyproject.toml in "),
        "{e}"
    );

    p.write("pyproject.toml", "[project\n");
    let e = p.init(&with_base("b")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pyproject.toml: invalid TOML; fix it and run `imgbuild init` again"
    );
    assert!(!p.path().join("imgbuild.toml").exists());
}

#[test]
fn without_an_app_or_a_readable_lock_it_says_what_is_missing() {
    let p = Project::new();
    p.write("poetry.lock", "").write("lib.py", "x = 1\n");
    let r = p.init(&with_base("b")).unwrap();
    assert!(!r.complete);
    let missing = texts(&r, NoteKind::Missing);
    assert!(
        missing[0].starts_with("app: no top-level `NAME = FastAPI(` / `Starlette(` / `Litestar(`"),
        "{missing:?}"
    );
    if !DEFAULT_LOCKFILES.contains(&"poetry.lock") {
        assert!(
            missing[1]
                .starts_with("lockfile: found poetry.lock, which this imgbuild does not read"),
            "{missing:?}"
        );
    }
    assert!(p.read("imgbuild.toml").contains("\n# app = \"main:app\"\n"));
}

#[test]
fn removing_the_tool_table_keeps_everything_else() {
    let text = "[project]\nname = \"x\"\n\n[tool.imgbuild]\nbase = \"b\"\n\n[ tool.imgbuild.labels ]\na = \"b\"\n[tool.uv]\npackage = false\n";
    assert_eq!(
        without_tool_table(text).unwrap(),
        "[project]\nname = \"x\"\n\n[tool.uv]\npackage = false\n"
    );
    assert_eq!(
        without_tool_table("[tool]\nimgbuild = { base = \"b\" }\n"),
        None,
        "an inline table cannot be cut out line by line"
    );
}

#[test]
fn the_base_suggested_is_one_imgbuild_builds_or_says_why_not() {
    let app = "from fastapi import FastAPI\n\napp = FastAPI()\n";
    let project = |requires: &str| {
        let p = Project::new();
        p.write(
            "pyproject.toml",
            &format!("[project]\nname = \"svc\"\nrequires-python = \"{requires}\"\n"),
        )
        .write("svc/main.py", app);
        p
    };
    let p = project(">=3.14");
    let r = p.init(&InitOptions::default()).unwrap();
    let text = p.read("imgbuild.toml");
    assert!(
        text.contains("\n# base = \"python:3.14-slim-trixie\"\n"),
        "{text}"
    );
    assert!(texts(&r, NoteKind::Missing)
        .iter()
        .all(|n| !n.starts_with("base")));

    let p = project(">=3.16");
    let r = p.init(&InitOptions::default()).unwrap();
    let text = p.read("imgbuild.toml");
    assert!(
        text.contains("allows no Python imgbuild compiles bytecode for\n# (CPython 3.9 to 3.15): this base needs `bytecode = false`.\n# base = \"python:3.16-slim-trixie\"\n"),
        "{text}"
    );
    let missing = texts(&r, NoteKind::Missing);
    assert!(
        missing.iter().any(|n| n.starts_with(
            "base: requires-python \">=3.16\" allows no Python imgbuild compiles bytecode for (CPython 3.9 to 3.15)"
        ) && n.contains("`bytecode = false`")),
        "{missing:?}"
    );
}

#[test]
fn factories_are_found_through_their_call_or_as_the_app() {
    // `app = get_application()` at the top level: that is the app.
    let p = Project::new();
    p.write("pyproject.toml", FLAT_PYPROJECT)
        .write(
            "app/core/setup.py",
            "from fastapi import FastAPI\n\ndef get_application() -> FastAPI:\n    application = FastAPI()\n    return application\n",
        )
        .write(
            "app/main.py",
            "from app.core.setup import get_application\n\napp = get_application()\n",
        );
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    assert_eq!(
        texts(&r, NoteKind::Found)[0],
        "app app.main:app (FastAPI made by get_application() in app/main.py:3)"
    );
    assert_eq!(
        crate::spec::load(None, p.path()).unwrap().app.as_deref(),
        Some("app.main:app")
    );

    // Only a factory: uvicorn calls it.
    let p = Project::new();
    p.write("pyproject.toml", FLAT_PYPROJECT).write(
        "svc/__init__.py",
        "from fastapi import FastAPI\n\ndef create_app(config=None):\n    return FastAPI()\n",
    );
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    assert_eq!(
        texts(&r, NoteKind::Found)[0],
        "app svc:create_app() (a factory of a FastAPI in svc/__init__.py:3; uvicorn calls it, --factory)"
    );
    assert!(p
        .read("imgbuild.toml")
        .contains("\napp = \"svc:create_app()\"\n"));
    let spec = crate::spec::load(None, p.path()).unwrap();
    assert_eq!(
        (spec.app.as_deref().unwrap(), spec.app_factory),
        ("svc:create_app", true)
    );
}

/// The full-stack template's shape: a virtual root, one member `backend`
/// whose package is `app`, locked at the root.
fn template_workspace() -> Project {
    let p = Project::new();
    p.write("pyproject.toml", "[tool.uv.workspace]\nmembers = [\"backend\"]\n")
        .write(
            "backend/pyproject.toml",
            "[project]\nname = \"backend\"\nversion = \"0.1.0\"\nrequires-python = \">=3.10,<4.0\"\n",
        )
        .write(
            "backend/app/main.py",
            "from fastapi import FastAPI\n\napp = FastAPI()\n\n@app.get(\"/health\")\ndef health():\n    return {}\n",
        )
        .write("frontend/tools/mock.py", "mock = FastAPI()\n")
        .write(
            "uv.lock",
            "version = 1\nrequires-python = \">=3.10, <4.0\"\n[manifest]\nmembers = [\"backend\"]\n\n[[package]]\nname = \"backend\"\nversion = \"0.1.0\"\nsource = { editable = \"backend\" }\n",
        );
    p
}

#[test]
fn at_a_workspace_root_the_member_with_the_app_is_the_package() {
    let p = template_workspace();
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    let found = texts(&r, NoteKind::Found);
    assert!(
        found[0].starts_with("package \"backend\": the uv workspace member in backend/"),
        "{found:?}"
    );
    assert_eq!(found[1], "app app.main:app (FastAPI in app/main.py:3)");
    let text = p.read("imgbuild.toml");
    assert!(
        text.contains("\npackage = \"backend\"\n") && text.contains("\nlockfile = \"uv.lock\"\n"),
        "{text}"
    );
    let spec = crate::spec::load(None, p.path()).unwrap();
    assert_eq!(spec.app.as_deref(), Some("app.main:app"));
    assert_eq!(spec.source, p.path().join("backend"));
    assert_eq!(spec.health.as_deref(), Some("/health"));
}

#[test]
fn in_a_members_directory_the_workspace_lock_is_found_and_its_python_read() {
    let p = template_workspace();
    // The member's own requires-python is gone: the lock's is used.
    p.write(
        "backend/pyproject.toml",
        "[project]\nname = \"backend\"\nversion = \"0.1.0\"\n",
    );
    let member = p.path().join("backend");
    let r = init(&member, &InitOptions::default()).unwrap();
    assert!(
        texts(&r, NoteKind::Found).contains(
            &"lockfile ../uv.lock, the lock of the uv workspace this project is a member of"
                .to_string()
        ),
        "{:?}",
        r.notes
    );
    let text = std::fs::read_to_string(member.join("imgbuild.toml")).unwrap();
    assert!(text.contains("\nlockfile = \"../uv.lock\"\n"), "{text}");
    assert!(text.contains("requires-python \">=3.10, <4.0\""), "{text}");
    assert!(
        text.contains("\napp = \"app.main:app\"\n") && !text.contains("package ="),
        "{text}"
    );
}

#[test]
fn a_project_without_an_app_that_depends_on_a_packaged_server_gets_its_command() {
    let p = Project::new();
    p.write(
        "pyproject.toml",
        "[project]\nname = \"traces\"\nrequires-python = \">=3.11\"\ndependencies = [\"arize-phoenix>=11\", \"jupyverse[jupyterlab]\"]\n",
    )
    .write("uv.lock", "version = 1\n");
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    assert!(r.complete, "{:?}", r.notes);
    assert!(texts(&r, NoteKind::Missing).is_empty(), "{:?}", r.notes);
    let guessed = texts(&r, NoteKind::Guessed);
    assert!(
        guessed[0].starts_with("cmd [\"phoenix\", \"serve\"], port 6006 (the dependency arize-phoenix: Arize Phoenix (tracing)")
            && guessed[0].contains("also found cmd [\"sh\", \"-c\", \"cd /home/app && exec jupyverse --host 0.0.0.0 --port 8000\"], port 8000 (jupyverse)"),
        "{guessed:?}"
    );
    let text = p.read("imgbuild.toml");
    assert!(
        text.contains("cmd = [\"phoenix\", \"serve\"]\nlockfile = \"uv.lock\"\nport = 6006\n"),
        "{text}"
    );
    assert!(!text.contains("app ="), "{text}");
    let spec = crate::spec::load(None, p.path()).unwrap();
    assert_eq!(spec.app, None);
    assert_eq!(spec.cmd.unwrap(), ["phoenix", "serve"]);
    assert_eq!(spec.port, 6006);
}

#[test]
fn a_requirements_project_is_read_through_its_lock_and_the_project_app_wins() {
    let p = Project::new();
    p.write(
        "pylock.toml",
        "lock-version = \"1.0\"\n[[packages]]\nname = \"uvicorn\"\n[[packages]]\nname = \"datasette\"\n",
    );
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    assert_eq!(
        texts(&r, NoteKind::Found)[0],
        "cmd [\"datasette\", \"serve\", \"/home/app/data.db\", \"--create\", \"--root\", \"--host\", \"0.0.0.0\", \"--port\", \"8000\"], port 8000 (the dependency datasette: Datasette (data publishing), on a database in HOME that it creates (add your files to `cmd`); `--root` lets the root actor write (the sign-in URL in its log, or `datasette create-token root` with DATASETTE_SECRET in `env`)), with no `app`"
    );
    // An app of the project's own is the service, whatever it depends on.
    p.write("main.py", "from fastapi import FastAPI\napp = FastAPI()\n");
    let r = p
        .init(&InitOptions {
            force: true,
            ..with_base("oci:./base:latest")
        })
        .unwrap();
    assert!(p.read("imgbuild.toml").contains("app = \"main:app\""));
    assert!(!p.read("imgbuild.toml").contains("cmd ="), "{:?}", r.notes);
}

#[test]
fn an_app_of_a_dependency_is_read_in_the_project_venv() {
    let p = Project::new();
    p.write(
        "pyproject.toml",
        "[project]\nname = \"svc\"\ndependencies = [\"toy-server\"]\n",
    )
    .write(
        ".venv/lib/python3.11/site-packages/toy_server-1.0.dist-info/top_level.txt",
        "toy_server\n",
    )
    .write(
        ".venv/lib/python3.11/site-packages/toy_server/asgi.py",
        "from fastapi import FastAPI\napplication = FastAPI()\n",
    );
    let r = p.init(&with_base("oci:./base:latest")).unwrap();
    assert!(r.complete);
    assert_eq!(
        texts(&r, NoteKind::Found)[0],
        "app toy_server.asgi:application (FastAPI in toy_server/asgi.py:2, of the dependency toy-server, read in .venv)"
    );
    assert!(p
        .read("imgbuild.toml")
        .contains("app = \"toy_server.asgi:application\"\n"));
}
