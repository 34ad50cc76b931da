//! Command-line interface: the only place that prints. Progress and logs go
//! to stderr; stdout carries results (the digest is always its last line).

use crate::base::remote::RegistryBases;
use crate::build::{self, BuildOptions, Event};
use crate::output::{archive, layout, BuildResult};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{Keychain, RegistryClient, Secret, TransportOptions};
use crate::spec::{self, Spec};
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod completions;
pub mod init;
pub mod man;

#[derive(Parser, Debug)]
#[command(
    name = "imgbuild",
    version,
    about = "Build reproducible container images for Python web services, without Docker or Python"
)]
pub struct Cli {
    /// Detailed logs on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the image and write it to an OCI layout or archive.
    Build(BuildArgs),
    /// Build the image and push it to a registry.
    Push(PushArgs),
    /// Save registry credentials in Docker's config.json, as `docker login` does.
    Login(LoginArgs),
    /// Write an imgbuild.toml for the project in the current directory, from its sources.
    Init(init::InitArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) to standard output, or write one page per command with --dir.
    Man(man::ManArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Registries (HOST or HOST:PORT) that may use plain http or an unverified certificate.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Upload blobs in PATCH chunks of this many bytes instead of one streamed PUT
    /// (for registries and proxies that cap request bodies).
    #[arg(long)]
    pub chunk_size: Option<u64>,
    /// Never use HTTP/2 with registries.
    #[arg(long)]
    pub http1: bool,
    /// Registry user for the push target; the password comes from --password-stdin or IMGBUILD_PASSWORD.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Read the registry password (or token) from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Where to push, e.g. registry.example.com/team/api:1.2 (repeatable).
    #[arg(short, long = "tag", required = true)]
    pub tags: Vec<String>,
    /// Write the pushed references, one `REF@sha256:…` per line, to this file.
    #[arg(long)]
    pub image_refs: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry host, e.g. ghcr.io or docker.io.
    pub registry: String,
    #[arg(short = 'u', long)]
    pub username: String,
    /// Read the password (or token) from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[arg(long = "ca-file")]
    pub ca_files: Vec<PathBuf>,
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The spec: imgbuild.toml, or a pyproject.toml with [tool.imgbuild]. Default: ./imgbuild.toml, then ./pyproject.toml.
    #[arg(short = 'f', long = "file")]
    pub spec: Option<PathBuf>,
    /// Target platforms, e.g. linux/amd64,linux/arm64 (repeatable). Overrides `platforms` in the spec.
    #[arg(long = "platform", value_delimiter = ',')]
    pub platforms: Vec<String>,
    /// Where downloaded wheels and built layers are kept. Default: IMGBUILD_CACHE_DIR, else the XDG cache.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Build from the cache only; fail if a wheel or base blob is missing.
    #[arg(long)]
    pub offline: bool,
    /// Parallel downloads, layer builds and uploads.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Extra CA certificates (PEM) to trust, for registries and indexes (repeatable).
    #[arg(long = "ca-file")]
    pub ca_files: Vec<PathBuf>,
    /// Write the image digest to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    /// Print a JSON summary (digest, layers with packages and sizes) on stdout before the digest.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME[:TAG]].
    #[arg(short, long)]
    pub output: String,
}

/// Where `build` writes the image.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    Layout {
        dir: PathBuf,
        tag: String,
    },
    OciArchive {
        file: PathBuf,
        tag: String,
    },
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination> {
        fn split_tag(rest: &str) -> (&str, String) {
            match rest.rsplit_once(':') {
                Some((p, t)) if !t.is_empty() && !t.contains('/') && !p.is_empty() => {
                    (p, t.to_string())
                }
                _ => (rest, "latest".to_string()),
            }
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (p, tag) = split_tag(rest);
            Ok(Destination::Layout {
                dir: PathBuf::from(p),
                tag,
            })
        } else if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (p, tag) = split_tag(rest);
            Ok(Destination::OciArchive {
                file: PathBuf::from(p),
                tag,
            })
        } else if let Some(rest) = s.strip_prefix("docker-archive:") {
            match rest.split_once(':') {
                Some((p, r)) if !r.is_empty() => Ok(Destination::DockerArchive {
                    file: p.into(),
                    reference: Some(r.into()),
                }),
                _ => Ok(Destination::DockerArchive {
                    file: rest.into(),
                    reference: None,
                }),
            }
        } else {
            bail!("--output {s:?}: expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]")
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(args) => cmd_build(args, cli.verbose),
        Command::Push(args) => cmd_push(args, cli.verbose),
        Command::Login(args) => cmd_login(args),
        Command::Init(args) => init::cmd_init(args),
        Command::Completions(args) => completions::cmd_completions(args),
        Command::Man(args) => man::cmd_man(args),
    }
}

pub struct Prepared {
    pub spec: Spec,
    pub store: Store,
    pub http: crate::fetch::LazyHttp,
    pub platforms: Vec<Platform>,
    pub epoch: u64,
}

pub fn prepare(common: &CommonArgs) -> Result<Prepared> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let spec = spec::load(common.spec.as_deref(), &cwd)?;
    let platforms = common
        .platforms
        .iter()
        .map(|p| Platform::parse(p).map_err(|e| anyhow!("--platform: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let store = Store::open(common.cache_dir.clone().unwrap_or_else(Store::default_root))?;
    let http = crate::fetch::LazyHttp::new(common.ca_files.clone());
    let epoch = crate::image::time::source_date_epoch()?;
    Ok(Prepared {
        spec,
        store,
        http,
        platforms,
        epoch,
    })
}

/// Progress on a terminal (one bar over fetching and layer building), plain
/// lines in CI; `-v` prints every step.
pub fn event_printer(verbose: bool) -> impl Fn(Event) + Sync {
    let bar = (std::io::stderr().is_terminal() && !verbose).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed}] {bar:30} {pos}/{len} {wide_msg}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let say = {
        let bar = bar.clone();
        move |line: String| match &bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    };
    move |e: Event| match e {
        Event::Base {
            platform,
            name,
            digest,
        } => say(format!("[{platform}] base {name} @ {digest}")),
        Event::Python { platform, info } => say(format!("[{platform}] python {info}")),
        Event::Wheels { platform, count } => {
            if let Some(b) = &bar {
                // Each wheel is fetched once and becomes one layer.
                b.inc_length(2 * count as u64);
            }
            say(format!("[{platform}] {count} packages to install"))
        }
        Event::Fetched { filename, bytes } => {
            say(format!("downloaded {filename} ({})", human(bytes)))
        }
        Event::Progress { label } => {
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(label);
            }
        }
        Event::Done => {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
        }
        Event::Layer {
            platform,
            label,
            digest,
            size,
            cached,
        } => {
            if verbose || !cached {
                say(format!(
                    "[{platform}] layer {} {} {label}{}",
                    digest.short(),
                    human(size),
                    if cached { " (cached)" } else { "" }
                ))
            }
        }
        Event::Warning(w) => say(format!("warning: {w}")),
    }
}

pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn default_repo_tag(spec: &Spec) -> String {
    let name = spec
        .source
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

/// The pipeline with registry bases, keeping `writes` and the cache out of the app layer.
fn run_build(
    ctx: &Prepared,
    common: &CommonArgs,
    client: Arc<RegistryClient>,
    printer: &(dyn Fn(Event) + Sync),
    writes: &[&Path],
) -> Result<BuildResult> {
    let bases = RegistryBases {
        client,
        store: &ctx.store,
        offline: common.offline,
        on_event: printer,
    };
    let mut paths = writes.to_vec();
    paths.push(ctx.store.root());
    let opts = BuildOptions {
        platforms: ctx.platforms.clone(),
        store: &ctx.store,
        http: &ctx.http,
        offline: common.offline,
        jobs: common.jobs,
        epoch: ctx.epoch,
        remote: Some(&bases),
        on_event: printer,
        own_paths: own_paths(&paths),
    };
    Ok(build::build(&ctx.spec, &opts)?)
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

fn cmd_build(args: BuildArgs, verbose: bool) -> Result<()> {
    let dest = Destination::parse(&args.output)?;
    let ctx = prepare(&args.common)?;
    let printer = event_printer(verbose);
    let client = registry_client(&args.common, &RegistryArgs::default(), None)?;
    let output_path = match &dest {
        Destination::Layout { dir, .. } => dir,
        Destination::OciArchive { file, .. } | Destination::DockerArchive { file, .. } => file,
    };
    let result = run_build(&ctx, &args.common, client, &printer, &[output_path])?;
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
                .unwrap_or_else(|| default_repo_tag(&ctx.spec));
            archive::write_docker_archive(&result, file, &r, &ctx.store, ctx.epoch)?
        }
    }
    finish(&args.common, &result, &[])
}

fn read_password_stdin() -> Result<Secret> {
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
fn registry_client(
    common: &CommonArgs,
    reg: &RegistryArgs,
    target: Option<&str>,
) -> Result<Arc<RegistryClient>> {
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
        ca_files: common.ca_files.clone(),
        insecure_registries: reg.insecure_registries.clone(),
        chunk_size: reg.chunk_size,
        jobs: common.jobs.max(1),
        http1_only: reg.http1,
        ..TransportOptions::default()
    };
    Ok(Arc::new(RegistryClient::new(options, keychain)?))
}

fn cmd_push(args: PushArgs, verbose: bool) -> Result<()> {
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| anyhow!("--tag {t}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let ctx = prepare(&args.common)?;
    let client = registry_client(&args.common, &args.registry, Some(&tags[0].registry))?;
    let printer = event_printer(verbose);
    let t0 = std::time::Instant::now();
    let result = run_build(&ctx, &args.common, client.clone(), &printer, &[])?;
    let t1 = std::time::Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let n: usize = result.images.iter().map(|i| i.layers.len() + 1).sum();
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} pushing {bar:30} {pos}/{len} {wide_msg}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let labels: std::collections::HashMap<_, _> = result
        .images
        .iter()
        .flat_map(|i| {
            i.layers
                .iter()
                .map(|l| (l.layer.digest.clone(), l.label.clone()))
        })
        .collect();
    let on_blob = |d: &crate::digest::Digest, o: &crate::registry::PushOutcome| {
        if let Some(b) = &bar {
            b.inc(1);
            b.set_message(format!(
                "{o:?} {}",
                labels.get(d).map(String::as_str).unwrap_or("config")
            ));
        }
    };
    let report = crate::output::push::push(&client, &result, &tags, &ctx.store, &on_blob);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = report?;
    if verbose {
        eprintln!("timing: build {:?}, push {:?}", t1 - t0, t1.elapsed());
    }
    let stats = client.stats();
    for (i, img) in result.images.iter().enumerate() {
        for (j, l) in img.layers.iter().enumerate() {
            let outcome = report.outcome(i, j);
            if verbose || outcome == "uploaded" {
                eprintln!(
                    "[{}] {outcome} {} {} {}",
                    img.platform,
                    l.layer.digest.short(),
                    human(l.layer.size),
                    l.label
                );
            }
        }
    }
    eprintln!(
        "pushed {} ({} uploaded, {} requests)",
        result.digest(),
        human(stats.blob_bytes_uploaded),
        stats.requests
    );
    if args.common.json {
        let mut s = summary(&result, &args.tags);
        for (i, img) in s["images"].as_array_mut().into_iter().flatten().enumerate() {
            for (j, l) in img["layers"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .enumerate()
            {
                l["outcome"] = report.outcome(i, j).into();
            }
        }
        s["bytes_uploaded"] = stats.blob_bytes_uploaded.into();
        s["requests"] = stats.requests.into();
        s["pushed"] = report.pinned.clone().into();
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    if let Some(f) = &args.common.digest_file {
        write_atomic(f, format!("{}\n", result.digest()).as_bytes())?;
    }
    if let Some(f) = &args.image_refs {
        write_atomic(f, (report.pinned.join("\n") + "\n").as_bytes())?;
    }
    for p in &report.pinned {
        println!("{p}");
    }
    Ok(())
}

fn cmd_login(args: LoginArgs) -> Result<()> {
    if !args.password_stdin {
        bail!("imgbuild login reads the password from standard input only: pass --password-stdin (a password on the command line would end up in shell history)");
    }
    let password = read_password_stdin()?;
    let registry = crate::reference::normalise_registry(&args.registry);
    let keychain = Keychain::from_env()
        .with_explicit(&args.username, password.clone())
        .explicit_only_for(&registry);
    let options = TransportOptions {
        ca_files: args.ca_files.clone(),
        insecure_registries: args.insecure_registries.clone(),
        ..TransportOptions::default()
    };
    let client = RegistryClient::new(options, keychain)?;
    client.check_login(&registry)?;
    let file = crate::registry::login(&registry, &args.username, &password, None)?;
    eprintln!("Login Succeeded (credentials saved in {})", file.display());
    Ok(())
}

/// Prints the summary and the digest (last line of stdout), and writes --digest-file.
pub fn finish(common: &CommonArgs, result: &BuildResult, tags: &[String]) -> Result<()> {
    let digest = result.digest();
    if common.json {
        println!("{}", serde_json::to_string_pretty(&summary(result, tags))?);
    }
    if let Some(f) = &common.digest_file {
        write_atomic(f, format!("{digest}\n").as_bytes())?;
    }
    println!("{digest}");
    Ok(())
}

pub fn summary(result: &BuildResult, tags: &[String]) -> serde_json::Value {
    let images: Vec<_> = result
        .images
        .iter()
        .map(|i| {
            serde_json::json!({
                "platform": i.platform.to_string(),
                "digest": i.manifest_digest.to_string(),
                "layers": i.layers.iter().map(|l| serde_json::json!({
                    "digest": l.layer.digest.to_string(), "size": l.layer.size, "label": l.label,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "digest": result.digest().to_string(), "mediaType": result.media_type(), "tags": tags, "images": images })
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One line: each cause appended unless the message before already says it
/// (our error types often embed their source in their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert_eq!(
            Destination::parse("oci:out").unwrap(),
            Destination::Layout {
                dir: "out".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(
            Destination::parse("oci:out/x:v1").unwrap(),
            Destination::Layout {
                dir: "out/x".into(),
                tag: "v1".into()
            }
        );
        assert_eq!(
            Destination::parse("docker-archive:a.tar:localhost/x:1").unwrap(),
            Destination::DockerArchive {
                file: "a.tar".into(),
                reference: Some("localhost/x:1".into())
            }
        );
        assert!(Destination::parse("tarball:x").is_err());
    }
}
