//! docker-archive: what `docker load` and `podman load` take. One image, a
//! `manifest.json` naming the config and the layers, plus the blobs.

use super::{open_layer, BuildResult, ImageLayer, OutputError};
use crate::layer::tar::{write_tar, ExternalContent};
use crate::layer::{Content, ImagePath, LayerPlan};
use crate::store::Store;
use serde_json::json;
use std::io::{self, Read};
use std::path::Path;

struct Layers<'a> {
    store: &'a Store,
    layers: &'a [ImageLayer],
}

impl ExternalContent for Layers<'_> {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(open_layer(self.store, &self.layers[index])?))
    }
}

/// Writes `result` (one platform) with `repo_tag` (e.g. `localhost/hello-api:latest`).
pub fn write_docker_archive(
    result: &BuildResult,
    file: &Path,
    repo_tag: &str,
    store: &Store,
    mtime: u64,
) -> Result<(), OutputError> {
    let [image] = &result.images[..] else {
        return Err(OutputError::OnePlatformOnly {
            count: result.images.len(),
        });
    };
    let path = |p: &str| ImagePath::new(p).expect("archive paths are valid");
    let mut plan = LayerPlan::new();
    let config_name = format!("blobs/sha256/{}", image.config_digest.hex());
    // Layers stay gzip-compressed, byte for byte as pushed; both loaders detect compression.
    let mut layer_names = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        let name = format!("blobs/sha256/{}", l.layer.digest.hex());
        if plan.get(&path(&name)).is_none() {
            plan.file(path(&name), 0o644, l.layer.size, Content::External(i))
                .expect("checked above");
        }
        layer_names.push(name);
    }
    plan.bytes(path(&config_name), 0o644, image.config.clone())
        .expect("config is not a layer");
    let manifest =
        json!([{ "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names }]);
    plan.bytes(
        path("manifest.json"),
        0o644,
        serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("fresh name");

    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io_err = |source| OutputError::Io {
        path: file.to_path_buf(),
        source,
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
    let mut layers = Layers {
        store,
        layers: &image.layers,
    };
    let w = write_tar(&plan, mtime, &mut layers, io::BufWriter::new(tmp)).map_err(io_err)?;
    let tmp = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    super::make_readable(tmp.path(), 0o644).map_err(io_err)?;
    tmp.persist(file).map_err(|e| io_err(e.error))?;
    Ok(())
}
