//! The settings file: `imgbuild.toml`, or the `[tool.imgbuild]` table of a
//! `pyproject.toml`. Every key is documented in docs/configuration.md.
//!
//! Reading happens in two passes. The first ([`keys`]) walks the TOML table
//! itself so that an unknown key, a wrong type or a missing key gets a
//! one-line message naming the file and the key; the second ([`values`])
//! deserialises the checked table into a strict raw struct and validates
//! values (ports, paths, platforms, ...). This module finds and reads the file
//! and holds the result, [`Spec`]. What the image runs (the uvicorn command
//! line) is decided later, in [`crate::image::command`].

mod bytecode;
pub(crate) mod deploy;
mod keys;
mod serving;
mod state;
mod values;
mod workspace;

pub use workspace::enclosing_lock;

pub use bytecode::BytecodeMode;
pub use deploy::{Autoscale, Deploy, Resources};
pub use keys::{keys_by_provenance, Provenance};
pub use serving::{Publish, Tls};

use crate::image::command::{EntrypointCmd, Uvicorn};
use crate::layer::ImagePath;
use crate::platform::Platform;
use crate::project_file::{read_text, Place, ProjectFileError, SETTINGS_LIMIT};
use crate::text::{one_line, shown};
use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

pub const SPEC_FILE: &str = "imgbuild.toml";
/// The image user's HOME, a directory it owns, unless `env` sets `HOME`:
/// outside the workdir, so the code stays read-only and a Kubernetes
/// emptyDir over it hides nothing.
pub const HOME: &str = "/home/app";
pub const PYPROJECT_FILE: &str = "pyproject.toml";
/// Looked for in `source`, in this order, when `lockfile` is not set.
pub const DEFAULT_LOCKFILES: &[&str] = &[
    "uv.lock",
    "pylock.toml",
    "poetry.lock",
    "pdm.lock",
    "requirements.txt",
];
/// uvicorn's `--workers`, for the top-level `workers` (the image's command)
/// and `[deploy] workers` (a pod's) alike: at least one and, as uvicorn sets
/// no upper bound, any count the field holds.
const WORKERS: (i64, i64) = (1, u32::MAX as i64);
/// Locks imgbuild cannot read: when one is all `source` has, the build stops
/// rather than make an image without the project's packages.
pub const UNREADABLE_LOCKFILES: &[&str] = &[
    "Pipfile.lock",
    "pixi.lock",
    "conda-lock.yml",
    "requirements.lock",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Where the settings came from (absolute).
    pub file: PathBuf,
    /// `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or a registry reference; parsed later.
    pub base: String,
    /// Absolute; an existing directory.
    pub source: PathBuf,
    pub workdir: ImagePath,
    pub venv: ImagePath,
    /// Absolute; `None` when none was set and none of [`DEFAULT_LOCKFILES`] exists in `source`.
    pub lockfile: Option<PathBuf>,
    /// `package`: the member of a uv workspace to install (`uv sync --package`).
    pub package: Option<String>,
    /// `module.path:attr`, what uvicorn imports (a factory's without its
    /// `()`); `None` when `cmd` or `entrypoint` starts a server of its own.
    pub app: Option<String>,
    /// `app = "m:create_app()"`: `app` names a factory uvicorn calls (`--factory`).
    pub app_factory: bool,
    /// uvicorn `--app-dir`, relative to `workdir` (src layouts).
    pub app_dir: Option<String>,
    pub port: u16,
    pub workers: u32,
    /// Whether `workers` was written: a single server's default is otherwise
    /// the CPUs its limit grants (see `crate::deploy::server`).
    pub workers_set: bool,
    pub proxy_headers: bool,
    /// Numeric `(uid, gid)`; uid 0 is refused.
    pub user: (u32, u32),
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub platforms: Vec<Platform>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub groups: Vec<String>,
    pub extras: Vec<String>,
    pub include_dev: bool,
    pub index_url: Option<String>,
    /// Total layers, the base image's included.
    pub layer_budget: usize,
    pub source_url: Option<String>,
    pub revision: Option<String>,
    /// Extra `.dockerignore`-style patterns for the app layer.
    pub exclude: Vec<String>,
    /// `writable`: directories the image's user owns, absolute (a relative
    /// entry is under the workdir); see [`Spec::state_dirs`].
    pub writable: Vec<ImagePath>,
    /// The repository `imgbuild resolve` pushes to, without tag.
    pub image: Option<String>,
    /// The command run from the image before the app starts (an initContainer).
    pub init: Option<Vec<String>>,
    /// HTTP path for the probes; a TCP probe when unset.
    pub health: Option<String>,
    /// The Kubernetes objects `imgbuild manifests` writes.
    pub deploy: Deploy,
    /// A wheel of the project built beforehand (absolute), installed instead
    /// of the project's own dist-info; for compiled projects.
    pub project_wheel: Option<PathBuf>,
    /// Libraries native code may need that the runtime provides (`libcuda.so.1`).
    pub allow_missing_libraries: Vec<String>,
    /// `bytecode`: pycs for every package and the app (default: checked-hash).
    pub bytecode: BytecodeMode,
    /// `bytecode-stdlib`: a layer of pycs for a standard library that has none.
    pub bytecode_stdlib: bool,
    /// `sandbox`: run the base's Python in a sandbox (default); `false`
    /// runs it unconfined, for a base the user trusts.
    pub sandbox: bool,
    /// `compression`: how imgbuild's own layers are compressed (default gzip).
    pub compression: crate::layer::compress::Compression,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no {SPEC_FILE} in {dir}, and no [tool.imgbuild] table in a {PYPROJECT_FILE} there; create {SPEC_FILE} with at least `base = \"python:3.12-slim\"` and `app = \"main:app\"` (see docs/configuration.md), or pass -f FILE")]
    NotFound { dir: String },
    #[error("{file}: cannot read it")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    /// A settings file that is not a regular file, lies outside, or is too large.
    #[error(transparent)]
    File(crate::project_file::ProjectFileError),
    #[error("{file}: invalid TOML at line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: no [tool.imgbuild] table; add one with at least `base` and `app`, or put the settings in {SPEC_FILE}")]
    NoToolTable { file: String },
    #[error("{file}: unknown key {key:?}{section}{hint}")]
    UnknownKey {
        file: String,
        key: String,
        section: String,
        hint: String,
    },
    #[error("{file}: key {key:?}{section} must be {expected}, found {found}")]
    WrongType {
        file: String,
        key: String,
        section: String,
        expected: &'static str,
        found: String,
    },
    #[error("{file}: missing required key {key:?}{section}; for example {example}")]
    Missing {
        file: String,
        key: String,
        section: String,
        example: &'static str,
    },
    /// The strict deserialisation disagreed with the key and type checks; a bug, but still reported.
    #[error("{file}: {message}")]
    Unreadable { file: String, message: String },
    /// A platform the platform parser refused, or one without Python wheels.
    #[error("{file}: key \"platforms\"{section}")]
    Platform {
        file: String,
        section: String,
        #[source]
        source: Box<crate::platform::PlatformError>,
    },
    #[error("{file}: key {key:?}{section}: {reason}")]
    Invalid {
        file: String,
        key: String,
        section: String,
        reason: String,
    },
}

/// Where the settings live, so every message can say it the same way.
struct Origin {
    /// The file as shown in messages: relative to the working directory when inside it.
    shown: String,
    /// `" in [tool.imgbuild]"` for pyproject.toml, empty for imgbuild.toml.
    section: String,
}

impl Origin {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            file: self.shown.clone(),
            key: key.to_string(),
            section: self.section.clone(),
            reason: reason.into(),
        }
    }

    fn platform(&self, source: crate::platform::PlatformError) -> SpecError {
        SpecError::Platform {
            file: self.shown.clone(),
            section: self.section.clone(),
            source: Box::new(source),
        }
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: impl Into<String>) -> SpecError {
        SpecError::WrongType {
            file: self.shown.clone(),
            key: key.to_string(),
            section: self.section.clone(),
            expected,
            found: found.into(),
        }
    }
}

/// Finds and reads the settings. With `explicit` (`-f PATH`, relative to
/// `cwd`): a file named `pyproject.toml` is read from `[tool.imgbuild]`, any
/// other as an imgbuild.toml. Without: `imgbuild.toml` in `cwd`, else
/// `pyproject.toml` there if it has a `[tool.imgbuild]` table.
pub fn load(explicit: Option<&Path>, cwd: &Path) -> Result<Spec, SpecError> {
    let cwd = absolute(cwd);
    if let Some(path) = explicit {
        let file = normalise(&cwd.join(path));
        let is_pyproject = file.file_name().is_some_and(|n| n == PYPROJECT_FILE);
        let text = read(&file, &cwd, Place::Anywhere)?;
        return parse(&text, &file, is_pyproject, &cwd);
    }
    // Any entry by the name counts, so a FIFO or a dangling link is refused
    // by name instead of being passed over.
    let spec_file = cwd.join(SPEC_FILE);
    if spec_file.symlink_metadata().is_ok() {
        let text = read(&spec_file, &cwd, Place::Within(&cwd))?;
        return parse(&text, &spec_file, false, &cwd);
    }
    let pyproject = cwd.join(PYPROJECT_FILE);
    if pyproject.symlink_metadata().is_ok() {
        let text = read(&pyproject, &cwd, Place::Within(&cwd))?;
        let shown = shown(&pyproject, &cwd);
        let doc = parse_toml(&text, &shown)?;
        if tool_table(&doc).is_some() {
            return parse(&text, &pyproject, true, &cwd);
        }
    }
    Err(SpecError::NotFound {
        dir: cwd.display().to_string(),
    })
}

/// Reads settings from `text` as if it were the file `file` (absolute), with
/// messages showing paths relative to `cwd`.
pub fn parse(text: &str, file: &Path, is_pyproject: bool, cwd: &Path) -> Result<Spec, SpecError> {
    let origin = Origin {
        shown: shown(file, cwd),
        section: if is_pyproject {
            " in [tool.imgbuild]".to_string()
        } else {
            String::new()
        },
    };
    let doc = parse_toml(text, &origin.shown)?;
    let table = if is_pyproject {
        match tool_table(&doc) {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(other) => {
                return Err(SpecError::WrongType {
                    file: origin.shown,
                    key: "tool.imgbuild".into(),
                    section: String::new(),
                    expected: "a table",
                    found: other.type_str().into(),
                })
            }
            None => return Err(SpecError::NoToolTable { file: origin.shown }),
        }
    } else {
        doc
    };
    keys::check_table(&table, &origin)?;
    let raw: keys::Raw = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| SpecError::Unreadable {
            file: origin.shown.clone(),
            message: one_line(e.message()),
        })?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    values::check(raw, file, &dir, &origin)
}

/// The settings file's text: a regular file, at most [`SETTINGS_LIMIT`] long,
/// inside `cwd` when imgbuild found it there by its name.
fn read(file: &Path, cwd: &Path, place: Place) -> Result<String, SpecError> {
    read_text(file, place, SETTINGS_LIMIT).map_err(|e| match e {
        ProjectFileError::Io { source, .. } => SpecError::Read {
            file: shown(file, cwd),
            source,
        },
        other => SpecError::File(other),
    })
}

fn parse_toml(text: &str, shown: &str) -> Result<toml::Table, SpecError> {
    text.parse::<toml::Table>().map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => line_column(text, span.start),
            None => (1, 1),
        };
        SpecError::Syntax {
            file: shown.to_string(),
            line,
            column,
            message: one_line(e.message()),
        }
    })
}

fn tool_table(doc: &toml::Table) -> Option<&toml::Value> {
    doc.get("tool")?.as_table()?.get("imgbuild")
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `cwd` made absolute without touching the file system beyond the current directory.
fn absolute(path: &Path) -> PathBuf {
    normalise(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Removes `.` and resolves `..` lexically, so `source = "../svc"` reads well in messages.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Spec {
    /// What the image runs, with uvicorn serving `workers` workers when it
    /// is uvicorn: the image config passes the spec's `workers`, a
    /// Kubernetes pod `[deploy] workers` (there, replication is the
    /// cluster's job); the command line is otherwise the same bytes. The one
    /// place the settings become a command line.
    pub fn command(&self, workers: u32) -> EntrypointCmd {
        let venv = self.venv.absolute();
        let uvicorn = self.app.as_deref().map(|app| Uvicorn {
            venv: &venv,
            app,
            factory: self.app_factory,
            app_dir: self.app_dir.as_deref(),
            port: self.port,
            workers,
            proxy_headers: self.proxy_headers,
        });
        EntrypointCmd::new(self.entrypoint.clone(), self.cmd.clone(), uvicorn.as_ref())
    }

    /// `app` as the settings write it, for messages: `m:app` or `m:create_app()`.
    pub fn app_setting(&self) -> Option<String> {
        let call = if self.app_factory { "()" } else { "" };
        self.app.as_ref().map(|app| format!("{app}{call}"))
    }

    /// The user's HOME when imgbuild provides it ([`HOME`]): `None` when
    /// `env` sets `HOME`, which is then the user's to make writable.
    pub fn home(&self) -> Option<ImagePath> {
        (!self.env.contains_key("HOME")).then(|| ImagePath::new(HOME).expect("a valid path"))
    }

    /// Every directory the image's user writes in, besides `/tmp`: its HOME
    /// and the `writable` ones. Owned by the user in the image, and where
    /// the root filesystem is read-only (Kubernetes, compose, systemd) each
    /// must be a volume of its own; an empty one at start.
    pub fn state_dirs(&self) -> Vec<ImagePath> {
        self.home()
            .into_iter()
            .chain(self.writable.iter().cloned())
            .collect()
    }

    /// The patterns to leave out of the app layer beyond `.dockerignore`: the
    /// `exclude` key, plus the venv's path when it lies inside the workdir, so
    /// a host venv copied with the source can never shadow the image's venv.
    pub fn app_excludes(&self) -> Vec<String> {
        let mut out = self.exclude.clone();
        if self.venv.starts_with(&self.workdir) {
            let rel = &self.venv.as_str()[self.workdir.as_str().len() + 1..];
            out.push(crate::dockerignore::literal_pattern(rel));
        }
        out
    }
}

#[cfg(test)]
mod tests;
