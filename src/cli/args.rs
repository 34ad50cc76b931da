//! The command line as clap reads it: the subcommands and their flags, and
//! the `--output` destination of `build`.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    Init(super::init::InitArgs),
    /// Build and write the image's SBOM (SPDX 2.3, or CycloneDX 1.6).
    Sbom(super::release::SbomArgs),
    /// Explain how two images differ: platforms, config, packages, files.
    Diff(super::release::DiffArgs),
    /// Rebuild this checkout and check that each platform's manifest matches REF.
    Verify(super::release::VerifyArgs),
    /// Check whether the base each image was built on has moved (its tag points elsewhere); exit 1 if so.
    Outdated(super::outdated::OutdatedArgs),
    /// Put a pushed image's own layers on a new base (default: where its base's tag points now), with registry operations only; refuses a swap that is not safe.
    Rebase(super::rebase::RebaseArgs),
    /// Write Kubernetes manifests, a compose.yaml or a systemd unit for the spec, the image as imgbuild://PATH.
    Manifests(super::manifests::ManifestsArgs),
    /// Build and push every imgbuild://PATH in YAML files and print them with REPO@sha256:… in its place.
    Resolve(super::resolve::ResolveArgs),
    /// Build the image and run it here with podman or docker, as a single server would (--watch: rebuild on changes).
    Run(super::run::RunArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions(super::completions::CompletionsArgs),
    /// Print the man page (roff) to standard output, or write one page per command with --dir.
    Man(super::man::ManArgs),
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
    /// Give up on registries after this many seconds from the start (default:
    /// none; a registry silent for 30 s fails a request regardless).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
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
    #[command(flatten)]
    pub attach: super::release::AttachArgs,
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
    #[command(flatten)]
    pub build: BuildFlags,
    /// Write the image digest to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    /// Print a JSON summary (digest; per image its layers with packages and sizes, the wheels
    /// downloaded and the layers reused from a registry cache) on stdout before the digest.
    #[arg(long)]
    pub json: bool,
}

impl CommonArgs {
    /// The settings of a command that reads and writes registries but builds
    /// nothing (`outdated`, `rebase`): no spec, no platforms.
    pub fn registry_only(
        ca_files: Vec<PathBuf>,
        cache_dir: Option<PathBuf>,
        json: bool,
    ) -> CommonArgs {
        CommonArgs {
            spec: None,
            build: BuildFlags {
                platforms: Vec::new(),
                cache_dir,
                offline: false,
                jobs: 4,
                ca_files,
                cache_from: Vec::new(),
            },
            digest_file: None,
            json,
        }
    }
}

/// How a build runs: for what, from where and how wide (shared by `build`,
/// `push` and the like, and `resolve`).
#[derive(Args, Debug, Clone)]
pub struct BuildFlags {
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
    /// An image (REGISTRY/REPO:TAG or @DIGEST) whose package layers may be reused when their
    /// cache key matches, instead of downloading their wheels (repeatable). `push` also reads the tag it pushes.
    #[arg(long = "cache-from", value_name = "REF")]
    pub cache_from: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME[:TAG]].
    #[arg(short, long)]
    pub output: String,
    /// Also write the image's SBOM to this file.
    #[arg(long)]
    pub sbom: Option<PathBuf>,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, value_enum, default_value_t = crate::attest::SbomFormat::Spdx)]
    pub sbom_format: crate::attest::SbomFormat,
    /// Also write the image's provenance (in-toto statement, SLSA provenance v1) to this file.
    #[arg(long)]
    pub provenance: Option<PathBuf>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("imgbuild").chain(args.iter().copied()))
    }

    fn layout(dir: &str, tag: &str) -> Destination {
        Destination::Layout {
            dir: dir.into(),
            tag: tag.into(),
        }
    }

    fn docker_archive(file: &str, reference: Option<&str>) -> Destination {
        Destination::DockerArchive {
            file: file.into(),
            reference: reference.map(Into::into),
        }
    }

    #[test]
    fn parses_destinations() {
        let parsed = |s: &str| Destination::parse(s).unwrap();
        assert_eq!(parsed("oci:out"), layout("out", "latest"));
        assert_eq!(parsed("oci:out/x:v1"), layout("out/x", "v1"));
        assert_eq!(
            parsed("docker-archive:a.tar:localhost/x:1"),
            docker_archive("a.tar", Some("localhost/x:1"))
        );
        assert!(Destination::parse("tarball:x").is_err());
    }

    #[test]
    fn oci_archive_and_docker_archive_without_a_name() {
        assert_eq!(
            Destination::parse("oci-archive:img.tar:v2").unwrap(),
            Destination::OciArchive {
                file: "img.tar".into(),
                tag: "v2".into()
            }
        );
        assert_eq!(
            Destination::parse("docker-archive:a.tar").unwrap(),
            docker_archive("a.tar", None)
        );
        let e = Destination::parse("tarball:x").unwrap_err().to_string();
        assert!(
            e.starts_with("--output \"tarball:x\": expected oci:DIR"),
            "{e}"
        );
    }

    #[test]
    fn build_takes_common_flags_with_defaults() {
        let cli = parse(&["build", "-o", "oci:out"]).unwrap();
        assert!(!cli.verbose);
        let Command::Build(b) = cli.command else {
            panic!("not build")
        };
        assert_eq!(b.output, "oci:out");
        assert_eq!(b.common.build.jobs, 4);
        assert!(b.common.build.platforms.is_empty() && !b.common.build.offline && !b.common.json);
        assert_eq!(b.common.spec, None);
    }

    #[test]
    fn platforms_split_on_commas_and_repeat() {
        let cli = parse(&[
            "build",
            "-o",
            "oci:out",
            "--platform",
            "linux/amd64,linux/arm64",
            "--platform=linux/arm/v7",
            "-v",
        ])
        .unwrap();
        assert!(cli.verbose, "-v is global, after the subcommand too");
        let Command::Build(b) = cli.command else {
            panic!("not build")
        };
        assert_eq!(
            b.common.build.platforms,
            ["linux/amd64", "linux/arm64", "linux/arm/v7"]
        );
    }

    #[test]
    fn build_needs_an_output_and_push_a_tag() {
        assert_eq!(
            parse(&["build"]).unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["push"]).unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn push_reads_registry_flags() {
        let cli = parse(&[
            "push",
            "-t",
            "127.0.0.1:5000/a:1",
            "--tag",
            "127.0.0.1:5000/a:latest",
            "--insecure-registry",
            "127.0.0.1:5000",
            "--chunk-size",
            "1048576",
            "--http1",
            "-u",
            "ci",
            "--password-stdin",
            "--image-refs",
            "refs.txt",
            "--timeout",
            "90",
            "--json",
        ])
        .unwrap();
        let Command::Push(p) = cli.command else {
            panic!("not push")
        };
        assert_eq!(p.tags, ["127.0.0.1:5000/a:1", "127.0.0.1:5000/a:latest"]);
        assert_eq!(p.registry.insecure_registries, ["127.0.0.1:5000"]);
        assert_eq!(p.registry.chunk_size, Some(1 << 20));
        assert_eq!(p.registry.timeout, Some(90));
        assert!(p.registry.http1 && p.registry.password_stdin && p.common.json);
        assert_eq!(p.registry.username.as_deref(), Some("ci"));
        assert_eq!(p.image_refs, Some(PathBuf::from("refs.txt")));
    }

    #[test]
    fn login_takes_the_registry_and_a_user() {
        let cli = parse(&["login", "127.0.0.1:5000", "-u", "ci", "--password-stdin"]).unwrap();
        let Command::Login(l) = cli.command else {
            panic!("not login")
        };
        assert_eq!(
            (l.registry.as_str(), l.username.as_str()),
            ("127.0.0.1:5000", "ci")
        );
        assert!(l.password_stdin);
        assert!(
            parse(&["login", "127.0.0.1:5000"]).is_err(),
            "-u is required"
        );
    }

    #[test]
    fn unknown_flags_are_refused() {
        assert_eq!(
            parse(&["build", "-o", "oci:out", "--frobnicate"])
                .unwrap_err()
                .kind(),
            clap::error::ErrorKind::UnknownArgument
        );
    }
}
