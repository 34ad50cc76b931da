//! Reading the project's own files (the settings, pyproject.toml, lockfiles,
//! `.dockerignore`, index settings) without trusting them: a project checked
//! out from elsewhere may hold a symlink to a host file, a FIFO, or a device.
//!
//! The rule, for every such file:
//! - it must be a regular file once symlinks are followed: a FIFO, socket,
//!   device or directory is refused before it is opened, and again after
//!   (`fstat` on the open file), so nothing endless is read; it is opened with
//!   `O_NONBLOCK`, so a FIFO swapped in between the two checks cannot make the
//!   open wait for a writer (reading a regular file is unaffected by it);
//! - it is read with a size cap ([`SETTINGS_LIMIT`], [`LOCKFILE_LIMIT`]);
//! - a file imgbuild finds by itself by its name ([`Place::Within`]:
//!   `.dockerignore`, pyproject.toml, the default lockfiles, imgbuild.toml in
//!   the working directory, uv.toml found beside the lockfile) must resolve,
//!   by `canonicalize` and not lexically, inside the directory it was found
//!   in; a symlink out of it is refused before the target is read;
//! - a file the user names ([`Place::Anywhere`]: `lockfile = "../uv.lock"`,
//!   `-f PATH`, `UV_CONFIG_FILE`, the user's and the system's settings) is
//!   read where it is, still only as a regular file under the cap. Callers
//!   never quote the text of such a file when it lies outside the source tree
//!   (see [`is_inside`]).

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The cap for settings, ignore files and pyproject.toml: 1 MiB.
pub const SETTINGS_LIMIT: u64 = 1 << 20;
/// The cap for lockfiles, which list every file of every package: 16 MiB.
pub const LOCKFILE_LIMIT: u64 = 16 << 20;

#[derive(Debug, Error)]
pub enum ProjectFileError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is {kind}, not a regular file; replace it with a file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} resolves to {target}, outside {root}; imgbuild reads the files it finds only from inside the project: put the file there instead of a link, or name it in the settings")]
    Outside {
        path: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("{path} is larger than {limit} bytes, more than such a file ever needs; check that it is the right file")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
}

impl ProjectFileError {
    /// The file (or a directory on its way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ProjectFileError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory))
    }
}

/// Where a file may lie.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// Found by imgbuild by its name: must resolve inside this directory.
    Within(&'a Path),
    /// Named by the user: wherever it is.
    Anywhere,
}

/// Checks `path` by the rule above without reading it; returns its resolved path.
pub fn check(path: &Path, place: Place) -> Result<PathBuf, ProjectFileError> {
    let io_err = |source| ProjectFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    regular(path, &meta)?;
    let target = path.canonicalize().map_err(io_err)?;
    if let Place::Within(root) = place {
        let root = root.canonicalize().map_err(|source| ProjectFileError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !target.starts_with(&root) {
            return Err(ProjectFileError::Outside {
                path: path.to_path_buf(),
                target,
                root,
            });
        }
    }
    Ok(target)
}

/// The bytes of `path`, checked by the rule above and at most `limit` long.
pub fn read(path: &Path, place: Place, limit: u64) -> Result<Vec<u8>, ProjectFileError> {
    let io_err = |source| ProjectFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let target = check(path, place)?;
    let (file, meta) = open_regular(path, &target)?;
    let too_large = || ProjectFileError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, place: Place, limit: u64) -> Result<String, ProjectFileError> {
    String::from_utf8(read(path, place, limit)?).map_err(|_| ProjectFileError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// [`read_text`], or None when the file does not exist.
pub fn read_optional_text(
    path: &Path,
    place: Place,
    limit: u64,
) -> Result<Option<String>, ProjectFileError> {
    match read_text(path, place, limit) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `path` resolves inside `root`: whether an error may quote its text.
/// False when either cannot be resolved.
pub fn is_inside(path: &Path, root: &Path) -> bool {
    match (path.canonicalize(), root.canonicalize()) {
        (Ok(p), Ok(r)) => p.starts_with(r),
        _ => false,
    }
}

/// Opens `target` (the resolved `path`) for reading and checks the open file
/// is a regular one: it may have been swapped since it was checked, and what
/// was opened counts. With `O_NONBLOCK` the open returns at once even for a
/// FIFO with no writer, which the check then refuses.
fn open_regular(path: &Path, target: &Path) -> Result<(File, Metadata), ProjectFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| ProjectFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(target)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    regular(path, &meta)?;
    Ok((file, meta))
}

fn regular(path: &Path, meta: &Metadata) -> Result<(), ProjectFileError> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let kinds = [
        (t.is_dir(), "a directory"),
        (t.is_fifo(), "a FIFO"),
        (t.is_socket(), "a socket"),
        (t.is_char_device() || t.is_block_device(), "a device"),
    ];
    let kind = kinds
        .into_iter()
        .find_map(|(is, kind)| is.then_some(kind))
        .unwrap_or("not a file");
    Err(ProjectFileError::NotRegular {
        path: path.to_path_buf(),
        kind,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread; panics unless it returns within five seconds.
    pub(crate) fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("did not return within five seconds")
    }

    pub(crate) fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", path.display());
    }

    #[test]
    fn a_regular_file_inside_its_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("uv.lock"), "version = 1\n").unwrap();
        let text = read_text(
            &dir.path().join("uv.lock"),
            Place::Within(dir.path()),
            LOCKFILE_LIMIT,
        )
        .unwrap();
        assert_eq!(text, "version = 1\n");
    }

    #[test]
    fn a_link_inside_the_directory_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        std::fs::write(dir.path().join("locks/uv.lock"), "x").unwrap();
        symlink("locks/uv.lock", dir.path().join("uv.lock")).unwrap();
        let place = Place::Within(dir.path());
        assert_eq!(
            read_text(&dir.path().join("uv.lock"), place, 10).unwrap(),
            "x"
        );
    }

    #[test]
    fn a_found_file_linking_out_of_its_directory_is_refused_without_quoting_it() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "password=hunter2\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Through a link to `.` first: a lexical check would see no `..`.
        symlink(".", dir.path().join("d")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("uv.lock")).unwrap();
        let e = read(
            &dir.path().join("d/uv.lock"),
            Place::Within(dir.path()),
            LOCKFILE_LIMIT,
        )
        .unwrap_err();
        assert!(matches!(e, ProjectFileError::Outside { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(
            shown.contains("uv.lock") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn a_named_file_may_lie_outside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("uv.lock"), "x").unwrap();
        let text = read_text(&outside.path().join("uv.lock"), Place::Anywhere, 10).unwrap();
        assert_eq!(text, "x");
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_inside(&outside.path().join("uv.lock"), dir.path()));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(".dockerignore");
        mkfifo(&fifo);
        let root = dir.path().to_path_buf();
        let e =
            within_seconds(move || read(&fifo, Place::Within(&root), SETTINGS_LIMIT)).unwrap_err();
        assert!(
            e.to_string().contains("is a FIFO, not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_swapped_in_after_the_check_is_opened_without_blocking_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("uv.lock");
        mkfifo(&fifo);
        // As if `check` had passed a file that is a FIFO by the time it is
        // opened: opening a FIFO that has no writer waits for one, unless
        // it is opened with O_NONBLOCK.
        let e = within_seconds(move || open_regular(&fifo, &fifo).map(drop)).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("uv.lock is a FIFO, not a regular file; replace it with a file"),
            "{e}"
        );
    }

    #[test]
    fn a_link_to_dev_zero_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/dev/zero", dir.path().join("pyproject.toml")).unwrap();
        let path = dir.path().join("pyproject.toml");
        let e = within_seconds(move || read(&path, Place::Anywhere, SETTINGS_LIMIT)).unwrap_err();
        assert!(e.to_string().contains("is a device"), "{e}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'#'; 11]).unwrap();
        let e = read(&dir.path().join("big"), Place::Anywhere, 10).unwrap_err();
        assert!(
            matches!(e, ProjectFileError::TooLarge { limit: 10, .. }),
            "{e:?}"
        );
        assert_eq!(
            read(&dir.path().join("big"), Place::Anywhere, 11)
                .unwrap()
                .len(),
            11
        );
    }

    #[test]
    fn a_missing_file_is_none_when_optional() {
        let dir = tempfile::tempdir().unwrap();
        let got = read_optional_text(&dir.path().join("uv.toml"), Place::Within(dir.path()), 10);
        assert!(got.unwrap().is_none());
    }
}
