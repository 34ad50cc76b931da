//! The pipeline for one build: spec → per platform (base, Python, lock, plan,
//! fetch, layers, config, manifest) → an index when there are several.

use crate::app;
use crate::base::{self, BaseImage, BaseLocation};
use crate::digest::Digest;
use crate::fetch::{FetchError, Fetcher};
use crate::image::config::{derive_config, HistoryEntry, RuntimeSettings};
use crate::image::json::canonical;
use crate::image::manifest::{Descriptor, Index, Manifest};
use crate::image::{self as img, time::rfc3339};
use crate::layer::tar::{write_layer, ExternalContent, NoExternal};
use crate::layer::{Content, Layer, LayerPlan};
use crate::lock::select::SelectedWheel;
use crate::output::{BlobOrigin, BuildResult, BuiltImage, ImageLayer};
use crate::platform::Platform;
use crate::python::interpreter::PythonInfo;
use crate::python::venv::{self, VenvTarget};
use crate::python::wheel::{self, WheelContent};
use crate::spec::Spec;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;

/// Bumped whenever the bytes of a generated layer change for the same inputs,
/// so cached layers from older versions are never reused. See docs/reproducibility.md.
pub const LAYER_FORMAT: u32 = 2;

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
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Wheel(#[from] wheel::WheelError),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] img::config::ConfigError),
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    #[error("{0}")]
    Other(String),
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
}

/// Opens a base that is not a local layout or archive (a registry reference).
pub trait RemoteBases: Sync {
    fn open(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(BaseImage, Option<String>), BuildError>;
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
    let mut a = spec.annotations.clone();
    if let Some(b) = base {
        a.insert(img::ANNOTATION_BASE_NAME.into(), b.name.clone());
        a.insert(
            img::ANNOTATION_BASE_DIGEST.into(),
            b.manifest_digest.to_string(),
        );
    }
    if let Some(s) = &spec.source_url {
        a.insert(img::ANNOTATION_SOURCE.into(), s.clone());
    }
    if let Some(r) = &spec.revision {
        a.insert(img::ANNOTATION_REVISION.into(), r.clone());
    }
    a
}

pub fn open_base(
    spec: &Spec,
    platform: &Platform,
    opts: &BuildOptions,
) -> Result<(BaseImage, Option<String>), BuildError> {
    let spec_dir = spec.file.parent().map(PathBuf::from).unwrap_or_default();
    match BaseLocation::parse(&spec.base, &spec_dir) {
        BaseLocation::Registry(r) => match opts.remote {
            Some(remote) => remote.open(&r, platform),
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
        .map(|d| ImageLayer {
            layer: Layer {
                digest: d.digest.clone(),
                diff_id: Digest::of_bytes(b""),
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
    let mut wheels = Vec::new();
    let mut locals = Vec::new();
    if let Some(lockfile) = &spec.lockfile {
        (opts.on_event)(Event::Python {
            platform: label.clone(),
            info: describe_python(&python),
        });
        (wheels, locals) = select_wheels(spec, lockfile, &python, platform, opts)?;
    }
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
            spec.layer_budget.saturating_sub(layers.len() + 2),
        )?;
    }

    let skeleton = venv::skeleton(&target);
    let (skeleton_layer, cached) = cached_layer(
        opts,
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
    let mut ours = vec![("venv".to_string(), skeleton_layer, cached)];
    ours.extend(packages);

    let app_plan = app::plan_app_layer(
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
    let mut labels = spec.labels.clone();
    labels.insert(img::ANNOTATION_BASE_NAME.into(), base.name.clone());
    labels.insert(
        img::ANNOTATION_BASE_DIGEST.into(),
        base.manifest_digest.to_string(),
    );
    if let Some(s) = &spec.source_url {
        labels.insert(img::ANNOTATION_SOURCE.into(), s.clone());
    }
    if let Some(r) = &spec.revision {
        labels.insert(img::ANNOTATION_REVISION.into(), r.clone());
    }
    let crate::spec::EntrypointCmd { entrypoint, cmd } = spec.effective_entrypoint_cmd();
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
    use crate::lock::LockOptions;
    use crate::python::{markers::MarkerEnv, tags::Tags};
    let lock_opts = LockOptions {
        groups: spec.groups.clone(),
        extras: spec.extras.clone(),
        include_dev: spec.include_dev,
        index_url: spec.index_url.clone(),
    };
    let env = MarkerEnv::for_target(python).map_err(|e| BuildError::Other(e.to_string()))?;
    // issue 8: the lock's local packages come from the same read.
    let (packages, locals) = crate::lock::load_with_local(lockfile, &lock_opts, &env, opts.http)?;
    let tags = Tags::for_target(python);
    let wheels = crate::lock::select::select_wheels(
        &packages,
        &tags,
        &format!("{platform} ({})", python.describe()),
    )?;
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
/// recompressed. The key includes the layer format and the mtime.
fn cached_layer(
    opts: &BuildOptions,
    key: &str,
    make: impl FnOnce() -> Result<(LayerPlan, Box<dyn ExternalContent>), BuildError>,
) -> Result<(Layer, bool), BuildError> {
    let key = format!("layer-v{LAYER_FORMAT}:{}:{key}", opts.epoch);
    if let Some(layer) = opts.store.get_meta::<Layer>("layers", &key) {
        if opts.store.has_blob(&layer.digest) {
            return Ok((layer, true));
        }
    }
    let (plan, mut external) = make()?;
    let layer = store_layer(opts, &plan, external.as_mut())?;
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
) -> Result<Vec<(String, Layer, bool)>, BuildError> {
    // Largest first: the budget keeps them on their own layers, and building
    // them first keeps the biggest wheel from starting last on a busy pool.
    let mut by_size: Vec<usize> = (0..wheels.len()).collect();
    by_size.sort_by_key(|&i| {
        let size = std::fs::metadata(&fetched[i].path)
            .map(|m| m.len())
            .unwrap_or(0);
        (std::cmp::Reverse(size), i)
    });
    let merged: Vec<usize> = if wheels.len() > budget.max(1) {
        by_size.split_off(budget.max(1) - 1)
    } else {
        Vec::new()
    };

    let built = crate::parallel::map_ordered(&by_size, opts.jobs, |&i| {
        let w = &wheels[i];
        let path = &fetched[i].path;
        let key = format!(
            "wheel:{}:{}:{}:{:?}",
            w.sha256, target.venv, target.interpreter, target.version
        );
        cached_layer(opts, &key, || {
            let install = wheel::plan_install(path, target)?;
            let content = WheelContent::open(path)?;
            Ok((install.plan, Box::new(content) as Box<dyn ExternalContent>))
        })
        .map(|(l, cached)| {
            let label = format!("{} {}", w.name, w.version);
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
            "merged:{}:{}:{}:{:?}",
            merged
                .iter()
                .map(|&i| wheels[i].sha256.as_str())
                .collect::<Vec<_>>()
                .join(","),
            target.venv,
            target.interpreter,
            target.version
        );
        let (layer, cached) = cached_layer(opts, &key, || {
            let mut plan = LayerPlan::new();
            let mut sources = Vec::new();
            for (k, &i) in merged.iter().enumerate() {
                let install = wheel::plan_install(&fetched[i].path, target)?;
                plan.merge(offset_externals(install.plan, k * MERGE_STRIDE))
                    .map_err(|e| {
                        BuildError::Other(format!("merging {}: {e}", wheels[i].filename))
                    })?;
                sources.push(WheelContent::open(&fetched[i].path)?);
            }
            Ok((plan, Box::new(Merged(sources)) as Box<dyn ExternalContent>))
        })?;
        out.push((format!("merged: {}", names.join(", ")), layer, cached));
    }
    Ok(out)
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
            .unwrap_or(img::config::DEFAULT_PATH)
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
