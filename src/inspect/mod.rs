//! Reading images back to explain them: from an OCI layout, an archive, a
//! registry, or a build of this checkout; `diff` compares two, `verify`
//! compares a pushed image with a rebuild.

pub(crate) mod diff;
pub(crate) mod files;
pub(crate) mod outdated;

use crate::base::{self, BaseError, BlobSource};
use crate::digest::Digest;
use crate::image::manifest::{sniff_media_type, Descriptor, Index, Manifest};
use crate::image::{is_index_media_type, ANNOTATION_REF_NAME};
use crate::output::{BlobOrigin, BuildResult};
use crate::platform::Platform;
use crate::reference::{Reference, ReferenceError};
use crate::registry::{RegistryClient, RegistryError};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{name}: cannot read {path}; check the path and its permissions")]
    Unreadable {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
    #[error("{0:?} is not an image reference: expected REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG], FILE.tar or `.`")]
    BadReference(String, #[source] ReferenceError),
    #[error("{name}")]
    Registry {
        name: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{name}: blob {digest} is missing")]
    MissingBlob { name: String, digest: Digest },
    #[error("{name}: cannot open the image")]
    Open {
        name: String,
        #[source]
        source: BaseError,
    },
}

/// Where an image to inspect is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// What this checkout builds.
    Checkout,
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    Archive {
        file: PathBuf,
        tag: Option<String>,
    },
    Registry(Reference),
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, InspectError> {
        if text == "." {
            return Ok(ImageRef::Checkout);
        }
        let cwd = Path::new("");
        if text.starts_with("oci:") || text.starts_with("oci-archive:") {
            return Ok(match base::BaseLocation::parse(text, cwd) {
                base::BaseLocation::Layout { dir, tag } => ImageRef::Layout { dir, tag },
                base::BaseLocation::Archive { file, tag } => ImageRef::Archive { file, tag },
                base::BaseLocation::Registry(_) => unreachable!("prefixed above"),
            });
        }
        if text.ends_with(".tar") || Path::new(text).is_file() {
            return Ok(ImageRef::Archive {
                file: text.into(),
                tag: None,
            });
        }
        if Path::new(text).join("index.json").is_file() {
            return Ok(ImageRef::Layout {
                dir: text.into(),
                tag: None,
            });
        }
        Reference::parse(text)
            .map(ImageRef::Registry)
            .map_err(|e| InspectError::BadReference(text.to_string(), e))
    }
}

/// One platform's image, read back.
pub struct LoadedImage {
    pub platform: Platform,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: serde_json::Value,
    pub blobs: Arc<dyn BlobSource>,
}

/// An image (one platform, or an index of several), read back.
pub struct Loaded {
    pub name: String,
    pub digest: Digest,
    pub images: Vec<LoadedImage>,
    /// Whether the name points to an index (even of one platform).
    pub is_index: bool,
    /// The index's annotations, when it is one and has them.
    pub index_annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Loaded {
    pub fn platforms(&self) -> Vec<Platform> {
        self.images.iter().map(|i| i.platform.clone()).collect()
    }

    pub fn find(&self, p: &Platform) -> Option<&LoadedImage> {
        self.images.iter().find(|i| i.platform.matches(p))
    }
}

fn from_base_error(name: &str, e: BaseError) -> InspectError {
    match e {
        BaseError::Io { path, source, .. } => InspectError::Unreadable {
            name: name.into(),
            path,
            source,
        },
        BaseError::MissingBlob { digest, .. } => InspectError::MissingBlob {
            name: name.into(),
            digest,
        },
        BaseError::Invalid { message, .. } => InspectError::Invalid {
            name: name.into(),
            message,
        },
        BaseError::Registry { source, .. } => InspectError::Registry {
            name: name.into(),
            source,
        },
        other => InspectError::Open {
            name: name.into(),
            source: other,
        },
    }
}

/// Blobs of a registry repository, streamed (and verified by the client).
struct RegistryBlobs {
    client: Arc<RegistryClient>,
    repo: Reference,
    name: String,
}

impl BlobSource for RegistryBlobs {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        self.client
            .get_blob(&self.repo, digest, None)
            .map_err(|e| BaseError::Registry {
                base: self.name.clone(),
                source: Box::new(e),
            })
    }
    fn open_manifest(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        let (bytes, _, _) = self
            .client
            .get_manifest(&self.repo.with_digest(digest.clone()))
            .map_err(|e| BaseError::Registry {
                base: self.name.clone(),
                source: Box::new(e),
            })?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Reads an image from a layout, an archive or a registry (not `.`).
pub fn load(
    r: &ImageRef,
    name: &str,
    client: &Arc<RegistryClient>,
) -> Result<Loaded, InspectError> {
    let berr = |e| from_base_error(name, e);
    match r {
        ImageRef::Checkout => Err(InspectError::Invalid {
            name: name.into(),
            message: "a checkout is built, not loaded".into(),
        }),
        ImageRef::Layout { dir, tag } => {
            let (src, index) = base::layout::LayoutSource::open(dir, name).map_err(berr)?;
            load_from_index(Arc::new(src), index, tag.as_deref(), name)
        }
        ImageRef::Archive { file, tag } => {
            let (src, index) = base::archive::ArchiveSource::open(file, name).map_err(berr)?;
            load_from_index(Arc::new(src), index, tag.as_deref(), name)
        }
        ImageRef::Registry(reference) => {
            let (bytes, media_type, digest) =
                client
                    .get_manifest(reference)
                    .map_err(|e| InspectError::Registry {
                        name: name.into(),
                        source: Box::new(e),
                    })?;
            let src: Arc<dyn BlobSource> = Arc::new(RegistryBlobs {
                client: client.clone(),
                repo: reference.clone(),
                name: name.into(),
            });
            let top = Descriptor::new(&media_type, digest, bytes.len() as u64);
            load_top(src, &top, bytes, name)
        }
    }
}

fn load_from_index(
    src: Arc<dyn BlobSource>,
    index: Index,
    tag: Option<&str>,
    name: &str,
) -> Result<Loaded, InspectError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| tag.is_none() || d.annotation(ANNOTATION_REF_NAME) == tag)
        .collect();
    let top = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(InspectError::Invalid {
                name: name.into(),
                message: format!("no image tagged {:?}", tag.unwrap_or("")),
            })
        }
        _ => {
            return Err(InspectError::Invalid {
                name: name.into(),
                message: "holds several images; name one with :TAG".into(),
            })
        }
    };
    let bytes = base::read_small(&*src, &top, true).map_err(|e| from_base_error(name, e))?;
    load_top(src, &top, bytes, name)
}

fn load_top(
    src: Arc<dyn BlobSource>,
    top: &Descriptor,
    bytes: Vec<u8>,
    name: &str,
) -> Result<Loaded, InspectError> {
    let invalid = |message: String| InspectError::Invalid {
        name: name.into(),
        message,
    };
    let media_type = sniff_media_type(&bytes).unwrap_or_else(|| top.media_type.clone());
    let is_index = is_index_media_type(&media_type);
    let mut index_annotations = None;
    let descs: Vec<(Descriptor, Option<Vec<u8>>)> = if is_index {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("index {}: {e}", top.digest)))?;
        index_annotations = index.annotations.clone();
        index
            .manifests
            .into_iter()
            // Attestations stored beside the images (BuildKit's unknown/unknown) are not images.
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.architecture != "unknown")
            })
            .map(|d| (d, None))
            .collect()
    } else {
        vec![(top.clone(), Some(bytes))]
    };
    let mut images = Vec::new();
    for (d, bytes) in descs {
        let bytes = match bytes {
            Some(b) => b,
            None => base::read_small(&*src, &d, true).map_err(|e| from_base_error(name, e))?,
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("manifest {}: {e}", d.digest)))?;
        let config_bytes = base::read_small(&*src, &manifest.config, false)
            .map_err(|e| from_base_error(name, e))?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(format!("config {}: {e}", manifest.config.digest)))?;
        let platform = d.platform.clone().unwrap_or_else(|| Platform {
            os: config["os"].as_str().unwrap_or("linux").into(),
            architecture: config["architecture"].as_str().unwrap_or("").into(),
            variant: config["variant"].as_str().map(str::to_string),
        });
        images.push(LoadedImage {
            platform,
            manifest_digest: d.digest.clone(),
            manifest,
            config,
            blobs: src.clone(),
        });
    }
    Ok(Loaded {
        name: name.into(),
        digest: top.digest.clone(),
        images,
        is_index,
        index_annotations,
    })
}

/// Blobs of a fresh build: ours in the store, the base's where they are.
struct BuiltBlobs {
    store: crate::store::Store,
    layers: HashMap<Digest, BlobOrigin>,
}

impl BlobSource for BuiltBlobs {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        match self.layers.get(digest) {
            Some(BlobOrigin::Base(src)) => src.open(digest),
            _ => self
                .store
                .open_blob(digest)
                .map(|r| Box::new(r) as Box<dyn Read + Send>)
                .map_err(|_| BaseError::MissingBlob {
                    base: ".".into(),
                    digest: digest.clone(),
                }),
        }
    }
    fn name(&self) -> &str {
        "."
    }
}

/// A build of this checkout, as if read back.
pub fn from_build(
    result: &BuildResult,
    store: &crate::store::Store,
) -> Result<Loaded, InspectError> {
    let layers: HashMap<Digest, BlobOrigin> = result
        .images
        .iter()
        .flat_map(|i| {
            i.layers
                .iter()
                .map(|l| (l.layer.digest.clone(), l.origin.clone()))
        })
        .collect();
    let src: Arc<dyn BlobSource> = Arc::new(BuiltBlobs {
        store: store.clone(),
        layers,
    });
    let mut images = Vec::new();
    for i in &result.images {
        let invalid = |e: serde_json::Error| InspectError::Invalid {
            name: ".".into(),
            message: e.to_string(),
        };
        images.push(LoadedImage {
            platform: i.platform.clone(),
            manifest_digest: i.manifest_digest.clone(),
            manifest: serde_json::from_slice(&i.manifest).map_err(invalid)?,
            config: serde_json::from_slice(&i.config).map_err(invalid)?,
            blobs: src.clone(),
        });
    }
    Ok(Loaded {
        name: ".".into(),
        digest: result.digest(),
        images,
        is_index: result.index.is_some(),
        index_annotations: None,
    })
}

fn facts(i: &LoadedImage) -> diff::ImageFacts {
    let annotations: Vec<Option<String>> = i
        .manifest
        .layers
        .iter()
        .map(|d| d.annotation(diff::ANNOTATION_PACKAGE).map(str::to_string))
        .collect();
    let labels = diff::layer_labels(&i.config, &annotations);
    diff::ImageFacts {
        platform: i.platform.to_string(),
        manifest_digest: i.manifest_digest.to_string(),
        config: i.config.clone(),
        layers: i
            .manifest
            .layers
            .iter()
            .zip(labels)
            .map(|(d, label)| diff::LayerFacts {
                digest: d.digest.to_string(),
                size: d.size,
                label,
            })
            .collect(),
    }
}

/// Compares two loaded images, down to the files of layers that differ.
pub fn compare(a: &Loaded, b: &Loaded) -> diff::Report {
    let mut report = diff::Report {
        a: a.name.clone(),
        b: b.name.clone(),
        a_digest: a.digest.to_string(),
        b_digest: b.digest.to_string(),
        ..Default::default()
    };
    for ia in &a.images {
        let Some(ib) = b.find(&ia.platform) else {
            report.only_in_a.push(ia.platform.to_string());
            continue;
        };
        let (fa, fb) = (facts(ia), facts(ib));
        let (mut pd, pairs) = diff::compare_platform(&fa, &fb);
        for (change, (la, lb)) in pd.layers.iter_mut().zip(pairs) {
            let (Some(la), Some(lb)) = (la, lb) else {
                continue;
            };
            let list = |img: &LoadedImage, k: usize| {
                files::list_layer(&*img.blobs, &img.manifest.layers[k])
            };
            match (list(ia, la), list(ib, lb)) {
                (Ok(x), Ok(y)) => {
                    let all = diff::file_changes(&x, &y);
                    change.files_changed = all.len();
                    change.files = all.into_iter().take(diff::FILES_SHOWN).collect();
                }
                (Err(e), _) | (_, Err(e)) => change.files_note = Some(e),
            }
        }
        report.platforms.push(pd);
    }
    for ib in &b.images {
        if a.find(&ib.platform).is_none() {
            report.only_in_b.push(ib.platform.to_string());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_image_reference() {
        assert_eq!(ImageRef::parse(".").unwrap(), ImageRef::Checkout);
        assert_eq!(
            ImageRef::parse("oci:out:v1").unwrap(),
            ImageRef::Layout {
                dir: "out".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("image.tar").unwrap(),
            ImageRef::Archive {
                file: "image.tar".into(),
                tag: None
            }
        );
        assert!(matches!(
            ImageRef::parse("127.0.0.1:5000/app:1").unwrap(),
            ImageRef::Registry(_)
        ));
        assert!(ImageRef::parse("UPPER/Case:x").is_err());
    }
}
