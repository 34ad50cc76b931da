//! The packages stages: the lock read for the target (one wheel per
//! package, the project and local packages built as wheels of our own),
//! then each wheel's layer taken from a registry cache or its wheel fetched.

use super::identity::{self, LayerKey};
use super::layers::WheelSource;
use super::remote_cache::{reuse_layers, Offers};
use super::{BuildError, BuildOptions, Event};
use crate::fetch::{Fetched, Fetcher};
use crate::layer::ImagePath;
use crate::lock::select::SelectedWheel;
use crate::lock::LocalPackage;
use crate::platform::Platform;
use crate::python::bytecode::runner::Interpreter;
use crate::python::interpreter::PythonInfo;
use crate::python::tags::Tags;
use crate::spec::Spec;
use std::path::{Path, PathBuf};

/// The base's interpreter for sdist builds: as bytecode uses it, and on
/// the whole base unpacked (for C extensions); each prepared on first use.
pub(super) struct Interpreters<'a> {
    pub base: &'a dyn Fn() -> Result<Interpreter, BuildError>,
    pub whole_base: &'a dyn Fn() -> Result<Interpreter, BuildError>,
}

/// The packages an image installs.
#[derive(Default)]
pub(super) struct Planned {
    /// Every wheel, in lock order: the lock's, then the project's own.
    pub wheels: Vec<SelectedWheel>,
    /// The lock's packages alone, for the SBOM (the project's own wheels
    /// are not from an index).
    pub locked: Vec<SelectedWheel>,
    /// The image directories the local packages' `.pth` files put on `sys.path`.
    pub import_roots: Vec<ImagePath>,
    /// How the packages built from their sdists were built.
    pub sdist_builds: Vec<crate::sdist::Built>,
    /// The lock's local packages' directories.
    pub local_dirs: Vec<PathBuf>,
}

/// Where the lock's relative paths start: the lockfile's directory, or the
/// source tree without a lock.
fn lock_dir(spec: &Spec) -> PathBuf {
    match &spec.lockfile {
        Some(l) => l.parent().map(PathBuf::from).unwrap_or_default(),
        None => spec.source.clone(),
    }
}

/// The wheels for this target: the lock's, selected for the base's Python,
/// and the project and the lock's local packages as wheels of our own.
pub(super) fn plan(
    spec: &Spec,
    python: &PythonInfo,
    platform: &Platform,
    opts: &BuildOptions,
    interpreters: &Interpreters,
    in_base: &dyn Fn(&str) -> bool,
) -> Result<Planned, BuildError> {
    let label = platform.to_string();
    let mut planned = Planned::default();
    let mut locals = Vec::new();
    let mut indexes = Vec::new();
    if let Some(lockfile) = &spec.lockfile {
        (opts.on_event)(Event::Python {
            platform: label.clone(),
            info: format!("{}: {}", python.interpreter, python.describe()),
        });
        let span = crate::trace::span(|| "packages: read the lock, select wheels".into());
        (planned.wheels, locals, indexes) = select_wheels(spec, lockfile, python, platform, opts)?;
        drop(span);
        // issue 23: a server the lock lacks is named before anything is fetched.
        let names = planned.wheels.iter().map(|w| w.name.as_str());
        let local = local_scripts(&lock_dir(spec), &locals);
        let scripts = crate::check::scripts::LockedScripts {
            local: local.as_deref(),
            in_base,
        };
        crate::check::scripts::check_server_locked(
            spec,
            names.chain(locals.iter().map(|l| l.name.as_str())),
            &scripts,
        )?;
    }
    // The SBOM and provenance name what the lock names: an sdist, not the
    // wheel built from it.
    planned.locked = planned.wheels.clone();
    if planned.wheels.iter().any(|w| w.from_sdist) {
        planned.sdist_builds = build_sdists(
            spec,
            python,
            &indexes,
            &label,
            opts,
            interpreters,
            &mut planned.wheels,
        )?;
    }
    planned.local_dirs = locals
        .iter()
        .map(|l| lock_dir(spec).join(&l.path))
        .collect();
    planned.import_roots = add_local_wheels(spec, python, &locals, opts, &mut planned.wheels)?;
    if spec.lockfile.is_some() {
        (opts.on_event)(Event::Wheels {
            platform: label,
            count: planned.wheels.len(),
        });
    }
    Ok(planned)
}

/// The console scripts the lock's local packages declare in their
/// pyproject.toml (`[project.scripts]`, `[project.gui-scripts]`); `None`
/// when one cannot be read or has dynamic scripts, so it might provide any.
fn local_scripts(lock_dir: &Path, locals: &[LocalPackage]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for local in locals {
        let dir = lock_dir.join(&local.path);
        let file = dir.join(crate::spec::PYPROJECT_FILE);
        let text = crate::project_file::read_optional_text(
            &file,
            crate::project_file::Place::Within(&dir),
            crate::project_file::SETTINGS_LIMIT,
        )
        .ok()??;
        let doc: toml::Table = text.parse().ok()?;
        let project = doc.get("project")?.as_table()?;
        let dynamic = project.get("dynamic").and_then(|d| d.as_array());
        if dynamic.is_some_and(|d| {
            d.iter()
                .any(|v| v.as_str().is_some_and(|v| v.contains("scripts")))
        }) {
            return None;
        }
        for key in ["scripts", "gui-scripts"] {
            let table = project.get(key).and_then(|t| t.as_table());
            out.extend(table.into_iter().flat_map(|t| t.keys().cloned()));
        }
    }
    Some(out)
}

/// Which project of a workspace lock the image is for: `package`, else the
/// member whose directory the source tree is.
fn project_root(spec: &Spec, lock_dir: &Path) -> crate::lock::uv::ProjectRoot {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let source = canonical(&spec.source);
    let dir = source
        .strip_prefix(canonical(lock_dir))
        .ok()
        .and_then(|rel| rel.to_str())
        .unwrap_or_default()
        .to_string();
    crate::lock::uv::ProjectRoot {
        package: spec.package.clone(),
        dir,
    }
}

/// The lock's wheels (and sdists to build), its local packages, and the
/// configured indexes.
type Selection = (Vec<SelectedWheel>, Vec<LocalPackage>, Vec<String>);

fn select_wheels(
    spec: &Spec,
    lockfile: &Path,
    python: &PythonInfo,
    platform: &Platform,
    opts: &BuildOptions,
) -> Result<Selection, BuildError> {
    use crate::lock::{index_config, LockOptions};
    use crate::python::markers::MarkerEnv;
    let getenv = |k: &str| std::env::var(k).ok();
    let lock_dir = lockfile.parent().unwrap_or(Path::new("."));
    let mut indexes =
        index_config::resolve(&index_config::Inputs::from_process(&getenv, lock_dir))?;
    // imgbuild's own `index-url` beats every other setting.
    let index_url = match &spec.index_url {
        Some(url) => Some(indexes.set_default(url, "index-url")?),
        None => None,
    };
    opts.http.set_credentials(indexes.credentials.clone());
    let lock_opts = LockOptions {
        groups: spec.groups.clone(),
        extras: spec.extras.clone(),
        include_dev: spec.include_dev,
        index_url,
        indexes,
        project: project_root(spec, lock_dir),
    };
    let env = MarkerEnv::for_target(python)?;
    // issue 8: the lock's local packages come from the same read.
    // A lockfile outside the source tree may be any file on the host: its
    // errors keep the file and the line, never its text.
    let quotable = crate::project_file::is_inside(lockfile, &spec.source);
    let label = format!("{platform} ({})", python.describe());
    let select =
        || -> Result<_, BuildError> {
            let (packages, locals) =
                crate::lock::load_with_local(lockfile, &lock_opts, &env, opts.http)
                    .map_err(|e| if quotable { e } else { e.without_file_text() })?;
            let tags = Tags::for_target(python);
            let wheels = crate::lock::select::select_wheels(&packages, &tags, &label)?;
            Ok((wheels, locals))
        };
    let target = format!("{lock_opts:?}\0{env:?}\0{python:?}\0{label}");
    let (mut wheels, locals) = match read_selection_memo(opts.store, lockfile, &target) {
        Memo::Kept(selected) => selected,
        Memo::Missing(key) => {
            let selected = select()?;
            if let Some(key) = key {
                opts.store
                    .put_meta_best_effort(SELECTION_MEMO, &key, &selected);
            }
            selected
        }
    };
    // Files the lock names without a URL (poetry.lock, pdm.lock) are looked up
    // on the index, unless they are cached already.
    let cached =
        |w: &SelectedWheel| Fetcher::wheel_digest(w).is_ok_and(|d| opts.store.has_blob(&d));
    if !opts.offline {
        crate::lock::locate::locate_files(
            &mut wheels,
            lockfile,
            &lock_opts.indexes,
            opts.http,
            &cached,
            opts.jobs,
        )?;
    }
    Ok((wheels, locals, lock_opts.indexes.urls()))
}

/// The store's record kind for the wheels chosen from a uv.lock; `-v1`
/// names the record's shape (bump it when `SelectedWheel` or
/// `LocalPackage` changes).
const SELECTION_MEMO: &str = "uv-lock-selection-v1";

/// The wheels and local packages an earlier run chose from a lock, or the
/// key to keep this run's choice under.
enum Memo {
    Kept((Vec<SelectedWheel>, Vec<LocalPackage>)),
    Missing(Option<String>),
}

/// What an earlier run chose from the same uv.lock bytes for the same
/// options and target (issue 26: parsing a 140 KB lock and choosing its
/// wheels was a third of a warm build's CPU). Only uv.lock: it is read from
/// its text alone, where Poetry's and PDM's locks may ask the index. The key
/// hashes the file's text as read now, so an edited lock is read again, and
/// `target` (the options' text, which may hold index credentials, is kept
/// only as part of the hash).
fn read_selection_memo(store: &crate::store::Store, lockfile: &Path, target: &str) -> Memo {
    if lockfile.file_name().and_then(|n| n.to_str()) != Some("uv.lock") {
        return Memo::Missing(None);
    }
    // Read as the parse reads it (capped, never blocking on a FIFO); a
    // failure here is the parse's to report.
    let Ok(text) = crate::lock::read_text(lockfile) else {
        return Memo::Missing(None);
    };
    let keyed = format!("{text}\0{target}");
    let key = crate::digest::Digest::of_bytes(keyed.as_bytes())
        .hex()
        .to_owned();
    match store.get_meta(SELECTION_MEMO, &key) {
        Some(selected) => Memo::Kept(selected),
        None => Memo::Missing(Some(key)),
    }
}

/// Each sdist among `wheels` replaced by the wheel built from it in the
/// sandbox (or built before, from the store).
fn build_sdists(
    spec: &Spec,
    python: &PythonInfo,
    configured: &[String],
    platform_label: &str,
    opts: &BuildOptions,
    interpreters: &Interpreters,
    wheels: &mut [SelectedWheel],
) -> Result<Vec<crate::sdist::Built>, BuildError> {
    let first = wheels
        .iter()
        .find(|w| w.from_sdist)
        .expect("called for sdists");
    let interp = (interpreters.base)().map_err(|e| crate::sdist::SdistError::NoInterpreter {
        package: format!("{} {}", first.name, first.version),
        platform: format!("{} ({})", platform_label, python.describe()),
        cause: crate::text::error_chain(&e),
    })?;
    let mut builds = Vec::new();
    let env = crate::python::markers::MarkerEnv::for_target(python)?;
    let tags = Tags::for_target(python);
    let fetcher = Fetcher {
        store: opts.store,
        client: opts.http,
        offline: opts.offline,
        jobs: 1,
        lock_dir: lock_dir(spec),
    };
    let cutoff = spec.lockfile.as_deref().and_then(crate::lock::build_cutoff);
    let detail = |line: String| (opts.on_event)(Event::Detail(line));
    let whole_base = || (interpreters.whole_base)().map_err(|e| crate::text::error_chain(&e));
    // The indexes the lock was resolved against (uv.lock names them), for
    // an sdist that came from elsewhere (a path source).
    let mut lock_indexes: Vec<String> = Vec::new();
    for w in wheels.iter() {
        if let Some(i) = w.index.as_ref().filter(|i| !lock_indexes.contains(i)) {
            lock_indexes.push(i.clone());
        }
    }
    for w in wheels.iter_mut().filter(|w| w.from_sdist) {
        // The index the lock resolved the package against, the configured
        // ones, then the lock's others.
        let mut indexes: Vec<String> = Vec::new();
        for i in w.index.iter().chain(configured).chain(&lock_indexes) {
            if !indexes.contains(i) {
                indexes.push(i.clone());
            }
        }
        let builder = crate::sdist::Builder {
            store: opts.store,
            fetcher: &fetcher,
            index: opts.http,
            indexes,
            cutoff: cutoff.clone(),
            env: &env,
            tags: &tags,
            offline: opts.offline,
            whole_base: &whole_base,
            on_detail: &detail,
        };
        let built = builder.build(&interp, w)?;
        (opts.on_event)(Event::Progress {
            label: w.filename.clone(),
        });
        *w = built.wheel(w.index.clone());
        builds.push(built);
    }
    Ok(builds)
}

/// Adds the root project and the lock's local packages to `wheels`; returns
/// the image directories their `.pth` files put on `sys.path`.
fn add_local_wheels(
    spec: &Spec,
    python: &PythonInfo,
    locals: &[LocalPackage],
    opts: &BuildOptions,
    wheels: &mut Vec<SelectedWheel>,
) -> Result<Vec<ImagePath>, BuildError> {
    let local = crate::local::local_wheels(
        spec,
        locals,
        &lock_dir(spec),
        opts.store,
        &Tags::for_target(python),
    )?;
    let mut roots = Vec::new();
    for l in local {
        // A locked wheel of the same name (a path source) stays as the lock has it.
        if !wheels.iter().any(|w| w.name == l.wheel.name) {
            roots.extend(l.import_roots);
            wheels.push(l.wheel);
        }
    }
    Ok(roots)
}

/// Each wheel's source, in lock order, and how many were downloaded.
pub(super) struct Gathered {
    pub sources: Vec<WheelSource>,
    pub downloaded: usize,
    pub from_registry: usize,
}

/// Each wheel's layer from the registry cache when one offers it (within
/// the layer budget only: a merged layer is never reused), else its wheel
/// fetched into the store; a wheel whose layer is reused is not fetched.
pub(super) fn gather(
    spec: &Spec,
    wheels: &[SelectedWheel],
    keys: &[LayerKey],
    budget: usize,
    offers: &Offers,
    opts: &BuildOptions,
) -> Result<Gathered, BuildError> {
    let reused = if identity::within_budget(wheels.len(), budget) {
        reuse_layers(opts, offers, keys, 1)
    } else {
        wheels.iter().map(|_| None).collect()
    };
    let wanted: Vec<SelectedWheel> = wheels
        .iter()
        .zip(&reused)
        .filter(|(_, r)| r.is_none())
        .map(|(w, _)| w.clone())
        .collect();
    for (w, _) in wheels.iter().zip(&reused).filter(|(_, r)| r.is_some()) {
        (opts.on_event)(Event::Progress {
            label: w.filename.clone(),
        });
    }
    let fetcher = Fetcher {
        store: opts.store,
        client: opts.http,
        offline: opts.offline,
        jobs: opts.jobs,
        lock_dir: lock_dir(spec),
    };
    let fetched = fetcher.fetch_all(&wanted, &|w, f| report_fetched(opts, w, f))?;
    let downloaded = fetched.iter().filter(|f| f.downloaded > 0).count();
    let from_registry = wheels.len() - wanted.len();
    let mut fetched = fetched.into_iter();
    let sources = reused
        .into_iter()
        .map(|r| match r {
            Some(r) => WheelSource::Reused(r),
            None => WheelSource::Fetched(fetched.next().expect("one fetch per wanted wheel")),
        })
        .collect();
    Ok(Gathered {
        sources,
        downloaded,
        from_registry,
    })
}

/// Events for one wheel fetched (or found in the store).
fn report_fetched(opts: &BuildOptions, w: &SelectedWheel, f: &Fetched) {
    if f.repaired {
        (opts.on_event)(Event::Warning(format!(
            "cached wheel of {} {} ({}) no longer matched the lock's sha256; dropped it and fetched it again",
            w.name, w.version, w.filename
        )));
    }
    if f.downloaded > 0 {
        (opts.on_event)(Event::Fetched {
            filename: w.filename.clone(),
            bytes: f.downloaded,
        });
    }
    (opts.on_event)(Event::Progress {
        label: w.filename.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(memo: Memo) -> Option<String> {
        match memo {
            Memo::Kept(_) => panic!("a choice was kept for a lock never chosen from"),
            Memo::Missing(key) => key,
        }
    }

    #[test]
    fn a_choice_is_kept_per_lock_bytes_and_target_and_only_for_uv_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path().join("cache")).unwrap();
        let lock = dir.path().join("uv.lock");
        std::fs::write(&lock, "version = 1\n").unwrap();
        let key = key_of(read_selection_memo(&store, &lock, "amd64")).unwrap();
        let chosen: (Vec<SelectedWheel>, Vec<LocalPackage>) = (Vec::new(), Vec::new());
        store.put_meta(SELECTION_MEMO, &key, &chosen).unwrap();
        assert!(matches!(
            read_selection_memo(&store, &lock, "amd64"),
            Memo::Kept(_)
        ));
        // Another target, or an edited lock, is chosen from again.
        assert!(key_of(read_selection_memo(&store, &lock, "arm64")).is_some());
        std::fs::write(&lock, "version = 1\n# edited\n").unwrap();
        assert!(key_of(read_selection_memo(&store, &lock, "amd64")).is_some());
        // Other lock formats may ask the index while they are read: never kept.
        let pylock = dir.path().join("pylock.toml");
        std::fs::write(&pylock, "lock-version = \"1.0\"\n").unwrap();
        assert_eq!(key_of(read_selection_memo(&store, &pylock, "amd64")), None);
    }
}
