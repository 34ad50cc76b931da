//! The OCI distribution client: manifests and blobs, pulled and pushed.
//!
//! Every request goes through `execute`, which finds the registry's endpoint
//! (https, or http where allowed), adds auth, replays once after a 401 with a
//! fresh token, and retries what is safe to retry. A blob upload is one step
//! (HEAD → mount or POST → PUT/PATCH); when its body fails mid-way the whole
//! step restarts with the source reopened, never a resumed session.

use super::auth::{
    parse_www_authenticate, preferred_challenge, repository_scope, Authenticator, Challenge,
};
use super::credentials::{Credential, CredentialSource};
use super::error::RegistryError;
use super::transport::{
    connection_error, is_retryable_status, retry_after, status_error, Counters, TransferStats,
    Transport, TransportOptions,
};
use crate::digest::{Digest, VerifyingReader};
use crate::reference::{api_host, Reference};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{StatusCode, Url};
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest kinds we read; Docker schema 1 is not among them.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_LIST,
];

/// Bounds the `/v2/` probe: a plain-http server may never answer a TLS hello.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Registries must accept 4 MiB manifests; anything far larger is not a manifest.
const MANIFEST_MAX: u64 = 16 * 1024 * 1024;

/// What happened to one blob during a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PushOutcome {
    /// The registry already had it (HEAD answered 200).
    Existed,
    /// Mounted from another repository of the same registry; no bytes sent.
    Mounted,
    /// Uploaded; `bytes` is the blob size.
    Uploaded { bytes: u64 },
}

/// Reopens a blob's bytes from the start; called again for every retry.
pub type OpenBlob<'a> = &'a (dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync);

/// One blob for `push_blobs_parallel`.
pub struct BlobUpload<'a> {
    pub digest: Digest,
    pub size: u64,
    pub open: OpenBlob<'a>,
    /// A repository on the same registry that may already hold the blob.
    pub mount_from: Option<String>,
}

#[derive(Clone)]
struct Endpoint {
    /// `https://host[:port]` or `http://…`
    base: Url,
    challenge: Option<Challenge>,
}

pub struct RegistryClient {
    transport: Transport,
    auth: Authenticator,
    endpoints: Mutex<HashMap<String, Endpoint>>,
}

/// One request as `execute` sees it. `build` is called once per attempt, so a
/// body is recreated (and a file reopened) for every replay.
struct Call<'a> {
    registry: &'a str,
    what: &'a str,
    scopes: &'a [String],
    /// Retry connection errors and 408/429/5xx here; false where a failure
    /// leaves server state behind (upload session bodies).
    retry: bool,
    build: &'a dyn Fn(&Client, &Url) -> Result<RequestBuilder, RegistryError>,
}

/// A step failure, and whether restarting the whole blob step may help.
struct StepError {
    error: RegistryError,
    restart: bool,
}

impl From<RegistryError> for StepError {
    fn from(error: RegistryError) -> Self {
        StepError {
            error,
            restart: false,
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
            auth: Authenticator::new(Box::new(credentials)),
            endpoints: Mutex::default(),
        })
    }

    pub fn options(&self) -> &TransportOptions {
        &self.transport.opts
    }

    /// Requests made and bytes moved so far.
    pub fn stats(&self) -> TransferStats {
        self.transport.counters.snapshot()
    }

    /// Checks that the registry accepts our credentials (for `login`): a Basic
    /// registry must answer `/v2/` with them, a token service must issue a token.
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let what = format!("logging in to {registry}");
        let resp = self.execute(Call {
            registry,
            what: &what,
            scopes: &[],
            retry: true,
            build: &|c, base| Ok(c.get(join(base, "/v2/"))),
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(&what, registry, resp))
        }
    }

    /// GET or HEAD on a manifest, accepting every manifest and index type.
    fn manifest_request(
        &self,
        reference: &Reference,
        what: &str,
        method: reqwest::Method,
    ) -> Result<reqwest::blocking::Response, RegistryError> {
        let scopes = [repository_scope(&reference.repository, false)];
        let path = format!(
            "/v2/{}/manifests/{}",
            reference.repository,
            reference.manifest_reference()
        );
        self.execute(Call {
            registry: reference.registry.as_str(),
            what,
            scopes: &scopes,
            retry: true,
            build: &|c, base| {
                Ok(c.request(method.clone(), join(base, &path))
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", ")))
            },
        })
    }

    /// Fetches a manifest or index: its exact bytes, media type and digest.
    /// When the reference has a digest, the bytes are checked against it.
    pub fn get_manifest(
        &self,
        reference: &Reference,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("fetching manifest {reference}");
        let registry = reference.registry.as_str();
        let resp = self.manifest_request(reference, &what, reqwest::Method::GET)?;
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        let header_type = content_type(&resp);
        let mut bytes = Vec::new();
        resp.take(MANIFEST_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::Io {
                what: what.clone(),
                source: e,
            })?;
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(RegistryError::Protocol {
                what,
                registry: registry.to_string(),
                detail: format!("sent a manifest over {MANIFEST_MAX} bytes; refusing it"),
            });
        }
        let media_type = match header_type {
            Some(t) if MANIFEST_MEDIA_TYPES.contains(&t.as_str()) => t,
            // Some registries label manifests application/json; the body says what it is.
            other => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .or(other)
                .unwrap_or_default(),
        };
        if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(RegistryError::Protocol {
                what,
                registry: registry.to_string(),
                detail: format!(
                    "sent a manifest of type {media_type:?}; imgbuild reads only OCI and Docker v2 manifests and indexes"
                ),
            });
        }
        let digest = Digest::of_bytes(&bytes);
        if let Some(expected) = &reference.digest {
            if *expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what,
                    registry: registry.to_string(),
                    expected: expected.to_string(),
                    got: digest.to_string(),
                });
            }
        }
        Ok((bytes, media_type, digest))
    }

    /// The digest and media type a tag (or digest) points to, by HEAD, without
    /// downloading the manifest (a HEAD does not count against Docker Hub's
    /// pull limit). `None` when the registry has no such manifest. Trust the
    /// digest only as a hint: fetch by digest to get verified bytes.
    pub fn head_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<(Digest, String)>, RegistryError> {
        let what = format!("checking manifest {reference}");
        let registry = reference.registry.as_str();
        let resp = self.manifest_request(reference, &what, reqwest::Method::HEAD)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        let digest = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok())
            .ok_or_else(|| RegistryError::Protocol {
                what: what.clone(),
                registry: registry.to_string(),
                detail: "answered HEAD without a sha256 Docker-Content-Digest header".to_string(),
            })?;
        Ok(Some((digest, content_type(&resp).unwrap_or_default())))
    }

    /// Streams a blob of `repo`'s repository. The reader fails at EOF unless
    /// the bytes match `digest` (and `expected_size`, when given). Redirects
    /// (e.g. to S3 or a CDN) are followed without our Authorization header.
    pub fn get_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn Read + Send>, RegistryError> {
        let what = format!("fetching blob {digest} from {}", repo.name());
        let registry = repo.registry.as_str();
        let scopes = [repository_scope(&repo.repository, false)];
        let path = format!("/v2/{}/blobs/{digest}", repo.repository);
        let resp = self.execute(Call {
            registry,
            what: &what,
            scopes: &scopes,
            retry: true,
            build: &|c, base| Ok(c.get(join(base, &path))),
        })?;
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        if let (Some(want), Some(got)) = (expected_size, resp.content_length()) {
            if want != got {
                return Err(RegistryError::Protocol {
                    what,
                    registry: registry.to_string(),
                    detail: format!("announced {got} bytes for a blob of {want} bytes"),
                });
            }
        }
        let counted = CountingReader {
            inner: resp,
            counters: self.transport.counters.clone(),
            upload: false,
        };
        Ok(Box::new(VerifyingReader::new(
            counted,
            digest.clone(),
            expected_size,
            what,
        )))
    }

    /// Whether `repo`'s repository already holds the blob (HEAD).
    pub fn blob_exists(&self, repo: &Reference, digest: &Digest) -> Result<bool, RegistryError> {
        let scopes = [repository_scope(&repo.repository, false)];
        self.blob_exists_scoped(repo, digest, &scopes)
    }

    fn blob_exists_scoped(
        &self,
        repo: &Reference,
        digest: &Digest,
        scopes: &[String],
    ) -> Result<bool, RegistryError> {
        let what = format!("checking blob {digest} in {}", repo.name());
        let path = format!("/v2/{}/blobs/{digest}", repo.repository);
        let resp = self.execute(Call {
            registry: &repo.registry,
            what: &what,
            scopes,
            retry: true,
            build: &|c, base| Ok(c.head(join(base, &path))),
        })?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(&what, &repo.registry, resp)),
        }
    }

    /// Makes sure `repo`'s repository holds the blob: HEAD first; then a
    /// mount from `mount_from` (a repository on the same registry) when given;
    /// else an upload, one streamed PUT or `chunk_size` PATCHes. `open` is
    /// called for every attempt. Returns only once the registry confirmed the blob.
    pub fn push_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        mount_from: Option<&str>,
    ) -> Result<PushOutcome, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.push_blob_once(repo, digest, size, open, mount_from) {
                Ok(outcome) => return Ok(outcome),
                Err(StepError { error, restart })
                    if restart
                        && error.is_retryable()
                        && attempt < self.transport.opts.max_retries =>
                {
                    self.transport.note_retry(attempt, None);
                    attempt += 1;
                }
                Err(StepError { error, .. }) => return Err(error),
            }
        }
    }

    /// Pushes blobs with `jobs` threads; results come back in input order.
    pub fn push_blobs_parallel(
        &self,
        repo: &Reference,
        blobs: &[BlobUpload<'_>],
    ) -> Vec<Result<PushOutcome, RegistryError>> {
        crate::parallel::map_ordered(blobs, self.transport.opts.jobs, |b| {
            self.push_blob(repo, &b.digest, b.size, b.open, b.mount_from.as_deref())
        })
    }

    /// Uploads a manifest or index under `reference` (a tag, or our digest)
    /// with `media_type` as Content-Type, and returns its digest once the
    /// registry confirmed the same digest. Push every blob it names first.
    pub fn put_manifest(
        &self,
        repo: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let registry = repo.registry.as_str();
        let what = format!("pushing manifest {}:{reference}", repo.name());
        let ours = Digest::of_bytes(bytes);
        if let Ok(named) = reference.parse::<Digest>() {
            if named != ours {
                return Err(RegistryError::DigestMismatch {
                    what,
                    registry: registry.to_string(),
                    expected: named.to_string(),
                    got: ours.to_string(),
                });
            }
        }
        let scopes = [repository_scope(&repo.repository, true)];
        let path = format!("/v2/{}/manifests/{reference}", repo.repository);
        let resp = self.execute(Call {
            registry,
            what: &what,
            scopes: &scopes,
            retry: true,
            build: &|c, base| {
                Ok(c.put(join(base, &path))
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec()))
            },
        })?;
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        // No Location is needed (ECR sends none); the digest header is optional too.
        check_digest_header(&resp, &ours, &what, registry)?;
        Ok(ours)
    }

    fn push_blob_once(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        mount_from: Option<&str>,
    ) -> Result<PushOutcome, StepError> {
        let registry = repo.registry.as_str();
        let push_scope = repository_scope(&repo.repository, true);
        if self.blob_exists_scoped(repo, digest, std::slice::from_ref(&push_scope))? {
            return Ok(PushOutcome::Existed);
        }
        let what = format!("uploading blob {digest} to {}", repo.name());
        let uploads = format!("/v2/{}/blobs/uploads/", repo.repository);

        let mut session = None;
        if let Some(from) = mount_from.filter(|f| *f != repo.repository) {
            // Both scopes in one token, push first: some registries read only the first.
            let scopes = [push_scope.clone(), repository_scope(from, false)];
            let mounted = self.execute(Call {
                registry,
                what: &what,
                scopes: &scopes,
                retry: true,
                build: &|c, base| {
                    let mut url = join(base, &uploads);
                    url.query_pairs_mut()
                        .append_pair("mount", &digest.to_string())
                        .append_pair("from", from);
                    Ok(c.post(url).header(CONTENT_LENGTH, 0))
                },
            });
            // Any mount failure (no access to `from`, unsupported) falls back to uploading.
            if let Ok(resp) = mounted {
                match resp.status() {
                    StatusCode::CREATED => {
                        check_digest_header(&resp, digest, &what, registry)?;
                        return Ok(PushOutcome::Mounted);
                    }
                    StatusCode::ACCEPTED => session = location(&resp),
                    _ => {}
                }
            }
        }
        let scopes = [push_scope];
        let session = match session {
            Some(s) => s,
            None => {
                let resp = self.execute(Call {
                    registry,
                    what: &what,
                    scopes: &scopes,
                    retry: true,
                    build: &|c, base| Ok(c.post(join(base, &uploads)).header(CONTENT_LENGTH, 0)),
                })?;
                if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
                    return Err(self.fail(&what, registry, resp).into());
                }
                location(&resp).ok_or_else(|| RegistryError::Protocol {
                    what: what.clone(),
                    registry: registry.to_string(),
                    detail:
                        "started an upload without saying where to send it (no Location header)"
                            .to_string(),
                })?
            }
        };
        let result = match self.transport.opts.chunk_size {
            Some(chunk) if chunk > 0 => self.upload_chunked(
                registry,
                &what,
                &scopes,
                session.clone(),
                digest,
                size,
                chunk,
                open,
            ),
            _ => self.upload_monolithic(registry, &what, &scopes, &session, digest, size, open),
        };
        if result.is_err() {
            self.cancel_session(registry, &what, &scopes, &session);
        }
        result
    }

    /// The upload session URL, relative Locations resolved against the registry.
    fn session_url(&self, registry: &str, location: &str) -> Result<Url, RegistryError> {
        let base = self.endpoint(registry)?.base;
        base.join(location).map_err(|_| RegistryError::Protocol {
            what: "uploading a blob".to_string(),
            registry: registry.to_string(),
            detail: format!("sent an upload Location that is not a URL: {location:?}"),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_monolithic(
        &self,
        registry: &str,
        what: &str,
        scopes: &[String],
        session: &str,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<PushOutcome, StepError> {
        let mut url = self.session_url(registry, session)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let counters = self.transport.counters.clone();
        let resp = self
            .execute(Call {
                registry,
                what,
                scopes,
                retry: false,
                build: &|c, _| {
                    let reader = open().map_err(|e| RegistryError::Io {
                        what: format!("{what}: reading the blob"),
                        source: e,
                    })?;
                    let body = Body::sized(
                        CountingReader {
                            inner: reader,
                            counters: counters.clone(),
                            upload: true,
                        },
                        size,
                    );
                    Ok(c.put(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, size)
                        .body(body))
                },
            })
            .map_err(restartable)?;
        self.finish_upload(resp, registry, what, digest, size)
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_chunked(
        &self,
        registry: &str,
        what: &str,
        scopes: &[String],
        mut session: String,
        digest: &Digest,
        size: u64,
        chunk: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<PushOutcome, StepError> {
        let io_err = |e| RegistryError::Io {
            what: format!("{what}: reading the blob"),
            source: e,
        };
        let mut reader = open().map_err(io_err)?;
        let mut offset = 0u64;
        while offset < size {
            let n = chunk.min(size - offset);
            // One chunk in memory, so a 401 replay resends exactly these bytes.
            let mut buf = Vec::with_capacity(n as usize);
            (&mut reader)
                .take(n)
                .read_to_end(&mut buf)
                .map_err(io_err)?;
            if buf.len() as u64 != n {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the blob ended after {} of {size} bytes",
                        offset + buf.len() as u64
                    ),
                ))
                .into());
            }
            let url = self.session_url(registry, &session)?;
            let range = format!("{offset}-{}", offset + n - 1);
            let counters = self.transport.counters.clone();
            let resp = self
                .execute(Call {
                    registry,
                    what,
                    scopes,
                    retry: false,
                    build: &|c, _| {
                        counters.blob_bytes_uploaded.fetch_add(n, Ordering::Relaxed);
                        Ok(c.patch(url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header("Content-Range", range.as_str())
                            .header(CONTENT_LENGTH, n)
                            .body(buf.clone()))
                    },
                })
                .map_err(restartable)?;
            if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
                let e = self.fail(what, registry, resp);
                let restart = e.is_retryable();
                return Err(StepError { error: e, restart });
            }
            // Some registries (ECR) omit Location on PATCH: keep the session we have.
            if let Some(next) = location(&resp) {
                session = next;
            }
            offset += n;
        }
        let mut url = self.session_url(registry, &session)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let resp = self
            .execute(Call {
                registry,
                what,
                scopes,
                retry: false,
                build: &|c, _| {
                    Ok(c.put(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, 0))
                },
            })
            .map_err(restartable)?;
        self.finish_upload(resp, registry, what, digest, size)
    }

    fn finish_upload(
        &self,
        resp: Response,
        registry: &str,
        what: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<PushOutcome, StepError> {
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            let e = self.fail(what, registry, resp);
            let restart = e.is_retryable();
            return Err(StepError { error: e, restart });
        }
        check_digest_header(&resp, digest, what, registry)?;
        Ok(PushOutcome::Uploaded { bytes: size })
    }

    /// Best effort: the spec asks clients to cancel sessions they abandon.
    fn cancel_session(&self, registry: &str, what: &str, scopes: &[String], session: &str) {
        if let Ok(url) = self.session_url(registry, session) {
            let _ = self.execute(Call {
                registry,
                what,
                scopes,
                retry: false,
                build: &|c, _| Ok(c.delete(url.clone())),
            });
        }
    }

    /// The registry's base URL and auth challenge, found by pinging `/v2/`
    /// once: https first; plain http only where allowed (loopback, insecure list).
    fn endpoint(&self, registry: &str) -> Result<Endpoint, RegistryError> {
        if let Some(e) = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
        {
            return Ok(e.clone());
        }
        let host = api_host(registry);
        let what = format!("contacting {registry}");
        // Loopback registries are almost always plain http, and a TLS hello to a
        // plain server costs a slow 400; a plain request to a TLS server is
        // refused at once. Listed insecure hosts try TLS first, as Docker does.
        let schemes: &[&str] =
            if super::transport::is_loopback(host) && !self.transport.is_listed_insecure(host) {
                &["http", "https"]
            } else if self.transport.allows_http(host) {
                &["https", "http"]
            } else {
                &["https"]
            };
        let mut last_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{host}/")).map_err(|_| {
                RegistryError::Setup(format!("{registry:?} is not a usable registry host"))
            })?;
            let ping = join(&base, "/v2/");
            let last = i + 1 == schemes.len();
            let resp = if last {
                self.transport.send_retrying(&what, registry, &|c| {
                    c.get(ping.clone()).timeout(PING_TIMEOUT)
                })
            } else {
                self.transport
                    .send(
                        self.transport
                            .client_for(host)
                            .get(ping.clone())
                            .timeout(PING_TIMEOUT),
                    )
                    .map_err(|e| connection_error(&what, registry, &e))
            };
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    // A certificate problem is the answer; falling back to http would hide it.
                    if e.to_string().contains("certificate") {
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
            let endpoint = Endpoint { base, challenge };
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
            e.challenge = Some(challenge);
        }
    }

    fn execute(&self, call: Call<'_>) -> Result<Response, RegistryError> {
        let endpoint = self.endpoint(call.registry)?;
        let host = api_host(call.registry);
        let mut challenge = endpoint.challenge.clone();
        let mut scopes = call.scopes.to_vec();
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let auth = self.auth.authorization(
                &self.transport,
                call.registry,
                challenge.as_ref(),
                &scopes,
            )?;
            let client = self.transport.client_for(host);
            let mut request = (call.build)(client, &endpoint.base)?
                .build()
                .map_err(|e| RegistryError::Setup(format!("{}: {e}", call.what)))?;
            if let Some(auth) = auth {
                // Upload Locations may point elsewhere; our credentials stay with the registry.
                if same_origin(request.url(), &endpoint.base) {
                    let value = reqwest::header::HeaderValue::from_str(&auth).map_err(|_| {
                        RegistryError::Auth {
                            what: call.what.to_string(),
                            detail:
                                "the credential holds characters that cannot go in an HTTP header"
                                    .to_string(),
                        }
                    })?;
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
            match self.transport.send_request(host, request) {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    reauthed = true;
                    self.auth.forget_token(call.registry, &scopes);
                    if let Some(c) = challenge_of(&resp) {
                        // A challenge may name the scope the registry wants: ask for it first.
                        if let Some(wanted) = c.param("scope") {
                            for s in wanted.split(' ').rev() {
                                if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                                    scopes.insert(0, s.to_string());
                                }
                            }
                        }
                        self.set_challenge(call.registry, c.clone());
                        challenge = Some(c);
                    } else if challenge.is_none() {
                        return Ok(resp);
                    }
                }
                Ok(resp)
                    if call.retry
                        && is_retryable_status(resp.status())
                        && attempt < self.transport.opts.max_retries =>
                {
                    let wait = retry_after(&resp);
                    drop(resp);
                    self.transport.note_retry(attempt, wait);
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let err = connection_error(call.what, call.registry, &e);
                    if !(call.retry
                        && err.is_retryable()
                        && attempt < self.transport.opts.max_retries)
                    {
                        return Err(err);
                    }
                    self.transport.note_retry(attempt, None);
                    attempt += 1;
                }
            }
        }
    }

    /// Pushes a manifest that names a `subject` (an OCI 1.1 artifact) by its
    /// digest, and says whether the registry answered with `OCI-Subject`, its
    /// sign that it indexed the referrer itself.
    pub fn put_referrer_manifest(
        &self,
        repo: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Digest, bool), RegistryError> {
        let registry = repo.registry.as_str();
        let ours = Digest::of_bytes(bytes);
        let what = format!("pushing artifact manifest {}@{ours}", repo.name());
        let scopes = [repository_scope(&repo.repository, true)];
        let path = format!("/v2/{}/manifests/{ours}", repo.repository);
        let resp = self.execute(Call {
            registry,
            what: &what,
            scopes: &scopes,
            retry: true,
            build: &|c, base| {
                Ok(c.put(join(base, &path))
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec()))
            },
        })?;
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        check_digest_header(&resp, &ours, &what, registry)?;
        Ok((ours, resp.headers().contains_key("OCI-Subject")))
    }

    /// The referrers API (`GET /v2/<name>/referrers/<digest>`): the index it
    /// answers with, or `None` when the registry has no such API (404, or an
    /// answer that is not an image index).
    pub fn get_referrers(
        &self,
        repo: &Reference,
        subject: &Digest,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let registry = repo.registry.as_str();
        let what = format!("listing referrers of {}@{subject}", repo.name());
        let scopes = [repository_scope(&repo.repository, false)];
        let path = format!("/v2/{}/referrers/{subject}", repo.repository);
        let resp = self.execute(Call {
            registry,
            what: &what,
            scopes: &scopes,
            retry: true,
            build: &|c, base| {
                Ok(c.get(join(base, &path))
                    .header(ACCEPT, MEDIA_TYPE_OCI_INDEX))
            },
        })?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => {
                return Ok(None)
            }
            _ => return Err(self.fail(&what, registry, resp)),
        }
        let is_index = content_type(&resp).as_deref() == Some(MEDIA_TYPE_OCI_INDEX);
        let mut bytes = Vec::new();
        resp.take(MANIFEST_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::Io {
                what: what.clone(),
                source: e,
            })?;
        let parses = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .is_some_and(|v| v.get("manifests").is_some_and(|m| m.is_array()));
        Ok((is_index && parses).then_some(bytes))
    }

    /// The error for a reply we cannot use. A 401 says whose credentials were
    /// refused, or that none were found; a 404 on a manifest says so plainly.
    fn fail(&self, what: &str, registry: &str, resp: Response) -> RegistryError {
        let is_manifest = resp.url().path().contains("/manifests/");
        match status_error(what, registry, resp) {
            RegistryError::Unauthorized {
                what,
                registry,
                detail,
            } => match self.auth.credential(&registry) {
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

fn restartable(error: RegistryError) -> StepError {
    let restart = error.is_retryable();
    StepError { error, restart }
}

fn join(base: &Url, path: &str) -> Url {
    base.join(path)
        .expect("registry paths are valid relative URLs")
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

fn location(resp: &Response) -> Option<String> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn content_type(resp: &Response) -> Option<String> {
    let v = resp.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase()).filter(|s| !s.is_empty())
}

fn check_digest_header(
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

struct CountingReader<R> {
    inner: R,
    counters: Arc<Counters>,
    upload: bool,
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
