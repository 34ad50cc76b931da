//! The bytecode stage: the base's own interpreter, prepared once per build,
//! compiles the pycs that go into each package's layer, the app's layer, and
//! (for a base without them) a layer of the standard library's pycs. The
//! `bytecode` and `bytecode-stdlib` settings are read here and nowhere else
//! in the pipeline.

use super::identity::{self, LayerInputs};
use super::layers::{cached_layer, LayerContext, PackageLayer};
use super::remote_cache::{reuse_layers, Offers};
use super::{BuildError, BuildOptions, Event};
use crate::base::BaseImage;
use crate::layer::tar::{ExternalContent, NoExternal};
use crate::layer::LayerPlan;
use crate::lock::select::SelectedWheel;
use crate::output::BlobOrigin;
use crate::python::bytecode::{self, Compiler, OnFailure};
use crate::python::install::WheelContent;
use crate::python::interpreter::PythonInfo;
use crate::spec::Spec;

/// The base's interpreter, unpacked into the cache and started, or `None`
/// when `bytecode = false`.
pub(super) fn prepare_compiler(
    spec: &Spec,
    base: &BaseImage,
    python: &PythonInfo,
    opts: &BuildOptions,
) -> Result<Option<Compiler>, BuildError> {
    compiler_for(spec.bytecode, sandbox_policy(spec), base, python, opts)
}

/// The base's interpreter for `mode` (`None` when off), confined by `policy`.
pub(super) fn compiler_for(
    mode: crate::spec::BytecodeMode,
    policy: crate::sandbox::Policy,
    base: &BaseImage,
    python: &PythonInfo,
    opts: &BuildOptions,
) -> Result<Option<Compiler>, BuildError> {
    // The base's unpacked Python and the compile scratch space.
    let cache = opts.store.root().join("bytecode");
    let compiler = Compiler::for_base(base, python, mode, &cache, policy)?;
    if let Some(c) = &compiler {
        (opts.on_event)(Event::Detail(format!(
            "the base's Python runs in a sandbox: {}",
            c.interp.sandbox()
        )));
    }
    Ok(compiler)
}

/// The base's interpreter for an sdist build: the compiler's, else
/// prepared now (`bytecode = false` still builds sdists in the sandbox).
pub(super) fn interpreter(
    spec: &Spec,
    base: &BaseImage,
    python: &PythonInfo,
    compiler: Option<&Compiler>,
    opts: &BuildOptions,
) -> Result<crate::python::bytecode::runner::Interpreter, BuildError> {
    if let Some(c) = compiler {
        // Builds import far more of the stdlib than a compile does.
        c.interp
            .make_whole()
            .map_err(|source| crate::python::bytecode::BytecodeError::Stage {
                label: "the base's interpreter".to_owned(),
                path: c.interp.root.display().to_string(),
                source,
            })?;
        return Ok(c.interp.clone());
    }
    let cache = opts.store.root().join("bytecode");
    Ok(bytecode::prepare(
        base,
        python,
        &cache,
        sandbox_policy(spec),
    )?)
}

/// The base's interpreter on the whole base unpacked: an sdist with C
/// extensions builds with the base's own compiler and headers.
pub(super) fn whole_base_interpreter(
    spec: &Spec,
    base: &BaseImage,
    python: &PythonInfo,
    opts: &BuildOptions,
) -> Result<crate::python::bytecode::runner::Interpreter, BuildError> {
    let cache = opts.store.root().join("bytecode");
    Ok(bytecode::prepare_whole(
        base,
        python,
        &cache,
        sandbox_policy(spec),
    )?)
}

fn sandbox_policy(spec: &Spec) -> crate::sandbox::Policy {
    policy_of(spec.sandbox)
}

/// The `sandbox` setting as a policy.
pub(super) fn policy_of(sandbox: bool) -> crate::sandbox::Policy {
    match sandbox {
        true => crate::sandbox::Policy::Required,
        false => crate::sandbox::Policy::Off,
    }
}

/// A stdlib pycs layer, and whether a registry cache gave it.
pub(super) struct StdlibLayer {
    pub layer: Option<PackageLayer>,
    pub from_registry: bool,
}

/// Whether [`stdlib_layer`] makes a layer: known before it runs, so the
/// layer budget is too, and the wheels are fetched while it compiles.
pub(super) fn will_have_stdlib_layer(bytecode_stdlib: bool, cx: &LayerContext) -> bool {
    bytecode_stdlib && cx.compiler.is_some_and(|c| c.interp.stdlib_lacks_pycs)
}

/// The standard library's pycs in a layer of their own, when the base has
/// none and `bytecode-stdlib` is on; cached per interpreter and mode, and
/// reused from a registry cache (it takes long to compile) when offered.
pub(super) fn stdlib_layer(
    bytecode_stdlib: bool,
    python: &PythonInfo,
    cx: &LayerContext,
    offers: &Offers,
) -> Result<StdlibLayer, BuildError> {
    let none = StdlibLayer {
        layer: None,
        from_registry: false,
    };
    let Some(c) = cx
        .compiler
        .filter(|_| will_have_stdlib_layer(bytecode_stdlib, cx))
    else {
        return Ok(none);
    };
    let key = cx.key(&LayerInputs::StdlibPycs {
        prefix: &python.prefix,
        bytecode: &cx.bytecode,
    });
    let annotations = Some(key.annotations(&[]));
    let label = identity::STDLIB_LABEL.to_string();
    let opts = cx.opts;
    if let Some(Some(r)) = reuse_layers(opts, offers, std::slice::from_ref(&key), 0).pop() {
        let layer = PackageLayer {
            label,
            layer: r.layer,
            cached: true,
            origin: r.origin,
            annotations,
        };
        return Ok(StdlibLayer {
            layer: Some(layer),
            from_registry: true,
        });
    }
    let (layer, cached) = cached_layer(opts, identity::STDLIB_LABEL, &key, || {
        let plan = bytecode::stdlib_plan(&c.interp, python, c.mode, opts.jobs)?;
        Ok((plan, Box::new(NoExternal) as Box<dyn ExternalContent>))
    })?;
    let layer = PackageLayer {
        label,
        layer,
        cached,
        origin: BlobOrigin::Store,
        annotations,
    };
    Ok(StdlibLayer {
        layer: Some(layer),
        from_registry: false,
    })
}

/// One package's pycs, compiled in a fresh interpreter; sources that do not
/// compile are skipped as pip does, and listed under -v.
pub(super) fn package_pycs(
    cx: &LayerContext,
    plan: &mut LayerPlan,
    content: &mut WheelContent,
    w: &SelectedWheel,
) -> Result<(), BuildError> {
    let Some(c) = cx.compiler else {
        return Ok(());
    };
    let label = identity::package_label(&w.name, &w.version);
    let skipped = c.add(plan, content, &label, &cx.target.venv, OnFailure::Skip)?;
    for f in skipped {
        (cx.opts.on_event)(Event::Detail(format!("{label}: no bytecode for {f}")));
    }
    Ok(())
}

/// The app's pycs, next to its sources: a source that does not compile
/// fails the build (the app would fail at start).
pub(super) fn app_pycs(
    spec: &Spec,
    compiler: Option<&Compiler>,
    plan: &mut LayerPlan,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(), BuildError> {
    if let Some(c) = compiler {
        let uncompiled = c.add(
            plan,
            &mut NoExternal,
            "the app",
            &spec.workdir,
            OnFailure::Fail,
        )?;
        for f in uncompiled {
            (on_event)(Event::Warning(format!("the app: {f}")));
        }
    }
    Ok(())
}
