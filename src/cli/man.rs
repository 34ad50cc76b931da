//! `imgbuild man`: the man page, rendered from the clap definition.
//!
//! Printed at run time rather than shipped as a file: a wheel installed by pip,
//! `uv tool install` or `uvx` has no place on MANPATH, so `imgbuild man | man -l -`
//! is what works everywhere; packagers write the pages with `--dir`.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write imgbuild.1 and one imgbuild-COMMAND.1 per command into this directory
    /// instead of printing imgbuild(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn cmd_man(args: ManArgs) -> Result<()> {
    match args.dir {
        None => {
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, &page(None)?)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, bytes) in pages()? {
                let file = dir.join(format!("{name}.1"));
                super::write_atomic(&file, &bytes)?;
                eprintln!("wrote {}", file.display());
            }
        }
    }
    Ok(())
}

/// imgbuild(1), or the page of one subcommand (`imgbuild-build(1)`).
pub fn page(subcommand: Option<&str>) -> Result<Vec<u8>> {
    let mut cmd = super::Cli::command();
    cmd.build();
    // After `build`, a subcommand's display name is `imgbuild-NAME`, the page's title.
    let cmd = match subcommand {
        None => cmd,
        Some(name) => cmd
            .find_subcommand(name)
            .with_context(|| format!("no command {name:?}"))?
            .clone()
            .version(env!("CARGO_PKG_VERSION")),
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// Every page: imgbuild, then imgbuild-COMMAND for each command.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let cmd = super::Cli::command();
    let mut out = vec![("imgbuild".to_string(), page(None)?)];
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().to_string();
        out.push((format!("imgbuild-{name}"), page(Some(&name))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_page_lists_every_command() {
        let roff = String::from_utf8(page(None).unwrap()).unwrap();
        assert!(
            roff.starts_with(".ie \\n(.g .ds Aq \\(aq") || roff.contains(".TH imgbuild 1"),
            "{roff}"
        );
        assert!(roff.contains(".TH imgbuild 1"), "{roff}");
        assert!(roff.contains(".SH SUBCOMMANDS"), "{roff}");
        for sub in [
            "imgbuild\\-build(1)",
            "imgbuild\\-init(1)",
            "imgbuild\\-completions(1)",
        ] {
            assert!(roff.contains(sub), "no {sub} in:\n{roff}");
        }
    }

    #[test]
    fn each_command_has_its_page_with_its_flags() {
        let pages = pages().unwrap();
        let names: Vec<_> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "imgbuild",
                "imgbuild-build",
                "imgbuild-push",
                "imgbuild-login",
                "imgbuild-init",
                "imgbuild-sbom",
                "imgbuild-diff",
                "imgbuild-verify",
                "imgbuild-outdated",
                "imgbuild-rebase",
                "imgbuild-manifests",
                "imgbuild-resolve",
                "imgbuild-run",
                "imgbuild-completions",
                "imgbuild-man",
            ]
        );
        let init = String::from_utf8(pages[4].1.clone()).unwrap();
        assert!(
            init.contains(&format!(
                ".TH imgbuild-init 1  \"init {}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{init}"
        );
        assert!(init.contains("\\-\\-pyproject"), "{init}");
        assert!(init.contains("\\-\\-force"), "{init}");
    }
}
