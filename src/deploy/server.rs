//! One server: the app's container and its init step as Compose, systemd and
//! `imgbuild run` start them. Pure, as `manifests` is: a spec in, a [`Server`]
//! out, which `compose` and `systemd` write and `cli::run` runs. One model for
//! the three, so they cannot drift apart on the user, the read-only root, the
//! mounts, the limits or how HTTPS is served.
//!
//! What differs from the Kubernetes output, and why:
//! - uvicorn runs `workers` processes (default: the CPUs the limit grants),
//!   since on one server nothing else replicates the app;
//! - with `tls`, uvicorn serves HTTPS itself from the mounted certificate and
//!   key, and is published on every address (port 443 unless `publish` says);
//!   without it, the port is published on 127.0.0.1 only, for a reverse proxy
//!   on the same host, whose `X-Forwarded-*` headers uvicorn then believes.

use super::DeployError;
use crate::layer::ImagePath;
use crate::spec::{Publish, Spec};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Where the certificate and key are mounted in the container: the file names
/// of a Kubernetes TLS Secret, so the uvicorn flags are the same everywhere.
pub const TLS_DIR: &str = "/run/tls";
pub const TLS_CERT: &str = "/run/tls/tls.crt";
pub const TLS_KEY: &str = "/run/tls/tls.key";

/// The app's container, and what its init step shares with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The service's name: Compose project, systemd unit, container names.
    pub name: String,
    /// `imgbuild://PATH` for the outputs, a local image for `imgbuild run`.
    pub image: String,
    /// Numeric `(uid, gid)`, the image's user.
    pub user: (u32, u32),
    /// The command when it is uvicorn's (with the workers and TLS flags);
    /// `None` runs the image's own (the spec sets `entrypoint` or `cmd`).
    pub command: Option<Vec<String>>,
    /// uvicorn's workers, when `command` is uvicorn's.
    pub workers: Option<u32>,
    /// The init step, run from the same image before the app.
    pub init: Option<Vec<String>>,
    /// The port the app listens on inside the container.
    pub port: u16,
    pub publish: Publish,
    /// uvicorn serves HTTPS itself.
    pub https: bool,
    /// `FORWARDED_ALLOW_IPS`: the proxies whose `X-Forwarded-*` headers
    /// uvicorn believes; `None` leaves uvicorn's default (127.0.0.1).
    pub forwarded_allow_ips: Option<String>,
    /// Mounts of both containers (init and app), then the app's alone.
    pub mounts: Vec<Mount>,
    /// `--cpus`, e.g. `"1"`, `"0.25"`.
    pub cpus: String,
    /// `--memory` in Docker's units, e.g. `"256m"`.
    pub memory: String,
    /// The healthcheck, an exec-form command run inside the container.
    pub health: Vec<String>,
    /// What the healthcheck checks, for comments.
    pub health_what: String,
}

/// A mount into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// A named volume, shared by init and app (`NAME` in Compose, which
    /// prefixes the project; `SERVICE-NAME` for podman). A new one is filled
    /// from the image's directory, owner and mode included.
    Volume { name: String, target: String },
    /// A tmpfs, when nothing needs to outlive the container.
    Tmpfs { target: String },
    /// A host file, read-only, for the app alone.
    File { source: PathBuf, target: String },
}

impl Mount {
    /// Whether the init step gets it too (the app's files are the app's).
    pub fn shared(&self) -> bool {
        !matches!(self, Mount::File { .. })
    }
}

/// What a server is planned from, beyond the spec.
pub struct Input<'a> {
    pub spec: &'a Spec,
    /// The service's name (see [`super::kube_name`]).
    pub name: String,
    /// The image to run.
    pub image: String,
    /// The spec file as shown to the user, for comments and messages.
    pub spec_shown: String,
    /// The image directories the app writes (owned by the image user): each
    /// becomes a named volume of init and app alike, so what they hold
    /// outlives a restart. Empty until the spec can name them.
    pub writable: &'a [ImagePath],
}

/// The server for `input`; the certificate and key must exist here, since
/// every output of this plan mounts them from this machine's paths.
pub fn plan(input: &Input) -> Result<Server, DeployError> {
    let spec = input.spec;
    let d = &spec.deploy;
    if let Some(tls) = &d.tls {
        check_file(&input.spec_shown, "cert", &tls.cert)?;
        check_file(&input.spec_shown, "key", &tls.key)?;
    }
    let https = d.tls.is_some();
    let workers = match spec.workers_set {
        true => spec.workers,
        false => crate::spec::deploy::quantity(&d.resources.limits_cpu, false)
            .map_or(1, |cpus| cpus.ceil().max(1.0) as u32),
    };
    let command = uvicorn_command(spec, &input.spec_shown, workers, https)?;
    let publish = d.publish.clone().unwrap_or(match https {
        true => Publish {
            address: None,
            port: 443,
        },
        false => Publish {
            address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port: spec.port,
        },
    });
    let behind_local_proxy = !https && publish.address.is_some_and(|a| a.is_loopback());
    let forwarded_allow_ips = d
        .forwarded_allow_ips
        .clone()
        .or_else(|| behind_local_proxy.then(|| "*".to_string()));
    let (health, health_what) = healthcheck(spec, https);
    Ok(Server {
        name: input.name.clone(),
        image: input.image.clone(),
        user: spec.user,
        workers: command.as_ref().map(|_| workers),
        command,
        init: spec.init.clone(),
        port: spec.port,
        publish,
        https,
        forwarded_allow_ips,
        mounts: mounts(spec, input.writable),
        cpus: cpus(&d.resources.limits_cpu),
        memory: memory(&d.resources.limits_memory),
        health,
        health_what,
    })
}

fn check_file(spec: &str, which: &'static str, path: &Path) -> Result<(), DeployError> {
    let fail = |source| DeployError::TlsFile {
        spec: spec.to_string(),
        which,
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err(fail(std::io::Error::other("not a regular file")));
    }
    Ok(())
}

/// The image's uvicorn command with `workers`, and the TLS flags when uvicorn
/// serves HTTPS; `None` when the spec replaces the command.
fn uvicorn_command(
    spec: &Spec,
    spec_shown: &str,
    workers: u32,
    https: bool,
) -> Result<Option<Vec<String>>, DeployError> {
    let run = spec.command(workers);
    let (None, None, Some(mut cmd)) = (&spec.entrypoint, &spec.cmd, run.cmd) else {
        if https {
            return Err(DeployError::TlsNeedsUvicorn {
                spec: spec_shown.to_string(),
            });
        }
        return Ok(None);
    };
    if https {
        for (flag, path) in [("--ssl-certfile", TLS_CERT), ("--ssl-keyfile", TLS_KEY)] {
            cmd.push(flag.into());
            cmd.push(path.into());
        }
    }
    Ok(Some(cmd))
}

/// The venv's Python asks the app on 127.0.0.1, as the image has no curl.
/// Over HTTPS the certificate is not verified: it names the public host, not
/// 127.0.0.1, and the check is whether this process answers, not who it is.
fn healthcheck(spec: &Spec, https: bool) -> (Vec<String>, String) {
    let python = format!("{}/bin/python", spec.venv.absolute());
    let port = spec.port;
    let (script, what) = match &spec.health {
        Some(path) => {
            let scheme = if https { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}{path}");
            let context = if https {
                ", context=ssl._create_unverified_context()"
            } else {
                ""
            };
            (
                format!("import ssl, urllib.request; urllib.request.urlopen('{url}', timeout=4{context})"),
                format!("GET {url} answers below 400"),
            )
        }
        None => (
            format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=4)"),
            format!("a TCP connection to port {port} (set `health` for an HTTP check)"),
        ),
    };
    (vec![python, "-c".into(), script], what)
}

/// /tmp (a volume shared with init when there is one, else a tmpfs), the
/// writable directories, then the certificate and key.
fn mounts(spec: &Spec, writable: &[ImagePath]) -> Vec<Mount> {
    let mut out = vec![match spec.init {
        Some(_) => Mount::Volume {
            name: "tmp".into(),
            target: "/tmp".into(),
        },
        None => Mount::Tmpfs {
            target: "/tmp".into(),
        },
    }];
    for dir in writable {
        out.push(Mount::Volume {
            name: volume_name(dir),
            target: dir.absolute(),
        });
    }
    if let Some(tls) = &spec.deploy.tls {
        out.push(Mount::File {
            source: tls.cert.clone(),
            target: TLS_CERT.into(),
        });
        out.push(Mount::File {
            source: tls.key.clone(),
            target: TLS_KEY.into(),
        });
    }
    out
}

/// `app/data` → `app-data`: a volume name Compose and podman both take.
fn volume_name(dir: &ImagePath) -> String {
    dir.as_str()
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '-',
        })
        .collect::<String>()
        .trim_matches(['-', '.'])
        .to_string()
}

/// A Kubernetes CPU quantity as `--cpus` takes it: cores, as a decimal.
fn cpus(q: &str) -> String {
    let cores = crate::spec::deploy::quantity(q, false).unwrap_or(1.0);
    let text = format!("{cores:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A Kubernetes memory quantity in Docker's units (`k`, `m`, `g` are 1024-based).
fn memory(q: &str) -> String {
    let bytes = crate::spec::deploy::quantity(q, true).unwrap_or(256.0 * 1024.0 * 1024.0) as u64;
    for (unit, size) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}b")
}

impl Server {
    /// `podman run` / `docker run` flags for the init step (`app` false) or
    /// the app: the user, the hardening, the limits and the mounts, with
    /// named volumes called `{volume_prefix}-NAME`. Without the name, the
    /// image and the command; the app's ports and environment are
    /// [`Server::app_flags`].
    pub fn run_flags(&self, app: bool, volume_prefix: &str) -> Vec<String> {
        let (uid, gid) = self.user;
        let mut out: Vec<String> = vec![
            format!("--user={uid}:{gid}"),
            "--read-only".into(),
            "--cap-drop=all".into(),
            "--security-opt=no-new-privileges".into(),
            format!("--cpus={}", self.cpus),
            format!("--memory={}", self.memory),
        ];
        for m in self.mounts.iter().filter(|m| app || m.shared()) {
            out.push(match m {
                Mount::Volume { name, target } => {
                    format!("--volume={volume_prefix}-{name}:{target}")
                }
                Mount::Tmpfs { target } => format!("--tmpfs={target}"),
                Mount::File { source, target } => {
                    format!("--volume={}:{target}:ro", source.display())
                }
            });
        }
        out
    }

    /// The app's published port and environment.
    pub fn app_flags(&self) -> Vec<String> {
        let mut out = vec![format!(
            "--publish={}",
            publish_arg(&self.publish, self.port)
        )];
        if let Some(ips) = &self.forwarded_allow_ips {
            out.push(format!("--env=FORWARDED_ALLOW_IPS={ips}"));
        }
        out
    }

    /// What the command line runs after the image: the command, if ours.
    pub fn command_args(&self) -> Vec<String> {
        self.command.clone().unwrap_or_default()
    }
}

/// `[ADDRESS:]HOST_PORT:CONTAINER_PORT`, IPv6 in brackets.
pub fn publish_arg(p: &Publish, container_port: u16) -> String {
    match p.address {
        None => format!("{}:{container_port}", p.port),
        Some(IpAddr::V6(a)) => format!("[{a}]:{}:{container_port}", p.port),
        Some(a) => format!("{a}:{}:{container_port}", p.port),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn spec_in(dir: &Path, extra: &str) -> Spec {
        let text = format!("base = \"python:3.12-slim\"\napp = \"orders.main:app\"\n{extra}");
        let file = dir.join("imgbuild.toml");
        std::fs::write(&file, &text).unwrap();
        crate::spec::parse(&text, &file, false, dir).unwrap()
    }

    fn server(spec: &Spec) -> Result<Server, DeployError> {
        server_with(spec, &[])
    }

    /// The server of the spec `extra` makes in `dir` (named orders), for the
    /// output formats' tests.
    pub fn planned(dir: &Path, extra: &str) -> Server {
        server(&spec_in(dir, extra)).unwrap()
    }

    fn server_with(spec: &Spec, writable: &[ImagePath]) -> Result<Server, DeployError> {
        plan(&Input {
            spec,
            name: "orders".into(),
            image: "imgbuild://.".into(),
            spec_shown: "imgbuild.toml".into(),
            writable,
        })
    }

    #[test]
    fn defaults_serve_http_on_loopback_behind_a_proxy_with_workers_from_the_cpu_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let s = server(&spec_in(
            tmp.path(),
            "[deploy]\nresources = { limits = { cpu = \"1500m\", memory = \"1Gi\" } }\n",
        ))
        .unwrap();
        assert_eq!(s.workers, Some(2), "1.5 CPUs give 2 workers");
        let cmd = s.command.clone().unwrap();
        assert_eq!(cmd[cmd.len() - 2..], ["--workers", "2"]);
        assert_eq!(s.publish_flag(), "--publish=127.0.0.1:8000:8000");
        assert_eq!(s.forwarded_allow_ips.as_deref(), Some("*"));
        assert_eq!((s.cpus.as_str(), s.memory.as_str()), ("1.5", "1g"));
        assert_eq!(
            s.mounts,
            [Mount::Tmpfs {
                target: "/tmp".into()
            }]
        );
        assert!(s.health[2].contains("socket.create_connection(('127.0.0.1', 8000)"));
        assert_eq!(
            s.run_flags(true, "orders"),
            [
                "--user=65532:65532",
                "--read-only",
                "--cap-drop=all",
                "--security-opt=no-new-privileges",
                "--cpus=1.5",
                "--memory=1g",
                "--tmpfs=/tmp"
            ]
        );
    }

    impl Server {
        fn publish_flag(&self) -> String {
            self.app_flags()[0].clone()
        }
    }

    #[test]
    fn workers_written_in_the_spec_win() {
        let tmp = tempfile::tempdir().unwrap();
        let s = server(&spec_in(tmp.path(), "workers = 3\n")).unwrap();
        assert_eq!(s.workers, Some(3));
        let s = server(&spec_in(tmp.path(), "")).unwrap();
        assert_eq!(s.workers, Some(1), "the default limit is one CPU");
    }

    #[test]
    fn tls_serves_https_on_443_from_the_mounted_files_and_trusts_no_proxy() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("c.pem"), "x").unwrap();
        std::fs::write(tmp.path().join("k.pem"), "x").unwrap();
        let spec = spec_in(
            tmp.path(),
            "health = \"/health\"\ninit = [\"migrate\"]\n[deploy]\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
        );
        let s = server(&spec).unwrap();
        assert!(s.https);
        let cmd = s.command.clone().unwrap().join(" ");
        assert!(
            cmd.ends_with("--ssl-certfile /run/tls/tls.crt --ssl-keyfile /run/tls/tls.key"),
            "{cmd}"
        );
        assert_eq!(s.publish_flag(), "--publish=443:8000");
        assert_eq!(
            s.forwarded_allow_ips, None,
            "clients reach uvicorn directly"
        );
        assert!(s.health[2].contains("'https://127.0.0.1:8000/health'"));
        assert!(s.health[2].contains("_create_unverified_context()"));
        let app = s.run_flags(true, "orders");
        let init = s.run_flags(false, "orders");
        assert!(
            app.contains(&"--volume=orders-tmp:/tmp".to_string()),
            "{app:?}"
        );
        assert!(
            init.contains(&"--volume=orders-tmp:/tmp".to_string()),
            "init shares /tmp"
        );
        let cert = format!(
            "--volume={}:/run/tls/tls.crt:ro",
            tmp.path().join("c.pem").display()
        );
        assert!(app.contains(&cert), "{app:?}");
        assert!(!init.contains(&cert), "the key is the app's alone");
    }

    #[test]
    fn a_missing_tls_file_or_a_custom_command_with_tls_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("c.pem"), "x").unwrap();
        let tls = "[deploy]\ntls = { cert = \"c.pem\", key = \"nokey.pem\" }\n";
        let err = server(&spec_in(tmp.path(), tls)).unwrap_err();
        let line = crate::text::error_chain(&err);
        assert!(
            line.starts_with("imgbuild.toml: key \"deploy.tls.key\": "),
            "{line}"
        );
        assert!(line.contains("nokey.pem"), "{line}");
        assert!(line.contains("No such file"), "{line}");

        std::fs::write(tmp.path().join("nokey.pem"), "x").unwrap();
        let err = server(&spec_in(
            tmp.path(),
            &format!("cmd = [\"gunicorn\"]\n{tls}"),
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("sets `entrypoint` or `cmd`"),
            "{err}"
        );
        let s = server(&spec_in(tmp.path(), "cmd = [\"gunicorn\"]\n")).unwrap();
        assert_eq!((s.command, s.workers), (None, None));
    }

    #[test]
    fn explicit_publish_and_proxies_and_writable_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = spec_in(
            tmp.path(),
            "[deploy]\npublish = \"[::1]:9000\"\nforwarded-allow-ips = \"10.0.0.2\"\n",
        );
        let data = ImagePath::new("app/data").unwrap();
        let s = server_with(&spec, &[data]).unwrap();
        assert_eq!(s.publish_flag(), "--publish=[::1]:9000:8000");
        assert_eq!(s.forwarded_allow_ips.as_deref(), Some("10.0.0.2"));
        assert_eq!(
            s.mounts[1],
            Mount::Volume {
                name: "app-data".into(),
                target: "/app/data".into()
            }
        );
        let spec = spec_in(tmp.path(), "[deploy]\npublish = \"8080\"\n");
        let s = server(&spec).unwrap();
        assert_eq!(
            s.forwarded_allow_ips, None,
            "published to the world: no proxy to trust"
        );
    }

    #[test]
    fn quantities_become_docker_units() {
        assert_eq!(cpus("250m"), "0.25");
        assert_eq!(cpus("2"), "2");
        assert_eq!(memory("256Mi"), "256m");
        assert_eq!(memory("1Gi"), "1g");
        assert_eq!(memory("500M"), "500000000b");
        assert_eq!(memory("1536Ki"), "1536k");
    }
}
