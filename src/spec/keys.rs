//! The first pass over the settings table: every key known, of the right
//! TOML type, and the required ones present. Values are checked in
//! [`super::values`].

use super::{Origin, SpecError};
use serde::Deserialize;
use std::collections::BTreeMap;
use Provenance::{NotRecorded, Recorded, RecordedApart};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    Str,
    Int,
    Bool,
    StrList,
    StrMap,
    /// A table checked key by key by its own parser (`deploy`).
    Table,
    /// `bytecode`: a boolean or one of a few strings (checked in values).
    BoolOrStr,
}

impl Type {
    fn expected(self) -> &'static str {
        match self {
            Type::Str => "a string",
            Type::Int => "an integer",
            Type::Bool => "a boolean (true or false)",
            Type::StrList => "an array of strings",
            Type::StrMap => "a table of strings",
            Type::Table => "a table",
            Type::BoolOrStr => "true, false or \"unchecked-hash\"",
        }
    }
}

/// Whether a key can change the image (its digest), which decides what the
/// provenance records: every key is classified here, so a new one cannot be
/// left out by accident (attest's tests check it records exactly the
/// `Recorded` ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// Can change the image: recorded among the spec's settings, under its
    /// name with `_` for `-`.
    Recorded,
    /// Can change the image, and recorded another way: `platforms` as the
    /// platforms built, `index-url` as each wheel's URL and hash (the URL
    /// itself may hold a token).
    RecordedApart,
    /// Cannot change the image: it shapes only what `imgbuild manifests` and
    /// `resolve` write (`image`, `init`, `health`, `deploy`), or relaxes a
    /// check (`allow-missing-libraries`).
    NotRecorded,
}

/// Every key, its TOML type, an example line (used in docs and in the
/// message for a missing required key) and what provenance does with it.
/// Kept in step with `Raw` by a test.
#[rustfmt::skip]
pub(super) const KEYS: &[(&str, Type, &str, Provenance)] = &[
    ("base", Type::Str, r#"base = "python:3.12-slim""#, Recorded),
    ("source", Type::Str, r#"source = ".""#, Recorded),
    ("workdir", Type::Str, r#"workdir = "/app""#, Recorded),
    ("venv", Type::Str, r#"venv = "/app/.venv""#, Recorded),
    ("lockfile", Type::Str, r#"lockfile = "uv.lock""#, Recorded),
    // issue 23: the member of a uv workspace the image is for.
    ("package", Type::Str, r#"package = "backend""#, Recorded),
    ("app", Type::Str, r#"app = "main:app""#, Recorded),
    ("app-dir", Type::Str, r#"app-dir = "src""#, Recorded),
    ("port", Type::Int, "port = 8000", Recorded),
    ("workers", Type::Int, "workers = 1", Recorded),
    ("proxy-headers", Type::Bool, "proxy-headers = false", Recorded),
    ("user", Type::Str, r#"user = "65532:65532""#, Recorded),
    ("env", Type::StrMap, r#"env = { LOG_LEVEL = "info" }"#, Recorded),
    ("labels", Type::StrMap, r#"labels = { team = "payments" }"#, Recorded),
    ("annotations", Type::StrMap, r#"annotations = { "org.opencontainers.image.title" = "api" }"#, Recorded),
    ("platforms", Type::StrList, r#"platforms = ["linux/amd64", "linux/arm64"]"#, RecordedApart),
    ("entrypoint", Type::StrList, r#"entrypoint = ["/app/.venv/bin/python", "-m", "myapi"]"#, Recorded),
    ("cmd", Type::StrList, r#"cmd = ["--log-level", "info"]"#, Recorded),
    ("groups", Type::StrList, r#"groups = ["prod"]"#, Recorded),
    ("extras", Type::StrList, r#"extras = ["postgres"]"#, Recorded),
    ("include-dev", Type::Bool, "include-dev = false", Recorded),
    ("index-url", Type::Str, r#"index-url = "https://pypi.example.com/simple""#, RecordedApart),
    ("layer-budget", Type::Int, "layer-budget = 100", Recorded),
    ("source-url", Type::Str, r#"source-url = "https://github.com/acme/api""#, Recorded),
    ("revision", Type::Str, r#"revision = "4f2c1e9""#, Recorded),
    ("exclude", Type::StrList, r#"exclude = ["tests/", "*.md"]"#, Recorded),
    // State (issue 23): directories the image's user owns; emptyDirs in the manifests.
    ("writable", Type::StrList, r#"writable = ["logs", "/var/lib/app"]"#, Recorded),
    ("image", Type::Str, r#"image = "ghcr.io/acme/orders""#, NotRecorded),
    ("init", Type::StrList, r#"init = ["python", "-m", "app.migrate"]"#, NotRecorded),
    ("health", Type::Str, r#"health = "/health""#, NotRecorded),
    ("deploy", Type::Table, "deploy = { replicas = 2 }", NotRecorded),
    ("project-wheel", Type::Str, r#"project-wheel = "dist/myapi-1.0-cp311-cp311-manylinux_2_28_x86_64.whl""#, Recorded),
    ("allow-missing-libraries", Type::StrList, r#"allow-missing-libraries = ["libcuda.so.1"]"#, NotRecorded),
    // Bytecode (issue 9): see src/python/bytecode/.
    ("bytecode", Type::BoolOrStr, "bytecode = true", Recorded),
    ("bytecode-stdlib", Type::Bool, "bytecode-stdlib = true", Recorded),
    ("compression", Type::Str, r#"compression = "zstd""#, Recorded),
    // The sandbox the base's Python runs in (issue 21): src/sandbox/. It
    // changes no byte of the image, so provenance leaves it out.
    ("sandbox", Type::Bool, "sandbox = true", NotRecorded),
];

/// `app` is required too, unless `cmd` or `entrypoint` starts the server
/// (checked with the values).
const REQUIRED: &[&str] = &["base"];

/// Every key with what provenance does with it, in the table's order.
pub fn keys_by_provenance() -> impl Iterator<Item = (&'static str, Provenance)> {
    KEYS.iter()
        .map(|(key, _, _, provenance)| (*key, *provenance))
}

/// The table as written, after the key and type checks; `deny_unknown_fields`
/// backs up the key check.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    pub(super) base: Option<String>,
    pub(super) source: Option<String>,
    pub(super) workdir: Option<String>,
    pub(super) venv: Option<String>,
    pub(super) lockfile: Option<String>,
    pub(super) package: Option<String>,
    pub(super) app: Option<String>,
    pub(super) app_dir: Option<String>,
    pub(super) port: Option<i64>,
    pub(super) workers: Option<i64>,
    pub(super) proxy_headers: Option<bool>,
    pub(super) user: Option<String>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) annotations: Option<BTreeMap<String, String>>,
    pub(super) platforms: Option<Vec<String>>,
    pub(super) entrypoint: Option<Vec<String>>,
    pub(super) cmd: Option<Vec<String>>,
    pub(super) groups: Option<Vec<String>>,
    pub(super) extras: Option<Vec<String>>,
    pub(super) include_dev: Option<bool>,
    pub(super) index_url: Option<String>,
    pub(super) layer_budget: Option<i64>,
    pub(super) source_url: Option<String>,
    pub(super) revision: Option<String>,
    pub(super) exclude: Option<Vec<String>>,
    pub(super) writable: Option<Vec<String>>,
    pub(super) image: Option<String>,
    pub(super) init: Option<Vec<String>>,
    pub(super) health: Option<String>,
    pub(super) deploy: Option<toml::Table>,
    pub(super) project_wheel: Option<String>,
    pub(super) allow_missing_libraries: Option<Vec<String>>,
    pub(super) bytecode: Option<toml::Value>,
    pub(super) bytecode_stdlib: Option<bool>,
    pub(super) sandbox: Option<bool>,
    pub(super) compression: Option<String>,
}

/// The first pass: unknown keys, missing required keys and TOML types.
pub(super) fn check_table(table: &toml::Table, origin: &Origin) -> Result<(), SpecError> {
    for (key, value) in table {
        let Some((_, ty, _, _)) = KEYS.iter().find(|(k, _, _, _)| k == key) else {
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
                .find(|(k, _, _, _)| k == key)
                .map_or("", |(_, _, e, _)| e);
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
        (Type::Str, V::String(_))
        | (Type::Int, V::Integer(_))
        | (Type::Bool | Type::BoolOrStr, V::Boolean(_))
        | (Type::BoolOrStr, V::String(_)) => Ok(()),
        (Type::Table, V::Table(_)) => Ok(()),
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

/// The known key closest to a mistyped one, if it is close enough to be a
/// typo. Optimal string alignment counts a swap of neighbours ("prot" for
/// "port") as one edit.
pub(super) fn suggestion(key: &str) -> Option<&'static str> {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    KEYS.iter()
        .map(|(k, _, _, _)| (*k, strsim::osa_distance(&dashed, k)))
        .filter(|(k, d)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}
