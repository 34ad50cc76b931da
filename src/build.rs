//! The pipeline for one build: spec → per platform (base, Python, lock, plan,
//! fetch, layers, config, manifest) → an index when there are several.

use crate::app;
use crate::base::{self, BaseImage, BaseLocation, RemoteBases};
use crate::digest::Digest;
use crate::fetch::{FetchError, Fetcher};
use crate::image::command::{EntrypointCmd, Uvicorn};
use crate::image::config::{derive_config, HistoryEntry, RuntimeSettings};
use crate::image::json::canonical;
use crate::image::manifest::{Descriptor, Index, Manifest};
use crate::image::{self as img, time::rfc3339};
use crate::layer::tar::{write_layer, ExternalContent, NoExternal};
use crate::layer::{Content, Layer, LayerPlan};
use crate::lock::select::SelectedWheel;
use crate::output::{BlobOrigin, BuildResult, BuiltImage, ImageLayer};
use crate::platform::Platform;
use crate::python::bytecode::{self, Compiler, OnFailure};
use crate::python::install::{self as wheel, WheelContent};
use crate::python::interpreter::PythonInfo;
use crate::python::venv::{self, VenvTarget};
use crate::spec::Spec;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;

/// Bumped whenever the bytes of a generated layer change for the same inputs,
/// so cached layers from older versions are never reused. See docs/reproducibility.md.
pub const LAYER_FORMAT: u32 = 3;

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
    Config(#[from] img::config::ConfigError),
    #[error(transparent)]
    Markers(#[from] crate::python::markers::MarkerError),
    #[error(transparent)]
    Bytecode(#[from] bytecode::BytecodeError),
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
}

pub fn build(spec: &Spec, opts: &BuildOptions) -> Result<BuildResult, BuildError> {
    let platforms = if opts.platforms.is_empty() {
        spec.platforms.clone()
    } else {
        opts.platforms.clone()
    };
    // issue 8: a project with dependencies and no lockfile would ship without them.
    crate::check::check_lockfile(spec)?;
    let mut images = Vec::new();
    for platform in &platforms {
        images.push(build_platform(spec, platform, opts)?);
    }
    let index = (images.len() > 1).then(|| {
        let manifests = images
            .iter()
            .map(|i| {
                let mut d = Descriptor::new(
                    img::MEDIA_TYPE_OCI_MANIFEST,
                    i.manifest_digest.clone(),
                    i.manifest.len() as u64,
                );
                d.platform = Some(i.platform.clone());
                d
            })
            .collect();
        let mut index = Index::new(manifests);
        index.annotations = Some(image_annotations(spec, None));
        canonical(&index)
    });
    (opts.on_event)(Event::Done);
    Ok(BuildResult { images, index })
}

fn image_annotations(spec: &Spec, base: Option<&BaseImage>) -> BTreeMap<String, String> {
    with_provenance(spec.annotations.clone(), spec, base)
}

/// `map` with the base's name and digest, the source URL and the revision
/// set over the user's entries: the same keys serve as annotations and labels.
fn with_provenance(
    mut map: BTreeMap<String, String>,
    spec: &Spec,
    base: Option<&BaseImage>,
) -> BTreeMap<String, String> {
    if let Some(b) = base {
        map.insert(img::ANNOTATION_BASE_NAME.into(), b.name.clone());
        map.insert(
            img::ANNOTATION_BASE_DIGEST.into(),
            b.manifest_digest.to_string(),
        );
    }
    if let Some(s) = &spec.source_url {
        map.insert(img::ANNOTATION_SOURCE.into(), s.clone());
    }
    if let Some(r) = &spec.revision {
        map.insert(img::ANNOTATION_REVISION.into(), r.clone());
    }
    map
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

fn build_platform(
    spec: &Spec,
    platform: &Platform,
    opts: &BuildOptions,
) -> Result<BuiltImage, BuildError> {
    let label = platform.to_string();
    let (base, base_repository) = open_base(spec, platform, opts)?;
    (opts.on_event)(Event::Base {
        platform: label.clone(),
        name: base.name.clone(),
        digest: base.manifest_digest.clone(),
    });

    let mut layers: Vec<ImageLayer> = base
        .manifest
        .layers
        .iter()
        .zip(&base.diff_ids)
        .map(|(d, diff_id)| ImageLayer {
            layer: Layer {
                digest: d.digest.clone(),
                diff_id: diff_id.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            },
            origin: BlobOrigin::Base(base.blobs.clone()),
            label: "base".into(),
        })
        .collect();
    let mut history = Vec::new();

    let python = base::python::detect(&base, Some(opts.store))?;
    let target = VenvTarget {
        venv: spec.venv.clone(),
        interpreter: python.interpreter.clone(),
        version: python.version,
    };
    // --- bytecode (issue 9): the base's own interpreter, and pycs for a bare stdlib ---
    let compiler = Compiler::for_base(&base, &python, spec.bytecode, &bytecode_cache(opts))?;
    let mut stdlib: Vec<(String, Layer, bool)> = Vec::new();
    stdlib_layer(spec, &python, compiler.as_ref(), opts, &mut stdlib)?;
    // --- end bytecode ---
    let mut wheels = Vec::new();
    let mut locals = Vec::new();
    if let Some(lockfile) = &spec.lockfile {
        (opts.on_event)(Event::Python {
            platform: label.clone(),
            info: describe_python(&python),
        });
        (wheels, locals) = select_wheels(spec, lockfile, &python, platform, opts)?;
    }
    // The SBOM's packages are the lock's; the project's own wheels are not from an index.
    let installed = wheels.clone();
    // issue 8: the project and the local packages the lock installs, as wheels of our own.
    let import_roots = add_local_wheels(spec, &python, &locals, opts, &mut wheels)?;
    if spec.lockfile.is_some() {
        (opts.on_event)(Event::Wheels {
            platform: label.clone(),
            count: wheels.len(),
        });
    }
    let mut packages: Vec<(String, Layer, bool)> = Vec::new();
    let mut fetched = Vec::new();
    if !wheels.is_empty() {
        let lock_dir = match &spec.lockfile {
            Some(l) => l.parent().map(PathBuf::from).unwrap_or_default(),
            None => spec.source.clone(),
        };
        let fetcher = Fetcher {
            store: opts.store,
            client: opts.http,
            offline: opts.offline,
            jobs: opts.jobs,
            lock_dir,
        };
        let on_fetched = |w: &SelectedWheel, f: &crate::fetch::Fetched| {
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
        };
        fetched = fetcher.fetch_all(&wheels, &on_fetched)?;
        packages = wheel_layers(
            &wheels,
            &fetched,
            &target,
            opts,
            spec.layer_budget
                .saturating_sub(layers.len() + 2 + stdlib.len()),
            compiler.as_ref(),
        )?;
    }

    let skeleton = venv::skeleton(&target);
    let (skeleton_layer, cached) = cached_layer(
        opts,
        "venv",
        &format!(
            "venv:{}:{}:{:?}",
            target.venv, target.interpreter, target.version
        ),
        || {
            Ok((
                skeleton.clone(),
                Box::new(NoExternal) as Box<dyn ExternalContent>,
            ))
        },
    )?;
    let mut ours = stdlib;
    ours.push(("venv".to_string(), skeleton_layer, cached));
    ours.extend(packages);

    let mut app_plan = app::plan_app_layer(
        &spec.source,
        &spec.workdir,
        &app_excludes(spec, &opts.own_paths),
    )?;
    // issue 8: refuse an image that cannot start, before the app layer and any output.
    run_checks(
        spec,
        &base,
        &target,
        &wheels,
        &fetched,
        &import_roots,
        &app_plan,
        opts,
    )?;
    // The source tree digest covers the sources, not the pycs compiled from them.
    let source_tree = crate::attest::tree::source_tree_digest(&app_plan, &spec.workdir)?;
    // --- bytecode (issue 9): the app's own source must compile ---
    if let Some(c) = &compiler {
        c.add(
            &mut app_plan,
            &mut NoExternal,
            "the app",
            &spec.workdir,
            OnFailure::Fail,
        )?;
    }
    // --- end bytecode ---
    let app_layer = store_layer(opts, &app_plan, &mut NoExternal)?;
    ours.push(("app".to_string(), app_layer, false));

    for (name, layer, cached) in ours {
        (opts.on_event)(Event::Layer {
            platform: label.clone(),
            label: name.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            cached,
        });
        history.push(HistoryEntry {
            diff_id: layer.diff_id.clone(),
            created_by: format!("imgbuild: {name}"),
            // The layer format, not the imgbuild version: a release that keeps
            // the format keeps every digest (docs/reproducibility.md).
            comment: format!("imgbuild layer format {LAYER_FORMAT}"),
        });
        layers.push(ImageLayer {
            layer,
            origin: BlobOrigin::Store,
            label: name,
        });
    }

    let created = rfc3339(opts.epoch);
    let labels = with_provenance(spec.labels.clone(), spec, Some(&base));
    let EntrypointCmd { entrypoint, cmd } = entrypoint_cmd(spec);
    let settings = RuntimeSettings {
        user: format!("{}:{}", spec.user.0, spec.user.1),
        working_dir: spec.workdir.absolute(),
        venv_bin: target.bin().absolute(),
        venv: target.venv.absolute(),
        env: spec.env.clone(),
        port: spec.port,
        entrypoint,
        cmd,
        labels,
        created,
    };
    let config = canonical(&derive_config(&base.config, &settings, &history)?);
    let config_digest = Digest::of_bytes(&config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(img::MEDIA_TYPE_OCI_MANIFEST.into()),
        config: Descriptor::new(
            img::MEDIA_TYPE_OCI_CONFIG,
            config_digest.clone(),
            config.len() as u64,
        ),
        layers: layers
            .iter()
            .map(|l| Descriptor::new(&l.layer.media_type, l.layer.digest.clone(), l.layer.size))
            .collect(),
        annotations: Some(image_annotations(spec, Some(&base))),
        extra: BTreeMap::new(),
    };
    let manifest = canonical(&manifest);
    Ok(BuiltImage {
        // The base's own platform: it carries the variant (arm64/v8) the user may leave out.
        platform: base.platform.clone(),
        manifest_digest: Digest::of_bytes(&manifest),
        manifest,
        config,
        config_digest,
        layers,
        base_repository,
        packages: installed,
        source_tree: Some(source_tree),
    })
}

fn app_excludes(spec: &Spec, own_paths: &[PathBuf]) -> Vec<String> {
    let mut out = spec.app_excludes();
    let source = spec
        .source
        .canonicalize()
        .unwrap_or_else(|_| spec.source.clone());
    for p in own_paths {
        if let Ok(rel) = p.strip_prefix(&source) {
            if let Some(rel) = rel.to_str().filter(|r| !r.is_empty()) {
                out.push(crate::dockerignore::literal_pattern(rel));
            }
        }
    }
    out
}

/// What the image runs: the spec's `entrypoint`/`cmd`, else uvicorn from the venv.
fn entrypoint_cmd(spec: &Spec) -> EntrypointCmd {
    let venv = spec.venv.absolute();
    let uvicorn = Uvicorn {
        venv: &venv,
        app: &spec.app,
        app_dir: spec.app_dir.as_deref(),
        port: spec.port,
        workers: spec.workers,
        proxy_headers: spec.proxy_headers,
    };
    EntrypointCmd::new(spec.entrypoint.clone(), spec.cmd.clone(), &uvicorn)
}

fn describe_python(p: &PythonInfo) -> String {
    format!("{}: {}", p.interpreter, p.describe())
}

fn select_wheels(
    spec: &Spec,
    lockfile: &std::path::Path,
    python: &PythonInfo,
    platform: &Platform,
    opts: &BuildOptions,
) -> Result<(Vec<SelectedWheel>, Vec<crate::lock::LocalPackage>), BuildError> {
    use crate::lock::{index_config, LockOptions};
    use crate::python::{markers::MarkerEnv, tags::Tags};
    let getenv = |k: &str| std::env::var(k).ok();
    let lock_dir = lockfile.parent().unwrap_or(std::path::Path::new("."));
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
    };
    let env = MarkerEnv::for_target(python)?;
    // issue 8: the lock's local packages come from the same read.
    let (packages, locals) = crate::lock::load_with_local(lockfile, &lock_opts, &env, opts.http)?;
    let tags = Tags::for_target(python);
    let mut wheels = crate::lock::select::select_wheels(
        &packages,
        &tags,
        &format!("{platform} ({})", python.describe()),
    )?;
    // Files the lock names without a URL (poetry.lock, pdm.lock) are looked up
    // on the index, unless they are cached already.
    let cached = |w: &SelectedWheel| {
        crate::fetch::Fetcher::wheel_digest(w).is_ok_and(|d| opts.store.has_blob(&d))
    };
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
    Ok((wheels, locals))
}

/// Writes a plan as a layer blob into the store.
fn store_layer(
    opts: &BuildOptions,
    plan: &LayerPlan,
    external: &mut dyn ExternalContent,
) -> Result<Layer, BuildError> {
    let (_, _, layer) = opts
        .store
        .write_blob(|w| write_layer(plan, opts.epoch, external, w).map(|(l, _)| l))?;
    Ok(layer)
}

/// A layer looked up by what went into it, so unchanged inputs are never
/// recompressed. The key includes the layer format and the mtime. A cached
/// blob is hashed in full before it is reused: one whose bytes no longer match
/// its name is dropped and rebuilt (with a warning), never pushed or written out.
fn cached_layer(
    opts: &BuildOptions,
    label: &str,
    key: &str,
    make: impl FnOnce() -> Result<(LayerPlan, Box<dyn ExternalContent>), BuildError>,
) -> Result<(Layer, bool), BuildError> {
    let key = format!("layer-v{LAYER_FORMAT}:{}:{key}", opts.epoch);
    if let Some(layer) = opts.store.get_meta::<Layer>("layers", &key) {
        if opts.store.has_blob(&layer.digest) {
            if opts.store.verify_blob(&layer.digest) {
                return Ok((layer, true));
            }
            (opts.on_event)(Event::Warning(format!(
                "cached layer {label} ({}) no longer matched its digest; dropped it and built it again",
                layer.digest
            )));
        }
    }
    let (plan, mut external) = make()?;
    let layer = match store_layer(opts, &plan, external.as_mut()) {
        Err(BuildError::Store(source)) => {
            return Err(BuildError::Layer {
                label: label.to_string(),
                source,
            })
        }
        r => r?,
    };
    opts.store.put_meta("layers", &key, &layer)?;
    Ok((layer, false))
}

/// One layer per wheel, in lock order; when there are more wheels than
/// `budget` layers, the smallest are merged into one shared layer.
fn wheel_layers(
    wheels: &[SelectedWheel],
    fetched: &[crate::fetch::Fetched],
    target: &VenvTarget,
    opts: &BuildOptions,
    budget: usize,
    compiler: Option<&Compiler>,
) -> Result<Vec<(String, Layer, bool)>, BuildError> {
    let bytecode_key = Compiler::key(compiler);
    let sizes: Vec<u64> = fetched
        .iter()
        .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
        .collect();
    let (by_size, merged) = split_by_budget(&sizes, budget);

    let built = crate::parallel::map_ordered(&by_size, opts.jobs, |&i| {
        let w = &wheels[i];
        let path = &fetched[i].path;
        let key = format!(
            "wheel:{}:{}:{}:{:?}:{bytecode_key}",
            w.sha256, target.venv, target.interpreter, target.version
        );
        let label = format!("{} {}", w.name, w.version);
        cached_layer(opts, &label, &key, || {
            let install = wheel::plan_install(path, target)?;
            let mut content = WheelContent::open(path)?;
            let mut plan = install.plan;
            package_pycs(opts, compiler, &mut plan, &mut content, w, target)?;
            Ok((plan, Box::new(content) as Box<dyn ExternalContent>))
        })
        .map(|(l, cached)| {
            (opts.on_event)(Event::Progress {
                label: label.clone(),
            });
            (label, l, cached)
        })
    });
    // Back to lock order, so the image never depends on sizes or scheduling.
    let mut built: Vec<(usize, _)> = by_size.iter().copied().zip(built).collect();
    built.sort_by_key(|(i, _)| *i);
    let mut out = built
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Result<Vec<_>, _>>()?;

    if !merged.is_empty() {
        let mut merged = merged;
        merged.sort();
        let names: Vec<String> = merged
            .iter()
            .map(|&i| format!("{} {}", wheels[i].name, wheels[i].version))
            .collect();
        let key = format!(
            "merged:{}:{}:{}:{:?}:{bytecode_key}",
            merged
                .iter()
                .map(|&i| wheels[i].sha256.as_str())
                .collect::<Vec<_>>()
                .join(","),
            target.venv,
            target.interpreter,
            target.version
        );
        let (layer, cached) = cached_layer(opts, "merged", &key, || {
            let mut plan = LayerPlan::new();
            let mut sources = Vec::new();
            for (k, &i) in merged.iter().enumerate() {
                let install = wheel::plan_install(&fetched[i].path, target)?;
                let mut content = WheelContent::open(&fetched[i].path)?;
                let mut own = install.plan;
                package_pycs(opts, compiler, &mut own, &mut content, &wheels[i], target)?;
                plan.merge(offset_externals(own, k * MERGE_STRIDE))
                    .map_err(|source| BuildError::Merge {
                        wheel: wheels[i].filename.clone(),
                        source,
                    })?;
                sources.push(content);
            }
            Ok((plan, Box::new(Merged(sources)) as Box<dyn ExternalContent>))
        })?;
        out.push((format!("merged: {}", names.join(", ")), layer, cached));
    }
    Ok(out)
}

// --- bytecode (issue 9) ---

/// Where the base's unpacked Python and the compile scratch space live.
fn bytecode_cache(opts: &BuildOptions) -> PathBuf {
    opts.store.root().join("bytecode")
}

/// One package's pycs, compiled in a fresh interpreter; sources that do not
/// compile are skipped as pip does, and listed under -v.
fn package_pycs(
    opts: &BuildOptions,
    compiler: Option<&Compiler>,
    plan: &mut LayerPlan,
    content: &mut WheelContent,
    w: &SelectedWheel,
    target: &VenvTarget,
) -> Result<(), BuildError> {
    let Some(c) = compiler else {
        return Ok(());
    };
    let label = format!("{} {}", w.name, w.version);
    let skipped = c.add(plan, content, &label, &target.venv, OnFailure::Skip)?;
    for f in skipped {
        (opts.on_event)(Event::Detail(format!("{label}: no bytecode for {f}")));
    }
    Ok(())
}

/// The standard library's pycs in a layer of their own, when the base has
/// none and `bytecode-stdlib` is on; cached per interpreter and mode.
fn stdlib_layer(
    spec: &Spec,
    python: &PythonInfo,
    compiler: Option<&Compiler>,
    opts: &BuildOptions,
    out: &mut Vec<(String, Layer, bool)>,
) -> Result<(), BuildError> {
    let Some(c) = compiler.filter(|_| spec.bytecode_stdlib) else {
        return Ok(());
    };
    if !bytecode::stdlib_lacks_pycs(&c.interp, python) {
        return Ok(());
    }
    let key = format!("stdlib-pycs:{}:{}", python.prefix, Compiler::key(Some(c)));
    let (layer, cached) = cached_layer(opts, "stdlib bytecode", &key, || {
        let plan = bytecode::stdlib_plan(&c.interp, python, c.mode, &c.scratch)?;
        Ok((plan, Box::new(NoExternal) as Box<dyn ExternalContent>))
    })?;
    out.push(("stdlib bytecode".to_string(), layer, cached));
    Ok(())
}

// --- end bytecode ---

/// Which wheels (by index into `sizes`) get a layer of their own, largest
/// first, and which share the one merged layer: with more wheels than
/// `budget`, all but the `budget - 1` largest are merged. Largest first: the
/// budget keeps them on their own layers, and building them first keeps the
/// biggest wheel from starting last on a busy pool. Ties keep lock order.
fn split_by_budget(sizes: &[u64], budget: usize) -> (Vec<usize>, Vec<usize>) {
    let mut by_size: Vec<usize> = (0..sizes.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let merged = if sizes.len() > budget.max(1) {
        by_size.split_off(budget.max(1) - 1)
    } else {
        Vec::new()
    };
    (by_size, merged)
}

/// Entry indexes of the k-th merged wheel live at k * MERGE_STRIDE + i.
const MERGE_STRIDE: usize = 1 << 32;

fn offset_externals(plan: LayerPlan, offset: usize) -> LayerPlan {
    let mut out = LayerPlan::new();
    for (path, entry) in plan.entries() {
        let path = path.clone();
        let r = match &entry.kind {
            crate::layer::EntryKind::Dir => out.dir(path, entry.mode),
            crate::layer::EntryKind::Symlink { target } => out.symlink(path, target),
            crate::layer::EntryKind::File { size, content } => {
                let content = match content {
                    Content::External(i) => Content::External(offset + i),
                    c => c.clone(),
                };
                out.file(path, entry.mode, *size, content)
            }
        };
        r.expect("paths come from a valid plan");
    }
    out
}

struct Merged(Vec<WheelContent>);

impl ExternalContent for Merged {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        let (k, i) = (index / MERGE_STRIDE, index % MERGE_STRIDE);
        self.0
            .get_mut(k)
            .ok_or_else(|| io::Error::other("merged wheel index out of range"))?
            .open(i)
    }
}

// --- issue 8: local projects and the pre-ship checks ---

/// Adds the root project and the lock's local packages to `wheels`; returns
/// the image directories their `.pth` files put on `sys.path`.
fn add_local_wheels(
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
fn run_checks(
    spec: &Spec,
    base: &BaseImage,
    target: &VenvTarget,
    wheels: &[SelectedWheel],
    fetched: &[crate::fetch::Fetched],
    import_roots: &[crate::layer::ImagePath],
    app_plan: &LayerPlan,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    use crate::check::{self, facts};
    // A warm build finds every wheel's facts in the cache; only misses read wheels.
    let cached: Option<Vec<facts::WheelFacts>> = wheels
        .iter()
        .map(|w| facts::cached_wheel_facts(opts.store, &w.sha256, target))
        .collect();
    let facts = match cached {
        Some(f) => f,
        None => {
            let items: Vec<usize> = (0..wheels.len()).collect();
            crate::parallel::map_ordered(&items, opts.jobs, |&i| {
                facts::wheel_facts(opts.store, &fetched[i].path, &wheels[i].sha256, target)
            })
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
        }
    };
    let files: Vec<check::PackageFiles> = facts.iter().map(|f| f.files.clone()).collect();
    let base_view = facts::BaseView::new(base, opts.store);
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
            .zip(&facts)
            .map(|(w, f)| (format!("{} {}", w.name, w.version), &f.native))
            .collect();
        check::native::check(&labelled, &libs, &spec.allow_missing_libraries)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{EntryKind, ImagePath};

    /// A spec read from an imgbuild.toml holding `extra` after base and app.
    fn spec(extra: &str) -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("base = \"oci:./base\"\napp = \"main:app\"\n{extra}");
        let file = dir.path().join("imgbuild.toml");
        let spec = crate::spec::parse(&text, &file, false, dir.path()).unwrap();
        (dir, spec)
    }

    fn path(p: &str) -> ImagePath {
        ImagePath::new(p).unwrap()
    }

    #[test]
    fn a_cached_layer_whose_blob_rotted_is_rebuilt_with_a_warning_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let http = crate::fetch::LazyHttp::new(Vec::new());
        let warnings = std::sync::Mutex::new(Vec::new());
        let on_event = |e: Event| {
            if let Event::Warning(w) = e {
                warnings.lock().unwrap().push(w);
            }
        };
        let opts = BuildOptions {
            platforms: Vec::new(),
            store: &store,
            http: &http,
            offline: true,
            jobs: 1,
            epoch: 0,
            remote: None,
            on_event: &on_event,
            own_paths: Vec::new(),
        };
        let make = || {
            let mut plan = LayerPlan::new();
            plan.bytes(path("app/x"), 0o644, b"x".to_vec()).unwrap();
            Ok((plan, Box::new(NoExternal) as Box<dyn ExternalContent>))
        };
        let (first, cached) = cached_layer(&opts, "demo 1.0", "k", make).unwrap();
        assert!(!cached);
        let (again, cached) = cached_layer(&opts, "demo 1.0", "k", make).unwrap();
        assert!(cached && again.digest == first.digest);
        assert!(warnings.lock().unwrap().is_empty());

        let blob = store.blob_path(&first.digest);
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap();
        let (rebuilt, cached) = cached_layer(&opts, "demo 1.0", "k", make).unwrap();
        assert!(!cached, "a corrupt blob must not be reused");
        assert_eq!(rebuilt.digest, first.digest);
        assert!(store.verify_blob(&first.digest));
        let warnings = warnings.lock().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("demo 1.0"), "{}", warnings[0]);
    }

    #[test]
    fn within_budget_every_wheel_has_its_own_layer_largest_first() {
        let (own, merged) = split_by_budget(&[10, 30, 20], 3);
        assert_eq!(own, [1, 2, 0]);
        assert!(merged.is_empty());
        let (own, merged) = split_by_budget(&[], 0);
        assert!(own.is_empty() && merged.is_empty());
    }

    #[test]
    fn over_budget_the_smallest_share_one_layer() {
        // Budget 3: the two largest keep their layers, the merged layer is the third.
        let (own, merged) = split_by_budget(&[5, 50, 1, 40, 7], 3);
        assert_eq!(own, [1, 3]);
        assert_eq!(merged, [4, 0, 2]);
        // Equal sizes keep lock order; a budget of 0 or 1 merges everything.
        let (own, merged) = split_by_budget(&[1, 1, 1], 2);
        assert_eq!((own, merged), (vec![0], vec![1, 2]));
        let (own, merged) = split_by_budget(&[3, 2], 0);
        assert_eq!((own, merged), (vec![], vec![0, 1]));
    }

    #[test]
    fn merged_plans_move_external_content_and_keep_the_rest() {
        let mut plan = LayerPlan::new();
        plan.dir(path("venv/lib"), 0o755).unwrap();
        plan.file(path("venv/lib/a.py"), 0o644, 3, Content::External(7))
            .unwrap();
        plan.bytes(path("venv/lib/b.txt"), 0o644, b"hi".to_vec())
            .unwrap();
        plan.symlink(path("venv/lib/c"), "a.py").unwrap();
        let moved = offset_externals(plan.clone(), 2 * MERGE_STRIDE);
        let kinds: BTreeMap<String, EntryKind> = moved
            .entries()
            .map(|(p, e)| (p.as_str().to_string(), e.kind.clone()))
            .collect();
        assert_eq!(
            kinds["venv/lib/a.py"],
            EntryKind::File {
                size: 3,
                content: Content::External(2 * MERGE_STRIDE + 7)
            }
        );
        let original: BTreeMap<String, EntryKind> = plan
            .entries()
            .map(|(p, e)| (p.as_str().to_string(), e.kind.clone()))
            .collect();
        for p in ["venv/lib", "venv/lib/b.txt", "venv/lib/c"] {
            assert_eq!(kinds[p], original[p], "{p}");
        }
        assert_eq!(kinds.len(), original.len());
        assert!(Merged(Vec::new()).open(MERGE_STRIDE + 1).is_err());
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
        drop(dir);
    }

    #[test]
    fn the_image_runs_uvicorn_with_the_spec_settings_unless_overridden() {
        let (_dir, s) = spec("venv = \"/opt/venv\"\nport = 9000\nworkers = 3\nproxy-headers = true\napp-dir = \"src\"\n");
        let run = entrypoint_cmd(&s);
        let uvicorn = Uvicorn {
            venv: "/opt/venv",
            app: "main:app",
            app_dir: Some("src"),
            port: 9000,
            workers: 3,
            proxy_headers: true,
        };
        assert_eq!((run.entrypoint, run.cmd), (None, Some(uvicorn.command())));
        let (_dir, s) = spec("entrypoint = [\"/bin/run\"]\n");
        let run = entrypoint_cmd(&s);
        assert_eq!(
            (run.entrypoint, run.cmd),
            (Some(vec!["/bin/run".into()]), None)
        );
    }

    struct NoBlobs;
    impl base::BlobSource for NoBlobs {
        fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, base::BaseError> {
            Err(base::BaseError::MissingBlob {
                base: "test".into(),
                digest: digest.clone(),
            })
        }
        fn name(&self) -> &str {
            "test"
        }
    }

    #[test]
    fn annotations_name_the_base_source_and_revision_over_the_users() {
        let (_dir, s) = spec(
            "annotations = { team = \"payments\", \"org.opencontainers.image.source\" = \"mine\" }\nsource-url = \"https://example.com/acme/api\"\nrevision = \"4f2c1e9\"\n",
        );
        let manifest: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#,
        )
        .unwrap();
        let base = BaseImage {
            name: "python:3.12-slim".into(),
            manifest_digest: Digest::of_bytes(b"base"),
            manifest,
            config: serde_json::json!({}),
            platform: Platform::parse("linux/amd64").unwrap(),
            diff_ids: Vec::new(),
            blobs: std::sync::Arc::new(NoBlobs),
        };
        let index = image_annotations(&s, None);
        assert_eq!(index["team"], "payments");
        assert_eq!(
            index[img::ANNOTATION_SOURCE],
            "https://example.com/acme/api"
        );
        assert_eq!(index[img::ANNOTATION_REVISION], "4f2c1e9");
        assert!(!index.contains_key(img::ANNOTATION_BASE_NAME));
        let image = image_annotations(&s, Some(&base));
        assert_eq!(image[img::ANNOTATION_BASE_NAME], "python:3.12-slim");
        assert_eq!(
            image[img::ANNOTATION_BASE_DIGEST],
            Digest::of_bytes(b"base").to_string()
        );
        assert_eq!(image.len(), index.len() + 2);
    }
}
