//! Blob uploads. One upload is one step (HEAD → mount or POST → PUT/PATCH);
//! when its body fails mid-way the whole step restarts with the source
//! reopened, never a resumed session.

use super::auth::repository_scope;
use super::client::{check_digest_header, join, location, Call, CountingReader, RegistryClient};
use super::error::RegistryError;
use super::transport::Failure;
use crate::digest::Digest;
use crate::reference::Reference;
use reqwest::blocking::{Body, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use std::io::{self, Read};
use std::sync::atomic::Ordering;

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

/// The blob one upload step sends; `open` is called again for every attempt.
#[derive(Clone, Copy)]
struct Blob<'a> {
    digest: &'a Digest,
    size: u64,
    open: &'a dyn Fn() -> io::Result<Box<dyn Read + Send>>,
}

/// A step failure, and whether restarting the whole blob step may help.
struct StepError {
    error: RegistryError,
    restart: bool,
    /// The registry's Retry-After, honoured before the restart.
    retry_after: Option<std::time::Duration>,
}

impl From<RegistryError> for StepError {
    fn from(error: RegistryError) -> Self {
        StepError {
            error,
            restart: false,
            retry_after: None,
        }
    }
}

impl StepError {
    /// The failure of a reply, restartable when retrying may help.
    fn of_reply(client: &RegistryClient, what: &str, registry: &str, resp: Response) -> Self {
        let retry_after = super::transport::retry_after(&resp);
        let error = client.fail(what, registry, resp);
        StepError {
            restart: error.is_retryable(),
            error,
            retry_after,
        }
    }
}
impl RegistryClient {
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
        self.push_blob_with(repo, Blob { digest, size, open }, mount_from, true)
    }

    /// Uploads a blob this run made and the registry is not known to hold
    /// (the app layer or config after a one-line change), without asking
    /// first: one round trip less in the inner loop, at the cost of sending
    /// again a small blob the registry had after all.
    pub fn push_new_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<PushOutcome, RegistryError> {
        self.push_blob_with(repo, Blob { digest, size, open }, None, false)
    }

    fn push_blob_with(
        &self,
        repo: &Reference,
        blob: Blob<'_>,
        mount_from: Option<&str>,
        ask_first: bool,
    ) -> Result<PushOutcome, RegistryError> {
        let digest = blob.digest;
        let mut attempt = 0;
        loop {
            match self.push_blob_once(repo, blob, mount_from, ask_first, true) {
                Ok(outcome) => return Ok(outcome),
                Err(StepError {
                    error,
                    restart: true,
                    retry_after,
                }) if error.is_retryable() => {
                    let failure = Failure::Step(error.to_string());
                    let what = format!("uploading blob {digest}");
                    if !self
                        .transport
                        .retry(&what, &repo.registry, attempt, failure, retry_after)
                    {
                        return Err(error);
                    }
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

    /// One upload step. With `use_opened`, an upload session opened ahead
    /// ([`Self::open_uploads`]) is used before a new one is asked for; if
    /// the upload into it fails (the registry may have dropped it), the step
    /// runs once more at once, with a session of its own.
    fn push_blob_once(
        &self,
        repo: &Reference,
        blob: Blob<'_>,
        mount_from: Option<&str>,
        ask_first: bool,
        use_opened: bool,
    ) -> Result<PushOutcome, StepError> {
        let digest = blob.digest;
        let registry = repo.registry.as_str();
        let push_scope = repository_scope(&repo.repository, true);
        if ask_first && self.blob_exists_scoped(repo, digest, std::slice::from_ref(&push_scope))? {
            return Ok(PushOutcome::Existed);
        }
        let what = format!("uploading blob {digest} to {}", repo.name());
        let uploads = format!("/v2/{}/blobs/uploads/", repo.repository);

        let mut session = None;
        if let Some(from) = mount_from.filter(|f| *f != repo.repository) {
            // Both scopes in one token, push first: some registries read only the first.
            let scopes = [push_scope.clone(), repository_scope(from, false)];
            let mounted = self.execute(Call::new(registry, &what, &scopes, &|c, base| {
                let mut url = join(base, &uploads);
                url.query_pairs_mut()
                    .append_pair("mount", &digest.to_string())
                    .append_pair("from", from);
                Ok(c.post(url).header(CONTENT_LENGTH, 0))
            }));
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
        let opened = match session {
            None if use_opened => self.take_opened(repo),
            _ => None,
        };
        let pooled = opened.is_some();
        let session = match session.or(opened) {
            Some(s) => s,
            None => {
                let resp = self.execute(Call::new(registry, &what, &scopes, &|c, base| {
                    Ok(c.post(join(base, &uploads)).header(CONTENT_LENGTH, 0))
                }))?;
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
            Some(chunk) if chunk > 0 => {
                self.upload_chunked(registry, &what, &scopes, session.clone(), blob, chunk)
            }
            _ => self.upload_monolithic(registry, &what, &scopes, &session, blob),
        };
        if result.is_err() {
            self.cancel_session(registry, &what, &scopes, &session);
            if pooled {
                return self.push_blob_once(repo, blob, None, false, false);
            }
        }
        result
    }

    /// Opens `n` upload sessions in `repo` now (side by side), for blobs
    /// that are not made yet: issue 26's inner loop asks for them while the
    /// image builds, so each small new blob after it is one PUT, not a POST
    /// and a PUT. Best effort: a session that cannot be opened here is
    /// opened by the upload that needs it. Returns how many were opened.
    pub fn open_uploads(&self, repo: &Reference, n: usize) -> usize {
        let registry = repo.registry.as_str();
        let what = format!("opening an upload in {}", repo.name());
        let uploads = format!("/v2/{}/blobs/uploads/", repo.repository);
        let scopes = [repository_scope(&repo.repository, true)];
        let slots: Vec<usize> = (0..n).collect();
        let opened = crate::parallel::map_ordered(&slots, n.max(1), |_| {
            let resp = self
                .execute(Call::new(registry, &what, &scopes, &|c, base| {
                    Ok(c.post(join(base, &uploads)).header(CONTENT_LENGTH, 0))
                }))
                .ok()?;
            (resp.status() == StatusCode::ACCEPTED)
                .then(|| location(&resp))
                .flatten()
        });
        let opened: Vec<String> = opened.into_iter().flatten().collect();
        let count = opened.len();
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((repo.registry.clone(), repo.repository.clone()))
            .or_default()
            .extend(opened);
        count
    }

    fn take_opened(&self, repo: &Reference) -> Option<String> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&(repo.registry.clone(), repo.repository.clone()))?
            .pop()
    }

    /// Cancels the sessions [`Self::open_uploads`] opened that no blob used
    /// (side by side), so the registry need not wait to expire them.
    pub fn cancel_unused_uploads(&self) {
        let unused: Vec<((String, String), String)> =
            std::mem::take(&mut *self.opened.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .flat_map(|(repo, sessions)| sessions.into_iter().map(move |s| (repo.clone(), s)))
                .collect();
        crate::parallel::map_ordered(
            &unused,
            unused.len().max(1),
            |((registry, repository), session)| {
                let scopes = [repository_scope(repository, true)];
                let what = format!("cancelling an unused upload in {registry}/{repository}");
                self.cancel_session(registry, &what, &scopes, session);
            },
        );
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

    fn upload_monolithic(
        &self,
        registry: &str,
        what: &str,
        scopes: &[String],
        session: &str,
        blob: Blob<'_>,
    ) -> Result<PushOutcome, StepError> {
        let Blob { digest, size, open } = blob;
        let mut url = self.session_url(registry, session)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let counters = self.transport.counters.clone();
        let resp = self
            .execute(
                Call::new(registry, what, scopes, &|c, _| {
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
                })
                .upload(size),
            )
            .map_err(restartable)?;
        self.finish_upload(resp, registry, what, digest, size)
    }

    fn upload_chunked(
        &self,
        registry: &str,
        what: &str,
        scopes: &[String],
        mut session: String,
        blob: Blob<'_>,
        chunk: u64,
    ) -> Result<PushOutcome, StepError> {
        let Blob { digest, size, open } = blob;
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
                .execute(
                    Call::new(registry, what, scopes, &|c, _| {
                        counters.blob_bytes_uploaded.fetch_add(n, Ordering::Relaxed);
                        Ok(c.patch(url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header("Content-Range", range.as_str())
                            .header(CONTENT_LENGTH, n)
                            .body(buf.clone()))
                    })
                    .upload(n),
                )
                .map_err(restartable)?;
            if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
                return Err(StepError::of_reply(self, what, registry, resp));
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
            .execute(
                Call::new(registry, what, scopes, &|c, _| {
                    Ok(c.put(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, 0))
                })
                .once(),
            )
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
            return Err(StepError::of_reply(self, what, registry, resp));
        }
        check_digest_header(&resp, digest, what, registry)?;
        Ok(PushOutcome::Uploaded { bytes: size })
    }

    /// Best effort: the spec asks clients to cancel sessions they abandon.
    fn cancel_session(&self, registry: &str, what: &str, scopes: &[String], session: &str) {
        if let Ok(url) = self.session_url(registry, session) {
            let _ = self.execute(
                Call::new(registry, what, scopes, &|c, _| Ok(c.delete(url.clone()))).once(),
            );
        }
    }
}

fn restartable(error: RegistryError) -> StepError {
    StepError {
        restart: error.is_retryable(),
        error,
        retry_after: None,
    }
}
