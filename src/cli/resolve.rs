//! `imgbuild resolve`: YAML in, YAML out, with every `imgbuild://PATH` string
//! replaced by the digest of the image built from PATH's spec and pushed to
//! its `image` repository. `deploy::resolve` checks every reference before
//! anything is built; here each project is built and pushed once (all of them
//! in parallel), and nothing is printed on stdout until all of them are pushed.

use super::args::{BuildFlags, CommonArgs, RegistryArgs};
use super::prepare::{prepare, registry_client, run_build};
use super::progress::event_printer;
use crate::deploy::resolve::{self, check_init, Target};
use crate::deploy::{DeployError, RefError};
use crate::spec::Spec;
use clap::Args;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ResolveArgs {
    /// YAML to resolve: a file, a directory (its *.yaml and *.yml files, sorted), or - for
    /// standard input (repeatable).
    #[arg(
        short = 'f',
        long = "filename",
        visible_alias = "file",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// The tag to push every image under. Default: each project's version (pyproject.toml).
    #[arg(short, long)]
    pub tag: Option<String>,
    #[command(flatten)]
    pub build: BuildFlags,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub(super) fn cmd_resolve(args: ResolveArgs, verbose: bool) -> anyhow::Result<()> {
    let cwd = std::env::current_dir()?;
    if args.registry.password_stdin && args.files.iter().any(|f| f.as_os_str() == "-") {
        return Err(DeployError::StdinTwice.into());
    }
    let plan = resolve::plan(&args.files, args.tag.as_deref(), &cwd)?;
    plan.check_one_registry(args.registry.username.is_some())?;
    let pinned = build_and_push_all(&args, &plan.targets, verbose)?;
    print!("{}", plan.render(&pinned));
    Ok(())
}

/// Builds and pushes every target in parallel; `REPO@sha256:…` per spec file.
fn build_and_push_all(
    args: &ResolveArgs,
    targets: &BTreeMap<PathBuf, Target>,
    verbose: bool,
) -> anyhow::Result<HashMap<PathBuf, String>> {
    let Some(first) = targets.values().next() else {
        return Ok(HashMap::new());
    };
    let common = |spec: &Spec| CommonArgs {
        spec: Some(spec.file.clone()),
        build: args.build.clone(),
        digest_file: None,
        json: false,
    };
    let client = registry_client(
        &common(&first.spec),
        &args.registry,
        Some(&first.tag.registry),
    )?;
    let results: Vec<(PathBuf, Result<String, DeployError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(file, t)| {
                let client = client.clone();
                let common = common(&t.spec);
                let h = scope.spawn(move || -> Result<String, anyhow::Error> {
                    let ctx = prepare(&common, verbose)?;
                    let printer = event_printer(verbose);
                    let result = run_build(&ctx, &common, client.clone(), &printer, &[])?;
                    check_init(&ctx.spec, &result, &ctx.store)?;
                    crate::output::push::push(
                        &client,
                        &result,
                        std::slice::from_ref(&t.tag),
                        &ctx.store,
                        &|_, _| {},
                        None,
                    )?;
                    let pinned = t.pinned(&result.digest());
                    eprintln!("{} -> {pinned}", t.reference());
                    Ok(pinned)
                });
                (file.clone(), t, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(file, t, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the build thread panicked")))
                    .map_err(|e| {
                        t.failed(match e.downcast::<RefError>() {
                            Ok(r) => r,
                            Err(e) => RefError::Build(e.into()),
                        })
                    });
                (file, r)
            })
            .collect()
    });
    let mut out = HashMap::new();
    for (file, r) in results {
        out.insert(file, r?);
    }
    Ok(out)
}
