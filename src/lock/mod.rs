//! Lockfiles: each format becomes the same `LockedPackage` model, already
//! narrowed to the packages the target image installs.
//!
//! Local packages (the project itself, workspace members, `directory`,
//! `editable` and `virtual` sources) are never part of the result: they are
//! not downloaded. [`load_local`] lists them for the local-project stage
//! (src/local.rs), which installs them from their `pyproject.toml`.

pub mod index;
pub mod pylock;
pub mod requirements;
pub mod select;
pub mod uv;

use crate::python::markers::{MarkerEnv, MarkerError};
use std::path::Path;
use thiserror::Error;

/// One package to install, with every file the lock allows for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedPackage {
    /// PEP 503 normalised.
    pub name: String,
    pub version: String,
    pub files: Vec<LockedFile>,
    /// The lock also has a source distribution (which imgbuild cannot build).
    pub has_sdist: bool,
}

/// A package the lock installs from the local file system: the project, a
/// workspace member, a path dependency (issue 8). Built by
/// [`crate::python::project`], never downloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPackage {
    /// PEP 503 normalised.
    pub name: String,
    /// As the lock records it (a dynamic version is only known there).
    pub version: Option<String>,
    /// The project directory, relative to the lockfile's directory.
    pub path: std::path::PathBuf,
    pub editable: bool,
}

/// The local packages the target installs, for the lock formats that record
/// them: uv.lock, pylock.toml `directory` packages, requirements `-e` lines.
pub fn load_local(
    path: &Path,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<Vec<LocalPackage>, LockError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "uv.lock" {
        uv::local_packages(path, opts, env)
    } else if is_pylock_name(name) {
        pylock::local_packages(path, opts, env)
    } else if name.ends_with(".txt") {
        requirements::local_packages(path, env)
    } else {
        Ok(Vec::new())
    }
}

/// [`load`] and [`load_local`] together; uv.lock is read and walked once.
pub fn load_with_local(
    path: &Path,
    opts: &LockOptions,
    env: &MarkerEnv,
    index: &dyn SimpleIndex,
) -> Result<(Vec<LockedPackage>, Vec<LocalPackage>), LockError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name != "uv.lock" {
        return Ok((load(path, opts, env, index)?, load_local(path, opts, env)?));
    }
    let (mut packages, locals) = uv::load_with_local(path, opts, env)?;
    packages.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok((packages, locals))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedFile {
    pub filename: String,
    /// Where to get the file: a URL, or a path relative to the lockfile's
    /// directory (pylock `path`, uv `path`); None when the lock gives neither.
    pub url: Option<String>,
    /// Lower-case hex.
    pub sha256: String,
    pub size: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockOptions {
    /// Dependency groups to install besides the main dependencies.
    pub groups: Vec<String>,
    /// Extras of the project to activate.
    pub extras: Vec<String>,
    /// Install the `dev` group too (uv's default group). Off by default for images.
    pub include_dev: bool,
    /// Index for requirements.txt files; beats `--index-url` in the file.
    pub index_url: Option<String>,
}

/// A file on a PEP 691 simple index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    /// Lower-case hex; None when the index publishes no sha256.
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// Where requirements.txt files find their download URLs.
pub trait SimpleIndex {
    fn project_files(&self, index_url: &str, project: &str) -> Result<Vec<IndexFile>, LockError>;
}

#[derive(Debug, Error)]
pub enum LockError {
    #[error("cannot read lockfile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {reason}")]
    Toml { path: String, reason: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: package `{package}`: {message}")]
    Package {
        path: String,
        package: String,
        message: String,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Marker {
        path: String,
        #[source]
        source: MarkerError,
    },
    #[error("`{path}` is not a lockfile imgbuild reads: use uv.lock, pylock.toml (or pylock.NAME.toml), or a requirements .txt file with hashes")]
    UnknownFormat { path: String },
    #[error("package index {url}: {message}")]
    Index { url: String, message: String },
}

/// Reads the lockfile at `path` and returns the packages to install for the
/// target described by `env`, sorted by name.
/// A lockfile's text, with an error that names it.
pub(crate) fn read_text(path: &Path) -> Result<String, LockError> {
    std::fs::read_to_string(path).map_err(|source| LockError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn load(
    path: &Path,
    opts: &LockOptions,
    env: &MarkerEnv,
    index: &dyn SimpleIndex,
) -> Result<Vec<LockedPackage>, LockError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut packages = if name == "uv.lock" {
        uv::load(path, opts, env)?
    } else if is_pylock_name(name) {
        pylock::load(path, opts, env)?
    } else if name.ends_with(".txt") {
        requirements::load(path, opts, env, index, &|k| std::env::var(k).ok())?
    } else {
        return Err(LockError::UnknownFormat {
            path: path.display().to_string(),
        });
    };
    packages.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(packages)
}

/// PEP 751: `pylock.toml` or `pylock.NAME.toml` where NAME has no dot.
fn is_pylock_name(name: &str) -> bool {
    match name
        .strip_prefix("pylock.")
        .and_then(|r| r.strip_suffix("toml"))
    {
        Some("") => true,
        Some(middle) => {
            middle.ends_with('.') && !middle[..middle.len() - 1].contains('.') && middle.len() > 1
        }
        None => false,
    }
}

/// PEP 503: lower case, runs of `-`, `_` and `.` become one `-`.
pub fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The last path segment of a URL, percent-decoded, without query or fragment.
pub(crate) fn filename_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().filter(|s| !s.is_empty())?;
    Some(percent_decode(last))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `sha256:abc…` → `abc…` (lower case); None for other algorithms or bad hex.
pub(crate) fn sha256_from_hash(hash: &str) -> Option<String> {
    let hex = hash
        .strip_prefix("sha256:")
        .or_else(|| hash.strip_prefix("sha256="))?;
    is_sha256_hex(hex).then(|| hex.to_ascii_lowercase())
}

pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The (normalised name, version) a distribution file claims, for wheels and sdists.
pub(crate) fn file_name_version(filename: &str) -> Option<(String, String)> {
    if filename.ends_with(".whl") {
        let w = crate::python::tags::WheelFilename::parse(filename).ok()?;
        return Some((normalise_name(&w.name), w.version));
    }
    let stem = sdist_stem(filename)?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((normalise_name(name), version.to_owned()))
}

pub(crate) fn sdist_stem(filename: &str) -> Option<&str> {
    [".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar"]
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::python::markers::{test_python, MarkerEnv};

    pub fn env(arch: &str) -> MarkerEnv {
        MarkerEnv::for_target(&test_python(arch)).unwrap()
    }

    pub fn hash(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    /// An index that serves fixed pages and fails for anything else.
    pub struct FakeIndex(pub Vec<(String, Vec<IndexFile>)>);

    impl SimpleIndex for FakeIndex {
        fn project_files(
            &self,
            index_url: &str,
            project: &str,
        ) -> Result<Vec<IndexFile>, LockError> {
            self.0
                .iter()
                .find(|(p, _)| p == project)
                .map(|(_, f)| f.clone())
                .ok_or_else(|| LockError::Index {
                    url: index_url.to_owned(),
                    message: format!("no project {project}"),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_dispatches_on_the_file_name_and_sorts_by_name() {
        use test_support::{env, hash, FakeIndex};
        let dir = tempfile::tempdir().unwrap();
        let pylock = dir.path().join("pylock.prod.toml");
        let wheel = |n: &str| {
            format!(
                "[[packages]]\nname = \"{n}\"\nversion = \"1.0\"\nwheels = [{{ url = \"https://files.example/{n}-1.0-py3-none-any.whl\", hashes = {{ sha256 = \"{}\" }} }}]\n",
                hash('a')
            )
        };
        std::fs::write(
            &pylock,
            format!(
                "lock-version = \"1.0\"\n{}{}",
                wheel("zeta"),
                wheel("alpha")
            ),
        )
        .unwrap();
        let got = load(
            &pylock,
            &LockOptions::default(),
            &env("x86_64"),
            &FakeIndex(vec![]),
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);

        let poetry = dir.path().join("poetry.lock");
        std::fs::write(&poetry, "").unwrap();
        let err = load(
            &poetry,
            &LockOptions::default(),
            &env("x86_64"),
            &FakeIndex(vec![]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("poetry.lock") && err.contains("uv.lock"),
            "{err}"
        );
    }

    #[test]
    fn names_are_normalised_per_pep_503() {
        assert_eq!(normalise_name("Typing_Extensions"), "typing-extensions");
        assert_eq!(normalise_name("zope.interface"), "zope-interface");
        assert_eq!(normalise_name("a-_.b"), "a-b");
    }

    #[test]
    fn pylock_names_follow_pep_751() {
        assert!(is_pylock_name("pylock.toml"));
        assert!(is_pylock_name("pylock.prod.toml"));
        assert!(!is_pylock_name("pylock.a.b.toml"));
        assert!(!is_pylock_name("pylock..toml"));
        assert!(!is_pylock_name("poetry.lock"));
    }

    #[test]
    fn file_names_come_from_urls() {
        assert_eq!(
            filename_from_url("https://files.example/p/a%2Bb-1.0-py3-none-any.whl#sha256=x")
                .as_deref(),
            Some("a+b-1.0-py3-none-any.whl")
        );
        assert_eq!(
            file_name_version("Foo_Bar-1.2.tar.gz"),
            Some(("foo-bar".into(), "1.2".into()))
        );
        assert_eq!(
            file_name_version("foo-1.2-py3-none-any.whl"),
            Some(("foo".into(), "1.2".into()))
        );
    }

    #[test]
    fn only_sha256_hashes_are_taken() {
        let h = "A".repeat(64);
        assert_eq!(
            sha256_from_hash(&format!("sha256:{h}")),
            Some("a".repeat(64))
        );
        assert_eq!(sha256_from_hash("md5:abc"), None);
        assert_eq!(sha256_from_hash("sha256:xyz"), None);
    }
}
