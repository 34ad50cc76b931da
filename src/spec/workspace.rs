//! uv workspaces (issue 23), as far as the settings need them: the lock of
//! the workspace a member's directory belongs to, and the directory of the
//! member `package` names, which is the app layer's default `source`. Read
//! off `uv.lock` and `pyproject.toml` as TOML, without the lock module
//! (which reads the lock for a target, later).

use super::{normalise, Origin, SpecError};
use crate::project_file::{self, Place, LOCKFILE_LIMIT, SETTINGS_LIMIT};
use std::path::{Path, PathBuf};

/// How many directories above the source tree a workspace's lock is looked for.
const LEVELS_UP: usize = 4;

/// The `uv.lock` of the workspace `source` is a member of, when `source`
/// has no lock of its own: the first directory above it (at most
/// [`LEVELS_UP`]) holding a `uv.lock` beside a `pyproject.toml` with a
/// `[tool.uv.workspace]` table.
pub fn enclosing_lock(source: &Path) -> Option<PathBuf> {
    source.ancestors().skip(1).take(LEVELS_UP).find_map(|dir| {
        let lock = dir.join("uv.lock");
        let pyproject = dir.join(super::PYPROJECT_FILE);
        if !lock.is_file() {
            return None;
        }
        let text = project_file::read_text(&pyproject, Place::Anywhere, SETTINGS_LIMIT).ok()?;
        let doc: toml::Table = text.parse().ok()?;
        let workspace = doc.get("tool")?.get("uv")?.get("workspace");
        workspace.is_some().then_some(lock)
    })
}

/// The directory of workspace member `package`, from the `source` of its
/// entry in the uv.lock `lockfile` (a path relative to the lock).
pub(super) fn member_dir(
    origin: &Origin,
    lockfile: Option<&Path>,
    package: &str,
) -> Result<PathBuf, SpecError> {
    let bad = |why: String| origin.invalid("package", format!("{package:?} {why}"));
    let Some(lock) = lockfile.filter(|l| l.file_name().is_some_and(|n| n == "uv.lock")) else {
        return Err(bad(
            "names a member of a uv workspace, which needs its uv.lock; set `lockfile` to the workspace's uv.lock".into(),
        ));
    };
    let text = project_file::read_text(lock, Place::Anywhere, LOCKFILE_LIMIT)
        .map_err(|e| bad(format!("cannot be looked up in {}: {e}", lock.display())))?;
    let doc: toml::Table = text.parse().map_err(|_| {
        bad(format!(
            "cannot be looked up in {}: not TOML",
            lock.display()
        ))
    })?;
    let packages = doc.get("package").and_then(|p| p.as_array());
    let normal = |n: &str| n.to_ascii_lowercase().replace(['_', '.'], "-");
    let mut locals = Vec::new();
    for p in packages.into_iter().flatten() {
        let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let source = p.get("source").and_then(|s| s.as_table());
        let dir = ["editable", "virtual", "directory"]
            .iter()
            .find_map(|k| source?.get(*k)?.as_str());
        let Some(dir) = dir else { continue };
        if normal(name) == normal(package) {
            let lock_dir = lock.parent().unwrap_or(Path::new("."));
            return Ok(normalise(&lock_dir.join(dir)));
        }
        locals.push(name.to_string());
    }
    Err(bad(format!(
        "is not a project of the workspace {} locks (its projects: {}); set `package` to one of them",
        lock.display(),
        if locals.is_empty() {
            "none".to_string()
        } else {
            locals.join(", ")
        }
    )))
}
