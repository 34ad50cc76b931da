//! The pipeline for one build: spec → per platform (base, Python, lock, plan,
//! fetch, layers, config, manifest) → an index when there are several.

pub mod cache_plan;
mod checks;
mod layers;
pub mod remote_cache;

use checks::{add_local_wheels, run_checks};
use layers::{
    bytecode_cache, cached_layer, package_inputs, stdlib_layer, store_layer, wheel_layers,
    PackageLayer,
};
pub use remote_cache::RemoteCache;

use crate::app;
use crate::base::{self, BaseImage, BaseLocation, RemoteBases};
use crate::digest::Digest;
use crate::fetch::{FetchError, Fetcher};
use crate::image::command::EntrypointCmd;
use crate::image::config::{derive_config, HistoryEntry, RuntimeSettings};
use crate::image::json::canonical;
use crate::image::manifest::{Descriptor, Index, Manifest};
use crate::image::{self as img, time::rfc3339};
use crate::layer::tar::{ExternalContent, NoExternal};
use crate::layer::Layer;
use crate::lock::select::SelectedWheel;
use crate::output::{BlobOrigin, BuildResult, BuiltImage, ImageLayer, LayerSources};
use crate::platform::Platform;
use crate::python::bytecode::{self, Compiler, OnFailure};
use crate::python::install::{self as wheel};
use crate::python::interpreter::PythonInfo;
use crate::python::venv::{self, VenvTarget};
use crate::spec::Spec;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Bumped whenever the bytes of a generated layer change for the same inputs,
/// so cached layers from older versions are never reused. See docs/reproducibility.md.
pub const LAYER_FORMAT: u32 = 4;

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
    let (mut base, base_repository) = open_base(spec, platform, opts)?;
    // The base's tars go in the cache's temporary directory, on its disk.
    base.tars = base::tars::LayerTars::in_dir(opts.store.root().join("tmp"));
    (opts.on_event)(Event::Base {
        platform: label.clone(),
        name: base.name.clone(),
        digest: base.manifest_digest.clone(),
    });
    // The registry cache (docs/reproducibility.md): read once, before anything else is fetched.
    let offers = remote_cache::read_offers(opts, platform);

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
            annotations: None,
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
    let (stdlib, stdlib_reused) = stdlib_layer(spec, &python, compiler.as_ref(), opts, &offers)?;
    let mut sources = LayerSources {
        wheels_downloaded: 0,
        layers_from_registry_cache: usize::from(stdlib_reused),
    };
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
    let mut packages: Vec<PackageLayer> = Vec::new();
    let mut facts = Vec::new();
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
        let budget = spec
            .layer_budget
            .saturating_sub(layers.len() + 2 + usize::from(stdlib.is_some()));
        // The registry cache, before anything is downloaded: a wheel whose
        // layer a registry holds is not fetched (docs/reproducibility.md).
        let reused = if wheels.len() <= budget.max(1) {
            let bytecode_key = Compiler::key(compiler.as_ref());
            let keys: Vec<String> = wheels
                .iter()
                .map(|w| {
                    cache_plan::layer_key(
                        opts.epoch,
                        opts.compression,
                        &package_inputs(w, &target, &bytecode_key),
                    )
                })
                .collect();
            remote_cache::reuse_layers(opts, &offers, &keys, 1)
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
        let got = fetcher.fetch_all(&wanted, &on_fetched)?;
        sources.wheels_downloaded = got.iter().filter(|f| f.downloaded > 0).count();
        sources.layers_from_registry_cache += wheels.len() - wanted.len();
        (opts.on_event)(Event::Detail(format!(
            "[{label}] {} of {} packages from the registry cache; {} wheels downloaded",
            wheels.len() - wanted.len(),
            wheels.len(),
            sources.wheels_downloaded
        )));
        let mut got = got.into_iter();
        let fetched: Vec<Option<crate::fetch::Fetched>> = reused
            .iter()
            .map(|r| if r.is_none() { got.next() } else { None })
            .collect();
        (packages, facts) = wheel_layers(
            &wheels,
            &fetched,
            &reused,
            &target,
            opts,
            budget,
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
    let mut ours: Vec<PackageLayer> = stdlib.into_iter().collect();
    ours.push(PackageLayer {
        label: "venv".to_string(),
        layer: skeleton_layer,
        cached,
        origin: BlobOrigin::Store,
        annotations: None,
    });
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
        &facts,
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
    ours.push(PackageLayer {
        label: "app".to_string(),
        layer: app_layer,
        cached: false,
        origin: BlobOrigin::Store,
        annotations: None,
    });

    for PackageLayer {
        label: name,
        layer,
        cached,
        origin,
        annotations,
    } in ours
    {
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
            origin,
            label: name,
            annotations,
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
            .map(|l| {
                let mut d =
                    Descriptor::new(&l.layer.media_type, l.layer.digest.clone(), l.layer.size);
                d.annotations = l.annotations.clone();
                d
            })
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
        sources,
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
    EntrypointCmd::for_spec(spec, spec.workers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A spec read from an imgbuild.toml holding `extra` after base and app.
    fn spec(extra: &str) -> (tempfile::TempDir, Spec) {
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
        drop(dir);
    }

    #[test]
    fn the_image_runs_uvicorn_with_the_spec_settings_unless_overridden() {
        use crate::image::command::Uvicorn;
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
            tars: Default::default(),
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
