//! The checks stage: refuse an image that cannot start (the app, the
//! command, native libraries) before any layer of ours is written out.

use super::identity::package_label;
use super::{BuildError, BuildOptions, Event};
use crate::check::facts::{BaseView, WheelFacts};
use crate::layer::{ImagePath, LayerPlan};
use crate::lock::select::SelectedWheel;
use crate::python::venv::VenvTarget;
use crate::spec::Spec;

/// What the package layers hold, for the checks: the wheels in lock
/// order, each one's facts, and the directories local packages add to
/// `sys.path`.
pub(super) struct Checked<'a> {
    pub wheels: &'a [SelectedWheel],
    pub facts: &'a [WheelFacts],
    pub import_roots: &'a [ImagePath],
    /// Each wheel's file in the store, `None` for a layer reused from a registry.
    pub wheel_paths: Vec<Option<std::path::PathBuf>>,
}

/// The app, command and native-library checks over what the layers hold.
pub(super) fn run_checks(
    spec: &Spec,
    base_view: &BaseView,
    target: &VenvTarget,
    packages: &Checked,
    app_plan: &LayerPlan,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    use crate::check;
    let Checked {
        wheels,
        facts,
        import_roots,
        ..
    } = *packages;
    // Each wheel's facts come with its layer: read from the wheel (cached per
    // wheel), or from the annotations of a layer reused from a registry.
    let files: Vec<check::PackageFiles> = facts.iter().map(|f| f.files.clone()).collect();
    let base = base_view.image();
    let (site_packages, bin) = (target.site_packages(), target.bin());
    let base_path = base.env_path();
    let path = format!(
        "{}:{}",
        bin.absolute(),
        base_path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(crate::python::interpreter::DEFAULT_PATH)
    );
    let view = check::ImageView {
        workdir: &spec.workdir,
        app: app_plan,
        venv: &target.venv,
        site_packages: &site_packages,
        bin: &bin,
        packages: &files,
        import_roots,
        base: base_view,
        path: path.split(':').map(str::to_owned).collect(),
        locked: spec.lockfile.is_some(),
    };
    for warning in check::check_image(spec, &view)? {
        (opts.on_event)(Event::Warning(warning));
    }
    if let Some(w) = cached_undeclared_imports(spec, target, packages, app_plan, opts) {
        (opts.on_event)(Event::Warning(w));
    }
    if facts.iter().any(|f| !f.native.needs.is_empty()) {
        let Some(libs) = base_view.libs() else {
            (opts.on_event)(Event::Warning(format!(
                "base {}: its files could not be read, so native libraries were not checked",
                base.name
            )));
            return Ok(());
        };
        let labelled: Vec<(String, &check::native::WheelNative)> = wheels
            .iter()
            .zip(facts)
            .map(|(w, f)| (package_label(&w.name, &w.version), &f.native))
            .collect();
        check::native::check(&labelled, &libs, &spec.allow_missing_libraries)?;
    }
    Ok(())
}

/// [`undeclared_imports`], kept in the store by what it reads (the app's
/// modules and import lines, the wheels, the venv): the walk opens every
/// module the app imports at start, some 35 ms for a FastAPI app, which a
/// warm build and a no-op push would otherwise pay every time, and a
/// one-line change that adds no import pays nothing either.
fn cached_undeclared_imports(
    spec: &Spec,
    target: &VenvTarget,
    packages: &Checked,
    app_plan: &LayerPlan,
    opts: &BuildOptions,
) -> Option<String> {
    let mut key = format!(
        "imports-v1\n{:?}\n{:?}\n{}\n{}\n{}\n",
        spec.app,
        spec.app_dir,
        app_imports_digest(app_plan),
        target.venv,
        target.interpreter
    );
    for w in packages.wheels {
        key.push_str(&format!("{} {}\n", w.name, w.sha256));
    }
    for root in packages.import_roots {
        key.push_str(&format!("root {root}\n"));
    }
    if let Some(known) = opts.store.get_meta::<Option<String>>("imports", &key) {
        return known;
    }
    let found = undeclared_imports(spec, target, packages, app_plan);
    opts.store.put_meta_best_effort("imports", &key, &found);
    found
}

/// The digest of what the walk reads from the app layer: each module's
/// path and its lines that import (any line starting with `import` or
/// `from`, indented or not: more than the walk follows, never less).
fn app_imports_digest(app_plan: &LayerPlan) -> crate::digest::Digest {
    use crate::layer::{Content, EntryKind};
    let mut text = String::new();
    for (path, entry) in app_plan.entries() {
        let EntryKind::File { content, size } = &entry.kind else {
            continue;
        };
        if !path.as_str().ends_with(".py") {
            continue;
        }
        text.push_str(path.as_str());
        text.push('\n');
        // The walk skips a module over its cap, so its size is all it reads
        // (and a 100 MiB source is never held here).
        if *size > crate::check::imports::MAX_MODULE_BYTES {
            text.push_str(&format!("size {size}\n"));
            continue;
        }
        let source = match content {
            Content::HostFile(p) => std::fs::read(p).unwrap_or_default(),
            Content::Bytes(b) => b.clone(),
            Content::External(_) => Vec::new(),
        };
        for line in String::from_utf8_lossy(&source).lines() {
            let t = line.trim_start();
            if t.starts_with("import") || t.starts_with("from") {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    crate::digest::Digest::of_bytes(text.as_bytes())
}

/// What the app would import at start that nothing in the image provides
/// (issue 23), as one warning.
fn undeclared_imports(
    spec: &Spec,
    target: &VenvTarget,
    packages: &Checked,
    app_plan: &LayerPlan,
) -> Option<String> {
    use crate::check::imports;
    let module = spec.app.as_deref()?.split(':').next()?;
    let first = match &spec.app_dir {
        Some(d) => spec.workdir.join(d).ok()?,
        None => spec.workdir.clone(),
    };
    let roots: Vec<ImagePath> = std::iter::once(first)
        .chain(packages.import_roots.iter().cloned())
        .collect();
    let list: Vec<imports::Package> = packages
        .wheels
        .iter()
        .zip(packages.facts)
        .zip(&packages.wheel_paths)
        .map(|((w, f), path)| imports::Package {
            label: package_label(&w.name, &w.version),
            top_level: f.files.top_level.clone(),
            wheel: path.clone(),
        })
        .collect();
    imports::warning(&imports::undeclared(module, app_plan, roots, &list, target))
}

/// Whether the base has a program of this bare name on its `PATH` (its
/// config's, else the default), for the early check of `cmd`.
pub(super) fn on_base_path<'a>(
    base: &crate::base::BaseImage,
    view: &'a crate::check::facts::BaseView,
) -> impl Fn(&str) -> bool + 'a {
    use crate::check::BaseFiles;
    let path = base
        .env_path()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| crate::python::interpreter::DEFAULT_PATH.to_owned());
    move |name: &str| {
        path.split(':')
            .any(|dir| view.exists(&format!("{}/{name}", dir.trim_end_matches('/'))))
    }
}
