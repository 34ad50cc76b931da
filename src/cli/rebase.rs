//! `imgbuild rebase REF [--base NEWREF] [--tag TAG]` (issue 25): the image's
//! own layers on a new base, with registry operations only (the new base's
//! layers mounted or found in place; uploaded: the config, the manifest, the
//! attestations, and a venv or stdlib pycs layer only when the new base's
//! Python changed them). Prints the pinned references, as `push` does.

use super::args::{CommonArgs, RegistryArgs};
use super::prepare::registry_client;
use super::release::AttachArgs;
use crate::base::remote::RegistryBases;
use crate::build::rebase::{self, RebaseOptions, Rebased, Swap};
use crate::inspect::{self, ImageRef};
use crate::reference::Reference;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RebaseArgs {
    /// The image to rebase: REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST (an index is rebased per platform).
    pub reference: String,
    /// The new base (REGISTRY/REPO:TAG[@DIGEST]); default: where the recorded base's tag points now.
    #[arg(long, value_name = "NEWREF")]
    pub base: Option<String>,
    /// Where to push the result (repeatable); default: REF's own tag.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Print a JSON summary (digests, bases, layers made again, bytes uploaded) on stdout before the references.
    #[arg(long)]
    pub json: bool,
    /// Extra CA certificates (PEM) to trust for registries (repeatable).
    #[arg(long = "ca-file")]
    pub ca_files: Vec<PathBuf>,
    /// The cache directory (default: the user's cache, as for `build`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub attach: AttachArgs,
}

pub fn cmd_rebase(args: RebaseArgs, verbose: bool) -> Result<()> {
    let ImageRef::Registry(image) = ImageRef::parse(&args.reference)? else {
        bail!(
            "rebase works on an image in a registry (REGISTRY/REPO:TAG): {} is not one; push it first",
            args.reference
        );
    };
    let tags = target_tags(&args, &image)?;
    let common =
        CommonArgs::registry_only(args.ca_files.clone(), args.cache_dir.clone(), args.json);
    let client = registry_client(&common, &args.registry, Some(&tags[0].registry))?;
    let store = Store::open(args.cache_dir.clone().unwrap_or_else(Store::default_root))?;
    let loaded = inspect::load(&ImageRef::Registry(image.clone()), &args.reference, &client)?;
    let printer = |e: crate::build::Event| match e {
        crate::build::Event::Warning(w) => eprintln!("warning: {w}"),
        crate::build::Event::Detail(d) if verbose => eprintln!("{d}"),
        _ => {}
    };
    let bases = RegistryBases {
        client: client.clone(),
        store: &store,
        offline: false,
        on_warning: &|w| eprintln!("warning: {w}"),
    };
    let http = crate::fetch::LazyHttp::new(args.ca_files.clone());
    let opts = RebaseOptions {
        store: &store,
        http: &http,
        remote: &bases,
        client: client.clone(),
        jobs: 4,
        on_event: &printer,
    };
    let rebased = rebase::rebase(&loaded, &image, args.base.as_deref(), &opts)?;
    let unchanged = rebased.result.digest() == loaded.digest;
    let report =
        crate::output::push::push(&client, &rebased.result, &tags, &store, &|_, _| {}, None)
            .context("pushing the rebased image")?;
    // The figures describe the image; the attestations attached next are reported apart (as by push).
    let stats = client.stats();
    if !unchanged {
        super::release::attach_rebase(&rebased, &loaded, &image, &tags, &client, &args.attach)?;
    }
    for s in &rebased.swaps {
        eprintln!("{}", describe(s, unchanged));
    }
    eprintln!(
        "uploaded {} in {} requests",
        super::progress::human(stats.blob_bytes_uploaded),
        stats.requests
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary(&rebased, &loaded, &stats))?
        );
    }
    for p in &report.pinned {
        println!("{p}");
    }
    Ok(())
}

/// `--tag`, else the image's own tag (a digest alone names nothing to move).
fn target_tags(args: &RebaseArgs, image: &Reference) -> Result<Vec<Reference>> {
    if !args.tags.is_empty() {
        return args
            .tags
            .iter()
            .map(|t| Reference::parse(t).with_context(|| format!("--tag {t}")))
            .collect();
    }
    match (&image.tag, &image.digest) {
        (Some(_), _) => Ok(vec![Reference {
            digest: None,
            ..image.clone()
        }]),
        (None, _) => bail!(
            "{} names no tag to move: add --tag REGISTRY/REPO:TAG for the rebased image",
            image
        ),
    }
}

fn describe(s: &Swap, unchanged: bool) -> String {
    if unchanged || s.old_digest == s.new_digest {
        return format!(
            "[{}] already on {} ({})",
            s.platform, s.new_base, s.new_digest
        );
    }
    let remade = match s.rebuilt.as_slice() {
        [] => String::new(),
        r => format!("; made again for its Python: {}", r.join(", ")),
    };
    format!(
        "[{}] rebased from {} ({}) onto {} ({}){remade}",
        s.platform, s.old_base, s.old_digest, s.new_base, s.new_digest
    )
}

fn summary(
    rebased: &Rebased,
    loaded: &inspect::Loaded,
    stats: &crate::registry::TransferStats,
) -> serde_json::Value {
    serde_json::json!({
        "image": loaded.name,
        "from": loaded.digest.to_string(),
        "digest": rebased.result.digest().to_string(),
        "platforms": rebased.swaps.iter().map(|s| serde_json::json!({
            "platform": s.platform,
            "old_base": s.old_base,
            "old_base_digest": s.old_digest.to_string(),
            "base": s.new_base,
            "base_digest": s.new_digest.to_string(),
            "rebuilt": s.rebuilt,
        })).collect::<Vec<_>>(),
        "bytes_uploaded": stats.blob_bytes_uploaded,
        "requests": stats.requests,
    })
}

/// How a rebased image was made, from its provenance.
pub(super) struct MadeByRebase {
    /// The image it was rebased from (`REF`), and the base it was put on.
    pub from: String,
    pub base: String,
}

impl MadeByRebase {
    pub fn describe(&self, reference: &str) -> String {
        format!(
            "{reference} was made by `imgbuild rebase` from {} onto {} (its provenance says so): comparing with this checkout built on that base",
            self.from, self.base
        )
    }
}

/// Whether `image`'s provenance (attached in `repo`) records a rebase.
pub(super) fn made_by_rebase(
    client: &crate::registry::RegistryClient,
    repo: &Reference,
    image: &inspect::Loaded,
) -> Result<Option<MadeByRebase>> {
    let Some(first) = image.images.first() else {
        return Ok(None);
    };
    let subject = crate::output::referrers::Subject::manifest(&first.manifest_digest, 0);
    let Some(doc) = crate::output::referrers::find_document(
        client,
        repo,
        &subject,
        crate::attest::MEDIA_TYPE_IN_TOTO,
    )?
    else {
        return Ok(None);
    };
    let statement: serde_json::Value = serde_json::from_slice(&doc).unwrap_or_default();
    let build = &statement["predicate"]["buildDefinition"];
    if build["buildType"] != crate::attest::REBASE_BUILD_TYPE {
        return Ok(None);
    }
    let deps = build["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let uri = |name: &str| {
        deps.iter().find(|d| d["name"] == name).map(|d| {
            let digest = d["digest"]["sha256"].as_str().unwrap_or_default();
            (
                d["uri"].as_str().unwrap_or_default().to_owned(),
                digest.to_owned(),
            )
        })
    };
    let (Some((from, from_digest)), Some((base, _))) = (uri("rebased image"), uri("base")) else {
        return Ok(None);
    };
    Ok(Some(MadeByRebase {
        from: format!("{from}@sha256:{from_digest}"),
        base,
    }))
}
