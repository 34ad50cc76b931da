//! Whether a build's inputs are those of an earlier run, without building:
//! the no-op push's shortcut (issue 26, "nothing recomputed that the
//! previous push already knows").
//!
//! Two fingerprints. The *inputs key* covers what names the build: this
//! imgbuild executable, the command line and working directory, the
//! environment variables that change a build, the settings file's bytes,
//! the lockfile's and a local base's file status, and the registry base's
//! digest. The *tree fingerprint* covers every file under the directories a
//! build reads from the project (the source tree, the lockfile's directory,
//! the lock's local packages), by file status as git's index does: device,
//! inode, mode, size, modification and change times.
//!
//! A tree is *racy* when a file in it changed within a clock tick of the
//! run's start (or two seconds, on a file system without sub-second times):
//! the change may have come after the build read it, so no fingerprint is
//! given for it and the run is not recorded.

use crate::digest::Digest;
use crate::spec::Spec;
use sha2::{Digest as _, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bumped whenever what the keys cover changes: old records then never match.
const VERSION: &[u8] = b"imgbuild-unchanged-v1\0";

/// Directories the tree fingerprint does not enter: the app layer always
/// leaves them out (`app::DEFAULT_EXCLUDES`) and no build step reads them.
const SKIPPED_DIRS: &[&str] = &[".git", ".venv", "__pycache__"];

/// How far a file's change time may lag the run's start clock and still be
/// racy: kernel file times come from a coarse clock, a tick or so behind.
const TICK: Duration = Duration::from_millis(50);
/// The same for a file system that keeps whole seconds.
const COARSE: Duration = Duration::from_secs(2);

/// What names a build: `None` when something it depends on cannot be
/// fingerprinted without the network (a registry base named by tag).
pub fn inputs_key(spec: &Spec, argv: &[std::ffi::OsString], cwd: &Path) -> Option<Digest> {
    let mut h = Sha256::new();
    h.update(VERSION);
    let exe = std::env::current_exe().ok()?;
    stat_into(&mut h, &exe);
    for a in argv {
        field(&mut h, a.as_bytes());
    }
    field(&mut h, cwd.as_os_str().as_bytes());
    for (k, v) in std::env::vars_os() {
        if changes_a_build(&k.to_string_lossy()) {
            field(&mut h, k.as_bytes());
            field(&mut h, v.as_bytes());
        }
    }
    field(&mut h, spec.file.as_os_str().as_bytes());
    field(&mut h, &std::fs::read(&spec.file).ok()?);
    stat_into(&mut h, &spec.file);
    if let Some(lock) = &spec.lockfile {
        stat_into(&mut h, lock);
    }
    let spec_dir = spec.file.parent().unwrap_or(Path::new("/"));
    match crate::base::BaseLocation::parse(&spec.base, spec_dir) {
        crate::base::BaseLocation::Layout { dir, .. } => stat_into(&mut h, &dir.join("index.json")),
        crate::base::BaseLocation::Archive { file, .. } => stat_into(&mut h, &file),
        crate::base::BaseLocation::Registry(r) => {
            let pinned = crate::reference::Reference::parse(&r).ok()?.digest?;
            field(&mut h, pinned.to_string().as_bytes());
        }
    }
    Some(finish(h))
}

/// Environment variables a build reads that may change its result: the
/// epoch, imgbuild's own (not the password), and the package tools' index
/// settings (a lock without hashes is resolved on the index they name).
fn changes_a_build(name: &str) -> bool {
    name == "SOURCE_DATE_EPOCH"
        || (name.starts_with("IMGBUILD_")
            && name != "IMGBUILD_PASSWORD"
            && name != "IMGBUILD_TRACE")
        || name.starts_with("UV_")
        || name.starts_with("PIP_")
}

/// The directories a build of `spec` reads from the project, besides the
/// local packages only the lock names: the source tree and the lockfile's
/// directory.
pub fn project_dirs(spec: &Spec) -> Vec<PathBuf> {
    let mut dirs = vec![spec.source.clone()];
    if let Some(dir) = spec.lockfile.as_ref().and_then(|l| l.parent()) {
        dirs.push(dir.to_path_buf());
    }
    dirs
}

/// The strict fingerprint the tests check: `None` when racy.
#[cfg(test)]
fn tree_fingerprint(dirs: &[PathBuf], own: &[PathBuf], started: SystemTime) -> Option<Digest> {
    tree_status(dirs, own, started).and_then(|t| (!t.racy).then_some(t.fingerprint))
}

/// A tree's fingerprint, and whether a file in it changed too close to a
/// run's start to be sure the run saw it (the fingerprint alone then cannot
/// say nothing changed, but it can say something did).
pub struct TreeStatus {
    pub fingerprint: Digest,
    pub racy: bool,
}

/// The status of every file under `dirs` (each walked once, in name order)
/// but those in `own` (this run's outputs and cache, which it rewrites),
/// judged racy against `started`; `None` when the tree cannot be walked. A
/// directory counts by its name only: its own times change whenever
/// something is written into it, and what it holds is walked anyway.
pub fn tree_status(dirs: &[PathBuf], own: &[PathBuf], started: SystemTime) -> Option<TreeStatus> {
    let real: Vec<PathBuf> = dirs.iter().map(|d| real_path(d)).collect();
    let mut roots: Vec<&PathBuf> = real.iter().collect();
    roots.sort();
    roots.dedup();
    // A directory inside another one listed is walked with it.
    let outer: Vec<&PathBuf> = roots
        .iter()
        .filter(|d| !roots.iter().any(|o| o != *d && d.starts_with(o)))
        .copied()
        .collect();
    let mut h = Sha256::new();
    h.update(VERSION);
    let mut racy = false;
    for root in outer {
        field(&mut h, root.as_os_str().as_bytes());
        let walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let skipped_dir = e.file_type().is_dir()
                    && SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref());
                e.depth() == 0 || !(skipped_dir || own.iter().any(|o| o == e.path()))
            });
        for entry in walk {
            let entry = entry.ok()?;
            field(&mut h, entry.path().as_os_str().as_bytes());
            if entry.file_type().is_dir() {
                continue;
            }
            let meta = entry.metadata().ok()?;
            racy |= is_racy(&meta, started);
            meta_into(&mut h, &meta);
        }
    }
    Some(TreeStatus {
        fingerprint: finish(h),
        racy,
    })
}

/// `path` with its symbolic links and `..` resolved, as the walk names
/// files; a file not written yet is named through its directory.
pub fn real_path(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Whether `meta` changed too close to `started` to be sure the build saw it.
fn is_racy(meta: &std::fs::Metadata, started: SystemTime) -> bool {
    let at = |secs: i64, nanos: i64| {
        UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    let modified = at(meta.mtime(), meta.mtime_nsec());
    let changed = at(meta.ctime(), meta.ctime_nsec());
    let last = modified.max(changed);
    // A file system that keeps whole seconds may have cut up to a second off.
    let whole_seconds = meta.mtime_nsec() == 0 && meta.ctime_nsec() == 0;
    let margin = if whole_seconds { COARSE } else { TICK };
    last + margin > started
}

fn stat_into(h: &mut Sha256, path: &Path) {
    field(h, path.as_os_str().as_bytes());
    match std::fs::metadata(path) {
        Ok(meta) => meta_into(h, &meta),
        Err(_) => field(h, b"missing"),
    }
}

fn meta_into(h: &mut Sha256, m: &std::fs::Metadata) {
    for n in [m.dev(), m.ino(), u64::from(m.mode()), m.size()] {
        h.update(n.to_le_bytes());
    }
    for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
        h.update(n.to_le_bytes());
    }
}

fn finish(h: Sha256) -> Digest {
    Digest::from_hex(&hex::encode(h.finalize())).expect("a sha256 is 64 hex digits")
}

/// Length-prefixed, so no two lists of fields hash alike.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start well after the test's writes: no file is racy against it.
    fn later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(10)
    }

    #[test]
    fn a_changed_file_changes_the_tree_fingerprint_and_an_unchanged_tree_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        let dirs = [dir.path().to_path_buf()];
        let first = tree_fingerprint(&dirs, &[], later()).unwrap();
        assert_eq!(tree_fingerprint(&dirs, &[], later()).unwrap(), first);
        std::fs::write(dir.path().join("main.py"), "x = 2\n").unwrap();
        assert_ne!(tree_fingerprint(&dirs, &[], later()).unwrap(), first);
    }

    #[test]
    fn a_file_changed_at_the_runs_start_makes_the_tree_racy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        let started = SystemTime::now();
        assert_eq!(
            tree_fingerprint(&[dir.path().to_path_buf()], &[], started),
            None
        );
    }

    #[test]
    fn a_racy_tree_still_tells_whether_it_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        let racy = tree_status(&dirs, &[], SystemTime::now()).unwrap();
        assert!(racy.racy);
        // The same tree, no longer racy: the same fingerprint.
        let calm = tree_status(&dirs, &[], later()).unwrap();
        assert!(!calm.racy);
        assert_eq!(calm.fingerprint, racy.fingerprint);
        std::fs::write(dir.path().join("main.py"), "x = 22\n").unwrap();
        let changed = tree_status(&dirs, &[], SystemTime::now()).unwrap();
        assert!(changed.racy);
        assert_ne!(changed.fingerprint, racy.fingerprint);
    }

    #[test]
    fn bytecode_caches_are_not_walked_but_every_other_directory_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("__pycache__")).unwrap();
        std::fs::create_dir_all(dir.path().join("docs")).unwrap();
        let dirs = [dir.path().to_path_buf()];
        let before = tree_fingerprint(&dirs, &[], later()).unwrap();
        std::fs::write(dir.path().join("__pycache__/m.cpython-311.pyc"), "").unwrap();
        assert_eq!(tree_fingerprint(&dirs, &[], later()).unwrap(), before);
        std::fs::write(dir.path().join("docs/README"), "").unwrap();
        assert_ne!(tree_fingerprint(&dirs, &[], later()).unwrap(), before);
    }

    #[test]
    fn this_runs_own_outputs_and_cache_in_the_tree_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "x = 1\n").unwrap();
        let digest_file = dir.path().join("digest.txt");
        let cache = dir.path().join(".cache");
        std::fs::create_dir(&cache).unwrap();
        let own = [digest_file.clone(), cache.clone()];
        let dirs = [dir.path().to_path_buf()];
        let before = tree_fingerprint(&dirs, &own, later()).unwrap();
        std::fs::write(&digest_file, "sha256:00\n").unwrap();
        std::fs::write(cache.join("record"), "{}").unwrap();
        assert_eq!(tree_fingerprint(&dirs, &own, later()).unwrap(), before);
        std::fs::write(dir.path().join("other.py"), "").unwrap();
        assert_ne!(tree_fingerprint(&dirs, &own, later()).unwrap(), before);
    }

    #[test]
    fn only_the_variables_that_change_a_build_are_keyed() {
        assert!(changes_a_build("SOURCE_DATE_EPOCH"));
        assert!(changes_a_build("UV_INDEX_URL"));
        assert!(changes_a_build("IMGBUILD_ROOTFS_TAR"));
        assert!(!changes_a_build("IMGBUILD_PASSWORD"));
        assert!(!changes_a_build("HOME"));
    }
}
