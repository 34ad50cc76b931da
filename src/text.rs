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

/// `items` joined with ", ", the first `shown` of them when there are more,
/// then how many were left out: a message stays readable however long the
/// list (a package with fifty wheels, a lock with hundreds of packages).
pub fn summarise<S: AsRef<str>>(items: &[S], shown: usize) -> String {
    let head: Vec<&str> = items.iter().take(shown).map(AsRef::as_ref).collect();
    match items.len().saturating_sub(shown) {
        0 => head.join(", "),
        more => format!("{}, … ({more} more)", head.join(", ")),
    }
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
    fn long_lists_are_cut_with_a_count() {
        let tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        assert_eq!(summarise(&tags[..3], 5), "t0, t1, t2");
        assert_eq!(summarise(&tags[..5], 5), "t0, t1, t2, t3, t4");
        assert_eq!(summarise(&tags, 3), "t0, t1, t2, … (37 more)");
        assert_eq!(summarise::<&str>(&[], 3), "");
    }

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
