//! What the registry client adds to the one HTTP client (`crate::http`):
//! which hosts may use plain http, the push-wide retry budget, `--timeout`,
//! registries that stopped answering, counters, and turning registry replies
//! into one-line errors. Auth lives in `auth`, the protocol in `client`.

use super::error::{chain_message, RegistryError};
use crate::http::{is_certificate_error, HttpClient, RetryPolicy, WithoutUrl};
pub(crate) use crate::http::{is_retryable_status, retry_after};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How the client talks to registries.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Extra PEM CA bundles trusted on top of the system store and SSL_CERT_FILE.
    pub ca_files: Vec<PathBuf>,
    /// Registries (`host` or `host:port`) that may use plain http or an
    /// unverifiable certificate, like Docker's `insecure-registries`.
    pub insecure_registries: Vec<String>,
    /// Upload blobs in PATCH chunks of this size instead of one streamed PUT
    /// (for proxies that cap request bodies).
    pub chunk_size: Option<u64>,
    /// Parallel blob transfers.
    pub jobs: usize,
    /// Never negotiate HTTP/2 (some proxies reset long HTTP/2 uploads).
    pub http1_only: bool,
    // The five fields below are the one `crate::http::RetryPolicy`, spelled
    // out so that options keep their struct-literal form (`policy()` gathers them).
    /// Extra attempts after the first on connection errors, 408, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff; doubles per attempt. Defaults from IMGBUILD_RETRY_BASE_MS.
    pub retry_base: Duration,
    /// The longest wait honoured from a Retry-After header or the backoff.
    pub max_retry_wait: Duration,
    /// Connecting (TCP and TLS) must finish within this.
    pub connect_timeout: Duration,
    /// The stall rule: a request whose reply moves no byte for this long fails
    /// (and an upload must average at least `MIN_UPLOAD_RATE` after it).
    pub stall_timeout: Duration,
    /// Retries this client may spend in all (one push); per request and per
    /// blob step `max_retries` still applies.
    pub retry_budget: u32,
    /// `--timeout`: nothing is sent, and no retry waited for, after this much
    /// time from the client's creation.
    pub timeout: Option<Duration>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        TransportOptions {
            ca_files: Vec::new(),
            insecure_registries: Vec::new(),
            chunk_size: None,
            jobs: 4,
            http1_only: false,
            max_retries: policy.max_retries,
            retry_base: policy.retry_base,
            max_retry_wait: policy.max_retry_wait,
            connect_timeout: policy.connect_timeout,
            stall_timeout: policy.stall_timeout,
            retry_budget: 12,
            timeout: None,
        }
    }
}

impl TransportOptions {
    /// The retry and timeout policy these options spell out.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            retry_base: self.retry_base,
            max_retry_wait: self.max_retry_wait,
            connect_timeout: self.connect_timeout,
            stall_timeout: self.stall_timeout,
        }
    }
}

/// Uploads may take as long as their size needs at this rate, plus the stall
/// window; slower than this, a registry that stopped reading counts as stalled.
pub const MIN_UPLOAD_RATE: u64 = 32 * 1024;

/// Why a request is being tried again, for `-v`.
#[derive(Clone, Debug)]
pub struct RetryNotice {
    /// The operation, e.g. `uploading blob sha256:… to host/repo`.
    pub what: String,
    pub registry: String,
    /// The attempt about to be made, counting from 2.
    pub attempt: u32,
    pub wait: Duration,
    /// What went wrong, e.g. `HTTP 503` or `timed out`.
    pub reason: String,
}

impl std::fmt::Display for RetryNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: retrying {} (attempt {}) in {:.1} s: {}",
            self.registry,
            self.what,
            self.attempt,
            self.wait.as_secs_f64(),
            self.reason
        )
    }
}

/// Called for every retry (the CLI prints these with `-v`).
pub type RetryHook = Box<dyn Fn(&RetryNotice) + Send + Sync>;

/// Counters for tests and `--json` output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferStats {
    /// Every HTTP request sent, including pings, token requests and retries.
    pub requests: u64,
    /// Blob bytes handed to the network (counted again when a retry resends).
    pub blob_bytes_uploaded: u64,
    pub blob_bytes_downloaded: u64,
    pub retries: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub blob_bytes_uploaded: AtomicU64,
    pub blob_bytes_downloaded: AtomicU64,
    pub retries: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> TransferStats {
        TransferStats {
            requests: self.requests.load(Ordering::Relaxed),
            blob_bytes_uploaded: self.blob_bytes_uploaded.load(Ordering::Relaxed),
            blob_bytes_downloaded: self.blob_bytes_downloaded.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Transport {
    pub opts: TransportOptions,
    /// Certificates, timeouts and the retry policy; its verifying client is
    /// made at first use. Shared by the clients of one run, as is
    /// `unverified` (a reqwest client's clone shares its connections): the
    /// trust store is loaded once and each registry gets one connection pool.
    http: Arc<HttpClient>,
    /// Accepts any certificate; used only for `insecure_registries`. It
    /// loads no trust store.
    unverified: Option<Client>,
    pub counters: Arc<Counters>,
    deadline: Option<Instant>,
    budget_spent: AtomicU32,
    /// registry → why it is dead for the rest of the run: the first request
    /// to it that timed out or whose connection was refused (issue 26).
    /// Shared by the clients of one run ([`Transport::share_run_of`]).
    dead: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    pub hook: OnceLock<RetryHook>,
}

/// What a failed attempt was, for the retry decision and `-v`.
pub(crate) enum Failure<'a> {
    Status(StatusCode),
    Wire(&'a reqwest::Error),
    /// A restarted upload step, with its error's text.
    Step(String),
}

impl Failure<'_> {
    fn reason(&self) -> String {
        match self {
            Failure::Status(s) => format!("HTTP {}", s.as_u16()),
            Failure::Wire(e) => chain_message(&WithoutUrl(e)),
            Failure::Step(s) => s.clone(),
        }
    }
}

impl Transport {
    pub fn new(opts: TransportOptions) -> Result<Self, RegistryError> {
        let http = Arc::new(HttpClient::new(
            opts.policy(),
            opts.http1_only,
            &opts.ca_files,
        )?);
        let unverified = if opts.insecure_registries.is_empty() {
            None
        } else {
            Some(http.unverified()?)
        };
        Ok(Transport {
            http,
            unverified,
            deadline: opts.timeout.map(|t| Instant::now() + t),
            opts,
            counters: Arc::default(),
            budget_spent: AtomicU32::new(0),
            dead: Default::default(),
            hook: OnceLock::new(),
        })
    }

    /// Listed in `insecure_registries` (by `host:port` or bare host).
    pub fn is_listed_insecure(&self, host: &str) -> bool {
        let bare = strip_port(host);
        self.opts
            .insecure_registries
            .iter()
            .any(|h| h == host || h == bare)
    }

    /// Plain http is allowed only on loopback or for listed insecure registries.
    pub fn allows_http(&self, host: &str) -> bool {
        is_loopback(host) || self.is_listed_insecure(host)
    }

    /// The client for requests to `host`; the first one that verifies
    /// certificates loads the system trust store.
    pub fn client_for(&self, host: &str) -> Result<&Client, RegistryError> {
        match (self.is_listed_insecure(host), &self.unverified) {
            (true, Some(c)) => Ok(c),
            _ => Ok(self.http.verified()?),
        }
    }

    /// The error for a request to `registry` that failed on the wire: a
    /// certificate that could not be checked for want of any CA certificate
    /// says so, and how to provide them.
    pub fn connection_error(
        &self,
        what: &str,
        registry: &str,
        e: &reqwest::Error,
    ) -> RegistryError {
        if self.http.without_roots() && is_certificate_error(e) {
            return RegistryError::NoCaBundle {
                what: what.to_string(),
                registry: registry.to_string(),
                bundle: crate::http::missing_bundle(),
            };
        }
        connection_error(what, registry, e)
    }

    /// Time left before `--timeout`; `None` without one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The error once `--timeout` has passed, or once `registry` is dead: a
    /// request to it timed out or was refused, and asking again would only
    /// wait again (a dead host stays dead for the run).
    pub fn check_alive(&self, what: &str, registry: &str) -> Result<(), RegistryError> {
        if let (Some(left), Some(total)) = (self.remaining(), self.opts.timeout) {
            if left.is_zero() {
                return Err(RegistryError::Deadline {
                    what: what.to_string(),
                    registry: registry.to_string(),
                    seconds: total.as_secs_f64(),
                });
            }
        }
        if let Some(cause) = self.dead_cause(registry) {
            return Err(RegistryError::Dead {
                what: what.to_string(),
                registry: registry.to_string(),
                cause,
            });
        }
        Ok(())
    }

    /// Marks `registry` dead when a request to it timed out or its
    /// connection was refused; the first such cause is kept.
    pub fn note_wire_error(&self, registry: &str, e: &reqwest::Error) {
        if e.is_timeout() || e.is_connect() {
            self.mark_dead(registry, chain_message(&WithoutUrl(e)));
        }
    }

    /// From now on, a host dead for `other` is dead for this one, and the
    /// other way round: one run, one verdict per host. Connections and the
    /// trust store are `other`'s too (issue 26: one TLS connection per
    /// registry, as far as HTTP/2 lets requests share one). Counters, the
    /// retry budget and the retry hook stay this client's own.
    pub fn share_run_of(&mut self, other: &Transport) {
        self.dead = other.dead.clone();
        self.http = other.http.clone();
        self.unverified = other.unverified.clone();
    }

    /// Marks `registry` dead for the rest of the run, for `cause` (kept if first).
    pub fn mark_dead(&self, registry: &str, cause: String) {
        self.dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(registry.to_string())
            .or_insert(cause);
    }

    fn dead_cause(&self, registry: &str) -> Option<String> {
        self.dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
            .cloned()
    }

    /// Bounds one request: by `--timeout`, and an upload of `upload` bytes by
    /// the stall window plus its size at `MIN_UPLOAD_RATE` (the client's stall
    /// rule would count the whole upload as one wait for the reply).
    pub fn bound(&self, req: &mut reqwest::blocking::Request, upload: Option<u64>) {
        let mut limit = upload
            .map(|size| self.opts.stall_timeout + Duration::from_secs(size / MIN_UPLOAD_RATE));
        if let Some(left) = self.remaining() {
            limit = Some(limit.map_or(left, |l| l.min(left)));
        }
        let t = req.timeout_mut();
        *t = match (*t, limit) {
            (Some(x), Some(l)) => Some(x.min(l)),
            // A request's own timeout bounds it in total (a download too): so
            // others keep the client's stall rule unless the deadline is nearer.
            (None, Some(l)) if upload.is_some() || l < self.opts.stall_timeout => Some(l),
            (t, _) => t,
        };
    }

    /// Sends one request, counting it and bounding it by `--timeout`.
    pub fn send(&self, req: RequestBuilder) -> Result<Response, reqwest::Error> {
        let (client, req) = req.build_split();
        self.send_request(&client, req?, None)
    }

    /// Sends `req` with `client` (from [`Transport::client_for`]), counted and
    /// bounded as [`Transport::bound`] says.
    pub fn send_request(
        &self,
        client: &Client,
        mut req: reqwest::blocking::Request,
        upload: Option<u64>,
    ) -> Result<Response, reqwest::Error> {
        self.bound(&mut req, upload);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        // The path only: a query may hold an upload's state token.
        let mut span = crate::trace::span(|| format!("{} {}", req.method(), req.url().path()));
        let resp = client.execute(req);
        span.add(|| match &resp {
            Ok(r) => format!(" -> {}", r.status().as_u16()),
            Err(_) => " -> failed".to_string(),
        });
        resp
    }

    /// Whether to try again after `failure` on attempt `attempt` (from 0),
    /// and if so waits first (and tells `-v`). No when the request's own
    /// retries, the client's budget or `--timeout` are spent, or when the
    /// registry is dead (it timed out or refused a connection).
    pub fn retry(
        &self,
        what: &str,
        registry: &str,
        attempt: u32,
        failure: Failure<'_>,
        retry_after: Option<Duration>,
    ) -> bool {
        let Some(mut wait) = self.http.policy().next_wait(attempt, retry_after) else {
            return false;
        };
        if self.dead_cause(registry).is_some() {
            return false;
        }
        let spent = self.budget_spent.fetch_add(1, Ordering::Relaxed);
        if spent >= self.opts.retry_budget {
            return false;
        }
        if let Some(left) = self.remaining() {
            if left <= wait {
                return false;
            }
            wait = wait.min(left);
        }
        if let Some(hook) = self.hook.get() {
            hook(&RetryNotice {
                what: what.to_string(),
                registry: registry.to_string(),
                attempt: attempt + 2,
                wait,
                reason: failure.reason(),
            });
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(wait);
        true
    }

    /// Sends a request that needs no registry auth (pings, token requests),
    /// retrying connection errors and retryable statuses.
    pub fn send_retrying(
        &self,
        what: &str,
        host: &str,
        build: &dyn Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            self.check_alive(what, host)?;
            match self.send(build(self.client_for(host)?)) {
                Ok(resp) if is_retryable_status(resp.status()) => {
                    let wait = retry_after(&resp);
                    if !self.retry(what, host, attempt, Failure::Status(resp.status()), wait) {
                        return Ok(resp);
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    self.note_wire_error(host, &e);
                    let err = self.connection_error(what, host, &e);
                    if !err.is_retryable()
                        || !self.retry(what, host, attempt, Failure::Wire(&e), None)
                    {
                        return Err(err);
                    }
                }
            }
            attempt += 1;
        }
    }
}

pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// 127.0.0.0/8, ::1, `localhost` and `*.localhost`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn connection_error(what: &str, registry: &str, e: &reqwest::Error) -> RegistryError {
    if e.is_redirect() {
        // Only the path: a redirect's query may carry a signature or upload state.
        return RegistryError::Redirects {
            what: what.to_string(),
            registry: registry.to_string(),
            path: e
                .url()
                .map_or_else(|| "the request".to_string(), |u| u.path().to_string()),
            limit: crate::http::REDIRECT_LIMIT,
        };
    }
    let detail = chain_message(&WithoutUrl(e));
    // A certificate problem will not fix itself; everything else on the wire may.
    let certificate = is_certificate_error(e);
    let retryable = crate::http::is_retryable_wire_error(e);
    let hint = if certificate {
        " (is the registry's CA in the system store, SSL_CERT_FILE or --ca-file?)"
    } else {
        ""
    };
    RegistryError::Connection {
        what: what.to_string(),
        registry: registry.to_string(),
        detail: format!("{detail}{hint}"),
        retryable,
    }
}

const DETAIL_MAX: usize = 300;

/// Turns a non-success reply into an error, reading at most 64 KiB of body
/// for at most 10 s ([`crate::http::ERROR_BODY`]). Registry error bodies are
/// parsed leniently: `{"errors":[{code,message,detail}]}`, anything else is
/// shown as text, on one line, truncated.
pub(crate) fn status_error(what: &str, registry: &str, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = crate::http::read_truncated(resp, &crate::http::ERROR_BODY);
    let (codes, detail) = describe_error_body(&body);
    let detail = if detail.is_empty() {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no details")
            .to_string()
    } else {
        detail
    };
    let has = |c: &str| codes.iter().any(|x| x == c);
    let (what, registry) = (what.to_string(), registry.to_string());
    if status == 429 || has("TOOMANYREQUESTS") {
        let mut detail = detail;
        let limits: Vec<String> = [
            "ratelimit-limit",
            "ratelimit-remaining",
            "docker-ratelimit-source",
        ]
        .iter()
        .filter_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("{h}: {}", one_line(v)))
        })
        .collect();
        if !limits.is_empty() {
            detail = format!("{detail}; {}", limits.join(", "));
        }
        return RegistryError::RateLimited {
            what,
            registry,
            detail,
        };
    }
    if has("DENIED") || status == 403 {
        return RegistryError::Denied {
            what,
            registry,
            detail,
        };
    }
    if has("NAME_UNKNOWN") {
        return RegistryError::NameUnknown {
            what,
            registry,
            detail,
        };
    }
    if status == 401 || has("UNAUTHORIZED") {
        return RegistryError::Unauthorized {
            what,
            registry,
            detail,
        };
    }
    let retryable = StatusCode::from_u16(status).is_ok_and(is_retryable_status);
    RegistryError::Status {
        what,
        registry,
        status,
        detail,
        retryable,
    }
}

/// (error codes, human text) from a registry error body.
pub(crate) fn describe_error_body(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        detail: Option<serde_json::Value>,
    }
    if let Ok(parsed) = serde_json::from_slice::<Body>(body) {
        if !parsed.errors.is_empty() {
            let codes = parsed
                .errors
                .iter()
                .filter_map(|e| e.code.clone())
                .collect();
            let text = parsed
                .errors
                .iter()
                .map(|e| {
                    let mut s = e.code.clone().unwrap_or_default();
                    if let Some(m) = e.message.as_deref().filter(|m| !m.is_empty()) {
                        if !s.is_empty() {
                            s.push_str(": ");
                        }
                        s.push_str(m);
                    }
                    match &e.detail {
                        Some(serde_json::Value::Null) | None => {}
                        Some(serde_json::Value::String(d)) if !d.is_empty() => {
                            s.push_str(&format!(" ({d})"))
                        }
                        Some(serde_json::Value::String(_)) => {}
                        Some(other) => s.push_str(&format!(" ({other})")),
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ");
            return (codes, truncate(&one_line(&text)));
        }
    }
    let text = String::from_utf8_lossy(body);
    (Vec::new(), truncate(&one_line(text.trim())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= DETAIL_MAX {
        return s.to_string();
    }
    let cut: String = s.chars().take(DETAIL_MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests;
