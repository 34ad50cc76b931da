//! The one HTTP client of imgbuild, for registries and package indexes alike:
//! which certificates it trusts (the system store, SSL_CERT_FILE and every
//! `--ca-file`), how long it waits, and when, how often and after how long it
//! tries again ([`RetryPolicy`]). Registry auth and the distribution protocol
//! live in `registry`, index credentials in `lock::index_config`; this module
//! knows neither, so it never sees a credential it could leak.
//!
//! Every reply read whole into memory is read through [`read_capped`] (or
//! [`read_truncated`] for error bodies) with a [`BodyCap`]: a size and a
//! total deadline per kind of reply, so a server that sends without end, or a
//! byte at a time, costs a bounded amount of memory and time.

mod trust;

use reqwest::blocking::{Client, ClientBuilder, Response};
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable holding the base retry backoff in milliseconds
/// (default 1000); tests set it low so fault scenarios run fast.
pub const RETRY_BASE_ENV: &str = "IMGBUILD_RETRY_BASE_MS";

/// The most redirects one request follows; past it, the request fails (a
/// server that redirects in a loop).
pub const REDIRECT_LIMIT: usize = 10;

/// Why the client could not be made, or a reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{what} is over {}, the most a {} may hold; the server is not what was expected or sends without end", size_text(cap.limit), cap.kind)]
    ReplyTooLarge { what: String, cap: BodyCap },
    #[error("{what} took over {:?}, the most a {} may take; the server is too slow or sends without end", cap.deadline, cap.kind)]
    ReplyTooSlow { what: String, cap: BodyCap },
    #[error("reading {what} broke off")]
    ReplyRead {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} is not a PEM certificate bundle")]
    CaBundle {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("CA file {path} holds no PEM certificate")]
    CaEmpty { path: PathBuf },
    #[error("setting up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("setting up TLS")]
    Tls(#[source] rustls::Error),
}

/// How long a request may wait and how it is tried again: one policy for
/// registries, index pages and wheel downloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first on connection errors, 408, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff; doubles per attempt. Defaults from IMGBUILD_RETRY_BASE_MS.
    pub retry_base: Duration,
    /// The longest wait honoured from a Retry-After header or the backoff.
    pub max_retry_wait: Duration,
    /// Connecting (TCP and TLS) must finish within this.
    pub connect_timeout: Duration,
    /// The stall rule: a request whose reply moves no byte for this long fails.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let base_ms = std::env::var(RETRY_BASE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        RetryPolicy {
            max_retries: 3,
            retry_base: Duration::from_millis(base_ms),
            max_retry_wait: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failed<E> {
    /// Trying again may work (a dropped connection, a 503), after
    /// `retry_after` when the server named a wait.
    Transient {
        error: E,
        retry_after: Option<Duration>,
    },
    /// It will not (a 404, a certificate that cannot be verified).
    Final(E),
}

/// What a request that was not answered with success came to.
#[derive(Debug)]
pub enum Unanswered {
    /// A reply with a status worth retrying (408, 429, 500, 502, 503, 504).
    Reply(Box<Response>),
    /// No reply: the connection, TLS or the transfer failed.
    Wire(reqwest::Error),
}

impl<E> Failed<E> {
    /// The same failure with another error.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Failed<F> {
        match self {
            Failed::Transient { error, retry_after } => Failed::Transient {
                error: f(error),
                retry_after,
            },
            Failed::Final(error) => Failed::Final(f(error)),
        }
    }
}

impl Unanswered {
    /// As a reqwest error: a reply becomes the error for its status.
    pub fn into_error(self) -> reqwest::Error {
        match self {
            Unanswered::Reply(resp) => match resp.error_for_status() {
                Err(e) => e,
                Ok(_) => unreachable!("every retryable status is an error status"),
            },
            Unanswered::Wire(e) => e,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 0):
    /// Retry-After when the server gave one, else exponential backoff; capped.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.retry_base.saturating_mul(1u32 << attempt.min(16));
        retry_after.unwrap_or(exp).min(self.max_retry_wait)
    }

    /// The wait before trying again after failed attempt `attempt` (from 0),
    /// or `None` once `max_retries` are spent.
    pub fn next_wait(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        (attempt < self.max_retries).then(|| self.backoff(attempt, retry_after))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are
    /// spent (then its last error is the answer), waiting between attempts.
    pub fn run<T, E>(&self, mut attempt: impl FnMut() -> Result<T, Failed<E>>) -> Result<T, E> {
        let mut tried = 0;
        loop {
            match attempt() {
                Ok(done) => return Ok(done),
                Err(Failed::Final(error)) => return Err(error),
                Err(Failed::Transient { error, retry_after }) => {
                    match self.next_wait(tried, retry_after) {
                        Some(wait) => std::thread::sleep(wait),
                        None => return Err(error),
                    }
                }
            }
            tried += 1;
        }
    }

    /// A client builder with this policy's timeouts.
    pub fn client_builder(&self, http1_only: bool) -> ClientBuilder {
        // The stall rule: reqwest's blocking timeout bounds the wait for the
        // reply's headers and then each read of its body, so a reply that moves
        // no byte for `stall_timeout` fails. Registry uploads override it per
        // request with a bound by their size.
        let b = Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .timeout(self.stall_timeout)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(REDIRECT_LIMIT))
            .tcp_keepalive(Duration::from_secs(30));
        if http1_only {
            b.http1_only()
        } else {
            b
        }
    }
}

/// Sorts out one sent request: a success or a reply the caller must judge
/// (404, 401) is `Ok`; a retryable status or wire error is transient; a
/// certificate that cannot be verified, a redirect loop or a request that
/// could not be built is final.
pub fn judge(sent: Result<Response, reqwest::Error>) -> Result<Response, Failed<Unanswered>> {
    match sent {
        Ok(resp) if is_retryable_status(resp.status()) => Err(Failed::Transient {
            retry_after: retry_after(&resp),
            error: Unanswered::Reply(Box::new(resp)),
        }),
        Ok(resp) => Ok(resp),
        Err(e) if is_retryable_wire_error(&e) => Err(Failed::Transient {
            error: Unanswered::Wire(e),
            retry_after: None,
        }),
        Err(e) => Err(Failed::Final(Unanswered::Wire(e))),
    }
}

pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// A failure on the wire that may fix itself: not a certificate problem, a
/// redirect loop or a request that could not be built.
pub fn is_retryable_wire_error(e: &reqwest::Error) -> bool {
    !e.is_builder() && !is_certificate_error(e) && !e.is_redirect()
}

/// Only the delta-seconds form; an HTTP-date falls back to our own backoff.
pub fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether `e` is about a certificate (one that could not be verified): it
/// will not fix itself. Only the causes are read: `e`'s own text holds the
/// URL, which may say anything.
pub fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.to_string().to_ascii_lowercase().contains("certificate") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The certificates of every `--ca-file`, each file a PEM bundle holding at
/// least one, each certificate parsed now so a bad one is named before
/// anything is sent. Registries and package indexes trust the same extra CAs.
pub fn read_ca_files(paths: &[PathBuf]) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let mut certs = Vec::new();
    for path in paths {
        let pem = std::fs::read(path).map_err(|source| HttpError::CaFile {
            path: path.clone(),
            source,
        })?;
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| HttpError::CaBundle {
            path: path.clone(),
            source,
        };
        let bundle = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.into()))?;
        if bundle.is_empty() {
            return Err(HttpError::CaEmpty { path: path.clone() });
        }
        for cert in &bundle {
            rustls::RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| bad(e.into()))?;
        }
        certs.extend(bundle);
    }
    Ok(certs)
}

/// Where the CA certificates were looked for, for the error that says there
/// were none.
pub fn missing_bundle() -> String {
    match std::env::var_os("SSL_CERT_FILE") {
        Some(f) => format!("SSL_CERT_FILE {} holds none", PathBuf::from(f).display()),
        None => "no system CA bundle (such as /etc/ssl/certs/ca-certificates.crt)".to_string(),
    }
}

/// The client with its policy and trust, made at first use; the system trust
/// store is read at the first certificate to check, which a warm build (or a
/// push that never leaves loopback) does not have.
pub struct HttpClient {
    policy: RetryPolicy,
    http1_only: bool,
    /// The certificates of `--ca-file`, read when the client is made.
    ca_certs: Vec<CertificateDer<'static>>,
    verified: OnceLock<Verified>,
    /// Held while the verifying client is made, so that threads asking at
    /// once (the registry cache and the push's look-ahead) make one client,
    /// with one connection pool and one trust store, between them.
    making: std::sync::Mutex<()>,
}

/// The client that verifies certificates, and what it trusts.
struct Verified {
    client: Client,
    store: Arc<trust::LazyStore>,
}

impl HttpClient {
    /// Reads `ca_files` now (a bad one is an error before anything is sent);
    /// the system store is read at the first certificate to check.
    pub fn new(
        policy: RetryPolicy,
        http1_only: bool,
        ca_files: &[PathBuf],
    ) -> Result<Self, HttpError> {
        Ok(HttpClient {
            policy,
            http1_only,
            ca_certs: read_ca_files(ca_files)?,
            verified: OnceLock::new(),
            making: std::sync::Mutex::default(),
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The verifying client: the system trust store, SSL_CERT_FILE and every
    /// `--ca-file`. Without any of them (a container with no CA bundle) the
    /// client still works for plain http, and trusts no certificate.
    pub fn verified(&self) -> Result<&Client, HttpError> {
        if let Some(v) = self.verified.get() {
            return Ok(&v.client);
        }
        let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.verified.get() {
            return Ok(&v.client);
        }
        let v = self.make_verified()?;
        Ok(&self.verified.get_or_init(|| v).client)
    }

    /// Whether the verifying client found no CA certificate at all, so a
    /// certificate error means a missing bundle, not an untrusted server.
    pub fn without_roots(&self) -> bool {
        self.verified.get().is_some_and(|v| v.store.found_none())
    }

    /// Whether the trust store has been read (tests: plain http never reads it).
    #[cfg(test)]
    pub fn trust_store_loaded(&self) -> bool {
        self.verified.get().is_some_and(|v| v.store.is_loaded())
    }

    /// A client that accepts any certificate, for hosts the user listed as
    /// insecure. It loads no trust store.
    pub fn unverified(&self) -> Result<Client, HttpError> {
        self.policy
            .client_builder(self.http1_only)
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(HttpError::Client)
    }

    fn make_verified(&self) -> Result<Verified, HttpError> {
        let _span = crate::trace::span(|| "http: the verifying client".into());
        let (tls, store) =
            trust::client_config(self.http1_only, self.ca_certs.clone()).map_err(HttpError::Tls)?;
        let client = self
            .policy
            .client_builder(self.http1_only)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(HttpError::Client)?;
        Ok(Verified { client, store })
    }
}

/// How much of one kind of reply imgbuild holds in memory, and how long it
/// reads it in all. The stall rule ends a reply that stops; the deadline ends
/// one that trickles (checked between reads, so a reply ends at the latest
/// one stall timeout after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyCap {
    /// What the reply is, for the error: "token reply".
    pub kind: &'static str,
    /// The most bytes kept.
    pub limit: u64,
    /// The longest the whole body may take to arrive.
    pub deadline: Duration,
}

impl BodyCap {
    const fn new(kind: &'static str, limit: u64, deadline_secs: u64) -> BodyCap {
        BodyCap {
            kind,
            limit,
            deadline: Duration::from_secs(deadline_secs),
        }
    }
}

/// A registry token service's reply: a JSON object with a token of a few KiB.
/// (30 s, as when it was read with reqwest's `json()`, whose whole body the
/// client timeout bounded.)
pub const TOKEN_REPLY: BodyCap = BodyCap::new("token reply", 1 << 20, 30);

/// A package index's PEP 691 project page: the largest real ones (projects
/// with nightly builds) are tens of MiB, which may take longer than the 30 s
/// reqwest's `bytes()` allowed them before.
pub const INDEX_PAGE: BodyCap = BodyCap::new("package index page", 64 << 20, 120);

/// An image manifest or index: registries refuse to store larger ones.
pub const MANIFEST: BodyCap = BodyCap::new("manifest", 16 << 20, 120);

/// An image config read for its diff_ids.
pub const IMAGE_CONFIG: BodyCap = BodyCap::new("image config", 4 << 20, 120);

/// The body of an error reply, read only to explain the error: cut at the
/// limit or the deadline, never failed.
pub const ERROR_BODY: BodyCap = BodyCap::new("error reply", 64 << 10, 10);

/// The whole of `reply`, or an error naming `what` once it is over `cap`'s
/// size or deadline: the server decides how much it sends, not how much we keep.
pub fn read_capped(reply: impl Read, cap: &BodyCap, what: &str) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    match read_within(reply, cap, &mut body) {
        Ok(Ending::Complete) => Ok(body),
        Ok(Ending::OverLimit) => Err(HttpError::ReplyTooLarge {
            what: what.to_string(),
            cap: *cap,
        }),
        Ok(Ending::OverDeadline) => Err(HttpError::ReplyTooSlow {
            what: what.to_string(),
            cap: *cap,
        }),
        Err(source) => Err(HttpError::ReplyRead {
            what: what.to_string(),
            source,
        }),
    }
}

/// As much of `reply` as arrives within `cap` (its size and its deadline);
/// a broken transfer keeps what came. For bodies read only to explain an error.
pub fn read_truncated(reply: impl Read, cap: &BodyCap) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = read_within(reply, cap, &mut body);
    body
}

/// How a capped read ended.
enum Ending {
    Complete,
    OverLimit,
    OverDeadline,
}

/// Reads `reply` into `body` until its end, `cap.limit` bytes or
/// `cap.deadline`. No byte past the limit is kept, so the buffer never grows
/// beyond it.
fn read_within(mut reply: impl Read, cap: &BodyCap, body: &mut Vec<u8>) -> std::io::Result<Ending> {
    let started = Instant::now();
    let mut chunk = vec![0; 64 << 10];
    loop {
        let n = match reply.read(&mut chunk) {
            Ok(0) => return Ok(Ending::Complete),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = cap.limit.saturating_sub(body.len() as u64);
        body.extend_from_slice(&chunk[..n.min(room as usize)]);
        if n as u64 > room {
            return Ok(Ending::OverLimit);
        }
        if started.elapsed() > cap.deadline {
            return Ok(Ending::OverDeadline);
        }
    }
}

/// `bytes` in the largest whole unit: "64 MiB", "64 KiB", "100 bytes".
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A reqwest error described by its kind and causes, without the URL: an
/// upload session's URL is a long opaque state blob, and an index URL may
/// carry a password; the caller names what was requested.
pub struct WithoutUrl<'a>(pub &'a reqwest::Error);

impl std::fmt::Debug for WithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for WithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let kind = if e.is_connect() {
            "connection failed"
        } else if e.is_timeout() {
            "timed out"
        } else if e.is_redirect() {
            "too many redirects"
        } else if e.is_body() || e.is_request() {
            "transfer interrupted"
        } else if e.is_decode() {
            "unreadable response"
        } else {
            "request failed"
        };
        f.write_str(kind)
    }
}

impl std::error::Error for WithoutUrl<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retry_base: Duration::from_millis(100),
            max_retry_wait: Duration::from_secs(5),
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let p = policy();
        assert_eq!(p.backoff(0, None), Duration::from_millis(100));
        assert_eq!(p.backoff(2, None), Duration::from_millis(400));
        assert_eq!(
            p.backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.backoff(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
        assert_eq!(p.backoff(30, None), Duration::from_secs(5));
    }

    #[test]
    fn the_wait_doubles_until_the_retries_are_spent() {
        let p = policy();
        assert_eq!(p.next_wait(0, None), Some(Duration::from_millis(100)));
        assert_eq!(p.next_wait(2, None), Some(Duration::from_millis(400)));
        assert_eq!(
            p.next_wait(1, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(p.next_wait(3, None), None);
    }

    #[test]
    fn run_retries_transient_failures_up_to_max_retries_and_stops_at_a_final_one() {
        let p = RetryPolicy {
            retry_base: Duration::from_millis(1),
            max_retries: 2,
            ..Default::default()
        };
        let tries = Cell::new(0);
        let always_transient = || -> Result<(), Failed<u32>> {
            tries.set(tries.get() + 1);
            Err(Failed::Transient {
                error: tries.get(),
                retry_after: None,
            })
        };
        assert_eq!(p.run(always_transient), Err(3));

        tries.set(0);
        let final_at_once = || -> Result<(), Failed<&str>> {
            tries.set(tries.get() + 1);
            Err(Failed::Final("gone"))
        };
        assert_eq!(p.run(final_at_once), Err("gone"));
        assert_eq!(tries.get(), 1);

        tries.set(0);
        let second_works = || {
            tries.set(tries.get() + 1);
            match tries.get() {
                1 => Err(Failed::Transient {
                    error: (),
                    retry_after: None,
                }),
                n => Ok(n),
            }
        };
        assert_eq!(p.run(second_works), Ok(2));
    }

    #[test]
    fn a_reply_over_its_cap_fails_with_one_line_naming_it_and_its_cap() {
        let what = "the reply of the token service at https://auth.example/token";
        let endless = std::io::repeat(b'a');
        let err = read_capped(endless, &TOKEN_REPLY, what).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the reply of the token service at https://auth.example/token is over 1 MiB, \
             the most a token reply may hold; the server is not what was expected or sends \
             without end"
        );
        let page = std::io::repeat(b' ');
        let err = read_capped(page, &INDEX_PAGE, "the page of `h11`").unwrap_err();
        assert!(err.to_string().contains("is over 64 MiB"), "{err}");
    }

    #[test]
    fn a_reply_of_exactly_its_cap_is_read_whole() {
        let cap = BodyCap {
            limit: 10,
            ..TOKEN_REPLY
        };
        assert_eq!(read_capped(&[7u8; 10][..], &cap, "x").unwrap(), [7; 10]);
        assert!(read_capped(&[7u8; 11][..], &cap, "x").is_err());
    }

    #[test]
    fn an_error_body_is_cut_at_its_cap_and_never_fails() {
        assert_eq!(
            read_truncated(std::io::repeat(b'e'), &ERROR_BODY).len(),
            64 << 10
        );
        assert_eq!(read_truncated(&b"denied"[..], &ERROR_BODY), b"denied");
    }

    #[test]
    fn a_reply_that_trickles_ends_at_its_deadline() {
        use crate::test_http::{Reply, Server};
        let server = Server::start(|_| Reply::trickle(200, "{", b' ', Duration::from_millis(20)));
        let client = policy().client_builder(false).build().unwrap();
        let reply = client
            .get(format!("http://{}/token", server.addr))
            .send()
            .unwrap();
        let cap = BodyCap {
            deadline: Duration::from_millis(300),
            ..TOKEN_REPLY
        };
        let started = Instant::now();
        let err = read_capped(reply, &cap, "the reply").unwrap_err();
        assert!(matches!(err, HttpError::ReplyTooSlow { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.to_string()
                .contains("took over 300ms, the most a token reply may take"),
            "{err}"
        );
    }

    #[test]
    fn only_statuses_that_may_change_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 501, 505] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }
}
