//! `imgbuild rebase` (issue 25): an image's own layers put on a new base,
//! from the registry alone. What a build on the new base would write is
//! written again from the image's record (`dev.imgbuild.image`): the config
//! derived on the new base's config, the venv layer when the Python's micro
//! version moved, the standard library's pycs when its sources changed. The
//! package and app layers are kept, after the checks that say a swap is safe:
//! the same Python minor version, ABI and interpreter path, and every native
//! library the package layers need found in the new base.

use super::identity::{self, LayerInputs, ANNOTATION_LAYER_FACTS, ANNOTATION_LAYER_KEY};
use super::image::{self, config_on, recorded_python, with_base};
use super::layers::{venv_layer, LayerContext, PackageLayer};
use super::{bytecode, BuildError, BuildOptions, Event};
use crate::base::{self, BaseImage, RemoteBases};
use crate::check::facts::{BaseView, WheelFacts};
use crate::digest::Digest;
use crate::image::config::HistoryEntry;
use crate::image::record::{ImageRecord, ANNOTATION_RECORD};
use crate::image::time::rfc3339;
use crate::inspect::{Loaded, LoadedImage};
use crate::layer::compress::Compression;
use crate::layer::Layer;
use crate::output::{BlobOrigin, BuildResult, BuiltImage, ImageLayer};
use crate::python::interpreter::PythonInfo;
use crate::python::venv::VenvTarget;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::spec::BytecodeMode;
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    /// The swap would give an image that does not run as built.
    #[error("cannot rebase {image} [{platform}] onto {base}: {why}; rebuild it with `imgbuild push` instead")]
    Unsafe {
        image: String,
        platform: String,
        base: String,
        why: String,
    },
    #[error("{image} [{platform}] records no `{ANNOTATION_RECORD}` annotation (images pushed since layer format 5 have it): push it once with this imgbuild, then rebase")]
    NoRecord { image: String, platform: String },
    #[error("{image} [{platform}]: {why}; push it once with this imgbuild, then rebase")]
    BadRecord {
        image: String,
        platform: String,
        why: String,
    },
    #[error("{image}: its base `{base}` has no tag to follow (it is local, or pinned by digest alone); name the new base with --base REGISTRY/REPO:TAG")]
    LocalBase { image: String, base: String },
    /// Boxed, as are the two below: the error stays small.
    #[error(transparent)]
    Build(Box<BuildError>),
    #[error(transparent)]
    Base(Box<base::BaseError>),
    #[error(transparent)]
    Python(Box<base::python::BasePythonError>),
}

impl From<BuildError> for RebaseError {
    fn from(e: BuildError) -> Self {
        RebaseError::Build(Box::new(e))
    }
}

impl From<base::BaseError> for RebaseError {
    fn from(e: base::BaseError) -> Self {
        RebaseError::Base(Box::new(e))
    }
}

impl From<base::python::BasePythonError> for RebaseError {
    fn from(e: base::python::BasePythonError) -> Self {
        RebaseError::Python(Box::new(e))
    }
}

/// What a rebase reads and writes through.
pub struct RebaseOptions<'a> {
    pub store: &'a Store,
    pub http: &'a crate::fetch::LazyHttp,
    pub remote: &'a dyn RemoteBases,
    /// Reads the image's own layers where they are, for a push elsewhere.
    pub client: Arc<RegistryClient>,
    pub jobs: usize,
    pub on_event: &'a (dyn Fn(Event) + Sync),
}

/// One platform's old and new base, for the provenance and the report.
#[derive(Clone, Debug)]
pub struct Swap {
    pub platform: String,
    pub old_base: String,
    pub old_digest: Digest,
    pub new_base: String,
    pub new_digest: Digest,
    /// The labels of our layers made again (`venv`, `stdlib bytecode`).
    pub rebuilt: Vec<String>,
    /// SOURCE_DATE_EPOCH of the image, for its documents.
    pub epoch: u64,
}

pub struct Rebased {
    pub result: BuildResult,
    pub swaps: Vec<Swap>,
}

/// `image` (read from `repo`) on the base `new_base` names, or by default on
/// what its recorded base's tag points to now.
pub fn rebase(
    image: &Loaded,
    repo: &Reference,
    new_base: Option<&str>,
    opts: &RebaseOptions,
) -> Result<Rebased, RebaseError> {
    let mut images = Vec::new();
    let mut swaps = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for one in &image.images {
        let record = read_record(&image.name, one)?;
        let old_name = annotation(one, crate::image::ANNOTATION_BASE_NAME).unwrap_or_default();
        let name = match (new_base, names.get(&old_name)) {
            (Some(n), _) => n.to_owned(),
            (None, Some(n)) => n.clone(),
            (None, None) => {
                let n = followed_base(&image.name, &old_name, &opts.client)?;
                names.insert(old_name.clone(), n.clone());
                n
            }
        };
        let (built, swap) = rebase_one(&image.name, one, repo, &record, &name, opts)?;
        images.push(built);
        swaps.push(swap);
    }
    // An index is written again over the new images, with the old one's
    // annotations (a build's name no base); a single image stays one.
    let index = image
        .is_index
        .then(|| image::index_with(image.index_annotations.clone().unwrap_or_default(), &images));
    Ok(Rebased {
        // The new base's facts are pushed by the next build on it, not here:
        // a rebase pushes only what the image needs.
        result: BuildResult {
            images,
            index,
            base_facts: Vec::new(),
            local_dirs: Vec::new(),
        },
        swaps,
    })
}

fn annotation(image: &LoadedImage, key: &str) -> Option<String> {
    image.manifest.annotations.as_ref()?.get(key).cloned()
}

fn read_record(name: &str, image: &LoadedImage) -> Result<ImageRecord, RebaseError> {
    let platform = image.platform.to_string();
    let record = ImageRecord::from_annotations(image.manifest.annotations.as_ref())
        .ok_or_else(|| RebaseError::NoRecord {
            image: name.into(),
            platform: platform.clone(),
        })?
        .map_err(|e| RebaseError::BadRecord {
            image: name.into(),
            platform: platform.clone(),
            why: format!("its `{ANNOTATION_RECORD}` annotation does not parse ({e})"),
        })?;
    if record.format != super::LAYER_FORMAT {
        return Err(RebaseError::BadRecord {
            image: name.into(),
            platform,
            why: format!(
                "it was built with layer format {}, this imgbuild writes {}",
                record.format,
                super::LAYER_FORMAT
            ),
        });
    }
    Ok(record)
}

/// The recorded base's tag, as it points now: `NAME:TAG@sha256:…` when the
/// base was pinned so (a build would record the new pin), else the name as
/// recorded (a build would resolve its tag the same way).
fn followed_base(
    image: &str,
    recorded: &str,
    client: &RegistryClient,
) -> Result<String, RebaseError> {
    let local = || RebaseError::LocalBase {
        image: image.into(),
        base: recorded.into(),
    };
    let tagged = crate::inspect::outdated::followed_tag(recorded).ok_or_else(local)?;
    let Some((written, _)) = recorded.rsplit_once('@') else {
        return Ok(recorded.to_owned());
    };
    let (_, _, top) = client
        .get_manifest(&tagged)
        .map_err(|e| base::BaseError::Registry {
            base: recorded.into(),
            source: Box::new(e),
        })?;
    Ok(format!("{written}@{top}"))
}

/// One platform's image on the new base.
fn rebase_one(
    name: &str,
    old: &LoadedImage,
    repo: &Reference,
    record: &ImageRecord,
    base_name: &str,
    opts: &RebaseOptions,
) -> Result<(BuiltImage, Swap), RebaseError> {
    let (mut base, base_repository) = opts.remote.open(base_name, &old.platform)?;
    base.tars = base::tars::LayerTars::in_dir(opts.store.root().join("tmp"));
    let unsafe_swap = |why: String| RebaseError::Unsafe {
        image: name.into(),
        platform: old.platform.to_string(),
        base: base_name.into(),
        why,
    };
    let ours = OurLayers::read(old, record).map_err(|why| RebaseError::BadRecord {
        image: name.into(),
        platform: old.platform.to_string(),
        why,
    })?;
    let python = base::python::detect(&base, Some(opts.store))?;
    same_python(record, &python).map_err(unsafe_swap)?;
    libraries_found(record, &ours, &base, opts.store).map_err(|e| unsafe_swap(e.to_string()))?;
    let Remade {
        layers,
        history,
        rebuilt,
        identity,
        magic,
    } = remake_layers(record, &ours, &base, &python, repo, opts)?;
    same_magic(record, magic.as_deref()).map_err(unsafe_swap)?;
    if identity.is_some() && identity != record.compiled_by {
        (opts.on_event)(Event::Warning(format!(
            "[{}] {base_name}'s Python {} is not the build that compiled the image's pycs: they are kept (valid for the same minor version), where a fresh push would compile them again (docs/rebase.md)",
            old.platform,
            python.full_version()
        )));
    }
    let mut settings = record
        .runtime
        .settings(&record.venv, &rfc3339(record.epoch));
    settings.labels.retain(|k, _| !is_base_key(k));
    let config = config_on(&base, &settings, &history)?;
    let config_digest = Digest::of_bytes(&config);
    let mut annotations = old.manifest.annotations.clone().unwrap_or_default();
    with_base(&mut annotations, &base);
    let new_record = ImageRecord {
        base_layers: base.manifest.layers.len(),
        python: recorded_python(&python),
        ..record.clone()
    };
    annotations.insert(ANNOTATION_RECORD.into(), new_record.to_annotation());
    let manifest = image::manifest(&layers, &config, &config_digest, annotations);
    let swap = Swap {
        platform: old.platform.to_string(),
        old_base: annotation(old, crate::image::ANNOTATION_BASE_NAME).unwrap_or_default(),
        old_digest: annotation(old, crate::image::ANNOTATION_BASE_DIGEST)
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| Digest::of_bytes(b"")),
        new_base: base.name.clone(),
        new_digest: base.manifest_digest.clone(),
        rebuilt,
        epoch: record.epoch,
    };
    let built = BuiltImage {
        platform: base.platform.clone(),
        manifest_digest: Digest::of_bytes(&manifest),
        manifest,
        config,
        config_digest,
        layers,
        base_repository,
        packages: Vec::new(),
        sdist_builds: Vec::new(),
        source_tree: None,
        sources: Default::default(),
    };
    Ok((built, swap))
}

fn is_base_key(k: &str) -> bool {
    k == crate::image::ANNOTATION_BASE_NAME || k == crate::image::ANNOTATION_BASE_DIGEST
}

/// The image's own layers: descriptors, diff_ids and history entries, above
/// the recorded number of base layers.
struct OurLayers {
    descriptors: Vec<crate::image::manifest::Descriptor>,
    diff_ids: Vec<Digest>,
    history: Vec<HistoryEntry>,
}

impl OurLayers {
    fn read(image: &LoadedImage, record: &ImageRecord) -> Result<OurLayers, String> {
        let all = &image.manifest.layers;
        let n = all
            .len()
            .checked_sub(record.base_layers)
            .filter(|n| *n > 0)
            .ok_or("its record names more base layers than it has")?;
        let diff_ids: Vec<Digest> = image.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        let history = image.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if diff_ids.len() != all.len() || history.len() < n {
            return Err("its config's diff_ids or history do not match its layers".into());
        }
        let diff_ids = diff_ids[diff_ids.len() - n..].to_vec();
        let history = history[history.len() - n..]
            .iter()
            .zip(&diff_ids)
            .map(|(h, d)| HistoryEntry {
                diff_id: d.clone(),
                created_by: h["created_by"].as_str().unwrap_or_default().to_owned(),
                comment: h["comment"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        Ok(OurLayers {
            descriptors: all[all.len() - n..].to_vec(),
            diff_ids,
            history,
        })
    }

    /// Layer `i` as it is, read from `repo` when its bytes are needed.
    fn kept(
        &self,
        i: usize,
        label: String,
        repo: &Reference,
        client: &Arc<RegistryClient>,
    ) -> ImageLayer {
        let d = &self.descriptors[i];
        ImageLayer {
            layer: Layer {
                digest: d.digest.clone(),
                diff_id: self.diff_ids[i].clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            },
            origin: BlobOrigin::Registry {
                client: client.clone(),
                repo: repo.clone(),
            },
            label,
            annotations: d.annotations.clone(),
        }
    }

    /// The label a build gave layer `i` (`imgbuild: <label>` in its history).
    fn label(&self, i: usize) -> &str {
        let by = &self.history[i].created_by;
        by.strip_prefix("imgbuild: ").unwrap_or(by)
    }

    /// Each package layer's wheels' facts, as its descriptor records them.
    fn facts(&self) -> Vec<(String, WheelFacts)> {
        let mut out = Vec::new();
        for (i, d) in self.descriptors.iter().enumerate() {
            let Some(text) = d.annotation(ANNOTATION_LAYER_FACTS) else {
                continue;
            };
            let facts: Vec<WheelFacts> = serde_json::from_str(text).unwrap_or_default();
            for f in facts {
                out.push((self.label(i).to_owned(), f));
            }
        }
        out
    }
}

/// The new base's Python is the one the layers were made for, as far as
/// they depend on it: minor version, ABI, and the path the venv links to.
fn same_python(record: &ImageRecord, python: &PythonInfo) -> Result<(), String> {
    let was = &record.python;
    let minor = |v: &str| v.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    if minor(&was.version) != python.minor_version() {
        return Err(format!(
            "its Python is {}, the image's packages and pycs were made for {}",
            python.full_version(),
            was.version
        ));
    }
    if was.abi != python.abi_tag {
        return Err(format!(
            "its Python's ABI is {}, the image's packages were made for {}",
            python.abi_tag, was.abi
        ));
    }
    if was.interpreter != python.interpreter {
        return Err(format!(
            "its Python is {}, the image's venv ({}) links to {}",
            python.interpreter, record.venv, was.interpreter
        ));
    }
    Ok(())
}

/// The new base's Python reads the image's pycs: the same magic number
/// (pre-releases of one minor version may differ). Unknown on either side:
/// nothing to compare (no pycs, or an interpreter that does not say).
fn same_magic(record: &ImageRecord, magic: Option<&str>) -> Result<(), String> {
    match (record.pyc_magic.as_deref(), magic) {
        (Some(was), Some(now)) if was != now => Err(format!(
            "its Python writes pycs with magic number {now}, the image's pycs have {was} (pre-releases of one version differ)"
        )),
        _ => Ok(()),
    }
}

/// Every library a package layer needs is in the new base (or shipped by
/// a package, or allowed missing), as the build's own check would find.
fn libraries_found(
    record: &ImageRecord,
    ours: &OurLayers,
    base: &BaseImage,
    store: &Store,
) -> Result<(), crate::check::CheckError> {
    let facts = ours.facts();
    if facts.iter().all(|(_, f)| f.native.needs.is_empty()) {
        return Ok(());
    }
    let Some(libs) = BaseView::new(base, store).libs() else {
        return Ok(());
    };
    let labelled: Vec<(String, &crate::check::native::WheelNative)> = facts
        .iter()
        .map(|(_, f)| {
            (
                identity::package_label(&f.files.name, &f.files.version),
                &f.native,
            )
        })
        .collect();
    crate::check::native::check(&labelled, &libs, &record.allow_missing_libraries)
}

/// Every layer of the new image, our layers' history entries, the labels of
/// those made again, and the identity of the new base's interpreter (when
/// it was prepared).
struct Remade {
    layers: Vec<ImageLayer>,
    history: Vec<HistoryEntry>,
    rebuilt: Vec<String>,
    /// The new base's interpreter's identity and pyc magic number.
    identity: Option<String>,
    magic: Option<String>,
}

/// Our layers on the new base: the venv and stdlib pycs layers as a build
/// on it would make them (kept when their bytes do not change), the rest as
/// they are, read from `repo`.
fn remake_layers(
    record: &ImageRecord,
    ours: &OurLayers,
    base: &BaseImage,
    python: &PythonInfo,
    repo: &Reference,
    opts: &RebaseOptions,
) -> Result<Remade, RebaseError> {
    let build_opts = BuildOptions {
        platforms: Vec::new(),
        store: opts.store,
        http: opts.http,
        offline: false,
        jobs: opts.jobs,
        epoch: record.epoch,
        remote: Some(opts.remote),
        on_event: opts.on_event,
        own_paths: Vec::new(),
        cache: None,
        compression: Compression::parse(&record.compression).unwrap_or_default(),
    };
    let target = VenvTarget {
        venv: crate::layer::ImagePath::new(record.venv.trim_start_matches('/')).map_err(|e| {
            RebaseError::BadRecord {
                image: repo.name(),
                platform: base.platform.to_string(),
                why: format!("its record's venv: {e}"),
            }
        })?,
        interpreter: python.interpreter.clone(),
        version: python.version,
    };
    let has_stdlib = (0..ours.descriptors.len()).any(|i| ours.label(i) == identity::STDLIB_LABEL);
    let mode = match record.bytecode.as_str() {
        "off" => BytecodeMode::Off,
        "unchecked-hash" => BytecodeMode::UncheckedHash,
        _ => BytecodeMode::CheckedHash,
    };
    // Prepared when the image has pycs: its identity says whether the new
    // Python is the one that compiled them, and the stdlib layer needs it.
    let compiler = match has_stdlib || record.compiled_by.is_some() {
        true => bytecode::compiler_for(
            mode,
            bytecode::policy_of(record.sandbox),
            base,
            python,
            &build_opts,
        )?,
        false => None,
    };
    let cx = LayerContext {
        opts: &build_opts,
        target: &target,
        compiler: compiler.as_ref(),
        bytecode: identity::BytecodeInputs::of(compiler.as_ref()),
    };
    let mut layers = image::base_layers(base);
    let mut history = Vec::new();
    let mut rebuilt = Vec::new();
    for (i, d) in ours.descriptors.iter().enumerate() {
        let label = ours.label(i).to_owned();
        let remade = match label.as_str() {
            identity::VENV_LABEL => Some(venv_layer(&cx)?),
            identity::STDLIB_LABEL => stdlib_again(&cx, python, d)?,
            _ => None,
        };
        let layer = match remade {
            Some(p) if p.layer.digest != d.digest => {
                rebuilt.push(label.clone());
                ImageLayer {
                    layer: p.layer,
                    origin: p.origin,
                    label,
                    annotations: p.annotations,
                }
            }
            _ => ours.kept(i, label, repo, &opts.client),
        };
        history.push(HistoryEntry {
            diff_id: layer.layer.diff_id.clone(),
            ..ours.history[i].clone()
        });
        layers.push(layer);
    }
    Ok(Remade {
        layers,
        history,
        rebuilt,
        identity: compiler.as_ref().map(|c| c.interp.identity.clone()),
        magic: compiler
            .as_ref()
            .map(|c| c.interp.magic.clone())
            .filter(|m| !m.is_empty()),
    })
}

/// The stdlib pycs layer for the new base's Python: `None` when its key is
/// the one the image's layer has (same interpreter, same sources).
fn stdlib_again(
    cx: &LayerContext,
    python: &PythonInfo,
    old: &crate::image::manifest::Descriptor,
) -> Result<Option<PackageLayer>, RebaseError> {
    let key = cx.key(&LayerInputs::StdlibPycs {
        prefix: &python.prefix,
        bytecode: &cx.bytecode,
    });
    if old.annotation(ANNOTATION_LAYER_KEY) == Some(key.digest().as_str()) {
        return Ok(None);
    }
    let offers = Default::default();
    Ok(bytecode::stdlib_layer(true, python, cx, &offers)?.layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::interpreter::Libc;

    fn python(version: (u32, u32, u32), abi: &str, interpreter: &str) -> PythonInfo {
        PythonInfo {
            interpreter: interpreter.into(),
            version,
            abi_tag: abi.into(),
            soabi: String::new(),
            free_threaded: abi.ends_with('t'),
            libc: Libc::Glibc {
                major: 2,
                minor: 36,
            },
            arch: "x86_64".into(),
            prefix: "/usr".into(),
            externally_managed: true,
        }
    }

    fn record() -> ImageRecord {
        ImageRecord {
            format: super::super::LAYER_FORMAT,
            venv: "/app/.venv".into(),
            ..crate::image::record::tests::record()
        }
    }

    #[test]
    fn another_pyc_magic_number_is_refused_and_an_unknown_one_is_not() {
        let r = record();
        assert_eq!(same_magic(&r, Some("a70d0d0a")), Ok(()));
        assert_eq!(same_magic(&r, None), Ok(()));
        let e = same_magic(&r, Some("b70d0d0a")).unwrap_err();
        assert!(e.contains("magic number b70d0d0a"), "{e}");
        assert!(e.contains("have a70d0d0a"), "{e}");
    }

    #[test]
    fn a_new_micro_version_is_safe_and_another_minor_abi_or_path_is_not() {
        let r = record();
        assert_eq!(
            same_python(&r, &python((3, 11, 9), "cp311", "/usr/bin/python3.11")),
            Ok(())
        );
        let minor = same_python(&r, &python((3, 12, 1), "cp312", "/usr/bin/python3.12"));
        assert_eq!(
            minor.unwrap_err(),
            "its Python is 3.12.1, the image's packages and pycs were made for 3.11.2"
        );
        let abi = same_python(&r, &python((3, 11, 2), "cp311t", "/usr/bin/python3.11"));
        assert!(abi.unwrap_err().contains("ABI is cp311t"));
        let moved = same_python(
            &r,
            &python((3, 11, 2), "cp311", "/usr/local/bin/python3.11"),
        );
        assert_eq!(
            moved.unwrap_err(),
            "its Python is /usr/local/bin/python3.11, the image's venv (/app/.venv) links to /usr/bin/python3.11"
        );
    }
}
