//! OCI image layouts and OCI archives (a tar of a layout). Both are written
//! through the deterministic tar writer's plan, so an archive of the same
//! image is the same file every time.

use super::{all_blobs, open_layer, BlobRef, BuildResult, OutputError};
use crate::image::json::canonical;
use crate::image::manifest::{Descriptor, Index};
use crate::image::ANNOTATION_REF_NAME;
use crate::layer::tar::{write_tar, ExternalContent};
use crate::layer::{Content, ImagePath, LayerPlan};
use crate::store::Store;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// The layout's index.json: one descriptor for the image, tagged.
fn layout_index(result: &BuildResult, tag: &str) -> Vec<u8> {
    let mut desc = Descriptor::new(
        result.media_type(),
        result.digest(),
        result.top_bytes().len() as u64,
    );
    desc.annotations = Some(BTreeMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        tag.to_string(),
    )]));
    if result.index.is_none() {
        desc.platform = Some(result.images[0].platform.clone());
    }
    canonical(&Index::new(vec![desc]))
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

struct Blobs<'a> {
    store: &'a Store,
    layers: Vec<&'a super::ImageLayer>,
}

impl ExternalContent for Blobs<'_> {
    fn open(&mut self, index: usize) -> io::Result<Box<dyn Read + '_>> {
        let l = self.layers[index];
        Ok(Box::new(open_layer(self.store, l)?))
    }
}

/// The files of a layout as a plan: small documents inline, layers streamed.
fn layout_plan<'a>(result: &'a BuildResult, tag: &str, store: &'a Store) -> (LayerPlan, Blobs<'a>) {
    let mut plan = LayerPlan::new();
    let mut blobs = Blobs {
        store,
        layers: Vec::new(),
    };
    let path = |p: &str| ImagePath::new(p).expect("layout paths are valid");
    plan.bytes(path("oci-layout"), 0o644, OCI_LAYOUT.to_vec())
        .expect("fresh plan");
    plan.bytes(path("index.json"), 0o644, layout_index(result, tag))
        .expect("fresh plan");
    for (digest, size, blob) in all_blobs(result) {
        let p = path(&format!("blobs/sha256/{}", digest.hex()));
        let content = match blob {
            BlobRef::Bytes(b) => Content::Bytes(b.to_vec()),
            BlobRef::Layer(l) => {
                blobs.layers.push(l);
                Content::External(blobs.layers.len() - 1)
            }
        };
        plan.file(p, 0o644, size, content)
            .expect("blobs are deduplicated");
    }
    (plan, blobs)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes an OCI archive to `file` (temp file + rename).
pub fn write_oci_archive(
    result: &BuildResult,
    file: &Path,
    tag: &str,
    store: &Store,
    mtime: u64,
) -> Result<(), OutputError> {
    let (plan, mut blobs) = layout_plan(result, tag, store);
    let dir = parent_of(file);
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    let w = write_tar(&plan, mtime, &mut blobs, io::BufWriter::new(tmp)).map_err(io_err(file))?;
    let tmp = w.into_inner().map_err(|e| OutputError::Io {
        path: file.to_path_buf(),
        source: e.into_error(),
    })?;
    super::make_readable(tmp.path(), 0o644).map_err(io_err(file))?;
    tmp.persist(file).map_err(|e| OutputError::Io {
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes an OCI layout directory at `dir`. An existing layout there is
/// replaced whole; any other existing directory is refused.
pub fn write_oci_layout(
    result: &BuildResult,
    dir: &Path,
    tag: &str,
    store: &Store,
) -> Result<(), OutputError> {
    if dir.exists() && !(dir.join("oci-layout").is_file() || is_empty_dir(dir)) {
        return Err(OutputError::Invalid(format!(
            "{} exists and is not an OCI layout; choose a new directory for --output oci:",
            dir.display()
        )));
    }
    let parent = parent_of(dir);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".imgbuild-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    let (plan, mut blobs) = layout_plan(result, tag, store);
    for (path, entry) in plan.entries() {
        let dest = tmp.path().join(path.as_str());
        match &entry.kind {
            crate::layer::EntryKind::Dir => fs::create_dir_all(&dest).map_err(io_err(&dest))?,
            crate::layer::EntryKind::File { content, .. } => {
                let mut f = fs::File::create(&dest).map_err(io_err(&dest))?;
                match content {
                    Content::Bytes(b) => f.write_all(b).map_err(io_err(&dest))?,
                    Content::External(i) => {
                        let mut r = blobs.open(*i).map_err(io_err(&dest))?;
                        io::copy(&mut r, &mut f).map_err(io_err(&dest))?;
                    }
                    Content::HostFile(_) => unreachable!("layouts hold no host files"),
                }
            }
            crate::layer::EntryKind::Symlink { .. } => unreachable!("layouts hold no symlinks"),
        }
    }
    super::make_readable(tmp.path(), 0o755).map_err(io_err(dir))?;
    let staged = tmp.keep();
    if dir.exists() {
        let old = tempfile::Builder::new()
            .prefix(".imgbuild-old-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?
            .keep();
        fs::rename(dir, old.join("layout")).map_err(io_err(dir))?;
        fs::rename(&staged, dir).map_err(io_err(dir))?;
        let _ = fs::remove_dir_all(old);
    } else {
        fs::rename(&staged, dir).map_err(io_err(dir))?;
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}
