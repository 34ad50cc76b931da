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

/// The descriptor of the image in a layout's index.json, tagged.
fn tagged_descriptor(result: &BuildResult, tag: &str) -> Descriptor {
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
    desc
}

/// The index.json of a new layout: one descriptor for the image, tagged.
fn layout_index(result: &BuildResult, tag: &str) -> Vec<u8> {
    canonical(&Index::new(vec![tagged_descriptor(result, tag)]))
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
    // Written through the plain File, so an error names `file` once, not the temp file too.
    let (f, tmp) = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err(dir))?
        .into_parts();
    let w = write_tar(&plan, mtime, &mut blobs, io::BufWriter::new(f)).map_err(io_err(file))?;
    w.into_inner().map_err(|e| OutputError::Io {
        path: file.to_path_buf(),
        source: e.into_error(),
    })?;
    super::make_readable(&tmp, 0o644).map_err(io_err(file))?;
    tmp.persist(file).map_err(|e| OutputError::Io {
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes an OCI layout directory at `dir`: a new one is staged beside it and
/// renamed into place; an existing layout gets the image added under `tag`
/// (as skopeo does); any other existing directory is refused.
pub fn write_oci_layout(
    result: &BuildResult,
    dir: &Path,
    tag: &str,
    store: &Store,
) -> Result<(), OutputError> {
    if dir.join("oci-layout").is_file() {
        return update_layout(result, dir, tag, store);
    }
    if dir.exists() && !is_empty_dir(dir) {
        return Err(OutputError::NotALayout {
            path: dir.to_path_buf(),
        });
    }
    let parent = parent_of(dir);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".imgbuild-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    let (plan, blobs) = layout_plan(result, tag, store);
    for (path, entry) in plan.entries() {
        let dest = tmp.path().join(path.as_str());
        // Errors name the layout being written, not the staging directory, which is removed.
        let target = dir.join(path.as_str());
        match &entry.kind {
            crate::layer::EntryKind::Dir => fs::create_dir_all(&dest).map_err(io_err(&target))?,
            crate::layer::EntryKind::File { content, .. } => match content {
                Content::Bytes(b) => fs::write(&dest, b).map_err(io_err(&target))?,
                Content::External(i) => {
                    super::copy_layer(store, blobs.layers[*i], &dest).map_err(io_err(&target))?
                }
                Content::HostFile(_) => unreachable!("layouts hold no host files"),
            },
            crate::layer::EntryKind::Symlink { .. } => unreachable!("layouts hold no symlinks"),
        }
    }
    super::make_readable(tmp.path(), 0o755).map_err(io_err(dir))?;
    let staged = tmp.keep();
    // Only an empty directory can be here; rename(2) replaces it.
    fs::rename(&staged, dir).map_err(io_err(dir))?;
    Ok(())
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Adds to an existing layout what it lacks, each blob through a temp file and
/// a rename, then swaps index.json last: a reader sees the old image or the
/// new one, never a mix. Blobs already there (content-addressed, of the right
/// size) are kept, so rebuilding into the same layout copies only what changed.
fn update_layout(
    result: &BuildResult,
    dir: &Path,
    tag: &str,
    store: &Store,
) -> Result<(), OutputError> {
    let blobs_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).map_err(io_err(&blobs_dir))?;
    for (digest, size, blob) in all_blobs(result) {
        let dest = blobs_dir.join(digest.hex());
        if fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
            continue;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&blobs_dir).map_err(io_err(&blobs_dir))?;
        match blob {
            BlobRef::Bytes(b) => tmp.write_all(b).map_err(io_err(&dest))?,
            BlobRef::Layer(l) => super::copy_layer(store, l, tmp.path()).map_err(io_err(&dest))?,
        }
        super::make_readable(tmp.path(), 0o644).map_err(io_err(&dest))?;
        tmp.persist(&dest).map_err(|e| OutputError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
    }
    let index_path = dir.join("index.json");
    let mut index = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .unwrap_or_else(|| Index::new(Vec::new()));
    index
        .manifests
        .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(tag));
    index.manifests.push(tagged_descriptor(result, tag));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    tmp.write_all(&canonical(&index))
        .map_err(io_err(&index_path))?;
    super::make_readable(tmp.path(), 0o644).map_err(io_err(&index_path))?;
    tmp.persist(&index_path).map_err(|e| OutputError::Io {
        path: index_path.clone(),
        source: e.error,
    })?;
    Ok(())
}
