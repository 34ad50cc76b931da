//! `pylock.toml` (PEP 751, lock-version 1.x): a flat list of packages, each
//! kept when its `marker` and `requires-python` hold for the target.
//!
//! `directory` packages are local (the project itself) and are not returned.

use super::{
    filename_from_url, same_name, Errors, Files, LockOptions, LockResult, LockedFile, LockedPackage,
};
use crate::python::markers::MarkerEnv;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PyLock {
    lock_version: String,
    requires_python: Option<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    extras: Vec<String>,
    #[serde(default)]
    dependency_groups: Vec<String>,
    #[serde(default)]
    default_groups: Vec<String>,
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Package {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    requires_python: Option<String>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<FileEntry>,
    sdist: Option<FileEntry>,
    #[serde(default)]
    wheels: Vec<FileEntry>,
    /// PEP 751: the index the package came from; where an sdist's build
    /// requirements are looked up first.
    index: Option<String>,
}

#[derive(Deserialize)]
struct FileEntry {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

pub fn parse(text: &str, path: &str, opts: &LockOptions, env: &MarkerEnv) -> LockResult {
    parse_into(text, path, opts, env, &mut Vec::new())
}

/// issue 8: the `directory` packages the target installs (workspace members,
/// path dependencies), with paths relative to the lockfile's directory.
pub fn local_packages(
    path: &std::path::Path,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<Vec<super::LocalPackage>, super::LockError> {
    let text = super::read_text(path)?;
    let mut locals = Vec::new();
    parse_into(&text, &path.display().to_string(), opts, env, &mut locals)?;
    Ok(locals)
}

fn parse_into(
    text: &str,
    path: &str,
    opts: &LockOptions,
    env: &MarkerEnv,
    locals: &mut Vec<super::LocalPackage>,
) -> LockResult {
    let at = Errors(path);
    let marker_err = |source| at.marker(source);
    let lock: PyLock = super::from_toml(text, path)?;
    check_target(&lock, at, opts, env)?;
    let groups = selected_groups(&lock, opts);
    let extras: BTreeSet<String> = opts.extras.iter().cloned().collect();

    let mut out: Vec<LockedPackage> = Vec::new();
    for pkg in &lock.packages {
        let package_err = |message| at.package(&pkg.name, None, message);
        if let Some(rp) = &pkg.requires_python {
            if !env.satisfies_requires_python(rp).map_err(marker_err)? {
                continue;
            }
        }
        if let Some(marker) = &pkg.marker {
            let plain = substitute_set_membership(marker, &extras, &groups);
            if !env.evaluate(&plain, &[]).map_err(marker_err)? {
                continue;
            }
        }
        if let Some(dir) = &pkg.directory {
            // issue 8: recorded for the local-project stage, never downloaded.
            locals.extend(local_package(pkg, dir));
            continue;
        }
        let package = locked_package(pkg).map_err(package_err)?;
        if out.iter().any(|p| p.name == package.name) {
            return Err(package_err(
                "appears more than once for this target (markers overlap); lock again".into(),
            ));
        }
        out.push(package);
    }
    Ok(out)
}

/// The lock as a whole is for this target: its version is read, its
/// `requires-python` and `environments` admit the target, and it knows the
/// extras and groups asked for.
fn check_target(
    lock: &PyLock,
    at: Errors,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<(), super::LockError> {
    let invalid = |message| at.invalid(message);
    let marker_err = |source| at.marker(source);
    if lock.lock_version.split('.').next() != Some("1") {
        return Err(invalid(format!(
            "lock-version {} is not supported by this imgbuild; it reads lock-version 1.x",
            lock.lock_version
        )));
    }
    if let Some(rp) = &lock.requires_python {
        if !env.satisfies_requires_python(rp).map_err(marker_err)? {
            return Err(invalid(format!(
                "requires-python `{rp}` excludes the base image's Python {}; use a base image whose Python matches, or lock again",
                env.python_full_version()
            )));
        }
    }
    if !lock.environments.is_empty() {
        let mut any = false;
        for e in &lock.environments {
            any |= env.evaluate(e, &[]).map_err(marker_err)?;
        }
        if !any {
            return Err(invalid(format!(
                "none of its `environments` ({}) matches the target; lock again for this platform",
                lock.environments.join("; ")
            )));
        }
    }
    if let Some(e) = opts.extras.iter().find(|e| !lock.extras.contains(e)) {
        return Err(invalid(format!(
            "the lock has no extra `{e}` (known: {}); fix the extras setting or lock again",
            list(&lock.extras)
        )));
    }
    if let Some(g) = opts
        .groups
        .iter()
        .find(|g| !lock.dependency_groups.contains(g))
    {
        return Err(invalid(format!(
            "the lock has no dependency group `{g}` (known: {}); fix the groups setting or lock again",
            list(&lock.dependency_groups)
        )));
    }
    Ok(())
}

/// The dependency groups markers test against: the lock's defaults (`dev`
/// only with `include_dev`) and those asked for.
fn selected_groups(lock: &PyLock, opts: &LockOptions) -> BTreeSet<String> {
    let mut groups: BTreeSet<String> = lock
        .default_groups
        .iter()
        .filter(|g| opts.include_dev || g.as_str() != "dev")
        .cloned()
        .collect();
    groups.extend(opts.groups.iter().cloned());
    if opts.include_dev {
        groups.insert("dev".into());
    }
    groups
}

/// A `directory` package as the local-project stage takes it; None when the
/// table names no `path`.
fn local_package(pkg: &Package, dir: &toml::Value) -> Option<super::LocalPackage> {
    let table = dir.as_table();
    let path = table
        .and_then(|t| t.get("path"))
        .and_then(toml::Value::as_str)?;
    Some(super::LocalPackage {
        name: super::normalise_name(&pkg.name).unwrap_or_else(|| pkg.name.clone()),
        version: pkg.version.clone(),
        path: path.into(),
        editable: table
            .and_then(|t| t.get("editable"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false),
    })
}

/// A pinned package with its wheels, archive and whether it has a source.
fn locked_package(pkg: &Package) -> Result<LockedPackage, String> {
    let version = pkg
        .version
        .clone()
        .ok_or("has no `version`; imgbuild installs only pinned packages")?;
    let mut files = Files {
        has_sdist: pkg.sdist.is_some() || pkg.vcs.is_some(),
        ..Files::default()
    };
    for w in &pkg.wheels {
        files.wheels.push(file(w)?);
    }
    // An sdist without a sha256 stays unbuildable (reported when no wheel fits).
    files.sdist = pkg
        .sdist
        .as_ref()
        .and_then(|s| file(s).ok())
        .filter(|f| super::is_sdist_name(&f.filename));
    if let Some(archive) = &pkg.archive {
        files.add(file(archive)?);
    }
    let index = pkg.index.clone().filter(|i| i.contains("://"));
    files.package(&pkg.name, version, index)
}

fn file(entry: &FileEntry) -> Result<LockedFile, String> {
    let location = entry.url.as_deref().or(entry.path.as_deref());
    let filename = entry
        .name
        .clone()
        .or_else(|| location.and_then(filename_from_url))
        .ok_or("has a file without `name`, `url` or `path`")?;
    let sha256 = entry
        .hashes
        .get("sha256")
        .filter(|h| super::is_sha256_hex(h))
        .map(|h| h.to_ascii_lowercase())
        .ok_or_else(|| {
            format!(
                "file {filename} has no valid `hashes.sha256`; imgbuild verifies every download"
            )
        })?;
    Ok(LockedFile {
        filename,
        url: entry.url.clone().or_else(|| entry.path.clone()),
        sha256,
        size: entry.size,
    })
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// PEP 751 markers may test `'x' in extras` and `'g' in dependency_groups`,
/// which PEP 508 evaluators do not know: each such test becomes a constant.
fn substitute_set_membership(
    marker: &str,
    extras: &BTreeSet<String>,
    groups: &BTreeSet<String>,
) -> String {
    const TRUE: &str = "python_version >= '0'";
    const FALSE: &str = "python_version < '0'";
    let mut out = String::with_capacity(marker.len());
    let mut rest = marker;
    while let Some(q) = rest.find(['\'', '"']) {
        let quote = rest[q..].chars().next().unwrap_or('\'');
        let Some(close) = rest[q + 1..].find(quote) else {
            break;
        };
        let value = &rest[q + 1..q + 1 + close];
        let after = &rest[q + 2 + close..];
        let mut words = after.trim_start();
        let negated = match words.strip_prefix("not") {
            Some(w) if w.starts_with(char::is_whitespace) => {
                words = w.trim_start();
                true
            }
            _ => false,
        };
        let set = words
            .strip_prefix("in")
            .filter(|w| w.starts_with(char::is_whitespace))
            .and_then(|w| {
                let w = w.trim_start();
                ["extras", "dependency_groups"]
                    .into_iter()
                    .find_map(|name| {
                        let tail = w.strip_prefix(name)?;
                        let boundary = !tail.starts_with(|c: char| c.is_alphanumeric() || c == '_');
                        boundary.then_some((name, tail))
                    })
            });
        match set {
            Some((name, tail)) => {
                let members = if name == "extras" { extras } else { groups };
                let holds = members.iter().any(|m| same_name(m, value)) != negated;
                out.push_str(&rest[..q]);
                out.push_str(if holds { TRUE } else { FALSE });
                rest = tail;
            }
            None => {
                out.push_str(&rest[..q + 2 + close]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::test_support::{assert_mentions, env, error_of, hash, options, uv_project};

    fn lock() -> String {
        format!(
            r#"lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.10"
extras = ["yaml"]
dependency-groups = ["dev", "lint"]
default-groups = ["dev"]

[[packages]]
name = "app"
directory = {{ path = ".", editable = true }}

[[packages]]
name = "Typing_Extensions"
version = "4.16.0"
marker = "python_full_version < '3.15'"
wheels = [{{ url = "https://files.example/typing_extensions-4.16.0-py3-none-any.whl", size = 45571, hashes = {{ sha256 = "{a}" }} }}]

[[packages]]
name = "tomli"
version = "2.5.0"
requires-python = ">=3.12"
wheels = [{{ url = "https://files.example/tomli-2.5.0-py3-none-any.whl", hashes = {{ sha256 = "{a}" }} }}]

[[packages]]
name = "pywin32"
version = "311"
marker = "sys_platform == 'win32'"
wheels = [{{ url = "https://files.example/pywin32-311-cp311-cp311-win_amd64.whl", hashes = {{ sha256 = "{a}" }} }}]

[[packages]]
name = "pyyaml"
version = "6.0.4"
marker = "'yaml' in extras"
sdist = {{ url = "https://files.example/pyyaml-6.0.4.tar.gz", hashes = {{ sha256 = "{b}" }} }}
wheels = [{{ name = "pyyaml-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl", url = "https://files.example/download?id=7", hashes = {{ sha256 = "{b}" }} }}]

[[packages]]
name = "pytest"
version = "9.2.0"
marker = "'dev' in dependency_groups"

[[packages.wheels]]
url = "https://files.example/pytest-9.2.0-py3-none-any.whl"
[packages.wheels.hashes]
sha256 = "{c}"
"#,
            a = hash('a'),
            b = hash('b'),
            c = hash('c')
        )
    }

    fn names(opts: &LockOptions) -> Vec<String> {
        parse(&lock(), "pylock.toml", opts, &env("x86_64"))
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn packages_are_filtered_by_marker_and_requires_python() {
        assert_eq!(names(&LockOptions::default()), ["typing-extensions"]);
    }

    #[test]
    fn directory_packages_are_local_packages() {
        let text = lock().replace(
            "[[packages]]\nname = \"tomli\"",
            "[[packages]]\nname = \"Member_Lib\"\nversion = \"0.2\"\nmarker = \"sys_platform == 'win32'\"\ndirectory = { path = \"libs/win\" }\n\n[[packages]]\nname = \"Shared\"\nversion = \"0.3\"\ndirectory = { path = \"../shared\" }\n\n[[packages]]\nname = \"tomli\"",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pylock.toml");
        std::fs::write(&path, text).unwrap();
        let got = local_packages(&path, &LockOptions::default(), &env("x86_64")).unwrap();
        let summary: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|l| (l.name.as_str(), l.path.to_str().unwrap(), l.editable))
            .collect();
        assert_eq!(
            summary,
            [("app", ".", true), ("shared", "../shared", false)]
        );
    }

    #[test]
    fn extras_and_groups_switch_set_markers() {
        let opts = LockOptions {
            extras: vec!["yaml".into()],
            include_dev: true,
            ..Default::default()
        };
        assert_eq!(names(&opts), ["typing-extensions", "pyyaml", "pytest"]);
    }

    #[test]
    fn wheel_names_come_from_name_or_url_with_sha256() {
        let opts = options(&["yaml"], &[]);
        let got = parse(&lock(), "pylock.toml", &opts, &env("x86_64")).unwrap();
        let yaml = got.iter().find(|p| p.name == "pyyaml").unwrap();
        assert!(yaml.has_sdist);
        assert_eq!(
            yaml.files[0].filename,
            "pyyaml-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl"
        );
        assert_eq!(yaml.files[0].sha256, hash('b'));
        let te = &got[0];
        assert_eq!(
            te.files[0].filename,
            "typing_extensions-4.16.0-py3-none-any.whl"
        );
        assert_eq!(te.files[0].size, Some(45571));
        assert!(!te.has_sdist);
    }

    #[test]
    fn a_missing_hash_and_a_wrong_version_are_errors() {
        let text = lock().replace(&format!("sha256 = \"{}\"", hash('c')), "md5 = \"x\"");
        let opts = LockOptions {
            include_dev: true,
            ..Default::default()
        };
        let err = error_of(parse(&text, "pylock.toml", &opts, &env("x86_64")));
        assert_mentions(&err, &["pytest", "hashes.sha256"]);

        let text = lock().replace("lock-version = \"1.0\"", "lock-version = \"2.0\"");
        let err = error_of(parse(&text, "pylock.toml", &opts, &env("x86_64")));
        assert!(err.contains("lock-version 2.0"), "{err}");

        let opts = options(&[], &["docs"]);
        let err = error_of(parse(&lock(), "pylock.toml", &opts, &env("x86_64")));
        assert!(err.contains("group `docs`"), "{err}");
    }

    #[test]
    fn set_membership_becomes_a_constant() {
        let extras: BTreeSet<String> = ["yaml".to_string()].into();
        let groups = BTreeSet::new();
        assert_eq!(
            substitute_set_membership(
                "'yaml' in extras and sys_platform == 'linux'",
                &extras,
                &groups
            ),
            "python_version >= '0' and sys_platform == 'linux'"
        );
        assert_eq!(
            substitute_set_membership("\"dev\" not in dependency_groups", &extras, &groups),
            "python_version >= '0'"
        );
        assert_eq!(
            substitute_set_membership("'a' in extras_x", &extras, &groups),
            "'a' in extras_x"
        );
    }

    /// A real `uv export --format pylock.toml` (needs network for `uv lock`).
    #[test]
    #[ignore]
    fn parses_a_real_uv_exported_pylock() {
        let dir = uv_project(
            "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"fastapi\", \"uvicorn[standard]\", \"tomli; python_version < '3.11'\"]\n[tool.uv]\npackage = false\n",
            &[
                &["lock", "--exclude-newer", "2026-11-01", "-q"],
                &["export", "--format", "pylock.toml", "-o", "pylock.toml", "-q"],
            ],
        );
        let text = std::fs::read_to_string(dir.path().join("pylock.toml")).unwrap();
        let got = parse(
            &text,
            "pylock.toml",
            &LockOptions::default(),
            &env("aarch64"),
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        for n in ["fastapi", "uvicorn", "uvloop", "pydantic-core"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(
            !names.contains(&"colorama") && !names.contains(&"tomli"),
            "{names:?}"
        );
    }
}
