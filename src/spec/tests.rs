//! Tests of reading the settings, through the files a user writes.

use super::keys::{self, Raw, Type, KEYS};
use super::values::is_app_reference;
use super::*;
use crate::text::error_chain;
use std::fs;

/// A project directory for settings files; the spec's submodules' tests use it too.
pub(super) struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    pub(super) fn new() -> Self {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub(super) fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
    pub(super) fn write(&self, name: &str, text: &str) -> &Self {
        let p = self.dir.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }
    pub(super) fn load(&self) -> Result<Spec, SpecError> {
        load(None, self.dir.path())
    }
    pub(super) fn err(&self, toml: &str) -> String {
        self.write(SPEC_FILE, toml);
        let e = error_chain(&self.load().unwrap_err());
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }
}

pub(super) const MINIMAL: &str = "base = \"python:3.12-slim\"\napp = \"main:app\"\n";

#[test]
fn minimal_file_gets_every_default() {
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL);
    let s = p.load().unwrap();
    assert_eq!(s.file, p.path().join(SPEC_FILE));
    assert!(s.file.is_absolute());
    assert_eq!(s.base, "python:3.12-slim");
    assert_eq!(s.source, p.path());
    assert_eq!(s.workdir.absolute(), "/app");
    assert_eq!(s.venv.absolute(), "/app/.venv");
    assert_eq!(s.lockfile, None);
    assert_eq!((s.port, s.workers, s.proxy_headers), (8000, 1, false));
    assert_eq!(s.user, (65532, 65532));
    assert_eq!(s.platforms, vec![Platform::parse("linux/amd64").unwrap()]);
    assert_eq!((s.include_dev, s.layer_budget), (false, 100));
    assert!(s.env.is_empty() && s.labels.is_empty() && s.annotations.is_empty());
    assert!(s.groups.is_empty() && s.extras.is_empty() && s.exclude.is_empty());
    assert_eq!(
        (s.entrypoint, s.cmd, s.app_dir, s.index_url),
        (None, None, None, None)
    );
}

#[test]
fn every_key_is_read() {
    let p = Project::new();
    p.write("svc/uv.lock", "")
        .write("svc/requirements.prod.txt", "");
    p.write(
        SPEC_FILE,
        r#"
base = "oci:./base:3.12"
source = "svc"
workdir = "/srv/app"
venv = "/opt/venv"
lockfile = "svc/requirements.prod.txt"
app = "myapi.server:app"
app-dir = "src"
port = 8080
workers = 4
proxy-headers = true
user = "1000:1001"
env = { LOG_LEVEL = "info" }
labels = { team = "payments" }
annotations = { "org.opencontainers.image.title" = "api" }
platforms = ["linux/amd64", "linux/arm64/v8"]
entrypoint = ["/opt/venv/bin/python", "-m", "myapi"]
cmd = ["--verbose"]
groups = ["prod"]
extras = ["postgres"]
include-dev = true
index-url = "https://pypi.example.com/simple"
layer-budget = 60
source-url = "https://github.com/acme/api"
revision = "4f2c1e9"
exclude = ["tests/", "*.md"]
"#,
    );
    let s = p.load().unwrap();
    assert_eq!(s.source, p.path().join("svc"));
    assert_eq!(s.workdir.absolute(), "/srv/app");
    assert_eq!(s.venv.absolute(), "/opt/venv");
    assert_eq!(s.lockfile, Some(p.path().join("svc/requirements.prod.txt")));
    assert_eq!(s.app.as_deref(), Some("myapi.server:app"));
    assert_eq!(s.app_dir.as_deref(), Some("src"));
    assert_eq!(
        (s.port, s.workers, s.proxy_headers, s.user),
        (8080, 4, true, (1000, 1001))
    );
    assert_eq!(s.env["LOG_LEVEL"], "info");
    assert_eq!(s.labels["team"], "payments");
    assert_eq!(s.annotations["org.opencontainers.image.title"], "api");
    assert_eq!(
        s.platforms
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64/v8"]
    );
    assert_eq!(s.entrypoint.as_deref().unwrap()[2], "myapi");
    assert_eq!(s.cmd, Some(vec!["--verbose".to_string()]));
    assert_eq!(
        (s.groups.as_slice(), s.extras.as_slice()),
        (&["prod".to_string()][..], &["postgres".to_string()][..])
    );
    assert!(s.include_dev);
    assert_eq!(
        s.index_url.as_deref(),
        Some("https://pypi.example.com/simple")
    );
    assert_eq!(s.layer_budget, 60);
    assert_eq!(s.source_url.as_deref(), Some("https://github.com/acme/api"));
    assert_eq!(s.revision.as_deref(), Some("4f2c1e9"));
    assert_eq!(s.exclude, ["tests/", "*.md"]);
}

#[test]
fn keys_table_and_raw_struct_agree() {
    // A value of the declared type for every key must deserialise into Raw.
    let mut table = toml::Table::new();
    for (key, ty, _, _) in KEYS {
        let v = match ty {
            Type::Str => toml::Value::String("x".into()),
            Type::Int => toml::Value::Integer(1),
            Type::Bool => toml::Value::Boolean(true),
            Type::StrList => toml::Value::Array(vec![]),
            Type::StrMap | Type::Table => toml::Value::Table(toml::Table::new()),
            Type::BoolOrStr => toml::Value::Boolean(true),
        };
        table.insert(key.to_string(), v);
    }
    let raw: Raw = toml::Value::Table(table).try_into().unwrap();
    assert!(
        raw.base.is_some()
            && raw.exclude.is_some()
            && raw.layer_budget.is_some()
            && raw.app_dir.is_some()
    );
    // And each key's example parses as that key.
    for (key, _, example, _) in KEYS {
        let t: toml::Table = example.parse().unwrap();
        assert!(t.contains_key(*key), "{example}");
    }
}

#[test]
fn default_lockfile_is_the_first_found_in_source() {
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL)
        .write("requirements.txt", "")
        .write("pylock.toml", "");
    assert_eq!(
        p.load().unwrap().lockfile,
        Some(p.path().join("pylock.toml"))
    );
    p.write("uv.lock", "");
    assert_eq!(p.load().unwrap().lockfile, Some(p.path().join("uv.lock")));
}

#[test]
fn poetry_lock_comes_before_pdm_lock_and_after_pylock() {
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL)
        .write("requirements.txt", "")
        .write("pdm.lock", "");
    assert_eq!(p.load().unwrap().lockfile, Some(p.path().join("pdm.lock")));
    p.write("poetry.lock", "");
    assert_eq!(
        p.load().unwrap().lockfile,
        Some(p.path().join("poetry.lock"))
    );
    p.write("pylock.toml", "");
    assert_eq!(
        p.load().unwrap().lockfile,
        Some(p.path().join("pylock.toml"))
    );
}

#[test]
fn a_lock_imgbuild_cannot_read_stops_the_build_instead_of_an_image_without_packages() {
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL).write("Pipfile.lock", "{}");
    let err = p.load().unwrap_err().to_string();
    assert!(
        err.contains("lockfile") && err.contains("has only Pipfile.lock"),
        "{err}"
    );
    p.write("requirements.txt", "");
    assert_eq!(
        p.load().unwrap().lockfile,
        Some(p.path().join("requirements.txt"))
    );
}

#[test]
fn relative_paths_resolve_against_the_spec_files_directory() {
    let p = Project::new();
    p.write(
        "deploy/imgbuild.toml",
        &format!("{MINIMAL}source = \"../svc\"\n"),
    )
    .write("svc/main.py", "");
    let s = load(Some(Path::new("deploy/imgbuild.toml")), &p.path()).unwrap();
    assert_eq!(s.file, p.path().join("deploy/imgbuild.toml"));
    assert_eq!(s.source, p.path().join("svc"));
}

#[test]
fn lookup_prefers_imgbuild_toml_then_pyproject_tool_table() {
    let p = Project::new();
    p.write(PYPROJECT_FILE, "[project]\nname = \"x\"\n\n[tool.imgbuild]\nbase = \"from-pyproject\"\napp = \"main:app\"\n");
    assert_eq!(p.load().unwrap().base, "from-pyproject");
    assert_eq!(p.load().unwrap().file, p.path().join(PYPROJECT_FILE));
    p.write(SPEC_FILE, "base = \"from-imgbuild\"\napp = \"main:app\"\n");
    assert_eq!(p.load().unwrap().base, "from-imgbuild");
}

#[test]
fn pyproject_without_tool_table_is_not_a_spec() {
    let p = Project::new();
    p.write(PYPROJECT_FILE, "[project]\nname = \"x\"\n");
    let e = p.load().unwrap_err().to_string();
    assert!(e.starts_with("no imgbuild.toml in "), "{e}");
    assert!(
        e.contains("create imgbuild.toml with at least `base = "),
        "{e}"
    );
    // Named explicitly, the missing table is the error.
    let e = load(Some(Path::new(PYPROJECT_FILE)), &p.path())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "pyproject.toml: no [tool.imgbuild] table; add one with at least `base` and `app`, or put the settings in imgbuild.toml");
}

#[test]
fn explicit_file_with_another_name_is_read_as_imgbuild_toml() {
    let p = Project::new();
    p.write("ci/prod.toml", MINIMAL);
    assert_eq!(
        load(Some(&p.path().join("ci/prod.toml")), &p.path())
            .unwrap()
            .app
            .as_deref(),
        Some("main:app")
    );
    let e = error_chain(&load(Some(Path::new("ci/missing.toml")), &p.path()).unwrap_err());
    assert!(e.starts_with("ci/missing.toml: cannot read it: "), "{e}");
}

#[test]
fn unknown_key_suggests_the_closest() {
    let p = Project::new();
    assert_eq!(
        p.err(&format!("{MINIMAL}prot = 80\n")),
        "imgbuild.toml: unknown key \"prot\" (did you mean \"port\"?)"
    );
    assert_eq!(
        p.err(&format!("{MINIMAL}app_dir = \"src\"\n")),
        "imgbuild.toml: unknown key \"app_dir\" (did you mean \"app-dir\"?)"
    );
    assert_eq!(
        p.err(&format!("{MINIMAL}frobnicate = 1\n")),
        "imgbuild.toml: unknown key \"frobnicate\""
    );
    let p = Project::new();
    p.write(
        PYPROJECT_FILE,
        "[tool.imgbuild]\nbase = \"b\"\napp = \"main:app\"\nworkrs = 2\n",
    );
    assert_eq!(
        p.load().unwrap_err().to_string(),
        "pyproject.toml: unknown key \"workrs\" in [tool.imgbuild] (did you mean \"workers\"?)"
    );
}

#[test]
fn wrong_types_name_the_key_and_the_expected_type() {
    let p = Project::new();
    assert_eq!(
        p.err(&format!("{MINIMAL}port = \"8000\"\n")),
        "imgbuild.toml: key \"port\" must be an integer, found string"
    );
    assert_eq!(
        p.err(&format!("{MINIMAL}proxy-headers = \"yes\"\n")),
        "imgbuild.toml: key \"proxy-headers\" must be a boolean (true or false), found string"
    );
    assert_eq!(
        p.err(&format!("{MINIMAL}platforms = \"linux/amd64\"\n")),
        "imgbuild.toml: key \"platforms\" must be an array of strings, found string"
    );
    assert_eq!(
        p.err(&format!("{MINIMAL}cmd = [\"a\", 1]\n")),
        "imgbuild.toml: key \"cmd\" must be an array of strings, found integer at position 2"
    );
    assert_eq!(
        p.err(&format!("{MINIMAL}env = {{ PORT = 8000 }}\n")),
        "imgbuild.toml: key \"env.PORT\" must be a string, found integer (quote it)"
    );
    let p = Project::new();
    p.write(PYPROJECT_FILE, "[tool]\nimgbuild = 3\n");
    let e = load(Some(Path::new(PYPROJECT_FILE)), &p.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "pyproject.toml: key \"tool.imgbuild\" must be a table, found integer"
    );
}

#[test]
fn missing_required_keys_are_named() {
    let p = Project::new();
    assert_eq!(
        p.err("app = \"main:app\"\n"),
        "imgbuild.toml: missing required key \"base\"; for example base = \"python:3.12-slim\""
    );
    assert_eq!(
        p.err("base = \"b\"\n"),
        "imgbuild.toml: missing required key \"app\"; for example app = \"main:app\" (or set `cmd` to a server that starts itself)"
    );
}

#[test]
fn syntax_errors_give_file_line_and_column() {
    let p = Project::new();
    let e = p.err("base = \"b\"\napp = main:app\n");
    assert!(
        e.starts_with("imgbuild.toml: invalid TOML at line 2, column 7: "),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_key() {
    let p = Project::new();
    let cases: &[(&str, &str)] = &[
        (
            "port = 0",
            "key \"port\": 0 is out of range; use 1 to 65535",
        ),
        ("port = 70000", "key \"port\": 70000 is out of range"),
        (
            "workers = 0",
            "key \"workers\": 0 is out of range; use 1 to",
        ),
        (
            "layer-budget = 500",
            "key \"layer-budget\": 500 is out of range; use 2 to 127",
        ),
        (
            "user = \"0:0\"",
            "key \"user\": \"0:0\" runs the service as root",
        ),
        (
            "user = \"root\"",
            "key \"user\": \"root\" must be a numeric \"uid:gid\"",
        ),
        (
            "user = \"app:app\"",
            "key \"user\": \"app:app\" must be a numeric",
        ),
        (
            "workdir = \"app\"",
            "key \"workdir\": \"app\" must be an absolute path in the image",
        ),
        (
            "workdir = \"/app/../etc\"",
            "key \"workdir\": \"/app/../etc\": contains `..`",
        ),
        ("venv = \"/\"", "key \"venv\": \"/\": names the root"),
        (
            "venv = \"/app\"",
            "key \"venv\": /app would hold the workdir /app",
        ),
        ("platforms = []", "key \"platforms\": is empty"),
        (
            "platforms = [\"linux/amd46\"]",
            "key \"platforms\": invalid platform \"linux/amd46\"",
        ),
        (
            "platforms = [\"windows/amd64\"]",
            "key \"platforms\": \"windows/amd64\": imgbuild builds Linux images only",
        ),
        (
            "platforms = [\"linux/mips64le\"]",
            "key \"platforms\": platform linux/mips64le has no Python wheel architecture",
        ),
        (
            "platforms = [\"linux/arm64\", \"linux/arm64/v8\"]",
            "key \"platforms\": \"linux/arm64/v8\" repeats linux/arm64",
        ),
        ("entrypoint = []", "key \"entrypoint\": is empty"),
        (
            "env = { \"A=B\" = \"x\" }",
            "key \"env\": \"A=B\" is not a valid variable name",
        ),
        (
            "labels = { \"\" = \"x\" }",
            "key \"labels\": has an empty name",
        ),
        (
            "groups = [\"-x\"]",
            "key \"groups\": \"-x\" is not a valid name",
        ),
        (
            "index-url = \"pypi.example.com\"",
            "key \"index-url\": \"pypi.example.com\" must start with https://",
        ),
        (
            "exclude = [\"ok\", \"[\"]",
            "key \"exclude\": item 2: invalid pattern \"[\"",
        ),
        ("lockfile = \"nope.lock\"", "key \"lockfile\": "),
        ("source = \"nowhere\"", "key \"source\": "),
        (
            "app-dir = \"/abs\"",
            "key \"app-dir\": \"/abs\" must be a directory relative to the workdir",
        ),
    ];
    for (line, want) in cases {
        let e = p.err(&format!("{MINIMAL}{line}\n"));
        assert!(e.starts_with("imgbuild.toml: "), "{e}");
        assert!(e.contains(want), "for {line}: {e}");
    }
    let e = p.err(&format!("{MINIMAL}source = \"nowhere\"\n"));
    assert!(
        e.contains(&format!(
            "{} does not exist",
            p.path().join("nowhere").display()
        )),
        "{e}"
    );
    p.write("file.txt", "");
    let e = p.err(&format!("{MINIMAL}source = \"file.txt\"\n"));
    assert!(e.contains("file.txt is not a directory"), "{e}");
    let e = p.err("base = \"\"\napp = \"main:app\"\n");
    assert!(
        e.starts_with("imgbuild.toml: key \"base\": is empty"),
        "{e}"
    );
}

#[test]
fn app_must_be_module_colon_attribute() {
    for ok in [
        "main:app",
        "myapi.server:app",
        "pkg._internal.web:create_app",
        "m:app.router",
        "café:app",
    ] {
        assert!(is_app_reference(ok), "{ok}");
    }
    let p = Project::new();
    for bad in [
        "main",
        "main.app",
        ":app",
        "main:",
        "main:app:x",
        "1main:app",
        "my-api:app",
        "main:app(1)",
        "main:app()()",
        "main:()",
        "main..x:app",
    ] {
        let e = p.err(&format!("base = \"b\"\napp = \"{bad}\"\n"));
        assert!(
            e.starts_with(&format!(
                "imgbuild.toml: key \"app\": {bad:?} is not \"module.path:attribute\" (or \"module.path:factory()\")"
            )),
            "{e}"
        );
    }
}

#[test]
fn an_app_written_with_parentheses_is_a_factory() {
    let s = spec_with("");
    assert_eq!(
        (s.app.as_deref().unwrap(), s.app_factory),
        ("main:app", false)
    );
    let p = Project::new();
    p.write(SPEC_FILE, "base = \"b\"\napp = \"svc.main:create_app()\"\n");
    let s = p.load().unwrap();
    assert_eq!(
        (s.app.as_deref().unwrap(), s.app_factory),
        ("svc.main:create_app", true)
    );
    assert_eq!(s.app_setting().as_deref(), Some("svc.main:create_app()"));
    let cmd = s.command(1).cmd.unwrap();
    assert_eq!(&cmd[1..3], ["svc.main:create_app", "--host"]);
    assert!(cmd.contains(&"--factory".to_string()), "{cmd:?}");
}

#[test]
fn app_is_optional_when_cmd_or_entrypoint_starts_the_server() {
    let p = Project::new();
    p.write(SPEC_FILE, "base = \"b\"\ncmd = [\"phoenix\", \"serve\"]\n");
    let s = p.load().unwrap();
    assert_eq!((s.app.clone(), s.app_setting()), (None, None));
    assert_eq!(s.command(1).cmd.unwrap(), ["phoenix", "serve"]);
    p.write(SPEC_FILE, "base = \"b\"\nentrypoint = [\"/app/run.sh\"]\n");
    let s = p.load().unwrap();
    assert_eq!(
        (s.command(1).entrypoint.unwrap(), s.command(1).cmd),
        (vec!["/app/run.sh".to_string()], None)
    );
    // Given with cmd, it is still read (and checked when the image is built).
    p.write(
        SPEC_FILE,
        "base = \"b\"\napp = \"m:app\"\ncmd = [\"hypercorn\", \"m:app\"]\n",
    );
    assert_eq!(p.load().unwrap().app.as_deref(), Some("m:app"));
}

#[test]
fn messages_show_paths_outside_cwd_in_full() {
    let p = Project::new();
    let elsewhere = Project::new();
    elsewhere.write(SPEC_FILE, "base = 1\napp = \"main:app\"\n");
    let e = load(Some(&elsewhere.path().join(SPEC_FILE)), &p.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{}: key \"base\"",
            elsewhere.path().join(SPEC_FILE).display()
        )),
        "{e}"
    );
}

fn spec_with(extra: &str) -> Spec {
    let p = Project::new();
    p.write(SPEC_FILE, &format!("{MINIMAL}{extra}"));
    p.load().unwrap()
}

#[test]
fn app_excludes_add_the_venv_inside_the_workdir() {
    assert_eq!(
        spec_with("exclude = [\"tests\"]\n").app_excludes(),
        ["tests", ".venv"]
    );
    assert_eq!(
        spec_with("venv = \"/opt/venv\"\n").app_excludes(),
        Vec::<String>::new()
    );
    assert_eq!(
        spec_with("venv = \"/app/env[1]\"\n").app_excludes(),
        ["env\\[1\\]"]
    );
}

#[test]
fn suggestions_count_a_swap_of_neighbours_as_one_edit() {
    assert_eq!(keys::suggestion("prot"), Some("port"));
    assert_eq!(keys::suggestion("wrkers"), Some("workers"));
    assert_eq!(keys::suggestion("PORT"), Some("port"));
    assert_eq!(keys::suggestion("xyz"), None);
}

#[test]
fn bytecode_is_on_by_default_and_takes_false_or_unchecked_hash() {
    use super::BytecodeMode as Mode;
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL);
    let s = p.load().unwrap();
    assert_eq!((s.bytecode, s.bytecode_stdlib), (Mode::CheckedHash, true));
    for (line, mode) in [
        ("bytecode = false", Mode::Off),
        ("bytecode = \"unchecked-hash\"", Mode::UncheckedHash),
    ] {
        p.write(
            SPEC_FILE,
            &format!("{MINIMAL}{line}\nbytecode-stdlib = false\n"),
        );
        let s = p.load().unwrap();
        assert_eq!((s.bytecode, s.bytecode_stdlib), (mode, false), "{line}");
    }
    p.write(SPEC_FILE, &format!("{MINIMAL}bytecode = \"timestamp\"\n"));
    let e = error_chain(&p.load().unwrap_err());
    assert!(
        e.contains("key \"bytecode\"") && e.contains("unchecked-hash"),
        "{e}"
    );
    p.write(SPEC_FILE, &format!("{MINIMAL}bytecode = 1\n"));
    let e = error_chain(&p.load().unwrap_err());
    assert!(e.contains("bytecode") && e.contains("true, false"), "{e}");
}

#[test]
fn compression_is_gzip_by_default_and_takes_zstd() {
    use crate::layer::compress::Compression;
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL);
    assert_eq!(p.load().unwrap().compression, Compression::Gzip);
    p.write(SPEC_FILE, &format!("{MINIMAL}compression = \"zstd\"\n"));
    assert_eq!(p.load().unwrap().compression, Compression::Zstd);
    p.write(SPEC_FILE, &format!("{MINIMAL}compression = \"xz\"\n"));
    let e = error_chain(&p.load().unwrap_err());
    assert!(
        e.contains("key \"compression\"") && e.contains("\"xz\"") && e.contains("zstd"),
        "{e}"
    );
}

#[test]
fn venv_and_workdir_in_system_directories_are_refused() {
    let p = Project::new();
    let e = p.err(&format!("{MINIMAL}venv = \"/usr\"\n"));
    assert!(
        e.contains("key \"venv\": /usr is inside the system directory /usr"),
        "{e}"
    );
    let refused = [
        ("venv", "/usr/local/venv"),
        ("venv", "/bin"),
        ("venv", "/lib64/venv"),
        ("venv", "/var/venv"),
        ("workdir", "/etc"),
        ("workdir", "/sys/app"),
        ("workdir", "/sbin"),
        ("workdir", "/dev"),
    ];
    for (key, path) in refused {
        let e = p.err(&format!("{MINIMAL}{key} = \"{path}\"\n"));
        assert!(e.contains(&format!("key \"{key}\": {path}")), "{e}");
        let example = if key == "venv" { "/app/.venv" } else { "/app" };
        assert!(e.ends_with(&format!("such as {example}")), "{e}");
    }
    for line in [
        "venv = \"/opt/venv\"",
        "workdir = \"/srv/app\"",
        "venv = \"/usrx/venv\"",
    ] {
        p.write(SPEC_FILE, &format!("{MINIMAL}{line}\n"));
        assert!(p.load().is_ok(), "{line}");
    }
}

#[test]
fn env_names_and_values_with_a_newline_or_nul_are_refused() {
    let p = Project::new();
    let cases: &[(&str, &str)] = &[
        (
            r#"env = { "A\nB" = "x" }"#,
            "key \"env\": \"A\\nB\" is not a valid variable name",
        ),
        (
            r#"env = { "A\u0000" = "x" }"#,
            "key \"env\": \"A\\0\" is not a valid variable name",
        ),
        (
            r#"env = { A = "x\ny" }"#,
            "key \"env.A\": the value holds a newline or NUL",
        ),
        (
            r#"env = { A = "x\r" }"#,
            "key \"env.A\": the value holds a newline or NUL",
        ),
        (
            r#"env = { A = "x\u0000" }"#,
            "key \"env.A\": the value holds a newline or NUL",
        ),
    ];
    for (line, want) in cases {
        let e = p.err(&format!("{MINIMAL}{line}\n"));
        assert!(e.contains(want), "for {line}: {e}");
    }
}

/// A file outside every project, holding what must never be shown.
fn host_secret() -> tempfile::TempDir {
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("secret"), "password=hunter2\n").unwrap();
    host
}

#[test]
fn a_default_lockfile_linking_out_of_the_source_is_refused_unread() {
    let host = host_secret();
    let p = Project::new();
    p.write(SPEC_FILE, MINIMAL);
    std::os::unix::fs::symlink(host.path().join("secret"), p.path().join("uv.lock")).unwrap();
    let e = error_chain(&p.load().unwrap_err());
    assert!(
        e.contains("key \"lockfile\"") && e.contains("uv.lock"),
        "{e}"
    );
    assert!(e.contains("outside"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn a_lockfile_named_in_the_settings_may_lie_outside_the_source() {
    let p = Project::new();
    p.write("locks/uv.lock", "version = 1\n");
    p.write(
        "app/imgbuild.toml",
        &format!("{MINIMAL}lockfile = \"../locks/uv.lock\"\n"),
    );
    let s = load(None, &p.path().join("app")).unwrap();
    assert_eq!(s.lockfile, Some(p.path().join("locks/uv.lock")));
}

#[test]
fn fifos_and_devices_as_project_files_are_refused_at_once() {
    use crate::project_file::tests::{mkfifo, within_seconds};
    for (name, make_fifo) in [
        (SPEC_FILE, true),
        (PYPROJECT_FILE, true),
        (SPEC_FILE, false),
        (PYPROJECT_FILE, false),
    ] {
        let p = Project::new();
        let path = p.path().join(name);
        if make_fifo {
            mkfifo(&path);
        } else {
            std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        }
        let dir = p.path();
        let e = within_seconds(move || error_chain(&load(None, &dir).unwrap_err()));
        let kind = if make_fifo { "a FIFO" } else { "a device" };
        assert!(e.contains(name) && e.contains(kind), "{e}");
    }
    for (make_fifo, kind) in [(true, "a FIFO"), (false, "a device")] {
        let p = Project::new();
        p.write(SPEC_FILE, MINIMAL);
        if make_fifo {
            mkfifo(&p.path().join("uv.lock"));
        } else {
            std::os::unix::fs::symlink("/dev/zero", p.path().join("uv.lock")).unwrap();
        }
        let dir = p.path();
        let e = within_seconds(move || error_chain(&load(None, &dir).unwrap_err()));
        assert!(e.contains("key \"lockfile\"") && e.contains(kind), "{e}");
    }
}
