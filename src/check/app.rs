//! `app = "module.path:attr"`: the module must resolve where uvicorn will
//! look (the workdir or `app-dir`, site-packages, the projects' import roots),
//! and the attribute must be bound at the top level of that module.
//!
//! The attribute check reads the source without running it: a `def`,
//! `class`, assignment, `for`/`with … as` target or import that binds the name
//! outside any function or class body. When the module could bind it in a way
//! that cannot be seen (`from x import *`, a module `__getattr__`, writes to
//! `globals()`), the result is a warning instead of an error.

use super::{CheckError, ImageView};
use crate::layer::{Content, EntryKind, ImagePath, LayerPlan};
use crate::spec::Spec;

/// Where a module was found.
enum Found {
    /// A source file in the app layer (host path to read it).
    Source(ImagePath, std::path::PathBuf),
    /// Found, but its text cannot be read here (a package from a wheel, a
    /// namespace package, an extension module).
    Opaque,
    /// A symlink (the image path and its target) that leads to nothing in
    /// the image: Python would fail to import it.
    Dangling(ImagePath, String),
}

/// Returns a warning when the attribute cannot be checked statically.
pub fn check_app(spec: &Spec, file: &str, view: &ImageView) -> Result<Option<String>, CheckError> {
    // Without `app`, `cmd` starts a server of its own: checked as a program.
    let (Some(app), Some(shown)) = (&spec.app, spec.app_setting()) else {
        return Ok(None);
    };
    let Some((module, attr)) = app.split_once(':') else {
        return Ok(None);
    };
    let first_dir = match &spec.app_dir {
        Some(d) => view.workdir.join(d).ok(),
        None => Some(view.workdir.clone()),
    };
    let mut dirs: Vec<ImagePath> = first_dir.into_iter().collect();
    dirs.extend(view.import_roots.iter().cloned());
    let mut found = None;
    for dir in &dirs {
        if let Some(f) = find_in_plan(view.app, dir, module) {
            found = Some(f);
            break;
        }
    }
    if found.is_none() {
        let top = module.split('.').next().unwrap_or(module);
        let in_packages = view.packages.iter().any(|p| {
            p.top_level.iter().any(|n| {
                n == top
                    || n.strip_suffix(".py") == Some(top)
                    || (n.starts_with(&format!("{top}.")) && n.ends_with(".so"))
            })
        });
        if in_packages {
            found = Some(Found::Opaque);
        }
    }
    let Some(found) = found else {
        let mut looked: Vec<String> = dirs.iter().map(|d| d.absolute()).collect();
        looked.push(format!(
            "{} (installed packages)",
            view.site_packages.absolute()
        ));
        return Err(CheckError::AppModule {
            file: file.to_owned(),
            app: shown.clone(),
            module: module.to_owned(),
            looked: looked.join(", "),
            hint: hint_for(view, &dirs, module),
        });
    };
    let (path, host) = match found {
        Found::Source(path, host) => (path, host),
        Found::Opaque => return Ok(None),
        Found::Dangling(path, target) => {
            return Err(CheckError::AppDangling {
                file: file.to_owned(),
                app: shown.clone(),
                path: path.absolute(),
                target,
            })
        }
    };
    let attr_first = attr.split('.').next().unwrap_or(attr);
    // Read whole to look for the name: a module too large for that (a
    // hostile or generated one) is left to the container's start.
    const MAX_SCANNED: u64 = 16 << 20;
    if std::fs::metadata(&host).is_ok_and(|m| m.len() > MAX_SCANNED) {
        return Ok(Some(format!(
            "{file}: app = {:?}: {} is over {} MiB, too large to look for `{attr_first}` in; it is checked when the container starts",
            shown,
            path.absolute(),
            MAX_SCANNED >> 20
        )));
    }
    let text = std::fs::read_to_string(&host).unwrap_or_default();
    match defines(&text, attr_first) {
        Defined::Yes if attr_first == attr => {
            super::factory::check(spec, file, &path, &text, attr)
        }
        Defined::Yes => Ok(None),
        Defined::Unknown => Ok(Some(format!(
            "{file}: app = {:?}: cannot tell whether {} defines `{attr_first}` (it uses a star import, a module __getattr__ or globals()); it is checked when the container starts",
            shown,
            path.absolute()
        ))),
        Defined::No => Err(CheckError::AppAttribute {
            file: file.to_owned(),
            app: shown.clone(),
            path: path.absolute(),
            attr: attr_first.to_owned(),
        }),
    }
}

/// A near miss among the modules that are there, or the settings to check.
fn hint_for(view: &ImageView, dirs: &[ImagePath], module: &str) -> String {
    let parts: Vec<&str> = module.split('.').collect();
    for dir in dirs {
        // Walk down as far as the module's parts exist, then offer the
        // closest sibling of the first missing (or the last) part.
        let mut parent = dir.clone();
        for (i, part) in parts.iter().enumerate() {
            let siblings = children(view.app, &parent);
            let is_dir = siblings.iter().any(|s| s == part)
                && parent.join(part).is_ok_and(|p| {
                    matches!(view.app.get(&p).map(|e| &e.kind), Some(EntryKind::Dir))
                });
            if is_dir && i + 1 < parts.len() {
                if let Ok(p) = parent.join(part) {
                    parent = p;
                    continue;
                }
            }
            if i == 0 && !is_dir {
                // Nothing of the module here: try the next directory.
                let near = siblings
                    .iter()
                    .map(|s| s.strip_suffix(".py").unwrap_or(s))
                    .any(|s| distance(s, part) <= 2);
                if !near {
                    break;
                }
            }
            if let Some(best) = siblings
                .iter()
                .map(|s| s.strip_suffix(".py").unwrap_or(s))
                .filter(|s| !s.starts_with('.') && !s.starts_with("__"))
                .filter(|s| *s != *part)
                .min_by_key(|s| distance(s, part))
                .filter(|s| distance(s, part) <= 2)
            {
                let mut fixed: Vec<&str> = parts.clone();
                fixed[i] = best;
                return format!("did you mean `{}`?", fixed.join("."));
            }
            break;
        }
    }
    "check `app` (module.path:attribute, as uvicorn takes it) and `app-dir` (for a src layout the project must be a package with a build system, or set app-dir = \"src\")".into()
}

fn children(plan: &LayerPlan, dir: &ImagePath) -> Vec<String> {
    plan.entries()
        .filter(|(p, _)| p.parent().as_ref() == Some(dir))
        .map(|(p, _)| p.file_name().to_owned())
        .collect()
}

/// Optimal string alignment distance, for the "did you mean" hint.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// `a.b.c` under `dir` in the app layer: `a/b/c.py`, `a/b/c/__init__.py`,
/// an extension module `a/b/c.*.so`, or a namespace package directory `a/b/c`.
fn find_in_plan(plan: &LayerPlan, dir: &ImagePath, module: &str) -> Option<Found> {
    let parts: Vec<&str> = module.split('.').collect();
    let (last, parents) = parts.split_last()?;
    let mut at = dir.clone();
    for p in parents {
        at = at.join(p).ok()?;
        if !matches!(plan.get(&at)?.kind, EntryKind::Dir) {
            return None;
        }
    }
    let source = |p: &ImagePath| match plan.get(p).map(|e| &e.kind) {
        Some(EntryKind::Symlink { target }) => Some(match resolve_in_plan(plan, p) {
            Some(real) => match plan.get(&real).map(|e| &e.kind) {
                Some(EntryKind::File {
                    content: Content::HostFile(host),
                    ..
                }) => Found::Source(p.clone(), host.clone()),
                Some(EntryKind::File { .. }) => Found::Opaque,
                _ => Found::Dangling(p.clone(), target.clone()),
            },
            None => Found::Dangling(p.clone(), target.clone()),
        }),
        Some(EntryKind::File {
            content: Content::HostFile(host),
            ..
        }) => Some(Found::Source(p.clone(), host.clone())),
        Some(EntryKind::File { .. }) => Some(Found::Opaque),
        _ => None,
    };
    let file = at.join(&format!("{last}.py")).ok()?;
    if let Some(f) = source(&file) {
        return Some(f);
    }
    let package = at.join(last).ok()?;
    if matches!(plan.get(&package).map(|e| &e.kind), Some(EntryKind::Dir)) {
        let init = package.join("__init__.py").ok()?;
        return Some(source(&init).unwrap_or(Found::Opaque));
    }
    let ext = children(plan, &at)
        .into_iter()
        .any(|n| n.starts_with(&format!("{last}.")) && n.ends_with(".so"));
    ext.then_some(Found::Opaque)
}

/// `path` with every symlink on the way followed through the plan (at most
/// 40, as the kernel allows), as the image's filesystem would resolve it;
/// `None` when it leads out of the plan or loops. A directory the plan does
/// not list (the workdir's parents) is taken as a plain directory.
fn resolve_in_plan(plan: &LayerPlan, path: &ImagePath) -> Option<ImagePath> {
    let mut rest: std::collections::VecDeque<String> =
        path.as_str().split('/').map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = rest.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => done.push(part),
        }
        let at = ImagePath::new(&done.join("/")).ok()?;
        match plan.get(&at).map(|e| &e.kind) {
            Some(EntryKind::Symlink { target }) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target.split('/').rev() {
                    rest.push_front(t.to_string());
                }
            }
            Some(_) => {}
            None if rest.is_empty() => return None,
            None => {}
        }
    }
    ImagePath::new(&done.join("/")).ok()
}

#[derive(Debug, PartialEq, Eq)]
pub enum Defined {
    Yes,
    No,
    Unknown,
}

/// Whether `name` is bound at the top level of the Python module `text`.
pub fn defines(text: &str, name: &str) -> Defined {
    let mut unknown = false;
    // Indentation of the def/class whose body we are skipping.
    let mut skipping: Option<usize> = None;
    for line in logical_lines(text) {
        let indent = line.len() - line.trim_start().len();
        let stmt = line.trim();
        if stmt.is_empty() {
            continue;
        }
        if let Some(i) = skipping {
            if indent > i {
                continue;
            }
            skipping = None;
        }
        // A compound statement's first line may carry its body after the colon.
        let head = stmt.trim_start_matches('@');
        let (kw, rest) = split_word(head);
        if matches!(kw, "def" | "class" | "async") {
            if let Some(defined) = defined_by_def(kw, rest) {
                if defined == name {
                    return Defined::Yes;
                }
                if defined == "__getattr__" && indent == 0 {
                    unknown = true;
                }
                skipping = Some(indent);
            }
            continue;
        }
        match keyword_statement(kw, rest, stmt, name) {
            Some(Defined::Yes) => return Defined::Yes,
            Some(Defined::Unknown) => {
                unknown = true;
                continue;
            }
            Some(Defined::No) => continue,
            None => {}
        }
        if stmt.contains("globals()") {
            unknown = true;
        }
        if assigns(stmt, name) {
            return Defined::Yes;
        }
    }
    if unknown {
        Defined::Unknown
    } else {
        Defined::No
    }
}

/// The name a `def`, `class`, `async def` or decorated one binds; None for
/// another statement starting with `async`.
fn defined_by_def<'a>(kw: &str, rest: &'a str) -> Option<&'a str> {
    let (kw2, rest2) = if kw == "async" {
        split_word(rest)
    } else {
        (kw, rest)
    };
    (kw2 == "def" || kw2 == "class").then(|| split_ident(rest2).0)
}

/// What a statement that starts with keyword `kw` binds of `name` (`Unknown`
/// for `from m import *`); None when `kw` starts no such statement, so `stmt`
/// may be an assignment.
fn keyword_statement(kw: &str, rest: &str, stmt: &str, name: &str) -> Option<Defined> {
    let bound = match kw {
        "import" => imports(rest, name),
        "from" => return Some(imports_from(rest, name)),
        "for" => rest
            .split_once(" in ")
            .is_some_and(|(targets, _)| targets_bind(targets, name)),
        "with" | "except" => rest.split(" as ").skip(1).any(|part| {
            let (bound, _) = split_ident(part.trim_start_matches('('));
            bound == name
        }),
        "if" | "elif" | "else" | "try" | "finally" | "while" | "match" | "case" | "return"
        | "del" | "pass" | "global" | "nonlocal" | "assert" | "raise" => {
            // The body after a colon on the same line, e.g. `if x: app = y`.
            top_level_colon(stmt).is_some_and(|i| defines(&stmt[i + 1..], name) == Defined::Yes)
        }
        _ => return None,
    };
    Some(if bound { Defined::Yes } else { Defined::No })
}

/// `import a.b, c as d`: binds `a` and `d`.
fn imports(rest: &str, name: &str) -> bool {
    rest.split(',').any(|item| {
        let item = item.trim();
        let bound = match item.split_once(" as ") {
            Some((_, alias)) => alias.trim(),
            None => item.split('.').next().unwrap_or(item).trim(),
        };
        bound == name
    })
}

/// `from m import (a, b as c)`: binds `a` and `c`; `*` binds what `m` has.
fn imports_from(rest: &str, name: &str) -> Defined {
    let mut star = false;
    if let Some((_, names)) = rest.split_once(" import ") {
        let names = names.trim().trim_start_matches('(').trim_end_matches(')');
        for item in names.split(',') {
            let item = item.trim();
            if item == "*" {
                star = true;
            }
            let bound = match item.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => item,
            };
            if bound == name {
                return Defined::Yes;
            }
        }
    }
    if star {
        Defined::Unknown
    } else {
        Defined::No
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn split_ident(s: &str) -> (&str, &str) {
    split_word(s)
}

/// The characters of `s` outside brackets, with their byte offsets.
fn top_level(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut depth = 0i32;
    s.char_indices().filter(move |&(_, c)| match c {
        '(' | '[' | '{' => {
            depth += 1;
            false
        }
        ')' | ']' | '}' => {
            depth -= 1;
            false
        }
        _ => depth == 0,
    })
}

/// The first `:` outside brackets (the end of a compound statement's header).
fn top_level_colon(s: &str) -> Option<usize> {
    top_level(s).find(|&(_, c)| c == ':').map(|(i, _)| i)
}

/// An assignment statement (`a = b = …`, `a, b = …`, `a: T = …`, `a += …`)
/// whose targets include `name`.
fn assigns(stmt: &str, name: &str) -> bool {
    // Split on `=` at bracket depth 0 that are not part of ==, <=, >=, !=, :=.
    let bytes = stmt.as_bytes();
    let cuts: Vec<usize> = top_level(stmt)
        .filter(|&(i, c)| {
            let prev = if i > 0 { bytes[i - 1] } else { b' ' };
            let next = bytes.get(i + 1).copied().unwrap_or(b' ');
            c == '=' && next != b'=' && !matches!(prev, b'=' | b'<' | b'>' | b'!' | b':')
        })
        .map(|(i, _)| i)
        .collect();
    if cuts.is_empty() {
        // An annotation alone (`app: FastAPI`) binds nothing at run time.
        return false;
    }
    let mut start = 0;
    for cut in cuts {
        let mut target = &stmt[start..cut];
        // Augmented assignment (`+=`) and annotations (`a: T =`).
        target = target.trim_end_matches(|c: char| "+-*/%&|^@<>".contains(c));
        if let Some(i) = top_level_colon(target) {
            target = &target[..i];
        }
        if targets_bind(target, name) {
            return true;
        }
        start = cut + 1;
    }
    false
}

/// `a`, `a, b`, `(a, *b)`, `[a, b]`: whether `name` is one of the plain names.
fn targets_bind(targets: &str, name: &str) -> bool {
    targets
        .split(',')
        .map(|t| {
            t.trim()
                .trim_matches(|c| matches!(c, '(' | ')' | '[' | ']' | '*' | ' '))
        })
        .any(|t| t == name)
}

/// The source as logical lines: comments and string contents removed,
/// bracketed and backslash-continued lines joined, indentation kept.
pub(super) fn logical_lines(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\'' | '"' => {
                let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
                i += if triple { 3 } else { 1 };
                while i < chars.len() {
                    if chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if i + 2 < chars.len()
                            && chars[i] == c
                            && chars[i + 1] == c
                            && chars[i + 2] == c
                        {
                            i += 3;
                            break;
                        }
                    } else if chars[i] == c || chars[i] == '\n' {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                cur.push_str("\"\"");
                continue;
            }
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                cur.push(' ');
                i += 2;
                continue;
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = (depth - 1).max(0),
            '\n' => {
                if depth > 0 {
                    cur.push(' ');
                } else {
                    lines.push(std::mem::take(&mut cur));
                }
                i += 1;
                continue;
            }
            ';' if depth == 0 => {
                // `a = 1; app = 2`: a new statement at the same indentation.
                let indent: String = cur
                    .chars()
                    .take_while(|c| *c == ' ' || *c == '\t')
                    .collect();
                lines.push(std::mem::take(&mut cur));
                cur = indent;
                i += 1;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    lines.push(cur);
    lines
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::PackageFiles;
    use super::*;

    #[test]
    fn top_level_bindings_are_seen_and_nested_ones_are_not() {
        let yes = [
            "app = FastAPI()\n",
            "from fastapi import FastAPI\napp: FastAPI = FastAPI()\n",
            "def make():\n    return 1\n\napp = make()\n",
            "async def app(scope, receive, send):\n    pass\n",
            "class app:\n    pass\n",
            "from .server import (\n    other,\n    app,\n)\n",
            "from .server import api as app\n",
            "import app\n",
            "x, app = 1, 2\n",
            "try:\n    app = make()\nexcept ImportError:\n    app = None\n",
            "@decorator\ndef app():\n    pass\n",
            "a = 1; app = 2\n",
            "with ctx() as app:\n    pass\n",
            "app = Starlette(\n    routes=[],\n    debug=(1 == 2),\n)\n",
        ];
        let no = [
            "def make():\n    app = 1\n    return app\n",
            "class C:\n    app = 1\n",
            "\"\"\"\napp = 1\n\"\"\"\napi = 2\n",
            "# app = 1\napi = 2\n",
            "if app == 1:\n    pass\n",
            "print(app=1)\n",
            "application = 1\n",
            "app: FastAPI\n",
        ];
        let cases =
            (yes.iter().map(|s| (s, Defined::Yes))).chain(no.iter().map(|s| (s, Defined::No)));
        for (src, want) in cases {
            assert_eq!(defines(src, "app"), want, "{src}");
        }
        assert_eq!(defines("from .x import *\n", "app"), Defined::Unknown);
        assert_eq!(
            defines("def __getattr__(name):\n    return 1\n", "app"),
            Defined::Unknown
        );
    }

    #[test]
    fn a_misspelt_module_is_refused_by_name_with_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let plan = app_plan(
            dir.path(),
            &[
                ("src/pkg/__init__.py", ""),
                ("src/pkg/main.py", "app = 1\n"),
            ],
        );
        let base = NoBase(vec![]);
        let roots = [path("/app/src")];
        let v = view(&plan, &[], &roots, &base);
        let s = spec(dir.path(), "app = \"pkg.main:app\"\n");
        assert_eq!(check_app(&s, "imgbuild.toml", &v).unwrap(), None);

        let s = spec(dir.path(), "app = \"pkg.mian:app\"\n");
        let e = check_app(&s, "imgbuild.toml", &v).unwrap_err().to_string();
        assert!(
            e.contains("`pkg.mian`")
                && e.contains("did you mean `pkg.main`")
                && e.contains("imgbuild.toml"),
            "{e}"
        );

        let s = spec(dir.path(), "app = \"pkg.main:api\"\n");
        let e = check_app(&s, "imgbuild.toml", &v).unwrap_err().to_string();
        assert!(
            e.contains("/app/src/pkg/main.py") && e.contains("`api`"),
            "{e}"
        );
    }

    #[test]
    fn src_layout_needs_an_import_root_or_app_dir() {
        let dir = tempfile::tempdir().unwrap();
        let plan = app_plan(dir.path(), &[("src/pkg/main.py", "app = 1\n")]);
        let base = NoBase(vec![]);
        let v = view(&plan, &[], &[], &base);
        let s = spec(dir.path(), "app = \"pkg.main:app\"\n");
        assert!(check_app(&s, "imgbuild.toml", &v).is_err());
        let s = spec(dir.path(), "app = \"pkg.main:app\"\napp-dir = \"src\"\n");
        assert_eq!(check_app(&s, "imgbuild.toml", &v).unwrap(), None);
    }

    #[test]
    fn a_module_from_an_installed_package_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let plan = app_plan(dir.path(), &[]);
        let base = NoBase(vec![]);
        let packages = [PackageFiles {
            name: "svc".into(),
            version: "1".into(),
            top_level: vec!["svc".into()],
            bin: vec![],
        }];
        let v = view(&plan, &packages, &[], &base);
        let s = spec(dir.path(), "app = \"svc.api:app\"\n");
        assert_eq!(check_app(&s, "imgbuild.toml", &v).unwrap(), None);
    }

    #[test]
    fn a_dangling_symlink_as_the_app_module_is_refused_and_a_good_one_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = app_plan(dir.path(), &[("real.py", "api = 1\n")]);
        plan.symlink(path("/app/main.py"), "missing.py").unwrap();
        plan.symlink(path("/app/alias.py"), "./real.py").unwrap();
        plan.symlink(path("/app/loop.py"), "loop.py").unwrap();
        let base = NoBase(vec![]);
        let v = view(&plan, &[], &[], &base);

        let s = spec(dir.path(), "app = \"main:app\"\n");
        let e = check_app(&s, "imgbuild.toml", &v).unwrap_err().to_string();
        assert_eq!(
            e,
            "imgbuild.toml: app = \"main:app\": /app/main.py is a symlink to \"missing.py\", \
             which is not a file in the image, so the app cannot be imported; point the link \
             at the module or replace it with the file"
        );
        let s = spec(dir.path(), "app = \"loop:app\"\n");
        let e = check_app(&s, "imgbuild.toml", &v).unwrap_err().to_string();
        assert!(e.contains("/app/loop.py is a symlink"), "{e}");

        // A link that resolves is read through: its module is checked.
        let s = spec(dir.path(), "app = \"alias:api\"\n");
        assert_eq!(check_app(&s, "imgbuild.toml", &v).unwrap(), None);
        let s = spec(dir.path(), "app = \"alias:app\"\n");
        let e = check_app(&s, "imgbuild.toml", &v).unwrap_err().to_string();
        assert!(e.contains("/app/alias.py has no top-level `app`"), "{e}");
    }
}
