//! A base image on a registry. Manifests are fetched (by digest when pinned)
//! and checked; layers are downloaded into the store only when something reads
//! them (reading the base's Python once, or uploading to another registry).

use super::{resolve_descriptor, BaseError, BaseImage, BlobSource};
use crate::build::{BuildError, Event, RemoteBases};
use crate::digest::Digest;
use crate::image::manifest::{sniff_media_type, Descriptor};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;
use std::io::Read;
use std::sync::Arc;

pub struct RegistryBases<'a> {
    pub client: Arc<RegistryClient>,
    pub store: &'a Store,
    pub offline: bool,
    pub on_event: &'a (dyn Fn(Event) + Sync),
}

struct RegistryBlobs {
    client: Arc<RegistryClient>,
    repo: Reference,
    store: Store,
    name: String,
    offline: bool,
    /// The top manifest or index, served from memory (it may not be a store blob yet).
    top: (Digest, Vec<u8>),
}

impl RegistryBlobs {
    fn fetch_into_store(&self, digest: &Digest) -> Result<(), BaseError> {
        if self.store.has_blob(digest) {
            return Ok(());
        }
        if self.offline {
            return Err(BaseError::Invalid {
                base: self.name.clone(),
                message: format!("blob {digest} is not in the cache and --offline is set; run once without --offline"),
            });
        }
        let reg = |e: crate::registry::RegistryError| BaseError::Registry {
            base: self.name.clone(),
            source: Box::new(e),
        };
        let r = self
            .client
            .get_blob(&self.repo, digest, None)
            .map_err(reg)?;
        self.store
            .put_verified(digest, &format!("base {} blob {digest}", self.name), r)
            .map_err(|e| BaseError::Invalid {
                base: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(())
    }
}

impl BlobSource for RegistryBlobs {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        if digest == &self.top.0 {
            return Ok(Box::new(std::io::Cursor::new(self.top.1.clone())));
        }
        self.fetch_into_store(digest)?;
        let path = self.store.blob_path(digest);
        let f = std::fs::File::open(&path).map_err(|e| BaseError::Io {
            base: self.name.clone(),
            path,
            source: e,
        })?;
        Ok(Box::new(f))
    }

    fn open_stream(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        if self.store.has_blob(digest) || self.offline || digest == &self.top.0 {
            return self.open(digest);
        }
        let reg = |e: crate::registry::RegistryError| BaseError::Registry {
            base: self.name.clone(),
            source: Box::new(e),
        };
        self.client.get_blob(&self.repo, digest, None).map_err(reg)
    }

    fn local_file(&self, digest: &Digest) -> Option<std::path::PathBuf> {
        self.store
            .has_blob(digest)
            .then(|| self.store.blob_path(digest))
    }

    fn open_manifest(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        if digest == &self.top.0 || self.store.has_blob(digest) {
            return self.open(digest);
        }
        if self.offline {
            return self.open(digest);
        }
        let reg = |e: crate::registry::RegistryError| BaseError::Registry {
            base: self.name.clone(),
            source: Box::new(e),
        };
        let (bytes, _, _) = self
            .client
            .get_manifest(&self.repo.with_digest(digest.clone()))
            .map_err(reg)?;
        // get_manifest checked the bytes against the digest we asked for.
        let _ = self.store.put_verified(digest, "base manifest", &bytes[..]);
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl RemoteBases for RegistryBases<'_> {
    fn open(
        &self,
        text: &str,
        platform: &Platform,
    ) -> Result<(BaseImage, Option<String>), BuildError> {
        let reference = Reference::parse(text).map_err(|e| BaseError::Invalid {
            base: format!("{text:?}"),
            message: e.to_string(),
        })?;
        let reg = |e: crate::registry::RegistryError| BaseError::Registry {
            base: text.to_string(),
            source: Box::new(e),
        };
        // A pinned base is read from the cache when we have it: no network at all.
        let (bytes, digest) = match &reference.digest {
            Some(d) if self.store.has_blob(d) => {
                let mut bytes = Vec::new();
                self.store
                    .open_blob(d)?
                    .read_to_end(&mut bytes)
                    .map_err(|e| BaseError::Invalid {
                        base: text.to_string(),
                        message: e.to_string(),
                    })?;
                (bytes, d.clone())
            }
            _ if self.offline => {
                return Err(BaseError::Invalid {
                    base: text.to_string(),
                    message: "not in the cache and --offline is set; pin it by digest and run once without --offline".into(),
                }
                .into())
            }
            _ => {
                let (bytes, _media_type, digest) = self.client.get_manifest(&reference).map_err(reg)?;
                if reference.digest.is_some() {
                    // Verified by get_manifest; keep it so later pinned builds need no network.
                    let _ = self.store.put_verified(&digest, "base manifest", &bytes[..]);
                }
                (bytes, digest)
            }
        };
        if reference.digest.is_none() {
            (self.on_event)(Event::Warning(format!(
                "base {text} is not pinned by digest; for reproducible builds use {}@{digest}",
                reference.name()
            )));
        }
        let media_type = sniff_media_type(&bytes)
            .unwrap_or_else(|| crate::image::MEDIA_TYPE_OCI_MANIFEST.into());
        let top = Descriptor::new(&media_type, digest.clone(), bytes.len() as u64);
        let src = Arc::new(RegistryBlobs {
            client: self.client.clone(),
            repo: reference.clone(),
            store: self.store.clone(),
            name: text.to_string(),
            offline: self.offline,
            top: (digest, bytes),
        });
        let base = resolve_descriptor(src, top, platform)?;
        Ok((
            base,
            Some(format!("{}/{}", reference.registry, reference.repository)),
        ))
    }
}
