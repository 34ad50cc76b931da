//! The local content-addressed cache. Blobs live at `blobs/sha256/<hex>`,
//! small JSON records at `meta/<kind>/<sha256 of key>.json`. Every write goes
//! to a temp file in the store and is renamed into place, so a kill -9 or a
//! concurrent build can leave only stray temp files, never a wrong entry.

use crate::digest::{Digest, HashingWriter, VerifyingReader};
use crate::tee::{BestEffort, Tee};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing a new entry failed; the temp file is gone, so the cache is named instead.
    #[error("cannot write a new entry into the cache {root}")]
    Write {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    /// What was being stored failed its own check (a wheel member against RECORD).
    #[error("its content failed a check; nothing was stored")]
    Content {
        #[source]
        source: io::Error,
    },
    /// A cache another user could have written to: what it holds is reused
    /// without a rebuild (pycs, layers), so it must be this user's alone.
    #[error("cache {path} {why}")]
    Untrusted { path: PathBuf, why: String },
    #[error("{what}: expected {expected}, got {actual}; nothing was stored")]
    Mismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the file at `path` hashes to `d` (false when it cannot be read).
/// What identifies one version of a file on disk: path, size, mtime, ctime,
/// inode and device. `None` when it cannot be read.
pub fn file_stamp(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}.{}:{}.{}:{}:{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev()
    ))
}

pub fn file_matches(path: &Path, d: &Digest) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut r = VerifyingReader::new(f, d.clone(), None, String::new());
    io::copy(&mut r, &mut io::sink()).is_ok()
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// This run's claim on its temp files, made on the first write.
    owner: std::sync::Arc<std::sync::OnceLock<Owner>>,
    warnings: Warnings,
}

/// Where a store reports what it could not do but did not need to: a cache
/// record it could not keep. One line each.
pub type WarningSink = std::sync::Arc<dyn Fn(String) + Send + Sync>;

/// A store's [`WarningSink`], if it has one (none: the warnings are dropped).
#[derive(Clone, Default)]
struct Warnings(Option<WarningSink>);

impl std::fmt::Debug for Warnings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Warnings(sink)"
        } else {
            "Warnings(none)"
        })
    }
}

/// A run that writes into the store holds an exclusive flock on
/// `tmp/<name>.lock` for as long as it lives, and names its temp files
/// `tmp/<name>.*`. The kernel drops the lock when the process dies, however it
/// dies, so the next run can tell a dead writer's leftovers from a live one's.
#[derive(Debug)]
struct Owner {
    name: String,
    lock_path: PathBuf,
    _lock: File,
}

impl Owner {
    fn claim(tmp_dir: &Path) -> io::Result<Owner> {
        // Locked under a name the sweep ignores, then renamed: a sweep never
        // sees an owner's lock file unlocked while the owner lives.
        let part = tempfile::Builder::new()
            .prefix("owner-")
            .suffix(".part")
            .tempfile_in(tmp_dir)?;
        part.as_file().lock()?;
        let stem = part
            .path()
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("owner")
            .to_string();
        let name = format!("{stem}-{}", std::process::id());
        let lock_path = tmp_dir.join(format!("{name}.lock"));
        let lock = part.persist(&lock_path).map_err(|e| e.error)?;
        Ok(Owner {
            name,
            lock_path,
            _lock: lock,
        })
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock_path);
    }
}

impl Store {
    /// `--cache-dir`, else IMGBUILD_CACHE_DIR, else $XDG_CACHE_HOME/imgbuild, else ~/.cache/imgbuild.
    pub fn default_root() -> PathBuf {
        if let Some(d) = std::env::var_os("IMGBUILD_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("imgbuild");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        home.join(".cache").join("imgbuild")
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        if !root.exists() {
            // Private from the start: it may hold wheels of a private index.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(io_err(&root))?;
        }
        check_ownership(&root)?;
        for sub in ["blobs/sha256", "meta", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let store = Store {
            root,
            owner: Default::default(),
            warnings: Warnings::default(),
        };
        store.sweep_stale_temp_files();
        Ok(store)
    }

    /// This store, reporting to `sink` what it could not do but did not
    /// need to ([`Store::put_meta_best_effort`]).
    pub fn with_warnings(mut self, sink: WarningSink) -> Self {
        self.warnings = Warnings(Some(sink));
        self
    }

    /// A build killed mid-write leaves its temp files behind (never a blob:
    /// blobs appear only by rename). Those of a writer that is gone (its
    /// owner lock is free) are removed now; files no owner claims (from older
    /// versions) once untouched for a day.
    fn sweep_stale_temp_files(&self) {
        const STALE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
        let dir = self.root.join("tmp");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let owners: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".lock"))
            .collect();
        for owner in &owners {
            let lock_path = dir.join(format!("{owner}.lock"));
            let Ok(lock) = File::open(&lock_path) else {
                continue;
            };
            if lock.try_lock().is_err() {
                continue; // its writer is alive (or the lock cannot be had): keep its files
            }
            let prefix = format!("{owner}.");
            for n in names.iter().filter(|n| n.starts_with(&prefix)) {
                if !n.ends_with(".lock") {
                    let _ = fs::remove_file(dir.join(n));
                }
            }
            let _ = fs::remove_file(&lock_path);
        }
        for n in &names {
            let path = dir.join(n);
            let age = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            let remove = if n.ends_with(".lock") {
                false
            } else if n.starts_with("owner-") && n.ends_with(".part") {
                age > std::time::Duration::from_secs(60) // a claim cut short
            } else if n.starts_with("owner-") {
                // An owner's lock is made before its first temp file and removed
                // only once it is gone: a temp file without one is a leftover.
                let owner = n.split('.').next().unwrap_or_default();
                !owners.contains(&owner)
            } else {
                age > STALE // from a version without owners
            };
            if remove {
                let _ = fs::remove_file(&path);
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Opens a blob, checking its bytes against its name as they are read.
    pub fn open_blob(&self, d: &Digest) -> Result<VerifyingReader<File>, StoreError> {
        let p = self.blob_path(d);
        let f = File::open(&p).map_err(io_err(&p))?;
        Ok(VerifyingReader::new(
            f,
            d.clone(),
            None,
            format!("cached blob {d}"),
        ))
    }

    /// Checks a cached blob; a corrupt one is removed so it is fetched (or
    /// built) again. See [`Store::file_verified`] for when it is hashed.
    pub fn verify_blob(&self, d: &Digest) -> bool {
        let ok = self.file_verified(&self.blob_path(d), d);
        if !ok {
            self.remove_blob(d);
        }
        ok
    }

    /// Whether the file at `path` holds `d`. It is hashed in full the first
    /// time, and again whenever its size, mtime, ctime, inode or device has
    /// changed since it last passed: an edit, a rename over it or a restored
    /// mtime (which moves ctime) all force a re-hash, while a warm build that
    /// reuses twenty wheels and layers pays a few `stat`s, not 100 ms of
    /// hashing. The pass is recorded under `meta/verified-files`.
    pub fn file_verified(&self, path: &Path, d: &Digest) -> bool {
        let stamp = file_stamp(path);
        if let Some(stamp) = &stamp {
            if self.get_meta::<Digest>("verified-files", stamp).as_ref() == Some(d) {
                return true;
            }
        }
        let ok = file_matches(path, d);
        if let (true, Some(stamp)) = (ok, stamp) {
            // Only a shortcut for next time: a failed write costs a re-check, nothing more.
            self.put_meta_best_effort("verified-files", &stamp, d);
        }
        ok
    }

    /// Drops a blob (a corrupt one, so the next use fetches or builds it again).
    pub fn remove_blob(&self, d: &Digest) {
        let _ = fs::remove_file(self.blob_path(d));
    }

    fn write_err(&self, source: io::Error) -> StoreError {
        if source.kind() == io::ErrorKind::InvalidData {
            return StoreError::Content { source };
        }
        StoreError::Write {
            root: self.root.clone(),
            source,
        }
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        let owner = match self.owner.get() {
            Some(o) => o,
            None => {
                let claimed = Owner::claim(&dir).map_err(io_err(&dir))?;
                // Two threads may race to claim; the loser's claim is dropped (and removed).
                let _ = self.owner.set(claimed);
                self.owner.get().expect("set above")
            }
        };
        tempfile::Builder::new()
            .prefix(&format!("{}.", owner.name))
            .tempfile_in(&dir)
            .map_err(io_err(&dir))
    }

    /// Streams whatever `write` produces into the store, named by its digest.
    pub fn write_blob<T>(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> Result<(Digest, u64, T), StoreError> {
        // Written through the plain File: tempfile's own writer would add the
        // temp file's path to every error, a path that is gone by the time it is shown.
        let (file, tmp) = self.temp_file()?.into_parts();
        let mut w = HashingWriter::new(BufWriter::new(file));
        let out = write(&mut w).map_err(|e| self.write_err(e))?;
        let (digest, size, buf) = w.finish();
        buf.into_inner()
            .map_err(|e| self.write_err(e.into_error()))?;
        self.commit(tmp, &digest)?;
        Ok((digest, size, out))
    }

    /// Copies a stream into the store only if it matches `expected`. The bytes
    /// stay in a temp file until the digest is known, so a mismatching download
    /// never appears under any blob name.
    pub fn put_verified(
        &self,
        expected: &Digest,
        what: &str,
        mut r: impl Read,
    ) -> Result<u64, StoreError> {
        let (file, tmp) = self.temp_file()?.into_parts();
        let mut w = HashingWriter::new(BufWriter::new(file));
        io::copy(&mut r, &mut w).map_err(|e| self.write_err(e))?;
        let (actual, size, buf) = w.finish();
        buf.into_inner()
            .map_err(|e| self.write_err(e.into_error()))?;
        if &actual != expected {
            return Err(StoreError::Mismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        self.commit(tmp, &actual)?;
        Ok(size)
    }

    /// Passes `r` through and keeps a copy: when the reader reaches its end
    /// and the bytes match `expected`, they become that blob. A reader dropped
    /// early, a mismatch or a failed write leaves nothing behind; the copy is
    /// best-effort, so it never turns a good read into an error.
    pub fn tee_verified<R: Read>(
        &self,
        expected: &Digest,
        r: R,
    ) -> Result<TeeReader<R>, StoreError> {
        let (file, tmp) = self.temp_file()?.into_parts();
        Ok(TeeReader {
            store: self.clone(),
            expected: expected.clone(),
            tee: Tee::new(r, BestEffort::new(HashingWriter::new(BufWriter::new(file)))),
            tmp: Some(tmp),
        })
    }

    fn commit(&self, tmp: tempfile::TempPath, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            return Ok(());
        }
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    fn meta_path(&self, kind: &str, key: &str) -> PathBuf {
        self.root
            .join("meta")
            .join(kind)
            .join(format!("{}.json", Digest::of_bytes(key.as_bytes()).hex()))
    }

    /// Drops a record (a hint found wrong); one already gone is no error.
    pub fn remove_meta(&self, kind: &str, key: &str) {
        let _ = fs::remove_file(self.meta_path(kind, key));
    }

    /// A small record stored under a key; a record that cannot be read is treated as absent.
    pub fn get_meta<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Option<T> {
        let bytes = fs::read(self.meta_path(kind, key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps a record that only saves later work (a cache entry, a hint):
    /// one that cannot be written costs the next build that work again, so
    /// the failure is a warning for the sink, never an error.
    pub fn put_meta_best_effort<T: Serialize>(&self, kind: &str, key: &str, value: &T) {
        if let (Err(e), Some(sink)) = (self.put_meta(kind, key, value), &self.warnings.0) {
            sink(format!(
                "a {kind} cache record was not kept: {}",
                crate::text::error_chain(&e)
            ));
        }
    }

    /// Keeps a hint (as [`Store::put_meta_best_effort`]) with the time it
    /// was kept, for [`Store::get_meta_within`].
    pub fn put_dated_meta_best_effort<T: Serialize>(&self, kind: &str, key: &str, value: &T) {
        let dated = Dated {
            at: unix_now(),
            value,
        };
        self.put_meta_best_effort(kind, key, &dated);
    }

    /// A hint kept by [`Store::put_dated_meta_best_effort`] less than
    /// `max_age` ago: what a registry held lately, trusted for that long.
    pub fn get_meta_within<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
        max_age: std::time::Duration,
    ) -> Option<T> {
        let dated: Dated<T> = self.get_meta(kind, key)?;
        (unix_now().saturating_sub(dated.at) < max_age.as_secs()).then_some(dated.value)
    }

    pub fn put_meta<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let path = self.meta_path(kind, key);
        let dir = path.parent().expect("meta path has a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut tmp = self.temp_file()?;
        tmp.write_all(&serde_json::to_vec(value).expect("serialisable"))
            .map_err(io_err(&path))?;
        tmp.persist(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// See [`Store::tee_verified`].
pub struct TeeReader<R> {
    store: Store,
    expected: Digest,
    tee: Tee<R, BestEffort<HashingWriter<BufWriter<File>>>>,
    /// The copy's temp file, until the end of the stream commits or drops it.
    tmp: Option<tempfile::TempPath>,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tee.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let (Some(w), Some(tmp)) = (self.tee.copy_mut().take(), self.tmp.take()) {
                let (actual, _, file) = w.finish();
                if actual == self.expected && file.into_inner().is_ok() {
                    let _ = self.store.commit(tmp, &actual);
                }
            }
        }
        Ok(n)
    }
}

/// Refuses a cache directory owned by another user or writable by others
/// (its group may write: a shared group is a choice, "others" is everyone).
fn check_ownership(root: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(root).map_err(io_err(root))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let refuse = |why: String, fix: String| StoreError::Untrusted {
        path: root.to_path_buf(),
        why: format!("{why}; a cache is reused as it is, so it must be yours alone: {fix}"),
    };
    if meta.uid() != me {
        return Err(refuse(
            format!("belongs to uid {}, not to you (uid {me})", meta.uid()),
            "use a cache directory of your own (--cache-dir or IMGBUILD_CACHE_DIR), or chown it"
                .into(),
        ));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(refuse(
            format!(
                "is writable by every user (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("run chmod o-w {}", root.display()),
        ));
    }
    Ok(())
}

/// A record and when it was kept (seconds since the Unix epoch).
#[derive(serde::Serialize, serde::Deserialize)]
struct Dated<T> {
    at: u64,
    value: T,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dated_hint_is_trusted_only_within_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        store.put_dated_meta_best_effort("hint", "k", &"v".to_string());
        let day = std::time::Duration::from_secs(24 * 3600);
        assert_eq!(
            store.get_meta_within::<String>("hint", "k", day).as_deref(),
            Some("v")
        );
        assert_eq!(
            store.get_meta_within::<String>("hint", "k", std::time::Duration::ZERO),
            None
        );
        assert_eq!(store.get_meta_within::<String>("hint", "other", day), None);
    }

    use super::*;

    #[test]
    fn a_stream_read_whole_and_matching_is_kept_else_nothing_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = vec![7u8; 100_000];
        let d = Digest::of_bytes(&bytes);
        let mut partial = store.tee_verified(&d, &bytes[..]).unwrap();
        partial.read_exact(&mut [0u8; 10]).unwrap();
        drop(partial);
        assert!(!store.has_blob(&d), "a stream dropped early was kept");
        let wrong = Digest::of_bytes(b"other");
        io::copy(
            &mut store.tee_verified(&wrong, &bytes[..]).unwrap(),
            &mut io::sink(),
        )
        .unwrap();
        assert!(
            !store.has_blob(&wrong),
            "bytes kept under a digest they do not have"
        );
        let mut seen = Vec::new();
        store
            .tee_verified(&d, &bytes[..])
            .unwrap()
            .read_to_end(&mut seen)
            .unwrap();
        assert_eq!(
            seen, bytes,
            "the reader passes the stream through unchanged"
        );
        assert!(store.has_blob(&d) && store.verify_blob(&d));
        let leftovers = fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 1, "only this run's owner lock remains in tmp/");
    }

    #[test]
    fn mismatching_bytes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let want = Digest::of_bytes(b"good");
        let err = store
            .put_verified(&want, "wheel x.whl", &b"evil"[..])
            .unwrap_err();
        assert!(err.to_string().contains("wheel x.whl"));
        assert!(!store.has_blob(&want));
        assert!(!store.has_blob(&Digest::of_bytes(b"evil")));
        assert!(tmp_names(dir.path()).iter().all(|n| n.ends_with(".lock")));
        store
            .put_verified(&want, "wheel x.whl", &b"good"[..])
            .unwrap();
        assert!(store.verify_blob(&want));
    }

    fn tmp_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dead_writers_temp_files_are_swept_at_the_next_open_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Store::open(dir.path()).unwrap();
        // A write cut short: the temp file stays, as after kill -9.
        let left = writer.temp_file().unwrap().into_temp_path().keep().unwrap();
        std::fs::write(&left, vec![0u8; 4096]).unwrap();

        // Another run while the writer lives keeps its files.
        drop(Store::open(dir.path()).unwrap());
        assert!(left.exists());
        assert_eq!(
            tmp_names(dir.path()).len(),
            2,
            "{:?}",
            tmp_names(dir.path())
        );

        // The writer is gone (its lock released); the next run sweeps at once.
        drop(writer);
        let next = Store::open(dir.path()).unwrap();
        assert!(!left.exists());
        assert_eq!(tmp_names(dir.path()), Vec::<String>::new());
        // A run that wrote and ended cleanly leaves nothing in tmp.
        next.write_blob(|w| w.write_all(b"x")).unwrap();
        drop(next);
        assert_eq!(tmp_names(dir.path()), Vec::<String>::new());

        // kill -9: the lock file stays, but nobody holds its lock any more.
        let tmp = dir.path().join("tmp");
        fs::write(tmp.join("owner-abc123-99999.lock"), b"").unwrap();
        fs::write(tmp.join("owner-abc123-99999.xyz"), vec![0u8; 4096]).unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(tmp_names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn corrupt_entries_are_detected_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (d, _, ()) = store.write_blob(|w| w.write_all(b"layer")).unwrap();
        fs::write(store.blob_path(&d), b"tampered").unwrap();
        assert!(!store.verify_blob(&d));
        assert!(!store.has_blob(&d));
    }

    #[test]
    fn a_record_that_cannot_be_kept_is_a_warning_for_the_sink_not_an_error() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let heard = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = heard.clone();
        let store = Store::open(dir.path())
            .unwrap()
            .with_warnings(Arc::new(move |w| sink.lock().unwrap().push(w)));
        store.put_meta_best_effort("python", "base-1", &1u32);
        assert_eq!(store.get_meta::<u32>("python", "base-1"), Some(1));
        assert!(
            heard.lock().unwrap().is_empty(),
            "a kept record is not news"
        );

        // A file where the kind's directory belongs: no record can be written.
        fs::write(dir.path().join("meta/check"), b"").unwrap();
        store.put_meta_best_effort("check", "wheel-1", &true);
        assert_eq!(store.get_meta::<bool>("check", "wheel-1"), None);
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!(
            heard[0].starts_with("a check cache record was not kept: cache ")
                && heard[0].contains("meta/check")
                && !heard[0].contains('\n'),
            "{}",
            heard[0]
        );

        // Without a sink the failure is dropped quietly, as before.
        Store::open(dir.path())
            .unwrap()
            .put_meta_best_effort("check", "wheel-1", &true);
    }

    #[test]
    fn a_cache_others_could_write_to_is_refused_in_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        Store::open(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a new cache is private");

        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Store::open(&open)
            .map(drop)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("is writable by every user (mode 777)") && e.contains("chmod o-w"),
            "{e}"
        );
        fs::set_permissions(&open, fs::Permissions::from_mode(0o770)).unwrap();
        Store::open(&open).expect("a group-writable cache is the user's choice");

        // Another user's cache (only root can make one here).
        if unsafe { libc::geteuid() } == 0 {
            let theirs = dir.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(12345), None).unwrap();
            let e = Store::open(&theirs)
                .map(drop)
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains("belongs to uid 12345, not to you (uid 0)"),
                "{e}"
            );
            assert!(
                !theirs.join("blobs").exists(),
                "nothing was written into it"
            );
        }
    }
}
