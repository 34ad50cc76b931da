//! `imgbuild init` in a uv workspace (issue 23). At a workspace root the
//! service is a member: `init` looks for the app in each member, writes
//! `package` (so the image installs that member's dependencies and the app
//! layer holds its directory) and an `app` relative to the member. In a
//! member's directory it finds the workspace's `uv.lock` above it. Either
//! way `requires-python` may come from the lock when the project has none.

use crate::project_file::{read_optional_text, Place, LOCKFILE_LIMIT, SETTINGS_LIMIT};
use std::path::{Path, PathBuf};

/// A member of the workspace whose root `init` runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Relative to the workspace root, `/`-separated.
    pub rel: String,
}

fn toml_at(path: &Path, limit: u64) -> Option<toml::Table> {
    let dir = path.parent()?;
    let text = read_optional_text(path, Place::Within(dir), limit).ok()??;
    text.parse().ok()
}

/// Whether `pyproject` (a parsed pyproject.toml) declares a uv workspace.
pub fn is_workspace_root(pyproject: &toml::Table) -> bool {
    pyproject
        .get("tool")
        .and_then(|t| t.get("uv"))
        .and_then(|u| u.get("workspace"))
        .is_some()
}

/// The strings of a TOML array (none when `value` is not an array).
fn strings(value: Option<&toml::Value>) -> Vec<String> {
    let items = value.and_then(|v| v.as_array()).into_iter().flatten();
    items
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The members of the workspace rooted at `dir`: from its uv.lock (names and
/// directories as locked) when there is one, else from the `members` globs
/// of `[tool.uv.workspace]` (a directory, or `dir/*`), each directory with a
/// pyproject.toml naming its project.
pub fn members(dir: &Path, pyproject: &toml::Table) -> Vec<Member> {
    if let Some(lock) = toml_at(&dir.join("uv.lock"), LOCKFILE_LIMIT) {
        let listed = strings(lock.get("manifest").and_then(|m| m.get("members")));
        let packages = lock.get("package").and_then(|p| p.as_array());
        let found: Vec<Member> = packages
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let name = p.get("name")?.as_str()?;
                let source = p.get("source")?.as_table()?;
                let rel = ["editable", "virtual", "directory"]
                    .iter()
                    .find_map(|k| source.get(*k)?.as_str())?;
                (listed.iter().any(|m| m == name) && rel != ".").then(|| Member {
                    name: name.to_owned(),
                    rel: rel.trim_start_matches("./").to_owned(),
                })
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let globs = strings(
        pyproject
            .get("tool")
            .and_then(|t| t.get("uv"))
            .and_then(|u| u.get("workspace"))
            .and_then(|w| w.get("members")),
    );
    let mut out = Vec::new();
    for glob in globs {
        let dirs: Vec<String> = match glob.strip_suffix("/*") {
            Some(parent) => subdirs(&dir.join(parent))
                .into_iter()
                .map(|d| format!("{parent}/{d}"))
                .collect(),
            None => vec![glob.clone()],
        };
        for rel in dirs {
            let name = toml_at(&dir.join(&rel).join("pyproject.toml"), SETTINGS_LIMIT)
                .and_then(|t| t.get("project")?.get("name")?.as_str().map(str::to_owned));
            if let Some(name) = name {
                out.push(Member { name, rel });
            }
        }
    }
    out
}

fn subdirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// The workspace lock above a member's directory `dir`, as a path relative
/// to it (`../uv.lock`).
pub fn lock_above(dir: &Path) -> Option<(PathBuf, String)> {
    let lock = crate::spec::enclosing_lock(dir)?;
    let levels = dir.ancestors().position(|a| Some(a) == lock.parent())?;
    Some((lock, format!("{}uv.lock", "../".repeat(levels))))
}

/// The lock's `requires-python`, for a project whose pyproject.toml has none
/// (a virtual workspace root).
pub fn lock_requires_python(lock: &Path) -> Option<String> {
    let doc = toml_at(lock, LOCKFILE_LIMIT)?;
    doc.get("requires-python")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::tests::write_files as write;

    #[test]
    fn members_come_from_the_lock_or_the_globs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ws = "[tool.uv.workspace]\nmembers = [\"services/*\", \"libs/common\"]\n";
        write(
            root,
            &[
                ("pyproject.toml", ws),
                (
                    "services/api/pyproject.toml",
                    "[project]\nname = \"ws-api\"\n",
                ),
                ("services/notes/README.md", "no project here"),
                (
                    "libs/common/pyproject.toml",
                    "[project]\nname = \"ws-common\"\n",
                ),
            ],
        );
        let doc: toml::Table = ws.parse().unwrap();
        assert!(is_workspace_root(&doc));
        let got = members(root, &doc);
        let m = |n: &str, r: &str| Member {
            name: n.into(),
            rel: r.into(),
        };
        assert_eq!(
            got,
            [m("ws-api", "services/api"), m("ws-common", "libs/common")]
        );
        write(
            root,
            &[(
                "uv.lock",
                "version = 1\nrequires-python = \">=3.12\"\n[manifest]\nmembers = [\"ws-api\"]\n[[package]]\nname = \"ws-api\"\nversion = \"0.1.0\"\nsource = { editable = \"services/api\" }\n[[package]]\nname = \"idna\"\nversion = \"1\"\nsource = { registry = \"x\" }\n",
            )],
        );
        assert_eq!(members(root, &doc), [m("ws-api", "services/api")]);
        assert_eq!(
            lock_requires_python(&root.join("uv.lock")).as_deref(),
            Some(">=3.12")
        );
        let (lock, rel) = lock_above(&root.join("services/api")).unwrap();
        assert_eq!(
            (lock, rel.as_str()),
            (root.join("uv.lock"), "../../uv.lock")
        );
        assert_eq!(lock_above(root), None);
    }
}
