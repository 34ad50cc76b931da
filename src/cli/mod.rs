//! Command-line interface: the only place that prints. Progress and logs go
//! to stderr; stdout carries results (the digest is always its last line).
//!
//! - [`args`]: the flags, as clap reads them;
//! - [`prepare`]: settings, cache, registry client and the build, shared by
//!   `build` and `push`;
//! - [`progress`]: progress bars and step lines;
//! - [`output`]: the `--json` summary, the digest, files written whole;
//! - one file per command: [`build`], [`push`], [`login`], [`init`],
//!   [`manifests`], [`resolve`], [`run`] (with [`engine`], podman or
//!   docker); [`release`] holds `sbom`, `diff` and
//!   `verify`, and what `build --sbom` and `push` attach.

mod args;
mod build;
mod completions;
mod engine;
mod init;
mod login;
mod man;
mod manifests;
mod outdated;
mod output;
mod prepare;
mod progress;
mod push;
mod rebase;
mod release;
mod resolve;
mod run;
mod unchanged;

pub use args::{
    BuildArgs, BuildFlags, Cli, Command, CommonArgs, Destination, LoginArgs, PushArgs, RegistryArgs,
};
pub use output::{finish, summary, write_atomic};
pub use prepare::{prepare, registry_client, run_build, Prepared};
pub use progress::{event_printer, human};

use anyhow::Result;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(args) => build::cmd_build(args, cli.verbose),
        Command::Push(args) => push::cmd_push(args, cli.verbose),
        Command::Login(args) => login::cmd_login(args),
        Command::Sbom(args) => release::cmd_sbom(args, cli.verbose),
        Command::Diff(args) => release::cmd_diff(args, cli.verbose),
        Command::Verify(args) => release::cmd_verify(args, cli.verbose),
        Command::Outdated(args) => outdated::cmd_outdated(args),
        Command::Rebase(args) => rebase::cmd_rebase(args, cli.verbose),
        Command::Init(args) => init::cmd_init(args),
        Command::Completions(args) => completions::cmd_completions(args),
        Command::Man(args) => man::cmd_man(args),
        Command::Manifests(args) => manifests::cmd_manifests(args),
        Command::Resolve(args) => resolve::cmd_resolve(args, cli.verbose),
        Command::Run(args) => run::cmd_run(args, cli.verbose),
    }
}

/// The error as the CLI prints it: the message and each cause once, on one
/// line, joined with ": ".
pub fn error_line(e: &anyhow::Error) -> String {
    crate::text::error_chain(e.as_ref())
}
