//! `imgbuild build`: the image into an OCI layout, an OCI archive or a
//! docker-archive.

use super::args::{BuildArgs, Destination, RegistryArgs};
use super::output::finish;
use super::prepare::{prepare, registry_client, run_build};
use super::progress::event_printer;
use crate::output::{archive, layout};
use anyhow::Result;
use std::path::Path;

pub(super) fn cmd_build(args: BuildArgs, verbose: bool) -> Result<()> {
    let dest = Destination::parse(&args.output)?;
    let ctx = prepare(&args.common, verbose)?;
    let printer = event_printer(verbose);
    let client = registry_client(&args.common, &RegistryArgs::default(), None)?;
    let output_path = match &dest {
        Destination::Layout { dir, .. } => dir,
        Destination::OciArchive { file, .. } | Destination::DockerArchive { file, .. } => file,
    };
    let mut writes = vec![output_path.as_path()];
    writes.extend(args.sbom.as_deref());
    writes.extend(args.provenance.as_deref());
    let result = run_build(&ctx, &args.common, client, &printer, &writes)?;
    if (args.sbom.is_some() || args.provenance.is_some()) && result.images.len() != 1 {
        return Err(crate::attest::AttestError::SeveralPlatforms {
            count: result.images.len(),
        }
        .into());
    }
    match &dest {
        Destination::Layout { dir, tag } => {
            layout::write_oci_layout(&result, dir, tag, &ctx.store)?
        }
        Destination::OciArchive { file, tag } => {
            layout::write_oci_archive(&result, file, tag, &ctx.store, ctx.epoch)?
        }
        Destination::DockerArchive { file, reference } => {
            let r = reference
                .clone()
                .unwrap_or_else(|| default_repo_tag(&ctx.spec.source));
            archive::write_docker_archive(&result, file, &r, &ctx.store, ctx.epoch)?
        }
    }
    if let Some(file) = &args.sbom {
        super::release::write_sbom(&ctx, &result, file, args.sbom_format)?;
    }
    if let Some(file) = &args.provenance {
        super::release::write_provenance(&ctx, &result, file)?;
    }
    finish(&args.common, &result, &[])
}

/// The docker-archive reference when none is given: `localhost/<source dir>:latest`.
fn default_repo_tag(source: &Path) -> String {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.to_ascii_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "app".into());
    format!("localhost/{name}:latest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_docker_archive_name_comes_from_the_source_directory() {
        assert_eq!(
            default_repo_tag(Path::new("/src/My API!")),
            "localhost/my-api-:latest"
        );
        assert_eq!(default_repo_tag(Path::new("/")), "localhost/app:latest");
    }
}
