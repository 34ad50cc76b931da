//! Command-line interface: the only place that prints. Progress and logs go
//! to stderr; stdout carries results (the digest is always its last line).

use crate::build::{self, BuildOptions, Event};
use crate::output::{archive, layout, BuildResult};
use crate::platform::Platform;
use crate::spec::{self, Spec};
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
    #[arg(long, env = "IMGBUILD_CACHE_DIR")]
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
    }
}

pub struct Context_ {
    pub spec: Spec,
    pub store: Store,
    pub http: reqwest::blocking::Client,
    pub platforms: Vec<Platform>,
    pub epoch: u64,
}

pub fn prepare(common: &CommonArgs) -> Result<Context_> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let spec = spec::load(common.spec.as_deref(), &cwd)?;
    let platforms = common
        .platforms
        .iter()
        .map(|p| Platform::parse(p).map_err(|e| anyhow!("--platform: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let store = Store::open(common.cache_dir.clone().unwrap_or_else(Store::default_root))?;
    let http = http_client(&common.ca_files)?;
    let epoch = crate::image::time::source_date_epoch()?;
    Ok(Context_ {
        spec,
        store,
        http,
        platforms,
        epoch,
    })
}

/// The client for package indexes: the system trust store (and SSL_CERT_FILE)
/// through reqwest's default TLS, plus any --ca-file.
pub fn http_client(ca_files: &[PathBuf]) -> Result<reqwest::blocking::Client> {
    let mut b = reqwest::blocking::Client::builder()
        .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")));
    for f in ca_files {
        let pem = std::fs::read(f).with_context(|| format!("--ca-file {}", f.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {}: not a PEM certificate bundle", f.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().context("setting up the HTTP client")
}

pub fn event_printer(verbose: bool) -> impl Fn(Event) + Sync {
    let tty = std::io::stderr().is_terminal();
    move |e: Event| match e {
        Event::Base {
            platform,
            name,
            digest,
        } => eprintln!("[{platform}] base {name} @ {digest}"),
        Event::Python { platform, info } => eprintln!("[{platform}] python {info}"),
        Event::Wheels { platform, count } => eprintln!("[{platform}] {count} packages to install"),
        Event::Fetched { filename, bytes } => {
            if verbose || tty {
                eprintln!("downloaded {filename} ({})", human(bytes))
            }
        }
        Event::Layer {
            platform,
            label,
            digest,
            size,
            cached,
        } => {
            if verbose || tty || !cached {
                eprintln!(
                    "[{platform}] layer {} {} {label}{}",
                    digest.short(),
                    human(size),
                    if cached { " (cached)" } else { "" }
                )
            }
        }
        Event::Warning(w) => eprintln!("warning: {w}"),
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

fn cmd_build(args: BuildArgs, verbose: bool) -> Result<()> {
    let dest = Destination::parse(&args.output)?;
    let ctx = prepare(&args.common)?;
    let printer = event_printer(verbose);
    let opts = BuildOptions {
        platforms: ctx.platforms.clone(),
        store: &ctx.store,
        http: &ctx.http,
        offline: args.common.offline,
        jobs: args.common.jobs,
        epoch: ctx.epoch,
        remote: None,
        on_event: &printer,
    };
    let result = build::build(&ctx.spec, &opts)?;
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
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
