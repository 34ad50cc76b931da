//! The second pass over the settings: values, defaults and paths, after
//! [`super::keys`] has checked every key and its type.

use super::keys::Raw;
use super::{normalise, Origin, Spec, SpecError, DEFAULT_LOCKFILES, UNREADABLE_LOCKFILES, WORKERS};
use crate::dockerignore::Matcher;
use crate::layer::ImagePath;
use crate::platform::Platform;
use crate::project_file::{self, Place};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The second pass: values, defaults and paths. Each helper checks a few
/// keys; the order of the calls is the order errors are reported in, so a
/// file with several mistakes always names the same one first.
pub(super) fn check(raw: Raw, file: &Path, dir: &Path, origin: &Origin) -> Result<Spec, SpecError> {
    let base = base_reference(origin, raw.base)?;
    let source = source_dir(origin, dir, raw.source.as_deref())?;
    let (workdir, venv) = image_dirs(origin, raw.workdir.as_deref(), raw.venv.as_deref())?;
    let lockfile = lockfile(origin, dir, &source, raw.lockfile.as_deref())?;
    let source_set = raw.source.is_some();
    let (lockfile, package, source) = workspace(origin, lockfile, raw.package, source_set, source)?;
    let serves_itself = raw.cmd.is_some() || raw.entrypoint.is_some();
    let (app, app_factory, app_dir) = app_reference(origin, raw.app, raw.app_dir, serves_itself)?;

    let port = int_in_range(origin, "port", raw.port, 8000, 1, u16::MAX as i64)? as u16;
    let workers = int_in_range(origin, "workers", raw.workers, 1, WORKERS.0, WORKERS.1)? as u32;
    let layer_budget =
        int_in_range(origin, "layer-budget", raw.layer_budget, 100, 2, 127)? as usize;
    let user = parse_user(origin, raw.user.as_deref().unwrap_or("65532:65532"))?;

    let env = environment(origin, raw.env.unwrap_or_default())?;
    let labels = non_empty_keys(origin, "labels", raw.labels.unwrap_or_default())?;
    let annotations = non_empty_keys(origin, "annotations", raw.annotations.unwrap_or_default())?;
    let platforms = parse_platforms(origin, raw.platforms)?;
    let entrypoint = entrypoint(origin, raw.entrypoint)?;
    let groups = names(origin, "groups", raw.groups.unwrap_or_default())?;
    let extras = names(origin, "extras", raw.extras.unwrap_or_default())?;
    let index_url = index_url(origin, raw.index_url)?;
    let exclude = exclude(origin, raw.exclude.unwrap_or_default())?;
    let writable = super::state::writable(
        origin,
        raw.writable.unwrap_or_default(),
        &workdir,
        &venv,
        &env,
    )?;

    let image = super::deploy::image(origin, raw.image)?;
    let init = super::deploy::init(origin, raw.init)?;
    let health = super::deploy::health(origin, raw.health)?;
    let deploy = super::deploy::deploy(origin, dir, raw.deploy)?;
    let project_wheel = project_wheel(origin, dir, raw.project_wheel.as_deref())?;
    let bytecode = match &raw.bytecode {
        None => super::BytecodeMode::default(),
        Some(v) => super::BytecodeMode::from_setting(v).ok_or_else(|| {
            origin.invalid(
                "bytecode",
                format!("{v} is not true, false or \"unchecked-hash\""),
            )
        })?,
    };
    let compression = compression(origin, raw.compression.as_deref())?;

    Ok(Spec {
        file: file.to_path_buf(),
        base,
        source,
        workdir,
        venv,
        lockfile,
        package,
        app,
        app_factory,
        app_dir,
        port,
        workers,
        workers_set: raw.workers.is_some(),
        proxy_headers: raw.proxy_headers.unwrap_or(false),
        user,
        env,
        labels,
        annotations,
        platforms,
        entrypoint,
        cmd: raw.cmd,
        groups,
        extras,
        include_dev: raw.include_dev.unwrap_or(false),
        index_url,
        layer_budget,
        source_url: raw.source_url,
        revision: raw.revision,
        exclude,
        writable,
        image,
        init,
        health,
        deploy,
        project_wheel,
        allow_missing_libraries: raw.allow_missing_libraries.unwrap_or_default(),
        bytecode,
        bytecode_stdlib: raw.bytecode_stdlib.unwrap_or(true),
        sandbox: raw.sandbox.unwrap_or(true),
        compression,
    })
}

/// `base`: any non-blank reference; the base stage resolves it.
fn base_reference(origin: &Origin, base: Option<String>) -> Result<String, SpecError> {
    let base = base.unwrap_or_default();
    if base.trim().is_empty() {
        return Err(origin.invalid(
            "base",
            "is empty; name the base image, such as \"python:3.12-slim\" or \"oci:./base\"",
        ));
    }
    Ok(base)
}

/// `source`: the project directory, relative to the settings' directory.
fn source_dir(origin: &Origin, dir: &Path, source: Option<&str>) -> Result<PathBuf, SpecError> {
    let source = normalise(&dir.join(source.unwrap_or(".")));
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
    Ok(source)
}

/// `workdir` and `venv`: absolute image paths, the venv not holding the workdir.
fn image_dirs(
    origin: &Origin,
    workdir: Option<&str>,
    venv: Option<&str>,
) -> Result<(ImagePath, ImagePath), SpecError> {
    let workdir = image_path(origin, "workdir", workdir.unwrap_or("/app"))?;
    let venv = image_path(origin, "venv", venv.unwrap_or("/app/.venv"))?;
    not_a_system_dir(origin, "workdir", &workdir, "/app")?;
    not_a_system_dir(origin, "venv", &venv, "/app/.venv")?;
    if venv == workdir || workdir.starts_with(&venv) {
        return Err(origin.invalid("venv", format!("{venv} would hold the workdir {workdir}; put the venv inside it (such as {workdir}/.venv) or elsewhere")));
    }
    Ok((workdir, venv))
}

/// The base's own directories, where the app or the venv would shadow or mix
/// with the system (`venv = "/usr"` leaves an image where `/bin/sh` and
/// python no longer run). `/` itself is refused by [`ImagePath::new`].
pub(super) const SYSTEM_DIRS: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "var", "proc", "sys", "dev",
];

/// Refuses `path` (the value of `key`) inside a [`SYSTEM_DIRS`] directory.
fn not_a_system_dir(
    origin: &Origin,
    key: &str,
    path: &ImagePath,
    example: &str,
) -> Result<(), SpecError> {
    let top = path.as_str().split('/').next().unwrap_or_default();
    if SYSTEM_DIRS.contains(&top) {
        return Err(origin.invalid(
            key,
            format!("{path} is inside the system directory /{top}, which the image needs as the base made it; use a directory of its own, such as {example}"),
        ));
    }
    Ok(())
}

/// `lockfile`: the file named, else the first of [`DEFAULT_LOCKFILES`] in
/// `source`; a lockfile only another tool reads is an error, not a silent None.
fn lockfile(
    origin: &Origin,
    dir: &Path,
    source: &Path,
    lockfile: Option<&str>,
) -> Result<Option<PathBuf>, SpecError> {
    if let Some(p) = lockfile {
        let path = normalise(&dir.join(p));
        // Named by the user, so it may lie anywhere; still only a regular file.
        match project_file::check(&path, Place::Anywhere) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Err(origin.invalid(
                    "lockfile",
                    format!("{} does not exist or is not a file", path.display()),
                ))
            }
            Err(e) => return Err(origin.invalid("lockfile", e.to_string())),
        }
        return Ok(Some(path));
    }
    // Any entry by a default name counts: a FIFO, a device or a link out of
    // the source tree is refused by name, never read and never passed over.
    if let Some(found) = DEFAULT_LOCKFILES
        .iter()
        .map(|name| source.join(name))
        .find(|p| p.symlink_metadata().is_ok())
    {
        project_file::check(&found, Place::Within(source))
            .map_err(|e| origin.invalid("lockfile", format!("is not set, and {e}")))?;
        return Ok(Some(found));
    }
    match UNREADABLE_LOCKFILES.iter().find(|n| source.join(n).is_file()) {
        Some(other) => Err(origin.invalid(
            "lockfile",
            format!("is not set and {} has only {other}, which imgbuild cannot read; lock with uv, Poetry or PDM, or export a requirements.txt with hashes, and set `lockfile` if it is not one of {}", source.display(), DEFAULT_LOCKFILES.join(", ")),
        )),
        None => Ok(None),
    }
}

/// With no lockfile found, a workspace member's directory takes the
/// workspace's lock above it; then `package` (see [`package`]).
fn workspace(
    origin: &Origin,
    lockfile: Option<PathBuf>,
    package_name: Option<String>,
    source_set: bool,
    source: PathBuf,
) -> Result<(Option<PathBuf>, Option<String>, PathBuf), SpecError> {
    let lockfile = lockfile.or_else(|| super::workspace::enclosing_lock(&source));
    let (name, source) = package(
        origin,
        package_name,
        source_set,
        lockfile.as_deref(),
        source,
    )?;
    Ok((lockfile, name, source))
}

/// `package`: a member of the uv workspace `lockfile` locks; without
/// `source`, the source tree is that member's directory, so the app layer
/// holds its files and not the whole workspace's.
fn package(
    origin: &Origin,
    package: Option<String>,
    source_set: bool,
    lockfile: Option<&Path>,
    source: PathBuf,
) -> Result<(Option<String>, PathBuf), SpecError> {
    let Some(name) = package else {
        return Ok((None, source));
    };
    if !is_package_name(&name) {
        return Err(origin.invalid("package", format!("{name:?} is not a package name")));
    }
    let member = super::workspace::member_dir(origin, lockfile, &name)?;
    if source_set {
        return Ok((Some(name), source));
    }
    if !member.is_dir() {
        return Err(origin.invalid(
            "package",
            format!(
                "{name:?} is in {} as {}, which is not a directory here",
                lockfile
                    .map(|l| l.display().to_string())
                    .unwrap_or_default(),
                member.display()
            ),
        ));
    }
    Ok((Some(name), member))
}

/// `app` and `app-dir`: what uvicorn imports, and from where under the workdir.
/// `app = "m:create_app()"` names a factory: uvicorn calls it (`--factory`).
/// Without `app`, `cmd` or `entrypoint` must start the server.
fn app_reference(
    origin: &Origin,
    app: Option<String>,
    app_dir: Option<String>,
    serves_itself: bool,
) -> Result<(Option<String>, bool, Option<String>), SpecError> {
    let Some(app) = app else {
        if !serves_itself {
            return Err(SpecError::Missing {
                file: origin.shown.clone(),
                key: "app".into(),
                section: origin.section.clone(),
                example: r#"app = "main:app" (or set `cmd` to a server that starts itself)"#,
            });
        }
        return Ok((None, false, app_dir));
    };
    let (target, factory) = match app.strip_suffix("()") {
        Some(target) => (target.to_string(), true),
        None => (app.clone(), false),
    };
    if !is_app_reference(&target) {
        return Err(origin.invalid(
            "app",
            format!("{app:?} is not \"module.path:attribute\" (or \"module.path:factory()\"); write it as uvicorn takes it, such as \"main:app\", \"myapi.server:app\" or \"myapi.server:create_app()\""),
        ));
    }
    let app_dir = match app_dir {
        Some(d) if d.trim().is_empty() || d.starts_with('/') || d.contains('\0') => {
            return Err(origin.invalid(
                "app-dir",
                format!("{d:?} must be a directory relative to the workdir, such as \"src\""),
            ));
        }
        other => other,
    };
    Ok((Some(target), factory, app_dir))
}

/// `env`: names and values a process environment, and every file imgbuild
/// writes them into (the image config, deploy outputs), can hold on one line.
fn environment(
    origin: &Origin,
    env: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SpecError> {
    let breaks_a_line = |s: &str| s.contains(['\0', '\n', '\r']);
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || breaks_a_line(k) {
            return Err(origin.invalid(
                "env",
                format!("{k:?} is not a valid variable name (no `=`, newline or NUL, not empty)"),
            ));
        }
        if breaks_a_line(v) {
            return Err(origin.invalid(
                &format!("env.{k}"),
                "the value holds a newline or NUL; put it on one line (encode it, such as in base64, if it must hold one)",
            ));
        }
    }
    Ok(env)
}

/// `entrypoint`: absent for the uvicorn default, never empty.
fn entrypoint(
    origin: &Origin,
    entrypoint: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, SpecError> {
    if entrypoint.as_ref().is_some_and(|e| e.is_empty()) {
        return Err(origin.invalid("entrypoint", "is empty; give the program and its arguments, or leave the key out for the uvicorn default"));
    }
    Ok(entrypoint)
}

/// `index-url`: a URL of a scheme the fetcher speaks.
fn index_url(origin: &Origin, index_url: Option<String>) -> Result<Option<String>, SpecError> {
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
    Ok(index_url)
}

/// `exclude`: patterns in `.dockerignore` syntax, checked now so a bad one
/// is reported against the settings rather than during the build.
fn exclude(origin: &Origin, exclude: Vec<String>) -> Result<Vec<String>, SpecError> {
    if let Err(e) = Matcher::from_lines(&exclude) {
        return Err(origin.invalid(
            "exclude",
            format!(
                "item {}: invalid pattern {:?}: {}",
                e.line, e.pattern, e.reason
            ),
        ));
    }
    Ok(exclude)
}

/// `project-wheel`: an existing `.whl`, relative to the settings' directory.
fn project_wheel(
    origin: &Origin,
    dir: &Path,
    project_wheel: Option<&str>,
) -> Result<Option<PathBuf>, SpecError> {
    let Some(p) = project_wheel else {
        return Ok(None);
    };
    let path = normalise(&dir.join(p));
    if !p.ends_with(".whl") || !path.is_file() {
        return Err(origin.invalid(
            "project-wheel",
            format!(
                "{} is not a wheel file; build it first (`uv build --wheel`) and name the .whl",
                path.display()
            ),
        ));
    }
    Ok(Some(path))
}

/// `compression`: how layers are compressed; gzip unless set.
fn compression(
    origin: &Origin,
    compression: Option<&str>,
) -> Result<crate::layer::compress::Compression, SpecError> {
    match compression {
        None => Ok(crate::layer::compress::Compression::default()),
        Some(text) => crate::layer::compress::Compression::parse(text).ok_or_else(|| {
            origin.invalid(
                "compression",
                format!("{text:?} is not \"gzip\" or \"zstd\""),
            )
        }),
    }
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
        let p = Platform::parse(text).map_err(|e| origin.platform(e))?;
        if p.os != "linux" {
            return Err(origin.invalid(
                "platforms",
                format!("{text:?}: imgbuild builds Linux images only"),
            ));
        }
        p.python_arch().map_err(|e| origin.platform(e))?;
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

/// A PEP 508 name: letters, digits, `-`, `_` and `.`, alphanumeric at both ends.
fn is_package_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `module.path:attr` as uvicorn's `import_from_string` takes it: dotted
/// identifiers on both sides of one colon.
pub(super) fn is_app_reference(app: &str) -> bool {
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
