//! `.dockerignore` patterns with Docker's semantics, mirrored from
//! moby/patternmatcher (matching) and its `ignorefile` (reading), and from
//! BuildKit's fsutil (when an excluded directory must still be walked).
//!
//! - one pattern a line; a line starting with `#` is a comment; whitespace is
//!   trimmed; leading `/` is dropped and the pattern is cleaned like Go's
//!   `filepath.Clean` (so `./a//b/` is `a/b`);
//! - `!` marks an exception; the last pattern that matches decides;
//! - `*` and `?` never cross `/`; `**` matches any number of directories;
//!   `[...]` classes and `\` escapes as in Go's `filepath.Match`;
//! - a pattern that matches a directory excludes everything below it, unless a
//!   later exception re-includes something there.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// 1-based line of the pattern in the text given to [`Matcher::parse`], or
    /// its 1-based position in the list given to [`Matcher::from_lines`].
    pub line: usize,
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` followed by more pattern: `(.*/)?`, nothing or anything ending in `/`.
    AnyDirs,
    /// `**` at the end of a pattern that is not a plain prefix: `.*`.
    AnyTail,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// How a pattern is matched. The shortcuts are not just speed-ups: Docker's
/// `suffix` rule makes `**file` match `myfile`, and we keep that quirk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Glob(Vec<Token>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// Cleaned, without the leading `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob(tokens) => glob_match(tokens, path),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exception {
            write!(f, "!")?;
        }
        write!(f, "{}", self.text)
    }
}

/// Which patterns matched an ancestor directory; carried down a walk so each
/// entry is decided the way BuildKit decides it (`MatchesUsingParentResults`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// A pattern that matches exactly `rel_path` (relative, `/`-separated): glob
/// characters and a leading `!` or `#` are escaped, and whitespace, which a
/// pattern line loses at either end, is written as a class (`[ ]`).
pub fn literal_pattern(rel_path: &str) -> String {
    let mut escaped = String::new();
    for c in rel_path.chars() {
        if c.is_whitespace() {
            escaped.extend(['[', c, ']']);
            continue;
        }
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '!' | '#') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Matcher {
    /// Reads `.dockerignore` text: comments, blank lines and a UTF-8 BOM are
    /// skipped; errors give the 1-based line.
    pub fn parse(text: &str) -> Result<Matcher, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self::from_lines(text.lines())
    }

    /// Patterns given one per item (e.g. a settings file's `exclude` list),
    /// read with the same rules as the lines of a `.dockerignore`.
    pub fn from_lines<I, S>(lines: I) -> Result<Matcher, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for (i, line) in lines.into_iter().enumerate() {
            if let Some(p) = read_line(line.as_ref(), i + 1)? {
                patterns.push(p);
            }
        }
        Ok(Matcher { patterns })
    }

    /// Appends `other`'s patterns after ours, so they take precedence.
    pub fn extend(&mut self, other: Matcher) {
        self.patterns.extend(other.patterns);
    }

    #[cfg(test)]
    fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether a path (relative to the context, `/`-separated) is left out.
    /// Files and directories are matched alike, as in Docker, where a trailing
    /// `/` in a pattern is cleaned away; `is_dir` is accepted so callers need
    /// not care. A directory's result says whether its own entry is left out;
    /// ask [`may_reinclude_below`](Self::may_reinclude_below) whether to walk it.
    pub fn is_excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        let _ = is_dir;
        let path = clean(rel_path);
        if path == "." || self.patterns.is_empty() {
            return false;
        }
        let mut info = MatchInfo::default();
        let components: Vec<&str> = path.split('/').collect();
        for depth in 1..components.len() {
            let (_, next) = self.matches_with_parent(&components[..depth].join("/"), &info);
            info = next;
        }
        self.matches_with_parent(&path, &info).0
    }

    /// One step of a walk: decides `path` given its parent's [`MatchInfo`]
    /// (the default value for entries at the top of the context), and returns
    /// the info to hand to its children.
    pub fn matches_with_parent(&self, path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let have_parent =
            parent.parent_matched.len() == self.patterns.len() && !self.patterns.is_empty();
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = have_parent && parent.parent_matched[i];
            if !hit {
                // An inclusion cannot change an excluded path, nor an exception an included one.
                if pattern.exception != matched {
                    continue;
                }
                hit = pattern.matches(path);
                if !hit && !have_parent {
                    hit = ancestors(path).any(|dir| pattern.matches(dir));
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.exception;
            }
        }
        (matched, info)
    }

    /// Whether a walk must still enter an excluded directory because an
    /// exception could re-include something inside it. BuildKit's rule: yes
    /// whenever an exception has wildcards (other than a trailing `/*` or
    /// `/**`); otherwise only if an exception names a path inside `rel_dir`.
    pub fn may_reinclude_below(&self, rel_dir: &str) -> bool {
        let dir_slash = format!("{}/", clean(rel_dir));
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let literal = p
                .text
                .strip_suffix("/**")
                .or_else(|| p.text.strip_suffix("/*"))
                .unwrap_or(&p.text);
            literal.contains(['*', '[', ']', '?', '^', '\\'])
                || format!("{literal}/").starts_with(&dir_slash)
        })
    }
}

/// The proper ancestors of a `/`-separated path, outermost first.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// One line of an ignore file, as moby's `ignorefile.ReadAll` then
/// `patternmatcher.New` read it. `None` for comments and blank lines.
fn read_line(raw: &str, line: usize) -> Result<Option<Pattern>, PatternError> {
    // A comment only when `#` is the very first character, as in Docker.
    if raw.starts_with('#') {
        return Ok(None);
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let err = |reason| PatternError {
        line,
        pattern: trimmed.to_string(),
        reason,
    };
    let (exception, body) = match trimmed.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, trimmed),
    };
    if body.is_empty() {
        return Err(err("an exception `!` needs a pattern after it"));
    }
    let mut text = clean(body);
    if text.len() > 1 && text.starts_with('/') {
        text.remove(0);
    }
    let kind = compile(&text).map_err(err)?;
    Ok(Some(Pattern {
        text,
        exception,
        kind,
    }))
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|last| *last != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Translates a cleaned pattern the way patternmatcher's `compile` does,
/// choosing the same exact/prefix/suffix/glob kind, after checking the syntax
/// the way Go's `filepath.Match` does.
fn compile(pattern: &str) -> Result<Kind, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Glob,
    }
    let mut detected = Detected::Exact;
    let mut pos = 0;
    let mut first = true;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        tokens.push(Token::AnyTail);
                        detected = Detected::Glob;
                    }
                } else {
                    tokens.push(Token::AnyDirs);
                    detected = Detected::Glob;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                detected = Detected::Glob;
            }
            '?' => {
                tokens.push(Token::One);
                detected = Detected::Glob;
            }
            '\\' => {
                let next = chars.get(pos).ok_or("a trailing \\ escapes nothing")?;
                pos += 1;
                tokens.push(Token::Lit(*next));
                detected = Detected::Glob;
            }
            '[' => {
                let (class, next) = parse_class(&chars, pos)?;
                tokens.push(class);
                pos = next;
                detected = Detected::Glob;
            }
            ']' => {
                tokens.push(Token::Lit(']'));
                detected = Detected::Glob;
            }
            c => tokens.push(Token::Lit(c)),
        }
        first = false;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(pattern[2..].to_string()),
        Detected::Glob => Kind::Glob(tokens),
    })
}

/// A character class starting just after `[`, with Go's `filepath.Match`
/// grammar: optional `^`, then ranges `a` or `a-z`; `-` and `]` must be
/// escaped where they would be read as a range end.
fn parse_class(chars: &[char], mut pos: usize) -> Result<(Token, usize), &'static str> {
    let mut negated = false;
    if chars.get(pos) == Some(&'^') {
        negated = true;
        pos += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(pos) == Some(&']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, pos + 1));
        }
        let (lo, next) = class_char(chars, pos)?;
        pos = next;
        let mut hi = lo;
        if chars.get(pos) == Some(&'-') {
            let (h, next) = class_char(chars, pos + 1)?;
            hi = h;
            pos = next;
        }
        if hi < lo {
            return Err("a range in a character class runs backwards");
        }
        ranges.push((lo, hi));
    }
}

fn class_char(chars: &[char], mut pos: usize) -> Result<(char, usize), &'static str> {
    match chars.get(pos) {
        None => return Err("a character class is not closed with ]"),
        Some('-') | Some(']') => {
            return Err(
                "a character class has a bare - or ] where a character belongs; escape it with \\",
            )
        }
        Some('\\') => pos += 1,
        Some(_) => {}
    }
    let c = *chars
        .get(pos)
        .ok_or("a character class is not closed with ]")?;
    pos += 1;
    if pos >= chars.len() {
        return Err("a character class is not closed with ]");
    }
    Ok((c, pos))
}

fn class_matches(negated: bool, ranges: &[(char, char)], c: char) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != negated
}

/// Runs the pattern as a small NFA over the path's characters: the set of
/// token positions reachable so far, so `**` never backtracks exponentially.
fn glob_match(tokens: &[Token], path: &str) -> bool {
    let n = tokens.len();
    let closure = |states: &mut Vec<bool>| {
        for i in 0..n {
            if states[i] && matches!(tokens[i], Token::Star | Token::AnyDirs | Token::AnyTail) {
                states[i + 1] = true;
            }
        }
    };
    let mut states = vec![false; n + 1];
    states[0] = true;
    closure(&mut states);
    for c in path.chars() {
        let mut next = vec![false; n + 1];
        for i in 0..n {
            if !states[i] {
                continue;
            }
            match &tokens[i] {
                Token::Lit(l) => next[i + 1] |= *l == c,
                Token::One => next[i + 1] |= c != '/',
                Token::Class { negated, ranges } => {
                    next[i + 1] |= class_matches(*negated, ranges, c)
                }
                Token::Star => next[i] |= c != '/',
                Token::AnyTail => next[i] = true,
                Token::AnyDirs => {
                    next[i] = true;
                    next[i + 1] |= c == '/';
                }
            }
        }
        closure(&mut next);
        if !next.iter().any(|s| *s) {
            return false;
        }
        states = next;
    }
    states[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> Matcher {
        Matcher::from_lines(patterns).unwrap()
    }

    /// patternmatcher's `Matches`-style check: does `path` end up excluded?
    fn excluded(patterns: &[&str], path: &str) -> bool {
        m(patterns).is_excluded(path, false)
    }

    /// Only the pattern itself, no parent directories (`MatchesExact`).
    fn exact(pattern: &str, path: &str) -> bool {
        m(&[pattern]).patterns()[0].matches(path)
    }

    #[test]
    fn a_literal_pattern_excludes_exactly_its_path_even_with_whitespace_at_the_ends() {
        // Pattern lines are trimmed, so `literal_pattern` writes whitespace as a
        // class; found by the `dockerignore` fuzz target.
        for path in [
            "out.tar ",
            " lead/x",
            "a\tb\t",
            "[x]!#*?.txt",
            "dir/ sub /f",
        ] {
            let m = Matcher::from_lines([literal_pattern(path)]).unwrap();
            assert!(m.is_excluded(path, false), "{path:?}");
            assert!(!m.is_excluded(&format!("{path}x"), false), "{path:?}x");
        }
        assert!(!Matcher::from_lines([literal_pattern("out.tar ")])
            .unwrap()
            .is_excluded("out.tar", false));
    }

    #[test]
    fn reads_lines_like_ignorefile() {
        let text = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n  # not a comment\n./b/../c/\n";
        let matcher = Matcher::parse(text).unwrap();
        let shown: Vec<String> = matcher.patterns().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "# not a comment",
                "c"
            ]
        );
    }

    #[test]
    fn a_lone_exclamation_mark_is_an_error_naming_its_line() {
        let err = Matcher::parse("docs\n\n! \n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.to_string().starts_with("line 3: invalid pattern \"!\""),
            "{err}"
        );
        assert!(Matcher::parse("!").is_err());
    }

    #[test]
    fn simple_patterns_and_exceptions() {
        assert!(excluded(&["*"], "fileutils.go"));
        assert!(excluded(&["*.go"], "fileutils.go"));
        assert!(excluded(&["!fileutils.go", "*.go"], "fileutils.go"));
        assert!(!excluded(&["*.go", "!fileutils.go"], "fileutils.go"));
        assert!(!excluded(&["docs", "!docs/README.md"], "docs/README.md"));
        assert!(!excluded(&["docs/", "!docs/README.md"], "docs/README.md"));
        assert!(!excluded(&["docs/*", "!docs/README.md"], "docs/README.md"));
        assert!(!excluded(&["*.go"], "."));
        assert!(!excluded(&[], "any/path/there"));
    }

    #[test]
    fn a_matched_directory_excludes_everything_below() {
        assert!(excluded(&["docs"], "docs/a/b/c.md"));
        assert!(excluded(&["a*"], "ab/c"));
        assert!(excluded(
            &["**/node_modules"],
            "web/node_modules/x/index.js"
        ));
        assert!(!excluded(&["docs"], "docsite/index.md"));
    }

    // patternmatcher_test.go TestMatches: (pattern, text, exact match, match with parents).
    #[test]
    fn mirrors_patternmatcher_matches_table() {
        const E: (bool, bool) = (true, true);
        const I: (bool, bool) = (false, true);
        const F: (bool, bool) = (false, false);
        let cases: &[(&str, &str, (bool, bool))] = &[
            ("**", "file", E),
            ("**", "file/", E),
            ("**/", "file", E),
            ("**/", "file/", E),
            ("**", "/", E),
            ("**/", "/", E),
            ("**", "dir/file", E),
            ("**/", "dir/file", E),
            ("**", "dir/file/", E),
            ("**/", "dir/file/", E),
            ("**/**", "dir/file", E),
            ("**/**", "dir/file/", E),
            ("dir/**", "dir/file", E),
            ("dir/**", "dir/file/", E),
            ("dir/**", "dir/dir2/file", E),
            ("dir/**", "dir/dir2/file/", E),
            ("**/dir", "dir", E),
            ("**/dir", "dir/file", I),
            ("**/dir2/*", "dir/dir2/file", E),
            ("**/dir2/*", "dir/dir2/file/", I),
            ("**/dir2/**", "dir/dir2/dir3/file", E),
            ("**/dir2/**", "dir/dir2/dir3/file/", E),
            ("**file", "file", E),
            ("**file", "dir/file", E),
            ("**/file", "dir/file", E),
            ("**file", "dir/dir/file", E),
            ("**/file", "dir/dir/file", E),
            ("**/file*", "dir/dir/file", E),
            ("**/file*", "dir/dir/file.txt", E),
            ("**/file*txt", "dir/dir/file.txt", E),
            ("**/file*.txt", "dir/dir/file.txt", E),
            ("**/file*.txt*", "dir/dir/file.txt", E),
            ("**/**/*.txt", "dir/dir/file.txt", E),
            ("**/**/*.txt2", "dir/dir/file.txt", F),
            ("**/*.txt", "file.txt", E),
            ("**/**/*.txt", "file.txt", E),
            ("a**/*.txt", "a/file.txt", E),
            ("a**/*.txt", "a/dir/file.txt", E),
            ("a**/*.txt", "a/dir/dir/file.txt", E),
            ("a/*.txt", "a/dir/file.txt", F),
            ("a/*.txt", "a/file.txt", E),
            ("a/*.txt**", "a/file.txt", E),
            ("a[b-d]e", "ae", F),
            ("a[b-d]e", "ace", E),
            ("a[b-d]e", "aae", F),
            ("a[^b-d]e", "aze", E),
            (".*", ".foo", E),
            (".*", "foo", F),
            ("abc.def", "abcdef", F),
            ("abc.def", "abc.def", E),
            ("abc.def", "abcZdef", F),
            ("abc?def", "abcZdef", E),
            ("abc?def", "abcdef", F),
            ("**/foo/bar", "foo/bar", E),
            ("**/foo/bar", "dir/foo/bar", E),
            ("**/foo/bar", "dir/dir2/foo/bar", E),
            ("abc/**", "abc", F),
            ("abc/**", "abc/def", E),
            ("abc/**", "abc/def/ghi", E),
            ("**/.foo", ".foo", E),
            ("**/.foo", "bar.foo", F),
            ("a(b)c/def", "a(b)c/def", E),
            ("a(b)c/def", "a(b)c/xyz", F),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", E),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                E,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                E,
            ),
            ("a\\\\", "a\\", E),
            ("a\\*b", "a*b", E),
        ];
        for &(pattern, text, (want_exact, want_parents)) in cases {
            assert_eq!(
                exact(pattern, text),
                want_exact,
                "exact: pattern={pattern:?} text={text:?}"
            );
            assert_eq!(
                excluded(&[pattern], text),
                want_parents,
                "with parents: pattern={pattern:?} text={text:?}"
            );
        }
    }

    #[test]
    fn mirrors_patternmatcher_multi_pattern_table() {
        assert!(!excluded(
            &["**", "!util/docker/web"],
            "util/docker/web/foo"
        ));
        assert!(excluded(
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo"
        ));
        let whl = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";
        assert!(!excluded(
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"
            ],
            whl
        ));
        assert!(!excluded(&["**", "!dist/*.whl"], whl));
    }

    #[test]
    fn decides_like_buildkit_with_parent_results() {
        // The exception `!a` is skipped at `a` (nothing to undo there), so it
        // does not rescue `a/b` later: BuildKit's parent-result rule.
        assert!(excluded(&["a/b", "!a"], "a/b"));
        // A walk that carries MatchInfo down gets the same answers.
        let matcher = m(&["docs", "!docs/keep", "**/*.tmp"]);
        let (docs, info) = matcher.matches_with_parent("docs", &MatchInfo::default());
        assert!(docs);
        assert!(!matcher.matches_with_parent("docs/keep", &info).0);
        assert!(matcher.matches_with_parent("docs/other", &info).0);
        let (keep, keep_info) = matcher.matches_with_parent("docs/keep", &info);
        assert!(!keep);
        assert!(!matcher.matches_with_parent("docs/keep/x.md", &keep_info).0);
        assert!(matcher.matches_with_parent("docs/keep/x.tmp", &keep_info).0);
    }

    // Go's filepath.Match table, as patternmatcher_test.go TestMatch uses it.
    #[test]
    fn mirrors_go_filepath_match_table() {
        let ok: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
        ];
        for &(pattern, text, want) in ok {
            assert_eq!(
                excluded(&[pattern], text),
                want,
                "pattern={pattern:?} text={text:?}"
            );
        }
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[z-a]",
        ] {
            let err = Matcher::from_lines([bad]).unwrap_err();
            assert_eq!(err.pattern, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn chooses_the_same_match_kind_as_patternmatcher() {
        let kind = |p: &str| m(&[p]).patterns()[0].kind.clone();
        assert!(matches!(kind("**"), Kind::Suffix(s) if s.is_empty()));
        assert!(matches!(kind("dir/**"), Kind::Prefix(s) if s == "dir/"));
        assert!(matches!(kind("**/dir"), Kind::Suffix(s) if s == "/dir"));
        assert!(matches!(kind("**file"), Kind::Suffix(s) if s == "file"));
        assert!(matches!(kind("a.b(c)"), Kind::Exact));
        assert!(matches!(kind("**/**"), Kind::Glob(_)));
        assert!(matches!(kind("**/dir2/*"), Kind::Glob(_)));
        // The suffix quirk: `**file` also matches `myfile`, as in Docker.
        assert!(exact("**file", "dir/myfile"));
    }

    #[test]
    fn cleans_like_go() {
        for (input, want) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a//b/./c", "a/b/c"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("a/b/../../c", "c"),
            ("/", "/"),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn walks_excluded_dirs_only_when_an_exception_may_apply() {
        assert!(!m(&["docs"]).may_reinclude_below("docs"));
        assert!(m(&["docs", "!docs/README.md"]).may_reinclude_below("docs"));
        assert!(!m(&["docs", "!other/README.md"]).may_reinclude_below("docs"));
        assert!(m(&["build", "!build/keep/**"]).may_reinclude_below("build/keep"));
        // Wildcards in any exception could match anywhere: walk everything excluded.
        assert!(m(&["docs", "!**/*.md"]).may_reinclude_below("docs"));
        assert!(m(&["docs", "!other/*.md"]).may_reinclude_below("docs"));
    }

    #[test]
    fn long_paths_with_many_stars_stay_fast() {
        let pattern = "**/a*a*a*a*a*a*a*a*b";
        let path = format!("{}/{}", "d/".repeat(50), "a".repeat(200));
        assert!(!excluded(&[pattern], &path));
    }
}
