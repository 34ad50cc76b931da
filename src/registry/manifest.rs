//! Manifests and indexes: fetched with their exact bytes (checked against a
//! pinned digest), looked up by HEAD, and pushed under a tag or digest.

use super::auth::repository_scope;
use super::client::{check_digest_header, content_type, join, Call, RegistryClient};
use super::error::RegistryError;
use crate::digest::Digest;
use crate::http::HttpError;
use crate::image::{MANIFEST_MEDIA_TYPES, MEDIA_TYPE_OCI_INDEX};
use crate::reference::Reference;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;

impl RegistryClient {
    /// GET or HEAD on a manifest, accepting every manifest and index type.
    fn manifest_request(
        &self,
        reference: &Reference,
        what: &str,
        method: reqwest::Method,
    ) -> Result<reqwest::blocking::Response, RegistryError> {
        let path = format!("manifests/{}", reference.manifest_reference());
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        self.pull_request(reference, &path, what, method, &accept)
    }

    /// A request under `/v2/<repository>/` that needs pull access and takes
    /// the media types in `accept`.
    fn pull_request(
        &self,
        repo: &Reference,
        path: &str,
        what: &str,
        method: reqwest::Method,
        accept: &str,
    ) -> Result<reqwest::blocking::Response, RegistryError> {
        let scopes = [repository_scope(&repo.repository, false)];
        let path = format!("/v2/{}/{path}", repo.repository);
        self.execute(Call::new(
            repo.registry.as_str(),
            what,
            &scopes,
            &|c, base| {
                Ok(c.request(method.clone(), join(base, &path))
                    .header(ACCEPT, accept))
            },
        ))
    }

    /// Fetches a manifest or index: its exact bytes, media type and digest.
    /// When the reference has a digest, the bytes are checked against it.
    pub fn get_manifest(
        &self,
        reference: &Reference,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        if let Some(d) = &reference.digest {
            if let Some((bytes, media_type)) = self.fetched_manifest(reference, d) {
                return Ok((bytes, media_type, d.clone()));
            }
        }
        let what = format!("fetching manifest {reference}");
        let registry = reference.registry.as_str();
        let resp = self.manifest_request(reference, &what, reqwest::Method::GET)?;
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        let header_type = content_type(&resp);
        let bytes = read_manifest(resp, &what, registry)?;
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
        self.keep_fetched_manifest(reference, &digest, &bytes, &media_type);
        if let (Some(tag), None) = (&reference.tag, &reference.digest) {
            self.keep_tag_read(reference, tag, &digest);
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
        let what = format!("pushing manifest {}:{reference}", repo.name());
        Ok(self
            .put_manifest_as(repo, reference, bytes, media_type, what)?
            .0)
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
        let ours = Digest::of_bytes(bytes);
        let what = format!("pushing artifact manifest {}@{ours}", repo.name());
        self.put_manifest_as(repo, &ours.to_string(), bytes, media_type, what)
    }

    /// The one manifest PUT: the digest is checked against a digest
    /// `reference` and against the registry's answer; returns it and whether
    /// the answer carried `OCI-Subject`.
    fn put_manifest_as(
        &self,
        repo: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
        what: String,
    ) -> Result<(Digest, bool), RegistryError> {
        let registry = repo.registry.as_str();
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
        let resp = self.execute(Call::new(registry, &what, &scopes, &|c, base| {
            Ok(c.put(join(base, &path))
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec()))
        }))?;
        if !resp.status().is_success() {
            return Err(self.fail(&what, registry, resp));
        }
        // No Location is needed (ECR sends none); the digest header is optional too.
        check_digest_header(&resp, &ours, &what, registry)?;
        if reference.parse::<Digest>().is_err() {
            self.keep_tag_read(repo, reference, &ours);
        }
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
        if self.memory.lacks_referrers_api(registry) {
            return Ok(None);
        }
        let what = format!("listing referrers of {}@{subject}", repo.name());
        let path = format!("referrers/{subject}");
        let resp = self.pull_request(
            repo,
            &path,
            &what,
            reqwest::Method::GET,
            MEDIA_TYPE_OCI_INDEX,
        )?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => {
                self.memory.keep_referrers_api(registry, false);
                return Ok(None);
            }
            _ => return Err(self.fail(&what, registry, resp)),
        }
        self.memory.keep_referrers_api(registry, true);
        let is_index = content_type(&resp).as_deref() == Some(MEDIA_TYPE_OCI_INDEX);
        let bytes = read_manifest(resp, &what, registry)?;
        let parses = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .is_some_and(|v| v.get("manifests").is_some_and(|m| m.is_array()));
        Ok((is_index && parses).then_some(bytes))
    }
}

/// A manifest or index body, refused when it is larger than any registry
/// would store (they must accept 4 MiB; the cap is 16 MiB), so a registry
/// that streams without end cannot fill memory.
fn read_manifest(
    resp: reqwest::blocking::Response,
    what: &str,
    registry: &str,
) -> Result<Vec<u8>, RegistryError> {
    crate::http::read_capped(resp, &crate::http::MANIFEST, "the manifest").map_err(|e| match e {
        HttpError::ReplyRead { source, .. } => RegistryError::Io {
            what: what.to_string(),
            source,
        },
        e => RegistryError::Protocol {
            what: what.to_string(),
            registry: registry.to_string(),
            detail: format!("answered, but {e}"),
        },
    })
}
