//! `imgbuild completions SHELL`: a completion script generated from the clap
//! definition, so it never lags behind the flags.

use anyhow::Result;
use clap::{Args, CommandFactory};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh or fish (elvish and powershell work too).
    pub shell: clap_complete::Shell,
}

pub fn cmd_completions(args: CompletionsArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, &script(args.shell))?;
    Ok(())
}

/// The completion script for `shell`.
pub fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "imgbuild", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap_complete::Shell;

    #[test]
    fn bash_loads_the_script_and_completes_subcommands_and_flags() {
        let script = String::from_utf8(script(Shell::Bash)).unwrap();
        // bash itself: the script defines a completion for imgbuild, and asking
        // it to complete `imgbuild i` and `imgbuild init --f` gives what the CLI has.
        let probe = r#"
source /dev/stdin
complete -p imgbuild
COMP_WORDS=(imgbuild i); COMP_CWORD=1; COMP_LINE="imgbuild i"; COMP_POINT=${#COMP_LINE}
_imgbuild imgbuild i imgbuild; echo "subcommands: ${COMPREPLY[*]}"
COMP_WORDS=(imgbuild init --f); COMP_CWORD=2; COMP_LINE="imgbuild init --f"; COMP_POINT=${#COMP_LINE}
_imgbuild imgbuild --f init; echo "flags: ${COMPREPLY[*]}"
"#;
        let mut child = std::process::Command::new("bash")
            .args(["--norc", "-c", probe])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("-F _imgbuild imgbuild"), "{stdout}");
        assert!(stdout.contains("subcommands: init"), "{stdout}");
        assert!(stdout.contains("flags: --force"), "{stdout}");
    }

    #[test]
    fn zsh_and_fish_scripts_name_every_subcommand() {
        for shell in [Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(script(shell)).unwrap();
            for sub in ["build", "push", "login", "init", "completions", "man"] {
                assert!(script.contains(sub), "{shell}: no {sub}");
            }
            assert!(script.contains("pyproject"), "{shell}: no init flags");
        }
        assert!(String::from_utf8(script(Shell::Zsh))
            .unwrap()
            .starts_with("#compdef imgbuild"));
    }
}
