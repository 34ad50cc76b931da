use super::*;
use std::collections::HashMap;

/// A home, a project and a system root in one temp dir, with an injected environment.
struct World {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl World {
    fn new() -> Self {
        let w = World {
            dir: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
        };
        std::fs::create_dir_all(w.path("project/sub")).unwrap();
        w
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn set(&mut self, k: &str, v: &str) {
        self.env.insert(k.into(), v.into());
    }
    fn resolve_from(&self, project: &str) -> Result<IndexSettings, IndexConfigError> {
        let getenv = |k: &str| self.env.get(k).cloned();
        let project_dir = self.path(project);
        resolve(&Inputs {
            getenv: &getenv,
            project_dir: &project_dir,
            home: Some(self.path("home")),
            system_root: self.path("root"),
        })
    }
    fn resolve(&self) -> IndexSettings {
        self.resolve_from("project/sub").unwrap()
    }
    fn default(&self) -> Option<(String, String)> {
        self.resolve().default.map(|i| {
            let origin = i.origin.replace(&self.dir.path().display().to_string(), "");
            (i.url, origin)
        })
    }
}

fn some(url: &str, origin: &str) -> Option<(String, String)> {
    Some((url.into(), origin.into()))
}

/// Every source at once; each removed in turn shows the next one wins.
#[test]
fn sources_rank_environment_then_uv_project_user_system_then_pip() {
    let mut w = every_index_source();
    for (remove, want) in ranked_sources() {
        assert_eq!(w.default(), want, "before removing {remove}");
        remove_source(&mut w, remove);
    }
}

/// A world with an index set in every place uv and pip read one.
fn every_index_source() -> World {
    let mut w = World::new();
    w.write(
        "root/etc/pip.conf",
        "[global]\nindex-url = https://pip-global.example/simple\n",
    );
    w.write(
        "home/.config/pip/pip.conf",
        "[global]\nindex-url = https://pip-user.example/simple\n",
    );
    w.write(
        "venv/pip.conf",
        "[global]\nindex-url = https://pip-site.example/simple\n",
    );
    w.set("VIRTUAL_ENV", w.path("venv").to_str().unwrap());
    w.write(
        "pip-env.conf",
        "[global]\nindex-url = https://pip-global-section.example/simple\n[install]\nindex-url = https://pip-env.example/simple\n",
    );
    w.set("PIP_CONFIG_FILE", w.path("pip-env.conf").to_str().unwrap());
    w.write(
        "root/etc/uv/uv.toml",
        "index-url = \"https://uv-system.example/simple\"\n",
    );
    w.write(
        "home/.config/uv/uv.toml",
        "index-url = \"https://uv-user.example/simple\"\n",
    );
    w.write(
        "project/pyproject.toml",
        "[project]\nname = \"x\"\n[tool.uv]\nindex-url = \"https://uv-index-url.example/simple\"\n[[tool.uv.index]]\nname = \"corp\"\nurl = \"https://uv-project.example/simple\"\ndefault = true\n",
    );
    w.set("PIP_INDEX_URL", "https://pip-env-var.example/simple");
    w.set("UV_INDEX_URL", "https://uv-index-url-var.example/simple");
    w.set("UV_DEFAULT_INDEX", "https://uv-default-var.example/simple");
    w
}

/// Each source, best first, with the default index it gives while it is there.
fn ranked_sources() -> Vec<(&'static str, Option<(String, String)>)> {
    vec![
        (
            "UV_DEFAULT_INDEX",
            some("https://uv-default-var.example/simple", "UV_DEFAULT_INDEX"),
        ),
        (
            "UV_INDEX_URL",
            some("https://uv-index-url-var.example/simple", "UV_INDEX_URL"),
        ),
        (
            "PIP_INDEX_URL",
            some("https://pip-env-var.example/simple", "PIP_INDEX_URL"),
        ),
        (
            "[[tool.uv.index]]",
            some(
                "https://uv-project.example/simple",
                "/project/pyproject.toml [tool.uv] index `corp`",
            ),
        ),
        (
            "[tool.uv] index-url",
            some(
                "https://uv-index-url.example/simple",
                "/project/pyproject.toml [tool.uv] index-url",
            ),
        ),
        (
            "project",
            some(
                "https://uv-user.example/simple",
                "/home/.config/uv/uv.toml index-url",
            ),
        ),
        (
            "user uv.toml",
            some(
                "https://uv-user.example/simple",
                "/home/.config/uv/uv.toml index-url",
            ),
        ),
        (
            "system uv.toml",
            some(
                "https://uv-system.example/simple",
                "/root/etc/uv/uv.toml index-url",
            ),
        ),
        (
            "[install]",
            some(
                "https://pip-env.example/simple",
                "/pip-env.conf [install] index-url",
            ),
        ),
        (
            "PIP_CONFIG_FILE",
            some(
                "https://pip-global-section.example/simple",
                "/pip-env.conf [global] index-url",
            ),
        ),
        (
            "site",
            some(
                "https://pip-site.example/simple",
                "/venv/pip.conf [global] index-url",
            ),
        ),
        (
            "user pip.conf",
            some(
                "https://pip-user.example/simple",
                "/home/.config/pip/pip.conf [global] index-url",
            ),
        ),
        (
            "global pip.conf",
            some(
                "https://pip-global.example/simple",
                "/root/etc/pip.conf [global] index-url",
            ),
        ),
        ("nothing", None),
    ]
}

/// Takes the source named in [`ranked_sources`] out of `w`.
fn remove_source(w: &mut World, remove: &str) {
    match remove {
        "UV_DEFAULT_INDEX" | "UV_INDEX_URL" | "PIP_INDEX_URL" => {
            w.env.remove(remove);
        }
        "[[tool.uv.index]]" => w.write(
            "project/pyproject.toml",
            "[tool.uv]\nindex-url = \"https://uv-index-url.example/simple\"\n",
        ),
        "[tool.uv] index-url" => w.write("project/pyproject.toml", "[tool.uv]\n"),
        "project" => std::fs::remove_file(w.path("project/pyproject.toml")).unwrap(),
        "user uv.toml" => std::fs::remove_file(w.path("home/.config/uv/uv.toml")).unwrap(),
        "system uv.toml" => std::fs::remove_file(w.path("root/etc/uv/uv.toml")).unwrap(),
        "[install]" => w.write(
            "pip-env.conf",
            "[global]\nindex-url = https://pip-global-section.example/simple\n",
        ),
        "PIP_CONFIG_FILE" => {
            std::fs::remove_file(w.path("pip-env.conf")).unwrap();
        }
        "site" => std::fs::remove_file(w.path("venv/pip.conf")).unwrap(),
        "user pip.conf" => std::fs::remove_file(w.path("home/.config/pip/pip.conf")).unwrap(),
        "global pip.conf" => std::fs::remove_file(w.path("root/etc/pip.conf")).unwrap(),
        "nothing" => {}
        other => unreachable!("{other}"),
    }
}

#[test]
fn a_project_uv_toml_beats_the_pyproject_beside_it_and_the_search_stops_there() {
    let mut w = World::new();
    w.write(
        "project/uv.toml",
        "index-url = \"https://uv-toml.example/simple\"\n",
    );
    w.write(
        "project/pyproject.toml",
        "[tool.uv]\nindex-url = \"https://pyproject.example/simple\"\n",
    );
    w.write(
        "pyproject.toml",
        "[tool.uv]\nindex-url = \"https://above.example/simple\"\n",
    );
    assert_eq!(w.default().unwrap().0, "https://uv-toml.example/simple");
    // A pyproject without [tool.uv] does not stop the search.
    std::fs::remove_file(w.path("project/uv.toml")).unwrap();
    w.write("project/pyproject.toml", "[project]\nname = \"x\"\n");
    assert_eq!(w.default().unwrap().0, "https://above.example/simple");
    // UV_CONFIG_FILE replaces every discovered file; UV_NO_CONFIG drops them all.
    w.write(
        "custom.toml",
        "index-url = \"https://custom.example/simple\"\n",
    );
    w.set("UV_CONFIG_FILE", w.path("custom.toml").to_str().unwrap());
    assert_eq!(w.default().unwrap().0, "https://custom.example/simple");
    w.set("UV_NO_CONFIG", "1");
    assert_eq!(w.default(), None);
}

#[test]
fn xdg_directories_move_the_user_and_system_files() {
    let mut w = World::new();
    w.write(
        "xdg-home/uv/uv.toml",
        "index-url = \"https://xdg-user.example/simple\"\n",
    );
    w.write(
        "root/xdg-sys/pip/pip.conf",
        "[global]\nindex-url = https://xdg-sys.example/simple\n",
    );
    assert_eq!(w.default(), None);
    w.set("XDG_CONFIG_DIRS", "/xdg-sys");
    assert_eq!(w.default().unwrap().0, "https://xdg-sys.example/simple");
    w.set("XDG_CONFIG_HOME", w.path("xdg-home").to_str().unwrap());
    assert_eq!(w.default().unwrap().0, "https://xdg-user.example/simple");
}

#[test]
fn pip_skips_user_files_when_pip_config_file_exists_and_all_files_for_dev_null() {
    let mut w = World::new();
    w.write(
        "home/.pip/pip.conf",
        "[global]\nindex-url = https://legacy-user.example/simple\n",
    );
    w.write(
        "root/etc/pip.conf",
        "[global]\nindex-url = https://global.example/simple\n",
    );
    assert_eq!(w.default().unwrap().0, "https://legacy-user.example/simple");
    w.write("empty.conf", "[global]\ntimeout = 60\n");
    w.set("PIP_CONFIG_FILE", w.path("empty.conf").to_str().unwrap());
    assert_eq!(w.default().unwrap().0, "https://global.example/simple");
    w.set("PIP_CONFIG_FILE", "/dev/null");
    assert_eq!(w.default(), None);
}

#[test]
fn extra_indexes_come_from_every_source_after_the_default() {
    let mut w = World::new();
    w.set(
        "UV_INDEX",
        "internal=https://internal.example/simple https://anon.example/simple",
    );
    w.set(
        "PIP_EXTRA_INDEX_URL",
        "https://pip-extra-env.example/simple",
    );
    w.write(
        "project/pyproject.toml",
        "[tool.uv]\nextra-index-url = [\"https://uv-extra.example/simple\"]\n[[tool.uv.index]]\nname = \"torch\"\nurl = \"https://torch.example/whl\"\nexplicit = true\n[[tool.uv.index]]\nname = \"mirror\"\nurl = \"https://mirror.example/simple\"\n[[tool.uv.index]]\nname = \"main\"\nurl = \"https://main.example/simple\"\ndefault = true\n",
    );
    w.write(
        "root/etc/pip.conf",
        "[global]\nextra-index-url =\n    https://pip-a.example/simple\n    https://pip-b.example/simple\n",
    );
    let s = w.resolve();
    assert_eq!(
        s.urls(),
        [
            "https://main.example/simple",
            "https://internal.example/simple",
            "https://anon.example/simple",
            "https://pip-extra-env.example/simple",
            "https://mirror.example/simple",
            "https://uv-extra.example/simple",
            "https://pip-a.example/simple",
            "https://pip-b.example/simple",
        ]
    );
}

#[test]
fn credentials_leave_the_url_and_come_from_url_env_or_netrc() {
    let mut w = World::new();
    w.set(
        "UV_DEFAULT_INDEX",
        "https://al%40ice:s3cr%2Ft@private.example/simple",
    );
    w.set("UV_INDEX", "corp=https://corp.example/simple");
    w.set("UV_INDEX_CORP_USERNAME", "bob");
    w.set("UV_INDEX_CORP_PASSWORD", "hunter2");
    w.write(
        "home/.netrc",
        "# tokens\nmachine files.example login carol password pw3\ndefault login dave password pw4\n",
    );
    let s = w.resolve();
    assert_eq!(
        s.default.as_ref().unwrap().url,
        "https://private.example/simple"
    );
    let c = &s.credentials;
    assert_eq!(
        c.for_url("https://private.example/packages/a.whl"),
        Some(("al@ice".into(), Some("s3cr/t".into())))
    );
    assert_eq!(
        c.for_url("https://corp.example/simple/x/"),
        Some(("bob".into(), Some("hunter2".into())))
    );
    assert_eq!(
        c.for_url("https://files.example/a.whl"),
        Some(("carol".into(), Some("pw3".into())))
    );
    // netrc's default entry is for the configured indexes only.
    assert_eq!(c.for_url("https://elsewhere.example/a.whl"), None);
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("s3cr") && !debug.contains("hunter2") && !debug.contains("pw3"),
        "{debug}"
    );

    w.set("NETRC", w.path("nope").to_str().unwrap());
    assert_eq!(
        w.resolve()
            .credentials
            .for_url("https://files.example/a.whl"),
        None
    );
}

#[test]
fn an_explicit_default_beats_the_settings_and_keeps_its_credentials_apart() {
    let mut w = World::new();
    w.set("PIP_INDEX_URL", "https://env.example/simple");
    let mut s = w.resolve();
    let bare = s
        .set_default("https://me:tok@explicit.example/simple", "index-url")
        .unwrap();
    assert_eq!(bare, "https://explicit.example/simple");
    assert_eq!(s.urls(), ["https://explicit.example/simple"]);
    assert_eq!(
        s.credentials
            .for_url("https://explicit.example/files/a.whl"),
        Some(("me".into(), Some("tok".into())))
    );
    assert!(s.set_default("ftp://x.example", "index-url").is_err());
}

#[test]
fn with_nothing_configured_the_settings_read_are_listed() {
    let w = World::new();
    let s = w.resolve();
    assert_eq!(s.default, None);
    let read = s.describe_read();
    for part in [
        "UV_DEFAULT_INDEX, UV_INDEX_URL, PIP_INDEX_URL",
        "no uv.toml or pyproject.toml [tool.uv]",
        "home/.config/uv/uv.toml",
        "root/etc/uv/uv.toml",
        "home/.config/pip/pip.conf",
        "root/etc/pip.conf",
    ] {
        assert!(read.contains(part), "{part} missing from {read}");
    }
}

#[test]
fn bad_urls_and_bad_toml_name_their_setting() {
    let mut w = World::new();
    w.set("PIP_INDEX_URL", "pypi.example/simple");
    let err = w.resolve_from("project").unwrap_err().to_string();
    assert!(
        err.starts_with("PIP_INDEX_URL: `pypi.example/simple`"),
        "{err}"
    );
    w.env.clear();
    w.write("project/uv.toml", "index-url = [");
    let err = w.resolve_from("project").unwrap_err().to_string();
    assert!(err.contains("project/uv.toml is not valid TOML"), "{err}");
    w.write("project/uv.toml", "index-url = \"https://u:pw@ok.example/simple\"\nextra-index-url = [\"ftp://u:pw@bad.example\"]\n");
    let err = w.resolve_from("project").unwrap_err().to_string();
    assert!(!err.contains("pw@"), "{err}");
}

#[test]
fn ini_values_continue_on_indented_lines_and_keys_accept_underscores() {
    let ini = parse_ini(
        "; c\n[global]\nIndex_Url : https://a.example/simple\nextra-index-url = x\n  y\n# z\n",
    );
    assert_eq!(
        ini[&("global".into(), "index_url".into())],
        "https://a.example/simple"
    );
    assert_eq!(ini[&("global".into(), "extra-index-url".into())], "x\ny");
    let mut w = World::new();
    w.write(
        "pip.conf",
        "[global]\nindex_url = https://underscore.example/simple\n",
    );
    w.set("PIP_CONFIG_FILE", w.path("pip.conf").to_str().unwrap());
    assert_eq!(w.default().unwrap().0, "https://underscore.example/simple");
}

/// uv.toml and pyproject.toml found beside the lock must lie where they were
/// found and be regular files; no error quotes a settings file's text.
#[test]
fn project_settings_files_are_read_only_as_files_of_their_directory() {
    use crate::project_file::tests::{mkfifo, within_seconds};
    let w = World::new();
    w.write("host/secret", "password=hunter2\n");
    std::os::unix::fs::symlink(w.path("host/secret"), w.path("project/uv.toml")).unwrap();
    let err = w.resolve_from("project").unwrap_err().to_string();
    assert!(
        err.contains("project/uv.toml resolves to") && err.contains("outside"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    std::fs::remove_file(w.path("project/uv.toml")).unwrap();
    mkfifo(&w.path("project/sub/pyproject.toml"));
    let world = std::sync::Arc::new(w);
    let w2 = world.clone();
    let err = within_seconds(move || w2.resolve_from("project/sub").unwrap_err().to_string());
    assert!(err.contains("pyproject.toml is a FIFO"), "{err}");

    // Named by the user, it may lie anywhere, and its syntax errors say where, not what.
    let mut w = World::new();
    w.write("host/uv.toml", "password = hunter2\n");
    w.set(
        "UV_CONFIG_FILE",
        &w.path("host/uv.toml").display().to_string(),
    );
    let err = w.resolve_from("project").unwrap_err().to_string();
    assert!(err.contains("host/uv.toml is not valid TOML"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
