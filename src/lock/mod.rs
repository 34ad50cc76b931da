//! Lockfiles: each format becomes the same `LockedPackage` model, already
//! narrowed to the packages the target image installs.
//!
//! Local packages (the project itself, workspace members, `directory`,
//! `editable` and `virtual` sources) are never part of the result: they are
//! not downloaded. [`load_local`] lists them for the local-project stage
//! (src/local.rs), which installs them from their `pyproject.toml`.

pub(crate) mod cutoff;
pub(crate) mod index;
pub(crate) mod index_config;
pub(crate) mod locate;
pub(crate) mod pdm;
pub(crate) mod poetry;
pub(crate) mod pylock;
pub(crate) mod requirements;
pub(crate) mod select;
pub(crate) mod uv;

use crate::project_file::{
    read_text as read_project_file, Place, ProjectFileError, LOCKFILE_LIMIT,
};
use crate::python::markers::{MarkerEnv, MarkerError};
use pep508_rs::PackageName;
use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use thiserror::Error;

/// One package to install, with every file the lock allows for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedPackage {
    /// PEP 503 normalised.
    pub name: String,
    pub version: String,
    pub files: Vec<LockedFile>,
    /// The lock also has a source distribution (or a git source).
    pub has_sdist: bool,
    /// The source distribution, when the lock names it with a sha256: built
    /// into a wheel (in the sandbox) when no wheel fits the target.
    pub sdist: Option<LockedFile>,
    /// The index that serves the files the lock lists without a URL (Poetry's
    /// `[package.source]`); None means the configured index.
    pub index: Option<String>,
}

/// A package the lock installs from the local file system: the project, a
/// workspace member, a path dependency (issue 8). Built by
/// [`crate::python::project`], never downloaded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The indexes configured where Python tools keep them, for files a lock
    /// lists without a URL; after `index_url` and a requirements file's own.
    pub indexes: index_config::IndexSettings,
    /// Which project of a uv workspace the image is for (issue 23).
    pub project: uv::ProjectRoot,
}

/// A file on a PEP 691 simple index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    /// Lower-case hex; None when the index publishes no sha256.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// PEP 700's `upload-time` (RFC 3339), when the index gives it.
    pub upload_time: Option<String>,
    /// PEP 592: a yanked file is never chosen for a build environment.
    pub yanked: bool,
    /// The file's `requires-python` (PEP 503's `data-requires-python`).
    pub requires_python: Option<String>,
}

/// Where requirements.txt files find their download URLs.
pub trait SimpleIndex {
    fn project_files(&self, index_url: &str, project: &str) -> Result<Vec<IndexFile>, LockError>;
}

#[derive(Debug, Error)]
pub enum LockError {
    #[error("cannot read lockfile {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or larger than [`LOCKFILE_LIMIT`].
    #[error(transparent)]
    File(ProjectFileError),
    /// An error about a lockfile outside the source tree, without its text.
    #[error("{path}{at}: {what} (the file is outside the source tree, so its text is not shown)")]
    Unshown {
        path: String,
        at: String,
        what: &'static str,
    },
    #[error("{path} is not valid TOML")]
    Toml {
        path: String,
        #[source]
        source: toml::de::Error,
    },
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
    #[error("{path}:{line}: invalid requirement `{requirement}`")]
    Requirement {
        path: String,
        line: usize,
        requirement: String,
        #[source]
        source: Box<pep508_rs::Pep508Error<pep508_rs::VerbatimUrl>>,
    },
    #[error("{path}: a marker or requires-python cannot be evaluated")]
    Marker {
        path: String,
        #[source]
        source: MarkerError,
    },
    #[error("`{path}` is not a lockfile imgbuild reads: use uv.lock, pylock.toml (or pylock.NAME.toml), poetry.lock, pdm.lock, or a requirements .txt file with hashes")]
    UnknownFormat { path: String },
    #[error("package index {url}: {message}")]
    Index { url: String, message: String },
    #[error("package index {url}: {what}")]
    IndexHttp {
        url: String,
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("package index {url}: not a PEP 691 JSON project page; is this a simple index URL?")]
    IndexPage {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("package index {url}: {what} is not a valid URL")]
    IndexUrl {
        url: String,
        what: String,
        #[source]
        source: index::UrlError,
    },
}

/// What a lockfile reader returns: the packages to install.
pub type LockResult = Result<Vec<LockedPackage>, LockError>;

/// The errors of one lockfile, each naming it the same way.
#[derive(Clone, Copy)]
pub(crate) struct Errors<'a>(pub &'a str);

impl Errors<'_> {
    pub fn invalid(self, message: String) -> LockError {
        LockError::Invalid {
            path: self.0.to_owned(),
            message,
        }
    }

    pub fn marker(self, source: MarkerError) -> LockError {
        LockError::Marker {
            path: self.0.to_owned(),
            source,
        }
    }

    /// An error about package `name` (`name version` when the lock pins one).
    pub fn package(self, name: &str, version: Option<&str>, message: String) -> LockError {
        LockError::Package {
            path: self.0.to_owned(),
            package: match version {
                Some(v) => format!("{name} {v}"),
                None => name.to_owned(),
            },
            message,
        }
    }
}

/// A package's files as a lock lists them: the wheels, and whether it also
/// has a source distribution.
#[derive(Default)]
pub(crate) struct Files {
    pub wheels: Vec<LockedFile>,
    pub has_sdist: bool,
    pub sdist: Option<LockedFile>,
}

impl Files {
    /// Keeps `file` as a wheel, or as the sdist (the first one listed).
    pub fn add(&mut self, file: LockedFile) {
        if file.filename.ends_with(".whl") {
            self.wheels.push(file);
        } else {
            self.has_sdist = true;
            if is_sdist_name(&file.filename) && self.sdist.is_none() {
                self.sdist = Some(file);
            }
        }
    }

    /// The package these files are of; the error says when `name` is not a
    /// valid PEP 508 name.
    pub fn package(
        self,
        name: &str,
        version: String,
        index: Option<String>,
    ) -> Result<LockedPackage, String> {
        Ok(LockedPackage {
            name: normalise_name(name)
                .ok_or_else(|| "is not a valid package name (PEP 508)".to_owned())?,
            version,
            files: self.wheels,
            has_sdist: self.has_sdist,
            sdist: self.sdist,
            index,
        })
    }

    /// Adds a file listed with a `sha256:HEX` hash (Poetry, PDM); the error
    /// names the file.
    pub fn add_hashed(
        &mut self,
        filename: String,
        url: Option<String>,
        hash: &str,
    ) -> Result<(), String> {
        let sha256 = sha256_from_hash(hash).ok_or_else(|| {
            format!(
                "file {filename} has no sha256 hash; imgbuild verifies every download, lock again"
            )
        })?;
        self.add(LockedFile {
            filename,
            url,
            sha256,
            size: None,
        });
        Ok(())
    }
}

/// A Poetry or PDM package as it is installed: its files, each listed by
/// name, URL (when the lock has one) and `sha256:HEX` hash. The message says
/// what the lock left out.
pub(crate) fn hashed_package<'a>(
    name: &str,
    version: Option<&str>,
    index: Option<String>,
    has_sdist: bool,
    files: impl IntoIterator<Item = Result<(String, Option<String>, &'a str), String>>,
) -> Result<LockedPackage, String> {
    let version = version.ok_or_else(|| "has no `version`".to_owned())?;
    let mut hashed = Files {
        has_sdist,
        ..Files::default()
    };
    for file in files {
        let (filename, url, hash) = file?;
        hashed.add_hashed(filename, url, hash)?;
    }
    hashed.package(name, version.to_owned(), index)
}

/// The groups a Poetry or PDM package lists: without them the lock cannot say
/// when the package is needed. `relock` says how to write the lock again.
pub(crate) fn listed_groups<'p>(
    groups: &'p Option<Vec<String>>,
    relock: &str,
) -> Result<&'p [String], String> {
    groups
        .as_deref()
        .ok_or_else(|| format!("has no `groups`; {relock}"))
}

/// The groups to install from a lock whose packages name the groups that
/// need them (Poetry, PDM): `main` (the lock's name for the project's own
/// dependencies), the `selected` ones, and `dev` when asked for.
pub(crate) fn active_groups<'a>(
    main: &str,
    selected: impl IntoIterator<Item = &'a String>,
    include_dev: bool,
) -> BTreeSet<String> {
    let mut active: BTreeSet<String> = selected.into_iter().map(|g| group_key(g)).collect();
    active.insert(main.to_owned());
    if include_dev {
        active.insert("dev".to_owned());
    }
    active
}

/// A lockfile's text, with an error that names it: a regular file of at most
/// [`LOCKFILE_LIMIT`]. The path was named by the user or checked to lie in
/// the source tree when the settings were read (`spec`), so it may lie anywhere.
pub(crate) fn read_text(path: &Path) -> Result<String, LockError> {
    read_project_file(path, Place::Anywhere, LOCKFILE_LIMIT).map_err(|e| match e {
        ProjectFileError::Io { source, .. } => LockError::Read {
            path: path.display().to_string(),
            source,
        },
        other => LockError::File(other),
    })
}

impl LockError {
    /// This error without any text of the lockfile, for a lockfile outside
    /// the source tree (which may be any file on the host): syntax errors
    /// and line errors keep only the file and the line.
    pub fn without_file_text(self) -> LockError {
        let unshown = |path: String, line: Option<usize>, what: &'static str| LockError::Unshown {
            path,
            at: line.map(|l| format!(":{l}")).unwrap_or_default(),
            what,
        };
        match self {
            LockError::Toml { path, .. } => unshown(path, None, "is not valid TOML"),
            LockError::Invalid { path, .. } => {
                unshown(path, None, "is not a lockfile imgbuild reads")
            }
            LockError::Line { path, line, .. } | LockError::Requirement { path, line, .. } => {
                unshown(path, Some(line), "is not a line imgbuild reads")
            }
            other => other,
        }
    }
}

/// Reads the lockfile at `path` and returns the packages to install for the
/// target described by `env`, sorted by name.
pub fn load(path: &Path, opts: &LockOptions, env: &MarkerEnv, idx: &dyn SimpleIndex) -> LockResult {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parse: fn(&str, &str, &LockOptions, &MarkerEnv) -> LockResult = if name == "uv.lock" {
        uv::parse
    } else if is_pylock_name(name) {
        pylock::parse
    } else if name == "poetry.lock" {
        poetry::parse
    } else if name == "pdm.lock" {
        pdm::parse
    } else if name.ends_with(".txt") {
        return sorted(requirements::load(path, opts, env, idx)?);
    } else {
        return Err(LockError::UnknownFormat {
            path: path.display().to_string(),
        });
    };
    sorted(parse(
        &read_text(path)?,
        &path.display().to_string(),
        opts,
        env,
    )?)
}

/// Whether `filename` is a source distribution imgbuild can build: a
/// `.tar.gz` (PEP 625) or a legacy `.zip`.
pub fn is_sdist_name(filename: &str) -> bool {
    filename.ends_with(".tar.gz") || filename.ends_with(".zip")
}

pub use cutoff::build_cutoff;

/// By name, then version.
fn sorted(mut packages: Vec<LockedPackage>) -> LockResult {
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

/// `name` as PEP 503 normalises it (lower case, runs of `-`, `_` and `.` become
/// one `-`), by `pep508_rs::PackageName`, the one normaliser imgbuild uses; None
/// for what PEP 508 does not allow as a name (empty, a leading or trailing
/// separator, other characters). Extra and group names normalise the same way.
pub fn normalise_name(name: &str) -> Option<String> {
    PackageName::from_str(name.trim())
        .ok()
        .map(|n| n.to_string())
}

/// Whether two names are the same project, extra or group once normalised.
/// Group and extra names compare as PEP 503 names do; one that is not a valid
/// name is kept as written (lowercased), so it still matches itself.
pub(crate) fn group_key(name: &str) -> String {
    normalise_name(name).unwrap_or_else(|| name.to_ascii_lowercase())
}

pub(crate) fn same_name(a: &str, b: &str) -> bool {
    matches!((normalise_name(a), normalise_name(b)), (Some(a), Some(b)) if a == b)
}

/// A lockfile's TOML as `T`, with an error that names the file.
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &str,
) -> Result<T, LockError> {
    toml::from_str(text).map_err(|source| LockError::Toml {
        path: path.to_owned(),
        source,
    })
}

/// The last path segment of a URL, percent-decoded, without query or fragment.
pub(crate) fn filename_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().filter(|s| !s.is_empty())?;
    Some(percent_decode(last))
}

pub(crate) fn percent_decode(s: &str) -> String {
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
        return Some((w.name.to_string(), w.version));
    }
    let stem = sdist_stem(filename)?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((normalise_name(name)?, version.to_owned()))
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

    /// One entry of a Poetry or PDM `files` array: the file and its hash.
    pub fn hashed_file(name: &str, h: char) -> String {
        format!(
            "    {{file = \"{name}\", hash = \"sha256:{}\"}},\n",
            hash(h)
        )
    }

    /// The selection both group-based fixtures (Poetry, PDM) are written to
    /// show, given the pins read with some options for x86_64: extra `json`
    /// and group `ops` bring in orjson and humanize and leave iniconfig (dev)
    /// out; dev brings iniconfig, and colorama (Windows only) never comes.
    #[track_caller]
    pub fn assert_extras_and_groups_opt_in(names: impl Fn(&LockOptions) -> Vec<String>) {
        let got = names(&options(&["json"], &["ops"]));
        assert!(got.contains(&"orjson==3.11.0".to_string()), "{got:?}");
        assert!(got.contains(&"humanize==4.14.0".to_string()), "{got:?}");
        assert!(!got.iter().any(|n| n.starts_with("iniconfig")), "{got:?}");
        let dev = names(&LockOptions {
            include_dev: true,
            ..Default::default()
        });
        assert!(dev.contains(&"iniconfig==2.3.1".to_string()), "{dev:?}");
        assert!(!dev.iter().any(|n| n.starts_with("colorama")), "{dev:?}");
    }

    /// Options that select these extras and dependency groups.
    pub fn options(extras: &[&str], groups: &[&str]) -> LockOptions {
        LockOptions {
            extras: extras.iter().map(|e| e.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    /// `name==version` of each package a reader returned, sorted.
    pub fn pins(result: LockResult) -> Vec<String> {
        let mut out: Vec<String> = result
            .unwrap()
            .into_iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect();
        out.sort();
        out
    }

    /// The message of the error `result` must be.
    pub fn error_of<T>(result: Result<T, impl std::fmt::Display>) -> String {
        match result {
            Ok(_) => panic!("succeeded where it should fail"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts that the message `err` names each of `parts`.
    #[track_caller]
    pub fn assert_mentions(err: &str, parts: &[&str]) {
        for part in parts {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
    }

    /// A project with this pyproject.toml, after running `uv` with each of
    /// `runs` in it (for the tests against the real uv; they need network).
    pub fn uv_project(pyproject: &str, runs: &[&[&str]]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), pyproject).unwrap();
        for args in runs {
            let status = std::process::Command::new("uv")
                .args(*args)
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "uv {args:?}");
        }
        dir
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

        let pipfile = dir.path().join("Pipfile.lock");
        std::fs::write(&pipfile, "").unwrap();
        let err = load(
            &pipfile,
            &LockOptions::default(),
            &env("x86_64"),
            &FakeIndex(vec![]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("Pipfile.lock") && err.contains("poetry.lock") && err.contains("pdm.lock"),
            "{err}"
        );
    }

    #[test]
    fn poetry_lock_and_pdm_lock_are_read_by_their_names() {
        use test_support::{env, hash, FakeIndex};
        let dir = tempfile::tempdir().unwrap();
        let file = format!(
            "{{file = \"h11-0.16.0-py3-none-any.whl\", hash = \"sha256:{}\"}}",
            hash('a')
        );
        std::fs::write(
            dir.path().join("poetry.lock"),
            format!("[[package]]\nname = \"h11\"\nversion = \"0.16.0\"\ngroups = [\"main\"]\nfiles = [{file}]\n\n[metadata]\nlock-version = \"2.1\"\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pdm.lock"),
            format!("[metadata]\nlock_version = \"4.5.0\"\nstrategy = [\"inherit_metadata\"]\ngroups = [\"default\"]\n\n[[package]]\nname = \"h11\"\nversion = \"0.16.0\"\ngroups = [\"default\"]\nfiles = [{file}]\n"),
        )
        .unwrap();
        for name in ["poetry.lock", "pdm.lock"] {
            let got = load(
                &dir.path().join(name),
                &LockOptions::default(),
                &env("x86_64"),
                &FakeIndex(vec![]),
            )
            .unwrap();
            assert_eq!(got.len(), 1, "{name}");
            assert_eq!(got[0].files[0].url, None, "{name}");
        }
    }

    #[test]
    fn names_are_normalised_per_pep_503() {
        let n = |s: &str| normalise_name(s);
        assert_eq!(n("Typing_Extensions").as_deref(), Some("typing-extensions"));
        assert_eq!(n("zope.interface").as_deref(), Some("zope-interface"));
        assert_eq!(n("a-_.b").as_deref(), Some("a-b"));
        assert_eq!(n(" padded ").as_deref(), Some("padded"));
        // PEP 508 names start and end with a letter or digit.
        assert_eq!(n("_private"), None);
        assert_eq!(n("trailing-"), None);
        assert!(same_name("Foo.Bar", "foo_bar"));
        assert!(!same_name("-", "_"));
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
