//! Commands for release pipelines: `sbom`, `diff`, `verify`, and the SBOM and
//! provenance that `build --sbom` writes and `push` attaches.

use super::args::{CommonArgs, RegistryArgs};
use super::output::write_atomic;
use super::prepare::{prepare, registry_client, run_build, Prepared};
use super::progress::event_printer;
use crate::attest::{self, AttestInput, SbomFormat};
use crate::image::ANNOTATION_CREATED;
use crate::inspect::{self, ImageRef, Loaded};
use crate::output::referrers::{self, Artifact, Attached, Subject};
use crate::output::BuildResult;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct SbomArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Where to write the SBOM.
    #[arg(short, long)]
    pub output: PathBuf,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, value_enum, default_value_t = SbomFormat::Spdx)]
    pub sbom_format: SbomFormat,
}

/// The attestation input for each platform image of a build.
pub(super) fn attest_inputs(
    ctx: &Prepared,
    result: &BuildResult,
    image_name: &str,
) -> Result<Vec<AttestInput>> {
    result
        .images
        .iter()
        .map(|img| {
            Ok(attest::collect::collect(
                &ctx.spec,
                img,
                &ctx.platforms,
                &ctx.store,
                ctx.epoch,
                image_name,
            )?)
        })
        .collect()
}

/// The attestation input of a one-platform build.
fn single_input(ctx: &Prepared, result: &BuildResult) -> Result<AttestInput> {
    if result.images.len() != 1 {
        return Err(attest::AttestError::SeveralPlatforms {
            count: result.images.len(),
        }
        .into());
    }
    let (name, _) = attest::collect::app_identity(&ctx.spec.source);
    let input = attest_inputs(ctx, result, &name)?.remove(0);
    Ok(input)
}

/// The SBOM of a one-platform build, written to `file`.
pub(super) fn write_sbom(
    ctx: &Prepared,
    result: &BuildResult,
    file: &std::path::Path,
    format: SbomFormat,
) -> Result<()> {
    let input = single_input(ctx, result)?;
    write_atomic(file, &attest::sbom::generate(&input, format))
}

/// The provenance statement of a one-platform build, written to `file`.
pub(super) fn write_provenance(
    ctx: &Prepared,
    result: &BuildResult,
    file: &std::path::Path,
) -> Result<()> {
    let input = single_input(ctx, result)?;
    write_atomic(file, &attest::provenance::generate(&input))
}

pub fn cmd_sbom(args: SbomArgs, verbose: bool) -> Result<()> {
    let ctx = prepare(&args.common, verbose)?;
    let printer = event_printer(verbose);
    let client = registry_client(&args.common, &RegistryArgs::default(), None)?;
    let result = run_build(&ctx, &args.common, client, &printer, &[&args.output])?;
    write_sbom(&ctx, &result, &args.output, args.sbom_format)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// What `push` attaches, from its flags.
#[derive(Args, Debug, Clone)]
pub struct AttachArgs {
    /// Attach the SBOM to each pushed platform image (--sbom=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sbom: bool,
    /// Attach SLSA provenance to each pushed platform image (--provenance=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub provenance: bool,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, value_enum, default_value_t = SbomFormat::Spdx)]
    pub sbom_format: SbomFormat,
}

/// The SBOM and provenance artifacts for one platform image.
pub(super) fn artifacts(input: &AttestInput, args: &AttachArgs) -> Vec<Artifact> {
    let mut out = Vec::new();
    if args.sbom {
        out.push(Artifact {
            artifact_type: args.sbom_format.media_type().to_string(),
            bytes: attest::sbom::generate(input, args.sbom_format),
            annotations: [(ANNOTATION_CREATED.to_string(), input.created.clone())].into(),
        });
    }
    if args.provenance {
        out.push(Artifact {
            artifact_type: attest::MEDIA_TYPE_IN_TOTO.to_string(),
            bytes: attest::provenance::generate(input),
            annotations: [
                (ANNOTATION_CREATED.to_string(), input.created.clone()),
                (
                    attest::ANNOTATION_PREDICATE_TYPE.to_string(),
                    attest::PREDICATE_TYPE_SLSA1.to_string(),
                ),
            ]
            .into(),
        });
    }
    out
}

/// After a push: the SBOM and provenance of each platform image, attached
/// as referrers in each pushed repository. Says where on stderr.
/// Returns what it says of each attachment, for the caller to print once the
/// push's own progress is done: this runs beside the push (`push.pushed`
/// waits for it; see [`referrers::attach`]).
pub(super) fn attach_on_push(
    ctx: &Prepared,
    result: &BuildResult,
    tags: &[Reference],
    client: &RegistryClient,
    args: &AttachArgs,
    push: &referrers::SubjectPush,
) -> Result<Vec<String>> {
    let mut said = Vec::new();
    if !args.sbom && !args.provenance {
        return Ok(said);
    }
    for repo in distinct_repositories(tags) {
        let name = repo.name();
        for (img, input) in result.images.iter().zip(attest_inputs(ctx, result, &name)?) {
            let subject = Subject::manifest(&img.manifest_digest, img.manifest.len() as u64);
            let artifacts = artifacts(&input, args);
            let how = referrers::attach(client, repo, &subject, &artifacts, push)?;
            let what = match (args.sbom, args.provenance) {
                (true, true) => "SBOM and provenance",
                (true, false) => "SBOM",
                _ => "provenance",
            };
            said.push(match how {
                Attached::Api => format!(
                    "[{}] attached {what} to {name}@{} (referrers API)",
                    img.platform, img.manifest_digest
                ),
                Attached::Tag { tag, changed } => format!(
                    "[{}] attached {what} to {name}@{} (referrers tag {tag}{})",
                    img.platform,
                    img.manifest_digest,
                    if changed { "" } else { ", unchanged" }
                ),
            });
        }
    }
    Ok(said)
}

/// After a rebase: each new platform image's SBOM (the old image's packages,
/// read back from its SBOM, on the new base) and a provenance statement
/// that records the rebase, attached in each pushed repository.
pub(super) fn attach_rebase(
    rebased: &crate::build::rebase::Rebased,
    old: &inspect::Loaded,
    old_repo: &Reference,
    tags: &[Reference],
    client: &RegistryClient,
    args: &AttachArgs,
) -> Result<()> {
    if !args.sbom && !args.provenance {
        return Ok(());
    }
    let images = rebased
        .result
        .images
        .iter()
        .zip(&rebased.swaps)
        .zip(&old.images);
    let mut inputs = Vec::new();
    for ((img, swap), before) in images {
        let subject = Subject::manifest(&before.manifest_digest, 0);
        let listed = referrers::find_document(client, old_repo, &subject, attest::MEDIA_TYPE_SPDX)?
            .map(|b| attest::readback::from_spdx(&b))
            .unwrap_or_default();
        inputs.push((img, rebase_input(img, swap, before, old, listed)));
    }
    for repo in distinct_repositories(tags) {
        for (img, input) in &inputs {
            let input = AttestInput {
                image_name: repo.name(),
                ..input.clone()
            };
            let subject = Subject::manifest(&img.manifest_digest, img.manifest.len() as u64);
            let pushed = referrers::SubjectPush::PUSHED;
            referrers::attach(client, repo, &subject, &artifacts(&input, args), &pushed)?;
            eprintln!(
                "[{}] attached the SBOM and provenance of the rebase to {}@{}",
                img.platform,
                repo.name(),
                img.manifest_digest
            );
        }
    }
    Ok(())
}

/// What the documents of a rebased image say.
fn rebase_input(
    img: &crate::output::BuiltImage,
    swap: &crate::build::rebase::Swap,
    before: &inspect::LoadedImage,
    old: &inspect::Loaded,
    listed: attest::readback::Listed,
) -> AttestInput {
    let annotation = |k: &str| {
        before
            .manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    let created = before.config["created"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    AttestInput {
        image_name: String::new(),
        digest: img.manifest_digest.clone(),
        platform: img.platform.clone(),
        epoch: swap.epoch,
        created,
        base_name: swap.new_base.clone(),
        base_digest: swap.new_digest.clone(),
        app_name: listed.app_name.unwrap_or_else(|| old.name.clone()),
        app_version: listed.app_version,
        packages: listed.packages,
        parameters: serde_json::json!({
            "rebase": {"image": old.name, "base": swap.new_base},
        }),
        lockfile: None,
        source_tree: listed.source_tree,
        source_url: annotation(crate::image::ANNOTATION_SOURCE),
        revision: annotation(crate::image::ANNOTATION_REVISION),
        rebased: Some(attest::RebaseOrigin {
            image: old.name.clone(),
            digest: before.manifest_digest.clone(),
            old_base: swap.old_base.clone(),
            old_base_digest: swap.old_digest.clone(),
        }),
    }
}

/// Each repository among `tags` once (tags in one repository share referrers).
fn distinct_repositories(tags: &[Reference]) -> Vec<&Reference> {
    let mut repos: Vec<&Reference> = Vec::new();
    for t in tags {
        if !repos
            .iter()
            .any(|r| r.registry == t.registry && r.repository == t.repository)
        {
            repos.push(t);
        }
    }
    repos
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// An image: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG], FILE.tar, or `.` (what this checkout builds).
    pub a: String,
    /// The image to compare it with (same forms).
    pub b: String,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The image to verify: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or FILE.tar.
    pub reference: String,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn registry_of(r: &ImageRef) -> Option<&str> {
    match r {
        ImageRef::Registry(reference) => Some(&reference.registry),
        _ => None,
    }
}

/// Builds this checkout for `platforms` (unless --platform says otherwise)
/// and reads the result back.
/// This checkout built (on `base` instead of the spec's, when given).
fn build_checkout(
    common: &CommonArgs,
    client: Arc<RegistryClient>,
    platforms: Vec<crate::platform::Platform>,
    base: Option<String>,
    verbose: bool,
) -> Result<Loaded> {
    let mut ctx = prepare(common, verbose)?;
    if let Some(b) = base {
        ctx.spec.base = b;
    }
    if ctx.platforms.is_empty() {
        ctx.platforms = platforms;
    }
    let printer = event_printer(verbose);
    let result = run_build(&ctx, common, client, &printer, &[])?;
    Ok(inspect::from_build(&result, &ctx.store)?)
}

fn print_report(report: &inspect::diff::Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", inspect::diff::render(report));
    }
    Ok(())
}

pub fn cmd_diff(args: DiffArgs, verbose: bool) -> Result<()> {
    let refs = [ImageRef::parse(&args.a)?, ImageRef::parse(&args.b)?];
    let target = refs.iter().find_map(registry_of);
    let client = registry_client(&args.common, &args.registry, target)?;
    let names = [&args.a, &args.b];
    let mut loaded: [Option<Loaded>; 2] = [None, None];
    for (k, r) in refs.iter().enumerate() {
        if *r != ImageRef::Checkout {
            loaded[k] = Some(inspect::load(r, names[k], &client)?);
        }
    }
    for k in 0..2 {
        if loaded[k].is_none() {
            let platforms = loaded[1 - k]
                .as_ref()
                .map(|l| l.platforms())
                .unwrap_or_default();
            loaded[k] = Some(build_checkout(
                &args.common,
                client.clone(),
                platforms,
                None,
                verbose,
            )?);
        }
    }
    let [Some(a), Some(b)] = loaded else {
        unreachable!("both sides are loaded above")
    };
    print_report(&inspect::compare(&a, &b), args.common.json)
}

pub fn cmd_verify(args: VerifyArgs, verbose: bool) -> Result<()> {
    let r = ImageRef::parse(&args.reference)?;
    if r == ImageRef::Checkout {
        anyhow::bail!("verify compares a built image with this checkout: name the image (a registry reference, oci:DIR[:TAG] or an archive), not `.`");
    }
    let client = registry_client(&args.common, &args.registry, registry_of(&r))?;
    let pinned = inspect::load(&r, &args.reference, &client)?;
    let mut rebuilt = build_checkout(
        &args.common,
        client.clone(),
        pinned.platforms(),
        None,
        verbose,
    )?;
    let mut differing = differing(&pinned, &rebuilt);
    // A rebased image is what this checkout builds on the base it was rebased onto.
    let rebase = match (&r, differing.is_empty()) {
        (ImageRef::Registry(repo), false) => super::rebase::made_by_rebase(&client, repo, &pinned)?,
        _ => None,
    };
    if let Some(how) = &rebase {
        eprintln!("{}", how.describe(&args.reference));
        rebuilt = build_checkout(
            &args.common,
            client,
            pinned.platforms(),
            Some(how.base.clone()),
            verbose,
        )?;
        differing = self::differing(&pinned, &rebuilt);
    }
    if differing.is_empty() {
        let on = match &rebase {
            Some(how) => format!(" (this checkout on {})", how.base),
            None => String::new(),
        };
        for i in &pinned.images {
            eprintln!("[{}] verified {}{on}", i.platform, i.manifest_digest);
        }
        if args.common.json {
            print_report(&inspect::compare(&pinned, &rebuilt), true)?;
        }
        println!("{}", pinned.digest);
        return Ok(());
    }
    print_report(&inspect::compare(&pinned, &rebuilt), args.common.json)?;
    Err(VerifyFailed {
        reference: args.reference.clone(),
        platforms: differing,
    }
    .into())
}

/// The platforms of `pinned` that `rebuilt` does not reproduce.
fn differing(pinned: &Loaded, rebuilt: &Loaded) -> Vec<String> {
    pinned
        .images
        .iter()
        .filter(|i| {
            rebuilt
                .find(&i.platform)
                .is_none_or(|b| b.manifest_digest != i.manifest_digest)
        })
        .map(|i| i.platform.to_string())
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("{reference} is not what this checkout builds: {} differ{} (explained above)", .platforms.join(", "), if .platforms.len() == 1 { "s" } else { "" })]
pub struct VerifyFailed {
    pub reference: String,
    pub platforms: Vec<String>,
}
