//! Commands for release pipelines: `sbom`, `diff`, `verify`, and the SBOM and
//! provenance that `build --sbom` writes and `push` attaches.

use super::{prepare, run_build, write_atomic, CommonArgs, Prepared};
use crate::attest::{self, AttestInput, SbomFormat};
use crate::output::BuildResult;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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

/// The SBOM of a one-platform build, written to `file`.
pub(super) fn write_sbom(
    ctx: &Prepared,
    result: &BuildResult,
    file: &std::path::Path,
    format: SbomFormat,
) -> Result<()> {
    if result.images.len() != 1 {
        return Err(attest::AttestError::SeveralPlatforms {
            count: result.images.len(),
        }
        .into());
    }
    let (name, _) = attest::collect::app_identity(&ctx.spec.source);
    let input = attest_inputs(ctx, result, &name)?.remove(0);
    write_atomic(file, &attest::sbom::generate(&input, format))
}

pub fn cmd_sbom(args: SbomArgs, verbose: bool) -> Result<()> {
    let ctx = prepare(&args.common)?;
    let printer = super::event_printer(verbose);
    let client = super::registry_client(&args.common, &super::RegistryArgs::default(), None)?;
    let result = run_build(&ctx, &args.common, client, &printer, &[&args.output])?;
    write_sbom(&ctx, &result, &args.output, args.sbom_format)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
