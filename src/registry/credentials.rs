//! Where registry credentials come from, in Docker's order, and `login`.
//!
//! Order for a registry host:
//! 1. explicit (`--username` + `--password-stdin`), else IMGBUILD_USERNAME/IMGBUILD_PASSWORD;
//! 2. `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: `credHelpers[host]`,
//!    then `credsStore`, then `auths` (keys given as URLs are reduced to host names);
//! 3. the file named by REGISTRY_AUTH_FILE (podman/skopeo format);
//! 4. `${XDG_RUNTIME_DIR}/containers/auth.json`;
//! 5. anonymous.
//!
//! The environment is a map handed to the `Keychain`, so tests and embedders
//! resolve against their own environment without touching the process's.

use crate::reference::{DOCKER_HUB, DOCKER_HUB_CREDENTIAL_KEY};
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A password or token. Debug and Display print `***`, so a secret can sit in
/// any struct or error without reaching a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read the value; call it where the value goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token: config.json `identitytoken`, or a helper's `<token>` user.
    IdentityToken {
        username: Option<String>,
        token: Secret,
    },
    /// A bearer token sent as is (config.json `registrytoken`).
    RegistryToken(Secret),
}

/// A credential and where it was found (for `--json` and debugging; never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub credential: Credential,
    pub source: String,
}

impl Resolved {
    fn anonymous() -> Self {
        Resolved {
            credential: Credential::Anonymous,
            source: "anonymous".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: not a valid credentials file ({detail}); fix or remove it")]
    BadFile { path: PathBuf, detail: String },
    #[error("{path}: auths[{key:?}].auth is not base64 of \"user:password\"; run `imgbuild login` again")]
    BadAuth { path: PathBuf, key: String },
    #[error("credential helper docker-credential-{helper} (configured in {config}) is not on PATH; install it or remove it from the file")]
    HelperMissing { helper: String, config: PathBuf },
    #[error("credential helper docker-credential-{helper} failed for {server}: {detail}")]
    Helper {
        helper: String,
        server: String,
        detail: String,
    },
    #[error("credential helper docker-credential-{helper} failed for {server}")]
    HelperIo {
        helper: String,
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot read this credentials file")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid credentials file (not JSON); fix or remove it")]
    BadJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} is set but {1} is not; set both, or neither")]
    HalfEnv(&'static str, &'static str),
    #[error("cannot find the Docker config directory: set DOCKER_CONFIG or HOME")]
    NoConfigDir,
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Anything that can say which credential to use for a registry.
pub trait CredentialSource: Send + Sync {
    /// `registry` is the normalised registry of a reference (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    fn resolve(&self, registry: &str) -> Result<Resolved, CredentialError>;

    /// The credential for one repository of `registry`: sources that know
    /// namespaced keys (`registry/namespace`, containers-auth.json(5)) use
    /// the most specific; by default the registry's.
    fn resolve_for(
        &self,
        registry: &str,
        repository: Option<&str>,
    ) -> Result<Resolved, CredentialError> {
        let _ = repository;
        self.resolve(registry)
    }
}

/// Always anonymous.
pub struct Anonymous;

impl CredentialSource for Anonymous {
    fn resolve(&self, _: &str) -> Result<Resolved, CredentialError> {
        Ok(Resolved::anonymous())
    }
}

/// Docker's credential lookup over an environment map.
#[derive(Clone)]
pub struct Keychain {
    env: HashMap<String, String>,
    explicit: Option<(String, Secret)>,
    only_for: Option<String>,
}

/// Shows which variables are set, never their values (the map may hold passwords).
impl fmt::Debug for Keychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.env.keys().collect();
        keys.sort();
        f.debug_struct("Keychain")
            .field("env_keys", &keys)
            .field("explicit_user", &self.explicit.as_ref().map(|(u, _)| u))
            .field("only_for", &self.only_for)
            .finish()
    }
}

pub const USERNAME_ENV: &str = "IMGBUILD_USERNAME";
pub const PASSWORD_ENV: &str = "IMGBUILD_PASSWORD";

impl Keychain {
    /// Resolves against a snapshot of the process environment.
    pub fn from_env() -> Self {
        Keychain::with_env(std::env::vars().collect())
    }

    /// Resolves against the given environment (HOME, DOCKER_CONFIG, PATH for
    /// helpers, REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, IMGBUILD_USERNAME/PASSWORD).
    pub fn with_env(env: HashMap<String, String>) -> Self {
        Keychain {
            env,
            explicit: None,
            only_for: None,
        }
    }

    /// Credentials given on the command line; they win over every file.
    pub fn with_explicit(mut self, username: &str, password: Secret) -> Self {
        self.explicit = Some((username.to_string(), password));
        self
    }

    /// Use explicit and IMGBUILD_* credentials only for this registry, so a
    /// push target's password is never sent to the base image's registry.
    pub fn explicit_only_for(mut self, registry: &str) -> Self {
        self.only_for = Some(registry.to_string());
        self
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.env
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn explicit(&self, registry: &str) -> Result<Option<Resolved>, CredentialError> {
        if self.only_for.as_deref().is_some_and(|r| r != registry) {
            return Ok(None);
        }
        if let Some((u, p)) = &self.explicit {
            return Ok(Some(Resolved {
                credential: Credential::Basic {
                    username: u.clone(),
                    password: p.clone(),
                },
                source: "--username/--password-stdin".to_string(),
            }));
        }
        match (self.var(USERNAME_ENV), self.var(PASSWORD_ENV)) {
            (Some(u), Some(p)) => Ok(Some(Resolved {
                credential: Credential::Basic {
                    username: u.to_string(),
                    password: Secret::new(p),
                },
                source: format!("{USERNAME_ENV}/{PASSWORD_ENV}"),
            })),
            (Some(_), None) => Err(CredentialError::HalfEnv(USERNAME_ENV, PASSWORD_ENV)),
            (None, Some(_)) => Err(CredentialError::HalfEnv(PASSWORD_ENV, USERNAME_ENV)),
            (None, None) => Ok(None),
        }
    }

    /// `$DOCKER_CONFIG` or `~/.docker`.
    pub fn docker_config_dir(&self) -> Option<PathBuf> {
        docker_config_dir_from(|k| self.var(k).map(str::to_string))
    }

    fn path_lookup(&self, program: &str) -> Option<PathBuf> {
        let path = self.var("PATH")?;
        std::env::split_paths(path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    }

    fn run_helper(
        &self,
        helper: &str,
        config: &Path,
        server: &str,
    ) -> Result<Option<Credential>, CredentialError> {
        let program = format!("docker-credential-{helper}");
        let exe = self
            .path_lookup(&program)
            .ok_or_else(|| CredentialError::HelperMissing {
                helper: helper.to_string(),
                config: config.to_path_buf(),
            })?;
        let failed = |detail: String| CredentialError::Helper {
            helper: helper.to_string(),
            server: server.to_string(),
            detail,
        };
        let mut child = Command::new(&exe)
            .arg("get")
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CredentialError::HelperIo {
                helper: helper.to_string(),
                server: server.to_string(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading stdin is not an error by itself.
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| CredentialError::HelperIo {
                helper: helper.to_string(),
                server: server.to_string(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let text = format!("{} {}", stdout, String::from_utf8_lossy(&out.stderr));
            if text.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            let first = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let first: String = first.chars().take(200).collect();
            return Err(failed(format!("exited with {} ({first})", out.status)));
        }
        #[derive(serde::Deserialize)]
        struct HelperReply {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let reply: HelperReply = serde_json::from_str(stdout.trim()).map_err(|e| {
            failed(format!(
                "its output is not {{\"Username\",\"Secret\"}} JSON: {e}"
            ))
        })?;
        if reply.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if reply.username == "<token>" {
            Credential::IdentityToken {
                username: None,
                token: Secret::new(reply.secret),
            }
        } else {
            Credential::Basic {
                username: reply.username,
                password: Secret::new(reply.secret),
            }
        }))
    }

    fn lookup_docker_config(
        &self,
        registry: &str,
        repository: Option<&str>,
    ) -> Result<Option<Resolved>, CredentialError> {
        let Some(dir) = self.docker_config_dir() else {
            return Ok(None);
        };
        let path = dir.join("config.json");
        let Some(config) = read_json(&path)? else {
            return Ok(None);
        };
        let server = helper_server_url(registry);
        let helper_keys = [registry.to_string(), server.clone()];
        let helper = config
            .get("credHelpers")
            .and_then(|h| helper_keys.iter().find_map(|k| h.get(k)));
        if let Some(name) = helper.and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            if let Some(c) = self.run_helper(name, &path, &server)? {
                let source = format!("credential helper docker-credential-{name}");
                return Ok(Some(Resolved {
                    credential: c,
                    source,
                }));
            }
        }
        if let Some(name) = config
            .get("credsStore")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        {
            if let Some(c) = self.run_helper(name, &path, &server)? {
                let source = format!("credential store docker-credential-{name}");
                return Ok(Some(Resolved {
                    credential: c,
                    source,
                }));
            }
        }
        auths_entry(&config, &path, registry, repository)
    }

    fn lookup_auth_file(
        &self,
        path: &Path,
        registry: &str,
        repository: Option<&str>,
    ) -> Result<Option<Resolved>, CredentialError> {
        match read_json(path)? {
            Some(config) => auths_entry(&config, path, registry, repository),
            None => Ok(None),
        }
    }
}

impl CredentialSource for Keychain {
    fn resolve(&self, registry: &str) -> Result<Resolved, CredentialError> {
        self.resolve_for(registry, None)
    }

    fn resolve_for(
        &self,
        registry: &str,
        repository: Option<&str>,
    ) -> Result<Resolved, CredentialError> {
        if let Some(r) = self.explicit(registry)? {
            return Ok(r);
        }
        if let Some(r) = self.lookup_docker_config(registry, repository)? {
            return Ok(r);
        }
        if let Some(p) = self.var("REGISTRY_AUTH_FILE") {
            if let Some(r) = self.lookup_auth_file(Path::new(p), registry, repository)? {
                return Ok(r);
            }
        }
        if let Some(dir) = self.var("XDG_RUNTIME_DIR") {
            let p = Path::new(dir).join("containers/auth.json");
            if let Some(r) = self.lookup_auth_file(&p, registry, repository)? {
                return Ok(r);
            }
        }
        Ok(Resolved::anonymous())
    }
}

fn docker_config_dir_from(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(d) = var("DOCKER_CONFIG") {
        return Some(PathBuf::from(d));
    }
    var("HOME").map(|h| Path::new(&h).join(".docker"))
}

/// What Docker hands a credential helper: Hub's legacy URL, else the host.
fn helper_server_url(registry: &str) -> String {
    if is_hub(registry) {
        DOCKER_HUB_CREDENTIAL_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn is_hub(host: &str) -> bool {
    matches!(
        host,
        DOCKER_HUB | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Docker's `ConvertToHostname`: drop the scheme and any path.
fn key_hostname(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, CredentialError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialError::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| CredentialError::BadJson {
            path: path.to_path_buf(),
            source,
        })?;
    if !v.is_object() {
        return Err(CredentialError::BadFile {
            path: path.to_path_buf(),
            detail: "expected a JSON object".into(),
        });
    }
    Ok(Some(v))
}

/// A key `registry/namespace[/…]` (no scheme): containers-auth.json(5).
fn is_namespaced_key(key: &str) -> bool {
    !key.contains("://") && key.trim_end_matches('/').contains('/')
}

fn auths_entry(
    config: &serde_json::Value,
    path: &Path,
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Resolved>, CredentialError> {
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let matches = |key: &str| {
        let h = key_hostname(key);
        !is_namespaced_key(key) && (h == registry || (is_hub(registry) && is_hub(h)))
    };
    // The longest `registry/namespace` key that is a prefix of the
    // repository (at a `/`) wins; then the registry's own key.
    let full = repository.map(|r| format!("{registry}/{r}"));
    let namespaced = full.as_deref().and_then(|full| {
        auths
            .iter()
            .filter(|(k, _)| is_namespaced_key(k))
            .filter(|(k, _)| {
                let k = k.trim_end_matches('/');
                full == k
                    || full
                        .strip_prefix(k)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(k, _)| k.trim_end_matches('/').len())
    });
    // An exact key beats one that only matches after reducing a URL.
    let exact = [registry.to_string(), helper_server_url(registry)];
    let found = namespaced
        .or_else(|| exact.iter().find_map(|k| auths.get_key_value(k.as_str())))
        .or_else(|| auths.iter().find(|(k, _)| matches(k)));
    let Some((key, entry)) = found else {
        return Ok(None);
    };
    let s = |f: &str| {
        entry
            .get(f)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let source = format!("{} (auths[{key:?}])", path.display());
    let mut username = s("username");
    let mut password = s("password");
    if let Some(auth) = s("auth") {
        let bad = || CredentialError::BadAuth {
            path: path.to_path_buf(),
            key: key.clone(),
        };
        let raw = auth.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw.trim_end_matches('='))
            })
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    let credential = if let Some(t) = s("registrytoken") {
        Credential::RegistryToken(Secret::new(t))
    } else if let Some(t) = s("identitytoken") {
        Credential::IdentityToken {
            username,
            token: Secret::new(t),
        }
    } else if let (Some(u), Some(p)) = (username, password) {
        Credential::Basic {
            username: u,
            password: Secret::new(p),
        }
    } else {
        // `{}` entries are what docker leaves in auths when a helper holds the secret.
        return Ok(None);
    };
    Ok(Some(Resolved { credential, source }))
}

/// Stores credentials like `docker login`: through `credHelpers[registry]` or
/// `credsStore` when the config names one (so lookups, which ask the helper
/// first, find them), else as base64 `auths[key].auth` in config.json.
/// config.json is rewritten atomically with mode 0600 and keeps every other key.
/// `config_dir` defaults to `$DOCKER_CONFIG` or `~/.docker`. Returns the file
/// (or, for a helper, the config naming it). Does not check the credentials:
/// do that first with `RegistryClient::check_login`.
pub fn login(
    registry: &str,
    username: &str,
    password: &Secret,
    config_dir: Option<&Path>,
) -> Result<PathBuf, CredentialError> {
    let dir = match config_dir {
        Some(d) => d.to_path_buf(),
        None => docker_config_dir_from(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .ok_or(CredentialError::NoConfigDir)?,
    };
    let path = dir.join("config.json");
    let mut config = read_json(&path)?.unwrap_or_else(|| serde_json::json!({}));
    let server = helper_server_url(registry);
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.get(registry).or_else(|| h.get(&server)))
        .or_else(|| config.get("credsStore"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(helper) = helper {
        store_with_helper(&helper, &path, &server, username, password)?;
        return Ok(path);
    }
    let key = if is_hub(registry) {
        DOCKER_HUB_CREDENTIAL_KEY.to_string()
    } else {
        registry.to_string()
    };
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    let obj = config
        .as_object_mut()
        .expect("read_json only returns objects");
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    auths
        .as_object_mut()
        .expect("just made an object")
        .insert(key, serde_json::json!({ "auth": auth }));
    write_private(
        &dir,
        &path,
        &serde_json::to_vec_pretty(&config).expect("JSON values serialise"),
    )?;
    Ok(path)
}

fn store_with_helper(
    helper: &str,
    config: &Path,
    server: &str,
    username: &str,
    password: &Secret,
) -> Result<(), CredentialError> {
    let failed = |detail: String| CredentialError::Helper {
        helper: helper.to_string(),
        server: server.to_string(),
        detail,
    };
    let helper_io = |source| CredentialError::HelperIo {
        helper: helper.to_string(),
        server: server.to_string(),
        source,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("store")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CredentialError::HelperMissing {
                helper: helper.to_string(),
                config: config.to_path_buf(),
            },
            _ => helper_io(e),
        })?;
    let body = serde_json::json!({ "ServerURL": server, "Username": username, "Secret": password.expose() });
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(body.to_string().as_bytes())
            .map_err(helper_io)?;
    }
    let out = child.wait_with_output().map_err(helper_io)?;
    if !out.status.success() {
        return Err(failed(format!("`store` exited with {}", out.status)));
    }
    Ok(())
}

fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), CredentialError> {
    let werr = |source| CredentialError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(werr)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(werr)?;
    }
    tmp.write_all(bytes).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests;
