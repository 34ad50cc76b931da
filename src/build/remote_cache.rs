//! The registry as a layer cache, the I/O half: read the image under each
//! push target and `--cache-from` reference (manifest, then its config by
//! digest), and for each package layer whose key one of them offers, check
//! the blob is still there and, for a local output, pull it into the store,
//! verified against its digest and its diff_id. Planning is in `cache_plan`.

use super::cache_plan::{self, Offered};
use super::identity::LayerKey;
use super::{BuildOptions, Event};
use crate::base::BaseImage;
use crate::check::facts::{remember_base_facts, BaseFacts, WheelFacts};
use crate::digest::Digest;
use crate::image::manifest::{Index, Manifest};
use crate::layer::Layer;
use crate::output::BlobOrigin;
use crate::platform::Platform;
use crate::python::bytecode::packed;
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

/// Where a build looks for layers it need not build.
pub struct RemoteCache {
    pub client: Arc<RegistryClient>,
    /// The push targets first, then each `--cache-from`, in the order given.
    pub refs: Vec<Reference>,
    /// Whether reused layers must be in the store (a local output needs their
    /// bytes); when pushing they are mounted or found in place instead.
    pub pull: bool,
}

/// A package layer taken from a registry, with its wheels' recorded facts.
pub(super) struct Reused {
    pub layer: Layer,
    pub origin: BlobOrigin,
    pub facts: Vec<WheelFacts>,
}

/// The layers the registry cache offers for one platform, by key digest.
#[derive(Default)]
pub(super) struct Offers(HashMap<String, Offered>);

/// For each layer key of layers made from `wheels`
/// wheels each, the layer a registry offers for it, checked present and (when
/// pulling) verified. `None` where it must be built: no cache, no offer, the
/// local cache has it, the blob is gone, or its bytes are wrong.
pub(super) fn reuse_layers(
    opts: &BuildOptions,
    offers: &Offers,
    keys: &[LayerKey],
    wheels: usize,
) -> Vec<Option<Reused>> {
    let Some(cache) = opts.cache.filter(|_| !offers.0.is_empty()) else {
        return keys.iter().map(|_| None).collect();
    };
    crate::parallel::map_ordered(keys, opts.jobs, |key| {
        // A layer the local cache holds needs no request.
        let local = opts.store.get_meta::<Layer>("layers", key.as_str());
        if local.is_some_and(|l| opts.store.has_blob(&l.digest)) {
            return None;
        }
        let offer = cache_plan::find(&offers.0, &key.digest(), wheels)?;
        reuse(cache, offer, key, opts)
    })
}

/// Reads the image under each reference of the cache for `platform`: the
/// push targets and `--cache-from`, before anything is downloaded.
pub(super) fn read_offers(opts: &BuildOptions, platform: &Platform) -> Offers {
    let Some(cache) = opts.cache else {
        return Offers::default();
    };
    let mut all = Vec::new();
    for (k, r) in cache.refs.iter().enumerate() {
        match read_image(&cache.client, r, platform, opts.store) {
            Ok(Some((manifest, config))) => match cache_plan::offered(&manifest, &config, k) {
                Ok(offers) => {
                    (opts.on_event)(Event::Detail(format!(
                        "cache {r}: {} package layers offered",
                        offers.len()
                    )));
                    all.extend(offers)
                }
                Err(e) => (opts.on_event)(Event::Warning(format!("cache {r}: ignored, {e}"))),
            },
            Ok(None) => (opts.on_event)(Event::Detail(format!(
                "cache {r}: no such image for {platform}; nothing to reuse from it"
            ))),
            Err(e) => (opts.on_event)(Event::Warning(format!(
                "cache {r}: not read ({}); building without it",
                crate::text::error_chain(&e)
            ))),
        }
    }
    Offers(cache_plan::by_key(all))
}

/// The base facts (docs/reproducibility.md) that the first reference of the
/// cache holding them gives about the base `base`, put in the store so the
/// build reads none of the base's layers for them. Not asked when the store
/// knows the base already (a warm runner), nor without a registry cache.
pub(super) fn read_base_facts(opts: &BuildOptions, base: &Digest) -> Option<BaseFacts> {
    let cache = opts.cache?;
    if crate::base::python::known(opts.store, base) {
        return None;
    }
    for r in &cache.refs {
        let warn = |why: String| {
            (opts.on_event)(Event::Warning(format!(
                "cache {r}: base facts not read ({why}); reading them from the base"
            )))
        };
        match crate::output::base_facts::read(&cache.client, r, base) {
            Ok(Some(bytes)) => match serde_json::from_slice::<BaseFacts>(&bytes) {
                Ok(f) if f.base.as_ref() == Some(base) => {
                    remember_base_facts(opts.store, base, &f);
                    (opts.on_event)(Event::Detail(format!(
                        "cache {r}: base facts of {} read",
                        base.short()
                    )));
                    return Some(f);
                }
                Ok(_) => warn("they are about another base".into()),
                Err(e) => warn(e.to_string()),
            },
            Ok(None) => {}
            Err(e) if is_dead(&e) => quiet(opts, &e),
            Err(e) => warn(crate::text::error_chain(&e)),
        }
    }
    None
}

/// A registry found dead earlier in this run: the cache read warned about
/// it once already, so the reads after it say so under -v only.
fn is_dead(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Dead { .. })
}

fn quiet(opts: &BuildOptions, e: &RegistryError) {
    (opts.on_event)(Event::Detail(crate::text::error_chain(e)));
}

/// Installs a fetched compile root from its file.
fn open_and_install(
    base: &BaseImage,
    roots: &std::path::Path,
    root: &crate::output::base_facts::FetchedRoot,
) -> io::Result<()> {
    let _span = crate::trace::span(|| "compile root: unpack".into());
    packed::install(base, roots, root.tar.path(), &root.stamp)
}

/// With bytecode on, the compile root of `base` (docs/reproducibility.md)
/// from the first reference of the cache that holds it, installed where the
/// compiler looks for it, so the build starts the base's interpreter without
/// reading the base. Not asked when the cache holds the root already, nor
/// without a registry cache; anything wrong with it is a warning, and the
/// root is unpacked from the base as before.
pub(super) fn read_compile_root(spec: &crate::spec::Spec, opts: &BuildOptions, base: &BaseImage) {
    let Some(cache) = opts.cache else {
        return;
    };
    let roots = opts.store.root().join("bytecode");
    if spec.bytecode == crate::spec::BytecodeMode::Off || packed::has_root(base, &roots) {
        return;
    }
    let digest = &base.manifest_digest;
    for r in &cache.refs {
        let warn = |why: String| {
            (opts.on_event)(Event::Warning(format!(
                "cache {r}: compile root not used ({why}); unpacking it from the base"
            )))
        };
        let scratch = opts.store.root().join("tmp");
        match crate::output::base_facts::read_compile_root(&cache.client, r, digest, &scratch) {
            Ok(Some(root)) => match open_and_install(base, &roots, &root) {
                Ok(()) => {
                    (opts.on_event)(Event::Detail(format!(
                        "cache {r}: compile root of {} read ({} bytes)",
                        digest.short(),
                        root.size
                    )));
                    return;
                }
                Err(e) => warn(e.to_string()),
            },
            Ok(None) => {}
            Err(e) if is_dead(&e) => quiet(opts, &e),
            Err(e) => warn(crate::text::error_chain(&e)),
        }
    }
}

/// An image's manifest and config bytes.
type ImageDocs = (Vec<u8>, Vec<u8>);

/// The manifest (for `platform`, through an index) and the config of the
/// image `r` names, both read by digest; `None` when there is no such image.
fn read_image(
    client: &RegistryClient,
    r: &Reference,
    platform: &Platform,
    store: &crate::store::Store,
) -> Result<Option<ImageDocs>, RegistryError> {
    let absent = |e: &RegistryError| {
        matches!(
            e,
            RegistryError::ManifestUnknown { .. } | RegistryError::NameUnknown { .. }
        ) || matches!(e, RegistryError::Status { status: 404, .. })
    };
    let (bytes, media_type, _) = match client.get_manifest(r) {
        Ok(m) => m,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let manifest = if media_type.contains("index") || media_type.contains("manifest.list") {
        let Ok(index) = serde_json::from_slice::<Index>(&bytes) else {
            return Ok(None);
        };
        let Some(d) = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
        else {
            return Ok(None);
        };
        client.get_manifest(&r.with_digest(d.digest.clone()))?.0
    } else {
        bytes
    };
    let Ok(m) = serde_json::from_slice::<Manifest>(&manifest) else {
        return Ok(None);
    };
    // The config the last push from this cache pushed is in the store (checked as read).
    if let Ok(local) = store.open_blob(&m.config.digest) {
        if let Ok(config) =
            crate::http::read_capped(local, &crate::http::IMAGE_CONFIG, "the config")
        {
            return Ok(Some((manifest, config)));
        }
    }
    let what = format!("reading config {} of {r}", m.config.digest);
    let blob = client.get_blob(r, &m.config.digest, Some(m.config.size))?;
    let config =
        crate::http::read_capped(blob, &crate::http::IMAGE_CONFIG, "the config").map_err(|e| {
            RegistryError::Io {
                what,
                source: std::io::Error::other(e),
            }
        })?;
    Ok(Some((manifest, config)))
}

/// Keeps each pushed image's config in the store, where the next build's
/// registry cache read finds it instead of fetching it (issue 26). Only a
/// shortcut, so a failed write is a lost shortcut.
pub fn keep_configs(store: &crate::store::Store, result: &crate::output::BuildResult) {
    for img in &result.images {
        if !store.has_blob(&img.config_digest) {
            let _ = store.write_blob(|w| std::io::Write::write_all(w, &img.config));
        }
    }
}

/// The offered layer, if its blob is still in its repository and (when
/// pulling) its bytes match both its digest and the config's diff_id.
fn reuse(
    cache: &RemoteCache,
    offer: &Offered,
    key: &LayerKey,
    opts: &BuildOptions,
) -> Option<Reused> {
    let repo = &cache.refs[offer.source];
    let what = || format!("{} from {}", offer.layer.digest.short(), repo.name());
    // The layer is built from its wheel instead; the warning says why.
    let warn_rebuilt = |why: String| {
        (opts.on_event)(Event::Warning(format!(
            "cache: layer {} {why}; building it from its wheel",
            what()
        )))
    };
    match cache.client.blob_exists(repo, &offer.layer.digest) {
        Ok(true) => {}
        Ok(false) => {
            (opts.on_event)(Event::Detail(format!(
                "cache: layer {} is gone; building it from its wheel",
                what()
            )));
            return None;
        }
        Err(e) => {
            warn_rebuilt(format!("not checked ({})", crate::text::error_chain(&e)));
            return None;
        }
    }
    let origin = if cache.pull {
        match pull(cache, repo, &offer.layer, opts) {
            Ok(()) => {
                // Now in the local cache too, as if built here.
                opts.store
                    .put_meta_best_effort("layers", key.as_str(), &offer.layer);
                BlobOrigin::Store
            }
            Err(e) => {
                warn_rebuilt(format!("refused ({})", crate::text::error_chain(&e)));
                return None;
            }
        }
    } else {
        BlobOrigin::Registry {
            client: cache.client.clone(),
            repo: repo.clone(),
        }
    };
    Some(Reused {
        layer: offer.layer.clone(),
        origin,
        facts: offer.facts.clone(),
    })
}

/// Why a pulled layer is not used.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("its blob could not be read")]
    Registry(#[from] RegistryError),
    #[error("its blob could not be stored")]
    Store(#[from] crate::store::StoreError),
    #[error("its diff_id is {got}, but the image config says {expected}")]
    DiffId { expected: Digest, got: Digest },
}

/// Streams the blob into the store once: its digest is checked by the
/// registry client as it is read, and its diff_id over the tar it inflates to.
fn pull(
    cache: &RemoteCache,
    repo: &Reference,
    layer: &Layer,
    opts: &BuildOptions,
) -> Result<(), PullError> {
    let mut blob = cache
        .client
        .get_blob(repo, &layer.digest, Some(layer.size))?;
    let media_type = layer.media_type.clone();
    let (_, _, diff_id) = opts.store.write_blob(|w| {
        let mut tee = crate::tee::Tee::new(&mut blob, w);
        let tar = crate::layer::compress::decompressed(&media_type, &mut tee)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let (diff_id, _) = Digest::of_reader(tar)?;
        // What the decoder left unread (padding) still belongs to the blob.
        io::copy(&mut tee, &mut io::sink())?;
        Ok(diff_id)
    })?;
    if diff_id != layer.diff_id {
        return Err(PullError::DiffId {
            expected: layer.diff_id.clone(),
            got: diff_id,
        });
    }
    Ok(())
}
