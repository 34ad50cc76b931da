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

#[cfg(test)]
mod tests {
    use super::super::tests::{Project, MINIMAL};
    use super::super::{load, SPEC_FILE};

    /// A virtual uv workspace root with members `backend` and `worker`, locked.
    fn workspace_project() -> Project {
        let p = Project::new();
        p.write("pyproject.toml", "[tool.uv.workspace]\nmembers = [\"backend\", \"services/worker\"]\n")
            .write("backend/pyproject.toml", "[project]\nname = \"backend\"\n")
            .write("services/worker/pyproject.toml", "[project]\nname = \"worker\"\n")
            .write(
                "uv.lock",
                "version = 1\n[manifest]\nmembers = [\"backend\", \"worker\"]\n\n[[package]]\nname = \"backend\"\nversion = \"0.1.0\"\nsource = { editable = \"backend\" }\n\n[[package]]\nname = \"worker\"\nversion = \"0.1.0\"\nsource = { editable = \"services/worker\" }\n",
            );
        p
    }

    #[test]
    fn package_makes_the_members_directory_the_source_and_is_looked_up_in_the_lock() {
        let p = workspace_project();
        p.write(SPEC_FILE, &format!("{MINIMAL}package = \"backend\"\n"));
        let s = p.load().unwrap();
        assert_eq!(s.package.as_deref(), Some("backend"));
        assert_eq!(s.source, p.path().join("backend"));
        assert_eq!(s.lockfile, Some(p.path().join("uv.lock")));
        // With `source` set, the whole tree it names is the app layer.
        p.write(
            SPEC_FILE,
            &format!("{MINIMAL}package = \"worker\"\nsource = \".\"\n"),
        );
        assert_eq!(p.load().unwrap().source, p.path());
        let e = p.err(&format!("{MINIMAL}package = \"frontend\"\n"));
        assert!(
            e.contains("key \"package\": \"frontend\" is not a project of the workspace")
                && e.contains("(its projects: backend, worker)"),
            "{e}"
        );
        std::fs::remove_file(p.path().join("uv.lock")).unwrap();
        p.write("requirements.txt", "");
        let e = p.err(&format!("{MINIMAL}package = \"backend\"\n"));
        assert!(e.contains("needs its uv.lock"), "{e}");
    }

    #[test]
    fn a_members_directory_finds_the_workspace_lock_above_it() {
        let p = workspace_project();
        p.write("services/worker/imgbuild.toml", MINIMAL);
        let s = load(None, &p.path().join("services/worker")).unwrap();
        assert_eq!(s.lockfile, Some(p.path().join("uv.lock")));
        assert_eq!(s.source, p.path().join("services/worker"));
        // A lock above that is not a workspace's is not taken.
        p.write("pyproject.toml", "[project]\nname = \"root\"\n");
        let s = load(None, &p.path().join("services/worker")).unwrap();
        assert_eq!(s.lockfile, None);
    }
}
