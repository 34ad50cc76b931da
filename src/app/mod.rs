//! The app layer: the source tree under the workdir, filtered the way
//! `docker build` filters its context (`.dockerignore`), plus a few paths that
//! never belong in an image (VCS data, host venvs, bytecode).
//!
//! Only the tree's shape, file contents and exec bits reach the layer; the tar
//! writer fixes owners, mtimes and modes, so the result does not depend on the
//! host's umask, clock, user or the directory the project is checked out in.

mod outputs;
mod size;
mod state;

pub use outputs::{KeptOut, OutputKind};
pub use state::add_state_dirs;

use crate::dockerignore::{MatchInfo, Matcher, PatternError};
use crate::layer::plan::PlanError;
use crate::layer::{Content, ImagePath, LayerPlan};
use crate::project_file::{self, Place, ProjectFileError, SETTINGS_LIMIT};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Left out before `.dockerignore` is applied, so a `!` exception there can
/// still bring one back. `.dockerignore` itself is kept, as Docker keeps it.
pub const DEFAULT_EXCLUDES: &[&str] = &["**/.git", "**/.venv", "**/__pycache__", "**/*.pyc"];

pub const DOCKERIGNORE: &str = ".dockerignore";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{}", .file.display())]
    Dockerignore {
        file: PathBuf,
        #[source]
        source: PatternError,
    },
    #[error("exclude: item {}: invalid pattern {:?}: {}", .0.line, .0.pattern, .0.reason)]
    Exclude(PatternError),
    #[error("cannot read {}; fix its permissions or exclude it in .dockerignore", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a {kind}; an image layer holds only files, directories and symlinks, so exclude it in .dockerignore", .path.display())]
    Special { path: PathBuf, kind: &'static str },
    #[error("symlink {link} -> {target} points outside the source tree; replace it with a copy")]
    SymlinkOutside { link: String, target: String },
    #[error("symlink {link} -> {target} is absolute, so it would not resolve inside the image; make it relative")]
    SymlinkAbsolute { link: String, target: String },
    #[error("{} has a name that is not UTF-8; rename it or exclude it in .dockerignore", .path.display())]
    NonUtf8 { path: PathBuf },
    /// `.dockerignore` is not a regular file, lies outside the tree, or is too large.
    #[error(transparent)]
    File(ProjectFileError),
    #[error("{path}: cannot be placed in the image ({reason}); rename it or exclude it in .dockerignore")]
    BadName { path: String, reason: &'static str },
    #[error("writable: {path} is {what} in the source tree, where the image needs a directory the user can write in; rename it, or name another directory")]
    StateDirTaken { path: String, what: &'static str },
    #[error("{path}")]
    Plan {
        path: String,
        #[source]
        source: PlanError,
    },
}

/// The app layer's plan, and the images found in the source tree that were
/// left out of it.
#[derive(Clone, Debug)]
pub struct AppTree {
    pub plan: LayerPlan,
    pub kept_out: Vec<KeptOut>,
}

impl AppTree {
    /// What to tell the user about the tree, each at most once: the images
    /// left out, a layer over [`size::LARGE_APP_LAYER`] with its largest
    /// entries, and state directories (`state_dirs`) the tree has files in.
    pub fn warnings(&self, workdir: &ImagePath, state_dirs: &[ImagePath]) -> Vec<String> {
        outputs::warning(&self.kept_out)
            .into_iter()
            .chain(size::warning(&self.plan, workdir))
            .chain(state::warning(&self.plan, state_dirs))
            .collect()
    }
}

/// Plans the layer holding `source` at `workdir`. `extra_excludes` are
/// `.dockerignore`-style patterns applied after the project's `.dockerignore`.
/// An image an earlier build left in the tree (an OCI layout, an archive
/// imgbuild wrote) is left out and listed in [`AppTree::kept_out`].
pub fn plan_app_layer(
    source: &Path,
    workdir: &ImagePath,
    extra_excludes: &[String],
) -> Result<AppTree, AppError> {
    let mut kept_out = Vec::new();
    let matcher = build_matcher(source, extra_excludes)?;
    let mut plan = LayerPlan::new();
    plan.dir(workdir.clone(), 0o755)
        .map_err(|e| AppError::Plan {
            path: workdir.to_string(),
            source: e,
        })?;

    // infos[d] is the match state of the directory entered at depth d.
    let mut infos: Vec<MatchInfo> = vec![MatchInfo::default()];
    let mut walk = walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walk.next() {
        let entry = item.map_err(|e| {
            let path = e.path().unwrap_or(source).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("file system loop"));
            AppError::Unreadable { path, source }
        })?;
        let depth = entry.depth();
        if depth == 0 {
            continue;
        }
        let rel = relative(source, entry.path())?;
        let file_type = entry.file_type();
        infos.truncate(depth);
        let (excluded, info) = matcher.matches_with_parent(&rel, &infos[depth - 1]);
        if file_type.is_dir() {
            infos.push(info);
            if excluded {
                // Docker still walks an excluded directory when an exception
                // may re-include something inside; the directory itself only
                // appears as the parent of what comes back.
                if !matcher.may_reinclude_below(&rel) {
                    walk.skip_current_dir();
                }
                continue;
            }
            if outputs::is_layout(entry.path()) {
                walk.skip_current_dir();
                kept_out.push(KeptOut {
                    size: tree_size(entry.path()),
                    path: rel,
                    kind: OutputKind::Layout,
                });
                continue;
            }
        } else if excluded {
            continue;
        }

        let path = image_path(workdir, &rel)?;
        let plan_err = |e| AppError::Plan {
            path: path.to_string(),
            source: e,
        };
        if file_type.is_dir() {
            plan.dir(path.clone(), 0o755).map_err(plan_err)?;
        } else if file_type.is_symlink() {
            let target = symlink_target(source, entry.path(), &rel)?;
            plan.symlink(path.clone(), &target).map_err(plan_err)?;
        } else if file_type.is_file() {
            if let Some(kept) = plan_file(&mut plan, path, &entry, &rel)? {
                kept_out.push(kept);
            }
        } else {
            return Err(AppError::Special {
                path: entry.path().to_path_buf(),
                kind: special_kind(&file_type),
            });
        }
    }
    Ok(AppTree { plan, kept_out })
}

/// Adds the regular file `entry` (at `rel` in the source) to the plan at
/// `path`, unless it is an image archive: that is left out and returned.
fn plan_file(
    plan: &mut LayerPlan,
    path: ImagePath,
    entry: &walkdir::DirEntry,
    rel: &str,
) -> Result<Option<KeptOut>, AppError> {
    let meta = entry.metadata().map_err(|e| AppError::Unreadable {
        path: entry.path().to_path_buf(),
        source: e
            .into_io_error()
            .unwrap_or_else(|| io::Error::other("cannot stat")),
    })?;
    // Opened now, so an unreadable file fails the plan rather than the layer write.
    let mut file = File::open(entry.path()).map_err(|e| AppError::Unreadable {
        path: entry.path().to_path_buf(),
        source: e,
    })?;
    if outputs::is_image_archive(&mut file, meta.len()) {
        return Ok(Some(KeptOut {
            path: rel.to_string(),
            kind: OutputKind::Archive,
            size: meta.len(),
        }));
    }
    let mode = if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    let content = Content::HostFile(entry.path().to_path_buf());
    plan.file(path.clone(), mode, meta.len(), content)
        .map_err(|e| AppError::Plan {
            path: path.to_string(),
            source: e,
        })?;
    Ok(None)
}

/// The bytes of the regular files under `dir`, for the warning only: what
/// cannot be read counts as nothing.
fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn build_matcher(source: &Path, extra_excludes: &[String]) -> Result<Matcher, AppError> {
    let mut matcher = Matcher::from_lines(DEFAULT_EXCLUDES).expect("default patterns are valid");
    let ignore_file = source.join(DOCKERIGNORE);
    // Found by its name, so it must lie in the source tree; a FIFO, a device
    // or a huge file is refused before it is read.
    match project_file::read(&ignore_file, Place::Within(source), SETTINGS_LIMIT) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| AppError::NonUtf8 {
                path: ignore_file.clone(),
            })?;
            let project = Matcher::parse(&text).map_err(|e| AppError::Dockerignore {
                file: ignore_file.clone(),
                source: e,
            })?;
            matcher.extend(project);
        }
        Err(e) if e.is_not_found() => {}
        Err(ProjectFileError::Io { source, .. }) => {
            return Err(AppError::Unreadable {
                path: ignore_file,
                source,
            })
        }
        Err(other) => return Err(AppError::File(other)),
    }
    matcher.extend(Matcher::from_lines(extra_excludes).map_err(AppError::Exclude)?);
    Ok(matcher)
}

/// `/`-separated path of `path` below `source`.
fn relative(source: &Path, path: &Path) -> Result<String, AppError> {
    let rel = path.strip_prefix(source).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c.as_os_str().to_str() {
            Some(s) => parts.push(s),
            None => {
                return Err(AppError::NonUtf8 {
                    path: path.to_path_buf(),
                })
            }
        }
    }
    Ok(parts.join("/"))
}

fn image_path(workdir: &ImagePath, rel: &str) -> Result<ImagePath, AppError> {
    workdir.join(rel).map_err(|e| AppError::BadName {
        path: rel.to_string(),
        reason: e.1,
    })
}

/// The link's target, verbatim, if it resolves (lexically, from the link's
/// directory) to a path inside the source tree.
fn symlink_target(source: &Path, link: &Path, rel: &str) -> Result<String, AppError> {
    let target = fs::read_link(link).map_err(|e| AppError::Unreadable {
        path: link.to_path_buf(),
        source: e,
    })?;
    let Some(target_text) = target.to_str() else {
        return Err(AppError::NonUtf8 {
            path: link.to_path_buf(),
        });
    };
    if target.is_absolute() {
        let inside = target.strip_prefix(source).is_ok();
        return Err(if inside {
            AppError::SymlinkAbsolute {
                link: rel.to_string(),
                target: target_text.to_string(),
            }
        } else {
            AppError::SymlinkOutside {
                link: rel.to_string(),
                target: target_text.to_string(),
            }
        });
    }
    // Depth below the source root as the target is followed component by component.
    let mut depth = rel.split('/').count() - 1;
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(AppError::SymlinkOutside {
                        link: rel.to_string(),
                        target: target_text.to_string(),
                    });
                }
                depth -= 1;
            }
            Component::Normal(_) => depth += 1,
            Component::RootDir | Component::Prefix(_) => {
                return Err(AppError::SymlinkOutside {
                    link: rel.to_string(),
                    target: target_text.to_string(),
                });
            }
        }
    }
    Ok(target_text.to_string())
}

fn special_kind(file_type: &fs::FileType) -> &'static str {
    if file_type.is_socket() {
        "socket"
    } else if file_type.is_fifo() {
        "named pipe (fifo)"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{write_layer, NoExternal};
    use crate::layer::EntryKind;
    use crate::text::error_chain;
    use std::os::unix::fs::symlink;

    fn app() -> ImagePath {
        ImagePath::new("/app").unwrap()
    }

    fn write(root: &Path, rel: &str, text: &str, mode: u32) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn paths(plan: &LayerPlan) -> Vec<String> {
        plan.entries()
            .map(|(p, _)| p.as_str().to_string())
            .collect()
    }

    /// The plan for the tree at `root`, with the workdir /app and no extra excludes.
    fn plan(root: &Path) -> LayerPlan {
        plan_app_layer(root, &app(), &[]).unwrap().plan
    }

    /// Why planning the tree at `root` fails, each cause once.
    fn plan_error(root: &Path, extra_excludes: &[String]) -> String {
        error_chain(&plan_app_layer(root, &app(), extra_excludes).unwrap_err())
    }

    /// A source tree: the sample project (files 0o644) and `files`, each
    /// (path, text) with mode 0o644.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path(), 0o644);
        for (rel, text) in files {
            write(dir.path(), rel, text, 0o644);
        }
        dir
    }

    fn sample(root: &Path, file_mode: u32) {
        write(
            root,
            "main.py",
            "from fastapi import FastAPI\napp = FastAPI()\n",
            file_mode,
        );
        write(root, "pkg/__init__.py", "", file_mode);
        write(root, "bin/run.sh", "#!/bin/sh\n", 0o700);
        write(root, ".dockerignore", "", file_mode);
    }

    #[test]
    fn puts_the_tree_under_the_workdir_with_default_skips() {
        let dir = tree(&[
            (".git/HEAD", "ref"),
            (".venv/bin/python", ""),
            ("pkg/__pycache__/x.cpython-312.pyc", ""),
            ("pkg/stale.pyc", ""),
            ("sub/.git", "gitdir: elsewhere"),
        ]);
        let root = dir.path();
        let plan = plan(root);
        assert_eq!(
            paths(&plan),
            [
                "app",
                "app/.dockerignore",
                "app/bin",
                "app/bin/run.sh",
                "app/main.py",
                "app/pkg",
                "app/pkg/__init__.py",
                "app/sub"
            ]
        );
        let main = plan.get(&ImagePath::new("app/main.py").unwrap()).unwrap();
        assert_eq!(main.mode, 0o644);
        assert_eq!(
            main.kind,
            EntryKind::File {
                size: 44,
                content: Content::HostFile(root.join("main.py"))
            }
        );
        assert_eq!(
            plan.get(&ImagePath::new("app/bin/run.sh").unwrap())
                .unwrap()
                .mode,
            0o755
        );
    }

    #[test]
    fn honours_dockerignore_with_exceptions() {
        let dir = tree(&[
            ("docs/guide.md", ""),
            ("docs/README.md", ""),
            ("tests/test_x.py", ""),
            ("notes.md", ""),
            (".env", "SECRET=1"),
            (
                ".dockerignore",
                "# comment\ndocs\n!docs/README.md\n/tests/\n*.md\n.env\n",
            ),
        ]);
        let got = paths(&plan(dir.path()));
        assert!(got.contains(&"app/docs/README.md".to_string()), "{got:?}");
        assert!(
            got.contains(&"app/docs".to_string()),
            "the re-included file's parent is implied: {got:?}"
        );
        for gone in [
            "app/docs/guide.md",
            "app/tests",
            "app/tests/test_x.py",
            "app/notes.md",
            "app/.env",
        ] {
            assert!(
                !got.contains(&gone.to_string()),
                "{gone} should be excluded: {got:?}"
            );
        }
        assert!(got.contains(&"app/.dockerignore".to_string()));
    }

    #[test]
    fn dockerignore_can_bring_back_a_default_skip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "data/model.pyc", "", 0o644);
        write(root, ".dockerignore", "!data/model.pyc\n", 0o644);
        assert!(paths(&plan(root)).contains(&"app/data/model.pyc".to_string()));
    }

    #[test]
    fn extra_excludes_apply_after_dockerignore() {
        let dir = tree(&[("tests/test_x.py", ""), (".dockerignore", "!tests\n")]);
        let plan = plan_app_layer(
            dir.path(),
            &app(),
            &["tests/".to_string(), "**/*.sh".to_string()],
        )
        .unwrap()
        .plan;
        let got = paths(&plan);
        assert!(!got.iter().any(|p| p.starts_with("app/tests")), "{got:?}");
        assert!(!got.contains(&"app/bin/run.sh".to_string()), "{got:?}");
        assert!(
            got.contains(&"app/bin".to_string()),
            "an emptied directory stays: {got:?}"
        );
    }

    #[test]
    fn bad_patterns_name_their_file_or_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".dockerignore", "ok\n[\n", 0o644);
        let e = plan_error(root, &[]);
        let file = root.join(".dockerignore");
        assert!(
            e.starts_with(&format!(
                "{}: line 2: invalid pattern \"[\"",
                file.display()
            )),
            "{e}"
        );
        fs::remove_file(file).unwrap();
        let e = plan_error(root, &["!".to_string()]);
        assert!(
            e.starts_with("exclude: item 1: invalid pattern \"!\""),
            "{e}"
        );
    }

    #[test]
    fn keeps_symlinks_that_stay_inside() {
        let dir = tree(&[]);
        let root = dir.path();
        symlink("../main.py", root.join("pkg/entry.py")).unwrap();
        symlink("pkg", root.join("alias")).unwrap();
        symlink("missing.txt", root.join("dangling")).unwrap();
        let plan = plan(root);
        let kind = |p: &str| plan.get(&ImagePath::new(p).unwrap()).unwrap().kind.clone();
        assert_eq!(
            kind("app/pkg/entry.py"),
            EntryKind::Symlink {
                target: "../main.py".into()
            }
        );
        assert_eq!(
            kind("app/alias"),
            EntryKind::Symlink {
                target: "pkg".into()
            }
        );
        assert_eq!(
            kind("app/dangling"),
            EntryKind::Symlink {
                target: "missing.txt".into()
            }
        );
        // The link to a directory is not followed.
        assert!(plan
            .get(&ImagePath::new("app/alias/__init__.py").unwrap())
            .is_none());
    }

    #[test]
    fn refuses_symlinks_that_leave_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("fixtures/x")).unwrap();
        symlink("/etc/passwd", root.join("fixtures/x/leak")).unwrap();
        let e = plan_error(root, &[]);
        assert_eq!(e, "symlink fixtures/x/leak -> /etc/passwd points outside the source tree; replace it with a copy");

        fs::remove_file(root.join("fixtures/x/leak")).unwrap();
        symlink("../../../secret", root.join("fixtures/x/up")).unwrap();
        let e = plan_error(root, &[]);
        assert_eq!(e, "symlink fixtures/x/up -> ../../../secret points outside the source tree; replace it with a copy");

        fs::remove_file(root.join("fixtures/x/up")).unwrap();
        symlink(root.join("fixtures"), root.join("abs")).unwrap();
        let e = plan_error(root, &[]);
        assert!(
            e.starts_with("symlink abs -> ") && e.contains("is absolute"),
            "{e}"
        );

        // An excluded bad link is never looked at.
        write(root, ".dockerignore", "abs\n", 0o644);
        assert!(plan_app_layer(root, &app(), &[]).is_ok());
    }

    #[test]
    fn a_dockerignore_that_is_a_fifo_or_links_out_is_refused_unread() {
        use crate::project_file::tests::{mkfifo, within_seconds};
        let dir = tree(&[]);
        let ignore = dir.path().join(".dockerignore");
        fs::remove_file(&ignore).unwrap();
        mkfifo(&ignore);
        let root = dir.path().to_path_buf();
        let e = within_seconds(move || plan_error(&root, &[]));
        assert!(
            e.contains(".dockerignore is a FIFO, not a regular file"),
            "{e}"
        );
        let host = tempfile::tempdir().unwrap();
        write(host.path(), "secret", "password=hunter2\n[", 0o644);
        fs::remove_file(&ignore).unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), &ignore).unwrap();
        let e = plan_error(dir.path(), &[]);
        assert!(
            e.contains(".dockerignore resolves to") && e.contains("outside"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn refuses_sockets_naming_them() {
        let dir = tree(&[]);
        let root = dir.path();
        let socket = root.join("app.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            plan_error(root, &[]),
            format!(
                "{} is a socket; an image layer holds only files, directories and symlinks, so exclude it in .dockerignore",
                socket.display()
            )
        );
        write(root, ".dockerignore", "*.sock\n", 0o644);
        assert!(plan_app_layer(root, &app(), &[]).is_ok());
    }

    #[test]
    fn refuses_unreadable_files_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "secret.key", "k", 0o000);
        let key = dir.path().join("secret.key");
        if File::open(&key).is_ok() {
            // Running as root: permissions do not stop reads, nothing to test.
            return;
        }
        let e = plan_error(dir.path(), &[]);
        assert!(
            e.starts_with(&format!(
                "cannot read {}; fix its permissions",
                key.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn refuses_non_utf8_names() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"bad\xffname.py");
        fs::write(dir.path().join(name), "").unwrap();
        let e = plan_error(dir.path(), &[]);
        assert!(e.contains("is not UTF-8"), "{e}");
    }

    #[test]
    fn hard_links_are_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.py", "x = 1\n", 0o644);
        fs::hard_link(root.join("a.py"), root.join("b.py")).unwrap();
        let plan = plan(root);
        for p in ["app/a.py", "app/b.py"] {
            assert!(
                matches!(
                    plan.get(&ImagePath::new(p).unwrap()).unwrap().kind,
                    EntryKind::File { size: 6, .. }
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn layer_bytes_ignore_checkout_path_modes_and_mtimes() {
        let digest_of = |file_mode: u32, age: u64| {
            let dir = tempfile::tempdir().unwrap();
            sample(dir.path(), file_mode);
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(age);
            File::options()
                .write(true)
                .open(dir.path().join("main.py"))
                .unwrap()
                .set_modified(t)
                .unwrap();
            write_layer(&plan(dir.path()), 0, &mut NoExternal, Vec::new())
                .unwrap()
                .0
                .digest
        };
        assert_eq!(digest_of(0o600, 1_000_000), digest_of(0o664, 2_000_000));
    }

    #[test]
    fn custom_workdir_and_empty_source() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_app_layer(dir.path(), &ImagePath::new("/srv/api").unwrap(), &[])
            .unwrap()
            .plan;
        assert_eq!(paths(&plan), ["srv", "srv/api"]);
    }

    #[test]
    fn images_left_by_earlier_builds_stay_out_and_are_named() {
        let dir = tree(&[
            ("out/oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
            ("out/index.json", "{}"),
            ("out/blobs/sha256/00", "layer bytes"),
            ("nested/deeper/oci-layout", "{}"),
            (
                "notalayout/oci-layout/x",
                "a directory by that name is not the marker",
            ),
        ]);
        let root = dir.path();
        // An archive as imgbuild writes one: the tar writer over a layout's plan.
        let mut archive = LayerPlan::new();
        let blob = format!("blobs/sha256/{}", "0f".repeat(32));
        archive
            .bytes(ImagePath::new(&blob).unwrap(), 0o644, vec![7; 3000])
            .unwrap();
        archive
            .bytes(
                ImagePath::new("manifest.json").unwrap(),
                0o644,
                b"[]".to_vec(),
            )
            .unwrap();
        let tar = crate::layer::tar::write_tar(&archive, 0, &mut NoExternal, Vec::new()).unwrap();
        fs::write(root.join("svc.tar"), &tar).unwrap();
        fs::write(root.join("source.tar"), write_layer_tar(root)).unwrap();

        let tree = plan_app_layer(root, &app(), &[]).unwrap();
        let got = paths(&tree.plan);
        assert!(!got.iter().any(|p| p.starts_with("app/out")), "{got:?}");
        assert!(
            !got.iter().any(|p| p.starts_with("app/nested/deeper")),
            "{got:?}"
        );
        assert!(got.contains(&"app/nested".to_string()), "{got:?}");
        assert!(!got.contains(&"app/svc.tar".to_string()), "{got:?}");
        assert!(got.contains(&"app/source.tar".to_string()), "{got:?}");
        assert!(
            got.contains(&"app/notalayout/oci-layout/x".to_string()),
            "{got:?}"
        );
        let kept: Vec<_> = tree
            .kept_out
            .iter()
            .map(|k| (k.path.as_str(), k.kind))
            .collect();
        assert_eq!(
            kept,
            [
                ("nested/deeper", OutputKind::Layout),
                ("out", OutputKind::Layout),
                ("svc.tar", OutputKind::Archive)
            ]
        );
        assert_eq!(tree.kept_out[1].size, 30 + 2 + 11);
        let warnings = tree.warnings(&app(), &[]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("out/ (an OCI image layout"),
            "{warnings:?}"
        );

        // Listed in .dockerignore, they are not looked at and not warned about.
        write(root, ".dockerignore", "out\nsvc.tar\nnested\n", 0o644);
        let tree = plan_app_layer(root, &app(), &[]).unwrap();
        assert_eq!(tree.kept_out, []);
        assert_eq!(tree.warnings(&app(), &[]), Vec::<String>::new());
    }

    /// A tar of the project's sources, as a user might keep one: not an image.
    fn write_layer_tar(root: &Path) -> Vec<u8> {
        crate::layer::tar::write_tar(&plan(root), 0, &mut NoExternal, Vec::new()).unwrap()
    }
}
