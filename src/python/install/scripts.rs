//! Entry points and scripts: `entry_points.txt` read as uv reads it, the
//! launcher uv writes for each console or GUI script, and the `#!python`
//! shebang rewrite of `.data/scripts` files.

use super::archive::{Archive, ZipEntry, MAX_METADATA_FILE};
use super::{Ctx, WheelError};
use std::collections::BTreeMap;
use std::io::Read;

/// An entry point from `[console_scripts]` or `[gui_scripts]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Script {
    pub name: String,
    pub module: String,
    /// `obj` or `obj.attr.method`; the launcher imports the first part.
    pub function: String,
}

impl Script {
    fn import_name(&self) -> &str {
        self.function
            .split_once('.')
            .map_or(&self.function, |(first, _)| first)
    }
}

/// `[console_scripts]` and `[gui_scripts]`, read like uv's case-sensitive,
/// `=`-only INI parser. pip's `pip3.N` launchers are fixed up as uv does.
pub(super) fn parse_entry_points(
    text: &str,
    python_minor: u32,
    ctx: &Ctx,
) -> Result<(Vec<Script>, Vec<Script>), WheelError> {
    let mut sections: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.find(['#', ';']).map_or(raw, |i| &raw[..i]).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            sections.entry(name.trim().to_string()).or_default();
            continue;
        }
        let Some(section) = &current else {
            return Err(ctx.invalid(format!(
                "entry_points.txt: {line:?} comes before any [section]"
            )));
        };
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (line, None),
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.to_string(), value);
    }
    let scripts = |section: &str| -> Result<Vec<Script>, WheelError> {
        let mut out = Vec::new();
        for (name, value) in sections.get(section).into_iter().flatten() {
            let value = value.as_deref().ok_or_else(|| {
                ctx.invalid(format!(
                    "entry_points.txt: [{section}] key {name} must have a value"
                ))
            })?;
            let script = parse_script(name, value).ok_or_else(|| {
                ctx.invalid(format!(
                    "entry_points.txt: invalid entry point {name} = {value:?}"
                ))
            })?;
            if is_reserved_name(name) {
                return Err(ctx.invalid(format!(
                    "entry point {name:?} would replace the venv's interpreter link"
                )));
            }
            out.push(script);
        }
        Ok(out)
    };
    let mut console = scripts("console_scripts")?;
    let gui = scripts("gui_scripts")?;
    // Old pip wheels ship a `pip3.N` for the Python that built them; drop it
    // and add the one for the target's Python.
    console.retain(
        |s| !matches!(s.name.split_once('.'), Some(("pip3", n)) if n.parse::<u8>().is_ok()),
    );
    if let Some(pip3) = console.iter().find(|s| s.name == "pip3").cloned() {
        console.push(Script {
            name: format!("pip3.{python_minor}"),
            ..pip3
        });
    }
    Ok((console, gui))
}

/// The interpreter launcher an entry point named `name` would replace, if
/// any: uv's rule, so a wheel uv refuses is refused here too.
fn is_reserved_name(name: &str) -> bool {
    reserved_launcher(&name.to_ascii_lowercase()).is_some()
}

/// The launcher a file in `.data/scripts` named `name` would replace (uv also
/// drops an `.exe` suffix there), e.g. `Some("python3")` for `python3.exe`.
pub(super) fn reserved_data_script(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    reserved_launcher(lower.strip_suffix(".exe").unwrap_or(&lower)).map(str::to_string)
}

/// uv's reserved launcher names, on a lowercased name without `.py`: the
/// interpreters a venv holds (`python`, `pythonw`, `python3`, `python3.N`,
/// the free-threaded `python3.Nt` and `pythonw3.Nt`) and other
/// implementations' (`graalpy`, `pypy`, `pypy2`, `pypy3`).
fn reserved_launcher(lower: &str) -> Option<&str> {
    let name = lower.strip_suffix(".py").unwrap_or(lower);
    let minor = |n: &str| n.parse::<u8>().is_ok();
    let free_threaded = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.strip_suffix('t'))
            .is_some_and(minor)
    };
    let reserved = matches!(
        name,
        "python" | "pythonw" | "python3" | "graalpy" | "pypy" | "pypy2" | "pypy3"
    ) || name.strip_prefix("python3.").is_some_and(minor)
        || free_threaded("python3.")
        || free_threaded("pythonw3.");
    reserved.then_some(name)
}

/// `module:function[extras]`, with the spaces the entry points spec allows.
fn parse_script(name: &str, value: &str) -> Option<Script> {
    let ident = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let (module, rest) = value.split_once(':')?;
    let module = module.trim_end();
    let rest = rest.trim_start();
    let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
    let (function, tail) = rest.split_at(end);
    if module.is_empty() || !module.chars().all(ident) || function.is_empty() {
        return None;
    }
    let tail = tail.trim();
    if !tail.is_empty() {
        let extras = tail.strip_prefix('[')?.strip_suffix(']')?;
        if extras.trim().is_empty() {
            return None;
        }
    }
    Some(Script {
        name: name.to_string(),
        module: module.to_string(),
        function: function.to_string(),
    })
}

/// If the script starts with `#!python`, the whole script with its first line
/// replaced by the venv's shebang line. Scripts are small; binaries that do
/// not start with the marker are never read past 8 bytes.
pub(super) fn rewrite_python_shebang(
    archive: &mut Archive,
    e: &ZipEntry,
    python: &str,
    ctx: &Ctx,
) -> Result<Option<Vec<u8>>, WheelError> {
    let mut file = archive.by_index(e.index).map_err(|err| ctx.zip(err))?;
    let mut script = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut script)
        .map_err(|err| ctx.io(err))?;
    if script != b"#!python" {
        return Ok(None);
    }
    if e.size > MAX_METADATA_FILE {
        return Err(ctx.invalid(format!(
            "{} is a `#!python` script of {} bytes; that is not a script",
            e.name, e.size
        )));
    }
    file.read_to_end(&mut script).map_err(|err| ctx.io(err))?;
    Ok(Some(replace_first_line(&script, &format_shebang(python))))
}

/// uv 0.13.9 replaces the whole first line, whatever follows `#!python` on it
/// (`#!python3 -u` too), and ends the new line with `\n`; `\r\n`, `\r` and `\n`
/// all end the old one (observed by installing such scripts with uv).
fn replace_first_line(script: &[u8], shebang: &str) -> Vec<u8> {
    let rest = match script.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(i) if script[i] == b'\r' && script.get(i + 1) == Some(&b'\n') => &script[i + 2..],
        Some(i) => &script[i + 1..],
        None => &[],
    };
    let mut out = Vec::with_capacity(shebang.len() + 1 + rest.len());
    out.extend_from_slice(shebang.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(rest);
    out
}

/// uv's (and distlib's) shebang: `#!<python>`, unless the line would be longer
/// than the kernel's 127 bytes or the path has a space, when `/bin/sh` re-execs it.
pub fn format_shebang(python: &str) -> String {
    if 2 + python.len() + 1 > 127 || python.contains(' ') {
        let quoted = python.replace('\'', r"'\''");
        return format!("#!/bin/sh\n'''exec' '{quoted}' \"$0\" \"$@\"\n' '''");
    }
    format!("#!{python}")
}

/// The launcher uv writes for an entry point (distlib's template without `import re`).
pub(super) fn launcher_script(script: &Script, shebang: &str) -> String {
    let Script {
        module, function, ..
    } = script;
    let import_name = script.import_name();
    format!(
        r#"{shebang}
# -*- coding: utf-8 -*-
import sys
from {module} import {import_name}
if __name__ == "__main__":
    if sys.argv[0].endswith("-script.pyw"):
        sys.argv[0] = sys.argv[0][:-11]
    elif sys.argv[0].endswith(".exe"):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit({function}())
"#
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx as ctx;
    use super::*;

    #[test]
    fn shebang_is_plain_unless_long_or_spaced() {
        assert_eq!(
            format_shebang("/app/.venv/bin/python"),
            "#!/app/.venv/bin/python"
        );
        assert_eq!(
            format_shebang("/my app/bin/python"),
            "#!/bin/sh\n'''exec' '/my app/bin/python' \"$0\" \"$@\"\n' '''"
        );
        let long = format!("/{}/bin/python", "x".repeat(120));
        assert!(format_shebang(&long).starts_with("#!/bin/sh\n'''exec' '/xxx"));
        assert_eq!(format_shebang("/it's/python"), "#!/it's/python");
        assert_eq!(
            format_shebang("/it's here/python"),
            "#!/bin/sh\n'''exec' '/it'\\''s here/python' \"$0\" \"$@\"\n' '''"
        );
    }

    #[test]
    fn python_scripts_lose_their_whole_first_line() {
        let sb = "#!/v/bin/python";
        assert_eq!(
            replace_first_line(b"#!python\nprint(1)\n", sb),
            b"#!/v/bin/python\nprint(1)\n"
        );
        assert_eq!(
            replace_first_line(b"#!pythonw -E\r\nx\r\n", sb),
            b"#!/v/bin/python\nx\r\n"
        );
        assert_eq!(
            replace_first_line(b"#!python3 -u\rx\n", sb),
            b"#!/v/bin/python\nx\n"
        );
        assert_eq!(replace_first_line(b"#!python", sb), b"#!/v/bin/python\n");
    }

    #[test]
    fn launcher_imports_the_first_attribute_and_calls_the_whole_path() {
        let s = parse_script("tool", "pkg.cli : app.main [extra1, extra2]").unwrap();
        assert_eq!(
            (s.module.as_str(), s.function.as_str(), s.import_name()),
            ("pkg.cli", "app.main", "app")
        );
        let text = launcher_script(&s, "#!/v/bin/python");
        assert!(text.starts_with(
            "#!/v/bin/python\n# -*- coding: utf-8 -*-\nimport sys\nfrom pkg.cli import app\n"
        ));
        assert!(text.ends_with("    sys.exit(app.main())\n"));
    }

    #[test]
    fn invalid_entry_points_are_refused() {
        for bad in [
            "",
            ":main",
            "pkg",
            "pkg:",
            "pkg:main [",
            "pkg:main []",
            "a b:main",
        ] {
            assert!(parse_script("x", bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn entry_points_ini_is_case_sensitive_and_fixes_pip3_launchers() {
        let ini = "[console_scripts]\nTool = a:b\npip3 = pip:main\npip3.8 = pip:main\n# comment\n[gui_scripts]\ng = a:gui\n[other]\nx = y:z\n";
        let (console, gui) = parse_entry_points(ini, 12, &ctx()).unwrap();
        let names: Vec<&str> = console.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Tool", "pip3", "pip3.12"]);
        assert_eq!(gui.len(), 1);
        assert!(parse_entry_points("[console_scripts]\npython3.12 = a:b\n", 12, &ctx()).is_err());
        assert!(parse_entry_points("[console_scripts]\nnovalue\n", 12, &ctx()).is_err());
    }

    #[test]
    fn uvs_reserved_launcher_names_are_refused_as_entry_points() {
        for name in [
            "python",
            "Python3",
            "python3.12t",
            "pythonw3.13t",
            "python.py",
            "PyPy3",
            "graalpy",
        ] {
            let ini = format!("[console_scripts]\n{name} = a:b\n");
            let err = parse_entry_points(&ini, 12, &ctx())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("would replace the venv's interpreter link"),
                "{name}: {err}"
            );
        }
        for name in ["python3.x", "python3.300", "python-config", "pypy4"] {
            let ini = format!("[console_scripts]\n{name} = a:b\n");
            assert!(parse_entry_points(&ini, 12, &ctx()).is_ok(), "{name}");
        }
        assert_eq!(
            reserved_data_script("PYTHON3.exe").as_deref(),
            Some("python3")
        );
        assert_eq!(reserved_data_script("python.exe.py"), None);
    }
}
