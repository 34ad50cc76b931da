//! The core of the OCI distribution client: the endpoint and `execute`.
//!
//! Every request goes through `execute`, which finds the registry's endpoint
//! (https, or http where allowed), adds auth, replays once after a 401 with a
//! fresh token, and retries what is safe to retry. The operations themselves
//! live beside it, as go-containerregistry's `remote` package splits them:
//! `manifest` (get, head, put), `blob` (get, exists) and `upload` (push).

use super::auth::{parse_www_authenticate, preferred_challenge, Authenticator, Challenge};
use super::credentials::{Credential, CredentialSource};
use super::endpoints::EndpointMemory;
use super::error::RegistryError;
use super::transport::{
    is_retryable_status, retry_after, status_error, Counters, Failure, RetryNotice, TransferStats,
    Transport, TransportOptions,
};
use crate::digest::Digest;
use crate::reference::{api_host, Reference};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub use super::upload::{BlobUpload, OpenBlob, PushOutcome};
pub use crate::image::{
    MANIFEST_MEDIA_TYPES, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};

/// Bounds the `/v2/` probe: a plain-http server may never answer a TLS hello.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone)]
pub(super) struct Endpoint {
    /// `https://host[:port]` or `http://…`
    pub(super) base: Url,
    challenge: Option<Challenge>,
    /// Read from an earlier run's record, not yet answered in this one: a
    /// wire error forgets it and pings instead.
    recalled: bool,
}

pub struct RegistryClient {
    pub(super) transport: Transport,
    auth: Arc<Authenticator>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    pub(super) memory: EndpointMemory,
    /// Manifests this run fetched, by repository and digest: content
    /// addressed, so a second read (the push after the registry cache's)
    /// needs no request.
    fetched: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// The manifest each tag named when this run fetched it (or pushed it):
    /// the push after a build that read its tag as a registry cache asks no
    /// HEAD for it (issue 26).
    tags_read: Mutex<HashMap<String, Digest>>,
    /// Upload sessions opened ahead of their blobs, by registry and
    /// repository (`RegistryClient::open_uploads`); shared by the clients
    /// of one run.
    pub(super) opened: Arc<Mutex<OpenedUploads>>,
    /// Which TLS registries have answered a first request in this run.
    first_contacts: super::first_contact::FirstContacts,
}

/// Upload session URLs by (registry, repository).
pub(super) type OpenedUploads = HashMap<(String, String), Vec<String>>;

/// One request as `execute` sees it. `build` is called once per attempt, so a
/// body is recreated (and a file reopened) for every replay.
pub(super) struct Call<'a> {
    pub(super) registry: &'a str,
    pub(super) what: &'a str,
    pub(super) scopes: &'a [String],
    /// Retry connection errors and 408/429/5xx here; false where a failure
    /// leaves server state behind (upload session bodies).
    pub(super) retry: bool,
    /// The body is an upload of this many bytes: no stall rule while it is
    /// sent, a bound by its size instead.
    pub(super) upload: Option<u64>,
    pub(super) build: Build<'a>,
}

type Build<'a> = &'a dyn Fn(&Client, &Url) -> Result<RequestBuilder, RegistryError>;

impl<'a> Call<'a> {
    /// A request that is safe to repeat: retried on connection errors and 408/429/5xx.
    pub(super) fn new(
        registry: &'a str,
        what: &'a str,
        scopes: &'a [String],
        build: Build<'a>,
    ) -> Self {
        Call {
            registry,
            what,
            scopes,
            retry: true,
            upload: None,
            build,
        }
    }

    /// Sent once, like `once`, with an upload body of `size` bytes.
    pub(super) fn upload(self, size: u64) -> Self {
        Call {
            retry: false,
            upload: Some(size),
            ..self
        }
    }

    /// Sent once (but for a 401 replay): a failure may leave server state
    /// behind, so the caller restarts its whole step instead.
    pub(super) fn once(self) -> Self {
        Call {
            retry: false,
            ..self
        }
    }
}

impl RegistryClient {
    /// A client with its own connection pool; share it (it is `Sync`) across threads.
    pub fn new(
        options: TransportOptions,
        credentials: impl CredentialSource + 'static,
    ) -> Result<Self, RegistryError> {
        Ok(RegistryClient {
            transport: Transport::new(options)?,
            auth: Arc::new(Authenticator::new(Box::new(credentials))),
            endpoints: Mutex::default(),
            memory: EndpointMemory::default(),
            fetched: Mutex::default(),
            tags_read: Mutex::default(),
            opened: Arc::default(),
            first_contacts: Default::default(),
        })
    }

    pub(super) fn fetched_manifest(&self, r: &Reference, d: &Digest) -> Option<(Vec<u8>, String)> {
        let key = format!("{}/{}@{d}", r.registry, r.repository);
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// The manifest `tag` named when this run last fetched or pushed it by
    /// its tag, if it did.
    pub fn tag_as_read(&self, tag: &Reference) -> Option<Digest> {
        let key = format!("{}/{}:{}", tag.registry, tag.repository, tag.tag.as_ref()?);
        self.tags_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// Whether a run within a day saw `repo`'s repository hold the blob
    /// `digest` (kept by [`Self::remember_blob`]). Only a hint.
    pub fn remembers_blob(&self, repo: &Reference, digest: &Digest) -> bool {
        self.memory
            .knows_blob(&repo.registry, &repo.repository, digest)
    }

    /// Keeps (or, with `held` false, forgets) that `repo`'s repository holds `digest`.
    pub fn remember_blob(&self, repo: &Reference, digest: &Digest, held: bool) {
        self.memory
            .keep_blob(&repo.registry, &repo.repository, digest, held);
    }

    /// Keeps that `repo`'s tag `tag` names `digest` (a GET by tag, a PUT to it).
    pub(super) fn keep_tag_read(&self, repo: &Reference, tag: &str, digest: &Digest) {
        let key = format!("{}/{}:{tag}", repo.registry, repo.repository);
        self.tags_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, digest.clone());
    }

    pub(super) fn keep_fetched_manifest(
        &self,
        r: &Reference,
        d: &Digest,
        bytes: &[u8],
        media_type: &str,
    ) {
        let key = format!("{}/{}@{d}", r.registry, r.repository);
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (bytes.to_vec(), media_type.to_string()));
    }

    /// A client that shares `other`'s connections, trust store, verdicts on
    /// dead hosts and credentials' state (tokens, and which registries
    /// accepted or refused them), with counters of its own: two clients of
    /// one run, the image's and its attestations', made with the same
    /// credentials. The second then fetches no token of its own and sends
    /// no Basic request alone.
    pub fn sharing_run_of(mut self, other: &RegistryClient) -> Self {
        self.transport.share_run_of(&other.transport);
        self.auth = other.auth.clone();
        self.opened = other.opened.clone();
        self.first_contacts = other.first_contacts.clone();
        self
    }

    /// Keeps what this run learns of each registry's endpoint in `store`,
    /// and starts from what earlier runs kept there (src/registry/endpoints.rs).
    pub fn remember_endpoints(mut self, store: crate::store::Store) -> Self {
        self.memory = EndpointMemory::new(store);
        self
    }

    pub fn options(&self) -> &TransportOptions {
        &self.transport.opts
    }

    /// Called for every retry with its reason (the CLI prints them with `-v`).
    /// Only the first hook set is kept.
    pub fn on_retry(&self, hook: impl Fn(&RetryNotice) + Send + Sync + 'static) {
        let _ = self.transport.hook.set(Box::new(hook));
    }

    /// Requests made and bytes moved so far.
    pub fn stats(&self) -> TransferStats {
        self.transport.counters.snapshot()
    }

    /// Checks that the registry accepts our credentials (for `login`): a Basic
    /// registry must answer `/v2/` with them, a token service must issue a token.
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let what = format!("logging in to {registry}");
        let resp = self.execute(Call::new(registry, &what, &[], &|c, base| {
            Ok(c.get(join(base, "/v2/")))
        }))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(&what, registry, resp))
        }
    }

    /// The registry's base URL and auth challenge, found by pinging `/v2/`
    /// once: https first; plain http only where allowed (loopback, insecure list).
    pub(super) fn endpoint(&self, registry: &str) -> Result<Endpoint, RegistryError> {
        if let Some(e) = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
        {
            return Ok(e.clone());
        }
        let host = api_host(registry);
        if let Some(e) = self.recalled(registry, host) {
            return Ok(e);
        }
        let what = format!("contacting {registry}");
        // A host that timed out or refused earlier in this run is not pinged again.
        self.transport.check_alive(&what, registry)?;
        // Where plain http is allowed (loopback, listed insecure) it is tried
        // first: a plain server may never answer a TLS hello (a silent wait),
        // while a plain request to a TLS server is refused at once.
        let schemes: &[&str] = if self.transport.allows_http(host) {
            &["http", "https"]
        } else {
            &["https"]
        };
        let ping_timeout = PING_TIMEOUT.min(self.transport.opts.stall_timeout);
        let mut last_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base =
                Url::parse(&format!("{scheme}://{host}/")).map_err(|_| RegistryError::BadHost {
                    registry: registry.to_string(),
                })?;
            let ping = join(&base, "/v2/");
            let last = i + 1 == schemes.len();
            let resp = if last {
                self.transport.send_retrying(&what, registry, &|c| {
                    c.get(ping.clone()).timeout(ping_timeout)
                })
            } else {
                self.transport
                    .send(
                        self.transport
                            .client_for(host)?
                            .get(ping.clone())
                            .timeout(ping_timeout),
                    )
                    .map_err(|e| {
                        self.transport.note_wire_error(registry, &e);
                        self.transport.connection_error(&what, registry, &e)
                    })
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    // A certificate problem is the answer; falling back to http would hide it.
                    // A host that accepted but stayed silent will not answer TLS either.
                    // A redirect loop came from a server that answered: https
                    // would only fail with a connection error that hides it.
                    let text = e.to_string();
                    if text.contains("certificate")
                        || text.contains("timed out")
                        || matches!(e, RegistryError::Redirects { .. })
                    {
                        return Err(e);
                    }
                    last_err = Some(e);
                    continue;
                }
            };
            let challenge = match resp.status() {
                StatusCode::UNAUTHORIZED => challenge_of(&resp),
                s if s.is_success() => None,
                // Not a registry answering on this scheme; http may still be one.
                _ if !last => continue,
                s if is_retryable_status(s) => return Err(self.fail(&what, registry, resp)),
                _ => None,
            };
            self.memory.keep(registry, &base, challenge.as_ref());
            let endpoint = Endpoint {
                base,
                challenge,
                recalled: false,
            };
            self.endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(registry.to_string(), endpoint.clone());
            return Ok(endpoint);
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Protocol {
            what,
            registry: registry.to_string(),
            detail: "does not answer the registry API at /v2/".to_string(),
        }))
    }

    fn set_challenge(&self, registry: &str, challenge: Challenge) {
        if let Some(e) = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(registry)
        {
            self.memory.keep(registry, &e.base, Some(&challenge));
            e.challenge = Some(challenge);
            e.recalled = false;
        }
    }

    /// The endpoint an earlier run kept for `registry`, put in this run's
    /// table. Plain http is taken only where it is still allowed.
    fn recalled(&self, registry: &str, host: &str) -> Option<Endpoint> {
        let (base, challenge) = self.memory.recall(registry)?;
        let allowed = match base.scheme() {
            "https" => true,
            "http" => self.transport.allows_http(host),
            _ => false,
        };
        if !allowed || base.host_str().is_none() {
            return None;
        }
        let endpoint = Endpoint {
            base,
            challenge,
            recalled: true,
        };
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_string(), endpoint.clone());
        Some(endpoint)
    }

    /// A remembered endpoint failed on the wire: it is forgotten, here and
    /// in the record, and the registry is pinged as on a first run.
    fn repinged(&self, registry: &str) -> Result<Endpoint, RegistryError> {
        self.memory.forget(registry);
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(registry);
        self.endpoint(registry)
    }

    /// An answer came over `endpoint`: a remembered one is now known good.
    fn confirmed(&self, registry: &str, endpoint: &mut Endpoint) {
        if endpoint.recalled {
            endpoint.recalled = false;
            if let Some(e) = self
                .endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(registry)
            {
                e.recalled = false;
            }
        }
    }

    pub(super) fn execute(&self, call: Call<'_>) -> Result<Response, RegistryError> {
        let mut endpoint = self.endpoint(call.registry)?;
        // Over TLS, the first request to a registry goes alone, so that
        // HTTP/2 carries the rest on its connection (src/registry/first_contact.rs).
        let _first = (endpoint.base.scheme() == "https" && !self.transport.opts.http1_only)
            .then(|| self.first_contacts.enter(call.registry))
            .flatten();
        let mut challenge = endpoint.challenge.clone();
        let mut scopes = call.scopes.to_vec();
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            self.transport.check_alive(call.what, call.registry)?;
            let sent = self.send_authorized(&call, &endpoint, challenge.as_ref(), &scopes)?;
            // A remembered endpoint that fails on the wire, or that a TLS
            // server answers "plain http to an https port" (400), is stale.
            let stale = match &sent {
                Ok(resp) => resp.status() == StatusCode::BAD_REQUEST,
                Err(_) => true,
            };
            if endpoint.recalled && stale {
                if let Err(e) = &sent {
                    self.transport.note_wire_error(call.registry, e);
                }
                endpoint = self.repinged(call.registry)?;
                challenge = endpoint.challenge.clone();
                continue;
            }
            self.confirmed(call.registry, &mut endpoint);
            match sent {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    reauthed = true;
                    self.auth.forget_token(call.registry, &scopes);
                    if let Some(c) = challenge_of(&resp) {
                        ask_for_challenge_scopes(&c, &mut scopes);
                        self.set_challenge(call.registry, c.clone());
                        challenge = Some(c);
                    } else if challenge.is_none() {
                        return Ok(resp);
                    }
                }
                Ok(resp) if call.retry && is_retryable_status(resp.status()) => {
                    let wait = retry_after(&resp);
                    let failure = Failure::Status(resp.status());
                    if !self
                        .transport
                        .retry(call.what, call.registry, attempt, failure, wait)
                    {
                        return Ok(resp);
                    }
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    self.transport.note_wire_error(call.registry, &e);
                    let err = self
                        .transport
                        .connection_error(call.what, call.registry, &e);
                    if !(call.retry
                        && err.is_retryable()
                        && self.transport.retry(
                            call.what,
                            call.registry,
                            attempt,
                            Failure::Wire(&e),
                            None,
                        ))
                    {
                        return Err(err);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt of `call`: built afresh, with the authorization `challenge`
    /// and `scopes` call for. The outer error ends the call (credentials this
    /// run already saw refused, or refused now); the inner one is the wire's.
    fn send_authorized(
        &self,
        call: &Call<'_>,
        endpoint: &Endpoint,
        challenge: Option<&Challenge>,
        scopes: &[String],
    ) -> Result<Result<Response, reqwest::Error>, RegistryError> {
        let auth = self.auth.authorization(
            &self.transport,
            call.registry,
            endpoint.base.scheme() == "https",
            challenge,
            scopes,
        )?;
        let client = self.transport.client_for(api_host(call.registry))?;
        let mut request = (call.build)(client, &endpoint.base)?
            .build()
            .map_err(|source| RegistryError::Request {
                what: call.what.to_string(),
                source,
            })?;
        // Upload Locations may point elsewhere; our credentials stay with the registry.
        let auth = auth.filter(|_| same_origin(request.url(), &endpoint.base));
        let basic = auth.as_deref().is_some_and(|a| a.starts_with("Basic "));
        // The first Basic request goes alone; the others wait for its answer
        // (the gate is held until this function returns).
        let _gate = if basic {
            self.auth.basic_gate(call.registry)
        } else {
            None
        };
        if basic {
            self.auth.refusal(call.what, call.registry)?;
        }
        if let Some(auth) = auth {
            let value =
                reqwest::header::HeaderValue::from_str(&auth).map_err(|_| RegistryError::Auth {
                    what: call.what.to_string(),
                    detail: "the credential holds characters that cannot go in an HTTP header"
                        .to_string(),
                })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        Ok(
            match self.transport.send_request(client, request, call.upload) {
                // Refused: fail now, and never send these credentials again.
                Ok(resp) if basic && resp.status() == StatusCode::UNAUTHORIZED => {
                    let e = self.fail(call.what, call.registry, resp);
                    self.auth.record_refusal(call.registry, &e);
                    return Err(e);
                }
                Ok(resp) if basic => {
                    self.auth.record_accepted(call.registry);
                    Ok(resp)
                }
                other => other,
            },
        )
    }

    /// The error for a reply we cannot use. A 401 says whose credentials were
    /// refused, or that none were found; a 404 on a manifest says so plainly.
    pub(super) fn fail(&self, what: &str, registry: &str, resp: Response) -> RegistryError {
        let is_manifest = resp.url().path().contains("/manifests/");
        match status_error(what, registry, resp) {
            RegistryError::Unauthorized {
                what,
                registry,
                detail,
            } => match self.auth.credential(&registry, None) {
                Ok(Credential::Anonymous) => RegistryError::NoCredentials {
                    what,
                    registry,
                    detail,
                },
                Ok(Credential::Basic { username, .. }) => RegistryError::Unauthorized {
                    detail: format!("user {username:?}: {detail}"),
                    what,
                    registry,
                },
                _ => RegistryError::Unauthorized {
                    what,
                    registry,
                    detail,
                },
            },
            RegistryError::Status {
                what,
                registry,
                status: 404,
                detail,
                ..
            } if is_manifest => RegistryError::ManifestUnknown {
                what,
                registry,
                detail,
            },
            other => other,
        }
    }
}

pub(super) fn join(base: &Url, path: &str) -> Url {
    base.join(path)
        .expect("registry paths are valid relative URLs")
}

/// A challenge may name the scope the registry wants: ask for it first.
fn ask_for_challenge_scopes(challenge: &Challenge, scopes: &mut Vec<String>) {
    if let Some(wanted) = challenge.param("scope") {
        for s in wanted.split(' ').rev() {
            if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                scopes.insert(0, s.to_string());
            }
        }
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn challenge_of(resp: &Response) -> Option<Challenge> {
    let all = resp
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect();
    preferred_challenge(all)
}

pub(super) fn location(resp: &Response) -> Option<String> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

pub(super) fn content_type(resp: &Response) -> Option<String> {
    let v = resp.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase()).filter(|s| !s.is_empty())
}

pub(super) fn check_digest_header(
    resp: &Response,
    ours: &Digest,
    what: &str,
    registry: &str,
) -> Result<(), RegistryError> {
    let Some(v) = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    if v.trim() == ours.to_string() {
        Ok(())
    } else {
        Err(RegistryError::DigestMismatch {
            what: what.to_string(),
            registry: registry.to_string(),
            expected: ours.to_string(),
            got: v.trim().to_string(),
        })
    }
}

/// Counts blob bytes as they pass, for `TransferStats`.
pub(super) struct CountingReader<R> {
    pub(super) inner: R,
    pub(super) counters: Arc<Counters>,
    pub(super) upload: bool,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let c = if self.upload {
            &self.counters.blob_bytes_uploaded
        } else {
            &self.counters.blob_bytes_downloaded
        };
        c.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
