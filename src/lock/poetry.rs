//! `poetry.lock` (lock-version 2.1 and later 2.x, written by Poetry 2): every
//! package carries the dependency groups that need it and the markers under
//! which they do, relative to the project, so installing is a filter and not
//! a graph walk. Extras show up in those markers as `extra == "NAME"`.
//!
//! Files carry a name and a hash but no URL: they are looked up on the
//! package's `[package.source]` index, or on the configured index
//! (see `lock::locate`). `directory` packages are local and not returned.

use super::{
    active_groups, group_key, hashed_package, listed_groups, Errors, LockError, LockOptions,
    LockResult, LockedPackage,
};
use crate::python::markers::{MarkerEnv, MarkerError};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<Package>,
    #[serde(default)]
    extras: BTreeMap<String, Vec<String>>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Metadata {
    lock_version: Option<String>,
    python_versions: Option<String>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    groups: Option<Vec<String>>,
    markers: Option<Markers>,
    #[serde(default)]
    files: Vec<File>,
    source: Option<Source>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Markers {
    All(String),
    PerGroup(BTreeMap<String, String>),
}

#[derive(Deserialize)]
struct File {
    file: String,
    hash: String,
}

#[derive(Deserialize)]
struct Source {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
}

pub fn parse(text: &str, path: &str, opts: &LockOptions, env: &MarkerEnv) -> LockResult {
    let at = Errors(path);
    let marker_err = |source| at.marker(source);
    let lock: PoetryLock = super::from_toml(text, path)?;
    check_target(&lock, at, env)?;
    check_requested(&lock, at, opts)?;
    let active = active_groups("main", &opts.groups, opts.include_dev);

    let mut out: Vec<LockedPackage> = Vec::new();
    for pkg in &lock.package {
        let package_err = |message| at.package(&pkg.name, pkg.version.as_deref(), message);
        let groups = listed_groups(&pkg.groups, "run `poetry lock` with Poetry 2 again")
            .map_err(package_err)?;
        if !needed(pkg, groups, &active, opts, env).map_err(marker_err)? {
            continue;
        }
        let Some(package) = locked_package(pkg).map_err(package_err)? else {
            continue;
        };
        if let Some(other) = out.iter().find(|p| p.name == package.name) {
            return Err(package_err(format!(
                "versions {} and {} both apply to this target; the lock looks inconsistent, run `poetry lock` again",
                other.version, package.version
            )));
        }
        out.push(package);
    }
    Ok(out)
}

/// The lock is one this imgbuild reads (lock-version 2.1 or later 2.x) and
/// its `python-versions` admits the target's Python.
fn check_target(lock: &PoetryLock, at: Errors, env: &MarkerEnv) -> Result<(), LockError> {
    let invalid = |message| at.invalid(message);
    let metadata = lock
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("has no [metadata] table; is this a poetry.lock?".into()))?;
    let version = metadata.lock_version.as_deref().unwrap_or("");
    let mut parts = version.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(2)), Some(Ok(minor))) if minor >= 1 => {}
        _ => {
            return Err(invalid(format!(
                "lock-version `{version}` is not supported; imgbuild reads lock-version 2.1 and later 2.x, which Poetry 2 writes with each package's groups and markers. Run `poetry lock` with Poetry 2"
            )))
        }
    }
    // Poetry's constraint syntax (`^3.11`) is not PEP 440; check only what parses.
    if let Some(pv) = &metadata.python_versions {
        if matches!(env.satisfies_requires_python(pv), Ok(false)) {
            return Err(invalid(format!(
                "python-versions `{pv}` excludes the base image's Python {}; use a base image whose Python matches, or change the project's Python requirement and lock again",
                env.python_full_version()
            )));
        }
    }
    Ok(())
}

/// Every extra and group asked for is one the project has.
fn check_requested(lock: &PoetryLock, at: Errors, opts: &LockOptions) -> Result<(), LockError> {
    let invalid = |message| at.invalid(message);
    let known_extras: BTreeSet<String> = lock.extras.keys().map(|e| group_key(e)).collect();
    if let Some(e) = opts
        .extras
        .iter()
        .find(|e| !known_extras.contains(&group_key(e)))
    {
        return Err(invalid(format!(
            "the project has no extra `{e}` (known: {}); fix the extras setting or lock again",
            list(&known_extras)
        )));
    }
    let known_groups: BTreeSet<String> = lock
        .package
        .iter()
        .flat_map(|p| p.groups.iter().flatten())
        .map(|g| group_key(g))
        .collect();
    // `dev` is the conventional default: asking for it when it is absent is harmless.
    if let Some(g) = opts
        .groups
        .iter()
        .find(|g| !known_groups.contains(&group_key(g)) && g.as_str() != "dev")
    {
        return Err(invalid(format!(
            "the project has no dependency group `{g}` (known: {}); fix the groups setting or lock again",
            list(&known_groups)
        )));
    }
    Ok(())
}

/// Whether one of the active groups among `groups` needs `pkg` on the
/// target: its marker for that group (or for all groups) holds, or it has none.
fn needed(
    pkg: &Package,
    groups: &[String],
    active: &BTreeSet<String>,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<bool, MarkerError> {
    for group in groups.iter().filter(|g| active.contains(&group_key(g))) {
        let marker = match &pkg.markers {
            None => None,
            Some(Markers::All(m)) => Some(m.as_str()),
            Some(Markers::PerGroup(m)) => m
                .iter()
                .find(|(g, _)| group_key(g) == group_key(group))
                .map(|(_, m)| m.as_str()),
        };
        if match marker {
            None => true,
            Some(m) => env.evaluate(m, &opts.extras)?,
        } {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The package with its files and where to find them; None for a local
/// (`directory`) package.
fn locked_package(pkg: &Package) -> Result<Option<LockedPackage>, String> {
    let kind = pkg.source.as_ref().map(|s| s.kind.as_str());
    if kind == Some("directory") {
        return Ok(None);
    }
    let source_url = pkg.source.as_ref().and_then(|s| s.url.clone());
    let (index, direct) = match kind {
        None => (None, None),
        Some("legacy") => (source_url, None),
        // A wheel or sdist named by URL or by path (relative to the lockfile).
        Some("url" | "file") => (None, source_url),
        _ => (None, None),
    };
    let files = pkg
        .files
        .iter()
        .map(|f| Ok((f.file.clone(), direct.clone(), f.hash.as_str())));
    hashed_package(
        &pkg.name,
        pkg.version.as_deref(),
        index,
        kind == Some("git"),
        files,
    )
    .map(Some)
}

fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::test_support::{
        assert_extras_and_groups_opt_in, assert_mentions, env, error_of, hash, hashed_file as file,
        options, pins,
    };
    use crate::lock::LockedFile;

    fn pkg(name: &str, version: &str, groups: &str, markers: &str, files: &str) -> String {
        format!(
            "[[package]]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"\"\noptional = false\npython-versions = \">=3.8\"\ngroups = [{groups}]\n{markers}files = [{files}]\n\n[package.dependencies]\nidna = \">=2.8\"\n\n"
        )
    }

    fn lock() -> String {
        let mut s = String::from("# This file is automatically @generated by Poetry 2.5.1 and should not be changed by hand.\n\n");
        let packages: [(&str, &str, &str, &str, String); 7] = [
            ("FastAPI", "0.165.0", "\"main\"", "", file("fastapi-0.165.0-py3-none-any.whl", 'a') + &file("fastapi-0.165.0.tar.gz", 'b')),
            ("uvloop", "0.23.0", "\"main\"", "markers = \"sys_platform != \\\"win32\\\"\"\n", file(
                "uvloop-0.23.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                'c',
            ) + &file(
                "uvloop-0.23.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                'd',
            )),
            ("colorama", "0.4.6", "\"main\", \"dev\"", "markers = \"sys_platform == \\\"win32\\\"\"\n", file("colorama-0.4.6-py2.py3-none-any.whl", 'e')),
            ("orjson", "3.11.0", "\"main\"", "markers = \"extra == \\\"json\\\"\"\n", file("orjson-3.11.0-cp311-cp311-manylinux_2_17_x86_64.whl", 'f')),
            ("iniconfig", "2.3.1", "\"dev\"", "", file("iniconfig-2.3.1-py3-none-any.whl", '1')),
            ("humanize", "4.14.0", "\"ops\", \"main\"", "markers = {main = \"sys_platform == \\\"win32\\\"\", ops = \"platform_machine == \\\"x86_64\\\"\"}\n", file("humanize-4.14.0-py3-none-any.whl", '2')),
            ("private-lib", "1.0", "\"main\"", "", file("private_lib-1.0-py3-none-any.whl", '3')),
        ];
        for (name, version, groups, extra, files) in packages {
            s += &pkg(name, version, groups, extra, &files);
        }
        s += "[package.source]\ntype = \"legacy\"\nurl = \"https://private.example/simple\"\nreference = \"private\"\n\n";
        s += &pkg("shared", "0.1.0", "\"main\"", "", "");
        s += "[package.source]\ntype = \"directory\"\nurl = \"libs/shared\"\n\n";
        s += "[extras]\njson = [\"orjson\"]\n\n[metadata]\nlock-version = \"2.1\"\npython-versions = \">=3.11\"\ncontent-hash = \"00\"\n";
        s
    }

    fn names(opts: &LockOptions, arch: &str) -> Vec<String> {
        pins(parse(&lock(), "poetry.lock", opts, &env(arch)))
    }

    /// `text` read for x86_64 with the default options.
    fn parse_default(text: &str) -> LockResult {
        parse(text, "poetry.lock", &LockOptions::default(), &env("x86_64"))
    }

    #[test]
    fn main_group_packages_whose_markers_hold_are_installed() {
        assert_eq!(
            names(&LockOptions::default(), "x86_64"),
            ["fastapi==0.165.0", "private-lib==1.0", "uvloop==0.23.0"]
        );
    }

    #[test]
    fn groups_and_extras_are_opt_in_and_per_group_markers_apply() {
        assert_extras_and_groups_opt_in(|opts| names(opts, "x86_64"));
        // The `ops` marker is for x86_64 only, and `main` wants it on Windows only.
        assert!(!names(&options(&["json"], &["ops"]), "aarch64")
            .iter()
            .any(|n| n.starts_with("humanize")));
    }

    #[test]
    fn files_have_no_url_and_keep_their_hash_and_source_index() {
        let got = parse_default(&lock()).unwrap();
        let fastapi = got.iter().find(|p| p.name == "fastapi").unwrap();
        assert!(fastapi.has_sdist);
        assert_eq!(fastapi.index, None);
        assert_eq!(
            fastapi.files,
            vec![LockedFile {
                filename: "fastapi-0.165.0-py3-none-any.whl".into(),
                url: None,
                sha256: hash('a'),
                size: None,
            }]
        );
        let private = got.iter().find(|p| p.name == "private-lib").unwrap();
        assert_eq!(
            private.index.as_deref(),
            Some("https://private.example/simple")
        );
        assert!(!got.iter().any(|p| p.name == "shared"));
    }

    #[test]
    fn unknown_extras_and_groups_are_errors_that_list_the_known_ones() {
        let err = error_of(parse(
            &lock(),
            "poetry.lock",
            &options(&["yaml"], &[]),
            &env("x86_64"),
        ));
        assert!(err.contains("no extra `yaml` (known: json)"), "{err}");
        let err = error_of(parse(
            &lock(),
            "poetry.lock",
            &options(&[], &["docs"]),
            &env("x86_64"),
        ));
        assert!(
            err.contains("group `docs` (known: dev, main, ops)"),
            "{err}"
        );
    }

    #[test]
    fn lock_version_2_0_and_other_pythons_are_refused() {
        let old = lock().replace("lock-version = \"2.1\"", "lock-version = \"2.0\"");
        let err = error_of(parse(
            &old,
            "app/poetry.lock",
            &LockOptions::default(),
            &env("x86_64"),
        ));
        assert!(
            err.starts_with("app/poetry.lock: lock-version `2.0` is not supported")
                && err.contains("Poetry 2"),
            "{err}"
        );
        let py = lock().replace(
            "python-versions = \">=3.11\"\ncontent",
            "python-versions = \">=3.12\"\ncontent",
        );
        let err = error_of(parse_default(&py));
        assert_mentions(&err, &[">=3.12", "3.11.2"]);
        // Poetry's caret syntax is not PEP 440 and is not checked.
        let caret = lock().replace(
            "python-versions = \">=3.11\"\ncontent",
            "python-versions = \"^3.11\"\ncontent",
        );
        assert!(parse_default(&caret).is_ok());
    }

    #[test]
    fn a_file_without_sha256_names_the_package() {
        let text = lock().replace(&format!("sha256:{}", hash('a')), "md5:0123");
        let err = error_of(parse_default(&text));
        assert_mentions(&err, &["package `FastAPI 0.165.0`", "no sha256"]);
    }
}
