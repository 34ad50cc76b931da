//! Starts the real distribution registry (/usr/bin/docker-registry 2.8) on
//! 127.0.0.1 with a temporary storage root, in one of three setups:
//! - `Plain`: http, no auth;
//! - `Htpasswd`: https with a test CA made by the `openssl` CLI, bcrypt htpasswd;
//! - `Token`: http with `auth.token`, whose realm is a token service running in
//!   the test process that signs RS256 JWTs (by `openssl dgst`) and names its
//!   certificate in the `x5c` header, which distribution 2.8 checks against
//!   `rootcertbundle`;
//! - `TokenTls`: https (test CA) with the same token service, whose realm is
//!   plain http: a realm that would downgrade the registry's TLS.
//!
//! The token service records every request it is sent (`token_requests`).
//!
//! The registry is killed on drop, and its log printed if the test panicked.

use super::fake_registry::{HttpServer, Reply, Request};
use base64::Engine as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const USERNAME: &str = "alice";
/// Distinctive so tests can scan output for it.
pub const PASSWORD: &str = "s3cret-Pa55w0rd-9f1c";
/// An OAuth2 refresh token the token service accepts (for identitytoken tests).
pub const REFRESH_TOKEN: &str = "refresh-7d0b1e5a";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    Plain,
    Htpasswd,
    Token,
    TokenTls,
}

pub struct Registry {
    pub setup: Setup,
    /// `127.0.0.1:<port>`
    pub host: String,
    /// The CA that signed the registry's TLS certificate (Htpasswd only).
    pub ca_file: Option<PathBuf>,
    /// A directory holding only `ca.crt`, for `skopeo --cert-dir`.
    pub cert_dir: Option<PathBuf>,
    pub dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    _token_server: Option<HttpServer>,
    token_log: Arc<Mutex<Vec<Request>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    super::run_ok(cmd);
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// `openssl req` arguments for a new, unencrypted EC key on the P-256 curve.
const NEW_P256_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A test CA (`ca.crt`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`server.crt`, `server.key`), made by openssl in `dir`.
pub fn make_tls(dir: &Path) {
    openssl(
        dir,
        &[
            &["req", "-x509"],
            NEW_P256_KEY,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=imgbuild test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"],
            NEW_P256_KEY,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The token service: Basic credentials (GET) or a refresh token (POST form);
/// anonymous callers get a token that grants nothing, as on public registries.
fn start_token_server(dir: &Path, log: Arc<Mutex<Vec<Request>>>) -> HttpServer {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "signing.key",
            "-out",
            "signing.crt",
            "-days",
            "2",
            "-subj",
            "/CN=imgbuild test token signer",
        ],
    );
    let pem = std::fs::read_to_string(dir.join("signing.crt")).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let key = dir.join("signing.key");
    let dir = dir.to_path_buf();
    let sign = Arc::new(move |subject: &str, access: serde_json::Value| -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ":"JWT","alg":"RS256","x5c":[der_b64]});
        let claims = serde_json::json!({
            "iss": "imgbuild-test-issuer", "sub": subject, "aud": "imgbuild-test-registry",
            "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", rand_suffix()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let input = tempfile::NamedTempFile::new_in(&dir).unwrap();
        std::fs::write(input.path(), &signing_input).unwrap();
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .arg(input.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl dgst -sign failed");
        format!("{signing_input}.{}", b64url(&out.stdout))
    });
    HttpServer::start(
        |_| None,
        move |req: &Request, body: &[u8]| {
            log.lock().unwrap().push(req.clone());
            let basic_ok = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|raw| String::from_utf8_lossy(&raw).into_owned());
            let (subject, scopes) = match req.method.as_str() {
                "GET" => {
                    let scopes: Vec<String> = req
                        .query
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("scope="))
                        .map(super::fake_registry::percent_decode)
                        .collect();
                    match basic_ok {
                        Some(up) if up == format!("{USERNAME}:{PASSWORD}") => (USERNAME, scopes),
                        Some(_) => {
                            return Reply::json(
                                401,
                                serde_json::json!({"details": "incorrect username or password"}),
                            )
                        }
                        None => ("", Vec::new()),
                    }
                }
                "POST" => {
                    let form: Vec<(String, String)> = String::from_utf8_lossy(body)
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), super::fake_registry::percent_decode(v)))
                        .collect();
                    let get = |k: &str| form.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
                    if get("grant_type").as_deref() != Some("refresh_token")
                        || get("refresh_token").as_deref() != Some(REFRESH_TOKEN)
                    {
                        return Reply::json(401, serde_json::json!({"error": "invalid_grant"}));
                    }
                    let scopes = get("scope")
                        .map(|s| s.split(' ').map(str::to_string).collect())
                        .unwrap_or_default();
                    (USERNAME, scopes)
                }
                _ => return Reply::status(405),
            };
            let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // repository:<name, may hold host:port>:<actions>
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
            let token = sign(subject, serde_json::Value::Array(access));
            Reply::json(200, serde_json::json!({"token": token, "expires_in": 300}))
        },
    )
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Registry {
    pub fn start(setup: Setup) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut extra = String::new();
        let mut token_server = None;
        let mut ca_file = None;
        let mut cert_dir = None;
        let token_log: Arc<Mutex<Vec<Request>>> = Arc::default();
        if matches!(setup, Setup::Htpasswd | Setup::TokenTls) {
            make_tls(dir.path());
            ca_file = Some(dir.path().join("ca.crt"));
            let cd = dir.path().join("certs");
            std::fs::create_dir(&cd).unwrap();
            std::fs::copy(dir.path().join("ca.crt"), cd.join("ca.crt")).unwrap();
            cert_dir = Some(cd);
        }
        let tls = format!(
            "  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n",
            d = dir.path().display()
        );
        match setup {
            Setup::Plain => {}
            Setup::Htpasswd => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", USERNAME, PASSWORD])
                    .output()
                    .expect("htpasswd");
                assert!(out.status.success());
                std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
                extra = format!(
                    "{tls}auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {d}/htpasswd\n",
                    d = dir.path().display()
                );
            }
            Setup::Token | Setup::TokenTls => {
                let ts = start_token_server(dir.path(), token_log.clone());
                if setup == Setup::TokenTls {
                    extra = tls;
                }
                extra += &format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: imgbuild-test-registry\n    issuer: imgbuild-test-issuer\n    rootcertbundle: {}/signing.crt\n",
                    ts.port,
                    dir.path().display()
                );
                token_server = Some(ts);
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: imgbuild-test-secret\n{extra}",
            d = dir.path().display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .env_remove("REGISTRY_HTTP_ADDR")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("cannot start /usr/bin/docker-registry; install the docker-registry package");
        let registry = Registry {
            setup,
            host,
            ca_file,
            cert_dir,
            dir,
            child,
            log,
            _token_server: token_server,
            token_log,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.host).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 20s; log:\n{}",
            self.host,
            self.log()
        );
    }

    /// Every request the token service was sent.
    pub fn token_requests(&self) -> Vec<Request> {
        self.token_log.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Copies an OCI layout (`oci:DIR:TAG`, or `oci:DIR` with every platform
    /// of its index) to this registry as `name`, keeping its digests.
    #[allow(dead_code)]
    pub fn copy_in(&self, source: &str, name: &str) {
        let mut args = vec![
            "--insecure-policy".to_string(),
            "copy".into(),
            "--quiet".into(),
            "--preserve-digests".into(),
        ];
        if !source.ends_with(":latest") {
            args.push("--all".into());
        }
        args.extend(self.skopeo_flags("dest-"));
        args.push(source.to_owned());
        args.push(format!("docker://{}/{name}", self.host));
        super::run_ok(std::process::Command::new("skopeo").args(&args));
    }

    /// The manifest `name` (a repository with a tag or digest) holds here, as JSON.
    #[allow(dead_code)]
    pub fn manifest(&self, name: &str) -> serde_json::Value {
        let mut args = vec!["inspect".to_string(), "--raw".into()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{}/{name}", self.host));
        let out = super::run_ok(std::process::Command::new("skopeo").args(&args));
        serde_json::from_slice(&out.stdout).expect("a JSON manifest")
    }

    /// The skopeo flags that reach this registry with our credentials;
    /// `prefix` is "" for `inspect`, "src-" or "dest-" for `copy`.
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut f = Vec::new();
        match &self.cert_dir {
            Some(d) => f.push(format!("--{prefix}cert-dir={}", d.display())),
            None => f.push(format!("--{prefix}tls-verify=false")),
        }
        if self.setup != Setup::Plain {
            f.push(format!("--{prefix}creds={USERNAME}:{PASSWORD}"));
        }
        f
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- docker-registry log ({:?}) ----\n{}",
                self.setup,
                self.log()
            );
        }
    }
}
