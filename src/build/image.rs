//! The image stage: the base's layers kept as they are, ours on top, then
//! the config (history, the command, the user, labels), the manifest with
//! its annotations, and the index over several platforms.

use super::layers::PackageLayer;
use super::{BuildError, BuildOptions, Event, LAYER_FORMAT};
use crate::base::BaseImage;
use crate::digest::Digest;
use crate::image::command::EntrypointCmd;
use crate::image::config::{derive_config, HistoryEntry, RuntimeSettings};
use crate::image::json::canonical;
use crate::image::manifest::{Descriptor, Index, Manifest};
use crate::image::record::{ImageRecord, RecordedPython, RecordedRuntime, ANNOTATION_RECORD};
use crate::image::{self as img, time::rfc3339};
use crate::layer::Layer;
use crate::lock::select::SelectedWheel;
use crate::output::{BlobOrigin, BuiltImage, ImageLayer, LayerSources};
use crate::platform::Platform;
use crate::python::venv::VenvTarget;
use crate::spec::Spec;
use std::collections::BTreeMap;

/// What one platform's image is made of, besides the spec.
pub(super) struct Parts<'a> {
    /// The platform as asked for (the base's may add a variant).
    pub platform: &'a Platform,
    pub base: &'a BaseImage,
    /// The base's repository, when it is in a registry (for cross-repository mounts).
    pub base_repository: Option<String>,
    pub target: &'a VenvTarget,
    /// The base's Python, as the record names it.
    pub python: &'a crate::python::interpreter::PythonInfo,
    /// The interpreter that compiled our pycs (none without bytecode).
    pub compiler: Option<&'a crate::python::bytecode::Compiler>,
    /// Our layers, bottom to top.
    pub ours: Vec<PackageLayer>,
    /// The lock's packages, for the SBOM.
    pub locked: Vec<SelectedWheel>,
    /// How the packages built from sdists were built.
    pub sdist_builds: Vec<crate::sdist::Built>,
    pub source_tree: Digest,
    pub sources: LayerSources,
}

/// The image for one platform: layers, config and manifest.
pub(super) fn assemble(
    spec: &Spec,
    parts: Parts,
    opts: &BuildOptions,
) -> Result<BuiltImage, BuildError> {
    let base = parts.base;
    let platform = parts.platform.to_string();
    let settings = runtime_settings(spec, parts.target, opts.epoch);
    let record = record(spec, &parts, &settings, opts);
    let mut layers = base_layers(base);
    let mut history = Vec::new();
    for PackageLayer {
        label,
        layer,
        cached,
        origin,
        annotations,
    } in parts.ours
    {
        (opts.on_event)(Event::Layer {
            platform: platform.clone(),
            label: label.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            cached,
        });
        history.push(HistoryEntry {
            diff_id: layer.diff_id.clone(),
            created_by: format!("imgbuild: {label}"),
            // The layer format, not the imgbuild version: a release that keeps
            // the format keeps every digest (docs/reproducibility.md).
            comment: format!("imgbuild layer format {LAYER_FORMAT}"),
        });
        layers.push(ImageLayer {
            layer,
            origin,
            label,
            annotations,
        });
    }
    let config = config_on(base, &settings, &history)?;
    let config_digest = Digest::of_bytes(&config);
    let mut annotations = image_annotations(spec, Some(base));
    annotations.insert(ANNOTATION_RECORD.into(), record.to_annotation());
    let manifest = manifest(&layers, &config, &config_digest, annotations);
    Ok(BuiltImage {
        // The base's own platform: it carries the variant (arm64/v8) the user may leave out.
        platform: base.platform.clone(),
        manifest_digest: Digest::of_bytes(&manifest),
        manifest,
        config,
        config_digest,
        layers,
        base_repository: parts.base_repository,
        packages: parts.locked,
        sdist_builds: parts.sdist_builds,
        source_tree: Some(parts.source_tree),
        sources: parts.sources,
    })
}

/// The base's layers, byte for byte, with the config's diff_ids.
pub(super) fn base_layers(base: &BaseImage) -> Vec<ImageLayer> {
    base.manifest
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
        .collect()
}

/// The runtime settings of `spec`'s image; the labels without the base's
/// name and digest, which [`config_on`] adds for the base it derives on.
fn runtime_settings(spec: &Spec, target: &VenvTarget, epoch: u64) -> RuntimeSettings {
    let EntrypointCmd { entrypoint, cmd } = entrypoint_cmd(spec);
    RuntimeSettings {
        user: format!("{}:{}", spec.user.0, spec.user.1),
        working_dir: spec.workdir.absolute(),
        venv_bin: target.bin().absolute(),
        venv: target.venv.absolute(),
        home: spec.home().map(|h| h.absolute()),
        env: spec.env.clone(),
        port: spec.port,
        entrypoint,
        cmd,
        labels: with_provenance(spec.labels.clone(), spec, None),
        created: rfc3339(epoch),
    }
}

/// The base's config with ours over it, as canonical JSON: what a build and
/// a rebase onto the same base both write.
pub(super) fn config_on(
    base: &BaseImage,
    settings: &RuntimeSettings,
    history: &[HistoryEntry],
) -> Result<Vec<u8>, BuildError> {
    let mut settings = settings.clone();
    with_base(&mut settings.labels, base);
    Ok(canonical(&derive_config(&base.config, &settings, history)?))
}

/// What a rebase needs to know of this image (issue 25).
fn record(
    spec: &Spec,
    parts: &Parts,
    settings: &RuntimeSettings,
    opts: &BuildOptions,
) -> ImageRecord {
    ImageRecord {
        format: LAYER_FORMAT,
        base_layers: parts.base.manifest.layers.len(),
        python: recorded_python(parts.python),
        venv: parts.target.venv.absolute(),
        bytecode: spec.bytecode.invalidation().to_owned(),
        bytecode_stdlib: spec.bytecode_stdlib,
        sandbox: spec.sandbox,
        compiled_by: parts.compiler.map(|c| c.interp.identity.clone()),
        pyc_magic: parts
            .compiler
            .map(|c| c.interp.magic.clone())
            .filter(|m| !m.is_empty()),
        compression: opts.compression.name().to_owned(),
        epoch: opts.epoch,
        allow_missing_libraries: spec.allow_missing_libraries.clone(),
        runtime: RecordedRuntime::of(settings),
    }
}

/// The base's Python as a record names it.
pub(super) fn recorded_python(python: &crate::python::interpreter::PythonInfo) -> RecordedPython {
    RecordedPython {
        version: python.full_version(),
        abi: python.abi_tag.clone(),
        interpreter: python.interpreter.clone(),
    }
}

/// The manifest over `layers` and `config`, as canonical JSON.
pub(super) fn manifest(
    layers: &[ImageLayer],
    config: &[u8],
    config_digest: &Digest,
    annotations: BTreeMap<String, String>,
) -> Vec<u8> {
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
        annotations: Some(annotations),
        extra: BTreeMap::new(),
    };
    canonical(&manifest)
}

/// The index over several platforms' images, as canonical JSON.
pub(super) fn index(spec: &Spec, images: &[BuiltImage]) -> Vec<u8> {
    index_with(image_annotations(spec, None), images)
}

/// The index over `images` with `annotations`: a build's, or a rebase's
/// (the old index's annotations, which name no base).
pub(super) fn index_with(annotations: BTreeMap<String, String>, images: &[BuiltImage]) -> Vec<u8> {
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
    index.annotations = Some(annotations);
    canonical(&index)
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
        with_base(&mut map, b);
    }
    if let Some(s) = &spec.source_url {
        map.insert(img::ANNOTATION_SOURCE.into(), s.clone());
    }
    if let Some(r) = &spec.revision {
        map.insert(img::ANNOTATION_REVISION.into(), r.clone());
    }
    map
}

/// `map` with `base`'s name and digest (over any earlier base's).
pub(super) fn with_base(map: &mut BTreeMap<String, String>, base: &BaseImage) {
    map.insert(img::ANNOTATION_BASE_NAME.into(), base.name.clone());
    map.insert(
        img::ANNOTATION_BASE_DIGEST.into(),
        base.manifest_digest.to_string(),
    );
}

/// What the image runs: the spec's `entrypoint`/`cmd`, else uvicorn from the venv.
fn entrypoint_cmd(spec: &Spec) -> EntrypointCmd {
    spec.command(spec.workers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base;
    use crate::build::tests::spec;
    use crate::image::command::Uvicorn;
    use std::io::Read;

    #[test]
    fn the_image_runs_uvicorn_with_the_spec_settings_unless_overridden() {
        let (_dir, s) = spec("venv = \"/opt/venv\"\nport = 9000\nworkers = 3\nproxy-headers = true\napp-dir = \"src\"\n");
        let run = entrypoint_cmd(&s);
        let uvicorn = Uvicorn {
            venv: "/opt/venv",
            app: "main:app",
            factory: false,
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
