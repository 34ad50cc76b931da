//! `imgbuild manifests` and `imgbuild resolve` end to end, on fixtures/orders-api: a
//! FastAPI service whose init step (`python -m orders_api.migrate`) creates the SQLite
//! schema the app needs, on the pod's /tmp emptyDir.
//!
//! - every generated object passes `kubernetes-validate --strict`;
//! - the resolved Deployment runs under `podman kube play`: the init step runs before the
//!   app, the app is not root and cannot write to /, a SIGKILLed app is restarted and
//!   serves again, `podman kube down` removes it all;
//! - containerd (the runtime of Kubernetes nodes) pulls the pushed image by digest with
//!   `ctr` and runs it, on amd64 and on arm64 under qemu;
//! - bad input is one line naming the file and the document, with nothing on stdout.

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::containerd::Containerd;
use support::podman::{self, free_port, http, wait_http};
use support::registry::{Registry, Setup};
use support::Run;

impl Run {
    /// The one `error: …` line a failure prints, with nothing on stdout.
    fn one_error_line(&self) -> String {
        assert!(
            !self.success,
            "succeeded where it should fail:\n{}",
            self.stdout
        );
        assert_eq!(self.stdout, "", "a failure printed YAML:\n{}", self.stdout);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "want one error line:\n{}", self.stderr);
        errors[0].to_string()
    }
}

/// imgbuild in `cwd`, with no credentials from the machine and `stdin` piped in.
fn imgbuild(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = support::without_credentials(cwd, args);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run imgbuild");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    Run::from(child.wait_with_output().unwrap())
}

/// The wheel and layer cache shared by the tests of this file.
fn cache_dir() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("deploy-e2e-cache")
        .display()
        .to_string()
}

/// A locked copy of fixtures/orders-api with an imgbuild.toml: `base`, the init step,
/// the health path, `image`, and `extra`.
fn orders_api(base: &str, image: &str, extra: &str) -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture("orders-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"{base}\"\napp = \"orders_api.main:app\"\nimage = \"{image}\"\n\
             init = [\"python\", \"-m\", \"orders_api.migrate\"]\nhealth = \"/health\"\n{extra}"
        ),
    )
    .unwrap();
    project
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    Command::new("kubernetes-validate")
        .arg("--strict")
        .args(files)
        .output()
        .expect("cannot run kubernetes-validate; run scripts/setup.sh --deps-only")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    f.sort();
    f
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{}", std::process::id(), n % 100_000)
}

#[test]
fn every_generated_object_passes_kubernetes_validate_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let source = support::fixture("orders-api");
    let variants = [
        ("minimal", String::new()),
        (
            "full",
            "image = \"ghcr.io/acme/orders\"\ninit = [\"python\", \"-m\", \"orders_api.migrate\"]\n\
             health = \"/health\"\n[deploy]\nname = \"orders\"\nreplicas = 2\npull-secret = \"regcred\"\n\
             service-port = 8080\nworkers = 2\nautoscale = { min = 2, max = 6, cpu = 70 }\n\
             resources = { requests = { cpu = \"100m\", memory = \"96Mi\" }, limits = { cpu = \"2\", memory = \"1Gi\" } }\n"
                .to_string(),
        ),
        (
            "custom-command-no-hpa",
            "cmd = [\"python\", \"-m\", \"orders_api\"]\n[deploy]\nautoscale = false\nreplicas = 3\n"
                .to_string(),
        ),
        (
            "https-ingress",
            "health = \"/health\"\n[deploy]\nhost = \"api.example.com\"\ntls-issuer = \"letsencrypt\"\n\
             tls = { cert = \"tls.crt\", key = \"tls.key\" }\n"
                .to_string(),
        ),
    ];
    let mut checked = 0;
    for (name, extra) in &variants {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("imgbuild.toml"),
            format!(
                "base = \"python:3.11-slim\"\napp = \"orders_api.main:app\"\nsource = \"{}\"\n{extra}",
                source.display()
            ),
        )
        .unwrap();
        imgbuild(&dir, &["manifests", "-o", "k8s"], None).must_succeed("manifests -o k8s");
        let files = yaml_files(&dir.join("k8s"));
        let want = match *name {
            "custom-command-no-hpa" => 2,
            "https-ingress" => 4,
            _ => 3,
        };
        assert_eq!(files.len(), want, "{name}: {files:?}");
        let out = kubernetes_validate(&files);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name}: kubernetes-validate --strict:\n{text}"
        );
        assert_eq!(text.matches(" passed ").count(), want, "{name}:\n{text}");
        checked += want;

        // `-o -` is the same objects as one stream, in the files' order.
        let stream = imgbuild(&dir, &["manifests"], None).must_succeed("manifests");
        let joined: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(stream.stdout, joined.join("---\n"), "{name}");
    }
    assert_eq!(checked, 12);
    let ingress =
        std::fs::read_to_string(tmp.path().join("https-ingress/k8s/ingress.yaml")).unwrap();
    assert!(
        ingress.contains("cert-manager.io/cluster-issuer: letsencrypt\n"),
        "{ingress}"
    );

    // The check itself fails on an unknown field, so the passes above mean something.
    let full = tmp.path().join("full/k8s/deployment.yaml");
    let tampered = tmp.path().join("tampered.yaml");
    let text = std::fs::read_to_string(&full).unwrap().replace(
        "      automountServiceAccountToken: false\n",
        "      automountServiceAccountToken: false\n      autoMountToken: false\n",
    );
    std::fs::write(&tampered, text).unwrap();
    assert!(
        !kubernetes_validate(&[tampered]).status.success(),
        "kubernetes-validate --strict accepted an unknown field"
    );
}

/// A played pod: `podman kube down` when dropped, and the pulled image removed.
struct Played {
    yaml: PathBuf,
    image: String,
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = podman::podman()
            .arg("kube")
            .arg("down")
            .arg(&self.yaml)
            .output();
        let _ = podman::podman().args(["rmi", "-f", &self.image]).output();
    }
}

/// The generated Deployment as `podman kube play` runs it here: published on
/// 127.0.0.1:`port`, with restartPolicy OnFailure (podman 4.3 gives init
/// containers the pod's policy: see the first test that plays one).
fn kube_playable(deployment: &str, port: u16) -> String {
    podman::with_host_port(deployment, port).replacen(
        "      automountServiceAccountToken: false\n",
        "      automountServiceAccountToken: false\n      restartPolicy: OnFailure\n",
        1,
    )
}

fn rfc3339_seconds(s: &str) -> f64 {
    // podman prints "2026-12-02T17:43:10.644265879Z" in JSON.
    let out = Command::new("date")
        .args(["-u", "-d", s, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn resolved_deployment_runs_under_podman_kube_play() {
    let reg = Registry::start(Setup::Plain);
    let base = support::base::base_image_ref("amd64");
    let name = unique("orders");
    let project = orders_api(
        &base,
        &format!("{}/orders-api", reg.host),
        &format!("[deploy]\nname = \"{name}\"\n"),
    );
    imgbuild(&project, &["manifests", "-o", "k8s"], None).must_succeed("manifests -o k8s");
    let flags = [
        "--insecure-registry",
        &reg.host,
        "--cache-dir",
        &cache_dir(),
    ];

    // resolve -f DIR: the files' documents, each imgbuild://. replaced, nothing else changed.
    let resolved = imgbuild(
        &project,
        &[&["resolve", "-f", "k8s"][..], &flags].concat(),
        None,
    )
    .must_succeed("resolve -f k8s");
    let files: Vec<String> = yaml_files(&project.join("k8s"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let original = files.join("---\n");
    let pinned_prefix = format!("\"{}/orders-api@sha256:", reg.host);
    let (mut same, mut replaced) = (0, 0);
    for (a, b) in original.lines().zip(resolved.stdout.lines()) {
        if a.trim_start().starts_with("image: imgbuild://.") {
            let value = b.trim_start().strip_prefix("image: ").unwrap_or(b);
            assert!(value.starts_with(&pinned_prefix), "{b}");
            assert_eq!(value.len(), pinned_prefix.len() + 64 + 1, "{b}");
            replaced += 1;
        } else {
            assert_eq!(a, b, "resolve changed a line that holds no reference");
            same += 1;
        }
    }
    assert_eq!(original.lines().count(), resolved.stdout.lines().count());
    assert_eq!(replaced, 2, "init and app image");
    assert!(same > 100);
    assert!(
        resolved.stderr.contains("imgbuild://. -> "),
        "logs go to stderr:\n{}",
        resolved.stderr
    );
    // The one-liner gives the same YAML (and builds nothing new).
    let manifests = imgbuild(&project, &["manifests", "-o", "-"], None).must_succeed("manifests");
    let piped = imgbuild(
        &project,
        &[&["resolve", "-f", "-"][..], &flags].concat(),
        Some(&manifests.stdout),
    )
    .must_succeed("resolve -f -");
    assert_eq!(piped.stdout, resolved.stdout);

    // The test copy of the Deployment: the port published on 127.0.0.1 (kube play has no
    // --publish) and, for podman 4.3 only, restartPolicy OnFailure: that podman gives
    // init containers the pod's policy, so with Always it reruns a finished init step
    // forever (podman#16343, fixed by podman#18481). Kubernetes requires Always for a
    // Deployment, which is what we generate. A SIGKILLed app exits 137, a failure.
    let deployment = resolved.stdout.split("\n---\n").next().unwrap();
    let port = free_port();
    let play_yaml = project.join("play.yaml");
    let play = kube_playable(deployment, port);
    assert!(play.contains("hostPort") && play.contains("restartPolicy"));
    std::fs::write(&play_yaml, &play).unwrap();
    let image = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let _played = Played {
        yaml: play_yaml.clone(),
        image: image.clone(),
    };
    podman::podman_ok(&[
        "kube",
        "play",
        "--tls-verify=false",
        play_yaml.to_str().unwrap(),
    ]);
    let pod = format!("{name}-pod-0");
    let app = format!("{pod}-app");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    wait_http(&url("/health"), Duration::from_secs(60)).unwrap();

    // The init step ran, as the app's user, before the app started, and the app uses
    // the schema it made on the shared /tmp.
    let started = rfc3339_seconds(
        podman::inspect_container(&app)["State"]["StartedAt"]
            .as_str()
            .unwrap(),
    );
    let migrations: Value =
        serde_json::from_str(&wait_http(&url("/migrations"), Duration::from_secs(10)).unwrap())
            .unwrap();
    assert_eq!(migrations.as_array().map(Vec::len), Some(1), "{migrations}");
    assert_eq!(migrations[0]["uid"], 65532);
    let applied = migrations[0]["applied_at"].as_f64().unwrap();
    assert!(
        applied < started,
        "init at {applied}, app started at {started}"
    );
    let order = http(
        "POST",
        &url("/orders"),
        Some(("application/json", br#"{"item": "tea", "quantity": 2}"#)),
    )
    .unwrap();
    assert_eq!(order.status, 200, "{}", order.body);
    let order: Value = serde_json::from_str(&order.body).unwrap();
    assert_eq!(order["item"], "tea");

    // Not root, and / is read-only.
    let uid = podman::podman_ok(&["exec", &app, "id", "-u"]);
    assert_ne!(uid.trim(), "0");
    assert_eq!(uid.trim(), "65532");
    let write = podman::podman()
        .args(["exec", &app, "sh", "-c", "echo x > /probe"])
        .output()
        .unwrap();
    assert!(!write.status.success(), "writing to / succeeded");
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );

    // kill -9 of the app's main process on the host: restarted, serving, data kept in /tmp.
    podman::kill_and_wait_restart(&app);
    let again = wait_http(
        &url(&format!("/orders/{}", order["id"])),
        Duration::from_secs(60),
    )
    .expect("serves again after the restart");
    assert!(again.contains("\"tea\""), "{again}");

    // kube down removes the pod and its containers.
    podman::podman_ok(&["kube", "down", play_yaml.to_str().unwrap()]);
    let exists = podman::podman()
        .args(["pod", "exists", &pod])
        .status()
        .unwrap();
    assert!(!exists.success(), "pod {pod} still exists after kube down");
    let left = podman::podman_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={pod}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left.trim(), "", "containers left after kube down");
}

#[test]
fn tls_serving_pod_plays_under_kube_play_and_answers_https_with_the_test_ca() {
    let reg = Registry::start(Setup::Plain);
    let base = support::base::base_image_ref("amd64");
    let name = unique("orders");
    let project = orders_api(
        &base,
        &format!("{}/orders-api", reg.host),
        &format!(
            "[deploy]\nname = \"{name}\"\nautoscale = false\nhost = \"api.example.com\"\n\
             tls = {{ cert = \"secret/tls.crt\", key = \"secret/tls.key\" }}\n"
        ),
    );
    // What `kubectl create secret tls NAME-tls --cert=… --key=…` would hold: tls.crt and
    // tls.key, from a test CA, readable by the pod's user.
    let secret = project.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    support::registry::make_tls(&secret);
    std::fs::rename(secret.join("server.crt"), secret.join("tls.crt")).unwrap();
    std::fs::rename(secret.join("server.key"), secret.join("tls.key")).unwrap();
    std::os::unix::fs::chown(secret.join("tls.key"), Some(65532), Some(65532)).unwrap();

    imgbuild(&project, &["manifests", "-o", "k8s"], None).must_succeed("manifests -o k8s");
    let files = yaml_files(&project.join("k8s"));
    assert_eq!(files.len(), 3, "deployment, ingress, service: {files:?}");
    let out = kubernetes_validate(&files);
    assert!(out.status.success(), "{out:?}");
    let resolved = imgbuild(
        &project,
        &[
            "resolve",
            "-f",
            "k8s",
            "--insecure-registry",
            &reg.host,
            "--cache-dir",
            &cache_dir(),
        ],
        None,
    )
    .must_succeed("resolve -f k8s");
    let deployment = resolved.stdout.split("\n---\n").next().unwrap();
    assert_eq!(
        deployment.matches("scheme: HTTPS").count(),
        2,
        "both probes"
    );

    // The played copy: hostPort as before, restartPolicy for podman 4.3's init
    // containers (see resolved_deployment_runs_under_podman_kube_play), and the Secret
    // volume as a hostPath of the same files: podman 4.3 panics on secret volumes in
    // kube play (a nil dereference in VolumeFromSecret), and Kubernetes mounts a TLS
    // Secret as exactly these two files.
    let port = free_port();
    // (The document's last line: split off the stream without its newline.)
    let secret_volume = format!("          secret:\n            secretName: {name}-tls");
    assert!(deployment.contains(&secret_volume), "{deployment}");
    let play = kube_playable(deployment, port).replacen(
        &secret_volume,
        &format!(
            "          hostPath:\n            path: {}\n            type: Directory",
            secret.display()
        ),
        1,
    );
    let play_yaml = project.join("play.yaml");
    std::fs::write(&play_yaml, &play).unwrap();
    let image = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let _played = Played {
        yaml: play_yaml.clone(),
        image,
    };
    podman::podman_ok(&[
        "kube",
        "play",
        "--tls-verify=false",
        play_yaml.to_str().unwrap(),
    ]);
    let ca = secret.join("ca.crt");
    let url = |p: &str| format!("https://localhost:{port}{p}");
    let health = support::https::wait(&url("/health"), &ca, Duration::from_secs(60)).unwrap();
    assert_eq!(health, r#"{"status":"ok"}"#);
    let migrations = support::https::get(&url("/migrations"), &ca).unwrap();
    assert!(migrations.contains("\"uid\":65532"), "{migrations}");
    assert!(
        wait_http(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(1)
        )
        .is_err(),
        "the pod serves HTTPS only"
    );
}

/// `HOST/python:3.11`, an index of the amd64 and arm64 Debian bases, as on Docker Hub.
fn seed_index_base(reg: &Registry) -> String {
    let mut manifests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let name = format!("python:3.11-{arch}");
        support::run_ok(
            Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--preserve-digests",
                    "--dest-tls-verify=false",
                ])
                .arg(support::base::base_image_ref(arch))
                .arg(format!("docker://{}/{name}", reg.host)),
        );
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{name}", reg.host))
            .output()
            .unwrap()
            .stdout;
        let manifest: Value = serde_json::from_slice(&raw).unwrap();
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        manifests.push(json!({
            "mediaType": manifest["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json"),
            "digest": imgbuild::digest::Digest::of_bytes(&raw).to_string(),
            "size": raw.len(),
            "platform": platform,
        }));
    }
    support::push::put_base_index(&reg.host, manifests);
    format!("{}/python:3.11", reg.host)
}

#[test]
fn containerd_pulls_the_resolved_digest_and_runs_it_on_amd64_and_arm64() {
    let reg = Registry::start(Setup::Plain);
    let base = seed_index_base(&reg);
    let project = orders_api(&base, &format!("{}/orders-api", reg.host), "");
    let run = imgbuild(
        &project,
        &[
            "resolve",
            "-f",
            "-",
            "--platform",
            "linux/amd64,linux/arm64",
            "--tag",
            "multi",
            "--insecure-registry",
            &reg.host,
            "--cache-dir",
            &cache_dir(),
        ],
        Some("# a pod spec fragment\nimage: imgbuild://.\n"),
    )
    .must_succeed("resolve --platform linux/amd64,linux/arm64");
    let reference = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("image: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(run.stdout.starts_with("# a pod spec fragment\n"));
    assert!(
        reference.starts_with(&format!("{}/orders-api@sha256:", reg.host)),
        "{reference}"
    );

    let ctrd = Containerd::start();
    for arch in ["amd64", "arm64"] {
        let platform = format!("linux/{arch}");
        ctrd.ctr_ok(&[
            "images",
            "pull",
            "--plain-http",
            "--platform",
            &platform,
            &reference,
        ]);
        let port = free_port().to_string();
        let id = format!("orders-{arch}");
        ctrd.ctr_ok(&[
            "run",
            "-d",
            "--net-host",
            "--platform",
            &platform,
            "--env",
            "ORDERS_DB=/tmp/orders.db",
            &reference,
            &id,
            "/app/.venv/bin/uvicorn",
            "orders_api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ]);
        let health = wait_http(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(180),
        )
        .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(health, r#"{"status":"ok"}"#);
        let machine = ctrd.ctr_ok(&["task", "exec", "--exec-id", "m", &id, "uname", "-m"]);
        let want = if arch == "amd64" { "x86_64" } else { "aarch64" };
        assert_eq!(machine.trim(), want);
        ctrd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    }
}

#[test]
fn bad_input_is_one_line_naming_file_and_document_and_prints_nothing() {
    let base = support::base::base_image_ref("amd64");
    // The registry is never reached: every case fails before pushing.
    let project = orders_api(&base, "127.0.0.1:9/orders-api", "");
    let cache = cache_dir();
    let resolve = |yaml: &str, file: &str| {
        std::fs::write(project.join(file), yaml).unwrap();
        imgbuild(
            &project,
            &["resolve", "-f", file, "--cache-dir", &cache],
            None,
        )
    };
    let good = "kind: A\nimage: imgbuild://.\n---\n";

    // imgbuild:// naming a directory with no spec.
    std::fs::create_dir_all(project.join("empty")).unwrap();
    let line = resolve(
        &format!("{good}kind: B\nimage: imgbuild://empty\n"),
        "nospec.yaml",
    )
    .one_error_line();
    assert!(
        line.contains("nospec.yaml: document 2: imgbuild://empty"),
        "{line}"
    );
    assert!(
        line.contains("no imgbuild.toml or pyproject.toml in empty"),
        "{line}"
    );

    // A spec without `image`.
    let other = project.join("noimage");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("imgbuild.toml"),
        format!("base = \"{base}\"\napp = \"main:app\"\n"),
    )
    .unwrap();
    let line = resolve(
        &format!("{good}image: imgbuild://noimage\n"),
        "noimage.yaml",
    )
    .one_error_line();
    assert!(
        line.contains("noimage.yaml: document 2: imgbuild://noimage"),
        "{line}"
    );
    assert!(line.contains("has no `image`"), "{line}");

    // YAML that does not parse, after a good document.
    let line = resolve(&format!("{good}a: [unclosed\n"), "broken.yaml").one_error_line();
    assert!(
        line.contains("broken.yaml: document 2: invalid YAML at line"),
        "{line}"
    );

    // An init step naming a program the image does not have: found after the build,
    // before anything is pushed.
    let spec = std::fs::read_to_string(project.join("imgbuild.toml")).unwrap();
    std::fs::write(
        project.join("imgbuild.toml"),
        spec.replace(
            "init = [\"python\", \"-m\", \"orders_api.migrate\"]",
            "init = [\"orders-migrate\"]",
        ),
    )
    .unwrap();
    let line = resolve(good, "noinit.yaml").one_error_line();
    assert!(
        line.contains("noinit.yaml: document 1: imgbuild://."),
        "{line}"
    );
    assert!(
        line.contains("init program \"orders-migrate\" is not in the linux/amd64 image"),
        "{line}"
    );
    assert!(line.contains("/app/.venv/bin/orders-migrate"), "{line}");
}
