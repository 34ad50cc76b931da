//! `imgbuild outdated REF...` (issue 25): for each image, whether the tag its
//! base was built from now points elsewhere. Exit status 0 when every base is
//! current, 1 when one moved (or the check failed); `--json` for CI.

use super::args::RegistryArgs;
use super::prepare::registry_client;
use super::CommonArgs;
use crate::inspect::outdated::{check_base, BaseCheck, BaseStatus};
use crate::inspect::{self, ImageRef};
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct OutdatedArgs {
    /// Images to check: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG] or FILE.tar.
    #[arg(required = true, value_name = "REF")]
    pub references: Vec<String>,
    /// Print one JSON object per image (its platforms, bases and statuses) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Extra CA certificates (PEM) to trust for registries (repeatable).
    #[arg(long = "ca-file")]
    pub ca_files: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(serde::Serialize)]
struct ImageReport<'a> {
    image: &'a str,
    digest: String,
    platforms: Vec<BaseCheck>,
}

#[derive(Debug, thiserror::Error)]
#[error("the base of {} moved; rebuild with `imgbuild push` (or rebase) to pick it up", .images.join(", "))]
pub struct BasesMoved {
    pub images: Vec<String>,
}

pub fn cmd_outdated(args: OutdatedArgs) -> Result<()> {
    let common = CommonArgs::registry_only(args.ca_files.clone(), None, args.json);
    let mut moved = Vec::new();
    for reference in &args.references {
        let r = ImageRef::parse(reference)?;
        if r == ImageRef::Checkout {
            bail!("outdated reads built images: name one (a registry reference, oci:DIR[:TAG] or an archive), not `.`");
        }
        let target = match &r {
            ImageRef::Registry(re) => Some(re.registry.clone()),
            _ => None,
        };
        let client = registry_client(&common, &args.registry, target.as_deref())?;
        let loaded = inspect::load(&r, reference, &client)?;
        let mut checks = Vec::new();
        for image in &loaded.images {
            checks.push(check_base(image, &client)?);
        }
        if checks
            .iter()
            .any(|c| matches!(c.status, BaseStatus::Moved { .. }))
        {
            moved.push(reference.clone());
        }
        if args.json {
            let report = ImageReport {
                image: reference,
                digest: loaded.digest.to_string(),
                platforms: checks,
            };
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for c in &checks {
                eprintln!("{}", describe(reference, c));
            }
        }
    }
    if moved.is_empty() {
        Ok(())
    } else {
        Err(BasesMoved { images: moved }.into())
    }
}

/// One line per platform.
fn describe(reference: &str, c: &BaseCheck) -> String {
    let base = c.base.as_deref().unwrap_or("(none recorded)");
    let recorded = c
        .recorded
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    match &c.status {
        BaseStatus::Current => format!(
            "{reference} [{}]: base {base} is current ({recorded})",
            c.platform
        ),
        BaseStatus::Moved { now } => format!(
            "{reference} [{}]: base {base} moved: built on {recorded}, now {now}",
            c.platform
        ),
        BaseStatus::Unknown { why } => {
            format!("{reference} [{}]: cannot tell: {why}", c.platform)
        }
    }
}
