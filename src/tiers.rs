//! The layering rule, checked by reading the sources: every top-level module
//! sits in a tier, a module refers only to modules of its own tier or lower
//! ones (`use crate::x`, `crate::x::` paths, `use crate::{x, ...}`), and the
//! top-level modules form no cycle. Comments and string literals do not
//! count: a doc link names a module without depending on it. Test code counts,
//! since a test helper borrowed from a higher module is a dependency too.
//!
//! The tiers, lowest first (docs/architecture.md explains them):
//! - the vocabulary: types and small utilities every other module speaks,
//!   that import nothing but each other;
//! - the domains: each one thing imgbuild knows (a base image, Python in a
//!   root filesystem, lock files, registries, checks, deploy outputs, ...),
//!   built on the vocabulary and on each other, without cycles;
//! - the build pipeline, which puts the domains together;
//! - the entry points: the CLI, and the fuzzing targets' entry points.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each tier's modules, lowest tier first. A new top-level module must be
/// added here (the test says so), which is when its tier gets decided.
const TIERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "digest",
            "platform",
            "reference",
            "layer",
            "image",
            "store",
            "text",
            "project_file",
            "parallel",
            "http",
            "tee",
            "trace",
            "test_http",
        ],
    ),
    (
        "domains",
        &[
            "dockerignore",
            "sandbox",
            "spec",
            "python",
            "lock",
            "registry",
            "base",
            "fetch",
            "sdist",
            "check",
            "local",
            "app",
            "output",
            "attest",
            "deploy",
            "inspect",
            "init",
        ],
    ),
    ("build", &["build"]),
    ("entry points", &["cli", "fuzzing"]),
];

/// Files of the crate root that are not modules of their own.
const ROOT_FILES: &[&str] = &["lib.rs", "main.rs", "tiers.rs"];

/// One reference from a file to another top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    from: String,
    to: String,
    /// `src/...:line`, for messages.
    at: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules: `src/x.rs` and `src/x/`.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            out.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if !ROOT_FILES.contains(&name.as_str()) {
                out.insert(stem.to_string());
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn files_of(src: &Path, modules: &BTreeSet<String>) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let first = first.to_string_lossy();
            let module = first.strip_suffix(".rs").unwrap_or(&first);
            if path.extension().is_some_and(|e| e == "rs") && modules.contains(module) {
                out.push((module.to_string(), path));
            }
        }
    }
    out.sort();
    out
}

/// `source` with comments and the insides of string and character literals
/// blanked out (newlines kept, so line numbers still match).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let (len, keep) = match rest {
            ['/', '/', ..] => (
                rest.iter().position(|&c| c == '\n').unwrap_or(rest.len()),
                false,
            ),
            ['/', '*', ..] => (block_comment_len(rest), false),
            ['r', '"' | '#', ..] if !prev_is_ident(&chars, i) => match raw_string_len(rest) {
                Some(n) => (n, false),
                None => (1, true),
            },
            ['"', ..] => (string_len(rest), false),
            ['\'', '\\', ..] => (char_escape_len(rest), false),
            ['\'', _, '\'', ..] => (3, false),
            _ => (1, true),
        };
        for &c in &rest[..len] {
            out.push(if keep { c } else { blank(c) });
        }
        i += len;
    }
    out
}

/// `'\n'`, `'\''`, `'\u{..}'`: the escaped character, then up to the quote.
fn char_escape_len(s: &[char]) -> usize {
    s.iter()
        .skip(3)
        .position(|&c| c == '\'')
        .map_or(1, |p| p + 4)
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn block_comment_len(s: &[char]) -> usize {
    let mut depth = 0;
    let mut i = 0;
    while i + 1 < s.len() {
        match (s[i], s[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    s.len()
}

fn string_len(s: &[char]) -> usize {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// `r"..."` or `r#"..."#` (any number of `#`); None if `s` is not one.
fn raw_string_len(s: &[char]) -> Option<usize> {
    let hashes = s[1..].iter().take_while(|&&c| c == '#').count();
    if s.get(1 + hashes) != Some(&'"') {
        return None;
    }
    let mut i = 2 + hashes;
    while i < s.len() {
        if s[i] == '"'
            && s[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(s.len())
}

/// The top-level module names a piece of code refers to through `crate::`,
/// with their line numbers: `crate::x::...`, `crate::x` and each first name of
/// a `crate::{x::..., y}` group.
fn crate_references(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut name_start = Some(0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => name_start = Some(i + 1),
                    _ => {}
                }
                if let Some(start) = name_start {
                    let name = group[start..].trim_start();
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((name, line_of(at)));
                    }
                    name_start = None;
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((name, line_of(at)));
        }
    }
    out
}

fn imports() -> (BTreeSet<String>, Vec<Import>) {
    let src = src_dir();
    let modules = top_level_modules(&src);
    let mut out = Vec::new();
    for (from, path) in files_of(&src, &modules) {
        let code = code_only(&std::fs::read_to_string(&path).unwrap());
        let shown = Path::new("src").join(path.strip_prefix(&src).unwrap());
        for (to, line) in crate_references(&code) {
            if to != from && modules.contains(&to) {
                out.push(Import {
                    from: from.clone(),
                    to,
                    at: format!("{}:{line}", shown.display()),
                });
            }
        }
    }
    (modules, out)
}

fn tier_of(module: &str) -> Option<(usize, &'static str)> {
    TIERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(rank, (name, _))| (rank, *name))
}

/// Strongly connected components of more than one module (Tarjan's).
fn cycles(edges: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for &w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    self.low.insert(v, self.low[v].min(self.low[w]));
                } else if self.stack.contains(&w) {
                    self.low.insert(v, self.low[v].min(self.index[w]));
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|&x| x == v).unwrap();
                let component: Vec<String> = self.stack.drain(at..).map(str::to_string).collect();
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn every_top_level_module_has_exactly_one_tier() {
    let (modules, _) = imports();
    let listed: Vec<&str> = TIERS.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !listed.contains(&m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "top-level modules without a tier: {missing:?}; add each to TIERS in src/tiers.rs"
    );
    for m in &listed {
        assert!(
            modules.contains(*m),
            "TIERS lists {m}, which is not a module"
        );
        let times = listed.iter().filter(|x| *x == m).count();
        assert_eq!(times, 1, "TIERS lists {m} {times} times");
    }
}

#[test]
fn no_module_imports_a_higher_tier() {
    let (_, imports) = imports();
    let upward: Vec<String> = imports
        .iter()
        .filter_map(|i| {
            let (from_rank, from_tier) = tier_of(&i.from)?;
            let (to_rank, to_tier) = tier_of(&i.to)?;
            (to_rank > from_rank).then(|| {
                format!(
                    "{}: {} ({from_tier}) uses crate::{} ({to_tier})",
                    i.at, i.from, i.to
                )
            })
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports of a higher tier:\n{}",
        upward.join("\n")
    );
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (_, imports) = imports();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &imports {
        edges.entry(&i.from).or_default().insert(&i.to);
    }
    let found = cycles(&edges);
    // One place per arrow is enough to start from.
    let explain = |component: &Vec<String>| {
        let mut arrows: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for i in imports.iter().rev() {
            if component.contains(&i.from) && component.contains(&i.to) {
                arrows.insert((&i.from, &i.to), &i.at);
            }
        }
        let arrows: Vec<String> = arrows
            .iter()
            .map(|((from, to), at)| format!("  {at}: {from} uses crate::{to}"))
            .collect();
        format!("cycle among {component:?}:\n{}", arrows.join("\n"))
    };
    assert!(
        found.is_empty(),
        "{}",
        found.iter().map(explain).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn references_are_read_from_code_not_comments_or_strings() {
    let code = code_only(
        "use crate::{digest::Digest, layer};\n\
         // crate::build is only mentioned\n\
         let s = \"crate::cli\"; let r = r#\"crate::cli\"#; let c = '\"';\n\
         fn f() -> crate::store::Store { /* crate::cli */ todo!() }\n",
    );
    let names: Vec<(String, usize)> = crate_references(&code);
    let expected = [("digest", 1), ("layer", 1), ("store", 4)];
    assert_eq!(
        names,
        expected.map(|(n, l)| (n.to_string(), l)),
        "code as read: {code}"
    );
}

#[test]
#[ignore = "prints the module graph: cargo test --lib tiers::module_graph -- --ignored --nocapture"]
fn module_graph() {
    let (_, imports) = imports();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &imports {
        edges.entry(&i.from).or_default().insert(&i.to);
    }
    for (from, to) in edges {
        println!("{from} -> {}", to.into_iter().collect::<Vec<_>>().join(" "));
    }
}
