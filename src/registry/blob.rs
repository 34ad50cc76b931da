//! Blob reads: a verified stream of a blob, and whether a repository holds one.

use super::auth::repository_scope;
use super::client::{join, Call, CountingReader, RegistryClient};
use super::error::RegistryError;
use crate::digest::{Digest, VerifyingReader};
use crate::reference::Reference;
use reqwest::StatusCode;
use std::io::Read;

impl RegistryClient {
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
        let resp = self.execute(Call::new(registry, &what, &scopes, &|c, base| {
            Ok(c.get(join(base, &path)))
        }))?;
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

    pub(super) fn blob_exists_scoped(
        &self,
        repo: &Reference,
        digest: &Digest,
        scopes: &[String],
    ) -> Result<bool, RegistryError> {
        let what = format!("checking blob {digest} in {}", repo.name());
        let path = format!("/v2/{}/blobs/{digest}", repo.repository);
        let resp = self.execute(Call::new(&repo.registry, &what, scopes, &|c, base| {
            Ok(c.head(join(base, &path)))
        }))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(&what, &repo.registry, resp)),
        }
    }
}
