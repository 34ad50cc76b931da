//! The pipeline for one build: spec → per platform (base, Python, the
//! bytecode compiler, packages, their layers, the app, checks, the image)
//! → an index when there are several. Each stage is a function in its own
//! module, with its inputs and outputs in its signature; `build_platform`
//! reads as the list of them.

mod bytecode;
pub(crate) mod cache_plan;
mod checks;
pub(crate) mod identity;
mod image;
mod layers;
mod packages;
pub mod rebase;
pub(crate) mod remote_cache;
pub mod unchanged;

pub use remote_cache::RemoteCache;

use crate::app;
use crate::base::{self, BaseImage, BaseLocation, RemoteBases};
use crate::check::facts::{BaseFacts, BaseView};
use crate::digest::Digest;
use crate::fetch::FetchError;
use crate::layer::LayerPlan;
use crate::output::base_facts::BaseFactsDoc;
use crate::output::{BuildResult, BuiltImage, LayerSources};
use crate::platform::Platform;
use crate::python::install as wheel;
use crate::python::interpreter::PythonInfo;
use crate::python::venv::VenvTarget;
use crate::spec::Spec;
use crate::store::{Store, StoreError};
use identity::BytecodeInputs;
use layers::{LayerContext, PackageLayer};
use std::path::PathBuf;

/// Bumped whenever the bytes of a generated layer change for the same inputs,
/// so cached layers from older versions are never reused. See docs/reproducibility.md.
pub const LAYER_FORMAT: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Base(#[from] base::BaseError),
    #[error(transparent)]
    Python(#[from] base::python::BasePythonError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Select(#[from] crate::lock::select::SelectError),
    #[error(transparent)]
    IndexConfig(#[from] crate::lock::index_config::IndexConfigError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Wheel(#[from] wheel::WheelError),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the {label} layer")]
    Layer {
        label: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Config(#[from] crate::image::config::ConfigError),
    #[error(transparent)]
    Markers(#[from] crate::python::markers::MarkerError),
    #[error(transparent)]
    Bytecode(#[from] crate::python::bytecode::BytecodeError),
    /// Two wheels put in one shared layer clash on a path.
    #[error("merging {wheel} into the shared layer")]
    Merge {
        wheel: String,
        #[source]
        source: crate::layer::plan::PlanError,
    },
    #[error(transparent)]
    Attest(#[from] crate::attest::AttestError),
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    #[error(transparent)]
    Sdist(#[from] crate::sdist::SdistError),
}

/// What the pipeline tells its caller as it goes; the CLI decides how to show it.
#[derive(Clone, Debug)]
pub enum Event {
    Base {
        platform: String,
        name: String,
        digest: Digest,
    },
    Python {
        platform: String,
        info: String,
    },
    Wheels {
        platform: String,
        count: usize,
    },
    Fetched {
        filename: String,
        bytes: u64,
    },
    Layer {
        platform: String,
        label: String,
        digest: Digest,
        size: u64,
        cached: bool,
    },
    /// One unit of work done (a wheel fetched or found, a layer built or found);
    /// emitted as work completes, for progress bars only.
    Progress {
        label: String,
    },
    /// The build is complete: progress bars can go.
    Done,
    Warning(String),
    /// Shown under -v only (e.g. a package's .py skipped by the compiler).
    Detail(String),
}

pub struct BuildOptions<'a> {
    pub platforms: Vec<Platform>,
    pub store: &'a Store,
    pub http: &'a crate::fetch::LazyHttp,
    pub offline: bool,
    pub jobs: usize,
    pub epoch: u64,
    pub remote: Option<&'a dyn RemoteBases>,
    pub on_event: &'a (dyn Fn(Event) + Sync),
    /// Where this run writes (the output, the cache): kept out of the app layer
    /// when they lie inside the source tree, so a rebuild sees the same tree.
    pub own_paths: Vec<PathBuf>,
    /// Registries whose images may hold package layers to reuse (`--cache-from`, the push target).
    pub cache: Option<&'a RemoteCache>,
    /// How our layers are compressed: the spec's `compression`.
    pub compression: crate::layer::compress::Compression,
}

pub fn build(spec: &Spec, opts: &BuildOptions) -> Result<BuildResult, BuildError> {
    let platforms = if opts.platforms.is_empty() {
        spec.platforms.clone()
    } else {
        opts.platforms.clone()
    };
    // issue 8: a project with dependencies and no lockfile would ship without them.
    crate::check::check_lockfile(spec)?;
    let span = crate::trace::span(|| "build: plan app tree".into());
    let tree = plan_app_tree(spec, opts)?;
    drop(span);
    let mut images = Vec::new();
    let mut base_facts: Vec<BaseFactsDoc> = Vec::new();
    let mut local_dirs = Vec::new();
    for platform in &platforms {
        let (image, facts) = build_platform(spec, platform, opts, &tree, &mut local_dirs)?;
        images.push(image);
        if !base_facts.iter().any(|f| f.base == facts.base) {
            base_facts.push(facts);
        }
    }
    let index = (images.len() > 1).then(|| image::index(spec, &images));
    (opts.on_event)(Event::Done);
    Ok(BuildResult {
        images,
        index,
        base_facts,
        local_dirs,
    })
}

/// The app layer's plan, the same for every platform: planned once, before
/// anything is fetched, so a bad source tree fails early and what it warns
/// about (images left in it, its size) is said once.
fn plan_app_tree(spec: &Spec, opts: &BuildOptions) -> Result<LayerPlan, BuildError> {
    let tree = app::plan_app_layer(
        &spec.source,
        &spec.workdir,
        &app_excludes(spec, &opts.own_paths),
    )?;
    for warning in tree.warnings(&spec.workdir, &spec.state_dirs()) {
        (opts.on_event)(Event::Warning(warning));
    }
    Ok(tree.plan)
}

/// One platform's image, stage by stage, and what it learnt about its base.
fn build_platform(
    spec: &Spec,
    platform: &Platform,
    opts: &BuildOptions,
    tree: &LayerPlan,
    local_dirs: &mut Vec<PathBuf>,
) -> Result<(BuiltImage, BaseFactsDoc), BuildError> {
    let span = crate::trace::span(|| "build: base, python, compiler".into());
    let (base, base_repository) = read_base(spec, platform, opts)?;
    // A fresh runner asks the registry cache for its offers, then for the
    // base's facts, in that order, before reading the base (a dead host is
    // then warned about once). A warm one knows its base and reads the offers
    // beside its local work, below.
    let fresh = !base::python::known(opts.store, &base.manifest_digest);
    let early_offers = fresh.then(|| remote_cache::read_offers(opts, platform));
    let known = remote_cache::read_base_facts(opts, &base.manifest_digest);
    let python = base::python::detect(&base, Some(opts.store))?;
    let base_view = BaseView::new(&base, opts.store);
    crate::check::check_base_fills(spec, &base_view)?;
    drop(span);
    let span = crate::trace::span(|| "build: compile root".into());
    remote_cache::read_compile_root(spec, opts, &base);
    drop(span);
    let span = crate::trace::span(|| "build: compiler".into());
    let compiler = bytecode::prepare_compiler(spec, &base, &python, opts)?;
    drop(span);
    let on_base = OnBase {
        base: &base,
        base_repository,
        view: &base_view,
        python: &python,
        compiler: compiler.as_ref(),
        known,
    };
    // Beside the local work, on threads of their own: the registry cache
    // (docs/reproducibility.md; read once, before anything is fetched) and
    // the app's bytecode, whose sandboxed interpreter is most of a warm build.
    std::thread::scope(|s| {
        let offers = match early_offers {
            Some(read) => Offers::Read(read),
            None => Offers::Reading(s.spawn(|| {
                let _span = crate::trace::span(|| "build: registry cache".into());
                remote_cache::read_offers(opts, platform)
            })),
        };
        let compiled = s.spawn(|| {
            let _span = crate::trace::span(|| "build: app bytecode".into());
            let mut plan = tree.clone();
            bytecode::app_pycs(spec, compiler.as_ref(), &mut plan, opts.on_event).map(|()| plan)
        });
        let pending = Pending { offers, compiled };
        image_on(spec, platform, opts, tree, &on_base, pending, local_dirs)
    })
}

/// What a platform's build knows of its base before its layers.
struct OnBase<'a> {
    base: &'a BaseImage,
    base_repository: Option<String>,
    view: &'a BaseView<'a>,
    python: &'a PythonInfo,
    compiler: Option<&'a crate::python::bytecode::Compiler>,
    known: Option<BaseFacts>,
}

/// The registry cache's offers, read or being read.
enum Offers<'scope> {
    Read(remote_cache::Offers),
    Reading(std::thread::ScopedJoinHandle<'scope, remote_cache::Offers>),
}

/// The work running beside [`image_on`]: the registry cache's offers, and
/// the app's layer plan with its pycs.
struct Pending<'scope> {
    offers: Offers<'scope>,
    compiled: std::thread::ScopedJoinHandle<'scope, Result<LayerPlan, BuildError>>,
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The layers on the base, then the image.
fn image_on(
    spec: &Spec,
    platform: &Platform,
    opts: &BuildOptions,
    tree: &LayerPlan,
    on: &OnBase,
    pending: Pending,
    local_dirs: &mut Vec<PathBuf>,
) -> Result<(BuiltImage, BaseFactsDoc), BuildError> {
    let (base, python) = (on.base, on.python);
    let target = venv_target(spec, python);
    let cx = LayerContext {
        opts,
        target: &target,
        compiler: on.compiler,
        bytecode: BytecodeInputs::of(on.compiler),
    };
    let span = crate::trace::span(|| "build: plan packages".into());
    let interpreters = packages::Interpreters {
        base: &|| bytecode::interpreter(spec, base, python, on.compiler, opts),
        whole_base: &|| bytecode::whole_base_interpreter(spec, base, python, opts),
    };
    let in_base = checks::on_base_path(base, on.view);
    let planned = packages::plan(spec, python, platform, opts, &interpreters, &in_base)?;
    local_dirs.extend(planned.local_dirs.iter().cloned());
    drop(span);
    let offers = match pending.offers {
        Offers::Read(o) => o,
        Offers::Reading(h) => joined(h),
    };
    let span = crate::trace::span(|| "build: packages".into());
    let budget = identity::package_budget(
        spec.layer_budget,
        base.manifest.layers.len(),
        bytecode::will_have_stdlib_layer(spec.bytecode_stdlib, &cx),
    );
    let keys = cx.wheel_keys(&planned.wheels);
    // The wheels are fetched (network) while the standard library compiles
    // (CPU, about a second for bookworm's): on a runner without a cache, a
    // slow index or large wheels no longer wait for it.
    let (stdlib, gathered) = std::thread::scope(|s| {
        let gathering =
            s.spawn(|| packages::gather(spec, &planned.wheels, &keys, budget, &offers, opts));
        let stdlib = bytecode::stdlib_layer(spec.bytecode_stdlib, python, &cx, &offers);
        (stdlib, joined(gathering))
    });
    let (stdlib, gathered) = (stdlib?, gathered?);
    let sources = LayerSources {
        wheels_downloaded: gathered.downloaded,
        layers_from_registry_cache: usize::from(stdlib.from_registry) + gathered.from_registry,
        base_layers_downloaded: 0,
    };
    report_gathered(platform, planned.wheels.len(), &gathered, opts);
    let (package_layers, facts) =
        layers::wheel_layers(&cx, &planned.wheels, &keys, &gathered.sources, budget)?;
    let mut ours: Vec<PackageLayer> = stdlib.layer.into_iter().collect();
    ours.push(layers::venv_layer(&cx)?);
    ours.extend(package_layers);
    let checked = checks::Checked {
        wheels: &planned.wheels,
        facts: &facts,
        import_roots: &planned.import_roots,
        wheel_paths: gathered
            .sources
            .iter()
            .map(|s| s.path().map(PathBuf::from))
            .collect(),
    };
    drop(span);
    let (app_layer, source_tree) = app_stage(spec, tree, pending.compiled, on.view, &cx, &checked)?;
    ours.push(app_layer);
    let mut facts = facts_doc(on.view, python, on.known.clone());
    facts.compile_root = on.compiler.map(|c| c.interp.root.clone());
    let parts = image::Parts {
        platform,
        base,
        base_repository: on.base_repository.clone(),
        target: &target,
        python,
        compiler: on.compiler,
        ours,
        locked: planned.locked,
        sdist_builds: planned.sdist_builds,
        source_tree,
        sources,
    };
    let _span = crate::trace::span(|| "build: assemble".into());
    let mut built = image::assemble(spec, parts, opts)?;
    built.sources.base_layers_downloaded = base.layers_downloaded();
    Ok((built, facts))
}

/// The base's facts as this build needed them, with those a registry gave
/// (so the document never loses an answer), as the JSON pushed beside the image.
fn facts_doc(view: &BaseView, python: &PythonInfo, known: Option<BaseFacts>) -> BaseFactsDoc {
    let mut facts = view.facts(python);
    if let Some(k) = known {
        facts.merge(&k);
    }
    BaseFactsDoc {
        base: view.image().manifest_digest.clone(),
        bytes: serde_json::to_vec(&facts).expect("base facts serialize"),
        compile_root: None,
    }
}

/// The base for `platform`, its layer tars kept in the cache's disk.
fn read_base(
    spec: &Spec,
    platform: &Platform,
    opts: &BuildOptions,
) -> Result<(BaseImage, Option<String>), BuildError> {
    let (mut base, base_repository) = open_base(spec, platform, opts)?;
    // The base's tars go in the cache's temporary directory, on its disk.
    base.tars = base::tars::LayerTars::in_dir(opts.store.root().join("tmp"));
    (opts.on_event)(Event::Base {
        platform: platform.to_string(),
        name: base.name.clone(),
        digest: base.manifest_digest.clone(),
    });
    Ok((base, base_repository))
}

pub fn open_base(
    spec: &Spec,
    platform: &Platform,
    opts: &BuildOptions,
) -> Result<(BaseImage, Option<String>), BuildError> {
    let spec_dir = spec.file.parent().map(PathBuf::from).unwrap_or_default();
    match BaseLocation::parse(&spec.base, &spec_dir) {
        BaseLocation::Registry(r) => match opts.remote {
            Some(remote) => Ok(remote.open(&r, platform)?),
            None => Err(base::BaseError::Unsupported(spec.base.clone()).into()),
        },
        loc => Ok((base::open_local(&loc, &spec.base, platform)?, None)),
    }
}

/// The venv the packages install into, on the base's interpreter.
fn venv_target(spec: &Spec, python: &PythonInfo) -> VenvTarget {
    VenvTarget {
        venv: spec.venv.clone(),
        interpreter: python.interpreter.clone(),
        version: python.version,
    }
}

/// Under -v: how many packages the registry cache gave and how many wheels
/// were downloaded.
fn report_gathered(
    platform: &Platform,
    wheels: usize,
    gathered: &packages::Gathered,
    opts: &BuildOptions,
) {
    if wheels == 0 {
        return;
    }
    (opts.on_event)(Event::Detail(format!(
        "[{platform}] {} of {wheels} packages from the registry cache; {} wheels downloaded",
        gathered.from_registry, gathered.downloaded
    )));
}

/// The app stage: on the source tree's layer plan, the checks that refuse
/// an image that cannot start (before the app layer and any output), the
/// source tree's digest (of the sources, not their pycs), the app's pycs
/// (compiled beside the build; their failure is heard after the checks'),
/// and its layer.
fn app_stage(
    spec: &Spec,
    tree: &LayerPlan,
    compiled: std::thread::ScopedJoinHandle<'_, Result<LayerPlan, BuildError>>,
    base: &BaseView,
    cx: &LayerContext,
    checked: &checks::Checked,
) -> Result<(PackageLayer, Digest), BuildError> {
    let opts = cx.opts;
    let source_tree = crate::attest::tree::source_tree_digest(tree, &spec.workdir)?;
    checks::run_checks(spec, base, cx.target, checked, tree, opts)?;
    let mut plan = joined(compiled)?;
    let _span = crate::trace::span(|| "build: app layer".into());
    // After the tree's digest: what the user may write is not the source.
    app::add_state_dirs(&mut plan, &spec.state_dirs(), spec.user)?;
    Ok((layers::app_layer(opts, &plan)?, source_tree))
}

/// The spec's excludes, then this run's own paths and a local base (an
/// input, as `base = "oci:./base"` often is) where they lie in the source
/// tree: left out silently, since neither is the app's.
fn app_excludes(spec: &Spec, own_paths: &[PathBuf]) -> Vec<String> {
    let mut out = spec.app_excludes();
    let source = spec
        .source
        .canonicalize()
        .unwrap_or_else(|_| spec.source.clone());
    let spec_dir = spec.file.parent().map(PathBuf::from).unwrap_or_default();
    let base = match BaseLocation::parse(&spec.base, &spec_dir) {
        BaseLocation::Layout { dir: p, .. } | BaseLocation::Archive { file: p, .. } => {
            p.canonicalize().ok()
        }
        BaseLocation::Registry(_) => None,
    };
    for p in own_paths.iter().chain(&base) {
        if let Ok(rel) = p.strip_prefix(&source) {
            if let Some(rel) = rel.to_str().filter(|r| !r.is_empty()) {
                out.push(crate::dockerignore::literal_pattern(rel));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec read from an imgbuild.toml holding `extra` after base and app.
    pub(super) fn spec(extra: &str) -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("base = \"oci:./base\"\napp = \"main:app\"\n{extra}");
        let file = dir.path().join("imgbuild.toml");
        let spec = crate::spec::parse(&text, &file, false, dir.path()).unwrap();
        (dir, spec)
    }

    #[test]
    fn outputs_and_cache_inside_the_source_stay_out_of_the_app_layer() {
        let (dir, spec) = spec("exclude = [\"tests/\"]\n");
        let source = spec.source.canonicalize().unwrap();
        let own = [
            source.join("out[1]"),
            source.join("cache/imgbuild"),
            source.clone(),
            std::env::temp_dir().join("elsewhere"),
        ];
        assert_eq!(
            app_excludes(&spec, &own),
            ["tests/", ".venv", "out\\[1\\]", "cache/imgbuild"]
        );
        // The spec's base, `oci:./base`, once it exists: an input, not the app's.
        std::fs::create_dir(dir.path().join("base")).unwrap();
        assert_eq!(
            app_excludes(&spec, &own),
            ["tests/", ".venv", "out\\[1\\]", "cache/imgbuild", "base"]
        );
        drop(dir);
    }
}
