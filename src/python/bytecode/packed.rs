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
    // The slim part first, then a marker, then the rest, each in name order:
    // a fresh runner stops reading at the marker (install).
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(root).map_err(io::Error::other)?;
        entries.push((in_slim(rel), rel.to_path_buf()));
    }
    for slim in [true, false] {
        for (_, rel) in entries.iter().filter(|(s, _)| *s == slim) {
            tar.append_path_with_name(root.join(rel), rel)?;
        }
        if slim {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_mtime(0);
            tar.append_data(&mut header, SLIM_END, io::empty())?;
        }
    }
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
///
/// Only its slim part ([`in_slim`]: a few hundred files of its 700) is
/// unpacked now, which is all a compile session reads; the tar stays beside
/// the root ([`rest_path`]) until something needs the whole standard library
/// ([`complete`]). On a fresh runner the unpack was most of a one-line
/// change's push (issue 26), and ext4 makes each new file dearer right after
/// many were deleted.
pub fn install(base: &dyn BaseLayers, cache: &Path, tar: &Path, stamp: &[u8]) -> io::Result<()> {
    if !runner::is_stamp(stamp) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a stamp"));
    }
    let (root, stamp_path) = paths(base, cache);
    let roots = root.parent().expect("in roots/");
    fs::create_dir_all(roots)?;
    let tmp = tempfile::Builder::new()
        .prefix(".fetched-")
        .tempdir_in(roots)?;
    let left_out = unpack_entries(tar, tmp.path(), true)?;
    let tmp = tmp.keep();
    if fs::rename(&tmp, &root).is_err() {
        // Another build made the same root first: use theirs.
        let _ = super::unpack::remove_all(&tmp);
    } else if left_out {
        // Beside the root before the root is used: a hard link to the
        // fetched file (the cache's own disk), else a copy.
        let rest = rest_path(&root);
        let kept = roots.join(format!(".fetched-rest.{}", std::process::id()));
        fs::hard_link(tar, &kept).or_else(|_| fs::copy(tar, &kept).map(drop))?;
        fs::rename(&kept, &rest)?;
    }
    let tmp_stamp = roots.join(format!(".fetched-stamp.{}", std::process::id()));
    fs::write(&tmp_stamp, stamp)?;
    fs::rename(&tmp_stamp, &stamp_path)
}

/// The empty entry [`pack`] puts between a root's slim part and the rest;
/// never unpacked. A tar without it (packed before it) is read to its end.
const SLIM_END: &str = ".imgbuild-slim-end";

/// Where [`install`] keeps the packed tar of a root it unpacked in part.
pub fn rest_path(root: &Path) -> PathBuf {
    root.with_extension("rest.tar.zst")
}

/// Unpacks the rest of a root [`install`] unpacked in part, from the tar kept
/// beside it, then removes the tar. Under a lock on the tar: another build
/// completing the same root waits, then finds it whole.
pub fn complete(root: &Path) -> io::Result<()> {
    let rest = rest_path(root);
    let Ok(file) = fs::File::open(&rest) else {
        return Ok(()); // whole already
    };
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function owns; released on close.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if !rest.exists() {
        return Ok(()); // completed by the build that held the lock
    }
    unpack_entries(&rest, root, false)?;
    fs::remove_file(&rest)
}

/// Unpacks the entries of the zstd tar at `tar` in the slim part (`slim`)
/// or the rest into `dir`; returns whether any was left out.
fn unpack_entries(tar: &Path, dir: &Path, slim: bool) -> io::Result<bool> {
    let file = io::BufReader::new(fs::File::open(tar)?);
    let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(file)?);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    let mut left_out = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?;
        if path == Path::new(SLIM_END) {
            if slim {
                return Ok(true); // the rest follows
            }
            continue;
        }
        if in_slim(&path) != slim {
            left_out = true;
            continue;
        }
        // unpack_in refuses `..`, absolute paths and writes through symlinks
        // out of the directory.
        if !entry.unpack_in(dir)? {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "entry outside"));
        }
    }
    Ok(left_out)
}

/// The standard library modules a compile session imports from source
/// besides `encodings`: the driver's `os` and what the interpreter starts
/// with, on the versions that do not freeze them (3.9 and 3.10).
const STARTUP_MODULES: [&str; 10] = [
    "os",
    "stat",
    "posixpath",
    "genericpath",
    "_collections_abc",
    "abc",
    "io",
    "codecs",
    "_sitebuiltins",
    "ntpath",
];

/// Whether `rel` (a path in a compile root) is in the part a fresh runner
/// unpacks first: everything but the standard library, and of it what a
/// compile session reads: the `encodings` package (a source's coding cookie
/// imports its codec), [`STARTUP_MODULES`] with their pycs, and the
/// `lib-dynload` directory itself, which the interpreter's path search looks
/// for. Should a new Python need more, its probe in the slim root fails and
/// the root is completed (`runner::Interpreter::prepare`).
pub fn in_slim(rel: &Path) -> bool {
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    let is_version = |n: &str| {
        n.strip_prefix("python3.")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    };
    let Some(at) = parts
        .windows(2)
        .position(|w| w[0] == "lib" && is_version(w[1]))
    else {
        return true;
    };
    let startup = |file: &str, suffix: &str| {
        file.strip_suffix(suffix)
            .map(|stem| stem.split('.').next().unwrap_or(stem))
            .is_some_and(|module| STARTUP_MODULES.contains(&module))
    };
    match &parts[at + 2..] {
        [] | ["lib-dynload"] | ["encodings", ..] => true,
        [file] => startup(file, ".py"),
        ["__pycache__", file] => startup(file, ".pyc"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    struct OneLayer;

    impl BaseLayers for OneLayer {
        fn name(&self) -> &str {
            "base"
        }
        fn layer_digests(&self) -> Vec<String> {
            vec!["sha256:00".into()]
        }
        fn read_layer(
            &self,
            _: usize,
            _: &mut dyn FnMut(&mut dyn io::Read) -> io::Result<()>,
        ) -> Result<(), super::super::BoxError> {
            unreachable!("a fetched root reads no layer")
        }
    }

    const FILES: [&str; 6] = [
        "usr/bin/python3.11",
        "usr/lib/python3.11/os.py",
        "usr/lib/python3.11/encodings/utf_8.py",
        "usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
        // In a directory the slim part made for a file of its own.
        "usr/lib/python3.11/__pycache__/enum.cpython-311.pyc",
        "usr/lib/python3.11/email/parser.py",
    ];

    #[test]
    fn a_fetched_root_is_unpacked_slim_then_whole_when_asked_and_packs_whole_again() {
        let dir = tempfile::tempdir().unwrap();
        let published = dir.path().join("published");
        for f in FILES {
            let path = published.join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, f).unwrap();
        }
        let stamp =
            br#"{"cache_tag":"cpython-311","identity":"i","magic":"m","stdlib_lacks_pycs":true}"#;
        fs::write(published.with_extension("json"), stamp).unwrap();
        let packed = pack(&published, &dir.path().join("scratch")).unwrap();

        let cache = dir.path().join("cache");
        install(&OneLayer, &cache, packed.tar.path(), stamp).unwrap();
        let (root, _) = paths(&OneLayer, &cache);
        assert!(has_root(&OneLayer, &cache));
        let present = |f: &str| root.join(f).is_file();
        assert!(FILES[..4].iter().all(|f| present(f)));
        assert!(
            !present(FILES[4]) && !present(FILES[5]),
            "a module no compile imports was unpacked"
        );
        assert!(rest_path(&root).is_file());

        complete(&root).unwrap();
        assert!(FILES.iter().all(|f| present(f)));
        assert!(!rest_path(&root).exists());
        complete(&root).unwrap(); // whole already: nothing to do

        let again = pack(&root, &dir.path().join("scratch")).unwrap();
        assert_eq!(
            again.digest, packed.digest,
            "the completed root packs other bytes"
        );
    }

    #[test]
    fn the_slim_part_is_all_but_the_stdlib_modules_a_compile_session_never_imports() {
        for kept in [
            "usr/bin/python3.11",
            "usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
            "lib64/ld-linux-x86-64.so.2",
            "etc/python3.11/sitecustomize.py",
            "usr/lib/python3.11",
            "usr/lib/python3.11/os.py",
            "usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
            "usr/lib/python3.11/encodings/cp1252.py",
            "usr/lib/python3.11/lib-dynload",
            "usr/local/lib/python3.14/codecs.py",
        ] {
            assert!(in_slim(Path::new(kept)), "{kept} left out");
        }
        for left in [
            "usr/lib/python3.11/enum.py",
            "usr/lib/python3.11/__pycache__/enum.cpython-311.pyc",
            "usr/lib/python3.11/email/parser.py",
            "usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
            "usr/local/lib/python3.9/json/__init__.py",
        ] {
            assert!(!in_slim(Path::new(left)), "{left} kept");
        }
    }
}
