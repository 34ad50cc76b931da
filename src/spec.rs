//! The settings file: `imgbuild.toml`, or the `[tool.imgbuild]` table of a
//! `pyproject.toml`. Every key is documented in docs/configuration.md.
//!
//! Reading happens in two passes. The first walks the TOML table itself so
//! that an unknown key, a wrong type or a missing key gets a one-line message
//! naming the file and the key; the second deserialises the checked table into
//! a strict raw struct and validates values (ports, paths, platforms, ...).

use crate::dockerignore::Matcher;
use crate::layer::ImagePath;
use crate::platform::Platform;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

pub const SPEC_FILE: &str = "imgbuild.toml";
pub const PYPROJECT_FILE: &str = "pyproject.toml";
/// Looked for in `source`, in this order, when `lockfile` is not set.
pub const DEFAULT_LOCKFILES: &[&str] = &["uv.lock", "pylock.toml", "requirements.txt"];

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
    /// `module.path:attr`.
    pub app: String,
    /// uvicorn `--app-dir`, relative to `workdir` (src layouts).
    pub app_dir: Option<String>,
    pub port: u16,
    pub workers: u32,
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
    // issue 8:
    /// A wheel of the project built beforehand (absolute), installed instead
    /// of the project's own dist-info; for compiled projects.
    pub project_wheel: Option<PathBuf>,
    /// Libraries native code may need that the runtime provides (`libcuda.so.1`).
    pub allow_missing_libraries: Vec<String>,
}

/// What the image runs: `Entrypoint` and `Cmd` of the image config; `None`
/// leaves the field out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrypointCmd {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no {SPEC_FILE} in {dir}, and no [tool.imgbuild] table in a {PYPROJECT_FILE} there; create {SPEC_FILE} with at least `base = \"python:3.12-slim\"` and `app = \"main:app\"` (see docs/configuration.md), or pass -f FILE")]
    NotFound { dir: String },
    #[error("{file}: cannot read it: {source}")]
    Read { file: String, source: io::Error },
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
    #[error("{file}: key {key:?}{section}: {reason}")]
    Invalid {
        file: String,
        key: String,
        section: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Str,
    Int,
    Bool,
    StrList,
    StrMap,
}

impl Type {
    fn expected(self) -> &'static str {
        match self {
            Type::Str => "a string",
            Type::Int => "an integer",
            Type::Bool => "a boolean (true or false)",
            Type::StrList => "an array of strings",
            Type::StrMap => "a table of strings",
        }
    }
}

/// Every key, its TOML type, and an example line (used in docs and in the
/// message for a missing required key). Kept in step with `Raw` by a test.
const KEYS: &[(&str, Type, &str)] = &[
    ("base", Type::Str, "base = \"python:3.12-slim\""),
    ("source", Type::Str, "source = \".\""),
    ("workdir", Type::Str, "workdir = \"/app\""),
    ("venv", Type::Str, "venv = \"/app/.venv\""),
    ("lockfile", Type::Str, "lockfile = \"uv.lock\""),
    ("app", Type::Str, "app = \"main:app\""),
    ("app-dir", Type::Str, "app-dir = \"src\""),
    ("port", Type::Int, "port = 8000"),
    ("workers", Type::Int, "workers = 1"),
    ("proxy-headers", Type::Bool, "proxy-headers = false"),
    ("user", Type::Str, "user = \"65532:65532\""),
    ("env", Type::StrMap, "env = { LOG_LEVEL = \"info\" }"),
    ("labels", Type::StrMap, "labels = { team = \"payments\" }"),
    (
        "annotations",
        Type::StrMap,
        "annotations = { \"org.opencontainers.image.title\" = \"api\" }",
    ),
    (
        "platforms",
        Type::StrList,
        "platforms = [\"linux/amd64\", \"linux/arm64\"]",
    ),
    (
        "entrypoint",
        Type::StrList,
        "entrypoint = [\"/app/.venv/bin/python\", \"-m\", \"myapi\"]",
    ),
    ("cmd", Type::StrList, "cmd = [\"--log-level\", \"info\"]"),
    ("groups", Type::StrList, "groups = [\"prod\"]"),
    ("extras", Type::StrList, "extras = [\"postgres\"]"),
    ("include-dev", Type::Bool, "include-dev = false"),
    (
        "index-url",
        Type::Str,
        "index-url = \"https://pypi.example.com/simple\"",
    ),
    ("layer-budget", Type::Int, "layer-budget = 100"),
    (
        "source-url",
        Type::Str,
        "source-url = \"https://github.com/acme/api\"",
    ),
    ("revision", Type::Str, "revision = \"4f2c1e9\""),
    ("exclude", Type::StrList, "exclude = [\"tests/\", \"*.md\"]"),
    // issue 8:
    (
        "project-wheel",
        Type::Str,
        "project-wheel = \"dist/myapi-1.0-cp311-cp311-manylinux_2_28_x86_64.whl\"",
    ),
    (
        "allow-missing-libraries",
        Type::StrList,
        "allow-missing-libraries = [\"libcuda.so.1\"]",
    ),
];

const REQUIRED: &[&str] = &["base", "app"];

/// The table as written, after the key and type checks; `deny_unknown_fields`
/// backs up the key check.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    base: Option<String>,
    source: Option<String>,
    workdir: Option<String>,
    venv: Option<String>,
    lockfile: Option<String>,
    app: Option<String>,
    app_dir: Option<String>,
    port: Option<i64>,
    workers: Option<i64>,
    proxy_headers: Option<bool>,
    user: Option<String>,
    env: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    platforms: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    extras: Option<Vec<String>>,
    include_dev: Option<bool>,
    index_url: Option<String>,
    layer_budget: Option<i64>,
    source_url: Option<String>,
    revision: Option<String>,
    exclude: Option<Vec<String>>,
    project_wheel: Option<String>,
    allow_missing_libraries: Option<Vec<String>>,
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
        let text = read(&file, &cwd)?;
        return parse(&text, &file, is_pyproject, &cwd);
    }
    let spec_file = cwd.join(SPEC_FILE);
    if spec_file.is_file() {
        let text = read(&spec_file, &cwd)?;
        return parse(&text, &spec_file, false, &cwd);
    }
    let pyproject = cwd.join(PYPROJECT_FILE);
    if pyproject.is_file() {
        let text = read(&pyproject, &cwd)?;
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
    check_table(&table, &origin)?;
    let raw: Raw = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| SpecError::Unreadable {
            file: origin.shown.clone(),
            message: one_line(e.message()),
        })?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    build(raw, file, &dir, &origin)
}

fn read(file: &Path, cwd: &Path) -> Result<String, SpecError> {
    std::fs::read_to_string(file).map_err(|source| SpecError::Read {
        file: shown(file, cwd),
        source,
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

fn one_line(s: &str) -> String {
    s.trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

fn shown(file: &Path, cwd: &Path) -> String {
    file.strip_prefix(cwd).unwrap_or(file).display().to_string()
}

/// The first pass: unknown keys, missing required keys and TOML types.
fn check_table(table: &toml::Table, origin: &Origin) -> Result<(), SpecError> {
    for (key, value) in table {
        let Some((_, ty, _)) = KEYS.iter().find(|(k, _, _)| k == key) else {
            return Err(SpecError::UnknownKey {
                file: origin.shown.clone(),
                key: key.clone(),
                section: origin.section.clone(),
                hint: suggestion(key)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default(),
            });
        };
        check_type(key, value, *ty, origin)?;
    }
    for key in REQUIRED {
        if !table.contains_key(*key) {
            let example = KEYS
                .iter()
                .find(|(k, _, _)| k == key)
                .map_or("", |(_, _, e)| e);
            return Err(SpecError::Missing {
                file: origin.shown.clone(),
                key: key.to_string(),
                section: origin.section.clone(),
                example,
            });
        }
    }
    Ok(())
}

fn check_type(key: &str, value: &toml::Value, ty: Type, origin: &Origin) -> Result<(), SpecError> {
    use toml::Value as V;
    match (ty, value) {
        (Type::Str, V::String(_)) | (Type::Int, V::Integer(_)) | (Type::Bool, V::Boolean(_)) => {
            Ok(())
        }
        (Type::StrList, V::Array(items)) => {
            match items.iter().enumerate().find(|(_, v)| !v.is_str()) {
                Some((i, v)) => Err(origin.wrong_type(
                    key,
                    ty.expected(),
                    format!("{} at position {}", v.type_str(), i + 1),
                )),
                None => Ok(()),
            }
        }
        (Type::StrMap, V::Table(entries)) => match entries.iter().find(|(_, v)| !v.is_str()) {
            Some((k, v)) => Err(origin.wrong_type(
                &format!("{key}.{k}"),
                "a string",
                format!("{} (quote it)", v.type_str()),
            )),
            None => Ok(()),
        },
        (_, other) => Err(origin.wrong_type(key, ty.expected(), other.type_str())),
    }
}

/// The known key closest to a mistyped one, if it is close enough to be a typo.
fn suggestion(key: &str) -> Option<&'static str> {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    KEYS.iter()
        .map(|(k, _, _)| (*k, edit_distance(&dashed, k)))
        .filter(|(k, d)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions,
/// and a swap of two neighbours ("prot" for "port") as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
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

/// The second pass: values, defaults and paths.
fn build(raw: Raw, file: &Path, dir: &Path, origin: &Origin) -> Result<Spec, SpecError> {
    let base = raw.base.unwrap_or_default();
    if base.trim().is_empty() {
        return Err(origin.invalid(
            "base",
            "is empty; name the base image, such as \"python:3.12-slim\" or \"oci:./base\"",
        ));
    }

    let source = normalise(&dir.join(raw.source.as_deref().unwrap_or(".")));
    if !source.is_dir() {
        let what = if source.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(origin.invalid(
            "source",
            format!(
                "{} {what}; point it at the project directory",
                source.display()
            ),
        ));
    }

    let workdir = image_path(origin, "workdir", raw.workdir.as_deref().unwrap_or("/app"))?;
    let venv = image_path(origin, "venv", raw.venv.as_deref().unwrap_or("/app/.venv"))?;
    if venv == workdir || workdir.starts_with(&venv) {
        return Err(origin.invalid("venv", format!("{venv} would hold the workdir {workdir}; put the venv inside it (such as {workdir}/.venv) or elsewhere")));
    }

    let lockfile = match raw.lockfile.as_deref() {
        Some(p) => {
            let path = normalise(&dir.join(p));
            if !path.is_file() {
                return Err(origin.invalid(
                    "lockfile",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            Some(path)
        }
        None => DEFAULT_LOCKFILES
            .iter()
            .map(|name| source.join(name))
            .find(|p| p.is_file()),
    };

    let app = raw.app.unwrap_or_default();
    if !is_app_reference(&app) {
        return Err(origin.invalid(
            "app",
            format!("{app:?} is not \"module.path:attribute\"; write it as uvicorn takes it, such as \"main:app\" or \"myapi.server:app\""),
        ));
    }
    let app_dir = match raw.app_dir {
        Some(d) if d.trim().is_empty() || d.starts_with('/') || d.contains('\0') => {
            return Err(origin.invalid(
                "app-dir",
                format!("{d:?} must be a directory relative to the workdir, such as \"src\""),
            ));
        }
        other => other,
    };

    let port = int_in_range(origin, "port", raw.port, 8000, 1, u16::MAX as i64)? as u16;
    let workers = int_in_range(origin, "workers", raw.workers, 1, 1, u32::MAX as i64)? as u32;
    let layer_budget =
        int_in_range(origin, "layer-budget", raw.layer_budget, 100, 2, 127)? as usize;
    let user = parse_user(origin, raw.user.as_deref().unwrap_or("65532:65532"))?;

    let env = raw.env.unwrap_or_default();
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(origin.invalid(
                "env",
                format!("{k:?} is not a valid variable name (no `=`, not empty)"),
            ));
        }
    }
    let labels = non_empty_keys(origin, "labels", raw.labels.unwrap_or_default())?;
    let annotations = non_empty_keys(origin, "annotations", raw.annotations.unwrap_or_default())?;

    let platforms = parse_platforms(origin, raw.platforms)?;

    let entrypoint = raw.entrypoint;
    if entrypoint.as_ref().is_some_and(|e| e.is_empty()) {
        return Err(origin.invalid("entrypoint", "is empty; give the program and its arguments, or leave the key out for the uvicorn default"));
    }
    let cmd = raw.cmd;

    let groups = names(origin, "groups", raw.groups.unwrap_or_default())?;
    let extras = names(origin, "extras", raw.extras.unwrap_or_default())?;

    let index_url = raw.index_url;
    if let Some(url) = &index_url {
        if !(url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("file://"))
        {
            return Err(origin.invalid(
                "index-url",
                format!("{url:?} must start with https://, http:// or file://"),
            ));
        }
    }

    let exclude = raw.exclude.unwrap_or_default();
    if let Err(e) = Matcher::from_lines(&exclude) {
        return Err(origin.invalid(
            "exclude",
            format!(
                "item {}: invalid pattern {:?}: {}",
                e.line, e.pattern, e.reason
            ),
        ));
    }

    // issue 8:
    let project_wheel = match raw.project_wheel.as_deref() {
        Some(p) => {
            let path = normalise(&dir.join(p));
            if !p.ends_with(".whl") || !path.is_file() {
                return Err(origin.invalid(
                    "project-wheel",
                    format!("{} is not a wheel file; build it first (`uv build --wheel`) and name the .whl", path.display()),
                ));
            }
            Some(path)
        }
        None => None,
    };
    Ok(Spec {
        file: file.to_path_buf(),
        base,
        source,
        workdir,
        venv,
        lockfile,
        app,
        app_dir,
        port,
        workers,
        proxy_headers: raw.proxy_headers.unwrap_or(false),
        user,
        env,
        labels,
        annotations,
        platforms,
        entrypoint,
        cmd,
        groups,
        extras,
        include_dev: raw.include_dev.unwrap_or(false),
        index_url,
        layer_budget,
        source_url: raw.source_url,
        revision: raw.revision,
        exclude,
        project_wheel,
        allow_missing_libraries: raw.allow_missing_libraries.unwrap_or_default(),
    })
}

fn image_path(origin: &Origin, key: &str, value: &str) -> Result<ImagePath, SpecError> {
    if !value.starts_with('/') {
        return Err(origin.invalid(
            key,
            format!("{value:?} must be an absolute path in the image, such as \"/app\""),
        ));
    }
    ImagePath::new(value).map_err(|e| origin.invalid(key, format!("{value:?}: {}", e.1)))
}

fn int_in_range(
    origin: &Origin,
    key: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, SpecError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(origin.invalid(key, format!("{v} is out of range; use {min} to {max}")));
    }
    Ok(v)
}

fn parse_user(origin: &Origin, value: &str) -> Result<(u32, u32), SpecError> {
    let shape = || {
        origin.invalid("user", format!("{value:?} must be a numeric \"uid:gid\", such as \"65532:65532\" (names cannot be resolved without the base's /etc/passwd)"))
    };
    let (uid, gid) = value.split_once(':').ok_or_else(shape)?;
    let uid: u32 = uid.parse().map_err(|_| shape())?;
    let gid: u32 = gid.parse().map_err(|_| shape())?;
    if uid == 0 {
        return Err(origin.invalid(
            "user",
            format!(
                "{value:?} runs the service as root; use a non-root uid such as \"65532:65532\""
            ),
        ));
    }
    Ok((uid, gid))
}

fn non_empty_keys(
    origin: &Origin,
    key: &str,
    map: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SpecError> {
    if map.keys().any(|k| k.trim().is_empty()) {
        return Err(origin.invalid(key, "has an empty name; every entry needs a name"));
    }
    Ok(map)
}

fn names(origin: &Origin, key: &str, list: Vec<String>) -> Result<Vec<String>, SpecError> {
    for name in &list {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(origin.invalid(
                key,
                format!("{name:?} is not a valid name (letters, digits, - _ . inside)"),
            ));
        }
    }
    Ok(list)
}

fn parse_platforms(origin: &Origin, list: Option<Vec<String>>) -> Result<Vec<Platform>, SpecError> {
    let Some(list) = list else {
        return Ok(vec![Platform::new("linux", "amd64", None)]);
    };
    if list.is_empty() {
        return Err(origin.invalid(
            "platforms",
            "is empty; list at least one, such as \"linux/amd64\"",
        ));
    }
    let mut out: Vec<Platform> = Vec::new();
    for text in &list {
        let p = Platform::parse(text).map_err(|e| origin.invalid("platforms", e.to_string()))?;
        if p.os != "linux" {
            return Err(origin.invalid(
                "platforms",
                format!("{text:?}: imgbuild builds Linux images only"),
            ));
        }
        p.python_arch()
            .map_err(|e| origin.invalid("platforms", e.to_string()))?;
        if let Some(first) = out.iter().find(|q| q.matches(&p)) {
            return Err(origin.invalid(
                "platforms",
                format!("{text:?} repeats {first}; list each platform once"),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// `module.path:attr` as uvicorn's `import_from_string` takes it: dotted
/// identifiers on both sides of one colon.
fn is_app_reference(app: &str) -> bool {
    fn dotted_identifiers(s: &str) -> bool {
        !s.is_empty()
            && s.split('.').all(|part| {
                let mut chars = part.chars();
                chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                    && chars.all(|c| c == '_' || c.is_alphanumeric())
            })
    }
    match app.split_once(':') {
        Some((module, attr)) => dotted_identifiers(module) && dotted_identifiers(attr),
        None => false,
    }
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
    /// The uvicorn command the image runs unless `entrypoint`/`cmd` override it.
    pub fn default_command(&self) -> Vec<String> {
        let mut cmd = vec![
            format!("{}/bin/uvicorn", self.venv.absolute()),
            self.app.clone(),
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            self.port.to_string(),
            "--workers".into(),
            self.workers.to_string(),
        ];
        if self.proxy_headers {
            cmd.push("--proxy-headers".into());
        }
        if let Some(dir) = &self.app_dir {
            cmd.push("--app-dir".into());
            cmd.push(dir.clone());
        }
        cmd
    }

    /// Entrypoint and Cmd for the image config. With neither key set, the
    /// Cmd is [`default_command`](Self::default_command) and there is no
    /// entrypoint, so `run IMAGE python -c …` works as users of Python images
    /// expect. `cmd` alone replaces the command (no entrypoint); `entrypoint`
    /// alone runs with no Cmd; both are used as given.
    pub fn effective_entrypoint_cmd(&self) -> EntrypointCmd {
        match (&self.entrypoint, &self.cmd) {
            (None, None) => EntrypointCmd {
                entrypoint: None,
                cmd: Some(self.default_command()),
            },
            (entrypoint, cmd) => EntrypointCmd {
                entrypoint: entrypoint.clone(),
                cmd: cmd.clone(),
            },
        }
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
mod tests {
    use super::*;
    use std::fs;

    struct Project {
        dir: tempfile::TempDir,
    }

    impl Project {
        fn new() -> Self {
            Project {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self) -> PathBuf {
            self.dir.path().to_path_buf()
        }
        fn write(&self, name: &str, text: &str) -> &Self {
            let p = self.dir.path().join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
            self
        }
        fn load(&self) -> Result<Spec, SpecError> {
            load(None, self.dir.path())
        }
        fn err(&self, toml: &str) -> String {
            self.write(SPEC_FILE, toml);
            let e = self.load().unwrap_err().to_string();
            assert!(!e.contains('\n'), "one line: {e}");
            e
        }
    }

    const MINIMAL: &str = "base = \"python:3.12-slim\"\napp = \"main:app\"\n";

    #[test]
    fn minimal_file_gets_every_default() {
        let p = Project::new();
        p.write(SPEC_FILE, MINIMAL);
        let s = p.load().unwrap();
        assert_eq!(s.file, p.path().join(SPEC_FILE));
        assert!(s.file.is_absolute());
        assert_eq!(s.base, "python:3.12-slim");
        assert_eq!(s.source, p.path());
        assert_eq!(s.workdir.absolute(), "/app");
        assert_eq!(s.venv.absolute(), "/app/.venv");
        assert_eq!(s.lockfile, None);
        assert_eq!((s.port, s.workers, s.proxy_headers), (8000, 1, false));
        assert_eq!(s.user, (65532, 65532));
        assert_eq!(s.platforms, vec![Platform::parse("linux/amd64").unwrap()]);
        assert_eq!((s.include_dev, s.layer_budget), (false, 100));
        assert!(s.env.is_empty() && s.labels.is_empty() && s.annotations.is_empty());
        assert!(s.groups.is_empty() && s.extras.is_empty() && s.exclude.is_empty());
        assert_eq!(
            (s.entrypoint, s.cmd, s.app_dir, s.index_url),
            (None, None, None, None)
        );
    }

    #[test]
    fn every_key_is_read() {
        let p = Project::new();
        p.write("svc/uv.lock", "")
            .write("svc/requirements.prod.txt", "");
        p.write(
            SPEC_FILE,
            r#"
base = "oci:./base:3.12"
source = "svc"
workdir = "/srv/app"
venv = "/opt/venv"
lockfile = "svc/requirements.prod.txt"
app = "myapi.server:app"
app-dir = "src"
port = 8080
workers = 4
proxy-headers = true
user = "1000:1001"
env = { LOG_LEVEL = "info" }
labels = { team = "payments" }
annotations = { "org.opencontainers.image.title" = "api" }
platforms = ["linux/amd64", "linux/arm64/v8"]
entrypoint = ["/opt/venv/bin/python", "-m", "myapi"]
cmd = ["--verbose"]
groups = ["prod"]
extras = ["postgres"]
include-dev = true
index-url = "https://pypi.example.com/simple"
layer-budget = 60
source-url = "https://github.com/acme/api"
revision = "4f2c1e9"
exclude = ["tests/", "*.md"]
"#,
        );
        let s = p.load().unwrap();
        assert_eq!(s.source, p.path().join("svc"));
        assert_eq!(s.workdir.absolute(), "/srv/app");
        assert_eq!(s.venv.absolute(), "/opt/venv");
        assert_eq!(s.lockfile, Some(p.path().join("svc/requirements.prod.txt")));
        assert_eq!(s.app, "myapi.server:app");
        assert_eq!(s.app_dir.as_deref(), Some("src"));
        assert_eq!(
            (s.port, s.workers, s.proxy_headers, s.user),
            (8080, 4, true, (1000, 1001))
        );
        assert_eq!(s.env["LOG_LEVEL"], "info");
        assert_eq!(s.labels["team"], "payments");
        assert_eq!(s.annotations["org.opencontainers.image.title"], "api");
        assert_eq!(
            s.platforms
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64/v8"]
        );
        assert_eq!(s.entrypoint.as_deref().unwrap()[2], "myapi");
        assert_eq!(s.cmd, Some(vec!["--verbose".to_string()]));
        assert_eq!(
            (s.groups.as_slice(), s.extras.as_slice()),
            (&["prod".to_string()][..], &["postgres".to_string()][..])
        );
        assert!(s.include_dev);
        assert_eq!(
            s.index_url.as_deref(),
            Some("https://pypi.example.com/simple")
        );
        assert_eq!(s.layer_budget, 60);
        assert_eq!(s.source_url.as_deref(), Some("https://github.com/acme/api"));
        assert_eq!(s.revision.as_deref(), Some("4f2c1e9"));
        assert_eq!(s.exclude, ["tests/", "*.md"]);
    }

    #[test]
    fn keys_table_and_raw_struct_agree() {
        // A value of the declared type for every key must deserialise into Raw.
        let mut table = toml::Table::new();
        for (key, ty, _) in KEYS {
            let v = match ty {
                Type::Str => toml::Value::String("x".into()),
                Type::Int => toml::Value::Integer(1),
                Type::Bool => toml::Value::Boolean(true),
                Type::StrList => toml::Value::Array(vec![]),
                Type::StrMap => toml::Value::Table(toml::Table::new()),
            };
            table.insert(key.to_string(), v);
        }
        let raw: Raw = toml::Value::Table(table).try_into().unwrap();
        assert!(
            raw.base.is_some()
                && raw.exclude.is_some()
                && raw.layer_budget.is_some()
                && raw.app_dir.is_some()
        );
        // And each key's example parses as that key.
        for (key, _, example) in KEYS {
            let t: toml::Table = example.parse().unwrap();
            assert!(t.contains_key(*key), "{example}");
        }
    }

    #[test]
    fn default_lockfile_is_the_first_found_in_source() {
        let p = Project::new();
        p.write(SPEC_FILE, MINIMAL)
            .write("requirements.txt", "")
            .write("pylock.toml", "");
        assert_eq!(
            p.load().unwrap().lockfile,
            Some(p.path().join("pylock.toml"))
        );
        p.write("uv.lock", "");
        assert_eq!(p.load().unwrap().lockfile, Some(p.path().join("uv.lock")));
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_files_directory() {
        let p = Project::new();
        p.write(
            "deploy/imgbuild.toml",
            &format!("{MINIMAL}source = \"../svc\"\n"),
        )
        .write("svc/main.py", "");
        let s = load(Some(Path::new("deploy/imgbuild.toml")), &p.path()).unwrap();
        assert_eq!(s.file, p.path().join("deploy/imgbuild.toml"));
        assert_eq!(s.source, p.path().join("svc"));
    }

    #[test]
    fn lookup_prefers_imgbuild_toml_then_pyproject_tool_table() {
        let p = Project::new();
        p.write(PYPROJECT_FILE, "[project]\nname = \"x\"\n\n[tool.imgbuild]\nbase = \"from-pyproject\"\napp = \"main:app\"\n");
        assert_eq!(p.load().unwrap().base, "from-pyproject");
        assert_eq!(p.load().unwrap().file, p.path().join(PYPROJECT_FILE));
        p.write(SPEC_FILE, "base = \"from-imgbuild\"\napp = \"main:app\"\n");
        assert_eq!(p.load().unwrap().base, "from-imgbuild");
    }

    #[test]
    fn pyproject_without_tool_table_is_not_a_spec() {
        let p = Project::new();
        p.write(PYPROJECT_FILE, "[project]\nname = \"x\"\n");
        let e = p.load().unwrap_err().to_string();
        assert!(e.starts_with("no imgbuild.toml in "), "{e}");
        assert!(
            e.contains("create imgbuild.toml with at least `base = "),
            "{e}"
        );
        // Named explicitly, the missing table is the error.
        let e = load(Some(Path::new(PYPROJECT_FILE)), &p.path())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "pyproject.toml: no [tool.imgbuild] table; add one with at least `base` and `app`, or put the settings in imgbuild.toml");
    }

    #[test]
    fn explicit_file_with_another_name_is_read_as_imgbuild_toml() {
        let p = Project::new();
        p.write("ci/prod.toml", MINIMAL);
        assert_eq!(
            load(Some(&p.path().join("ci/prod.toml")), &p.path())
                .unwrap()
                .app,
            "main:app"
        );
        let e = load(Some(Path::new("ci/missing.toml")), &p.path())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ci/missing.toml: cannot read it: "), "{e}");
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let p = Project::new();
        assert_eq!(
            p.err(&format!("{MINIMAL}prot = 80\n")),
            "imgbuild.toml: unknown key \"prot\" (did you mean \"port\"?)"
        );
        assert_eq!(
            p.err(&format!("{MINIMAL}app_dir = \"src\"\n")),
            "imgbuild.toml: unknown key \"app_dir\" (did you mean \"app-dir\"?)"
        );
        assert_eq!(
            p.err(&format!("{MINIMAL}frobnicate = 1\n")),
            "imgbuild.toml: unknown key \"frobnicate\""
        );
        let p = Project::new();
        p.write(
            PYPROJECT_FILE,
            "[tool.imgbuild]\nbase = \"b\"\napp = \"main:app\"\nworkrs = 2\n",
        );
        assert_eq!(
            p.load().unwrap_err().to_string(),
            "pyproject.toml: unknown key \"workrs\" in [tool.imgbuild] (did you mean \"workers\"?)"
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expected_type() {
        let p = Project::new();
        assert_eq!(
            p.err(&format!("{MINIMAL}port = \"8000\"\n")),
            "imgbuild.toml: key \"port\" must be an integer, found string"
        );
        assert_eq!(
            p.err(&format!("{MINIMAL}proxy-headers = \"yes\"\n")),
            "imgbuild.toml: key \"proxy-headers\" must be a boolean (true or false), found string"
        );
        assert_eq!(
            p.err(&format!("{MINIMAL}platforms = \"linux/amd64\"\n")),
            "imgbuild.toml: key \"platforms\" must be an array of strings, found string"
        );
        assert_eq!(
            p.err(&format!("{MINIMAL}cmd = [\"a\", 1]\n")),
            "imgbuild.toml: key \"cmd\" must be an array of strings, found integer at position 2"
        );
        assert_eq!(
            p.err(&format!("{MINIMAL}env = {{ PORT = 8000 }}\n")),
            "imgbuild.toml: key \"env.PORT\" must be a string, found integer (quote it)"
        );
        let p = Project::new();
        p.write(PYPROJECT_FILE, "[tool]\nimgbuild = 3\n");
        let e = load(Some(Path::new(PYPROJECT_FILE)), &p.path())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "pyproject.toml: key \"tool.imgbuild\" must be a table, found integer"
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        let p = Project::new();
        assert_eq!(
            p.err("app = \"main:app\"\n"),
            "imgbuild.toml: missing required key \"base\"; for example base = \"python:3.12-slim\""
        );
        assert_eq!(
            p.err("base = \"b\"\n"),
            "imgbuild.toml: missing required key \"app\"; for example app = \"main:app\""
        );
    }

    #[test]
    fn syntax_errors_give_file_line_and_column() {
        let p = Project::new();
        let e = p.err("base = \"b\"\napp = main:app\n");
        assert!(
            e.starts_with("imgbuild.toml: invalid TOML at line 2, column 7: "),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let p = Project::new();
        let cases: &[(&str, &str)] = &[
            (
                "port = 0",
                "key \"port\": 0 is out of range; use 1 to 65535",
            ),
            ("port = 70000", "key \"port\": 70000 is out of range"),
            (
                "workers = 0",
                "key \"workers\": 0 is out of range; use 1 to",
            ),
            (
                "layer-budget = 500",
                "key \"layer-budget\": 500 is out of range; use 2 to 127",
            ),
            (
                "user = \"0:0\"",
                "key \"user\": \"0:0\" runs the service as root",
            ),
            (
                "user = \"root\"",
                "key \"user\": \"root\" must be a numeric \"uid:gid\"",
            ),
            (
                "user = \"app:app\"",
                "key \"user\": \"app:app\" must be a numeric",
            ),
            (
                "workdir = \"app\"",
                "key \"workdir\": \"app\" must be an absolute path in the image",
            ),
            (
                "workdir = \"/app/../etc\"",
                "key \"workdir\": \"/app/../etc\": contains `..`",
            ),
            ("venv = \"/\"", "key \"venv\": \"/\": names the root"),
            (
                "venv = \"/app\"",
                "key \"venv\": /app would hold the workdir /app",
            ),
            ("platforms = []", "key \"platforms\": is empty"),
            (
                "platforms = [\"linux/amd46\"]",
                "key \"platforms\": invalid platform \"linux/amd46\"",
            ),
            (
                "platforms = [\"windows/amd64\"]",
                "key \"platforms\": \"windows/amd64\": imgbuild builds Linux images only",
            ),
            (
                "platforms = [\"linux/mips64le\"]",
                "key \"platforms\": platform linux/mips64le has no Python wheel architecture",
            ),
            (
                "platforms = [\"linux/arm64\", \"linux/arm64/v8\"]",
                "key \"platforms\": \"linux/arm64/v8\" repeats linux/arm64",
            ),
            ("entrypoint = []", "key \"entrypoint\": is empty"),
            (
                "env = { \"A=B\" = \"x\" }",
                "key \"env\": \"A=B\" is not a valid variable name",
            ),
            (
                "labels = { \"\" = \"x\" }",
                "key \"labels\": has an empty name",
            ),
            (
                "groups = [\"-x\"]",
                "key \"groups\": \"-x\" is not a valid name",
            ),
            (
                "index-url = \"pypi.example.com\"",
                "key \"index-url\": \"pypi.example.com\" must start with https://",
            ),
            (
                "exclude = [\"ok\", \"[\"]",
                "key \"exclude\": item 2: invalid pattern \"[\"",
            ),
            ("lockfile = \"nope.lock\"", "key \"lockfile\": "),
            ("source = \"nowhere\"", "key \"source\": "),
            (
                "app-dir = \"/abs\"",
                "key \"app-dir\": \"/abs\" must be a directory relative to the workdir",
            ),
        ];
        for (line, want) in cases {
            let e = p.err(&format!("{MINIMAL}{line}\n"));
            assert!(e.starts_with("imgbuild.toml: "), "{e}");
            assert!(e.contains(want), "for {line}: {e}");
        }
        let e = p.err(&format!("{MINIMAL}source = \"nowhere\"\n"));
        assert!(
            e.contains(&format!(
                "{} does not exist",
                p.path().join("nowhere").display()
            )),
            "{e}"
        );
        p.write("file.txt", "");
        let e = p.err(&format!("{MINIMAL}source = \"file.txt\"\n"));
        assert!(e.contains("file.txt is not a directory"), "{e}");
        let e = p.err("base = \"\"\napp = \"main:app\"\n");
        assert!(
            e.starts_with("imgbuild.toml: key \"base\": is empty"),
            "{e}"
        );
    }

    #[test]
    fn app_must_be_module_colon_attribute() {
        for ok in [
            "main:app",
            "myapi.server:app",
            "pkg._internal.web:create_app",
            "m:app.router",
            "café:app",
        ] {
            assert!(is_app_reference(ok), "{ok}");
        }
        let p = Project::new();
        for bad in [
            "main",
            "main.app",
            ":app",
            "main:",
            "main:app:x",
            "1main:app",
            "my-api:app",
            "main:app()",
            "main..x:app",
        ] {
            let e = p.err(&format!("base = \"b\"\napp = \"{bad}\"\n"));
            assert!(
                e.starts_with(&format!(
                    "imgbuild.toml: key \"app\": {bad:?} is not \"module.path:attribute\""
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn messages_show_paths_outside_cwd_in_full() {
        let p = Project::new();
        let elsewhere = Project::new();
        elsewhere.write(SPEC_FILE, "base = 1\napp = \"main:app\"\n");
        let e = load(Some(&elsewhere.path().join(SPEC_FILE)), &p.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}: key \"base\"",
                elsewhere.path().join(SPEC_FILE).display()
            )),
            "{e}"
        );
    }

    fn spec_with(extra: &str) -> Spec {
        let p = Project::new();
        p.write(SPEC_FILE, &format!("{MINIMAL}{extra}"));
        p.load().unwrap()
    }

    #[test]
    fn default_command_runs_uvicorn_from_the_venv() {
        let s = spec_with("");
        assert_eq!(
            s.default_command(),
            [
                "/app/.venv/bin/uvicorn",
                "main:app",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--workers",
                "1"
            ]
        );
        let s = spec_with("venv = \"/opt/venv\"\nport = 9000\nworkers = 3\nproxy-headers = true\napp-dir = \"src\"\n");
        assert_eq!(
            s.default_command(),
            [
                "/opt/venv/bin/uvicorn",
                "main:app",
                "--host",
                "0.0.0.0",
                "--port",
                "9000",
                "--workers",
                "3",
                "--proxy-headers",
                "--app-dir",
                "src"
            ]
        );
    }

    #[test]
    fn overrides_replace_the_default_command() {
        let s = spec_with("");
        assert_eq!(
            s.effective_entrypoint_cmd(),
            EntrypointCmd {
                entrypoint: None,
                cmd: Some(s.default_command())
            }
        );
        let s = spec_with("cmd = [\"python\", \"-m\", \"api\"]\n");
        assert_eq!(
            s.effective_entrypoint_cmd(),
            EntrypointCmd {
                entrypoint: None,
                cmd: Some(vec!["python".into(), "-m".into(), "api".into()])
            }
        );
        let s = spec_with("entrypoint = [\"/bin/run\"]\n");
        assert_eq!(
            s.effective_entrypoint_cmd(),
            EntrypointCmd {
                entrypoint: Some(vec!["/bin/run".into()]),
                cmd: None
            }
        );
        let s = spec_with("entrypoint = [\"/bin/run\"]\ncmd = [\"--fast\"]\n");
        assert_eq!(
            s.effective_entrypoint_cmd(),
            EntrypointCmd {
                entrypoint: Some(vec!["/bin/run".into()]),
                cmd: Some(vec!["--fast".into()])
            }
        );
    }

    #[test]
    fn app_excludes_add_the_venv_inside_the_workdir() {
        assert_eq!(
            spec_with("exclude = [\"tests\"]\n").app_excludes(),
            ["tests", ".venv"]
        );
        assert_eq!(
            spec_with("venv = \"/opt/venv\"\n").app_excludes(),
            Vec::<String>::new()
        );
        assert_eq!(
            spec_with("venv = \"/app/env[1]\"\n").app_excludes(),
            ["env\\[1\\]"]
        );
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("port", "port"), 0);
        assert_eq!(edit_distance("wrkers", "workers"), 1);
        assert_eq!(edit_distance("abc", "xyz"), 3);
    }
}
