//! One server, end to end, on fixtures/orders-api (whose init step creates the SQLite
//! schema the app needs, on /tmp):
//!
//! - `imgbuild manifests --format compose`, resolved by `imgbuild resolve`, runs under
//!   podman-compose: init first, HTTPS from the mounted certificate (curl trusts only
//!   the test CA), the image user on a read-only root, two uvicorn workers, a healthy
//!   healthcheck, and a restart after `kill -9`;
//! - `--format systemd` passes `systemd-analyze verify`, and its ExecStartPre and
//!   ExecStart lines, run as systemd would split them, serve the app;
//! - `imgbuild run` serves the fixture with init first and removes everything on
//!   Ctrl-C, with podman and with the docker CLI; `--watch` serves an edit;
//! - bad input is one line, with nothing written.
//!
//! What this machine cannot show, and what is shown instead:
//! - podman-compose 1.6 makes the app `--requires` the init container, and podman
//!   (4.3 here) refuses to restart a container whose requirement is not running, so an
//!   app that depends on an exited init step is not restarted after `kill -9`. Docker
//!   Compose has no such coupling. The test recreates the app with `up --no-deps` (no
//!   `--requires`) and shows the restart policy from the compose file at work; the
//!   same podman-compose `--requires` starts init a second time as the app starts.
//! - Healthchecks under podman run from systemd timers, and no systemd runs here: the
//!   test runs the compose file's check once with `podman healthcheck run`.
//! - systemd itself does not run here either, so the unit's ExecStart is run by hand.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::podman::{self, free_port, wait_http};
use support::registry::{make_tls, Registry, Setup};
use support::Run;

/// imgbuild in `cwd`, with no credentials from the machine.
fn imgbuild(cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = support::without_credentials(cwd, args);
    cmd.stdin(Stdio::null());
    Run::from(cmd.output().expect("cannot run imgbuild"))
}

/// The wheel and layer cache shared by the tests of this file.
fn cache_dir() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("single-server-e2e-cache")
        .display()
        .to_string()
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 100_000)
}

/// A locked copy of fixtures/orders-api with an imgbuild.toml: the Debian base, the
/// init step, the health path, `image` and `extra`.
fn orders_api(image: &str, extra: &str) -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture("orders-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"{}\"\napp = \"orders_api.main:app\"\nimage = \"{image}\"\n\
             init = [\"python\", \"-m\", \"orders_api.migrate\"]\nhealth = \"/health\"\n{extra}",
            support::base::base_image_ref("amd64")
        ),
    )
    .unwrap();
    project
}

/// A test CA and a certificate for localhost in `project/tls`, its key owned by the
/// image's user (65532), mode 600, as docs/single-server.md says to install it.
fn tls_files(project: &Path) -> PathBuf {
    let dir = project.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    make_tls(&dir);
    let key = dir.join("server.key");
    std::os::unix::fs::chown(&key, Some(65532), Some(65532)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    dir
}

/// `imgbuild resolve -f FILE` against `reg`; checks that only the image lines changed
/// (two: init and app) and returns the resolved text and the pinned reference.
fn resolve(project: &Path, file: &str, reg: &Registry) -> (String, String) {
    let run = imgbuild(
        project,
        &[
            "resolve",
            "-f",
            file,
            "--insecure-registry",
            &reg.host,
            "--cache-dir",
            &cache_dir(),
        ],
    )
    .must_succeed("resolve");
    let original = std::fs::read_to_string(project.join(file)).unwrap();
    assert_eq!(original.lines().count(), run.stdout.lines().count());
    let pinned_prefix = format!("{}/orders-api@sha256:", reg.host);
    let mut pinned = Vec::new();
    for (a, b) in original.lines().zip(run.stdout.lines()) {
        if !a.contains("imgbuild://.") || a.trim_start().starts_with('#') {
            assert_eq!(a, b, "resolve changed a line without a reference");
            continue;
        }
        let at = b
            .find(&pinned_prefix)
            .unwrap_or_else(|| panic!("not pinned: {b}"));
        let reference = b[at..at + pinned_prefix.len() + 64].to_string();
        let bare = a.replace("imgbuild://.", &reference);
        let quoted = a.replace("imgbuild://.", &format!("\"{reference}\""));
        assert!(b == bare || b == quoted, "{a}\n  became\n{b}");
        pinned.push(reference);
    }
    assert_eq!(pinned.len(), 2, "init and app");
    assert_eq!(pinned[0], pinned[1], "one image for both");
    let reference = pinned.remove(0);
    // The registry is plain HTTP: pull it first, as the engines would from a real one.
    podman::podman_ok(&["pull", "-q", "--tls-verify=false", &reference]);
    (run.stdout, reference)
}

/// A compose project brought up by podman-compose: `down -v` and the image removed
/// when dropped.
struct Compose {
    dir: PathBuf,
    file: String,
    image: String,
}

impl Compose {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman-compose")
            .current_dir(&self.dir)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .output()
            .expect("cannot run podman-compose; run scripts/setup.sh --deps-only")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        support::stdout_ok(&out, &format!("podman-compose {}", args.join(" ")));
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v"]);
        podman::remove_image(&self.image);
    }
}

/// The container of a compose service, by the labels every Compose implementation sets.
fn service_container(project: &str, service: &str) -> String {
    let names = podman::podman_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
        "--format",
        "{{.Names}}",
    ]);
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 1, "{project}/{service}: {names:?}");
    names[0].to_string()
}

fn seconds(rfc3339: &str) -> f64 {
    let out = Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The app ran as 65532 on a read-only root; the migrations were applied by the init
/// step before the app container started.
fn check_user_root_and_init(app: &str, migrations: &str) {
    let uid = podman::podman_ok(&["exec", app, "id", "-u"]);
    assert_eq!(uid.trim(), "65532");
    let write = podman::podman()
        .args(["exec", app, "sh", "-c", "echo x > /probe"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "writing to / did not fail as read-only: {write:?}"
    );
    let rows: Value = serde_json::from_str(migrations).unwrap();
    let rows = rows.as_array().expect("a list of migrations");
    assert!(!rows.is_empty(), "the init step did not run");
    assert!(rows.iter().all(|r| r["uid"] == 65532), "{rows:?}");
    let started = seconds(
        podman::inspect_container(app)["State"]["StartedAt"]
            .as_str()
            .unwrap(),
    );
    let first = rows[0]["applied_at"].as_f64().unwrap();
    assert!(first < started, "init at {first}, app started at {started}");
}

#[test]
fn resolved_compose_runs_under_podman_compose_over_https() {
    let reg = Registry::start(Setup::Plain);
    let name = unique("orders");
    let port = free_port();
    let project = orders_api(
        &format!("{}/orders-api", reg.host),
        &format!(
            "workers = 2\n[deploy]\nname = \"{name}\"\npublish = \"127.0.0.1:{port}\"\n\
             tls = {{ cert = \"tls/server.crt\", key = \"tls/server.key\" }}\n"
        ),
    );
    let tls = tls_files(&project);
    imgbuild(
        &project,
        &["manifests", "--format", "compose", "-o", "deploy"],
    )
    .must_succeed("manifests --format compose");
    let (resolved, image) = resolve(&project, "deploy/compose.yaml", &reg);
    assert!(
        resolved.contains("# `init` from the spec"),
        "comments are kept"
    );
    std::fs::write(project.join("deploy/resolved.yaml"), &resolved).unwrap();
    let compose = Compose {
        dir: project.join("deploy"),
        file: "resolved.yaml".into(),
        image,
    };
    compose.ok(&["up", "-d"]);

    // HTTPS with the test CA, as clients will see it.
    let ca = tls.join("ca.crt");
    let url = |p: &str| format!("https://localhost:{port}{p}");
    let health = support::https::wait(&url("/health"), &ca, Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                podman::podman_ok(&["logs", &format!("{name}_app_1")])
            )
        });
    assert_eq!(health, r#"{"status":"ok"}"#);
    assert!(
        wait_http(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(1)
        )
        .is_err(),
        "plain HTTP must not be served"
    );
    let app = service_container(&name, "app");
    let init = service_container(&name, "init");
    assert_eq!(podman::inspect_container(&init)["State"]["ExitCode"], 0);
    let migrations = support::https::get(&url("/migrations"), &ca).unwrap();
    check_user_root_and_init(&app, &migrations);

    // workers = 2: uvicorn's supervisor and two worker processes.
    let top = podman::podman_ok(&["top", &app, "args"]);
    assert_eq!(top.matches("--multiprocessing-fork").count(), 2, "{top}");

    // The compose file's healthcheck, run once (no systemd timers here), over HTTPS.
    podman::podman_ok(&["healthcheck", "run", &app]);
    let state = podman::inspect_container(&app)["State"].clone();
    assert_eq!(state["Health"]["Status"], "healthy", "{state:#}");
    let host = podman::inspect_container(&app)["HostConfig"].clone();
    assert_eq!(host["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["NanoCpus"], 1_000_000_000u64, "limits.cpu 1");
    assert_eq!(host["Memory"], 256u64 << 20, "limits.memory 256Mi");

    // Restarted after kill -9, once the app no longer --requires the exited init
    // container (see the top of this file); the data on /tmp is kept.
    compose.ok(&["up", "-d", "--no-deps", "--force-recreate", "app"]);
    let app = service_container(&name, "app");
    support::https::wait(&url("/health"), &ca, Duration::from_secs(60)).unwrap();
    podman::kill_and_wait_restart(&app);
    let again = support::https::wait(&url("/migrations"), &ca, Duration::from_secs(60)).unwrap();
    assert_eq!(again, migrations, "the /tmp volume outlived the restart");
}

/// The words of a unit's `KEY=` line as systemd splits them before exec: on
/// whitespace, with "…" quoting and C escapes, and `%%` and `$$` for `%` and `$`.
fn exec_words(unit: &str, key: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in\n{unit}"));
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            '\\' => word.push(chars.next().expect("an escaped character")),
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

fn systemd_analyze_verify(unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("cannot run systemd-analyze; run scripts/setup.sh --deps-only (Debian's systemd)")
}

/// The unit's ExecStop and ExecStopPost, run when dropped, and its volumes (named
/// after the unit: /tmp's, HOME's) and image removed.
struct Unit {
    text: String,
    name: String,
    image: String,
}

impl Drop for Unit {
    fn drop(&mut self) {
        for key in ["ExecStop=", "ExecStopPost="] {
            let argv = exec_words(&self.text, key);
            let _ = Command::new(&argv[0]).args(&argv[1..]).output();
        }
        let filter = format!("name={}", self.name);
        let volumes = podman::podman()
            .args(["volume", "ls", "-q", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for v in volumes.split_whitespace() {
            let _ = podman::podman().args(["volume", "rm", "-f", v]).output();
        }
        podman::remove_image(&self.image);
    }
}

#[test]
fn systemd_unit_verifies_and_its_exec_start_serves() {
    let reg = Registry::start(Setup::Plain);
    let name = unique("orders");
    let port = free_port();
    let project = orders_api(
        &format!("{}/orders-api", reg.host),
        &format!("[deploy]\nname = \"{name}\"\npublish = \"127.0.0.1:{port}\"\n"),
    );
    imgbuild(
        &project,
        &["manifests", "--format", "systemd", "-o", "deploy"],
    )
    .must_succeed("manifests --format systemd");
    let file = format!("deploy/{name}.service");

    // systemd-analyze verify passes the unit, and fails a copy with a missing program,
    // so its passing means something.
    let verified = systemd_analyze_verify(&project.join(&file));
    assert!(verified.status.success(), "{verified:?}");
    assert_eq!(String::from_utf8_lossy(&verified.stderr), "", "no warnings");
    let text = std::fs::read_to_string(project.join(&file)).unwrap();
    let broken = project.join("deploy/broken.service");
    std::fs::write(
        &broken,
        text.replace("ExecStart=/usr/bin/podman", "ExecStart=/usr/bin/podmen"),
    )
    .unwrap();
    assert!(!systemd_analyze_verify(&broken).status.success());

    // Pinned by resolve, the unit still verifies.
    let (resolved, image) = resolve(&project, &file, &reg);
    let installed = project.join(format!("installed/{name}.service"));
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::write(&installed, &resolved).unwrap();
    assert!(systemd_analyze_verify(&installed).status.success());
    let _unit = Unit {
        text: resolved.clone(),
        name: name.clone(),
        image,
    };

    // ExecStartPre (the init step) then ExecStart, each exactly as systemd would exec it.
    let pre = exec_words(&resolved, "ExecStartPre=");
    let out = Command::new(&pre[0]).args(&pre[1..]).output().unwrap();
    assert!(out.status.success(), "ExecStartPre: {out:?}");
    let start = exec_words(&resolved, "ExecStart=");
    assert_eq!(start[0], "/usr/bin/podman");
    // To files, not pipes: conmon keeps the unit's stdout and stderr (as systemd's
    // journal stream) after podman returns.
    let log = project.join("journal.log");
    let status = Command::new(&start[0])
        .args(&start[1..])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(project.join("journal.err")).unwrap())
        .status()
        .unwrap();
    let err = || std::fs::read_to_string(project.join("journal.err")).unwrap();
    assert!(status.success(), "ExecStart: {status}: {}", err());

    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    wait_http(&url("/health"), Duration::from_secs(60)).unwrap();
    let migrations = wait_http(&url("/migrations"), Duration::from_secs(10)).unwrap();
    check_user_root_and_init(&name, &migrations);
    // --log-driver=passthrough: the app's output is the unit's, which systemd sends to
    // the journal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("GET /migrations")
    {
        assert!(
            Instant::now() < deadline,
            "no access log on ExecStart's stdout"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let host = podman::inspect_container(&name)["HostConfig"].clone();
    assert_eq!(
        host["CapDrop"].as_array().map(|a| a.is_empty()),
        Some(false)
    );
    assert_eq!(host["ReadonlyRootfs"], true);

    // ExecStop and ExecStopPost leave nothing behind.
    for key in ["ExecStop=", "ExecStopPost="] {
        let argv = exec_words(&resolved, key);
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(out.status.success(), "{key}: {out:?}");
    }
    let exists = podman::podman()
        .args(["container", "exists", &name])
        .status()
        .unwrap();
    assert!(!exists.success(), "{name} still exists after ExecStopPost");
}

#[test]
fn exec_lines_are_split_as_systemd_splits_them() {
    let unit = "ExecStart=/bin/x --a=1 \"b c\" \"--d=[\\\"e\\\",\\\"f g\\\"]\" 100%% $$HOME \"\"\n";
    assert_eq!(
        exec_words(unit, "ExecStart="),
        [
            "/bin/x",
            "--a=1",
            "b c",
            "--d=[\"e\",\"f g\"]",
            "100%",
            "$HOME",
            ""
        ]
    );
}

impl Run {
    /// The one line a failure prints on stderr, with nothing on stdout.
    fn one_error_line(&self) -> String {
        assert!(
            !self.success,
            "succeeded where it should fail:\n{}",
            self.stdout
        );
        assert_eq!(self.stdout, "", "a failure printed:\n{}", self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "want one line:\n{}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        lines[0].to_string()
    }
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("tls.crt"), "a certificate").unwrap();
    let spec = |extra: &str| {
        std::fs::write(
            dir.join("imgbuild.toml"),
            format!(
                "base = \"python:3.12-slim\"\napp = \"orders_api.main:app\"\nsource = \"{}\"\n{extra}",
                support::fixture("orders-api").display()
            ),
        )
        .unwrap();
    };

    // A tls file that does not exist, for both outputs that mount it.
    spec("[deploy]\ntls = { cert = \"tls.crt\", key = \"secret/tls.key\" }\n");
    for format in ["compose", "systemd"] {
        let line = imgbuild(dir, &["manifests", "--format", format, "-o", "out"]).one_error_line();
        assert!(
            line.starts_with("error: imgbuild.toml: key \"deploy.tls.key\": "),
            "{line}"
        );
        assert!(
            line.contains("secret/tls.key: No such file or directory"),
            "{line}"
        );
        imgbuild(dir, &["manifests", "--format", format]).one_error_line();
    }

    // A host that is not a DNS name.
    spec("[deploy]\nhost = \"https://api.example.com/\"\n");
    let line = imgbuild(dir, &["manifests", "-o", "out"]).one_error_line();
    assert!(
        line.starts_with("error: imgbuild.toml: key \"deploy.host\": \"https://api.example.com/\" is not a DNS name"),
        "{line}"
    );

    // An unknown --format, before the spec is even read.
    spec("");
    let line = imgbuild(dir, &["manifests", "--format", "helm", "-o", "out"]).one_error_line();
    assert_eq!(
        line,
        "error: --format \"helm\": expected kubernetes, compose or systemd"
    );

    assert!(
        !dir.join("out").exists(),
        "a failed run wrote its output directory"
    );
    // The same spec with a good format writes.
    imgbuild(dir, &["manifests", "--format", "compose", "-o", "out"]).must_succeed("compose");
    assert!(dir.join("out/compose.yaml").is_file());
}

/// A running `imgbuild run`: SIGINT and a wait when dropped.
struct Running {
    child: std::process::Child,
    /// Outside the project: a file written in it would be a change to --watch.
    logs: tempfile::TempDir,
}

impl Running {
    fn start(project: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let logs = support::target_tempdir("run-logs-");
        let mut cmd = support::imgbuild_command(
            project,
            &[&["run", "--cache-dir", &cache_dir()][..], args].concat(),
        );
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.path().join("out")).unwrap())
            .stderr(std::fs::File::create(logs.path().join("err")).unwrap());
        Running {
            child: cmd.spawn().expect("cannot run imgbuild"),
            logs,
        }
    }

    fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.logs.path().join(f)).unwrap();
        read("out") + &read("err")
    }

    /// Ctrl-C, as the terminal sends it; how imgbuild exited.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "imgbuild run did not stop:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Nothing of the run is left: no container (app, init, retired apps), no volume.
/// Its image stays, as `localhost/imgbuild/NAME:latest`, as a build's would: removed
/// here, to keep podman's storage as the test found it.
fn nothing_left(container: &str) {
    let image = format!(
        "localhost/imgbuild/{}:latest",
        container.trim_end_matches("-run")
    );
    assert!(podman::podman()
        .args(["image", "exists", &image])
        .status()
        .unwrap()
        .success());
    podman::remove_image(&image);
    let filter = format!("name={container}");
    let containers =
        podman::podman_ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    assert_eq!(containers.trim(), "", "containers left after Ctrl-C");
    let volumes =
        podman::podman_ok(&["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"]);
    assert_eq!(volumes.trim(), "", "volumes left after Ctrl-C");
}

#[test]
fn run_serves_with_init_first_and_ctrl_c_removes_everything() {
    let name = unique("orders");
    let project = orders_api(
        "127.0.0.1:9/unused",
        &format!("[deploy]\nname = \"{name}\"\n"),
    );
    let port = free_port().to_string();
    // -e reaches init and app alike: the app finds the schema init made in that file.
    let mut run = Running::start(
        &project,
        &["-p", &port, "-e", "ORDERS_DB=/tmp/custom.db"],
        &[],
    );
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    wait_http(&url("/health"), Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}\n{}", run.output()));
    let migrations = wait_http(&url("/migrations"), Duration::from_secs(10)).unwrap();
    let container = format!("{name}-run");
    check_user_root_and_init(&container, &migrations);
    podman::podman_ok(&["exec", &container, "test", "-s", "/tmp/custom.db"]);
    assert!(
        run.output().contains("migrated /tmp/custom.db"),
        "init's output is shown"
    );

    let status = run.interrupt();
    assert!(status.success(), "{status}:\n{}", run.output());
    assert!(run
        .output()
        .contains(&format!("stopped and removed {container}")));
    nothing_left(&container);

    // `-- COMMAND` runs instead of the app, after init, in the same container setup;
    // its exit is imgbuild's.
    let cache = cache_dir();
    let command = |code: &str| {
        let script = format!("import os; print('uid', os.getuid()); raise SystemExit({code})");
        let args = [
            "run",
            "--cache-dir",
            &cache,
            "-p",
            &port,
            "--",
            "python",
            "-c",
            &script,
        ];
        // Not `imgbuild()`: podman refuses a DOCKER_CONFIG without a config.json.
        Run::from(support::imgbuild_command(&project, &args).output().unwrap())
    };
    let done = command("0").must_succeed("run -- python");
    assert!(done.stdout.contains("uid 65532"), "{}", done.stdout);
    let failed = command("3");
    assert!(!failed.success);
    assert!(
        failed
            .stderr
            .ends_with("error: the app exited (exit status: 3)\n"),
        "{}",
        failed.stderr
    );
    nothing_left(&container);
}

#[test]
fn run_watch_serves_a_source_edit() {
    let name = unique("orders");
    let project = orders_api(
        "127.0.0.1:9/unused",
        &format!("[deploy]\nname = \"{name}\"\n"),
    );
    let port = free_port().to_string();
    let mut run = Running::start(&project, &["--watch", "-p", &port], &[]);
    let url = format!("http://127.0.0.1:{port}/health");
    let first = wait_http(&url, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}\n{}", run.output()));
    assert_eq!(first, r#"{"status":"ok"}"#);

    let first_image = podman::image_id(&format!("localhost/imgbuild/{name}:latest"));
    let main = project.join("orders_api/main.py");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        source.replace(r#"{"status": "ok"}"#, r#"{"status": "edited"}"#),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while wait_http(&url, Duration::from_secs(1)).as_deref() != Ok(r#"{"status":"edited"}"#) {
        assert!(
            Instant::now() < deadline,
            "the edit was not served:\n{}",
            run.output()
        );
    }
    assert_eq!(run.output().matches("restarting with sha256:").count(), 1);
    // The migration ran again before the new app, as in a new pod.
    let rows = wait_http(
        &format!("http://127.0.0.1:{port}/migrations"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(rows.matches("0001_orders").count(), 2, "{rows}");

    assert!(run.interrupt().success(), "{}", run.output());
    let replaced = podman::podman()
        .args(["image", "exists", &first_image])
        .status()
        .unwrap();
    assert!(!replaced.success(), "the image the edit replaced is left");
    nothing_left(&format!("{name}-run"));
}

/// `podman system service`: the Docker API on a socket, killed when dropped.
struct DockerApi {
    child: std::process::Child,
    host: String,
}

impl Drop for DockerApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_with_the_docker_cli() {
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!("no docker CLI on PATH: `imgbuild run --engine docker` not tried");
        return;
    }
    // No docker daemon here: podman's Docker-compatible API stands in for it.
    let dir = support::target_tempdir("docker-api-");
    let socket = dir.path().join("docker.sock");
    let api = DockerApi {
        child: podman::podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        host: format!("unix://{}", socket.display()),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "podman system service did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let name = unique("orders");
    let project = orders_api(
        "127.0.0.1:9/unused",
        &format!("[deploy]\nname = \"{name}\"\n"),
    );
    let port = free_port().to_string();
    let env_file = project.join("app.env");
    std::fs::write(
        &env_file,
        "# read as `docker run --env-file` reads it\nORDERS_DB=/tmp/from-env-file.db\n",
    )
    .unwrap();
    let env_file = env_file.display().to_string();
    let mut run = Running::start(
        &project,
        &["--engine", "docker", "-p", &port, "--env-file", &env_file],
        &[("DOCKER_HOST", &api.host)],
    );
    let migrations = wait_http(
        &format!("http://127.0.0.1:{port}/migrations"),
        Duration::from_secs(180),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", run.output()));
    check_user_root_and_init(&format!("{name}-run"), &migrations);
    // --env-file reached init and app: the app reads the schema init made there.
    podman::podman_ok(&[
        "exec",
        &format!("{name}-run"),
        "test",
        "-s",
        "/tmp/from-env-file.db",
    ]);
    assert!(run.interrupt().success(), "{}", run.output());
    nothing_left(&format!("{name}-run"));
}
