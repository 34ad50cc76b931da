//! A base image on a registry. Manifests are fetched (by digest when pinned)
//! and checked; layers are downloaded into the store only when something reads
//! them (reading the base's Python once, or uploading to another registry).

use super::{resolve_descriptor, BaseError, BaseImage, BlobSource, RemoteBases};
use crate::digest::Digest;
use crate::image::manifest::{sniff_media_type, Descriptor};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;
use std::io::Read;
use std::sync::{Arc, Mutex};

pub struct RegistryBases<'a> {
    pub client: Arc<RegistryClient>,
    pub store: &'a Store,
    pub offline: bool,
    /// Told about what deserves a warning (a base not pinned by digest); the
    /// caller decides how to show it.
    pub on_warning: &'a (dyn Fn(String) + Sync),
}

struct RegistryBlobs {
    client: Arc<RegistryClient>,
    repo: Reference,
    store: Store,
    name: String,
    offline: bool,
    /// The top manifest or index, served from memory (it may not be a store blob yet).
    top: (Digest, Vec<u8>),
    /// The blobs downloaded so far, for the `--json` summary.
    downloaded: Mutex<Vec<Digest>>,
}

impl RegistryBlobs {
    /// `digest`'s bytes from the registry, counted.
    fn download(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        let r = self
            .client
            .get_blob(&self.repo, digest, None)
            .map_err(|e| registry_error(&self.name, e))?;
        if let Ok(mut d) = self.downloaded.lock() {
            d.push(digest.clone());
        }
        Ok(r)
    }

    fn fetch_into_store(&self, digest: &Digest) -> Result<(), BaseError> {
        if self.store.has_blob(digest) {
            return Ok(());
        }
        if self.offline {
            return Err(BaseError::OfflineBlob {
                base: self.name.clone(),
                digest: digest.clone(),
            });
        }
        let r = self.download(digest)?;
        self.store
            .put_verified(digest, &format!("base {} blob {digest}", self.name), r)
            .map_err(|source| BaseError::Cache {
                base: self.name.clone(),
                source,
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
        let stream = self.download(digest)?;
        // Read through, and kept when read whole: detecting Python, unpacking
        // the interpreter for bytecode and the native-library check each read
        // the base, and only the first should download it.
        match self.store.tee_verified(digest, stream) {
            Ok(tee) => Ok(Box::new(tee)),
            Err(_) => self.download(digest),
        }
    }

    fn downloaded(&self) -> Vec<Digest> {
        self.downloaded
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
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
        let (bytes, _, _) = self
            .client
            .get_manifest(&self.repo.with_digest(digest.clone()))
            .map_err(|e| registry_error(&self.name, e))?;
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
    ) -> Result<(BaseImage, Option<String>), BaseError> {
        let reference = Reference::parse(text).map_err(|source| BaseError::Reference {
            base: text.to_string(),
            source,
        })?;
        // A pinned base is read from the cache when we have it: no network at all.
        let (bytes, digest) = match &reference.digest {
            Some(d) if self.store.has_blob(d) && self.store.verify_blob(d) => {
                let mut bytes = Vec::new();
                let cache_err = |source| BaseError::Cache {
                    base: text.to_string(),
                    source,
                };
                self.store
                    .open_blob(d)
                    .map_err(cache_err)?
                    .read_to_end(&mut bytes)
                    .map_err(|source| BaseError::Read {
                        base: text.to_string(),
                        digest: d.clone(),
                        source,
                    })?;
                (bytes, d.clone())
            }
            _ if self.offline => {
                return Err(BaseError::OfflineManifest {
                    base: text.to_string(),
                })
            }
            _ => {
                let (bytes, _media_type, digest) = self
                    .client
                    .get_manifest(&reference)
                    .map_err(|e| registry_error(text, e))?;
                if reference.digest.is_some() {
                    // Verified by get_manifest; keep it so later pinned builds need no network.
                    let _ = self
                        .store
                        .put_verified(&digest, "base manifest", &bytes[..]);
                }
                (bytes, digest)
            }
        };
        if reference.digest.is_none() {
            (self.on_warning)(format!(
                "base {text} is not pinned by digest; for reproducible builds use {}@{digest}",
                reference.name()
            ));
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
            downloaded: Mutex::default(),
        });
        let base = resolve_descriptor(src, top, platform)?;
        // Cached base layers are checked before anything reuses them: a corrupt
        // one is dropped, so it is downloaded again when read or uploaded.
        for layer in &base.manifest.layers {
            if self.store.has_blob(&layer.digest) && !self.store.verify_blob(&layer.digest) {
                (self.on_warning)(format!(
                    "cached layer {} of base {text} no longer matched its digest; dropped it, it will be downloaded again",
                    layer.digest
                ));
            }
        }
        Ok((
            base,
            Some(format!("{}/{}", reference.registry, reference.repository)),
        ))
    }
}

fn registry_error(base: &str, e: crate::registry::RegistryError) -> BaseError {
    BaseError::Registry {
        base: base.to_string(),
        source: Box::new(e),
    }
}
