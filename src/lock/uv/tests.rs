use super::*;
use crate::lock::test_support::{assert_mentions, env, error_of, hash, pins, uv_project};

/// `text` read as uv.lock for x86_64 with the default options.
fn parse_default(text: &str) -> LockResult {
    parse(text, "uv.lock", &LockOptions::default(), &env("x86_64"))
}

fn wheel(name: &str, version: &str, tag: &str, h: char) -> String {
    format!(
        "{{ url = \"https://files.example/{name}-{version}-{tag}.whl\", hash = \"sha256:{}\", size = 100 }}",
        hash(h)
    )
}

fn pkg(name: &str, version: &str, deps: &str, extra_tables: &str) -> String {
    format!(
        "[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = {{ registry = \"https://index.example/simple\" }}\ndependencies = [{deps}]\nsdist = {{ url = \"https://files.example/{name}-{version}.tar.gz\", hash = \"sha256:{}\", size = 10 }}\nwheels = [{}]\n{extra_tables}\n",
        hash('0'),
        wheel(name, version, "py3-none-any", 'a')
    )
}

fn lock() -> String {
    let mut s = String::from("version = 1\nrevision = 3\nrequires-python = \">=3.10\"\nresolution-markers = [\"python_full_version >= '3.12'\", \"python_full_version < '3.12'\"]\n\n");
    s += r#"[[package]]
name = "app"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
{ name = "fastapi" },
{ name = "uvicorn", extra = ["standard"] },
{ name = "numpy", version = "2.0.0", source = { registry = "https://index.example/simple" }, marker = "python_full_version < '3.12'" },
{ name = "numpy", version = "2.3.0", source = { registry = "https://index.example/simple" }, marker = "python_full_version >= '3.12'" },
{ name = "pywin", marker = "sys_platform == 'win32'" },
{ name = "lib" },
]

[package.optional-dependencies]
yaml = [{ name = "pyyaml" }]

[package.dev-dependencies]
dev = [{ name = "pytest" }]
lint = [{ name = "ruff" }]

"#;
    s += "[[package]]\nname = \"lib\"\nversion = \"0.2.0\"\nsource = { editable = \"libs/lib\" }\ndependencies = [{ name = \"idna\" }]\n\n";
    s += &pkg("fastapi", "0.165.0", "{ name = \"starlette\" }", "");
    s += &pkg("starlette", "1.10.0", "", "");
    s += &pkg(
        "uvicorn",
        "0.54.0",
        "{ name = \"h11\" }",
        "[package.optional-dependencies]\nstandard = [{ name = \"uvloop\", marker = \"sys_platform != 'win32'\" }, { name = \"colorama\", marker = \"sys_platform == 'win32'\" }]\n",
    );
    s += &pkg("h11", "0.16.0", "", "");
    s += &pkg("uvloop", "0.23.0", "", "");
    s += &pkg("colorama", "0.4.6", "", "");
    s += &pkg("numpy", "2.0.0", "", "");
    s += &pkg("numpy", "2.3.0", "", "");
    s += &pkg("pywin", "1.0", "", "");
    s += &pkg("idna", "3.20", "", "");
    s += &pkg("pyyaml", "6.0.4", "", "");
    s += &pkg("pytest", "9.2.0", "{ name = \"Iniconfig\" }", "");
    s += &pkg("iniconfig", "2.3.1", "", "");
    s += &pkg("ruff", "0.17.3", "", "");
    s
}

fn names(opts: &LockOptions) -> Vec<String> {
    pins(parse(&lock(), "uv.lock", opts, &env("x86_64")))
}

#[test]
fn walks_dependencies_edge_extras_and_markers_for_the_target() {
    assert_eq!(
        names(&LockOptions::default()),
        [
            "fastapi==0.165.0",
            "h11==0.16.0",
            "idna==3.20",
            "numpy==2.0.0",
            "starlette==1.10.0",
            "uvicorn==0.54.0",
            "uvloop==0.23.0",
        ]
    );
}

#[test]
fn project_extras_and_groups_are_opt_in() {
    let opts = LockOptions {
        extras: vec!["yaml".into()],
        groups: vec!["lint".into()],
        ..Default::default()
    };
    let got = names(&opts);
    assert!(got.contains(&"pyyaml==6.0.4".to_string()));
    assert!(got.contains(&"ruff==0.17.3".to_string()));
    assert!(!got.iter().any(|n| n.starts_with("pytest")));

    let dev = names(&LockOptions {
        include_dev: true,
        ..Default::default()
    });
    assert!(dev.contains(&"pytest==9.2.0".to_string()));
    assert!(dev.contains(&"iniconfig==2.3.1".to_string()));
}

#[test]
fn unknown_extras_and_groups_are_errors() {
    let opts = LockOptions {
        extras: vec!["gpu".into()],
        ..Default::default()
    };
    let err = error_of(parse(&lock(), "uv.lock", &opts, &env("x86_64")));
    assert_mentions(&err, &["no extra `gpu`", "yaml"]);
    let opts = LockOptions {
        groups: vec!["docs".into()],
        ..Default::default()
    };
    let err = error_of(parse(&lock(), "uv.lock", &opts, &env("x86_64")));
    assert_mentions(&err, &["group `docs`", "lint"]);
}

#[test]
fn files_carry_url_hash_and_size_and_local_packages_are_left_out() {
    let got = parse_default(&lock()).unwrap();
    assert!(!got.iter().any(|p| p.name == "app" || p.name == "lib"));
    let h11 = got.iter().find(|p| p.name == "h11").unwrap();
    assert!(h11.has_sdist);
    assert_eq!(
        h11.files,
        vec![LockedFile {
            filename: "h11-0.16.0-py3-none-any.whl".into(),
            url: Some("https://files.example/h11-0.16.0-py3-none-any.whl".into()),
            sha256: hash('a'),
            size: Some(100),
        }]
    );
}

#[test]
fn the_sdist_is_kept_with_its_hash_and_the_registry_is_the_packages_index() {
    let got = parse_default(&lock()).unwrap();
    let h11 = got.iter().find(|p| p.name == "h11").unwrap();
    assert_eq!(
        h11.sdist,
        Some(LockedFile {
            filename: "h11-0.16.0.tar.gz".into(),
            url: Some("https://files.example/h11-0.16.0.tar.gz".into()),
            sha256: hash('0'),
            size: Some(10),
        })
    );
    assert_eq!(h11.index.as_deref(), Some("https://index.example/simple"));
}

#[test]
fn a_path_source_sdist_is_named_by_its_source() {
    let text = "version = 1\nrevision = 3\nrequires-python = \">=3.10\"\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\ndependencies = [{ name = \"local-pkg\" }]\n\n[[package]]\nname = \"local-pkg\"\nversion = \"1.0\"\nsource = { path = \"dists/local_pkg-1.0.tar.gz\" }\nsdist = { hash = \"sha256:HASH\" }\n"
        .replace("HASH", &hash('5'));
    let got = parse_default(&text).unwrap();
    let sdist = got[0].sdist.as_ref().expect("the path source's sdist");
    assert_eq!(sdist.url.as_deref(), Some("dists/local_pkg-1.0.tar.gz"));
    assert_eq!(sdist.filename, "local_pkg-1.0.tar.gz");
    assert_eq!(sdist.sha256, hash('5'));
    assert!(got[0].files.is_empty());
}

#[test]
fn the_cutoff_is_exclude_newer_else_the_newest_upload_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uv.lock");
    let files = "[[package]]\nname = \"a\"\nsdist = { url = \"u\", upload-time = \"2024-01-02T00:00:00Z\" }\nwheels = [{ url = \"w\", upload-time = \"2025-03-04T05:06:07.5Z\" }]\n";
    std::fs::write(&path, files).unwrap();
    assert_eq!(
        crate::lock::build_cutoff(&path).as_deref(),
        Some("2025-03-04T05:06:07.5Z")
    );
    std::fs::write(
        &path,
        format!("[options]\nexclude-newer = \"2024-06-01T00:00:00Z\"\n\n{files}"),
    )
    .unwrap();
    assert_eq!(
        crate::lock::build_cutoff(&path).as_deref(),
        Some("2024-06-01T00:00:00Z")
    );
    std::fs::write(dir.path().join("poetry.lock"), files).unwrap();
    assert_eq!(
        crate::lock::build_cutoff(&dir.path().join("poetry.lock")),
        None
    );
}

#[test]
fn an_unknown_lock_version_is_refused_by_number() {
    let text = lock().replacen("version = 1", "version = 2", 1);
    let err = error_of(parse(
        &text,
        "proj/uv.lock",
        &LockOptions::default(),
        &env("x86_64"),
    ));
    assert_mentions(
        &err,
        &["proj/uv.lock", "uv.lock version 2 is not supported"],
    );
}

/// Each case edits the lock, and the error must name what is wrong.
#[test]
fn a_lock_that_cannot_serve_the_target_names_what_is_wrong() {
    let cases: [(&str, &str, &[&str]); 2] = [
        // requires-python must admit the target's Python.
        (
            "requires-python = \">=3.10\"",
            "requires-python = \">=3.12\"",
            &[">=3.12", "3.11.2"],
        ),
        // A dangling dependency edge names the package and the missing name.
        (
            "{ name = \"starlette\" }",
            "{ name = \"starlette\" }, { name = \"ghost\" }",
            &["fastapi 0.165.0", "`ghost`"],
        ),
    ];
    for (from, to, named) in cases {
        let err = error_of(parse_default(&lock().replace(from, to)));
        assert_mentions(&err, named);
    }
}

#[test]
fn workspace_members_are_all_roots() {
    let text = format!(
        "version = 1\n[manifest]\nmembers = [\"api\", \"worker\"]\n\n[[package]]\nname = \"api\"\nversion = \"1.0\"\nsource = {{ editable = \"api\" }}\ndependencies = [{{ name = \"h11\" }}]\n\n[[package]]\nname = \"worker\"\nversion = \"1.0\"\nsource = {{ virtual = \"worker\" }}\ndependencies = [{{ name = \"idna\" }}]\n\n{}{}",
        pkg("h11", "0.16.0", "", ""),
        pkg("idna", "3.20", "", "")
    );
    let got = parse_default(&text).unwrap();
    let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["h11", "idna"]);
}

#[test]
fn conflicting_extras_pick_their_fork_through_uvs_encoded_markers() {
    let text = format!(
        r#"version = 1
[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}
[package.optional-dependencies]
cpu = [{{ name = "torch", version = "2.0.0", source = {{ registry = "https://cpu.example/simple" }} }}]
gpu = [{{ name = "torch", version = "2.0.1", source = {{ registry = "https://gpu.example/simple" }} }}]

[[package]]
name = "torch"
version = "2.0.0"
source = {{ registry = "https://cpu.example/simple" }}
dependencies = [{{ name = "idna", marker = "extra == 'extra-3-app-cpu'" }}, {{ name = "h11", marker = "extra == 'extra-3-app-gpu'" }}]
wheels = [{}]

[[package]]
name = "torch"
version = "2.0.1"
source = {{ registry = "https://gpu.example/simple" }}
wheels = [{}]

{}{}"#,
        wheel("torch", "2.0.0", "py3-none-any", 'c'),
        wheel("torch", "2.0.1", "py3-none-any", 'd'),
        pkg("idna", "3.20", "", ""),
        pkg("h11", "0.16.0", "", "")
    );
    let opts = LockOptions {
        extras: vec!["cpu".into()],
        ..Default::default()
    };
    let got = parse(&text, "uv.lock", &opts, &env("x86_64")).unwrap();
    let names: Vec<String> = got
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
    assert_eq!(names, ["torch==2.0.0", "idna==3.20"]);
}

#[test]
fn local_packages_are_listed_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uv.lock");
    std::fs::write(&path, lock()).unwrap();
    let local = local_packages(&path, &LockOptions::default(), &env("x86_64")).unwrap();
    let got: Vec<(&str, &str, bool)> = local
        .iter()
        .map(|l| (l.name.as_str(), l.path.to_str().unwrap(), l.editable))
        .collect();
    assert_eq!(got, [("app", ".", false), ("lib", "libs/lib", true)]);
}

#[test]
fn a_path_wheel_installs_from_its_path_and_a_git_source_says_what_to_do() {
    let text = format!(
        "version = 1\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = {{ virtual = \".\" }}\ndependencies = [{{ name = \"local-whl\" }}]\n\n[[package]]\nname = \"local-whl\"\nversion = \"1.0\"\nsource = {{ path = \"wheels/local_whl-1.0-py3-none-any.whl\" }}\nwheels = [{{ filename = \"local_whl-1.0-py3-none-any.whl\", hash = \"sha256:{}\" }}]\n",
        hash('a')
    );
    let got = parse_default(&text).unwrap();
    assert_eq!(
        got[0].files[0].url.as_deref(),
        Some("wheels/local_whl-1.0-py3-none-any.whl")
    );
    let git = text.replace(
        "source = { path = \"wheels/local_whl-1.0-py3-none-any.whl\" }",
        "source = { git = \"https://example.invalid/x.git?rev=main#abc\" }",
    );
    let err = error_of(parse_default(&git));
    assert_mentions(&err, &["local-whl 1.0", "git", "path source"]);
}

/// Checks the parser against a lock written by the real uv (needs network).
#[test]
#[ignore]
fn parses_a_real_uv_lock() {
    let dir = uv_project(
        "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"fastapi\", \"uvicorn[standard]\"]\n[dependency-groups]\ndev = [\"pytest\"]\n[tool.uv]\npackage = false\n",
        &[&["lock", "--exclude-newer", "2026-11-01"]],
    );
    let lock = dir.path().join("uv.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    let got = parse_default(&text).unwrap();
    let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
    for n in [
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic-core",
        "starlette",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(!names.contains(&"demo") && !names.contains(&"pytest") && !names.contains(&"colorama"));
    assert!(got.iter().all(|p| !p.files.is_empty()));
}

/// A virtual workspace root (no project of its own) with `members`, each
/// `(name, dir, dependency)`, and the dependencies locked.
fn workspace(members: &[(&str, &str, &str)]) -> String {
    let names: Vec<String> = members.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
    let mut s = format!(
        "version = 1\nrevision = 3\nrequires-python = \">=3.10\"\n\n[manifest]\nmembers = [{}]\n\n",
        names.join(", ")
    );
    for (name, dir, dep) in members {
        s += &format!("[[package]]\nname = \"{name}\"\nversion = \"0.1.0\"\nsource = {{ editable = \"{dir}\" }}\ndependencies = [{dep}]\n\n");
    }
    for name in ["fastapi", "idna", "numpy"] {
        s += &pkg(name, "1.0", "", "");
    }
    s
}

fn workspace_names(text: &str, package: Option<&str>, dir: &str) -> Result<Vec<String>, LockError> {
    let opts = LockOptions {
        project: ProjectRoot {
            package: package.map(str::to_owned),
            dir: dir.into(),
        },
        ..Default::default()
    };
    parse(text, "uv.lock", &opts, &env("x86_64")).map(|p| pins(Ok(p)))
}

#[test]
fn a_virtual_root_with_one_member_installs_that_member() {
    let one = workspace(&[("backend", "backend", "{ name = \"fastapi\" }")]);
    assert_eq!(workspace_names(&one, None, "").unwrap(), ["fastapi==1.0"]);
    assert_eq!(
        workspace_names(&one, None, "backend").unwrap(),
        ["fastapi==1.0"]
    );
}

#[test]
fn package_or_the_members_own_directory_picks_one_member_of_many() {
    let many = workspace(&[
        (
            "api",
            "services/api",
            "{ name = \"fastapi\" }, { name = \"common\" }",
        ),
        ("worker", "services/worker", "{ name = \"numpy\" }"),
        ("common", "libs/common", "{ name = \"idna\" }"),
    ]);
    // From the root, without `package`: every member, as `uv sync --all-packages`.
    assert_eq!(
        workspace_names(&many, None, "").unwrap(),
        ["fastapi==1.0", "idna==1.0", "numpy==1.0"]
    );
    // `package = "api"`: its closure only, the member it depends on included.
    assert_eq!(
        workspace_names(&many, Some("api"), "").unwrap(),
        ["fastapi==1.0", "idna==1.0"]
    );
    assert_eq!(
        workspace_names(&many, Some("Worker"), "services/api").unwrap(),
        ["numpy==1.0"]
    );
    // Built from a member's directory (lockfile = "../../uv.lock").
    assert_eq!(
        workspace_names(&many, None, "services/worker").unwrap(),
        ["numpy==1.0"]
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uv.lock");
    std::fs::write(&path, &many).unwrap();
    let opts = LockOptions {
        project: ProjectRoot {
            package: Some("api".into()),
            dir: String::new(),
        },
        ..Default::default()
    };
    let local = local_packages(&path, &opts, &env("x86_64")).unwrap();
    let got: Vec<&str> = local.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(got, ["api", "common"]);
    let err = error_of(workspace_names(&many, Some("frontend"), ""));
    assert_mentions(
        &err,
        &[
            "`package = \"frontend\"` is not a project of this workspace",
            "api, common, worker",
        ],
    );
}
