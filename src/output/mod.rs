//! The places a built image can go: an OCI layout, an OCI archive, a
//! docker-archive, or a registry. Files are written beside their destination
//! and renamed into place, so a failed build leaves nothing half-written.

pub(crate) mod archive;
pub(crate) mod base_facts;
pub(crate) mod layout;
pub(crate) mod push;
pub(crate) mod referrers;

use crate::base::BlobSource;
use crate::digest::{Digest, VerifyingReader};
use crate::layer::Layer;
use crate::platform::Platform;
use crate::store::Store;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a layer's bytes can be read from.
#[derive(Clone)]
pub enum BlobOrigin {
    Store,
    Base(Arc<dyn BlobSource>),
    /// A layer reused from a registry (`--cache-from`, or the push target),
    /// read from its repository there when its bytes are needed.
    Registry {
        client: Arc<crate::registry::RegistryClient>,
        repo: crate::reference::Reference,
    },
}

#[derive(Clone)]
pub struct ImageLayer {
    pub layer: Layer,
    pub origin: BlobOrigin,
    /// What the layer holds, for progress and --json: "base", "venv", a package name, "app".
    pub label: String,
    /// The descriptor's annotations in the manifest (a package layer's cache key and facts).
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone)]
pub struct BuiltImage {
    pub platform: Platform,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub layers: Vec<ImageLayer>,
    /// Repository of the base on a registry, for cross-repository mounts.
    pub base_repository: Option<String>,
    /// The wheels installed, in lock order (for SBOM and provenance); a
    /// package built from its sdist is listed by the sdist the lock names.
    pub packages: Vec<crate::lock::select::SelectedWheel>,
    /// How each package built from its sdist was built (issue 22).
    pub sdist_builds: Vec<crate::sdist::Built>,
    /// The source tree digest (docs/reproducibility.md), for provenance.
    pub source_tree: Option<Digest>,
    /// What this build took from where, for --json.
    pub sources: LayerSources,
}

/// Where a build found the inputs of its package layers: how many wheels it
/// downloaded (the others were in the local cache, or not needed), and how
/// many layers (packages, the stdlib's pycs) it reused from a registry cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerSources {
    pub wheels_downloaded: usize,
    pub layers_from_registry_cache: usize,
    /// Base layers downloaded by the build (to read the base's Python, its
    /// libraries, or its interpreter for bytecode); 0 when the base facts
    /// and everything else came from a cache.
    pub base_layers_downloaded: usize,
}

/// One image per platform, and an index when there are several.
#[derive(Clone)]
pub struct BuildResult {
    pub images: Vec<BuiltImage>,
    pub index: Option<Vec<u8>>,
    /// What the build learnt from each base (one per base manifest), to push
    /// beside the image for the next fresh runner.
    pub base_facts: Vec<base_facts::BaseFactsDoc>,
    /// The lock's local packages' directories (absolute): project files a
    /// build read outside the source tree, for the no-op push's fingerprint.
    pub local_dirs: Vec<std::path::PathBuf>,
}

impl BuildResult {
    /// The digest users pin: the index's when there is one, else the manifest's.
    pub fn digest(&self) -> Digest {
        match &self.index {
            Some(i) => Digest::of_bytes(i),
            None => self.images[0].manifest_digest.clone(),
        }
    }

    pub fn media_type(&self) -> &'static str {
        if self.index.is_some() {
            crate::image::MEDIA_TYPE_OCI_INDEX
        } else {
            crate::image::MEDIA_TYPE_OCI_MANIFEST
        }
    }

    pub fn top_bytes(&self) -> &[u8] {
        self.index.as_deref().unwrap_or(&self.images[0].manifest)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a docker-archive holds one platform, but this build has {count}; pass one --platform, or use --output oci-archive:FILE")]
    OnePlatformOnly { count: usize },
    #[error("{path} exists and is not an OCI layout; choose a new directory for --output oci:")]
    NotALayout { path: PathBuf },
}

/// Temp files and directories are private (0600/0700) while they are written;
/// what we publish is readable by others, as `cp` or `docker save` would leave it.
pub(crate) fn make_readable(path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Opens a layer's compressed bytes, verified against its digest as they stream.
pub fn open_layer(store: &Store, l: &ImageLayer) -> io::Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = match &l.origin {
        BlobOrigin::Store => Box::new(std::fs::File::open(store.blob_path(&l.layer.digest))?),
        BlobOrigin::Base(src) => src.open(&l.layer.digest).map_err(io::Error::other)?,
        BlobOrigin::Registry { client, repo } => client
            .get_blob(repo, &l.layer.digest, Some(l.layer.size))
            .map_err(io::Error::other)?,
    };
    Ok(Box::new(VerifyingReader::new(
        raw,
        l.layer.digest.clone(),
        Some(l.layer.size),
        format!("layer {} ({})", l.layer.digest, l.label),
    )))
}

/// Writes a layer's compressed bytes to the new file `dest`. A base blob that
/// is a local file, checked before and unchanged since (same size, mtime and
/// inode), is copied by the kernel without being read again; anything else is
/// streamed through its digest check, and a local file's check is recorded.
pub fn copy_layer(store: &Store, l: &ImageLayer, dest: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let local = match &l.origin {
        BlobOrigin::Base(src) => src.local_file(&l.layer.digest),
        BlobOrigin::Store | BlobOrigin::Registry { .. } => None,
    };
    let stamp = local.as_ref().and_then(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some(format!(
            "{}:{}:{}:{}:{}",
            p.display(),
            m.len(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
            m.ino(),
            m.dev()
        ))
    });
    if let (Some(src), Some(stamp)) = (&local, &stamp) {
        if store.get_meta::<Digest>("verified-files", stamp).as_ref() == Some(&l.layer.digest) {
            std::fs::copy(src, dest)?;
            // fs::copy carries the source's mode over; the cache's blobs are private.
            return make_readable(dest, 0o644);
        }
    }
    let mut r = open_layer(store, l)?;
    let mut f = std::fs::File::create(dest)?;
    io::copy(&mut r, &mut f)?;
    if let Some(stamp) = stamp {
        // Only a shortcut for next time: a failed write costs a re-check, nothing more.
        store.put_meta_best_effort("verified-files", &stamp, &l.layer.digest);
    }
    Ok(())
}

/// Every blob of the result, deduplicated, in a fixed order: per image its
/// layers, config and manifest, then the index.
pub enum BlobRef<'a> {
    Bytes(&'a [u8]),
    Layer(&'a ImageLayer),
}

pub fn all_blobs(result: &BuildResult) -> Vec<(Digest, u64, BlobRef<'_>)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for img in &result.images {
        for l in &img.layers {
            if seen.insert(l.layer.digest.clone()) {
                out.push((l.layer.digest.clone(), l.layer.size, BlobRef::Layer(l)));
            }
        }
        if seen.insert(img.config_digest.clone()) {
            out.push((
                img.config_digest.clone(),
                img.config.len() as u64,
                BlobRef::Bytes(&img.config),
            ));
        }
        if seen.insert(img.manifest_digest.clone()) {
            out.push((
                img.manifest_digest.clone(),
                img.manifest.len() as u64,
                BlobRef::Bytes(&img.manifest),
            ));
        }
    }
    if let Some(index) = &result.index {
        out.push((
            Digest::of_bytes(index),
            index.len() as u64,
            BlobRef::Bytes(index),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
