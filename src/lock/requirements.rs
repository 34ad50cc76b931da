//! requirements.txt with hashes (`uv pip compile --generate-hashes`, `uv
//! export`, pip-compile): every requirement pinned with `==` and at least one
//! `--hash=sha256:`. The file names no files, so each pin is looked up on a
//! PEP 691 simple index and only the files whose sha256 the file lists are kept.

use super::index::first_found;
use super::{
    file_name_version, filename_from_url, Files, IndexFile, LockError, LockOptions, LockResult,
    LockedFile, LockedPackage, SimpleIndex,
};
use crate::python::markers::MarkerEnv;
use pep508_rs::pep440_rs::{Operator, Version};
use pep508_rs::{Requirement, VersionOrUrl};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

const MAX_INCLUDE_DEPTH: usize = 16;

/// One pinned requirement that applies to the target.
#[derive(Debug)]
struct Pin {
    name: String,
    version: String,
    hashes: BTreeSet<String>,
    /// Set for `name @ url` requirements.
    url: Option<String>,
    file: String,
    line: usize,
}

#[derive(Default)]
struct Parsed {
    pins: Vec<Pin>,
    /// The file's `--index-url`, with where it was set.
    index_url: Option<(String, String, usize)>,
    extra_index_urls: Vec<String>,
    /// `-e ./lib` lines: local projects, relative to the top file's directory (issue 8).
    editables: Vec<PathBuf>,
}

/// The index: `opts.index_url`, else the file's `--index-url`, else the
/// configured one (`opts.indexes`); extra indexes from the file, then configured.
pub fn load(
    path: &Path,
    opts: &LockOptions,
    env: &MarkerEnv,
    index: &dyn SimpleIndex,
) -> LockResult {
    let mut parsed = Parsed::default();
    let mut stack = Vec::new();
    parse_file(path, env, &mut parsed, &mut stack, true)?;
    let pins = merge(parsed.pins)?;

    let index_url = opts
        .index_url
        .clone()
        .or_else(|| parsed.index_url.as_ref().map(|(u, _, _)| u.clone()))
        .or_else(|| opts.indexes.default.as_ref().map(|i| i.url.clone()));
    let mut indexes: Vec<String> = index_url.into_iter().collect();
    for url in parsed
        .extra_index_urls
        .into_iter()
        .chain(opts.indexes.extra.iter().map(|i| i.url.clone()))
    {
        if !indexes.contains(&url) {
            indexes.push(url);
        }
    }

    let mut out = Vec::new();
    for pin in pins {
        out.push(match &pin.url {
            Some(url) => direct_url_package(&pin, url)?,
            None => index_package(&pin, &indexes, index, &opts.indexes)?,
        });
    }
    Ok(out)
}

/// The `-e DIR` lines of a requirements file (and of the files it includes),
/// as local packages relative to the file's directory (issue 8).
pub fn local_packages(path: &Path, env: &MarkerEnv) -> Result<Vec<super::LocalPackage>, LockError> {
    let mut parsed = Parsed::default();
    parse_file(path, env, &mut parsed, &mut Vec::new(), true)?;
    let top = path.parent().unwrap_or(Path::new("."));
    Ok(parsed
        .editables
        .into_iter()
        .map(|dir| super::LocalPackage {
            name: String::new(),
            version: None,
            path: dir.strip_prefix(top).map(Path::to_path_buf).unwrap_or(dir),
            editable: true,
        })
        .collect())
}

fn parse_file(
    path: &Path,
    env: &MarkerEnv,
    parsed: &mut Parsed,
    stack: &mut Vec<PathBuf>,
    install: bool,
) -> Result<(), LockError> {
    let shown = path.display().to_string();
    let text = super::read_text(path)?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    if stack.contains(&canonical) || stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(LockError::Invalid {
            path: shown,
            message: "is included recursively (-r/-c loop); remove the loop".into(),
        });
    }
    stack.push(canonical);
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    for (line_no, line) in logical_lines(&text) {
        let err = |message: String| LockError::Line {
            path: shown.clone(),
            line: line_no,
            message,
        };
        if line.starts_with('-') {
            let (option, value) = split_option(&line);
            let need = || {
                value
                    .clone()
                    .ok_or_else(|| err(format!("`{option}` needs a value")))
            };
            match option.as_str() {
                "-i" | "--index-url" => {
                    let url = need()?;
                    match &parsed.index_url {
                        Some((other, f, l)) if *other != url => {
                            return Err(err(format!(
                                "a second --index-url `{url}` (the first, `{other}`, is at {f}:{l}); keep one"
                            )))
                        }
                        _ => parsed.index_url = Some((url, shown.clone(), line_no)),
                    }
                }
                "--extra-index-url" => parsed.extra_index_urls.push(need()?),
                "-r" | "--requirement" => parse_file(&dir.join(need()?), env, parsed, stack, install)?,
                // Everything is pinned, so constraints add nothing; the file must still exist.
                "-c" | "--constraint" => parse_file(&dir.join(need()?), env, parsed, stack, false)?,
                "-e" | "--editable" => {
                    // issue 8: a local project, installed like the lock's editable members.
                    let value = need()?;
                    if value.contains("://") || value.starts_with("git+") {
                        return Err(err(format!(
                            "`-e {value}` is not a local directory; imgbuild installs local projects and wheels only: build a wheel and list it pinned with its hash"
                        )));
                    }
                    if install {
                        parsed.editables.push(dir.join(value));
                    }
                }
                "-f" | "--find-links" | "--no-index" => {
                    return Err(err(format!(
                        "`{option}` is not supported: imgbuild finds files on a simple index (--index-url)"
                    )))
                }
                "--trusted-host" | "--only-binary" | "--no-binary" | "--use-feature" => {
                    need()?;
                }
                "--pre" | "--prefer-binary" | "--require-hashes" | "--no-deps" => {}
                _ => return Err(err(format!("unknown option `{option}`"))),
            }
            continue;
        }
        let parsed_pin = parse_requirement(&line, env).map_err(|e| match e {
            BadRequirement::Message(message) => err(message),
            BadRequirement::Syntax(requirement, source) => LockError::Requirement {
                path: shown.clone(),
                line: line_no,
                requirement,
                source,
            },
        })?;
        if let Some(pin) = parsed_pin {
            if install {
                parsed.pins.push(Pin {
                    file: shown.clone(),
                    line: line_no,
                    ..pin
                });
            }
        }
    }
    stack.pop();
    Ok(())
}

/// Physical lines joined at trailing backslashes, comments removed, blank
/// lines dropped, each with the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if current.is_empty() {
            start = i + 1;
        }
        let line = strip_comment(raw);
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let done = current.trim().to_owned();
                current.clear();
                if !done.is_empty() {
                    out.push((start, done));
                }
            }
        }
    }
    let done = current.trim().to_owned();
    if !done.is_empty() {
        out.push((start, done));
    }
    out
}

/// pip's rule: `#` starts a comment at the line start or after whitespace.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return line[..i].trim_end();
        }
    }
    line.trim_end()
}

/// `--index-url=X`, `--index-url X`, `-i X`, `-iX` → (option, value).
fn split_option(line: &str) -> (String, Option<String>) {
    let mut parts = line.splitn(2, char::is_whitespace);
    let head = parts.next().unwrap_or("");
    let tail = parts
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some((opt, value)) = head.split_once('=').filter(|_| head.starts_with("--")) {
        return (opt.to_owned(), Some(value.to_owned()));
    }
    // `-iX`: a short option glued to its value (not split inside a character).
    if !head.starts_with("--") && head.len() > 2 && head.is_char_boundary(2) {
        return (head[..2].to_owned(), Some(head[2..].to_owned()));
    }
    (head.to_owned(), tail)
}

/// Why a requirement line was refused.
enum BadRequirement {
    /// What is wrong, said in full.
    Message(String),
    /// The requirement text and PEP 508's complaint about it.
    Syntax(String, Box<pep508_rs::Pep508Error<pep508_rs::VerbatimUrl>>),
}

impl From<String> for BadRequirement {
    fn from(message: String) -> Self {
        BadRequirement::Message(message)
    }
}

impl From<&str> for BadRequirement {
    fn from(message: &str) -> Self {
        BadRequirement::Message(message.to_owned())
    }
}

fn refuse<T>(message: String) -> Result<T, BadRequirement> {
    Err(BadRequirement::Message(message))
}

/// pep508_rs 0.9 panics, rather than refusing, on a package or extra name
/// that ends in `-`, `_` or `.` before another character (`foo- ==1`,
/// `foo[bar-]==1`): such a name is found here first.
fn name_ending_badly(req: &str) -> Option<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let end = req.find(|c| !is_name(c)).unwrap_or(req.len());
    let mut names = vec![&req[..end]];
    if let Some(extras) = req[end..].trim_start().strip_prefix('[') {
        let extras = extras.split(']').next().unwrap_or_default();
        names.extend(extras.split(|c: char| c == ',' || c.is_whitespace()));
    }
    names.into_iter().find(|n| n.ends_with(['-', '_', '.']))
}

/// A pinned requirement, or None when its marker excludes the target.
fn parse_requirement(line: &str, env: &MarkerEnv) -> Result<Option<Pin>, BadRequirement> {
    // Per-requirement options start at the first ` --`.
    let (req_text, options) = match line.find(" --") {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let mut hashes = BTreeSet::new();
    let mut tokens = options.split_whitespace().peekable();
    while let Some(tok) = tokens.next() {
        let value = if let Some(v) = tok.strip_prefix("--hash=") {
            v.to_owned()
        } else if tok == "--hash" {
            tokens
                .next()
                .map(str::to_owned)
                .ok_or("`--hash` needs a value")?
        } else {
            return refuse(format!("unsupported option `{tok}` on a requirement"));
        };
        let (algo, hex) = value
            .split_once(':')
            .ok_or_else(|| format!("`--hash={value}` should be ALGORITHM:HEX"))?;
        if algo == "sha256" {
            if !super::is_sha256_hex(hex) {
                return refuse(format!("`--hash={value}` is not a sha256 hex digest"));
            }
            hashes.insert(hex.to_ascii_lowercase());
        }
    }
    // pep508_rs 0.9 panics on a non-ASCII character after a marker expression.
    if let Some((_, marker)) = req_text.split_once(';').filter(|(_, m)| !m.is_ascii()) {
        return refuse(format!(
            "the marker `{}` has a non-ASCII character; PEP 508 markers are ASCII",
            marker.trim()
        ));
    }
    if let Some(pin) = path_requirement(req_text.trim(), &hashes, env)? {
        return Ok(pin);
    }
    if let Some(name) = name_ending_badly(req_text.trim()) {
        return refuse(format!(
            "`{name}` is not a valid package or extra name: it must end with a letter or digit"
        ));
    }
    let req = Requirement::<pep508_rs::VerbatimUrl>::from_str(req_text.trim())
        .map_err(|e| BadRequirement::Syntax(req_text.trim().to_owned(), Box::new(e)))?;
    if !req.evaluate_markers(env.environment(), &[]) {
        return Ok(None);
    }
    let name = req.name.to_string();
    if hashes.is_empty() {
        return refuse(format!(
            "`{name}` has no --hash=sha256:…; generate the file with hashes (uv pip compile --generate-hashes, or uv export)"
        ));
    }
    let (version, url) = match &req.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specs)) => {
            let pinned = match specs.iter().collect::<Vec<_>>().as_slice() {
                [one] if matches!(one.operator(), Operator::Equal | Operator::ExactEqual) => {
                    Some(one.version().to_string())
                }
                _ => None,
            };
            match pinned {
                Some(v) => (v, None),
                None => {
                    return refuse(format!(
                        "`{name}{specs}` is not pinned; pin every requirement with `==`"
                    ))
                }
            }
        }
        Some(VersionOrUrl::Url(url)) => {
            let url = url.to_string();
            let filename = filename_from_url(&url).unwrap_or_default();
            let version = file_name_version(&filename)
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    format!("`{name} @ {url}` does not end in a wheel or sdist file name")
                })?;
            (version, Some(url))
        }
        None => {
            return refuse(format!(
                "`{name}` is not pinned; pin every requirement with `==`"
            ))
        }
    };
    Ok(Some(Pin {
        name,
        version,
        hashes,
        url,
        file: String::new(),
        line: 0,
    }))
}

/// A line naming a local file, as `uv export` writes a path source
/// (`./wheels/pkg-1.0-py3-none-any.whl --hash=sha256:…`): the package and
/// version come from the file name, the path is relative to the file.
/// `Ok(None)` for a line that is not a path; `Ok(Some(None))` when its
/// marker leaves the target out.
fn path_requirement(
    text: &str,
    hashes: &BTreeSet<String>,
    env: &MarkerEnv,
) -> Result<Option<Option<Pin>>, BadRequirement> {
    let (path, marker) = match text.split_once(';') {
        Some((p, m)) => (p.trim(), m.trim()),
        None => (text, ""),
    };
    let path = path.strip_prefix("file://").unwrap_or(path);
    if !["./", "../", "/"].iter().any(|p| path.starts_with(p)) {
        return Ok(None);
    }
    if !env.evaluate(marker, &[]).map_err(|e| e.to_string())? {
        return Ok(Some(None));
    }
    let filename = path.rsplit('/').next().unwrap_or(path);
    let (name, version) = file_name_version(filename).ok_or_else(|| {
        format!("`{path}` names neither a wheel nor an sdist file; name the file itself")
    })?;
    if hashes.is_empty() {
        return refuse(format!(
            "`{path}` has no --hash=sha256:…; generate the file with hashes (uv export)"
        ));
    }
    Ok(Some(Some(Pin {
        name,
        version,
        hashes: hashes.clone(),
        url: Some(path.to_owned()),
        file: String::new(),
        line: 0,
    })))
}

/// One pin per package: repeated identical pins merge their hashes.
fn merge(pins: Vec<Pin>) -> Result<Vec<Pin>, LockError> {
    let mut by_name: BTreeMap<String, Pin> = BTreeMap::new();
    for pin in pins {
        match by_name.get_mut(&pin.name) {
            Some(existing)
                if same_version(&existing.version, &pin.version) && existing.url == pin.url =>
            {
                existing.hashes.extend(pin.hashes);
            }
            Some(existing) => {
                return Err(LockError::Line {
                    path: pin.file.clone(),
                    line: pin.line,
                    message: format!(
                        "`{}` is pinned to {} here and to {} at {}:{}; keep one",
                        pin.name, pin.version, existing.version, existing.file, existing.line
                    ),
                })
            }
            None => {
                by_name.insert(pin.name.clone(), pin);
            }
        }
    }
    Ok(by_name.into_values().collect())
}

fn same_version(a: &str, b: &str) -> bool {
    match (Version::from_str(a), Version::from_str(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn direct_url_package(pin: &Pin, url: &str) -> Result<LockedPackage, LockError> {
    let filename = filename_from_url(url).unwrap_or_default();
    let mut files = Vec::new();
    let has_sdist = !filename.ends_with(".whl");
    let mut sdist = None;
    let hashes: Vec<&String> = pin.hashes.iter().collect();
    if has_sdist {
        // An sdist without exactly one hash is reported as unbuildable later.
        if let [sha256] = hashes[..] {
            sdist = Some(LockedFile {
                filename: filename.clone(),
                url: Some(url.to_owned()),
                sha256: sha256.clone(),
                size: None,
            })
            .filter(|f| super::is_sdist_name(&f.filename));
        }
    } else {
        let [sha256] = hashes[..] else {
            return Err(LockError::Line {
                path: pin.file.clone(),
                line: pin.line,
                message: format!(
                    "`{} @ {url}` names one file, so give exactly one --hash=sha256:",
                    pin.name
                ),
            });
        };
        files.push(LockedFile {
            filename,
            url: Some(url.to_owned()),
            sha256: sha256.clone(),
            size: None,
        });
    }
    Ok(LockedPackage {
        name: pin.name.clone(),
        version: pin.version.clone(),
        files,
        has_sdist,
        sdist,
        index: None,
    })
}

fn index_package(
    pin: &Pin,
    indexes: &[String],
    index: &dyn SimpleIndex,
    settings: &super::index_config::IndexSettings,
) -> Result<LockedPackage, LockError> {
    let line_err = |message: String| LockError::Line {
        path: pin.file.clone(),
        line: pin.line,
        message,
    };
    if indexes.is_empty() {
        return Err(line_err(format!(
            "`{}` needs a package index to find its files and none is configured ({}): add `--index-url URL` to the file, set `index-url` in imgbuild's settings, pip.conf or uv.toml, or set UV_DEFAULT_INDEX or PIP_INDEX_URL",
            pin.name,
            settings.describe_read()
        )));
    }
    let found = first_found(index, indexes, &pin.name, |_, listed| {
        let mut files = Files::default();
        let mut listed: Vec<&IndexFile> = listed.iter().filter(|f| matches_pin(f, pin)).collect();
        listed.sort_by(|a, b| a.filename.cmp(&b.filename));
        for f in listed {
            let Some(sha256) = &f.sha256 else { continue };
            files.add(LockedFile {
                filename: f.filename.clone(),
                url: Some(f.url.clone()),
                sha256: sha256.clone(),
                size: f.size,
            });
        }
        if files.wheels.is_empty() && !files.has_sdist {
            return Ok(None);
        }
        Ok(Some(LockedPackage {
            name: pin.name.clone(),
            version: pin.version.clone(),
            files: files.wheels,
            has_sdist: files.has_sdist,
            sdist: files.sdist,
            index: None,
        }))
    })?;
    found.ok_or_else(|| {
        line_err(format!(
            "no file of {}=={} on {} has one of the listed hashes; check the index URL, or regenerate the hashes",
            pin.name,
            pin.version,
            super::index_config::redact_all(indexes)
        ))
    })
}

fn matches_pin(file: &IndexFile, pin: &Pin) -> bool {
    let hash_ok = file.sha256.as_ref().is_some_and(|h| pin.hashes.contains(h));
    hash_ok
        && file_name_version(&file.filename)
            .is_some_and(|(name, version)| name == pin.name && same_version(&version, &pin.version))
}

#[cfg(test)]
mod tests;
