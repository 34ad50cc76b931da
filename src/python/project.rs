//! A local project (the root project, a uv workspace member, a path
//! dependency) installed as `uv sync --no-editable` leaves it, without running
//! its build backend: what pure-Python backends do is done from its
//! `pyproject.toml`.
//!
//! The result is a small wheel of our own (a `.dist-info` with METADATA,
//! WHEEL, entry_points.txt and RECORD, plus a `.pth`), which then goes through
//! the same installer as every locked wheel ([`crate::python::install`]), so the
//! console-script launchers, RECORD and INSTALLER are the same bytes as for any
//! wheel. A project inside the source tree keeps its sources in the app layer
//! and the `.pth` points at its import roots there, as an editable install
//! does; a project outside the tree gets its sources copied into its wheel,
//! and so into a layer of its own.
//!
//! Backends that compile code cannot be imitated: they are refused, and the
//! user builds a wheel beforehand (`project-wheel`).

use crate::project_file::{read_optional_text, read_text, Place, ProjectFileError, SETTINGS_LIMIT};
use crate::python::install::{record_hash, write_record, RecordRow};
use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};

pub const PYPROJECT: &str = "pyproject.toml";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// pyproject.toml is not a regular file, lies outside the project, or is too large.
    #[error(transparent)]
    File(ProjectFileError),
    #[error("cannot read {}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: invalid TOML: {message}", .file.display())]
    Toml { file: PathBuf, message: String },
    #[error("{}: {message}", .file.display())]
    Invalid { file: PathBuf, message: String },
    #[error("{}: project `{name}` is built by {backend}, which compiles code; imgbuild does not run build backends. Build a wheel first (`uv build --wheel`) and set `project-wheel = \"dist/<the wheel>.whl\"`, see docs/projects.md", .file.display())]
    Compiled {
        file: PathBuf,
        name: String,
        backend: String,
    },
    #[error("{}: project `{name}`: no importable package found ({looked}); set the backend's package setting (e.g. [tool.hatch.build.targets.wheel] packages) or use a src/{module} or {module} layout", .file.display())]
    NoImportRoot {
        file: PathBuf,
        name: String,
        module: String,
        looked: String,
    },
    #[error("writing the project wheel for `{name}`")]
    Write {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// The project as its `pyproject.toml` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// The project directory on the host (absolute).
    pub dir: PathBuf,
    /// `[project] name` as written.
    pub name: String,
    pub version: String,
    pub requires_python: Option<String>,
    pub summary: Option<String>,
    /// Requires-Dist lines, in METADATA order.
    pub requires_dist: Vec<String>,
    pub provides_extra: Vec<String>,
    /// `[project.scripts]`, `[project.gui-scripts]`, `[project.entry-points.*]` by group.
    pub entry_points: BTreeMap<String, BTreeMap<String, String>>,
    /// The build backend module, e.g. `hatchling.build`.
    pub backend: String,
    /// Where the top-level packages live, as the backend finds them.
    pub roots: Vec<ImportRoot>,
}

/// A directory that goes on `sys.path`, and what the project imports from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRoot {
    /// Absolute host path.
    pub dir: PathBuf,
    /// Top-level packages (directories) and modules (`name.py`) in it.
    pub names: Vec<String>,
}

/// How the project's sources reach the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The sources are in the app layer; the `.pth` lists these absolute image directories.
    Pth(Vec<String>),
    /// The sources are copied into the wheel (a project outside the source tree).
    Copy,
}

/// What makes a project compile code, if anything.
fn compiled_backend(backend: &str, doc: &toml::Table, dir: &Path) -> Option<String> {
    let top = backend.split(['.', ':']).next().unwrap_or(backend);
    match top {
        "maturin" | "scikit_build_core" | "mesonpy" | "enscons" | "py_build_cmake" => {
            return Some(top.replace('_', "-"))
        }
        _ => {}
    }
    if top == "setuptools" {
        let setup_py = dir.join("setup.py");
        if let Ok(Some(setup)) = read_optional_text(&setup_py, Place::Within(dir), SETTINGS_LIMIT) {
            if setup.contains("ext_modules") || setup.contains("Extension(") {
                return Some("setuptools with ext_modules".into());
            }
        }
        if table(doc, &["tool", "setuptools"]).is_some_and(|t| t.contains_key("ext-modules")) {
            return Some("setuptools with ext-modules".into());
        }
    }
    None
}

fn table<'a>(doc: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Table> {
    let mut t = doc;
    for key in path {
        t = t.get(*key)?.as_table()?;
    }
    Some(t)
}

fn string_list(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `Hello-World.x` → `hello_world_x`, the name wheels use in file and directory names.
pub fn wheel_name(name: &str) -> String {
    name.parse::<pep508_rs::PackageName>()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| name.to_ascii_lowercase())
        .replace('-', "_")
}

/// Reads the project at `dir`. `Ok(None)` for a project that is not a package:
/// no `[build-system]` (a virtual project) or `tool.uv.package = false`.
/// `locked_version` stands in for a dynamic version.
pub fn read(dir: &Path, locked_version: Option<&str>) -> Result<Option<Project>, ProjectError> {
    let file = dir.join(PYPROJECT);
    let doc = read_pyproject(&file)?;
    let invalid = |message: String| ProjectError::Invalid {
        file: file.clone(),
        message,
    };
    let Some(project) = table(&doc, &["project"]) else {
        return Ok(None);
    };
    let Some(backend) = package_backend(&doc) else {
        return Ok(None);
    };
    let name = project
        .get("name")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| invalid("[project] has no `name`; add one".into()))?
        .to_owned();
    if let Some(what) = compiled_backend(&backend, &doc, dir) {
        return Err(ProjectError::Compiled {
            file,
            name,
            backend: what,
        });
    }
    let version = static_or_locked_version(project, &name, locked_version).map_err(invalid)?;
    let (requires_dist, provides_extra) = dependencies(project);
    let entry_points = entry_points(project);
    let roots = import_roots(dir, &doc, &backend, &name).ok_or_else(|| {
        let module = wheel_name(&name);
        ProjectError::NoImportRoot {
            file: file.clone(),
            name: name.clone(),
            module: module.clone(),
            looked: format!("src/{module}, {module}, {module}.py"),
        }
    })?;
    let text = |key: &str| {
        project
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
    };
    Ok(Some(Project {
        dir: dir.to_path_buf(),
        requires_python: text("requires-python"),
        summary: text("description"),
        name,
        version,
        requires_dist,
        provides_extra,
        entry_points,
        backend,
        roots,
    }))
}

/// The project's pyproject.toml: found by its name, so it must lie in the
/// project directory, be a regular file, and be at most [`SETTINGS_LIMIT`].
fn read_pyproject(file: &Path) -> Result<toml::Table, ProjectError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let text = read_text(file, Place::Within(dir), SETTINGS_LIMIT).map_err(|e| match e {
        ProjectFileError::Io { source, .. } => ProjectError::Read {
            file: file.to_path_buf(),
            source,
        },
        other => ProjectError::File(other),
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ProjectError::Toml {
            file: file.to_path_buf(),
            message: e.message().trim().replace('\n', "; "),
        })
}

/// The build backend of a project that is a package, `None` for one that is
/// not: no `[build-system]` (a virtual project) unless `tool.uv.package =
/// true`, or `tool.uv.package = false`.
fn package_backend(doc: &toml::Table) -> Option<String> {
    let package_flag = table(doc, &["tool", "uv"])
        .and_then(|t| t.get("package"))
        .and_then(toml::Value::as_bool);
    let build_system = table(doc, &["build-system"]);
    if package_flag == Some(false) || (build_system.is_none() && package_flag != Some(true)) {
        return None;
    }
    // PEP 517's fallback when a build-system table names no backend.
    let backend = build_system
        .and_then(|b| b.get("build-backend"))
        .and_then(toml::Value::as_str)
        .unwrap_or("setuptools.build_meta:__legacy__");
    Some(backend.to_owned())
}

/// `[project] version`, else the locked version; an error message without either.
fn static_or_locked_version(
    project: &toml::Table,
    name: &str,
    locked_version: Option<&str>,
) -> Result<String, String> {
    if let Some(v) = project.get("version").and_then(toml::Value::as_str) {
        return Ok(v.to_owned());
    }
    if let Some(v) = locked_version {
        return Ok(v.to_owned());
    }
    let dynamic = string_list(project.get("dynamic"));
    Err(format!(
        "project `{name}` has no static version{}; set [project] version, or lock it with uv so the lock carries it",
        if dynamic.iter().any(|d| d == "version") { " (it is dynamic)" } else { "" }
    ))
}

/// `Requires-Dist` lines (optional ones with their `extra` marker) and the extras.
fn dependencies(project: &toml::Table) -> (Vec<String>, Vec<String>) {
    let mut requires_dist = string_list(project.get("dependencies"))
        .iter()
        .map(|r| format_requirement(r, None))
        .collect::<Vec<_>>();
    let mut provides_extra = Vec::new();
    if let Some(optional) = project
        .get("optional-dependencies")
        .and_then(toml::Value::as_table)
    {
        for (extra, deps) in optional {
            provides_extra.push(extra.clone());
            for r in string_list(Some(deps)) {
                requires_dist.push(format_requirement(&r, Some(extra)));
            }
        }
    }
    (requires_dist, provides_extra)
}

/// Entry points by group: `[project.scripts]`, `gui-scripts` and `entry-points`.
fn entry_points(project: &toml::Table) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut entry_points: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut group = |group: &str, t: Option<&toml::Value>| {
        if let Some(t) = t.and_then(toml::Value::as_table) {
            let entries: BTreeMap<String, String> = t
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            if !entries.is_empty() {
                entry_points
                    .entry(group.to_owned())
                    .or_default()
                    .extend(entries);
            }
        }
    };
    group("console_scripts", project.get("scripts"));
    group("gui_scripts", project.get("gui-scripts"));
    if let Some(groups) = project.get("entry-points").and_then(toml::Value::as_table) {
        for (g, t) in groups {
            group(g, Some(t));
        }
    }
    entry_points
}

/// A requirement as `packaging` prints it (what hatchling and uv_build write),
/// with `extra == '…'` added for optional dependencies.
fn format_requirement(req: &str, extra: Option<&str>) -> String {
    let (spec, marker) = match req.split_once(';') {
        Some((s, m)) => (s.trim(), Some(m.trim())),
        None => (req.trim(), None),
    };
    // `name [x] >= 1, <2` → `name[x]<2,>=1`: packaging sorts the specifiers by their text.
    let name_end = spec
        .find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let (name, rest) = spec.split_at(name_end);
    let rest = rest.trim();
    let (extras, rest) = match rest.strip_prefix('[') {
        Some(r) => match r.split_once(']') {
            Some((e, tail)) => {
                let mut e: Vec<&str> = e
                    .split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .collect();
                e.sort_unstable();
                (format!("[{}]", e.join(",")), tail.trim())
            }
            None => (String::new(), rest),
        },
        None => (String::new(), rest),
    };
    let version = if rest.starts_with('@') {
        format!(" {rest}")
    } else {
        let mut specs: Vec<String> = rest
            .split(',')
            .map(|s| s.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .filter(|s| !s.is_empty())
            .collect();
        specs.sort();
        specs.join(",")
    };
    let mut out = format!("{name}{extras}{version}");
    let marker = marker.map(|m| m.replace('\'', "\""));
    match (marker, extra) {
        (Some(m), Some(e)) => out += &format!("; ({m}) and extra == \"{e}\""),
        (Some(m), None) => out += &format!("; {m}"),
        (None, Some(e)) => out += &format!("; extra == \"{e}\""),
        (None, None) => {}
    }
    out
}

/// The import roots as the common backends find them; None when nothing is found.
fn import_roots(
    dir: &Path,
    doc: &toml::Table,
    backend: &str,
    name: &str,
) -> Option<Vec<ImportRoot>> {
    let module = wheel_name(name);
    let top = backend.split(['.', ':']).next().unwrap_or(backend);
    let mut roots: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for c in &configured_packages(dir, doc, top, &module) {
        let c = c.trim_matches('/');
        let path = dir.join(c);
        if path.is_dir() || path.is_file() {
            let (parent, leaf) = parent_and_leaf(dir, c);
            roots.entry(parent).or_default().push(leaf);
        }
    }
    if roots.is_empty() {
        roots = discovered_roots(dir, top, &module)?;
    }
    Some(
        roots
            .into_iter()
            .map(|(dir, mut names)| {
                names.sort();
                names.dedup();
                ImportRoot { dir, names }
            })
            .collect(),
    )
}

/// `dir/a/b` as (`dir/a`, `b`); `dir/b` as (`dir`, `b`).
fn parent_and_leaf(dir: &Path, relative: &str) -> (PathBuf, String) {
    match relative.rsplit_once('/') {
        Some((p, l)) => (dir.join(p), l.to_owned()),
        None => (dir.to_path_buf(), relative.to_owned()),
    }
}

/// The packages a backend's own settings name, relative to `dir`.
fn configured_packages(dir: &Path, doc: &toml::Table, top: &str, module: &str) -> Vec<String> {
    match top {
        "hatchling" => string_list(
            table(doc, &["tool", "hatch", "build", "targets", "wheel"])
                .and_then(|t| t.get("packages")),
        ),
        "setuptools" => setuptools_packages(dir, doc),
        "flit_core" => table(doc, &["tool", "flit", "module"])
            .and_then(|t| t.get("name"))
            .and_then(toml::Value::as_str)
            .map(|m| flit_module(dir, m))
            .unwrap_or_default(),
        "pdm" => table(doc, &["tool", "pdm", "build"])
            .and_then(|t| t.get("package-dir"))
            .and_then(toml::Value::as_str)
            .map(|d| vec![format!("{d}/{module}")])
            .unwrap_or_default(),
        "uv_build" => uv_build_modules(doc, module),
        "poetry" => poetry_packages(doc),
        _ => Vec::new(),
    }
}

/// flit's `[tool.flit.module] name`: the first of src/, then flat, that exists.
fn flit_module(dir: &Path, name: &str) -> Vec<String> {
    let m = name.replace('.', "/");
    [
        format!("src/{m}"),
        format!("src/{m}.py"),
        m.clone(),
        format!("{m}.py"),
    ]
    .into_iter()
    .filter(|c| dir.join(c).exists())
    .take(1)
    .collect()
}

/// uv_build's `module-root` (default `src`) and `module-name` (one or several).
fn uv_build_modules(doc: &toml::Table, module: &str) -> Vec<String> {
    let t = table(doc, &["tool", "uv", "build-backend"]);
    let root = t
        .and_then(|t| t.get("module-root"))
        .and_then(toml::Value::as_str)
        .unwrap_or("src");
    let names: Vec<String> = match t.and_then(|t| t.get("module-name")) {
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(v) => string_list(Some(v)),
        None => vec![module.to_owned()],
    };
    names
        .iter()
        .map(|n| {
            let n = n.replace('.', "/");
            if root.is_empty() || root == "." {
                n
            } else {
                format!("{root}/{n}")
            }
        })
        .collect()
}

/// Poetry's `packages = [{ include, from }]`.
fn poetry_packages(doc: &toml::Table) -> Vec<String> {
    table(doc, &["tool", "poetry"])
        .and_then(|t| t.get("packages"))
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let p = p.as_table()?;
                    let include = p.get("include")?.as_str()?;
                    Some(match p.get("from").and_then(toml::Value::as_str) {
                        Some(from) => format!("{from}/{include}"),
                        None => include.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The default discovery: src layout, then flat layout, then a src/
/// directory holding some other package (setuptools' and pdm's
/// auto-discovery), then, for setuptools, the packages beside pyproject.toml.
fn discovered_roots(dir: &Path, top: &str, module: &str) -> Option<BTreeMap<PathBuf, Vec<String>>> {
    let first = [
        format!("src/{module}"),
        format!("src/{module}.py"),
        module.to_owned(),
        format!("{module}.py"),
    ]
    .into_iter()
    .find(|c| dir.join(c).exists());
    if let Some(c) = first {
        let (parent, leaf) = parent_and_leaf(dir, &c);
        return Some(BTreeMap::from([(parent, vec![leaf])]));
    }
    let src = dir.join("src");
    let packages = packages_in(&src);
    if !packages.is_empty() {
        return Some(BTreeMap::from([(src, packages)]));
    }
    if top == "setuptools" {
        // setuptools' flat-layout discovery: the packages beside pyproject.toml.
        let flat = packages_in(dir);
        if !flat.is_empty() {
            return Some(BTreeMap::from([(dir.to_path_buf(), flat)]));
        }
    }
    None
}

/// Directories with an `__init__.py` directly inside `dir`, sorted.
fn packages_in(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = read
        .filter_map(Result::ok)
        .filter(|e| e.path().join("__init__.py").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !matches!(n.as_str(), "tests" | "test" | "docs" | "examples"))
        .collect();
    out.sort();
    out
}

/// setuptools: `package-dir = {"" = "src"}`, `packages.find.where`, or an explicit `packages` list.
fn setuptools_packages(dir: &Path, doc: &toml::Table) -> Vec<String> {
    let Some(st) = table(doc, &["tool", "setuptools"]) else {
        return Vec::new();
    };
    let root = st
        .get("package-dir")
        .and_then(toml::Value::as_table)
        .and_then(|t| t.get(""))
        .and_then(toml::Value::as_str)
        .map(str::to_owned);
    let prefix = |root: &Option<String>, p: &str| match root {
        Some(r) if !r.is_empty() && r != "." => format!("{r}/{p}"),
        _ => p.to_owned(),
    };
    match st.get("packages") {
        Some(toml::Value::Array(list)) => list
            .iter()
            .filter_map(|p| p.as_str())
            .filter(|p| !p.contains('.'))
            .map(|p| prefix(&root, p))
            .collect(),
        Some(toml::Value::Table(find)) => {
            let find = find.get("find").and_then(toml::Value::as_table);
            let wheres = string_list(find.and_then(|f| f.get("where")));
            let wheres = if wheres.is_empty() {
                vec![root.clone().unwrap_or_else(|| ".".into())]
            } else {
                wheres
            };
            let include = string_list(find.and_then(|f| f.get("include")));
            wheres
                .iter()
                .flat_map(|w| {
                    packages_in(&dir.join(w))
                        .into_iter()
                        .filter(|p| {
                            include.is_empty()
                                || include.iter().any(|i| {
                                    i == p || i.strip_suffix('*').is_some_and(|s| p.starts_with(s))
                                })
                        })
                        .map(move |p| {
                            if w == "." {
                                p
                            } else {
                                format!("{}/{p}", w.trim_end_matches('/'))
                            }
                        })
                })
                .collect()
        }
        _ => match root {
            Some(r) => packages_in(&dir.join(&r))
                .into_iter()
                .map(|p| format!("{r}/{p}"))
                .collect(),
            None => Vec::new(),
        },
    }
}

impl Project {
    /// The wheel's file name: `name-version-py3-none-any.whl`.
    pub fn wheel_filename(&self) -> String {
        format!(
            "{}-{}-py3-none-any.whl",
            wheel_name(&self.name),
            self.version
        )
    }

    fn dist_info(&self) -> String {
        format!("{}-{}.dist-info", wheel_name(&self.name), self.version)
    }

    /// METADATA as hatchling writes it (Metadata-Version 2.4).
    pub fn metadata(&self) -> String {
        let mut m = format!(
            "Metadata-Version: 2.4\nName: {}\nVersion: {}\n",
            self.name, self.version
        );
        if let Some(s) = &self.summary {
            m += &format!("Summary: {}\n", s.replace('\n', " "));
        }
        if let Some(rp) = &self.requires_python {
            m += &format!("Requires-Python: {rp}\n");
        }
        for r in self
            .requires_dist
            .iter()
            .filter(|r| !r.contains("extra == "))
        {
            m += &format!("Requires-Dist: {r}\n");
        }
        for e in &self.provides_extra {
            m += &format!("Provides-Extra: {e}\n");
        }
        for r in self
            .requires_dist
            .iter()
            .filter(|r| r.contains("extra == "))
        {
            m += &format!("Requires-Dist: {r}\n");
        }
        m
    }

    /// entry_points.txt as hatchling writes it; None when there are none.
    pub fn entry_points_txt(&self) -> Option<String> {
        if self.entry_points.is_empty() {
            return None;
        }
        let order = |g: &str| match g {
            "console_scripts" => 0,
            "gui_scripts" => 1,
            _ => 2,
        };
        let mut groups: Vec<(&String, &BTreeMap<String, String>)> =
            self.entry_points.iter().collect();
        groups.sort_by_key(|(g, _)| (order(g), g.to_string()));
        let mut out = String::new();
        for (g, entries) in groups {
            out += &format!("\n[{g}]\n");
            for (k, v) in entries {
                out += &format!("{k} = {v}\n");
            }
        }
        Some(out.trim_start().to_owned())
    }

    /// The top-level names the project makes importable.
    pub fn top_level_names(&self) -> Vec<String> {
        self.roots
            .iter()
            .flat_map(|r| r.names.iter().map(|n| n.trim_end_matches(".py").to_owned()))
            .collect()
    }

    /// Writes the project's wheel: deterministic (sorted entries, fixed times).
    pub fn write_wheel(&self, placement: &Placement) -> Result<Vec<u8>, ProjectError> {
        let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
        let dist_info = self.dist_info();
        match placement {
            Placement::Pth(dirs) => {
                let text: String = dirs.iter().map(|d| format!("{d}\n")).collect();
                files.push((
                    format!("_{}.pth", wheel_name(&self.name)),
                    text.into_bytes(),
                    false,
                ));
            }
            Placement::Copy => {
                for root in &self.roots {
                    for name in &root.names {
                        self.copy_tree(&root.dir, name, &mut files)?;
                    }
                }
            }
        }
        files.push((
            format!("{dist_info}/METADATA"),
            self.metadata().into_bytes(),
            false,
        ));
        files.push((
            format!("{dist_info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: imgbuild\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_vec(),
            false,
        ));
        if let Some(ep) = self.entry_points_txt() {
            files.push((
                format!("{dist_info}/entry_points.txt"),
                ep.into_bytes(),
                false,
            ));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        // RECORD lists every file in name order, then itself without a hash.
        let mut record: Vec<RecordRow> = files
            .iter()
            .map(|(path, bytes, _)| RecordRow {
                path: path.clone(),
                hash: Some(record_hash(bytes)),
                size: Some(bytes.len() as u64),
            })
            .collect();
        let record_path = format!("{dist_info}/RECORD");
        record.push(RecordRow {
            path: record_path.clone(),
            hash: None,
            size: None,
        });
        files.push((record_path, write_record(&record), false));

        let write_err = |source: io::Error| ProjectError::Write {
            name: self.name.clone(),
            source,
        };
        let zip_err = |e: zip::result::ZipError| write_err(io::Error::other(e));
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (path, bytes, exec) in &files {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .last_modified_time(zip::DateTime::DEFAULT)
                .unix_permissions(if *exec { 0o755 } else { 0o644 });
            zip.start_file(path.as_str(), options).map_err(zip_err)?;
            zip.write_all(bytes).map_err(write_err)?;
        }
        Ok(zip.finish().map_err(zip_err)?.into_inner())
    }

    /// Adds `root/name` (a package directory or a module file) to `files`,
    /// leaving out bytecode; sorted walk, so the wheel is the same every time.
    fn copy_tree(
        &self,
        root: &Path,
        name: &str,
        files: &mut Vec<(String, Vec<u8>, bool)>,
    ) -> Result<(), ProjectError> {
        use std::os::unix::fs::PermissionsExt;
        let start = root.join(name);
        for entry in walkdir::WalkDir::new(&start).sort_by_file_name() {
            let entry = entry.map_err(|e| ProjectError::Read {
                file: start.clone(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("file system loop")),
            })?;
            let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
            let rel = rel.to_string_lossy().into_owned();
            if rel.split('/').any(|c| c == "__pycache__") || rel.ends_with(".pyc") {
                continue;
            }
            if entry.file_type().is_file() {
                let bytes = std::fs::read(entry.path()).map_err(|source| ProjectError::Read {
                    file: entry.path().to_path_buf(),
                    source,
                })?;
                let exec = entry
                    .metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
                files.push((rel, bytes, exec));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
