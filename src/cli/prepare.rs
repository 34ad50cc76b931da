//! What `build` and `push` share before the build: the settings, the cache,
//! the registry client with its credentials, and the pipeline run itself.

use super::args::{CommonArgs, RegistryArgs};
use crate::base::remote::RegistryBases;
use crate::build::{self, BuildOptions, Event};
use crate::output::BuildResult;
use crate::platform::Platform;
use crate::registry::{Keychain, RegistryClient, Secret, TransportOptions};
use crate::spec::{self, Spec};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Prepared {
    pub spec: Spec,
    pub store: Store,
    pub http: crate::fetch::LazyHttp,
    pub platforms: Vec<Platform>,
    pub epoch: u64,
    /// Where the build will be pushed: read as a registry cache, first.
    pub push_targets: Vec<crate::reference::Reference>,
    /// Whether the build reuses layers from registries (the push targets,
    /// `--cache-from`): off for a push's second build, after a reused blob
    /// vanished between planning and push.
    pub registry_cache: bool,
}

/// With `verbose` (`-v`), what the cache could not keep is shown as a warning.
pub fn prepare(common: &CommonArgs, verbose: bool) -> Result<Prepared> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let spec = spec::load(common.spec.as_deref(), &cwd)?;
    let platforms = common
        .build
        .platforms
        .iter()
        .map(|p| Platform::parse(p).context("--platform"))
        .collect::<Result<Vec<_>>>()?;
    let store = Store::open(cache_root(common))?;
    let store = if verbose {
        // Straight to stderr: with -v there is no progress bar to print around.
        store.with_warnings(Arc::new(|w| eprintln!("warning: {w}")))
    } else {
        store
    };
    let http = crate::fetch::LazyHttp::new(common.build.ca_files.clone());
    let epoch = crate::image::time::source_date_epoch()?;
    Ok(Prepared {
        spec,
        store,
        http,
        platforms,
        epoch,
        push_targets: Vec::new(),
        registry_cache: true,
    })
}

/// The pipeline with registry bases, keeping `writes` and the cache out of the app layer.
pub fn run_build(
    ctx: &Prepared,
    common: &CommonArgs,
    client: Arc<RegistryClient>,
    printer: &(dyn Fn(Event) + Sync),
    writes: &[&Path],
) -> Result<BuildResult> {
    let bases = RegistryBases {
        client: client.clone(),
        store: &ctx.store,
        offline: common.build.offline,
        on_warning: &|w| printer(Event::Warning(w)),
    };
    let mut paths = writes.to_vec();
    paths.push(ctx.store.root());
    // `--digest-file` in the source tree is this run's output, not the app's.
    paths.extend(common.digest_file.as_deref());
    let cache = remote_cache(ctx, common, &client)?;
    let opts = BuildOptions {
        platforms: ctx.platforms.clone(),
        store: &ctx.store,
        http: &ctx.http,
        offline: common.build.offline,
        jobs: common.build.jobs,
        epoch: ctx.epoch,
        remote: Some(&bases),
        on_event: printer,
        own_paths: own_paths(&paths),
        cache: cache.as_ref(),
        compression: ctx.spec.compression,
    };
    Ok(build::build(&ctx.spec, &opts)?)
}

/// Whether a build reads a registry cache, so its push targets by tag first.
pub(super) fn reads_registry_cache(ctx: &Prepared, common: &CommonArgs) -> bool {
    !common.build.offline && ctx.registry_cache
}

/// The registry cache: the push targets, then each `--cache-from`; none offline
/// or when `ctx.registry_cache` is off.
fn remote_cache(
    ctx: &Prepared,
    common: &CommonArgs,
    client: &Arc<RegistryClient>,
) -> Result<Option<build::RemoteCache>> {
    let mut refs = ctx.push_targets.clone();
    for r in &common.build.cache_from {
        refs.push(
            crate::reference::Reference::parse(r).with_context(|| format!("--cache-from {r}"))?,
        );
    }
    refs.dedup();
    if refs.is_empty() || !reads_registry_cache(ctx, common) {
        return Ok(None);
    }
    Ok(Some(build::RemoteCache {
        client: client.clone(),
        refs,
        pull: ctx.push_targets.is_empty(),
    }))
}

/// Absolute, symlink-free forms of paths this run writes to (they may not exist yet).
fn own_paths(paths: &[&Path]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter_map(|p| {
            let abs = std::path::absolute(p).ok()?;
            match (abs.parent(), abs.file_name()) {
                (Some(parent), Some(name)) => Some(parent.canonicalize().ok()?.join(name)),
                _ => abs.canonicalize().ok(),
            }
        })
        .collect()
}

pub(super) fn read_password_stdin() -> Result<Secret> {
    let mut p = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)
        .context("reading the password from standard input")?;
    let p = p.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("--password-stdin: standard input was empty; pipe the password in, e.g. `echo \"$TOKEN\" | imgbuild … --password-stdin`");
    }
    Ok(Secret::new(p))
}

/// The registry client, with explicit credentials (if any) used only for `target`.
pub fn registry_client(
    common: &CommonArgs,
    reg: &RegistryArgs,
    target: Option<&str>,
) -> Result<Arc<RegistryClient>> {
    Ok(registry_clients(common, reg, target, 1)?.remove(0))
}

/// `n` registry clients with the same credentials (the password read once),
/// each with its own connections and figures.
pub fn registry_clients(
    common: &CommonArgs,
    reg: &RegistryArgs,
    target: Option<&str>,
    n: usize,
) -> Result<Vec<Arc<RegistryClient>>> {
    let mut keychain = Keychain::from_env();
    if reg.password_stdin && reg.username.is_none() {
        bail!("--password-stdin needs --username");
    }
    if let Some(user) = &reg.username {
        let password = if reg.password_stdin {
            read_password_stdin()?
        } else if let Some(p) = std::env::var("IMGBUILD_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
        {
            Secret::new(p)
        } else {
            bail!(
                "--username {user} needs a password: use --password-stdin or set IMGBUILD_PASSWORD"
            );
        };
        keychain = keychain.with_explicit(user, password);
    }
    if let Some(t) = target {
        keychain = keychain.explicit_only_for(t);
    }
    let options = TransportOptions {
        ca_files: common.build.ca_files.clone(),
        insecure_registries: reg.insecure_registries.clone(),
        chunk_size: reg.chunk_size,
        jobs: common.build.jobs.max(1),
        http1_only: reg.http1,
        timeout: reg.timeout.map(std::time::Duration::from_secs),
        ..TransportOptions::default()
    };
    let store = Store::open(cache_root(common)).ok();
    let mut clients: Vec<Arc<RegistryClient>> = Vec::new();
    for _ in 0..n {
        let client = RegistryClient::new(options.clone(), keychain.clone())?;
        // Where each registry answered last time: a warm run skips the ping.
        // Only a hint, so a cache that cannot be opened here costs a ping.
        let client = match &store {
            Some(store) => client.remember_endpoints(store.clone()),
            None => client,
        };
        let client = match clients.first() {
            Some(first) => client.sharing_run_of(first.as_ref()),
            None => client,
        };
        clients.push(Arc::new(client));
    }
    Ok(clients)
}

/// The cache directory: `--cache-dir`, else the default one.
fn cache_root(common: &CommonArgs) -> PathBuf {
    common
        .build
        .cache_dir
        .clone()
        .unwrap_or_else(Store::default_root)
}
