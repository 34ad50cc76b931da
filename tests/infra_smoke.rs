//! The test infrastructure works on this machine: the Debian base images build and run
//! Python 3.11 under podman (arm64 through qemu-user), containers publish ports that
//! the HTTP helper reaches, and uv locks the fixture projects.

mod support;

use std::time::Duration;
use support::base::{base_image, base_image_ref};
use support::podman::{self, run_detached, run_to_completion, run_to_completion_with};
use support::uv::{uv_export_pylock, uv_export_requirements, uv_lock};

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = support::run_ok(std::process::Command::new("skopeo").args(["inspect", reference]));
    serde_json::from_slice(&out.stdout).expect("skopeo inspect prints JSON")
}

#[test]
fn amd64_base_image_is_a_valid_oci_layout_with_python_3_11() {
    let layout = base_image("amd64");
    assert!(layout.join("oci-layout").is_file());

    let inspected = skopeo_inspect(&format!("oci:{}:latest", layout.display()));
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
    let env: Vec<&str> = inspected["Env"]
        .as_array()
        .expect("Env is a list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"LANG=C.UTF-8"), "Env: {env:?}");
    assert!(
        env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin:")),
        "Env: {env:?}"
    );

    let run = run_to_completion(&base_image_ref("amd64"), &["python3", "--version"]);
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert!(
        run.stdout.starts_with("Python 3.11."),
        "stdout: {:?}",
        run.stdout
    );
}

#[test]
fn arm64_base_image_runs_under_qemu_user() {
    let reference = base_image_ref("arm64");
    let inspected = skopeo_inspect(&reference);
    assert_eq!(inspected["Architecture"], "arm64");

    let uname =
        run_to_completion_with(&["--platform", "linux/arm64"], &reference, &["uname", "-m"]);
    assert_eq!(uname.status, 0, "stderr: {}", uname.stderr);
    assert_eq!(uname.stdout.trim(), "aarch64");

    let python = podman::python_output(
        &["--platform", "linux/arm64"],
        &reference,
        "python3",
        "import platform, sys; print(platform.machine(), sys.version_info[:2])",
    );
    assert_eq!(python, "aarch64 (3, 11)");
}

#[test]
fn detached_container_publishes_its_port_to_the_http_helper() {
    let container = run_detached(
        &base_image_ref("amd64"),
        &[
            "python3",
            "-m",
            "http.server",
            "--directory",
            "/etc",
            "8000",
        ],
        8000,
    );
    let listing = container.wait_ready("/", Duration::from_secs(60));
    assert!(listing.contains("os-release"), "listing of /etc: {listing}");

    let missing =
        podman::http("GET", &container.url("/no-such-file"), None).expect("server answers");
    assert_eq!(missing.status, 404);

    let id = container.id.clone();
    drop(container);
    let after = podman::podman()
        .args(["container", "exists", &id])
        .status()
        .expect("cannot run podman");
    assert!(!after.success(), "container {id} still exists after drop");
}

#[test]
fn uv_locks_and_exports_the_hello_api_fixture() {
    let dir = uv_lock(&support::fixture("hello-api"));
    let lock = std::fs::read_to_string(dir.join("uv.lock")).expect("uv.lock");
    for package in ["fastapi", "uvicorn", "uvloop", "httptools", "pydantic-core"] {
        assert!(
            lock.contains(&format!("name = \"{package}\"")),
            "uv.lock lacks {package}"
        );
    }

    let requirements = std::fs::read_to_string(uv_export_requirements(&dir)).expect("requirements");
    assert!(requirements.contains("fastapi=="), "{requirements}");
    assert!(requirements.contains("--hash=sha256:"), "{requirements}");

    let pylock = std::fs::read_to_string(uv_export_pylock(&dir)).expect("pylock.toml");
    let parsed: toml::Value = toml::from_str(&pylock).expect("pylock.toml is TOML");
    assert_eq!(parsed["lock-version"].as_str(), Some("1.0"));
    assert!(parsed["packages"].as_array().is_some_and(|p| p.len() > 10));
}

#[test]
fn other_api_shares_fastapi_but_not_the_server_with_hello_api() {
    let names = |dir: &std::path::Path| -> Vec<String> {
        let lock: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("uv.lock")).unwrap()).unwrap();
        lock["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let hello = names(&uv_lock(&support::fixture("hello-api")));
    let other = names(&uv_lock(&support::fixture("other-api")));
    for shared in ["fastapi", "pydantic", "starlette"] {
        assert!(hello.iter().any(|n| n == shared) && other.iter().any(|n| n == shared));
    }
    assert!(
        !other.iter().any(|n| n == "uvicorn"),
        "other-api: {other:?}"
    );
}

#[test]
fn load_returns_the_id_of_the_image_in_a_docker_or_oci_archive() {
    let layout = base_image_ref("amd64");
    let dir = tempfile::tempdir().expect("temp dir");
    let docker = dir.path().join("base-docker.tar");
    let oci = dir.path().join("base-oci.tar");
    for (target, archive) in [
        (
            format!(
                "docker-archive:{}:imgbuild-test/load-docker:latest",
                docker.display()
            ),
            &docker,
        ),
        (format!("oci-archive:{}:latest", oci.display()), &oci),
    ] {
        support::run_ok(
            std::process::Command::new("skopeo").args(["copy", "--quiet", &layout, &target]),
        );

        let id = podman::load(archive);
        assert_eq!(id.len(), 64, "image id {id:?}");
        let run = run_to_completion(&id, &["python3", "-c", "print(6 * 7)"]);
        assert_eq!((run.status, run.stdout.trim()), (0, "42"), "{}", run.stderr);
        assert_eq!(podman::inspect(&id)["Architecture"], "amd64");
    }
}

#[test]
fn pull_fetches_from_a_plain_http_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = podman::free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write registry config");
    let mut registry = std::process::Command::new("docker-registry")
        .args(["serve", &config.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cannot start docker-registry; run scripts/setup.sh");
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = KillOnDrop(&mut registry);
    support::podman::wait_http(
        &format!("http://127.0.0.1:{port}/v2/"),
        Duration::from_secs(20),
    )
    .expect("registry never answered /v2/");

    let reference = format!("127.0.0.1:{port}/imgbuild-test/base:latest");
    let pushed = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(base_image_ref("amd64"))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("cannot run skopeo");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let id = podman::pull(&reference, None, podman::Tls::Insecure);
    let run = run_to_completion(&id, &["python3", "--version"]);
    assert!(run.stdout.starts_with("Python 3.11."), "{run:?}");
}
