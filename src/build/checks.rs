//! The local projects a build adds and the pre-ship checks it runs.

use super::{BuildError, BuildOptions, Event};
use crate::base::BaseImage;
use crate::layer::LayerPlan;
use crate::lock::select::SelectedWheel;
use crate::python::interpreter::PythonInfo;
use crate::python::venv::VenvTarget;
use crate::spec::Spec;
use std::path::PathBuf;

// --- issue 8: local projects and the pre-ship checks ---

/// Adds the root project and the lock's local packages to `wheels`; returns
/// the image directories their `.pth` files put on `sys.path`.
pub(super) fn add_local_wheels(
    spec: &Spec,
    python: &PythonInfo,
    locals: &[crate::lock::LocalPackage],
    opts: &BuildOptions,
    wheels: &mut Vec<SelectedWheel>,
) -> Result<Vec<crate::layer::ImagePath>, BuildError> {
    use crate::python::tags::Tags;
    let lock_dir = match &spec.lockfile {
        Some(lockfile) => lockfile.parent().map(PathBuf::from).unwrap_or_default(),
        None => spec.source.clone(),
    };
    let local = crate::local::local_wheels(
        spec,
        locals,
        &lock_dir,
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

/// The app, command and native-library checks over what the layers hold.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_checks(
    spec: &Spec,
    base: &BaseImage,
    target: &VenvTarget,
    wheels: &[SelectedWheel],
    facts: &[crate::check::facts::WheelFacts],
    import_roots: &[crate::layer::ImagePath],
    app_plan: &LayerPlan,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    use crate::check;
    // Each wheel's facts come with its layer: read from the wheel (cached per
    // wheel), or from the annotations of a layer reused from a registry.
    let files: Vec<check::PackageFiles> = facts.iter().map(|f| f.files.clone()).collect();
    let base_view = check::facts::BaseView::new(base, opts.store);
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
        base: &base_view,
        path: path.split(':').map(str::to_owned).collect(),
        locked: spec.lockfile.is_some(),
    };
    for warning in check::check_image(spec, &view)? {
        (opts.on_event)(Event::Warning(warning));
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
            .map(|(w, f)| (format!("{} {}", w.name, w.version), &f.native))
            .collect();
        check::native::check(&labelled, &libs, &spec.allow_missing_libraries)?;
    }
    Ok(())
}
