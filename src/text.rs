//! Text for one-line messages.

use std::path::Path;

/// `s` on one line: each line trimmed, blank lines dropped, the rest joined
/// with "; " (parser messages often put their hint on a second line).
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `path` as messages show it: relative to `cwd` when it lies below it,
/// else as given.
pub fn shown(path: &Path, cwd: &Path) -> String {
    path.strip_prefix(cwd).unwrap_or(path).display().to_string()
}

/// An error and its causes on one line, outermost first, joined with ": ".
/// Each error's message says its own thing only, so nothing repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![one_line(&e.to_string())];
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(one_line(&c.to_string()));
        cause = c.source();
    }
    parts.join(": ")
}

/// [`shown`] against the process's working directory.
pub fn shown_here(path: &Path) -> String {
    shown(path, &std::env::current_dir().unwrap_or_default())
}

/// A byte count as people read it: `1.5 KiB`, `5.0 MiB`.
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading settings")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn one_line_joins_lines_with_semicolons() {
        assert_eq!(
            one_line("  invalid string\n  expected `\"`\n\n"),
            "invalid string; expected `\"`"
        );
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn error_chain_prints_each_cause_once_outermost_first() {
        let e = Outer(std::io::Error::other("disk on fire\nreally"));
        assert_eq!(error_chain(&e), "reading settings: disk on fire; really");
    }
}
