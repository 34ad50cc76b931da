//! `imgbuild init`: the flags, and the report printed on stderr.

use crate::init::{self, InitOptions, NoteKind};
use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The base image to write, e.g. python:3.12-slim-bookworm@sha256:… or oci:./base:latest.
    /// Without it, a base suggested by requires-python is written as a comment.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Write a [tool.imgbuild] table into pyproject.toml instead of imgbuild.toml.
    #[arg(long)]
    pub pyproject: bool,
    /// Replace an existing imgbuild.toml or [tool.imgbuild] table.
    #[arg(long)]
    pub force: bool,
}

pub fn cmd_init(args: InitArgs) -> Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let report = init::init(
        &cwd,
        &InitOptions {
            base: args.base,
            pyproject: args.pyproject,
            force: args.force,
        },
    )?;
    for n in &report.notes {
        let kind = match n.kind {
            NoteKind::Found => "found",
            NoteKind::Guessed => "guessed",
            NoteKind::Missing => "missing",
        };
        eprintln!("{kind:<8} {}", n.text);
    }
    let shown = report
        .file
        .strip_prefix(&cwd)
        .unwrap_or(&report.file)
        .display()
        .to_string();
    if report.complete && !report.notes.iter().any(|n| n.kind == NoteKind::Missing) {
        eprintln!("wrote {shown}; next: imgbuild build --output oci:out");
    } else {
        eprintln!("wrote {shown}; set what is missing or commented above, then: imgbuild build --output oci:out");
    }
    println!("{shown}");
    Ok(())
}
