//! Where the package index comes from when a lock names files but no URLs
//! (poetry.lock, pdm.lock, requirements.txt): the settings Python tools
//! already keep, read in the order uv and pip read them.
//!
//! 1. `UV_DEFAULT_INDEX`, `UV_INDEX_URL`, `PIP_INDEX_URL`;
//! 2. uv's settings: `UV_CONFIG_FILE` alone when set; otherwise the project's
//!    `uv.toml`, or its `pyproject.toml` `[tool.uv]` (the first directory from
//!    the lockfile's upward that has either), then the user's `uv.toml`, then
//!    the system's. In each, `[[index]]` with `default = true`, else `index-url`;
//! 3. pip's settings: `PIP_CONFIG_FILE`, the site file (`$VIRTUAL_ENV/pip.conf`),
//!    the user files, the global files; `[install]` beats `[global]`.
//!
//! Extra indexes (`UV_INDEX`, `UV_EXTRA_INDEX_URL`, `PIP_EXTRA_INDEX_URL`,
//! `[[index]]` entries without `default`, `extra-index-url`) are tried after
//! the default one. Credentials come from the index URL, from
//! `UV_INDEX_<NAME>_USERNAME`/`_PASSWORD` for named indexes, or from netrc.
//! They are taken out of the URLs here, so no URL that is shown or stored
//! carries them.
//!
//! Everything is read through [`Inputs`], so tests inject the environment and
//! the file system roots instead of touching the process's.

use crate::project_file::{read_optional_text, Place, ProjectFileError, SETTINGS_LIMIT};
use reqwest::Url;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IndexConfigError {
    /// Unreadable, not a regular file, outside the project directory it was
    /// found in, or too large.
    #[error(transparent)]
    File(ProjectFileError),
    #[error("{path} is not valid TOML: {reason}")]
    Toml { path: String, reason: String },
    #[error("{origin}: `{url}` is not an index URL; write it as https://HOST/PATH (or http:// or file://)")]
    BadUrl { origin: String, url: String },
}

/// What the resolver may read: the environment and where files live.
pub struct Inputs<'a> {
    pub getenv: &'a dyn Fn(&str) -> Option<String>,
    /// The lockfile's directory: the project settings are looked for here and above.
    pub project_dir: &'a Path,
    /// The user's home directory (`HOME`), for `~/.config`, `~/.pip` and `~/.netrc`.
    pub home: Option<PathBuf>,
    /// Prefix of the system paths (`/etc/...`): `/`, or a temp dir in tests.
    pub system_root: PathBuf,
}

impl<'a> Inputs<'a> {
    /// The real environment and file system.
    pub fn from_process(getenv: &'a dyn Fn(&str) -> Option<String>, project_dir: &'a Path) -> Self {
        Inputs {
            getenv,
            project_dir,
            home: getenv("HOME").filter(|h| !h.is_empty()).map(PathBuf::from),
            system_root: PathBuf::from("/"),
        }
    }

    fn var(&self, key: &str) -> Option<String> {
        (self.getenv)(key).filter(|v| !v.trim().is_empty())
    }

    fn system(&self, path: &str) -> PathBuf {
        self.system_root.join(path.trim_start_matches('/'))
    }

    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    fn user_config_dir(&self) -> Option<PathBuf> {
        self.var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")))
    }

    /// `$XDG_CONFIG_DIRS` (colon-separated), else `/etc/xdg`.
    fn system_config_dirs(&self) -> Vec<PathBuf> {
        match self.var("XDG_CONFIG_DIRS") {
            Some(dirs) => dirs
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| self.system(d))
                .collect(),
            None => vec![self.system("/etc/xdg")],
        }
    }
}

/// An index URL (without credentials) and the setting it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredIndex {
    pub url: String,
    pub origin: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSettings {
    pub default: Option<ConfiguredIndex>,
    pub extra: Vec<ConfiguredIndex>,
    /// Every setting that was looked at, in order, for the message when none is set.
    pub read: Vec<String>,
    pub credentials: Credentials,
}

impl IndexSettings {
    /// The default index, then the extra ones, without repeats.
    pub fn urls(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in self.default.iter().chain(&self.extra) {
            if !out.contains(&i.url) {
                out.push(i.url.clone());
            }
        }
        out
    }

    /// For errors: "read A, B, C".
    pub fn describe_read(&self) -> String {
        format!("read {}", self.read.join(", "))
    }

    /// Puts `url` (from `origin`) ahead of every other setting; its credentials
    /// move into `credentials`. Returns the URL without them.
    pub fn set_default(&mut self, url: &str, origin: &str) -> Result<String, IndexConfigError> {
        let (bare, creds) = split_credentials(url).ok_or_else(|| IndexConfigError::BadUrl {
            origin: origin.to_owned(),
            url: redact(url),
        })?;
        if let Some((o, c)) = creds {
            self.credentials.index_origins.push(o.clone());
            self.credentials.by_origin.insert(o, c);
        }
        self.default = Some(ConfiguredIndex {
            url: bare.clone(),
            origin: origin.to_owned(),
        });
        Ok(bare)
    }
}

/// Credentials per origin (`scheme://host[:port]`). Debug never shows passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_origin: BTreeMap<String, (String, Option<String>)>,
    netrc: Vec<NetrcEntry>,
    /// Origins of the configured indexes: netrc's `default` entry applies only to them.
    index_origins: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("origins", &self.by_origin.keys().collect::<Vec<_>>())
            .field("netrc_entries", &self.netrc.len())
            .finish()
    }
}

impl Credentials {
    /// The username and password to send with a request to `url`, if any.
    pub fn for_url(&self, url: &str) -> Option<(String, Option<String>)> {
        let parsed = Url::parse(url).ok()?;
        let origin = parsed.origin().ascii_serialization();
        if let Some(c) = self.by_origin.get(&origin) {
            return Some(c.clone());
        }
        let host = parsed.host_str()?;
        let entry = self
            .netrc
            .iter()
            .find(|e| e.machine.as_deref() == Some(host))
            .or_else(|| {
                self.index_origins
                    .contains(&origin)
                    .then(|| self.netrc.iter().find(|e| e.machine.is_none()))
                    .flatten()
            })?;
        Some((entry.login.clone()?, entry.password.clone()))
    }

    /// Adds basic auth to a request for `url` when credentials are known for it.
    pub fn apply(
        &self,
        url: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match self.for_url(url) {
            Some((user, password)) => request.basic_auth(user, password),
            None => request,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NetrcEntry {
    /// None for the `default` entry.
    machine: Option<String>,
    login: Option<String>,
    password: Option<String>,
}

/// Reads every setting and returns the indexes to use.
pub fn resolve(inputs: &Inputs) -> Result<IndexSettings, IndexConfigError> {
    let mut s = IndexSettings::default();
    let mut found = Found::default();
    // 1. The environment.
    read_env_indexes(inputs, &mut s, &mut found)?;
    // 2. uv's settings files.
    let uv_default = read_uv_indexes(inputs, &mut s, &mut found)?;
    // 3. pip's configuration files.
    let (pip_default, pip_extra) = read_pip_indexes(inputs, &mut s.read, &mut found)?;
    s.default = s.default.or(uv_default).or(pip_default);
    s.extra.extend(pip_extra.unwrap_or_default());
    s.credentials = collect_credentials(inputs, &s, found)?;
    Ok(s)
}

/// What reading the settings learns besides the indexes: the named ones (for
/// their `UV_INDEX_<NAME>_*` credentials) and the credentials in the URLs.
#[derive(Default)]
struct Found {
    named: Vec<(String, String)>,
    url_credentials: BTreeMap<String, (String, Option<String>)>,
}

impl Found {
    /// The index at `url` (set by `origin`), its credentials taken out of the
    /// URL and kept (the first seen for an origin wins).
    fn take(&mut self, url: &str, origin: String) -> Result<ConfiguredIndex, IndexConfigError> {
        let (url, creds) = split_credentials(url).ok_or_else(|| IndexConfigError::BadUrl {
            origin: origin.clone(),
            url: redact(url),
        })?;
        if let Some((o, c)) = creds {
            self.url_credentials.entry(o).or_insert(c);
        }
        Ok(ConfiguredIndex { url, origin })
    }
}

/// `UV_DEFAULT_INDEX`/`UV_INDEX_URL`/`PIP_INDEX_URL` (the first set) as the
/// default, then `UV_INDEX`, `UV_EXTRA_INDEX_URL`, `PIP_EXTRA_INDEX_URL` as extras.
fn read_env_indexes(
    inputs: &Inputs,
    s: &mut IndexSettings,
    found: &mut Found,
) -> Result<(), IndexConfigError> {
    s.read
        .push("UV_DEFAULT_INDEX, UV_INDEX_URL, PIP_INDEX_URL".into());
    for key in ["UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"] {
        if let Some(v) = inputs.var(key) {
            s.default = Some(found.take(v.trim(), key.into())?);
            break;
        }
    }
    if let Some(v) = inputs.var("UV_INDEX") {
        for item in v.split_whitespace() {
            let (name, url) = split_named(item);
            let index = found.take(url, "UV_INDEX".into())?;
            if let Some(name) = name {
                found.named.push((name.to_owned(), index.url.clone()));
            }
            s.extra.push(index);
        }
    }
    for key in ["UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"] {
        for url in inputs.var(key).iter().flat_map(|v| v.split_whitespace()) {
            s.extra.push(found.take(url, key.into())?);
        }
    }
    Ok(())
}

/// Reads uv's settings files: their extra indexes go into `s.extra`; the
/// default index of the most important file that names one is returned.
fn read_uv_indexes(
    inputs: &Inputs,
    s: &mut IndexSettings,
    found: &mut Found,
) -> Result<Option<ConfiguredIndex>, IndexConfigError> {
    let mut uv_default: Option<ConfiguredIndex> = None;
    for file in uv_files(inputs, &mut s.read)? {
        read_uv_file(&file, &mut uv_default, &mut s.extra, found)?;
    }
    Ok(uv_default)
}

/// One uv settings file: `[[index]]` entries (`default = true` ones, and
/// `index-url`, fill `uv_default` if still empty; `explicit` ones are only
/// named), then `extra-index-url`.
fn read_uv_file(
    file: &UvFile,
    uv_default: &mut Option<ConfiguredIndex>,
    extra: &mut Vec<ConfiguredIndex>,
    found: &mut Found,
) -> Result<(), IndexConfigError> {
    let shown = file.path.display().to_string();
    let table = if file.pyproject {
        match file.table.get("tool").and_then(|t| t.get("uv")) {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => return Ok(()),
        }
    } else {
        file.table.clone()
    };
    let key_origin = |key: &str| {
        if file.pyproject {
            format!("{shown} [tool.uv] {key}")
        } else {
            format!("{shown} {key}")
        }
    };
    for entry in table
        .get("index")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(url) = entry.get("url").and_then(toml::Value::as_str) else {
            continue;
        };
        let name = entry.get("name").and_then(toml::Value::as_str);
        let is = |k: &str| entry.get(k).and_then(toml::Value::as_bool) == Some(true);
        let origin = match name {
            Some(n) => key_origin(&format!("index `{n}`")),
            None => key_origin("index"),
        };
        let index = found.take(url, origin)?;
        if let Some(n) = name {
            found.named.push((n.to_owned(), index.url.clone()));
        }
        if is("default") {
            uv_default.get_or_insert(index);
        } else if !is("explicit") {
            extra.push(index);
        }
    }
    if let Some(url) = table.get("index-url").and_then(toml::Value::as_str) {
        let index = found.take(url, key_origin("index-url"))?;
        uv_default.get_or_insert(index);
    }
    for url in table
        .get("extra-index-url")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
    {
        extra.push(found.take(url, key_origin("extra-index-url"))?);
    }
    Ok(())
}

/// pip's `index-url` and `extra-index-url`, each from the first file and
/// section that sets it.
fn read_pip_indexes(
    inputs: &Inputs,
    read: &mut Vec<String>,
    found: &mut Found,
) -> Result<(Option<ConfiguredIndex>, Option<Vec<ConfiguredIndex>>), IndexConfigError> {
    let mut pip_default: Option<ConfiguredIndex> = None;
    let mut pip_extra: Option<Vec<ConfiguredIndex>> = None;
    // pip merges its files key by key, and a command's section beats `[global]`
    // whichever file each comes from.
    let mut pip_inis = Vec::new();
    for path in pip_files(inputs, read) {
        if let Some(text) = read_optional(&path, Place::Anywhere)? {
            pip_inis.push((path.display().to_string(), parse_ini(&text)));
        }
    }
    for section in ["install", "global"] {
        for (shown, ini) in &pip_inis {
            let get = |key: &str| {
                ini.get(&(section.to_owned(), key.to_owned()))
                    .or_else(|| ini.get(&(section.to_owned(), key.replace('-', "_"))))
            };
            if pip_default.is_none() {
                if let Some(url) = get("index-url").filter(|u| !u.trim().is_empty()) {
                    let origin = format!("{shown} [{section}] index-url");
                    pip_default = Some(found.take(url.trim(), origin)?);
                }
            }
            if pip_extra.is_none() {
                if let Some(urls) = get("extra-index-url") {
                    let mut list = Vec::new();
                    for url in urls.split_whitespace() {
                        let origin = format!("{shown} [{section}] extra-index-url");
                        list.push(found.take(url, origin)?);
                    }
                    pip_extra = Some(list);
                }
            }
        }
    }
    Ok((pip_default, pip_extra))
}

/// Credentials: from the URLs, then UV_INDEX_<NAME>_USERNAME/PASSWORD, then netrc.
fn collect_credentials(
    inputs: &Inputs,
    s: &IndexSettings,
    found: Found,
) -> Result<Credentials, IndexConfigError> {
    let mut by_origin = found.url_credentials;
    for (name, url) in &found.named {
        let key = env_name(name);
        let user = inputs.var(&format!("UV_INDEX_{key}_USERNAME"));
        let password = inputs.var(&format!("UV_INDEX_{key}_PASSWORD"));
        if user.is_some() || password.is_some() {
            if let Some(o) = origin_of(url) {
                by_origin
                    .entry(o)
                    .or_insert((user.unwrap_or_default(), password));
            }
        }
    }
    let netrc_path = inputs
        .var("NETRC")
        .map(PathBuf::from)
        .or_else(|| inputs.home.as_ref().map(|h| h.join(".netrc")));
    let netrc = match &netrc_path {
        Some(p) => read_optional(p, Place::Anywhere)?
            .map(|t| parse_netrc(&t))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let index_origins = s
        .default
        .iter()
        .chain(&s.extra)
        .filter_map(|i| origin_of(&i.url))
        .collect();
    Ok(Credentials {
        by_origin,
        netrc,
        index_origins,
    })
}

struct UvFile {
    path: PathBuf,
    pyproject: bool,
    table: toml::Table,
}

/// uv's settings files, most important first.
fn uv_files(inputs: &Inputs, read: &mut Vec<String>) -> Result<Vec<UvFile>, IndexConfigError> {
    // `place`: a file found beside the project must lie in the directory it
    // was found in; the others are the user's own, named or in their places.
    let load = |path: PathBuf,
                pyproject: bool,
                place: Place|
     -> Result<Option<UvFile>, IndexConfigError> {
        let Some(text) = read_optional(&path, place)? else {
            return Ok(None);
        };
        // The message only: the full error quotes the file's text, and the
        // file may be any file of the host.
        let table = toml::from_str(&text).map_err(|e: toml::de::Error| IndexConfigError::Toml {
            path: path.display().to_string(),
            reason: e.message().trim().replace('\n', "; "),
        })?;
        Ok(Some(UvFile {
            path,
            pyproject,
            table,
        }))
    };
    if inputs
        .var("UV_NO_CONFIG")
        .is_some_and(|v| v != "0" && v != "false")
    {
        read.push("no uv settings files (UV_NO_CONFIG is set)".into());
        return Ok(Vec::new());
    }
    if let Some(file) = inputs.var("UV_CONFIG_FILE") {
        read.push(format!("{file} (UV_CONFIG_FILE)"));
        let path = PathBuf::from(&file);
        return match load(path, false, Place::Anywhere)? {
            Some(f) => Ok(vec![f]),
            None => Err(IndexConfigError::File(ProjectFileError::Io {
                path: PathBuf::from(file),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })),
        };
    }
    let mut out = Vec::new();
    // The project: the first directory upward with a uv.toml, or a pyproject.toml with [tool.uv].
    let mut searched = Vec::new();
    for dir in inputs.project_dir.ancestors() {
        if let Some(f) = load(dir.join("uv.toml"), false, Place::Within(dir))? {
            out.push(f);
            break;
        }
        if let Some(f) = load(dir.join("pyproject.toml"), true, Place::Within(dir))? {
            if f.table.get("tool").and_then(|t| t.get("uv")).is_some() {
                out.push(f);
                break;
            }
            searched.push(f.path.display().to_string());
        }
    }
    match out.first() {
        Some(f) if f.pyproject => read.push(format!("{} [tool.uv]", f.path.display())),
        Some(f) => read.push(f.path.display().to_string()),
        None => read.push(format!(
            "no uv.toml or pyproject.toml [tool.uv] in {} or above",
            inputs.project_dir.display()
        )),
    }
    let user = inputs.user_config_dir().map(|d| d.join("uv/uv.toml"));
    let mut system: Vec<PathBuf> = inputs
        .system_config_dirs()
        .into_iter()
        .map(|d| d.join("uv/uv.toml"))
        .collect();
    system.push(inputs.system("/etc/uv/uv.toml"));
    for path in user.into_iter() {
        read.push(path.display().to_string());
        if let Some(f) = load(path, false, Place::Anywhere)? {
            out.push(f);
        }
    }
    // uv reads the first system file that exists.
    for path in system {
        read.push(path.display().to_string());
        if let Some(f) = load(path, false, Place::Anywhere)? {
            out.push(f);
            break;
        }
    }
    Ok(out)
}

/// pip's configuration files, most important first (pip's own order, inverted).
fn pip_files(inputs: &Inputs, read: &mut Vec<String>) -> Vec<PathBuf> {
    let env_file = inputs.var("PIP_CONFIG_FILE").map(PathBuf::from);
    if env_file.as_deref() == Some(Path::new("/dev/null")) {
        read.push("no pip configuration files (PIP_CONFIG_FILE is /dev/null)".into());
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(f) = &env_file {
        out.push(f.clone());
    }
    if let Some(venv) = inputs.var("VIRTUAL_ENV") {
        out.push(PathBuf::from(venv).join("pip.conf"));
    }
    // pip skips the user files when PIP_CONFIG_FILE names a file that exists.
    if !env_file.as_ref().is_some_and(|f| f.is_file()) {
        if let Some(dir) = inputs.user_config_dir() {
            out.push(dir.join("pip/pip.conf"));
        }
        if let Some(home) = &inputs.home {
            out.push(home.join(".pip/pip.conf"));
        }
    }
    out.push(inputs.system("/etc/pip.conf"));
    let mut xdg: Vec<PathBuf> = inputs
        .system_config_dirs()
        .into_iter()
        .map(|d| d.join("pip/pip.conf"))
        .collect();
    xdg.reverse();
    out.extend(xdg);
    read.extend(out.iter().map(|p| p.display().to_string()));
    out
}

/// A settings file's text, or None when it does not exist: a regular file of
/// at most [`SETTINGS_LIMIT`], inside the directory it was found in when
/// imgbuild looked for it beside the project (`place`).
fn read_optional(path: &Path, place: Place) -> Result<Option<String>, IndexConfigError> {
    read_optional_text(path, place, SETTINGS_LIMIT).map_err(IndexConfigError::File)
}

/// `(section, key)` → value, as pip's configparser reads it: keys lower case,
/// indented lines continue the previous value, `#` and `;` start comment lines.
fn parse_ini(text: &str) -> BTreeMap<(String, String), String> {
    let mut out: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut section = String::new();
    let mut last: Option<(String, String)> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            if let Some(v) = last.as_ref().and_then(|k| out.get_mut(k)) {
                v.push('\n');
                v.push_str(line);
            }
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            last = None;
            continue;
        }
        let Some(i) = line.find(['=', ':']) else {
            continue;
        };
        let key = (section.clone(), line[..i].trim().to_ascii_lowercase());
        out.insert(key.clone(), line[i + 1..].trim().to_owned());
        last = Some(key);
    }
    out
}

fn parse_netrc(text: &str) -> Vec<NetrcEntry> {
    let mut out: Vec<NetrcEntry> = Vec::new();
    let mut tokens = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace);
    while let Some(tok) = tokens.next() {
        match tok {
            "machine" => out.push(NetrcEntry {
                machine: tokens.next().map(str::to_owned),
                ..Default::default()
            }),
            "default" => out.push(NetrcEntry::default()),
            "login" | "password" | "account" => {
                let value = tokens.next().map(str::to_owned);
                if let Some(e) = out.last_mut() {
                    match tok {
                        "login" => e.login = value,
                        "password" => e.password = value,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `name=url` (uv's `UV_INDEX` form) or a bare URL.
fn split_named(item: &str) -> (Option<&str>, &str) {
    match item.split_once('=') {
        Some((name, url)) if !name.contains(':') && !name.contains('/') => (Some(name), url),
        _ => (None, item),
    }
}

/// uv's rule for `UV_INDEX_<NAME>_…`: upper case, non-alphanumerics become `_`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn origin_of(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    u.host_str()?;
    Some(u.origin().ascii_serialization())
}

type UrlCredentials = (String, (String, Option<String>));

/// The URL without user and password, and those (decoded) with the URL's origin.
fn split_credentials(url: &str) -> Option<(String, Option<UrlCredentials>)> {
    if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("file://")) {
        return None;
    }
    let mut u = Url::parse(url).ok()?;
    if u.username().is_empty() && u.password().is_none() {
        return Some((url.to_owned(), None));
    }
    let user = super::percent_decode(u.username());
    let password = u.password().map(super::percent_decode);
    let origin = u.origin().ascii_serialization();
    u.set_username("").ok()?;
    u.set_password(None).ok()?;
    Some((u.to_string(), Some((origin, (user, password)))))
}

/// A URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `urls` for a message, each [`redact`]ed, joined with ", ".
pub fn redact_all(urls: &[String]) -> String {
    urls.iter()
        .map(|u| redact(u))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
