//! A base in an OCI archive: a tar of an image layout. The tar is indexed once
//! and blobs are read in place by offset, never extracted.

use super::{BaseError, BlobSource};
use crate::digest::Digest;
use crate::image::manifest::Index;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct ArchiveSource {
    file: PathBuf,
    name: String,
    blobs: HashMap<Digest, (u64, u64)>,
}

impl ArchiveSource {
    pub fn open(file: &Path, name: &str) -> Result<(Self, Index), BaseError> {
        let io_err = |e| BaseError::Io {
            base: name.to_string(),
            path: file.to_path_buf(),
            source: e,
        };
        let f = File::open(file).map_err(io_err)?;
        let mut archive = tar::Archive::new(f);
        let mut blobs = HashMap::new();
        let mut index = None;
        for entry in archive.entries().map_err(io_err)? {
            let mut entry = entry.map_err(io_err)?;
            let path = entry
                .path()
                .map_err(io_err)?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if path == "index.json" {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(io_err)?;
                index = Some(serde_json::from_slice::<Index>(&bytes).map_err(|source| {
                    BaseError::Json {
                        base: name.to_string(),
                        what: format!("index.json in {}", file.display()),
                        source,
                    }
                })?);
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                if let Ok(d) = Digest::from_hex(hex) {
                    blobs.insert(d, (entry.raw_file_position(), entry.size()));
                }
            }
        }
        let index = index.ok_or_else(|| BaseError::Invalid {
            base: name.to_string(),
            message: format!(
                "{} is not an OCI archive (no index.json inside)",
                file.display()
            ),
        })?;
        Ok((
            ArchiveSource {
                file: file.to_path_buf(),
                name: name.to_string(),
                blobs,
            },
            index,
        ))
    }
}

impl BlobSource for ArchiveSource {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        let &(offset, size) = self
            .blobs
            .get(digest)
            .ok_or_else(|| BaseError::MissingBlob {
                base: self.name.clone(),
                digest: digest.clone(),
            })?;
        let io_err = |e| BaseError::Io {
            base: self.name.clone(),
            path: self.file.clone(),
            source: e,
        };
        let mut f = File::open(&self.file).map_err(io_err)?;
        f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        Ok(Box::new(f.take(size)))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
