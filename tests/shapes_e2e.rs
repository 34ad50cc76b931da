//! Real project shapes (issue 23), each built from its own tree with only an
//! imgbuild.toml added, served under podman, and answering a request that
//! writes state:
//!
//! - fixtures/state-api writes a log next to its code, a SQLite database under HOME, a
//!   cache, a temp file and a counter in /var/lib: under `podman run`, and under
//!   `podman kube play` of `imgbuild manifests` with the read-only root.
//! - fixtures/hypercorn-api is served by hypercorn, started by `cmd` with no `app`; the
//!   default (uvicorn) command on the same lock fails before any wheel is fetched.
//! - uv workspaces with a virtual root: fixtures/ws-one (one member, the full-stack
//!   template's shape) from the root and from the member's directory, and fixtures/ws-many
//!   (two services and a library) with `package`: each with the settings `imgbuild init`
//!   writes, only the member's dependencies and files in the image.
//! - fixtures/legacy-deps: a dependency imports pkg_resources without declaring
//!   setuptools; the build warns, naming it, and the image indeed fails at import.
//! - fixtures/factory-api makes its app in `create_app()`: `imgbuild init` writes
//!   `app = "factory_api.app:create_app()"`, and the image serves it with `--factory`.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::podman::{self, free_port, http, wait_http};
use support::Run;

/// The wheel and layer cache shared by the tests of this file.
fn cache_dir() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("shapes-e2e-cache")
        .display()
        .to_string()
}

/// imgbuild `args` in `cwd`, with no credentials from the machine.
fn imgbuild(cwd: &Path, args: &[&str]) -> Run {
    Run::from(support::without_credentials(cwd, args).output().unwrap())
}

/// `oci:BASE:latest` of the Debian bookworm test base.
fn base() -> String {
    format!(
        "oci:{}:latest",
        support::base::base_image("amd64").display()
    )
}

/// A locked copy of `fixture` with `settings` as its imgbuild.toml (after `base`).
fn project(fixture: &str, settings: &str) -> PathBuf {
    let dir = support::uv::uv_lock(&support::fixture(fixture));
    let spec = format!("base = \"{}\"\n{settings}", base());
    std::fs::write(dir.join("imgbuild.toml"), spec).unwrap();
    dir
}

/// A locked copy of `fixture` with the imgbuild.toml `imgbuild init` writes
/// for it (on the test base); returns the copy and init's stderr.
fn project_from_init(fixture: &str) -> (PathBuf, String) {
    let dir = support::uv::uv_lock(&support::fixture(fixture));
    let stderr = init_in(&dir);
    (dir, stderr)
}

/// `imgbuild init --base BASE` in `dir`; returns its stderr (the notes).
fn init_in(dir: &Path) -> String {
    imgbuild(dir, &["init", "--base", &base()])
        .must_succeed("init")
        .stderr
}

/// `sh -c SCRIPT` in `image` as its user, with its output.
fn sh(image: &str, script: &str) -> podman::Finished {
    podman::run_to_completion(image, &["sh", "-c", script])
}

/// Builds `dir` (its imgbuild.toml) into a docker-archive and stores it in
/// podman under a tag of its own; returns that name.
fn build_into_podman(dir: &Path, name: &str) -> String {
    let out = support::target_tempdir("shapes-out-");
    let archive = out.path().join("image.tar");
    let output = format!("docker-archive:{}", archive.display());
    imgbuild(
        dir,
        &["build", "--output", &output, "--cache-dir", &cache_dir()],
    )
    .must_succeed("build");
    let stored = podman::import(&output, None);
    let tag = format!("localhost/imgbuild-test/{name}:{}", unique());
    podman::podman_ok(&["tag", &stored, &tag]);
    tag
}

fn unique() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{}", std::process::id(), n % 100_000)
}

fn post_json(url: &str) -> Value {
    let r = http("POST", url, Some(("application/json", b""))).unwrap();
    assert_eq!(r.status, 200, "POST {url}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

const STATE_SETTINGS: &str = "app = \"state_api.main:app\"\nhealth = \"/health\"\n\
                              writable = [\"logs\", \"/var/lib/state-api\"]\n";

#[test]
fn an_app_writing_logs_home_cache_and_var_lib_serves_under_podman_run() {
    let dir = project("state-api", STATE_SETTINGS);
    let image = build_into_podman(&dir, "state-api");
    let c = podman::run_detached(&image, &[], 8000);
    c.wait_ready("/health", Duration::from_secs(60));
    let first = post_json(&c.url("/notes?text=one"));
    let second = post_json(&c.url("/notes?text=two"));
    assert_eq!(first["home"], "/home/app", "{first}");
    assert_eq!(first["uid"], 65532);
    assert_eq!(
        (first["count"].as_u64(), second["count"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(
        first["temp"].as_str().unwrap().starts_with("/tmp/"),
        "{first}"
    );
    let notes: Value =
        serde_json::from_str(&c.wait_ready("/notes", Duration::from_secs(5))).unwrap();
    assert_eq!(notes["notes"].as_array().map(Vec::len), Some(2), "{notes}");
    assert_eq!(notes["logged"], 2, "{notes}");
    // The state went where the settings said, owned by the user; the code is not writable.
    let ls = podman::podman_ok(&[
        "exec",
        &c.id,
        "sh",
        "-c",
        "stat -c '%u %a %n' /home/app /app/logs /var/lib/state-api /app && \
         ls /home/app/.local/share/state-api /home/app/.cache/state-api",
    ]);
    assert!(ls.contains("65532 775 /home/app\n"), "{ls}");
    assert!(ls.contains("65532 775 /app/logs\n"), "{ls}");
    assert!(ls.contains("65532 775 /var/lib/state-api\n"), "{ls}");
    assert!(ls.contains("0 755 /app\n"), "{ls}");
    assert!(ls.contains("notes.db") && ls.contains("last-note"), "{ls}");
    let write = podman::podman()
        .args(["exec", &c.id, "sh", "-c", "echo x > /app/state_api/x"])
        .output()
        .unwrap();
    assert!(!write.status.success(), "the code is writable");
}

/// A played Deployment, taken down when dropped.
struct Played(PathBuf);

impl Drop for Played {
    fn drop(&mut self) {
        let _ = podman::podman()
            .args(["kube", "down"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn the_same_app_writes_its_state_under_kube_play_with_a_read_only_root() {
    let name = format!("state-{}", unique());
    let settings = format!("{STATE_SETTINGS}[deploy]\nname = \"{name}\"\n");
    let dir = project("state-api", &settings);
    let image = build_into_podman(&dir, "state-api");
    let manifests = imgbuild(&dir, &["manifests", "-o", "-"]).must_succeed("manifests");
    let deployment = manifests.stdout.split("\n---\n").next().unwrap();
    assert!(deployment.contains("readOnlyRootFilesystem: true"));
    for path in ["/tmp", "/home/app", "/app/logs", "/var/lib/state-api"] {
        assert_eq!(
            deployment.matches(&format!("mountPath: {path}\n")).count(),
            1,
            "{path}: {deployment}"
        );
    }
    let port = free_port();
    let play = podman::with_host_port(&deployment.replace("imgbuild://.", &image), port);
    let yaml = dir.join("play.yaml");
    std::fs::write(&yaml, &play).unwrap();
    let _played = Played(yaml.clone());
    podman::podman_ok(&["kube", "play", yaml.to_str().unwrap()]);
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    wait_http(&url("/health"), Duration::from_secs(60)).unwrap();
    let note = post_json(&url("/notes?text=kube"));
    assert_eq!(
        (note["home"].as_str(), note["count"].as_u64()),
        (Some("/home/app"), Some(1)),
        "{note}"
    );
    let notes: Value =
        serde_json::from_str(&wait_http(&url("/notes"), Duration::from_secs(5)).unwrap()).unwrap();
    assert_eq!(notes["logged"], 1, "{notes}");
}

#[test]
fn a_factory_found_by_init_is_served_with_factory() {
    let (dir, notes) = project_from_init("factory-api");
    let spec = std::fs::read_to_string(dir.join("imgbuild.toml")).unwrap();
    assert!(
        spec.contains("\napp = \"factory_api.app:create_app()\"\n"),
        "{notes}\n{spec}"
    );
    assert!(spec.contains("health = \"/health\""), "{spec}");
    let image = build_into_podman(&dir, "factory-api");
    let config = podman::inspect(&image);
    let cmd = config["Config"]["Cmd"].to_string();
    assert!(
        cmd.contains("\"factory_api.app:create_app\",") && cmd.ends_with(",\"--factory\"]"),
        "{cmd}"
    );
    let c = podman::run_detached(&image, &[], 8000);
    c.wait_ready("/health", Duration::from_secs(60));
    post_json(&c.url("/visits"));
    let second = post_json(&c.url("/visits"));
    assert_eq!(second["visits"], 2, "{second}");
    assert_eq!(second["db"], "/home/app/visits.db");
}

#[test]
fn a_server_started_by_cmd_needs_no_app_and_a_missing_uvicorn_stops_before_any_fetch() {
    let settings = "cmd = [\"hypercorn\", \"hyper_api.app:app\", \"--bind\", \"0.0.0.0:8000\"]\n";
    let dir = project("hypercorn-api", settings);
    let image = build_into_podman(&dir, "hypercorn-api");
    let c = podman::run_detached(&image, &[], 8000);
    c.wait_ready("/health", Duration::from_secs(60));
    post_json(&c.url("/hits"));
    let second = post_json(&c.url("/hits"));
    assert_eq!(second["hits"], 2, "{second}");
    assert_eq!(second["file"], "/home/app/hits");

    // The default command on this lock: uvicorn is not in it, which the lock tells
    // before a single wheel is fetched (a cold cache stays empty of wheels).
    let spec = format!("base = \"{}\"\napp = \"hyper_api.app:app\"\n", base());
    std::fs::write(dir.join("imgbuild.toml"), spec).unwrap();
    let cold = support::target_tempdir("shapes-cold-");
    let cache = cold.path().display().to_string();
    let out = cold.path().join("out");
    let run = imgbuild(
        &dir,
        &[
            "build",
            "--output",
            &format!("oci:{}", out.display()),
            "--cache-dir",
            &cache,
        ],
    );
    assert!(!run.success, "{}", run.stderr);
    assert!(
        run.stderr.contains("the default command runs \"/app/.venv/bin/uvicorn\", which is not in the image; the lock has no `uvicorn`"),
        "{}",
        run.stderr
    );
    // The cache holds the layers built from the base (the stdlib's pycs), each
    // recorded under meta/layers, and no wheel.
    let files: Vec<PathBuf> = walkdir::WalkDir::new(cold.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let built: String = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("/meta/layers/"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let fetched: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("/blobs/sha256/"))
        .filter(|p| !built.contains(&*p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(fetched.is_empty(), "fetched before the check: {fetched:?}");
    assert!(!run.stderr.contains("downloaded"), "{}", run.stderr);
    assert!(!out.exists());
}

#[test]
fn a_virtual_workspace_root_with_one_member_builds_from_the_root_and_from_the_member() {
    let root = support::uv::uv_lock(&support::fixture("ws-one"));
    let notes = init_in(&root);
    let spec = std::fs::read_to_string(root.join("imgbuild.toml")).unwrap();
    assert!(
        spec.contains("\npackage = \"backend\"\n") && spec.contains("\napp = \"app.main:app\"\n"),
        "{notes}\n{spec}"
    );
    let from_root = build_into_podman(&root, "ws-one");
    let listing = sh(&from_root, "ls /app");
    assert_eq!(
        listing.stdout.split_whitespace().collect::<Vec<_>>(),
        ["app", "pyproject.toml"],
        "the member's files only"
    );

    let member = root.join("backend");
    let notes = init_in(&member);
    let spec = std::fs::read_to_string(member.join("imgbuild.toml")).unwrap();
    assert!(
        spec.contains("\nlockfile = \"../uv.lock\"\n"),
        "{notes}\n{spec}"
    );
    let from_member = build_into_podman(&member, "ws-one-member");
    for image in [&from_root, &from_member] {
        let c = podman::run_detached(image, &[], 8000);
        c.wait_ready("/health", Duration::from_secs(60));
        post_json(&c.url("/items?name=a"));
        let second = post_json(&c.url("/items?name=b"));
        assert_eq!(second["items"], 2, "{second}");
    }
}

#[test]
fn package_picks_one_service_of_a_workspace_with_only_its_closure_and_files() {
    let root = support::uv::uv_lock(&support::fixture("ws-many"));
    let notes = init_in(&root);
    let spec = std::fs::read_to_string(root.join("imgbuild.toml")).unwrap();
    assert!(
        spec.contains("\npackage = \"ws-api\"\n") && spec.contains("\napp = \"ws_api.main:app\"\n"),
        "{notes}\n{spec}"
    );
    let image = build_into_podman(&root, "ws-many");
    // The library member is installed, the other service and its dependency are not.
    let probe = "import importlib.util as u; print([m for m in ('ws_api', 'ws_common', 'ws_worker', 'six') if u.find_spec(m)])";
    let found = podman::python_output(&[], &image, "python", probe);
    assert_eq!(found, "['ws_api', 'ws_common']");
    let listing = sh(&image, "ls -a /app");
    assert!(
        !listing.stdout.contains("services") && !listing.stdout.contains("libs"),
        "{}",
        listing.stdout
    );
    let c = podman::run_detached(&image, &[], 8000);
    let health = c.wait_ready("/health", Duration::from_secs(60));
    assert!(
        health.contains("hello from the workspace library"),
        "{health}"
    );
    post_json(&c.url("/visits"));
    assert_eq!(post_json(&c.url("/visits"))["visits"], 2);
}

#[test]
fn a_dependency_importing_pkg_resources_undeclared_is_named_before_the_image_runs() {
    let root = support::target_tempdir("shapes-legacy-").keep();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(support::fixture("legacy-deps"))
        .arg(root.join("legacy-deps"))
        .status()
        .unwrap();
    assert!(status.success());
    let dir = root.join("legacy-deps/api");
    support::uv::uv(
        &dir,
        &["lock", "--exclude-newer", support::uv::EXCLUDE_NEWER],
    );
    let spec = format!("base = \"{}\"\napp = \"legacy_api.main:app\"\n", base());
    std::fs::write(dir.join("imgbuild.toml"), &spec).unwrap();
    let out = support::target_tempdir("shapes-out-");
    let output = format!("docker-archive:{}", out.path().join("image.tar").display());
    let run = imgbuild(
        &dir,
        &["build", "--output", &output, "--cache-dir", &cache_dir()],
    )
    .must_succeed("build");
    assert!(
        run.stderr.contains("`pkg_resources` (imported by legacy-lib 1.0 in legacy_lib): pkg_resources is part of setuptools")
            && run.stderr.contains("add setuptools to the project's dependencies"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("nothing in the image provides").count(),
        1,
        "{}",
        run.stderr
    );
    // The warning is right: the app cannot be imported.
    let image = podman::import(&output, None);
    let start = podman::run_to_completion(&image, &["python", "-c", "import legacy_api.main"]);
    assert_ne!(start.status, 0);
    assert!(
        start.stderr.contains("No module named 'pkg_resources'"),
        "{}",
        start.stderr
    );

    // With setuptools declared and locked, the build says nothing and the app imports.
    let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
    let pyproject = pyproject.replace(
        "\"legacy-lib\",\n",
        "\"legacy-lib\",\n    \"setuptools<81\",\n",
    );
    std::fs::write(dir.join("pyproject.toml"), pyproject).unwrap();
    support::uv::uv(
        &dir,
        &["lock", "--exclude-newer", support::uv::EXCLUDE_NEWER],
    );
    let fixed = format!("docker-archive:{}", out.path().join("fixed.tar").display());
    let run = imgbuild(
        &dir,
        &["build", "--output", &fixed, "--cache-dir", &cache_dir()],
    )
    .must_succeed("build");
    assert!(
        !run.stderr.contains("nothing in the image provides"),
        "{}",
        run.stderr
    );
    let image = podman::import(&fixed, None);
    let start = podman::run_to_completion(&image, &["python", "-c", "import legacy_api.main"]);
    assert_eq!(start.status, 0, "{}", start.stderr);
}
