//! `imgbuild push` end to end: the real distribution registry (docker-registry 2.8 on
//! 127.0.0.1) holds the Debian Python base, imgbuild builds on it and pushes, and podman
//! and skopeo judge independently that what was pushed is a working image.
//!
//! Every imgbuild call is checked for the password in its output, and each test uses
//! one registry of its own.

mod support;

use imgbuild::digest::Digest;
use imgbuild::registry::client::MEDIA_TYPE_OCI_INDEX;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::podman::{self, Container, Tls};
use support::registry::{Registry, Setup, PASSWORD, USERNAME};
use support::Run;

/// A wrong password that is just as easy to spot in output as the right one.
const WRONG_PASSWORD: &str = "wr0ng-Pa55-4471-e2e";

/// The app layer plus the config blob of a small source change; far below any
/// dependency layer, so only the app layer can fit.
const INNER_LOOP_MAX_BYTES: u64 = 64 * 1024;

// ---------------------------------------------------------------------------
// Running imgbuild
// ---------------------------------------------------------------------------

impl Run {
    /// The `error: ...` line imgbuild ends with on failure, checked to be the only one.
    fn error_line(&self) -> &str {
        assert!(
            !self.success,
            "imgbuild succeeded where it should fail:\n{}",
            self.stdout
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one error line:\n{}",
            self.stderr
        );
        let last = self.stderr.lines().rfind(|l| !l.trim().is_empty());
        assert_eq!(
            last,
            Some(errors[0]),
            "the error must be the last line of stderr:\n{}",
            self.stderr
        );
        errors[0]
    }
}

/// Runs imgbuild in `cwd` with only the credentials the test gives it: no config.json,
/// auth file or IMGBUILD_* variables from the machine. `stdin` feeds --password-stdin.
fn imgbuild(cwd: &Path, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Run {
    let mut cmd = support::without_credentials(cwd, args);
    cmd.env("IMGBUILD_RETRY_BASE_MS", "50")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("cannot run imgbuild");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let run = Run::from(child.wait_with_output().expect("imgbuild did not finish"));
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "imgbuild {args:?} printed a password:\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

/// The wheel and layer cache, shared by every test in this file (the store is safe
/// for concurrent builds), so only the first build downloads.
/// `imgbuild push --tag TAG` to the TLS registry trusting `ca`, with the shared
/// cache, the `login` arguments, `extra` ones and `stdin` (for `--password-stdin`).
fn push_over_tls(
    project: &Path,
    tag: &str,
    ca: &str,
    login: &[&str],
    extra: &[&str],
    stdin: Option<&str>,
) -> Run {
    let cache = cache_dir();
    let mut args = vec!["push", "--tag", tag, "--ca-file", ca];
    args.extend(login);
    args.extend(["--cache-dir", &cache]);
    args.extend(extra);
    imgbuild(project, &args, stdin, &[])
}

fn cache_dir() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("push-e2e-cache")
        .display()
        .to_string()
}

/// What a successful push printed: the `--json` summary if asked for, then one
/// `REF@sha256:...` line per tag.
struct Pushed {
    summary: Option<Value>,
    refs: Vec<String>,
    digest: String,
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Parses a push's stdout and checks each tag got its `TAG@DIGEST` line, in order.
fn parse_push(run: &Run, tags: &[&str], json: bool) -> Pushed {
    let (summary, rest) = if json {
        let end = run
            .stdout
            .rfind('}')
            .unwrap_or_else(|| panic!("--json printed no JSON object:\n{}", run.stdout));
        let summary: Value = serde_json::from_str(&run.stdout[..=end])
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", run.stdout));
        (Some(summary), &run.stdout[end + 1..])
    } else {
        (None, run.stdout.as_str())
    };
    let refs: Vec<String> = rest
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(
        refs.len(),
        tags.len(),
        "expected one REF@sha256 line per tag {tags:?}:\n{}",
        run.stdout
    );
    let mut digest = None::<String>;
    for (line, tag) in refs.iter().zip(tags) {
        let d = line
            .strip_prefix(&format!("{tag}@"))
            .unwrap_or_else(|| panic!("line {line:?} is not {tag}@sha256:..."));
        assert!(
            is_sha256(d),
            "line {line:?} does not end with sha256:<64 hex>"
        );
        if let Some(prev) = &digest {
            assert_eq!(prev, d, "the tags of one push name different digests");
        }
        digest = Some(d.to_string());
    }
    let digest = digest.unwrap();
    if let Some(s) = &summary {
        assert_eq!(s["digest"], digest.as_str(), "summary digest vs stdout");
        let got: Vec<&str> = s["tags"]
            .as_array()
            .expect("summary has tags")
            .iter()
            .map(|t| t.as_str().unwrap_or_default())
            .collect();
        assert_eq!(got, tags, "summary tags");
    }
    Pushed {
        summary,
        refs,
        digest,
    }
}

/// Every layer of every image in a summary: (label, outcome, size).
fn layers(summary: &Value) -> Vec<(String, String, u64)> {
    summary["images"]
        .as_array()
        .expect("summary has images")
        .iter()
        .flat_map(|i| i["layers"].as_array().expect("image has layers").iter())
        .map(|l| {
            (
                l["label"].as_str().expect("layer label").to_string(),
                l["outcome"].as_str().expect("layer outcome").to_string(),
                l["size"].as_u64().expect("layer size"),
            )
        })
        .collect()
}

fn bytes_uploaded(summary: &Value) -> u64 {
    summary["bytes_uploaded"]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no bytes_uploaded: {summary:#}"))
}

// ---------------------------------------------------------------------------
// Projects and registries
// ---------------------------------------------------------------------------

/// A locked copy of fixtures/hello-api with an imgbuild.toml on `base`.
fn hello_api(base: &str, extra: &str) -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!("base = \"{base}\"\napp = \"hello_api.main:app\"\n{extra}"),
    )
    .unwrap();
    project
}

fn skopeo(args: &[String]) -> Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("cannot run skopeo")
}

fn skopeo_ok(args: &[String]) -> Output {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `skopeo inspect --raw` of `HOST/name`, or the failure's stderr.
fn raw_manifest(reg: &Registry, name: &str) -> Result<Vec<u8>, String> {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_flags(""));
    args.push(format!("docker://{}/{name}", reg.host));
    let out = skopeo(&args);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Copies the Debian base for `arch` to `HOST/name` and returns its manifest's
/// descriptor as the registry serves it.
/// A registry (`setup`) holding the amd64 base as `python:3.11`, and hello-api
/// built on it with the `extra` settings.
fn registry_and_hello_api(setup: Setup, extra: &str) -> (Registry, PathBuf) {
    let reg = Registry::start(setup);
    seed_base(&reg, "amd64", "python:3.11");
    let project = hello_api(&format!("{}/python:3.11", reg.host), extra);
    (reg, project)
}

fn seed_base(reg: &Registry, arch: &str, name: &str) -> Value {
    let mut args = vec![
        "copy".to_string(),
        "--quiet".to_string(),
        "--preserve-digests".to_string(),
    ];
    args.extend(reg.skopeo_flags("dest-"));
    args.push(support::base::base_image_ref(arch));
    args.push(format!("docker://{}/{name}", reg.host));
    skopeo_ok(&args);
    let raw = raw_manifest(reg, name).unwrap();
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    json!({
        "mediaType": manifest["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json"),
        "digest": Digest::of_bytes(&raw).to_string(),
        "size": raw.len(),
    })
}

/// `HOST/python:3.11` as an index of the amd64 and arm64 bases, as on Docker Hub
/// (plain registry only: the index goes up anonymously). Returns the index digest.
fn seed_index_base(reg: &Registry) -> String {
    assert_eq!(reg.setup, Setup::Plain);
    let mut manifests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let mut m = seed_base(reg, arch, &format!("python:3.11-{arch}"));
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        m["platform"] = platform;
        manifests.push(m);
    }
    support::push::put_base_index(&reg.host, manifests)
}

/// The stderr line warning that `base` is not pinned by digest, if any.
fn unpinned_base_warning<'a>(stderr: &'a str, base: &str) -> Option<&'a str> {
    stderr.lines().find(|l| {
        let lower = l.to_ascii_lowercase();
        lower.starts_with("warning") && l.contains(base) && lower.contains("digest")
    })
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

/// `podman exec CONTAINER python -c SCRIPT` as the image's user; returns stdout.
fn exec_python(c: &Container, script: &str) -> String {
    podman::podman_ok(&["exec", &c.id, "python", "-c", script])
}

fn get_json(c: &Container, path: &str) -> Value {
    let r = podman::http("GET", &c.url(path), None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\nlogs:\n{}", c.logs()));
    assert_eq!(r.status, 200, "GET {path}: {}\nlogs:\n{}", r.body, c.logs());
    serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.body))
}

/// Removes a pulled image when the test ends, however it ends.
struct PulledImage(String);

impl Drop for PulledImage {
    fn drop(&mut self) {
        podman::remove_image(&self.0);
    }
}

/// The processes in the container: (pid, ppid, state, cmdline with spaces).
fn processes(c: &Container) -> Vec<(u32, u32, String, String)> {
    const LIST: &str = r#"
import os
for p in os.listdir('/proc'):
    if not p.isdigit():
        continue
    try:
        cmd = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\0', b' ').decode().strip()
        status = dict(l.split(':', 1) for l in open(f'/proc/{p}/status').read().splitlines() if ':' in l)
    except OSError:
        continue
    print(p, status['PPid'].strip(), status['State'].strip()[0], cmd, sep='\t')
"#;
    exec_python(c, LIST)
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.to_string(),
                f.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// uvicorn's live workers: the children of its supervisor (PID 1) other than
/// multiprocessing's resource tracker.
fn worker_pids(c: &Container) -> (BTreeSet<u32>, String) {
    let procs = processes(c);
    let listing = procs
        .iter()
        .map(|(p, pp, s, cmd)| format!("{p} ppid={pp} {s} {cmd}"))
        .collect::<Vec<_>>()
        .join("\n");
    let workers = procs
        .iter()
        .filter(|(_, ppid, state, cmd)| {
            *ppid == 1 && state != "Z" && !cmd.is_empty() && !cmd.contains("resource_tracker")
        })
        .map(|(pid, ..)| *pid)
        .collect();
    (workers, listing)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn pushes_hello_api_to_an_authenticated_registry_and_it_serves() {
    let reg = Registry::start(Setup::Htpasswd);
    let base_desc = seed_base(&reg, "amd64", "python:3.11");
    let base = format!("{}/python:3.11", reg.host);
    let project = hello_api(&base, "");
    let ca = reg.ca_file.as_ref().unwrap().display().to_string();
    let tag = format!("{}/hello-api:1", reg.host);

    let run = push_over_tls(
        &project,
        &tag,
        &ca,
        &["--username", USERNAME, "--password-stdin"],
        &["--digest-file", "digest.txt", "--image-refs", "refs.txt"],
        Some(&format!("{PASSWORD}\n")),
    )
    .must_succeed("push");
    let pushed = parse_push(&run, &[&tag], false);
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("{tag}@{}", pushed.digest).as_str())
    );

    // The resolved base digest is shown, with a warning that the tag is not pinned.
    let base_digest = base_desc["digest"].as_str().unwrap();
    assert!(
        run.stderr.contains(base_digest),
        "stderr does not show the resolved base digest {base_digest}:\n{}",
        run.stderr
    );
    assert!(
        unpinned_base_warning(&run.stderr, &base).is_some(),
        "no warning that {base} is not pinned by digest:\n{}",
        run.stderr
    );

    // --digest-file and --image-refs.
    let digest_file = std::fs::read_to_string(project.join("digest.txt")).unwrap();
    assert_eq!(digest_file.trim(), pushed.digest);
    let refs_file = std::fs::read_to_string(project.join("refs.txt")).unwrap();
    assert_eq!(
        refs_file.lines().collect::<Vec<_>>(),
        pushed.refs.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // The registry serves exactly the digest we printed.
    let raw = raw_manifest(&reg, "hello-api:1").unwrap();
    assert_eq!(Digest::of_bytes(&raw).to_string(), pushed.digest);

    // podman pulls it with the same credentials and runs it as the image's own user.
    let id = podman::pull(
        &tag,
        Some((USERNAME, PASSWORD)),
        Tls::CertDir(reg.cert_dir.as_ref().unwrap()),
    );
    let _cleanup = PulledImage(tag.clone());
    let inspected = podman::inspect(&id);
    assert_eq!(inspected["Config"]["User"], "65532:65532", "{inspected:#}");
    assert_eq!(inspected["Digest"], pushed.digest.as_str());

    let c = podman::run_detached(&id, &[], 8000);
    let health = c.wait_ready("/health", Duration::from_secs(60));
    assert_eq!(
        serde_json::from_str::<Value>(&health).unwrap(),
        json!({"status": "ok"})
    );
    assert_eq!(
        get_json(&c, "/items/42?q=x"),
        json!({"item_id": 42, "q": "x"})
    );
    let ids = podman::podman_ok(&["exec", &c.id, "cat", "/proc/1/status"]);
    let uid_line = ids.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    let gid_line = ids.lines().find(|l| l.starts_with("Gid:")).unwrap_or("");
    assert_eq!(
        uid_line.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "65532", "65532", "65532", "65532"],
        "the server does not run as 65532"
    );
    assert_eq!(
        gid_line.split_whitespace().nth(1),
        Some("65532"),
        "{gid_line}"
    );
}

#[test]
fn two_workers_survive_a_worker_kill() {
    let (reg, project) = registry_and_hello_api(Setup::Plain, "workers = 2\n");
    let tag = format!("{}/hello-api:workers", reg.host);
    let run = imgbuild(
        &project,
        &["push", "--tag", &tag, "--cache-dir", &cache_dir()],
        None,
        &[],
    )
    .must_succeed("push");
    parse_push(&run, &[&tag], false);

    let id = podman::pull(&tag, None, Tls::Insecure);
    let _cleanup = PulledImage(tag.clone());
    let c = podman::run_detached(&id, &[], 8000);
    c.wait_ready("/health", Duration::from_secs(60));

    // Both workers up (uvicorn starts them in turn) and the answering pids among them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (before, listing) = loop {
        let (w, listing) = worker_pids(&c);
        if w.len() == 2 || Instant::now() > deadline {
            break (w, listing);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(before.len(), 2, "expected 2 uvicorn workers:\n{listing}");
    let mut answering = BTreeSet::new();
    for _ in 0..10 {
        let pid = get_json(&c, "/pid")["pid"].as_u64().unwrap() as u32;
        answering.insert(pid);
    }
    assert!(
        answering.is_subset(&before),
        "/pid answered {answering:?}, not among the workers:\n{listing}"
    );
    let victim = *answering.iter().next().unwrap();

    // /health is polled without pause while the worker dies and is replaced.
    // A connection the dying worker accepted but had not read yet is closed by
    // uvicorn's graceful shutdown, so the one request in flight at that moment
    // may be reset. A client retries such a GET, as HTTP clients do for
    // idempotent requests; the retry must be answered, and only one may be needed.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let url = c.url("/health");
        std::thread::spawn(move || {
            let (mut ok, mut failures, mut resets) = (0u32, Vec::new(), Vec::new());
            let get = |failures: &mut Vec<String>| match podman::http("GET", &url, None) {
                Ok(r) if r.status == 200 => Ok(true),
                Ok(r) => {
                    failures.push(format!("status {}: {}", r.status, r.body));
                    Ok(false)
                }
                Err(e) => Err(e),
            };
            while !stop.load(Ordering::Relaxed) {
                match get(&mut failures) {
                    Ok(answered) => ok += u32::from(answered),
                    Err(e) if was_reset(&e) => {
                        resets.push(e.to_string());
                        match get(&mut failures) {
                            Ok(answered) => ok += u32::from(answered),
                            Err(e) => failures.push(format!("retry after a reset: {e}")),
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failures, resets)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    exec_python(
        &c,
        &format!("import os, signal; os.kill({victim}, signal.SIGTERM)"),
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let (after, listing) = loop {
        let (w, listing) = worker_pids(&c);
        let replaced = w.len() == 2 && !w.contains(&victim);
        if replaced || Instant::now() > deadline {
            break (w, listing);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Keep polling a moment so requests reach the new worker too.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (ok, failures, resets) = poller.join().unwrap();
    eprintln!(
        "workers {before:?} -> killed {victim} -> {after:?}; /health ok {ok} times, reset {resets:?}"
    );

    assert!(
        !after.contains(&victim),
        "worker {victim} is still alive after SIGTERM:\n{listing}"
    );
    assert_eq!(
        after.len(),
        2,
        "uvicorn did not start a replacement worker within 15 s (before {before:?}):\n{listing}\nlogs:\n{}",
        c.logs()
    );
    assert!(
        after.difference(&before).count() == 1,
        "expected exactly one new worker: before {before:?}, after {after:?}"
    );
    assert!(
        failures.is_empty(),
        "/health failed {} times ({ok} ok) while a worker was replaced: {failures:?}",
        failures.len()
    );
    assert!(
        resets.len() <= 1,
        "/health was reset {} times while one worker was replaced: {resets:?}",
        resets.len()
    );
    assert!(ok > 10, "/health was polled only {ok} times");
    assert!(c.is_running(), "the container stopped:\n{}", c.logs());
}

/// A connection closed by the server before it answered: what a client may retry.
fn was_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

#[test]
fn inner_loop_uploads_only_the_app_layer() {
    let reg = Registry::start(Setup::Plain);
    let base_desc = seed_base(&reg, "amd64", "python:3.11");
    // Pinned by digest this time: no warning about the base.
    let base = format!(
        "{}/python:3.11@{}",
        reg.host,
        base_desc["digest"].as_str().unwrap()
    );
    let project = hello_api(&base, "");
    let tag = format!("{}/hello-api:dev", reg.host);
    let cache = cache_dir();
    let push = |tags: &[&str]| -> (Run, Pushed) {
        // The digest file lands in the source tree, as in CI: a push's own
        // output never makes the next one look changed.
        let mut args = vec![
            "push",
            "--json",
            "--cache-dir",
            &cache,
            "--digest-file",
            "digest.txt",
        ];
        for t in tags {
            args.extend(["--tag", t]);
        }
        let run = imgbuild(&project, &args, None, &[]).must_succeed("push --json");
        let pushed = parse_push(&run, tags, true);
        (run, pushed)
    };

    let (first_run, first) = push(&[&tag]);
    assert!(
        unpinned_base_warning(&first_run.stderr, &format!("{}/python:3.11", reg.host)).is_none(),
        "a base pinned by digest still got the warning:\n{}",
        first_run.stderr
    );

    // The inner loop: a one-line edit to the app.
    let main_py = project.join("hello_api/main.py");
    let mut text = std::fs::read_to_string(&main_py).unwrap();
    text.push_str("\n# edited by the inner-loop test\n");
    std::fs::write(&main_py, text).unwrap();

    let (_, second) = push(&[&tag]);
    let summary = second.summary.as_ref().unwrap();
    let all = layers(summary);
    let uploaded: Vec<_> = all.iter().filter(|(_, o, _)| o == "uploaded").collect();
    assert_eq!(
        uploaded
            .iter()
            .map(|(l, ..)| l.as_str())
            .collect::<Vec<_>>(),
        ["app"],
        "only the app layer should be uploaded: {all:?}"
    );
    assert!(
        all.iter()
            .filter(|(l, ..)| l != "app")
            .all(|(_, o, _)| o == "existed"),
        "every other layer should have existed: {all:?}"
    );
    assert!(
        all.iter().any(|(l, ..)| l == "base") && all.iter().any(|(l, ..)| l == "venv"),
        "labels should include base and venv: {all:?}"
    );
    assert!(
        all.iter()
            .any(|(l, ..)| l.split(' ').next() == Some("fastapi")),
        "a layer should be labelled \"fastapi <version>\": {all:?}"
    );
    let sent = bytes_uploaded(summary);
    assert!(
        sent > 0 && sent <= INNER_LOOP_MAX_BYTES,
        "an app edit uploaded {sent} bytes (at most {INNER_LOOP_MAX_BYTES} expected)"
    );
    assert!(summary["requests"].as_u64().is_some_and(|r| r > 0));
    assert_ne!(
        first.digest, second.digest,
        "the edit did not change the digest"
    );

    // Nothing changed: nothing uploaded, the same digest, now under two tags.
    let stable = format!("{}/hello-api:stable", reg.host);
    let (_, third) = push(&[&tag, &stable]);
    let summary = third.summary.as_ref().unwrap();
    assert_eq!(bytes_uploaded(summary), 0, "{summary:#}");
    assert!(
        layers(summary).iter().all(|(_, o, _)| o == "existed"),
        "{summary:#}"
    );
    assert_eq!(third.digest, second.digest);
    for name in ["hello-api:dev", "hello-api:stable"] {
        let raw = raw_manifest(&reg, name).unwrap();
        assert_eq!(Digest::of_bytes(&raw).to_string(), third.digest, "{name}");
    }
    unchanged_inputs_build_nothing(&reg, &push, &third, &main_py);
    a_failed_build_leaves_no_upload_session_open(
        &reg,
        &project,
        &cache,
        &[&tag, &stable],
        &main_py,
    );
}

/// An edit that does not compile fails the build after the push opened its
/// upload sessions ahead (the inner loop): each is cancelled (DELETE).
fn a_failed_build_leaves_no_upload_session_open(
    reg: &Registry,
    project: &std::path::Path,
    cache: &str,
    tags: &[&str],
    main_py: &std::path::Path,
) {
    let mark = reg.log().lines().count();
    let mut text = std::fs::read_to_string(main_py).unwrap();
    text.push_str("\ndef broken(:\n");
    std::fs::write(main_py, text).unwrap();
    // Not racy: the last push may keep its record, so this one opens sessions.
    std::thread::sleep(Duration::from_millis(300));
    // The last push's command line, so that its record applies.
    let mut args = vec![
        "push",
        "--json",
        "--cache-dir",
        cache,
        "--digest-file",
        "digest.txt",
    ];
    for t in tags {
        args.extend(["--tag", t]);
    }
    let run = imgbuild(project, &args, None, &[]);
    assert!(!run.success, "a syntax error built:\n{}", run.stderr);
    assert!(run.stderr.contains("main.py"), "{}", run.stderr);
    let log = reg.log();
    let completed = |method: &str, status: u16| {
        log.lines()
            .skip(mark)
            .filter(|l| l.contains("response completed"))
            .filter(|l| l.contains(&format!("http.request.method={method}")))
            .filter(|l| l.contains("/blobs/uploads/"))
            .filter(|l| l.contains(&format!("http.response.status={status}")))
            .count()
    };
    let (opened, cancelled) = (completed("POST", 202), completed("DELETE", 204));
    assert!(
        opened > 0,
        "no session was opened ahead of the build:\n{}\n{}",
        run.stderr,
        log.lines()
            .skip(mark)
            .filter(|l| l.contains("response completed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(opened, cancelled, "sessions opened ahead and not cancelled");
}

/// The same push again (issue 26): the inputs are those of the last push
/// and each tag still names its digest, so one HEAD per tag is all it sends.
/// A tag moved elsewhere, or a touched file, makes it push in full again.
fn unchanged_inputs_build_nothing(
    reg: &Registry,
    push: &dyn Fn(&[&str]) -> (Run, Pushed),
    last: &Pushed,
    main_py: &Path,
) {
    let dev = format!("{}/hello-api:dev", reg.host);
    let stable = format!("{}/hello-api:stable", reg.host);
    let (run, again) = push(&[&dev, &stable]);
    let summary = again.summary.as_ref().unwrap();
    assert!(
        run.stderr.contains("unchanged since the last push"),
        "{}",
        run.stderr
    );
    assert_eq!(summary["unchanged"], true, "{summary:#}");
    assert_eq!(summary["requests"], 2, "one HEAD per tag: {summary:#}");
    assert_eq!(again.digest, last.digest);
    assert_eq!(again.refs, last.refs);

    // Somebody else pushed to :dev: the record is not believed.
    let mut args = vec!["copy".to_string(), "--quiet".to_string()];
    args.extend(reg.skopeo_flags("src-"));
    args.extend(reg.skopeo_flags("dest-"));
    args.push(format!("docker://{}/python:3.11", reg.host));
    args.push(format!("docker://{dev}"));
    skopeo_ok(&args);
    let (run, restored) = push(&[&dev, &stable]);
    assert!(!run.stderr.contains("unchanged since"), "{}", run.stderr);
    assert_eq!(restored.digest, last.digest);
    let raw = raw_manifest(reg, "hello-api:dev").unwrap();
    assert_eq!(Digest::of_bytes(&raw).to_string(), last.digest);

    // A file's status changed (its bytes did not): built again, same digest.
    std::thread::sleep(Duration::from_millis(100));
    let text = std::fs::read(main_py).unwrap();
    std::fs::write(main_py, text).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (run, rebuilt) = push(&[&dev, &stable]);
    assert!(!run.stderr.contains("unchanged since"), "{}", run.stderr);
    assert_eq!(rebuilt.digest, last.digest);
}

#[test]
fn multi_platform_index_and_arm64_serves() {
    let reg = Registry::start(Setup::Plain);
    let base_index = seed_index_base(&reg);
    let project = hello_api(&format!("{}/python:3.11", reg.host), "");
    let tag = format!("{}/hello-api:multi", reg.host);
    let run = imgbuild(
        &project,
        &[
            "push",
            "--platform",
            "linux/amd64,linux/arm64",
            "--tag",
            &tag,
            "--insecure-registry",
            &reg.host,
            "--json",
            "--cache-dir",
            &cache_dir(),
        ],
        None,
        &[],
    )
    .must_succeed("push --platform linux/amd64,linux/arm64");
    assert!(
        run.stderr.contains(&base_index),
        "stderr does not show the resolved base index {base_index}:\n{}",
        run.stderr
    );
    let pushed = parse_push(&run, &[&tag], true);
    let summary = pushed.summary.as_ref().unwrap();
    assert_eq!(summary["mediaType"], MEDIA_TYPE_OCI_INDEX);
    let summary_platforms: BTreeSet<&str> = summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            // linux/arm64/v8 is the same platform as linux/arm64 (docs/configuration.md).
            let p = i["platform"].as_str().unwrap();
            p.strip_suffix("/v8").unwrap_or(p)
        })
        .collect();
    assert_eq!(
        summary_platforms,
        BTreeSet::from(["linux/amd64", "linux/arm64"])
    );

    // skopeo reads an OCI index with both platforms, whose digest is the one printed.
    let raw = raw_manifest(&reg, "hello-api:multi").unwrap();
    assert_eq!(Digest::of_bytes(&raw).to_string(), pushed.digest);
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index["mediaType"], MEDIA_TYPE_OCI_INDEX, "{index:#}");
    let archs: BTreeSet<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        archs,
        BTreeSet::from([("linux", "amd64"), ("linux", "arm64")]),
        "{index:#}"
    );

    // The arm64 image runs under qemu-user and serves.
    let reference = format!("docker://{tag}");
    let pulled = podman::podman_ok(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &reference,
    ]);
    let _cleanup = PulledImage(tag.clone());
    let id = pulled.lines().last().unwrap_or("").trim().to_string();
    assert!(!id.is_empty(), "podman pull printed no id");
    assert_eq!(podman::inspect(&id)["Architecture"], "arm64");
    let c = podman::run_detached(&id, &[], 8000);
    c.wait_ready("/health", Duration::from_secs(120));
    assert_eq!(
        get_json(&c, "/items/7?q=arm"),
        json!({"item_id": 7, "q": "arm"})
    );
    assert_eq!(
        exec_python(&c, "import platform; print(platform.machine())").trim(),
        "aarch64"
    );
}

#[test]
fn a_second_repository_mounts_instead_of_uploading() {
    let (reg, project) = registry_and_hello_api(Setup::Token, "");
    let creds = [
        ("IMGBUILD_USERNAME", USERNAME),
        ("IMGBUILD_PASSWORD", PASSWORD),
    ];
    let cache = cache_dir();
    let push = |tag: &str| -> Pushed {
        let run = imgbuild(
            &project,
            &["push", "--json", "--tag", tag, "--cache-dir", &cache],
            None,
            &creds,
        )
        .must_succeed("push to a token-auth registry");
        parse_push(&run, &[tag], true)
    };

    let a = push(&format!("{}/a:1", reg.host));
    let a_layers = layers(a.summary.as_ref().unwrap());
    let base_outcomes: Vec<&str> = a_layers
        .iter()
        .filter(|(l, ..)| l == "base")
        .map(|(_, o, _)| o.as_str())
        .collect();
    assert!(!base_outcomes.is_empty(), "no base layers: {a_layers:?}");
    assert!(
        base_outcomes
            .iter()
            .all(|o| *o == "mounted" || *o == "existed"),
        "the base's layers were uploaded although the registry has them: {a_layers:?}"
    );

    let b = push(&format!("{}/b:1", reg.host));
    let summary = b.summary.as_ref().unwrap();
    let b_layers = layers(summary);
    assert!(
        b_layers
            .iter()
            .filter(|(l, ..)| l == "base")
            .all(|(_, o, _)| o == "mounted" || o == "existed"),
        "{b_layers:?}"
    );
    // Mounted layers cost no bytes: only the layers marked "uploaded" (and the small
    // config blob) count, so the base's megabytes are not among them.
    let sent = bytes_uploaded(summary);
    let uploaded: u64 = b_layers
        .iter()
        .filter(|(_, o, _)| o == "uploaded")
        .map(|(.., size)| size)
        .sum();
    let base: u64 = b_layers
        .iter()
        .filter(|(l, ..)| l == "base")
        .map(|(.., size)| size)
        .sum();
    assert!(
        sent >= uploaded && sent <= uploaded + INNER_LOOP_MAX_BYTES,
        "bytes_uploaded {sent} does not match the uploaded layers ({uploaded} bytes): {b_layers:?}"
    );
    assert!(
        sent < base,
        "the second repository cost {sent} bytes, not less than the {base}-byte base: {b_layers:?}"
    );
    assert_eq!(a.digest, b.digest, "the same build gave two digests");
    let raw = raw_manifest(&reg, "b:1").unwrap();
    assert_eq!(Digest::of_bytes(&raw).to_string(), b.digest);
}

#[test]
fn failures_are_one_line_name_the_culprit_and_push_nothing() {
    let reg = Registry::start(Setup::Htpasswd);
    seed_base(&reg, "amd64", "python:3.11");
    let ca = reg.ca_file.as_ref().unwrap().display().to_string();
    let push = |project: &Path, tag: &str, password: &str| -> Run {
        push_over_tls(
            project,
            tag,
            &ca,
            &["--username", USERNAME, "--password-stdin"],
            &[],
            Some(&format!("{password}\n")),
        )
    };

    // A push with a wrong password fails, and its error names the registry.
    let push_refused = |project: &Path, tag: &str| -> Run {
        let run = push(project, tag, WRONG_PASSWORD);
        let line = run.error_line();
        eprintln!("{line}");
        assert!(
            line.contains(&reg.host),
            "does not name the registry: {line}"
        );
        run
    };

    // A wrong password: named registry, nothing pushed.
    let project = hello_api(&format!("{}/python:3.11", reg.host), "");
    let tag = format!("{}/hello-api:1", reg.host);
    let run = push_refused(&project, &tag);
    assert!(
        !run.stdout.contains("@sha256:"),
        "a failed push printed a reference:\n{}",
        run.stdout
    );
    let absent = raw_manifest(&reg, "hello-api:1");
    assert!(absent.is_err(), "hello-api:1 exists after a failed push");

    // The same with a local base: the build succeeds and the push itself is refused.
    let project = hello_api(&support::base::base_image_ref("amd64"), "");
    let tag = format!("{}/hello-api:local-base", reg.host);
    push_refused(&project, &tag);
    assert!(raw_manifest(&reg, "hello-api:local-base").is_err());

    // A base that is not on the registry: the reference is named, nothing pushed.
    let missing = format!("{}/nope:1", reg.host);
    let project = hello_api(&missing, "");
    let tag = format!("{}/hello-api:2", reg.host);
    let run = push(&project, &tag, PASSWORD);
    let line = run.error_line();
    eprintln!("{line}");
    assert!(
        line.contains(&missing),
        "does not name the base {missing}: {line}"
    );
    assert!(raw_manifest(&reg, "hello-api:2").is_err());
}

#[test]
fn login_saves_credentials_that_a_later_push_uses() {
    let reg = Registry::start(Setup::Htpasswd);
    let ca = reg.ca_file.as_ref().unwrap().display().to_string();
    let base = format!(
        "oci:{}:latest",
        support::base::base_image("amd64").display()
    );
    let project = hello_api(&base, "");
    let config = project.join(".no-credentials/config.json");

    let login = |password: &str| {
        imgbuild(
            &project,
            &[
                "login",
                &reg.host,
                "-u",
                USERNAME,
                "--password-stdin",
                "--ca-file",
                &ca,
            ],
            Some(&format!("{password}\n")),
            &[],
        )
    };

    // A wrong password is refused at login, and nothing is saved.
    let run = login(WRONG_PASSWORD);
    assert!(!run.success, "login with a wrong password succeeded");
    assert!(run.stderr.contains(&reg.host), "{}", run.stderr);
    assert!(!config.exists(), "credentials saved despite a failed login");

    let run = login(PASSWORD);
    assert!(run.success, "login failed: {}", run.stderr);
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(saved["auths"][&reg.host]["auth"].is_string(), "{saved:#}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "config.json must be private");

    // The push names no credentials: it finds the saved ones.
    let tag = format!("{}/login-test:1", reg.host);
    let run = push_over_tls(&project, &tag, &ca, &[], &[], None);
    assert!(
        run.success,
        "push with saved credentials failed: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with(&format!("{tag}@sha256:")),
        "{}",
        run.stdout
    );
}
