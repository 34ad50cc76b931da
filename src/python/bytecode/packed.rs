//! A compile root as one zstd tar and its stamp, so a fresh runner can start
//! the base's interpreter without reading the base (docs/reproducibility.md,
//! "The compile root in the registry"). The tree is the one
//! `runner::Interpreter::prepare` unpacked, file for file, so the pycs it
//! compiles are the same bytes.

use super::runner;
use super::BaseLayers;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The tree and stamp `prepare` keeps for `base`'s interpreter under `cache`.
fn paths(base: &dyn BaseLayers, cache: &Path) -> (PathBuf, PathBuf) {
    runner::root_paths(cache, &base.layer_digests(), false)
}

/// Whether `cache` holds `base`'s compile root already (so it need not be fetched).
pub fn has_root(base: &dyn BaseLayers, cache: &Path) -> bool {
    let (root, stamp) = paths(base, cache);
    root.is_dir() && stamp.is_file()
}

/// A compile root packed: its zstd tar in a temporary file (tens of MB: never
/// held in memory, so a push's memory stays flat), the tar's digest and size,
/// and the stamp's bytes.
pub struct PackedRoot {
    pub tar: tempfile::NamedTempFile,
    pub digest: crate::digest::Digest,
    pub size: u64,
    pub stamp: Vec<u8>,
}

/// The compile root `root` (an interpreter's tree) as a zstd tar (entries
/// relative to it, symlinks kept as symlinks) written into a temporary file
/// in `scratch`, and its stamp's bytes.
pub fn pack(root: &Path, scratch: &Path) -> io::Result<PackedRoot> {
    let stamp = fs::read(root.with_extension("json"))?;
    fs::create_dir_all(scratch)?;
    let file = tempfile::NamedTempFile::new_in(scratch)?;
    let hashing = crate::digest::HashingWriter::new(io::BufWriter::new(file));
    // zstd, not gzip: a fresh runner unpacks it on every build, and the 36 MB
    // tree of bookworm's Python inflates and untars in 81 ms from zstd against
    // 285 ms from gzip (tar and the reference tools, 14 MB either way).
    let mut tar = tar::Builder::new(zstd::stream::write::Encoder::new(hashing, 3)?);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", root)?;
    let (digest, size, buffered) = tar.into_inner()?.finish()?.finish();
    let tar = buffered.into_inner().map_err(|e| e.into_error())?;
    Ok(PackedRoot {
        tar,
        digest,
        size,
        stamp,
    })
}

/// Unpacks a packed compile root for `base` where `prepare` looks for it,
/// in a temporary directory renamed into place; a stamp `prepare` would not
/// read, or a tar that tries to write outside its directory, is refused.
pub fn install(
    base: &dyn BaseLayers,
    cache: &Path,
    tar_gz: impl io::Read,
    stamp: &[u8],
) -> io::Result<()> {
    if !runner::is_stamp(stamp) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a stamp"));
    }
    let (root, stamp_path) = paths(base, cache);
    let roots = root.parent().expect("in roots/");
    fs::create_dir_all(roots)?;
    let tmp = tempfile::Builder::new()
        .prefix(".fetched-")
        .tempdir_in(roots)?;
    let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(tar_gz)?);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    for entry in archive.entries()? {
        // unpack_in refuses `..`, absolute paths and writes through symlinks
        // out of the directory.
        if !entry?.unpack_in(tmp.path())? {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "entry outside"));
        }
    }
    let tmp = tmp.keep();
    if fs::rename(&tmp, &root).is_err() {
        // Another build made the same root first: use theirs.
        let _ = super::unpack::remove_all(&tmp);
    }
    let tmp_stamp = roots.join(format!(".fetched-stamp.{}", std::process::id()));
    fs::write(&tmp_stamp, stamp)?;
    fs::rename(&tmp_stamp, &stamp_path)
}
