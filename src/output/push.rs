//! Pushing a build to a registry: every blob confirmed present first (HEAD,
//! mount from the base's repository, or upload), then the manifests, then the
//! index, then the tags. A manifest is never pushed before its blobs.

use super::{open_layer, BlobOrigin, BuildResult, BuiltImage, ImageLayer};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{BlobUpload, PushOutcome, RegistryClient, RegistryError};
use crate::store::Store;
use std::collections::HashSet;
use std::io::{self, Read};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A layer reused from a registry cache whose blob was deleted after the
    /// build checked it (registry GC, a deleted repository). Its wheel builds
    /// the same bytes, so the caller can build again without the cache.
    #[error("layer {digest} ({label}) reused from {cache} is no longer there")]
    CachedLayerGone {
        label: String,
        digest: Digest,
        /// Boxed, as is the source: the error stays small.
        cache: Box<Reference>,
        #[source]
        source: Box<RegistryError>,
    },
}

/// The push of layer `l` failed with `error`: when `l` was reused from a
/// registry cache and its blob is not there any more (HEAD 404), that is
/// what the caller hears, not the upload's own failure.
fn failure(l: Option<&ImageLayer>, error: RegistryError) -> PushError {
    if let Some(l) = l {
        if let BlobOrigin::Registry { client, repo } = &l.origin {
            if let Ok(false) = client.blob_exists(repo, &l.layer.digest) {
                return PushError::CachedLayerGone {
                    label: l.label.clone(),
                    digest: l.layer.digest.clone(),
                    cache: Box::new(repo.clone()),
                    source: Box::new(error),
                };
            }
        }
    }
    error.into()
}

/// What happened to each layer of each image, in build order.
#[derive(Clone, Debug, Default)]
pub struct PushReport {
    pub layers: Vec<Vec<PushOutcome>>,
    /// Tags as pushed, each with the digest: `REF@sha256:…`.
    pub pinned: Vec<String>,
}

fn outcome_name(o: &PushOutcome) -> &'static str {
    match o {
        PushOutcome::Existed => "existed",
        PushOutcome::Mounted => "mounted",
        PushOutcome::Uploaded { .. } => "uploaded",
    }
}

impl PushReport {
    pub fn outcome(&self, image: usize, layer: usize) -> &'static str {
        self.layers
            .get(image)
            .and_then(|l| l.get(layer))
            .map(outcome_name)
            .unwrap_or("existed")
    }
}

/// What a push learnt of its first tag's repository while the image was
/// still building ([`look_ahead`]).
pub struct Ahead {
    repo: Reference,
    /// The manifest the tag named; None when it named nothing.
    tag_named: Option<Digest>,
}

impl Ahead {
    /// The manifest the tag named while the image built, if any.
    pub fn tag_named(&self) -> Option<&Digest> {
        self.tag_named.as_ref()
    }
}

/// Opens `uploads` upload sessions for the new blobs to come (issue 26: the
/// caller asks for them in the inner loop, a push after a change), and reads
/// what `tag` names now by a HEAD first, unless `build_reads_tag` (the build
/// reads the tag as its registry cache: [`Unsettled::settle`] then takes
/// what that read found). Meant to run while the image builds, so that
/// after it the push starts with the blobs' PUTs. A session no blob takes is
/// cancelled by the caller. The manifest's blobs are listed after the
/// build, from the manifest its registry cache read fetched.
pub fn look_ahead(
    client: &RegistryClient,
    tag: &Reference,
    uploads: usize,
    build_reads_tag: bool,
) -> Unsettled {
    let tag_named = (!build_reads_tag).then(|| head_tag(client, tag));
    if uploads > 0 {
        client.open_uploads(tag, uploads);
    }
    Unsettled {
        repo: tag.clone(),
        tag_named,
    }
}

/// What [`look_ahead`] read: what the tag names, unless it left that to
/// the build's read of the tag (`None`).
pub struct Unsettled {
    repo: Reference,
    tag_named: Option<Option<Digest>>,
}

impl Unsettled {
    /// Once the image is built: what the tag named when the build read it,
    /// else a HEAD now.
    pub fn settle(self, client: &RegistryClient) -> Ahead {
        let tag_named = self.tag_named.unwrap_or_else(|| {
            client
                .tag_as_read(&self.repo)
                .or_else(|| head_tag(client, &self.repo))
        });
        Ahead {
            repo: self.repo,
            tag_named,
        }
    }
}

fn head_tag(client: &RegistryClient, tag: &Reference) -> Option<Digest> {
    client.head_manifest(tag).ok().flatten().map(|(d, _)| d)
}

/// Pushes `result` under each of `tags`. Tags in one repository share the
/// blob and manifest uploads.
/// `on_blob` hears of each blob checked, mounted or uploaded, as it happens
/// (for progress bars; the report gives the outcomes in order). `ahead`
/// is what [`look_ahead`] read while the image built, if it ran.
pub fn push(
    client: &RegistryClient,
    result: &BuildResult,
    tags: &[Reference],
    store: &Store,
    on_blob: &(dyn Fn(&Digest, &PushOutcome) + Sync),
    ahead: Option<Ahead>,
) -> Result<PushReport, PushError> {
    let mut report = PushReport::default();
    let top_digest = result.digest();
    let mut done_repos: Vec<(String, String)> = Vec::new();
    for tag in tags {
        let repo_key = (tag.registry.clone(), tag.repository.clone());
        // What the tag named when its blobs were listed, a moment ago.
        let mut seen = None;
        if !done_repos.contains(&repo_key) {
            let read_ahead = ahead.as_ref().filter(|a| a.repo == *tag);
            let (layers, tag_named) =
                push_content(client, result, tag, store, on_blob, read_ahead)?;
            seen = tag_named;
            if report.layers.is_empty() {
                report.layers = layers;
            }
            done_repos.push(repo_key);
        }
        let reference = tag.tag.clone().unwrap_or_else(|| top_digest.to_string());
        // A tag that already names this digest is left alone (a HEAD is far
        // cheaper than a manifest PUT, and does not count as a Hub pull).
        let current = match seen {
            Some(d) => Some(d),
            None => client.head_manifest(tag).ok().flatten().map(|(d, _)| d),
        };
        if current.as_ref() != Some(&top_digest) {
            client.put_manifest(tag, &reference, result.top_bytes(), result.media_type())?;
        }
        report
            .pinned
            .push(format!("{}@{top_digest}", tag_name(tag)));
    }
    Ok(report)
}

/// `registry/repo:tag` as the user would write it back (without the digest).
fn tag_name(r: &Reference) -> String {
    match &r.tag {
        Some(t) => format!("{}:{t}", r.name()),
        None => r.name(),
    }
}

/// Which repository of a registry we last pushed a blob to, so pushing the
/// same layers to another repository mounts them instead of uploading.
fn last_pushed_to(store: &Store, repo: &Reference, digest: &Digest) -> Option<String> {
    let from: String = store.get_meta("pushed", &format!("{}/{digest}", repo.registry))?;
    (from != repo.repository).then_some(from)
}

fn remember_pushed(store: &Store, repo: &Reference, digest: &Digest) {
    // Only a hint for later mounts: a failed write costs an upload, nothing more.
    store.put_meta_best_effort(
        "pushed",
        &format!("{}/{digest}", repo.registry),
        &repo.repository,
    );
}

/// The repository a layer reused from a registry cache can be mounted from:
/// one on the registry we push to, other than the target.
fn cached_in(origin: &BlobOrigin, target: &Reference) -> Option<String> {
    match origin {
        BlobOrigin::Registry { repo, .. }
            if repo.registry == target.registry && repo.repository != target.repository =>
        {
            Some(repo.repository.clone())
        }
        _ => None,
    }
}

/// The largest new blob (the app layer, the config, an attestation document)
/// uploaded without asking first whether the registry has it: sending it
/// again costs less than the round trip.
pub(super) const FRESH_BLOB_MAX: u64 = 1 << 20;

type Opener<'a> = Box<dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync + 'a>;

/// The blobs named by what `tag` points to now (a manifest, or an index and
/// its manifests), and that digest. The registry holds a manifest only with
/// all its blobs, so these need no HEAD: after a one-line change, only new
/// blobs are checked.
fn blobs_under_tag(client: &RegistryClient, tag: &Reference) -> (HashSet<Digest>, Option<Digest>) {
    match client.head_manifest(tag).ok().flatten() {
        Some((digest, _)) => (blobs_under(client, tag, &digest), Some(digest)),
        None => (HashSet::new(), None),
    }
}

/// The blobs named by manifest `digest` in `tag`'s repository (an index's
/// manifests followed), read by digest: the build's registry cache read has
/// usually fetched it already in this run.
fn blobs_under(client: &RegistryClient, tag: &Reference, digest: &Digest) -> HashSet<Digest> {
    let mut known = HashSet::new();
    let mut pending = vec![digest.clone()];
    // An index of a few platforms; never wander through an unbounded graph.
    let mut budget = 16;
    while let Some(d) = pending.pop() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        let Ok((bytes, _, _)) = client.get_manifest(&tag.with_digest(d)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let digests = |key: &str| -> Vec<Digest> {
            v.get(key)
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.get("digest")?.as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        pending.extend(digests("manifests"));
        known.extend(digests("layers"));
        if let Some(c) = v
            .pointer("/config/digest")
            .and_then(|c| c.as_str())
            .and_then(|c| c.parse().ok())
        {
            known.insert(c);
        }
    }
    known
}

/// Blobs, then per-image manifests, then the index; returns per-layer outcomes.
fn push_content<'a>(
    client: &RegistryClient,
    result: &'a BuildResult,
    repo: &Reference,
    store: &'a Store,
    on_blob: &(dyn Fn(&Digest, &PushOutcome) + Sync),
    ahead: Option<&Ahead>,
) -> Result<(Vec<Vec<PushOutcome>>, Option<Digest>), PushError> {
    // The registry keeps a manifest only when it has all its blobs, so when
    // the top manifest is already there, everything it names is too. Asked
    // beside the tag's own blobs, which the push needs otherwise; not asked
    // when the tag was read ahead and named another image (the inner loop),
    // where at worst a small new blob goes up again.
    let (top, (known, tag_named)) = match ahead {
        Some(Ahead {
            tag_named: Some(named),
            ..
        }) => {
            let known = match *named == result.digest() {
                true => HashSet::new(),
                false => blobs_under(client, repo, named),
            };
            (Ok(Some(named.clone())), (known, Some(named.clone())))
        }
        _ => std::thread::scope(|s| {
            let top = s.spawn(|| {
                let head = client.head_manifest(&repo.with_digest(result.digest()));
                head.map(|found| found.map(|(d, _)| d))
            });
            let under = blobs_under_tag(client, repo);
            (top.join().expect("the HEAD's thread ended"), under)
        }),
    };
    if let Ok(Some(d)) = top {
        if d == result.digest() {
            let existed = result
                .images
                .iter()
                .map(|i| vec![PushOutcome::Existed; i.layers.len()])
                .collect();
            return Ok((existed, None));
        }
    }
    let mut outcomes = Vec::new();
    for image in &result.images {
        outcomes.push(push_blobs(client, image, repo, store, &known, on_blob)?);
        // The top document is pushed under each tag by the caller; only the
        // per-platform manifests an index names go up by digest here.
        if result.index.is_some() {
            client.put_manifest(
                repo,
                &image.manifest_digest.to_string(),
                &image.manifest,
                crate::image::MEDIA_TYPE_OCI_MANIFEST,
            )?;
        }
    }
    Ok((outcomes, tag_named))
}

/// `image`'s layers and config that `known` (the blobs the tag's current
/// manifest names) lacks, each checked, mounted or uploaded; the outcome of
/// each layer, in order.
fn push_blobs<'a>(
    client: &RegistryClient,
    image: &'a BuiltImage,
    repo: &Reference,
    store: &'a Store,
    known: &HashSet<Digest>,
    on_blob: &(dyn Fn(&Digest, &PushOutcome) + Sync),
) -> Result<Vec<PushOutcome>, PushError> {
    // After a one-line change (the tag holds the image before it), the app
    // layer and config are new and small: uploaded without asking first.
    let fresh = |label: Option<&str>, size: u64| {
        !known.is_empty() && size <= FRESH_BLOB_MAX && label.is_none_or(|l| l == "app")
    };
    let mount_from = image.base_repository.as_deref().and_then(|base| {
        let (registry, repository) = base.split_once('/')?;
        (registry == repo.registry && repository != repo.repository).then(|| repository.to_string())
    });
    let openers: Vec<Opener<'a>> = image
        .layers
        .iter()
        .map(|l| Box::new(move || open_layer(store, l)) as Opener<'a>)
        .collect();
    let config = image.config.clone();
    let open_config: Opener<'_> =
        Box::new(move || Ok(Box::new(io::Cursor::new(config.clone())) as Box<dyn Read + Send>));
    // Blobs the tag's current manifest already names are known present: no HEAD needed.
    let mut wanted = Vec::new();
    let mut uploads: Vec<(BlobUpload<'_>, bool)> = Vec::new();
    for (k, (l, open)) in image.layers.iter().zip(&openers).enumerate() {
        if !known.contains(&l.layer.digest) {
            wanted.push(k);
            let new = fresh(Some(&l.label), l.layer.size);
            uploads.push((
                BlobUpload {
                    digest: l.layer.digest.clone(),
                    size: l.layer.size,
                    open: open.as_ref(),
                    mount_from: (l.label == "base")
                        .then(|| mount_from.clone())
                        .flatten()
                        .or_else(|| cached_in(&l.origin, repo))
                        .or_else(|| last_pushed_to(store, repo, &l.layer.digest)),
                },
                new,
            ));
        }
    }
    if !known.contains(&image.config_digest) {
        let size = image.config.len() as u64;
        uploads.push((
            BlobUpload {
                digest: image.config_digest.clone(),
                size,
                open: open_config.as_ref(),
                mount_from: None,
            },
            fresh(None, size),
        ));
    }
    let mut layer_outcomes = vec![PushOutcome::Existed; image.layers.len()];
    let pushed = crate::parallel::map_ordered(&uploads, client.options().jobs, |(b, new)| {
        let r = match (new, &b.mount_from) {
            (true, None) => client.push_new_blob(repo, &b.digest, b.size, b.open),
            _ => client.push_blob(repo, &b.digest, b.size, b.open, b.mount_from.as_deref()),
        };
        if let Ok(outcome) = &r {
            on_blob(&b.digest, outcome);
        }
        r
    });
    for (n, r) in pushed.into_iter().enumerate() {
        let layer = wanted.get(n).map(|&k| &image.layers[k]);
        let outcome = r.map_err(|e| failure(layer, e))?;
        if let Some(&k) = wanted.get(n) {
            layer_outcomes[k] = outcome;
            remember_pushed(store, repo, &image.layers[k].layer.digest);
        }
    }
    Ok(layer_outcomes)
}
