//! `imgbuild manifests`: the Kubernetes objects, the compose.yaml or the
//! systemd unit `deploy` plans for the spec, on stdout as one stream or one
//! file each in a directory. Everything is planned (and every input checked)
//! before anything is written.

use super::output::write_atomic;
use crate::deploy::{self, DeployError, Format};
use crate::spec;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ManifestsArgs {
    /// The spec: imgbuild.toml, or a pyproject.toml with [tool.imgbuild]. Default: ./imgbuild.toml, then ./pyproject.toml.
    #[arg(short = 'f', long = "file")]
    pub spec: Option<PathBuf>,
    /// A directory to write the files into (deployment.yaml, hpa.yaml, ingress.yaml and
    /// service.yaml; compose.yaml; NAME.service), or - for all of them on standard output
    /// as one stream.
    #[arg(short, long, default_value = "-")]
    pub output: String,
    /// kubernetes (Deployment, Service, HPA, Ingress), compose (compose.yaml for Docker
    /// Compose or podman-compose) or systemd (a unit that runs the image with podman).
    #[arg(long, default_value = "kubernetes", value_name = "FORMAT")]
    pub format: String,
}

pub(super) fn cmd_manifests(args: ManifestsArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir()?;
    let format: Format = args.format.parse()?;
    let spec = spec::load(args.spec.as_deref(), &cwd).map_err(DeployError::from)?;
    let objects = deploy::manifests_for(&spec, &cwd, format)?;
    if spec.image.is_none() {
        eprintln!(
            "note: {} has no `image`; `imgbuild resolve` needs it to know where to push",
            crate::text::shown(&spec.file, &cwd)
        );
    }
    if args.output == "-" {
        let texts: Vec<&str> = objects.iter().map(|m| m.text.as_str()).collect();
        print!("{}", texts.join("---\n"));
        return Ok(());
    }
    let dir = PathBuf::from(&args.output);
    std::fs::create_dir_all(&dir).map_err(|e| DeployError::Write {
        path: dir.display().to_string(),
        source: e.into(),
    })?;
    for m in &objects {
        let path = dir.join(&m.file_name);
        write_atomic(&path, m.text.as_bytes()).map_err(|e| DeployError::Write {
            path: path.display().to_string(),
            source: e.into(),
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
