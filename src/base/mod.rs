//! The base image: where it comes from (a local OCI layout, an OCI archive, a
//! registry), the manifest chosen for the target platform, its config, and a
//! way to stream its blobs. Base layers are only ever copied byte for byte.

pub(crate) mod archive;
pub(crate) mod layout;
pub(crate) mod python;
pub(crate) mod remote;
pub(crate) mod tars;

use crate::digest::{Digest, HashingWriter, VerifyingReader};
use crate::image::manifest::{sniff_media_type, Descriptor, Index, Manifest};
use crate::image::{is_index_media_type, is_manifest_media_type, ANNOTATION_REF_NAME};
use crate::platform::Platform;
use crate::tee::Tee;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("base {base}: {message}")]
    Invalid { base: String, message: String },
    #[error("base {base}: {path}")]
    Io {
        base: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("base {base}: {what} is not valid JSON")]
    Json {
        base: String,
        /// The document, e.g. `index.json in base.tar` or `manifest sha256:…`.
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("base {base}: reading {digest}")]
    Read {
        base: String,
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("base {base}: blob {digest} is missing")]
    MissingBlob { base: String, digest: Digest },
    #[error("base {0}: registry bases are not available in this build; use oci:DIR[:TAG] or oci-archive:FILE")]
    Unsupported(String),
    #[error("base {base:?} is not a valid image reference")]
    Reference {
        base: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("base {base}: not in the cache and --offline is set; pin it by digest and run once without --offline")]
    OfflineManifest { base: String },
    #[error("base {base}: blob {digest} is not in the cache and --offline is set; run once without --offline")]
    OfflineBlob { base: String, digest: Digest },
    #[error("base {base}")]
    Cache {
        base: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("base {base}: layer {layer}")]
    Layer {
        base: String,
        layer: Digest,
        /// A digest mismatch, a compression we do not read, or a tar the reader refused.
        #[source]
        source: BoxError,
    },
    #[error("base {base}: layer {layer}: its config's diff_id {diff_id} does not match the layer's uncompressed content ({got}); the base image is corrupt or was built wrong: rebuild or re-pull it, or use another base")]
    DiffId {
        base: String,
        layer: Digest,
        /// Boxed: the error stays as small as the other variants.
        diff_id: Box<Digest>,
        got: Box<Digest>,
    },
    #[error("base {base}")]
    Registry {
        base: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
}

/// Opens a base that is not a local layout or archive (a registry reference).
/// Returns the image and, for cross-repository mounts, its `registry/repository`.
pub trait RemoteBases: Sync {
    fn open(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(BaseImage, Option<String>), BaseError>;
}

/// Streams raw (unverified) blob bytes; `BaseImage::open_blob` adds verification.
pub trait BlobSource: Send + Sync {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError>;
    /// A blob read once and not kept (reading the base's Python): a registry
    /// streams it rather than filling the cache with layers a push may never need.
    fn open_stream(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        self.open(digest)
    }
    /// The blob as a plain local file, when it is one (a layout's blob, a cached
    /// registry blob), so outputs can copy it in the kernel.
    fn local_file(&self, _digest: &Digest) -> Option<std::path::PathBuf> {
        None
    }
    /// Manifests and indexes; registries serve them apart from blobs.
    fn open_manifest(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        self.open(digest)
    }
    /// How the base is named in messages and in the base.name annotation.
    fn name(&self) -> &str;
    /// The blobs this source has downloaded so far (a registry's; local
    /// sources download nothing), for the `--json` summary.
    fn downloaded(&self) -> Vec<Digest> {
        Vec::new()
    }
}

pub struct BaseImage {
    /// As the user wrote it, for messages and the base.name annotation.
    pub name: String,
    /// The digest of the platform manifest.
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: serde_json::Value,
    /// The config's `rootfs.diff_ids`, one per manifest layer, checked when opened.
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
    pub blobs: Arc<dyn BlobSource>,
    /// The layers' tars read so far in this process (see [`tars`]).
    pub tars: tars::LayerTars,
}

impl BaseImage {
    /// How many of the base's layers were downloaded in this process so far.
    pub fn layers_downloaded(&self) -> usize {
        let got = self.blobs.downloaded();
        self.manifest
            .layers
            .iter()
            .filter(|l| got.contains(&l.digest))
            .count()
    }

    pub fn open_blob(
        &self,
        desc: &Descriptor,
    ) -> Result<VerifyingReader<Box<dyn Read + Send>>, BaseError> {
        let r = self.blobs.open_stream(&desc.digest)?;
        Ok(VerifyingReader::new(
            r,
            desc.digest.clone(),
            Some(desc.size),
            format!("base {} blob {}", self.name, desc.digest),
        ))
    }

    /// Hands layer `index`'s tar stream to `read`, then reads the layer to its
    /// end, so its digest is always checked: a corrupt blob is reported as a
    /// digest mismatch, not as whatever decoding error it caused. The tar is
    /// checked against the config's diff_id the same way. A layer read before
    /// in this process is read from its kept tar, not inflated again.
    pub fn read_layer_tar<T>(
        &self,
        index: usize,
        read: impl FnOnce(&mut dyn Read) -> Result<T, BoxError>,
    ) -> Result<T, BaseError> {
        let desc = &self.manifest.layers[index];
        let layer_err = |source| BaseError::Layer {
            base: self.name.clone(),
            layer: desc.digest.clone(),
            source,
        };
        if let Some(mut kept) = self.tars.open(index) {
            return read(&mut kept).map_err(layer_err);
        }
        let compressed = crate::layer::compress::is_compressed(&desc.media_type);
        if !compressed && desc.digest != self.diff_ids[index] {
            // An uncompressed layer is its own tar: its diff_id is its digest.
            return Err(self.diff_id_mismatch(index, desc.digest.clone()));
        }
        let mut blob = self.open_blob(desc)?;
        // An uncompressed layer is its own tar: there is nothing to save.
        let mut copy = compressed.then(|| self.tars.copy());
        let mut tar_digest = HashingWriter::new(io::sink());
        let inflated = match crate::layer::compress::decompressed(&desc.media_type, &mut blob) {
            Ok(tar) if compressed => {
                let tar = InflateCap::new(tar, desc.size);
                let mut hashed = Tee::new(tar, &mut tar_digest);
                Ok(read_to_end(&mut hashed, &mut copy, read))
            }
            Ok(mut tar) => Ok(read_to_end(&mut tar, &mut copy, read)),
            Err(e) => Err(e),
        };
        // The blob's own digest first: a corrupt blob explains everything after.
        io::copy(&mut blob, &mut io::sink()).map_err(|e| layer_err(e.into()))?;
        let (value, at_end) = inflated.map_err(|e| layer_err(e.into()))?;
        if compressed && at_end {
            let (got, _, _) = tar_digest.finish();
            if got != self.diff_ids[index] {
                return Err(self.diff_id_mismatch(index, got));
            }
        }
        let value = value.map_err(layer_err)?;
        if let Some(c) = copy {
            self.tars.keep(index, c);
        }
        Ok(value)
    }

    fn diff_id_mismatch(&self, index: usize, got: Digest) -> BaseError {
        BaseError::DiffId {
            base: self.name.clone(),
            layer: self.manifest.layers[index].digest.clone(),
            diff_id: Box::new(self.diff_ids[index].clone()),
            got: Box::new(got),
        }
    }

    /// Env from the base config, for finding its Python on PATH.
    pub fn env_path(&self) -> Option<String> {
        self.config
            .pointer("/config/Env")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str())
            .find_map(|kv| kv.strip_prefix("PATH=").map(str::to_string))
    }
}

/// How far a compressed base layer may inflate: 100 times its size, and at
/// least 1 GiB. Real layers inflate 2 to 5 times (a Debian base: 28 MiB to
/// 74 MiB; CUDA libraries about 3); a gzip bomb inflates 1,000 times, and
/// its tar would fill the disk where it is kept ([`tars`]).
const INFLATE_RATIO: u64 = 100;
const INFLATE_FLOOR: u64 = 1 << 30;

/// A decompressing reader that fails once it has given more than a layer of
/// `compressed` bytes may inflate to.
struct InflateCap<R> {
    inner: R,
    left: u64,
    limit: u64,
    compressed: u64,
}

impl<R> InflateCap<R> {
    fn new(inner: R, compressed: u64) -> Self {
        let limit = compressed.saturating_mul(INFLATE_RATIO).max(INFLATE_FLOOR);
        InflateCap {
            inner,
            left: limit,
            limit,
            compressed,
        }
    }
}

impl<R: Read> Read for InflateCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(format!(
                "inflates to over {} MiB from {} KiB, more than any real layer (at most {INFLATE_RATIO} times its size, or 1 GiB); the base is broken or hostile (a compression bomb): use another base",
                self.limit >> 20,
                self.compressed >> 10
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Hands `tar` (teed into `copy`, when there is one) to `read`, then reads
/// it to its end. Also says whether the end was reached, even when `read`
/// failed: only a tar read to its end can be checked against its diff_id.
fn read_to_end<T>(
    tar: &mut dyn Read,
    copy: &mut Option<tars::TarCopy>,
    read: impl FnOnce(&mut dyn Read) -> Result<T, BoxError>,
) -> (Result<T, BoxError>, bool) {
    let mut teed;
    let tar: &mut dyn Read = match copy {
        Some(c) => {
            teed = c.tee(tar);
            &mut teed
        }
        None => tar,
    };
    let value = read(tar);
    let drained = io::copy(tar, &mut io::sink());
    let at_end = drained.is_ok();
    let value = value.and_then(|v| drained.map(|_| v).map_err(Into::into));
    (value, at_end)
}

/// Reads a whole small blob (manifest, index, config), verified.
pub(crate) fn read_small(
    src: &dyn BlobSource,
    desc: &Descriptor,
    manifest: bool,
) -> Result<Vec<u8>, BaseError> {
    const LIMIT: u64 = 8 << 20;
    if desc.size > LIMIT {
        return Err(BaseError::Invalid {
            base: src.name().to_string(),
            message: format!(
                "{} is {} bytes, too large for a manifest or config",
                desc.digest, desc.size
            ),
        });
    }
    let r = if manifest {
        src.open_manifest(&desc.digest)?
    } else {
        src.open(&desc.digest)?
    };
    let mut v = VerifyingReader::new(
        r,
        desc.digest.clone(),
        Some(desc.size),
        format!("blob {}", desc.digest),
    );
    let mut out = Vec::new();
    v.read_to_end(&mut out).map_err(|source| BaseError::Read {
        base: src.name().to_string(),
        digest: desc.digest.clone(),
        source,
    })?;
    Ok(out)
}

fn invalid(src: &dyn BlobSource, message: impl Into<String>) -> BaseError {
    BaseError::Invalid {
        base: src.name().to_string(),
        message: message.into(),
    }
}

fn bad_json(
    src: &dyn BlobSource,
    kind: &str,
    desc: &Descriptor,
    source: serde_json::Error,
) -> BaseError {
    BaseError::Json {
        base: src.name().to_string(),
        what: format!("{kind} {}", desc.digest),
        source,
    }
}

/// Picks the image for `platform` starting from the descriptors of a layout's
/// index.json, honouring a tag (`org.opencontainers.image.ref.name`).
pub(crate) fn choose_from_layout(
    src: Arc<dyn BlobSource>,
    top: Index,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<BaseImage, BaseError> {
    let candidates: Vec<Descriptor> = match tag {
        Some(t) => top
            .manifests
            .iter()
            .filter(|d| d.annotation(ANNOTATION_REF_NAME) == Some(t))
            .cloned()
            .collect(),
        None => top.manifests.clone(),
    };
    if candidates.is_empty() {
        let tags: Vec<&str> = top
            .manifests
            .iter()
            .filter_map(|d| d.annotation(ANNOTATION_REF_NAME))
            .collect();
        return Err(invalid(
            &*src,
            format!(
                "no image tagged {:?}; the layout has tags: {}",
                tag.unwrap_or(""),
                tags.join(", ")
            ),
        ));
    }
    let desc = if candidates.len() == 1 {
        candidates[0].clone()
    } else {
        pick_platform(&*src, &candidates, platform)?
    };
    resolve_descriptor(src, desc, platform)
}

fn pick_platform(
    src: &dyn BlobSource,
    candidates: &[Descriptor],
    platform: &Platform,
) -> Result<Descriptor, BaseError> {
    if let Some(d) = candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
    {
        return Ok(d.clone());
    }
    let available: Vec<String> = candidates
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    Err(invalid(
        src,
        format!(
            "has no image for {platform} (it has: {}); choose one of those platforms or another base",
            if available.is_empty() { "untagged images without platforms".to_string() } else { available.join(", ") }
        ),
    ))
}

/// Follows a descriptor (an index or a manifest) down to the platform's manifest.
pub(crate) fn resolve_descriptor(
    src: Arc<dyn BlobSource>,
    desc: Descriptor,
    platform: &Platform,
) -> Result<BaseImage, BaseError> {
    let bytes = read_small(&*src, &desc, true)?;
    let media_type = sniff_media_type(&bytes).unwrap_or_else(|| desc.media_type.clone());
    if is_index_media_type(&media_type) {
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| bad_json(&*src, "index", &desc, e))?;
        let chosen = pick_platform(&*src, &index.manifests, platform)?;
        return resolve_descriptor(src, chosen, platform);
    }
    if !is_manifest_media_type(&media_type) {
        return Err(invalid(
            &*src,
            format!(
                "{} has media type {media_type}, not an image manifest",
                desc.digest
            ),
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad_json(&*src, "manifest", &desc, e))?;
    let config_bytes = read_small(&*src, &manifest.config, false)?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad_json(&*src, "config", &manifest.config, e))?;
    let image_platform = Platform {
        os: config
            .get("os")
            .and_then(|v| v.as_str())
            .unwrap_or("linux")
            .to_string(),
        architecture: config
            .get("architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        variant: config
            .get("variant")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    };
    if !platform.matches(&image_platform) {
        return Err(invalid(
            &*src,
            format!("is a {image_platform} image, but the build targets {platform}; use a base built for {platform} or a multi-platform base"),
        ));
    }
    // The base's diff_ids are the digests of its uncompressed layers: we copy
    // its layers byte for byte, so these stay theirs.
    let diff_ids: Vec<Digest> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|d| d.as_str().and_then(|d| d.parse().ok()))
                .collect::<Option<Vec<Digest>>>()
                .ok_or_else(|| {
                    invalid(
                        &*src,
                        format!(
                            "config {} has a rootfs.diff_ids entry that is not a sha256 digest",
                            manifest.config.digest
                        ),
                    )
                })
        })
        .transpose()?
        .unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            &*src,
            format!(
                "config lists {} diff_ids but the manifest has {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    Ok(BaseImage {
        name: src.name().to_string(),
        manifest_digest: desc.digest,
        manifest,
        config,
        diff_ids,
        platform: image_platform,
        blobs: src,
        tars: Default::default(),
    })
}

/// A base written as `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`, or a registry reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseLocation {
    Layout { dir: PathBuf, tag: Option<String> },
    Archive { file: PathBuf, tag: Option<String> },
    Registry(String),
}

impl BaseLocation {
    /// Relative paths are taken from `relative_to` (the spec file's directory).
    pub fn parse(text: &str, relative_to: &Path) -> BaseLocation {
        fn split_tag(rest: &str) -> (&str, Option<String>) {
            match rest.rsplit_once(':') {
                Some((path, tag)) if !tag.is_empty() && !tag.contains('/') => {
                    (path, Some(tag.to_string()))
                }
                _ => (rest, None),
            }
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (p, tag) = split_tag(rest);
            BaseLocation::Layout {
                dir: relative_to.join(p),
                tag,
            }
        } else if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (p, tag) = split_tag(rest);
            BaseLocation::Archive {
                file: relative_to.join(p),
                tag,
            }
        } else {
            BaseLocation::Registry(text.strip_prefix("docker://").unwrap_or(text).to_string())
        }
    }
}

/// Opens a local base (layout or archive) for `platform`.
pub fn open_local(
    location: &BaseLocation,
    name: &str,
    platform: &Platform,
) -> Result<BaseImage, BaseError> {
    match location {
        BaseLocation::Layout { dir, tag } => {
            let (src, index) = layout::LayoutSource::open(dir, name)?;
            choose_from_layout(Arc::new(src), index, tag.as_deref(), platform)
        }
        BaseLocation::Archive { file, tag } => {
            let (src, index) = archive::ArchiveSource::open(file, name)?;
            choose_from_layout(Arc::new(src), index, tag.as_deref(), platform)
        }
        BaseLocation::Registry(_) => Err(BaseError::Unsupported(name.to_string())),
    }
}

#[cfg(test)]
mod tests;
