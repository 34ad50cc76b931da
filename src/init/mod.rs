//! `imgbuild init`: writes the settings for the project in a directory, from
//! what its files say (see [`detect`]). The result always loads with
//! [`crate::spec::parse`] once `base` and `app` are set; nothing is written
//! when it would not, and an existing file is replaced only when asked.

pub(crate) mod detect;
mod factory;
mod servers;
mod workspace;

use crate::project_file::{read_optional_text, Place, ProjectFileError, SETTINGS_LIMIT};
use crate::spec::{self, SpecError, DEFAULT_LOCKFILES, PYPROJECT_FILE, SPEC_FILE};
use detect::{AppCandidate, HealthRoute, ProjectInfo};
use std::io;
use std::path::{Path, PathBuf};

/// Lockfiles other tools write that this imgbuild may not read; named in the
/// report when found and not in [`DEFAULT_LOCKFILES`].
const OTHER_LOCKFILES: &[&str] = &["poetry.lock", "pdm.lock", "Pipfile.lock"];

/// Directories never read for sources: environments, caches, tests, VCS.
const SKIPPED_DIRS: &[&str] = &[
    "node_modules",
    "__pycache__",
    "site-packages",
    "venv",
    "env",
    "build",
    "dist",
    "tests",
    "test",
    "docs",
];
/// Bounds on what is read, so a huge tree costs little.
const MAX_FILE_BYTES: u64 = 1 << 20;
const MAX_FILES: usize = 5000;
const MAX_DEPTH: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// The base image, written as given.
    pub base: Option<String>,
    /// Write `[tool.imgbuild]` into pyproject.toml instead of imgbuild.toml.
    pub pyproject: bool,
    /// Replace an existing imgbuild.toml or `[tool.imgbuild]` table.
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// Read from the project's files.
    Found,
    /// Chosen by imgbuild; worth a look.
    Guessed,
    /// Not found; the user has to add it.
    Missing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    pub text: String,
}

/// What `init` wrote and why.
#[derive(Clone, Debug)]
pub struct Report {
    pub file: PathBuf,
    pub notes: Vec<Note>,
    /// The settings load as they are (`base` and `app` both set).
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{file} exists; pass --force to replace it")]
    Exists { file: String },
    /// pyproject.toml is not a regular file, lies outside the project, or is too large.
    #[error(transparent)]
    File(ProjectFileError),
    #[error("{file} already has a [tool.imgbuild] table; pass --force to replace it")]
    ToolTableExists { file: String },
    #[error("{PYPROJECT_FILE} has a [tool.imgbuild] table, which a new {SPEC_FILE} would override; pass --pyproject --force to replace that table, or --force to write {SPEC_FILE} anyway")]
    Shadowed,
    #[error(
        "--pyproject: no {PYPROJECT_FILE} in {dir}; leave out --pyproject to write {SPEC_FILE}"
    )]
    NoPyproject { dir: String },
    #[error("{file}: cannot replace its [tool.imgbuild] settings (they are not one `[tool.imgbuild]` table); remove them by hand and run `imgbuild init --pyproject` again")]
    CannotReplace { file: String },
    #[error("{file}: invalid TOML; fix it and run `imgbuild init` again")]
    Pyproject {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the sources under {dir}")]
    Walk {
        dir: String,
        #[source]
        source: walkdir::Error,
    },
    #[error("cannot write {file}")]
    Write {
        file: String,
        #[source]
        source: io::Error,
    },
    /// What would be written does not load (a bad `--base`, say); nothing is written.
    #[error("the settings for {file} would not load; nothing was written")]
    Invalid {
        file: String,
        #[source]
        source: Box<SpecError>,
    },
}

/// What goes into the settings, before rendering.
#[derive(Clone, Debug, Default)]
struct Draft {
    base: Option<String>,
    /// Written commented when `base` is None.
    base_suggestion: String,
    /// Whether imgbuild builds `base_suggestion` with bytecode on: false
    /// when `requires-python` allows no Python it compiles bytecode for.
    base_buildable: bool,
    requires_python: Option<String>,
    app: Option<AppCandidate>,
    lockfile: Option<String>,
    health: Option<HealthRoute>,
    /// Write `health` as a key (this imgbuild knows it) or as a comment.
    health_live: bool,
    scripts: Vec<(String, String)>,
    /// `package`: the uv workspace member the image is for.
    package: Option<String>,
    /// A server that starts itself, for a project with no app of its own:
    /// its command, its port and a comment saying what it is.
    cmd: Option<(Vec<String>, u16, String)>,
}

/// Where `init` looks for the app: the directory it runs in, or at a
/// virtual uv workspace root, the member that holds one.
struct Scope {
    /// Python files (relative to the app's project) and their text.
    sources: Vec<(String, String)>,
    /// The project's name, which ranks app candidates.
    name: Option<String>,
    requires_python: Option<String>,
    package: Option<String>,
}

/// The [`Scope`] for `dir`: a virtual workspace root's member with an app
/// (its name as `package`), else `dir` itself; `requires-python` from the
/// project, else from the workspace's lock.
fn scope(
    dir: &Path,
    pyproject: Option<&str>,
    info: &ProjectInfo,
    notes: &mut Vec<Note>,
) -> Result<Scope, InitError> {
    let doc: Option<toml::Table> = pyproject.and_then(|t| t.parse().ok());
    let lock_rp = || {
        let lock = match dir.join("uv.lock") {
            l if l.is_file() => l,
            _ => workspace::lock_above(dir)?.0,
        };
        workspace::lock_requires_python(&lock)
    };
    let root = doc.as_ref().filter(|d| workspace::is_workspace_root(d));
    if root.is_some() && info.name.is_none() && !dir.join("uv.lock").is_file() {
        // `package` is looked up in the lock: without one, the tree is read whole.
        notes.push(note(
            NoteKind::Missing,
            "package: a uv workspace without its uv.lock; run `uv lock` here, then `imgbuild init --force` picks the member with the app".into(),
        ));
    } else if let (Some(doc), None) = (root, &info.name) {
        let members = workspace::members(dir, doc);
        let mut found = Vec::new();
        for m in &members {
            let sources = read_sources(&dir.join(&m.rel))?;
            let (best, _) = candidates(&sources, Some(&m.name));
            if let Some(best) = best {
                found.push((m, sources, best.made == detect::Made::Factory));
            }
        }
        // A member whose app is made at import first, then the members' order.
        found.sort_by_key(|(_, _, factory)| *factory);
        if let Some((m, sources, _)) = found.first() {
            let others: Vec<&str> = found[1..].iter().map(|(o, ..)| o.name.as_str()).collect();
            let text = format!(
                "package {:?}: the uv workspace member in {}/ with an app; its dependencies are installed and its directory is the app layer{}",
                m.name,
                m.rel,
                if others.is_empty() { String::new() } else { format!("; others with one: {} (a spec each)", others.join(", ")) }
            );
            let kind = if others.is_empty() {
                NoteKind::Found
            } else {
                NoteKind::Guessed
            };
            notes.push(note(kind, text));
            let own = read_pyproject(&dir.join(&m.rel).join(PYPROJECT_FILE))?.1;
            return Ok(Scope {
                sources: sources.clone(),
                name: Some(m.name.clone()),
                requires_python: own.requires_python.or_else(lock_rp),
                package: Some(m.name.clone()),
            });
        }
    }
    Ok(Scope {
        sources: read_sources(dir)?,
        name: info.name.clone(),
        requires_python: info.requires_python.clone().or_else(lock_rp),
        package: None,
    })
}

/// Reads the project in `dir`, writes its settings, and says what it found.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<Report, InitError> {
    let spec_file = dir.join(SPEC_FILE);
    let pyproject_file = dir.join(PYPROJECT_FILE);
    let (pyproject_text, info) = read_pyproject(&pyproject_file)?;
    // Refuse before reading anything else.
    refuse_to_replace(dir, opts, &spec_file, pyproject_text.is_some(), &info)?;

    let mut notes = Vec::new();
    let scope = scope(dir, pyproject_text.as_deref(), &info, &mut notes)?;
    let sources = scope.sources;
    let suggestion = detect::suggested_base(scope.requires_python.as_deref());
    let mut draft = Draft {
        base: opts.base.clone(),
        base_suggestion: suggestion.base,
        base_buildable: suggestion.buildable,
        requires_python: scope.requires_python,
        health_live: true,
        scripts: info.scripts.clone(),
        package: scope.package,
        ..Draft::default()
    };
    draft.app = pick_app(&sources, scope.name.as_deref(), &mut notes);
    if draft.app.is_none() {
        servers::pick(dir, pyproject_text.as_deref(), &mut draft, &mut notes);
    }
    if draft.app.is_none() && draft.cmd.is_none() {
        notes.push(note(
            NoteKind::Missing,
            format!(
                "app: no top-level `NAME = {}(` in the project's Python files; set `app = \"module:attribute\"`",
                detect::APP_CLASSES.join("(` / `")
            ),
        ));
    }
    draft.lockfile = pick_lockfile(dir, &mut notes);
    draft.health = pick_health(&sources, draft.app.as_ref(), &mut notes);
    notes.push(base_note(&draft));
    if !draft.scripts.is_empty() {
        let names: Vec<_> = draft.scripts.iter().map(|(n, _)| n.as_str()).collect();
        notes.push(note(
            NoteKind::Found,
            format!(
                "[project.scripts] {}, written as comments for an `init` step",
                names.join(", ")
            ),
        ));
    }

    let (target, shown) = if opts.pyproject {
        (pyproject_file, PYPROJECT_FILE)
    } else {
        (spec_file, SPEC_FILE)
    };
    let existing = match (&pyproject_text, opts.pyproject) {
        (Some(text), true) => Some(without_tool_table(text).ok_or(InitError::CannotReplace {
            file: PYPROJECT_FILE.into(),
        })?),
        _ => None,
    };
    let compose = |d: &Draft| match &existing {
        Some(rest) => format!("{}\n[tool.imgbuild]\n{}", ensure_newline(rest), render(d)),
        None => render(d),
    };
    check_loads(dir, opts, &target, shown, &mut draft, &compose)?;

    let text = compose(&draft);
    write(
        &target,
        shown,
        text.as_bytes(),
        opts.force || opts.pyproject,
    )?;
    Ok(Report {
        file: target,
        complete: draft.base.is_some() && (draft.app.is_some() || draft.cmd.is_some()),
        notes,
    })
}

/// pyproject.toml's text, if there is one, and what it says about the project.
fn read_pyproject(file: &Path) -> Result<(Option<String>, ProjectInfo), InitError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let text = match read_optional_text(file, Place::Within(dir), SETTINGS_LIMIT) {
        Ok(t) => t,
        Err(ProjectFileError::Io { source, .. }) => {
            return Err(InitError::Read {
                file: PYPROJECT_FILE.into(),
                source,
            })
        }
        Err(other) => return Err(InitError::File(other)),
    };
    let info = match &text {
        Some(t) => detect::project_info(t).map_err(|source| InitError::Pyproject {
            file: PYPROJECT_FILE.into(),
            source,
        })?,
        None => ProjectInfo::default(),
    };
    Ok((text, info))
}

/// Settings that exist (or would be shadowed) are replaced only with `--force`.
fn refuse_to_replace(
    dir: &Path,
    opts: &InitOptions,
    spec_file: &Path,
    has_pyproject: bool,
    info: &ProjectInfo,
) -> Result<(), InitError> {
    if opts.pyproject {
        if !has_pyproject {
            return Err(InitError::NoPyproject {
                dir: dir.display().to_string(),
            });
        }
        if info.has_tool_table && !opts.force {
            return Err(InitError::ToolTableExists {
                file: PYPROJECT_FILE.into(),
            });
        }
    } else if !opts.force {
        if spec_file.exists() {
            return Err(InitError::Exists {
                file: SPEC_FILE.into(),
            });
        }
        if info.has_tool_table {
            return Err(InitError::Shadowed);
        }
    }
    Ok(())
}

/// Where `base` comes from: `--base`, or a suggestion written as a comment.
fn base_note(draft: &Draft) -> Note {
    match &draft.base {
        Some(b) => note(NoteKind::Found, format!("base {b} (from --base)")),
        None if !draft.base_buildable => note(
            NoteKind::Missing,
            format!(
                "base: requires-python {:?} allows no Python imgbuild compiles bytecode for ({}); widen it, or set a base such as {} with `bytecode = false`",
                draft.requires_python.as_deref().unwrap_or_default(),
                supported_pythons(),
                draft.base_suggestion,
            ),
        ),
        None => note(
            NoteKind::Guessed,
            format!(
                "base {} {}, written as a comment: uncomment it (pinned by digest) or run again with --base REF",
                draft.base_suggestion,
                match &draft.requires_python {
                    Some(r) => format!("from requires-python {r:?}"),
                    None => "(no requires-python to go by)".to_string(),
                }
            ),
        ),
    }
}

/// `CPython 3.9 to 3.15`: the Pythons imgbuild compiles bytecode for.
fn supported_pythons() -> String {
    use crate::python::bytecode::{NEWEST_KNOWN, OLDEST_TESTED};
    format!(
        "CPython {}.{} to {}.{}",
        OLDEST_TESTED.0, OLDEST_TESTED.1, NEWEST_KNOWN.0, NEWEST_KNOWN.1
    )
}

/// Checks what would be written: with placeholders where the user still has
/// to decide, the settings must load; `health` stays a comment (in `draft`
/// too) unless this imgbuild knows the key.
fn check_loads(
    dir: &Path,
    opts: &InitOptions,
    target: &Path,
    shown: &str,
    draft: &mut Draft,
    compose: &dyn Fn(&Draft) -> String,
) -> Result<(), InitError> {
    let mut check = draft.clone();
    check
        .base
        .get_or_insert_with(|| draft.base_suggestion.clone());
    if check.app.is_none() && check.cmd.is_none() {
        check.app = Some(placeholder_app());
    }
    let loads = |d: &Draft| spec::parse(&compose(d), target, opts.pyproject, dir);
    if check.health.is_some() {
        if let Err(SpecError::UnknownKey { key, .. }) = loads(&check) {
            if key == "health" {
                check.health_live = false;
                draft.health_live = false;
            }
        }
    }
    loads(&check).map_err(|source| InitError::Invalid {
        file: shown.into(),
        source: Box::new(source),
    })?;
    Ok(())
}

fn note(kind: NoteKind, text: String) -> Note {
    Note { kind, text }
}

fn placeholder_app() -> AppCandidate {
    AppCandidate {
        app: "main:app".into(),
        app_dir: None,
        file: String::new(),
        line: 0,
        class: "FastAPI",
        made: detect::Made::Direct,
    }
}

/// Python files under `dir` as (relative path with `/`, contents), sorted.
fn read_sources(dir: &Path) -> Result<Vec<(String, String)>, InitError> {
    let walker = walkdir::WalkDir::new(dir)
        .max_depth(MAX_DEPTH)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir() && {
                    let name = e.file_name().to_string_lossy();
                    name.starts_with('.') || SKIPPED_DIRS.contains(&name.as_ref())
                })
        });
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|source| InitError::Walk {
            dir: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        if !entry.file_type().is_file() || path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        if entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
            continue;
        }
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        let Some(rel) = rel.to_str().map(|r| r.replace('\\', "/")) else {
            continue;
        };
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(source) => return Err(InitError::Read { file: rel, source }),
        };
        out.push((rel, text));
        if out.len() >= MAX_FILES {
            break;
        }
    }
    Ok(out)
}

/// Every app candidate in `sources`, ranked, and the best one.
fn candidates(
    sources: &[(String, String)],
    project: Option<&str>,
) -> (Option<AppCandidate>, Vec<AppCandidate>) {
    let mut all: Vec<AppCandidate> = sources
        .iter()
        .flat_map(|(rel, text)| detect::find_apps(rel, text))
        .chain(factory::factory_apps(sources))
        .collect();
    detect::rank(&mut all, project);
    (all.first().cloned(), all)
}

fn pick_app(
    sources: &[(String, String)],
    project: Option<&str>,
    notes: &mut Vec<Note>,
) -> Option<AppCandidate> {
    let (best, candidates) = candidates(sources, project);
    let best = best?;
    let place = best.place();
    if candidates.len() == 1 {
        notes.push(note(NoteKind::Found, format!("app {} ({place})", best.app)));
    } else {
        let others: Vec<_> = candidates[1..].iter().map(|c| c.app.as_str()).collect();
        notes.push(note(
            NoteKind::Guessed,
            format!(
                "app {} ({place}); also found {}: change `app` if another is the service",
                best.app,
                crate::text::summarise(&others, 5)
            ),
        ));
    }
    if let Some(d) = &best.app_dir {
        notes.push(note(
            NoteKind::Found,
            format!("a {d}/ layout: app-dir = {d:?}, so uvicorn imports the app from {d}/"),
        ));
    }
    Some(best)
}

fn pick_lockfile(dir: &Path, notes: &mut Vec<Note>) -> Option<String> {
    if let Some(name) = DEFAULT_LOCKFILES.iter().find(|n| dir.join(n).is_file()) {
        notes.push(note(NoteKind::Found, format!("lockfile {name}")));
        return Some(name.to_string());
    }
    if let Some((_, rel)) = workspace::lock_above(dir) {
        notes.push(note(
            NoteKind::Found,
            format!("lockfile {rel}, the lock of the uv workspace this project is a member of"),
        ));
        return Some(rel);
    }
    let readable = DEFAULT_LOCKFILES.join(", ");
    match OTHER_LOCKFILES.iter().find(|n| dir.join(n).is_file()) {
        Some(other) => notes.push(note(
            NoteKind::Missing,
            format!("lockfile: found {other}, which this imgbuild does not read ({readable}); run `uv lock`, or the image gets no packages"),
        )),
        None => notes.push(note(
            NoteKind::Missing,
            format!("lockfile: none of {readable}; run `uv lock`, or the image gets no packages"),
        )),
    }
    None
}

fn pick_health(
    sources: &[(String, String)],
    app: Option<&AppCandidate>,
    notes: &mut Vec<Note>,
) -> Option<HealthRoute> {
    let mut routes: Vec<HealthRoute> = sources
        .iter()
        .flat_map(|(rel, text)| detect::find_health_routes(rel, text))
        .collect();
    // The app's own file first, then /health before /healthz, then by path.
    routes.sort_by_key(|r| {
        (
            app.is_none_or(|a| a.file != r.file),
            detect::HEALTH_PATHS.iter().position(|p| *p == r.path),
            r.file.clone(),
            r.line,
        )
    });
    let route = routes.into_iter().next()?;
    notes.push(note(
        NoteKind::Found,
        format!(
            "health route GET {} ({}:{})",
            route.path, route.file, route.line
        ),
    ));
    Some(route)
}

fn ensure_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The settings as TOML lines (no table header).
fn render(d: &Draft) -> String {
    let mut out = String::from(
        "# Written by `imgbuild init`; every key is described in docs/configuration.md.\n",
    );
    match &d.base {
        Some(b) => out += &format!("base = {}\n", quote(b)),
        None => {
            out += "# The base image: uncomment and pin it by digest (`name:tag@sha256:...`), or run\n";
            out += "# `imgbuild init --base REF --force`.";
            match &d.requires_python {
                Some(r) if !d.base_buildable => {
                    out += &format!(
                        "\n# requires-python {} allows no Python imgbuild compiles bytecode for\n# ({}): this base needs `bytecode = false`.",
                        quote(r),
                        supported_pythons()
                    );
                }
                Some(r) => out += &format!(" Suggested by requires-python {}.", quote(r)),
                None => {}
            }
            out += &format!("\n# base = {}\n", quote(&d.base_suggestion));
        }
    }
    out += &render_app(d);
    if let Some(l) = &d.lockfile {
        out += &format!("lockfile = {}\n", quote(l));
    }
    if let Some(p) = &d.package {
        out +=
            "# The uv workspace member this image is for: only its dependencies are installed,\n";
        out += "# and its directory is the app layer (`source`).\n";
        out += &format!("package = {}\n", quote(p));
    }
    let port = d.cmd.as_ref().map_or(8000, |(_, port, _)| *port);
    out += &format!("port = {port}\n");
    out += "# workers = 1\n";
    out += "# platforms = [\"linux/amd64\", \"linux/arm64\"]\n";
    if let Some(h) = &d.health {
        out += &format!(
            "\n# Health route, from {}:{}, for readiness and liveness probes.\n",
            h.file, h.line
        );
        if d.health_live {
            out += &format!("health = {}\n", quote(h.path));
        } else {
            out += "# (A comment: this version of imgbuild has no `health` key.)\n";
            out += &format!("# health = {}\n", quote(h.path));
        }
    }
    if !d.scripts.is_empty() {
        out += "\n# [project.scripts], for a step run before the app starts (migrations, say):\n";
        for (name, target) in &d.scripts {
            out += &format!("# init = [{}]   # {target}\n", quote(name));
        }
    }
    out
}

/// The `app` (or, for a server that starts itself, `cmd`) lines.
fn render_app(d: &Draft) -> String {
    let mut out = String::new();
    match (&d.app, &d.cmd) {
        (Some(a), _) => {
            out += &format!("app = {}\n", quote(&a.app));
            if let Some(dir) = &a.app_dir {
                out += &format!(
                    "# A {dir}/ layout: uvicorn imports the app from {dir}/ inside the workdir.\n"
                );
                out += &format!("app-dir = {}\n", quote(dir));
            }
        }
        (None, Some((cmd, _, comment))) => {
            out += &format!("# No ASGI app in the project's own files: {comment}.\n");
            let items: Vec<String> = cmd.iter().map(|c| quote(c)).collect();
            out += &format!("cmd = [{}]\n", items.join(", "));
        }
        (None, None) => {
            out += "# No ASGI app found: set it as uvicorn takes it, module:attribute.\n";
            out += "# app = \"main:app\"\n";
        }
    }
    out
}

/// `text` without its `[tool.imgbuild]` table (and that table's sub-tables);
/// None when settings remain under `tool.imgbuild` some other way.
fn without_tool_table(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let head = line.trim_start();
        if head.starts_with('[') {
            let name: String = head
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            inside = name == "tool.imgbuild" || name.starts_with("tool.imgbuild.");
        }
        if !inside {
            out.push_str(line);
        }
    }
    let still = detect::project_info(&out).ok()?.has_tool_table;
    (!still).then(|| out.trim_end().to_string() + "\n")
}

/// Writes atomically: a temp file beside `file`, renamed over it. Without
/// `replace`, an existing file (even one made since the checks) is kept.
fn write(file: &Path, shown: &str, bytes: &[u8], replace: bool) -> Result<(), InitError> {
    let err = |source: io::Error| InitError::Write {
        file: shown.into(),
        source,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    io::Write::write_all(&mut tmp, bytes).map_err(err)?;
    let mode = std::fs::metadata(file)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(err)?;
    if replace {
        tmp.persist(file).map_err(|e| err(e.error))?;
    } else {
        tmp.persist_noclobber(file).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                InitError::Exists { file: shown.into() }
            } else {
                err(e.error)
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
