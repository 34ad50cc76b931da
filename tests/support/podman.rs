//! podman as the independent judge of the images imgbuild writes.
//!
//! On these machines podman works only with the runc runtime and explicit ulimits: the
//! sandbox refuses the limits podman asks for by default (nofile 1048576), and runc is the
//! runtime scripts/setup.sh installs. So every call goes through [`podman`] and every
//! container gets [`RUN_ARGS`], whether or not setup.sh's containers.conf is in place.
//!
//! Images given as `oci:DIR`, `oci-archive:` or `docker-archive:` references are copied
//! into podman's storage by [`import`] first: podman itself cannot run an `oci:` path
//! with a dot-directory in it (`~/.cache`, `/tmp/.tmpXXXX`).

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Arguments every `podman run` gets.
pub const RUN_ARGS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// A `podman` command with the runtime that works here.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// Runs `podman ARGS`, panicking with its output unless it succeeds; returns stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman()
        .args(args)
        .output()
        .expect("cannot run podman; run scripts/setup.sh");
    super::stdout_ok(&out, &format!("podman {}", args.join(" ")))
}

/// `podman load` of a docker-archive or oci-archive; returns the loaded image's id.
pub fn load(archive: &Path) -> String {
    let stdout = podman_ok(&["load", "-q", "-i", &archive.to_string_lossy()]);
    // "Loaded image: NAME" or "Loaded image(s): NAME,NAME"; an archive without a name
    // loads as "Loaded image: sha256:ID".
    let name = stdout
        .lines()
        .find_map(|l| l.split_once(": ").map(|(_, names)| names.trim()))
        .and_then(|names| names.split(',').next())
        .unwrap_or_else(|| panic!("podman load printed no image name: {stdout:?}"))
        .to_string();
    image_id(&name)
}

/// The full id of a local image (name, id, or `oci:`/`oci-archive:` reference podman
/// has already stored).
pub fn image_id(image: &str) -> String {
    podman_ok(&["image", "inspect", "--format", "{{.Id}}", image])
        .trim()
        .to_string()
}

/// `podman image inspect` as JSON (the first, only, element).
pub fn inspect(image: &str) -> serde_json::Value {
    let stdout = podman_ok(&["image", "inspect", image]);
    let mut all: Vec<serde_json::Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("podman image inspect {image}: bad JSON ({e}): {stdout}"));
    assert_eq!(
        all.len(),
        1,
        "podman image inspect {image} gave {}",
        all.len()
    );
    all.remove(0)
}

/// Removes a local image, ignoring failure (it may be in use or already gone).
pub fn remove_image(image: &str) {
    let _ = podman().args(["rmi", "-f", image]).output();
}

/// How `pull` checks the registry's TLS.
pub enum Tls<'a> {
    /// Plain HTTP or a certificate podman cannot verify.
    Insecure,
    /// Trust the CA certificate(s) in this directory (`*.crt`).
    CertDir(&'a Path),
}

/// `podman pull` from a registry (`HOST:PORT/REPO:TAG`, no scheme); returns the image id.
pub fn pull(reference: &str, creds: Option<(&str, &str)>, tls: Tls) -> String {
    let mut args = vec!["pull".to_string(), "-q".to_string()];
    match tls {
        Tls::Insecure => args.push("--tls-verify=false".into()),
        Tls::CertDir(dir) => {
            args.push("--cert-dir".into());
            args.push(dir.to_string_lossy().into_owned());
        }
    }
    if let Some((user, password)) = creds {
        args.push("--creds".into());
        args.push(format!("{user}:{password}"));
    }
    args.push(format!("docker://{reference}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = podman_ok(&args);
    let id = stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(!id.is_empty(), "podman pull {reference} printed no id");
    id
}

/// Makes `image` runnable by podman: `oci:`, `oci-archive:` and `docker-archive:`
/// references are copied into podman's storage with skopeo under a generated
/// `localhost/imgbuild-test/...` name, which is returned; anything else (a name or id
/// already in storage) is returned as is.
///
/// podman names an image run from `oci:DIR` after DIR itself, and rejects the run when
/// the path has a component starting with a dot (`~/.cache/...`, tempfile's
/// `/tmp/.tmpXXXX`); going through skopeo avoids that. `platform` (`linux/arm64`,
/// `linux/arm64/v8`) picks the manifest from a multi-platform index.
pub fn import(image: &str, platform: Option<&str>) -> String {
    let transports = ["oci:", "oci-archive:", "docker-archive:"];
    if !transports.iter().any(|t| image.starts_with(t)) {
        return image.to_string();
    }
    let key = format!("{image}\n{}", platform.unwrap_or(""));
    let name = format!(
        "localhost/imgbuild-test/import-{}:latest",
        &hex::encode(Sha256::digest(key.as_bytes()))[..16]
    );
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet"]);
    if let Some(platform) = platform {
        let mut parts = platform.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        if let Some(os) = os {
            cmd.args(["--override-os", os]);
        }
        if let Some(arch) = arch {
            cmd.args(["--override-arch", arch]);
        }
        if let Some(variant) = variant {
            cmd.args(["--override-variant", variant]);
        }
    }
    super::run_ok(cmd.arg(image).arg(format!("containers-storage:{name}")));
    name
}

/// The value of `--platform` in podman arguments, either `--platform X` or
/// `--platform=X`.
fn platform_arg<'a>(podman_args: &[&'a str]) -> Option<&'a str> {
    podman_args.iter().enumerate().find_map(|(i, a)| {
        if *a == "--platform" {
            podman_args.get(i + 1).copied()
        } else {
            a.strip_prefix("--platform=")
        }
    })
}

/// What a finished container did.
#[derive(Debug)]
pub struct Finished {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `IMAGE CMD...` (empty `cmd`: the image's own entrypoint/cmd) to completion.
/// `image` is anything [`import`] takes.
pub fn run_to_completion(image: &str, cmd: &[&str]) -> Finished {
    run_to_completion_with(&[], image, cmd)
}

/// As [`run_to_completion`], with extra `podman run` arguments such as
/// `--platform linux/arm64`, `-e K=V` or `--entrypoint`.
pub fn run_to_completion_with(podman_args: &[&str], image: &str, cmd: &[&str]) -> Finished {
    let image = import(image, platform_arg(podman_args));
    let out: Output = podman()
        .args(["run", "--rm", "--pull=never"])
        .args(RUN_ARGS)
        .args(podman_args)
        .arg(&image)
        .args(cmd)
        .output()
        .expect("cannot run podman; run scripts/setup.sh");
    Finished {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `PYTHON -c SCRIPT` in `image` (with extra `podman run` arguments),
/// fails the test unless it exits 0, and returns what it printed, trimmed.
pub fn python_output(podman_args: &[&str], image: &str, python: &str, script: &str) -> String {
    let run = run_to_completion_with(podman_args, image, &[python, "-c", script]);
    assert_eq!(
        run.status, 0,
        "{python} -c {script:?} failed: {}",
        run.stderr
    );
    run.stdout.trim().to_string()
}

/// A running container, killed and removed when dropped.
pub struct Container {
    pub id: String,
    /// The port on 127.0.0.1 that reaches the container's published port.
    pub host_port: u16,
}

impl Container {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.host_port, path)
    }

    /// Everything the container printed so far, for assertion messages.
    pub fn logs(&self) -> String {
        let out = podman()
            .args(["logs", &self.id])
            .output()
            .expect("cannot run podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Whether the container is still running.
    pub fn is_running(&self) -> bool {
        podman()
            .args(["inspect", "--format", "{{.State.Running}}", &self.id])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
            .unwrap_or(false)
    }

    /// Waits until `path` answers 200 and returns the body; the container's logs are in
    /// the panic message if it never does.
    pub fn wait_ready(&self, path: &str, timeout: Duration) -> String {
        wait_http(&self.url(path), timeout).unwrap_or_else(|e| {
            panic!(
                "container {} never answered {path}: {e}\nlogs:\n{}",
                self.id,
                self.logs()
            )
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.id]).output();
    }
}

/// Starts `IMAGE CMD...` in the background with `container_port` published on a free
/// port of 127.0.0.1. `image` is anything [`import`] takes.
pub fn run_detached(image: &str, cmd: &[&str], container_port: u16) -> Container {
    run_detached_with(&[], image, cmd, container_port)
}

/// As [`run_detached`], with extra `podman run` arguments.
pub fn run_detached_with(
    podman_args: &[&str],
    image: &str,
    cmd: &[&str],
    container_port: u16,
) -> Container {
    let image = import(image, platform_arg(podman_args));
    let host_port = free_port();
    let publish = format!("127.0.0.1:{host_port}:{container_port}");
    let id = podman_ok(
        &[
            &["run", "-d", "--pull=never", "-p", publish.as_str()][..],
            RUN_ARGS,
            podman_args,
            &[image.as_str()],
            cmd,
        ]
        .concat(),
    )
    .trim()
    .to_string();
    Container { id, host_port }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a local port")
}

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// GETs `url` until it answers 200 or `timeout` passes; returns the body, or the last
/// error or status seen.
pub fn wait_http(url: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http("GET", url, None) {
            Ok(r) if r.status == 200 => return Ok(r.body),
            Ok(r) => format!("status {}: {}", r.status, r.body),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{url} not ready after {timeout:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One HTTP/1.1 request to an `http://HOST:PORT/PATH` URL; `body` is
/// `(content type, bytes)`. Enough for tests against a local server.
pub fn http(method: &str, url: &str, body: Option<(&str, &[u8])>) -> std::io::Result<HttpResponse> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad(format!("{url}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // A port published before the server listens may drop the SYN instead of refusing.
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad(format!("{url}: {authority} resolves to no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: */*\r\n"
    );
    if let Some((content_type, bytes)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{url}: the connection closed before any answer"),
        ));
    }

    let invalid =
        |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{url}: {m}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("response has no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut payload = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("response has no status code"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        payload = dechunk(&payload).ok_or_else(|| invalid("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&payload).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The modules `python -v` says it compiled from source (`# code object from
/// '<x>.py'`; 3.15 writes the path without quotes): empty when every module
/// loaded from its pyc.
pub fn compiled_at_start(verbose_stderr: &str) -> Vec<&str> {
    verbose_stderr
        .lines()
        .filter(|l| {
            l.starts_with("# code object from") && l.trim_end_matches('\'').ends_with(".py")
        })
        .collect()
}

/// `podman inspect` of a container, as JSON.
#[allow(dead_code)]
pub fn inspect_container(name: &str) -> serde_json::Value {
    let out = podman_ok(&["inspect", "--type", "container", name]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// kill -9 of a container's main process on the host; waits (up to 60 s) for
/// its restart policy to start a new one.
#[allow(dead_code)]
pub fn kill_and_wait_restart(container: &str) {
    let before = inspect_container(container);
    let pid = before["State"]["Pid"].as_u64().unwrap();
    let restarts = before["RestartCount"].as_u64().unwrap_or(0);
    assert!(pid > 0, "{before:#}");
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = inspect_container(container);
        let count = now["RestartCount"].as_u64().unwrap_or(0);
        let new_pid = now["State"]["Pid"].as_u64().unwrap_or(0);
        if count > restarts && new_pid != 0 && new_pid != pid {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted after kill -9: {now:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Deployment's YAML with its container port published on 127.0.0.1:`port`,
/// for `podman kube play` (the one place a test may reach the pod from).
#[allow(dead_code)]
pub fn with_host_port(yaml: &str, port: u16) -> String {
    yaml.replacen(
        "containerPort: 8000\n",
        &format!("containerPort: 8000\n              hostPort: {port}\n              hostIP: 127.0.0.1\n"),
        1,
    )
}
