//! A base in an OCI image layout directory.

use super::{BaseError, BlobSource};
use crate::digest::Digest;
use crate::image::manifest::Index;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct LayoutSource {
    dir: PathBuf,
    name: String,
}

impl LayoutSource {
    pub fn open(dir: &Path, name: &str) -> Result<(Self, Index), BaseError> {
        let index_path = dir.join("index.json");
        let bytes = std::fs::read(&index_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BaseError::Invalid {
                    base: name.to_string(),
                    message: format!(
                        "{} is not an OCI image layout (no index.json); check the path",
                        dir.display()
                    ),
                }
            } else {
                BaseError::Io {
                    base: name.to_string(),
                    path: index_path.clone(),
                    source: e,
                }
            }
        })?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| BaseError::Json {
            base: name.to_string(),
            what: index_path.display().to_string(),
            source,
        })?;
        Ok((
            LayoutSource {
                dir: dir.to_path_buf(),
                name: name.to_string(),
            },
            index,
        ))
    }
}

impl BlobSource for LayoutSource {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BaseError::MissingBlob {
                base: self.name.clone(),
                digest: digest.clone(),
            }),
            Err(e) => Err(BaseError::Io {
                base: self.name.clone(),
                path,
                source: e,
            }),
        }
    }

    fn local_file(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.dir.join("blobs/sha256").join(digest.hex())).filter(|p| p.is_file())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
