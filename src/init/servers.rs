//! `imgbuild init` for a server that starts itself (issue 23): a project
//! with no ASGI app of its own that depends on a packaged server
//! (`arize-phoenix`, `jupyverse`, `prefect`, …). From the project's direct
//! dependencies (else the lock's packages) it proposes the known server's
//! command ([`crate::check::servers::SERVERS`]) as `cmd`, with no `app`; for
//! a dependency imgbuild does not know, a `.venv` the project already has
//! (`uv sync`) is read for an ASGI app or factory at the top level of the
//! dependency's modules, proposed as `app`. No Python is run.

use super::detect::AppCandidate;
use super::{note, Draft, Note, NoteKind};
use crate::check::servers::{self, Server};
use crate::project_file::{read_optional_text, Place, LOCKFILE_LIMIT};
use crate::spec::DEFAULT_LOCKFILES;
use std::path::Path;

/// What `init` proposes for a project whose own tree has no app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// A packaged server's command, from the dependency `package`.
    Command {
        package: String,
        server: &'static Server,
    },
    /// An ASGI app (or factory) found in the dependency `package`'s modules.
    App { package: String, app: AppCandidate },
}

impl Proposal {
    /// As `init` writes it: `cmd = [...]` or `app "m:a"`.
    fn shown(&self) -> String {
        match self {
            Proposal::Command { server, .. } => {
                format!("cmd {:?}, port {}", server.cmd, server.port)
            }
            Proposal::App { app, .. } => format!("app {}", app.app),
        }
    }

    fn package(&self) -> &str {
        match self {
            Proposal::Command { package, .. } | Proposal::App { package, .. } => package,
        }
    }
}

/// For a project with no app of its own: the first proposal for its
/// dependencies, as `cmd` (and `port`) or `app` in `draft`, and a note
/// naming the others. Nothing when there is none; the caller says so.
pub(super) fn pick(dir: &Path, pyproject: Option<&str>, draft: &mut Draft, notes: &mut Vec<Note>) {
    let doc = pyproject.and_then(|t| t.parse::<toml::Table>().ok());
    let mut dependencies = doc.as_ref().map(direct_dependencies).unwrap_or_default();
    if dependencies.is_empty() {
        // A requirements-style project: the lock's packages, in its order.
        let lock = DEFAULT_LOCKFILES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| super::workspace::lock_above(dir).map(|(l, _)| l));
        dependencies = lock.map(|l| locked_names(&l)).unwrap_or_default();
    }
    let found = find(&dependencies, venv_site_packages(dir).as_deref());
    let Some(best) = found.first() else {
        return;
    };
    let others: Vec<String> = found[1..]
        .iter()
        .map(|p| format!("{} ({})", p.shown(), p.package()))
        .collect();
    let (kind, also) = match others.is_empty() {
        true => (NoteKind::Found, String::new()),
        false => (
            NoteKind::Guessed,
            format!(
                "; also found {}: change it if another is the service",
                crate::text::summarise(&others, 5)
            ),
        ),
    };
    let text = match best {
        Proposal::Command { package, server } => {
            let comment = format!("{package} is a server that starts itself, {}", server.what);
            draft.cmd = Some((
                server.cmd.iter().map(|s| s.to_string()).collect(),
                server.port,
                comment,
            ));
            format!(
                "{} (the dependency {package}: {}), with no `app`{also}",
                best.shown(),
                server.what
            )
        }
        Proposal::App { package, app } => {
            draft.app = Some(app.clone());
            format!(
                "{} ({}, of the dependency {package}, read in .venv){also}",
                best.shown(),
                app.place()
            )
        }
    };
    notes.push(note(kind, text));
}

/// The names (as written) of a pyproject's `[project] dependencies`, in order.
pub fn direct_dependencies(pyproject: &toml::Table) -> Vec<String> {
    pyproject
        .get("project")
        .and_then(|p| p.get("dependencies"))
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| requirement_name(v.as_str()?))
        .collect()
}

/// The distribution a PEP 508 requirement names: `jupyverse[jupyterlab]>=0.7` → `jupyverse`.
fn requirement_name(req: &str) -> Option<String> {
    let name: String = req
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The package names a TOML lock lists (`[[package]]` of uv.lock, poetry.lock
/// and pdm.lock, `[[packages]]` of pylock.toml), in the lock's order.
pub fn locked_names(lock: &Path) -> Vec<String> {
    let dir = lock.parent().unwrap_or(Path::new("."));
    let Some(doc) = read_optional_text(lock, Place::Within(dir), LOCKFILE_LIMIT)
        .ok()
        .flatten()
        .and_then(|t| t.parse::<toml::Table>().ok())
    else {
        return Vec::new();
    };
    ["package", "packages"]
        .iter()
        .filter_map(|k| doc.get(*k)?.as_array())
        .flatten()
        .filter_map(|p| Some(p.get("name")?.as_str()?.to_owned()))
        .collect()
}

/// Proposals for `dependencies` (the direct ones, else the lock's), in their
/// order: each known packaged server, then, for the others, the apps found
/// in `site_packages` (the project's `.venv`, when there is one).
pub fn find(dependencies: &[String], site_packages: Option<&Path>) -> Vec<Proposal> {
    let mut out: Vec<Proposal> = dependencies
        .iter()
        .filter_map(|d| {
            servers::by_package(d).map(|server| Proposal::Command {
                package: d.clone(),
                server,
            })
        })
        .collect();
    if let Some(site) = site_packages {
        for dep in dependencies {
            if servers::by_package(dep).is_some() || servers::by_script(dep).is_some() {
                continue;
            }
            let mut apps = dependency_apps(site, dep);
            super::detect::rank(&mut apps, Some(dep));
            out.extend(apps.into_iter().map(|app| Proposal::App {
                package: dep.clone(),
                app,
            }));
        }
    }
    out
}

/// The directory `site-packages` of the venv in `dir` (`.venv/lib/pythonX.Y/site-packages`).
pub fn venv_site_packages(dir: &Path) -> Option<std::path::PathBuf> {
    let lib = dir.join(".venv").join("lib");
    let mut found: Vec<_> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("site-packages")))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found.pop()
}

/// The ASGI apps and factories at the top level of the modules `package`
/// installed in `site` (its dist-info's `top_level.txt`, else its RECORD).
fn dependency_apps(site: &Path, package: &str) -> Vec<AppCandidate> {
    let Some(dist_info) = dist_info(site, package) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for top in top_level(&dist_info) {
        let root = site.join(&top);
        let sources: Vec<(String, String)> = if root.is_dir() {
            match super::read_sources(&root) {
                Ok(s) => s
                    .into_iter()
                    .map(|(rel, text)| (format!("{top}/{rel}"), text))
                    .collect(),
                Err(_) => continue,
            }
        } else {
            let file = format!("{top}.py");
            match std::fs::read_to_string(site.join(&file)) {
                Ok(text) => vec![(file, text)],
                Err(_) => continue,
            }
        };
        out.extend(
            sources
                .iter()
                .flat_map(|(rel, text)| super::detect::find_apps(rel, text))
                .chain(super::factory::factory_apps(&sources)),
        );
    }
    out
}

fn dist_info(site: &Path, package: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(site).ok()?.find_map(|e| {
        let path = e.ok()?.path();
        let name = path.file_name()?.to_str()?.strip_suffix(".dist-info")?;
        let (dist, _version) = name.split_once('-')?;
        crate::lock::same_name(dist, package).then_some(path)
    })
}

/// The importable top-level names a dist-info's package installs.
fn top_level(dist_info: &Path) -> Vec<String> {
    let ok = |n: &str| super::detect::is_identifier(n) && !n.starts_with('_');
    if let Ok(text) = std::fs::read_to_string(dist_info.join("top_level.txt")) {
        return text
            .lines()
            .map(str::trim)
            .filter(|n| ok(n))
            .map(str::to_owned)
            .collect();
    }
    let Ok(record) = std::fs::read_to_string(dist_info.join("RECORD")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = record
        .lines()
        .filter_map(|l| {
            let path = l.split(',').next()?;
            let first = path.split('/').next()?;
            Some(first.strip_suffix(".py").unwrap_or(first).to_owned())
        })
        .filter(|n| ok(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::tests::write_files as write;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_dependency_that_is_a_known_server_is_proposed_as_its_command() {
        let found = find(&names(&["pandas", "Arize_Phoenix"]), None);
        assert_eq!(found.len(), 1);
        let Proposal::Command { package, server } = &found[0] else {
            panic!("{found:?}");
        };
        assert_eq!(package, "Arize_Phoenix");
        assert_eq!(server.cmd, ["phoenix", "serve"]);
        assert_eq!(server.port, 6006);
    }

    #[test]
    fn known_servers_come_in_the_dependencies_order_and_asgi_servers_are_not_proposed() {
        let found = find(&names(&["uvicorn", "jupyverse", "datasette"]), None);
        let packages: Vec<&str> = found.iter().map(Proposal::package).collect();
        assert_eq!(packages, ["jupyverse", "datasette"]);
    }

    #[test]
    fn requirement_names_drop_extras_versions_and_markers() {
        let doc: toml::Table = "[project]\nname = \"x\"\ndependencies = [\"jupyverse[jupyterlab,noauth]>=0.7\", \"mlflow ==3.1 ; python_version>'3.10'\", \"chromadb<0.6\"]\n".parse().unwrap();
        assert_eq!(
            direct_dependencies(&doc),
            ["jupyverse", "mlflow", "chromadb"]
        );
        assert!(direct_dependencies(&"[project]\nname = \"x\"\n".parse().unwrap()).is_empty());
    }

    #[test]
    fn the_lock_names_its_packages_in_every_toml_format() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("uv.lock", "version = 1\n[[package]]\nname = \"prefect\"\nversion = \"3\"\n[[package]]\nname = \"anyio\"\nversion = \"4\"\n"),
                ("pylock.toml", "lock-version = \"1.0\"\n[[packages]]\nname = \"datasette\"\n"),
                ("bad.lock", "not toml ["),
            ],
        );
        assert_eq!(
            locked_names(&dir.path().join("uv.lock")),
            ["prefect", "anyio"]
        );
        assert_eq!(locked_names(&dir.path().join("pylock.toml")), ["datasette"]);
        assert!(locked_names(&dir.path().join("bad.lock")).is_empty());
        assert!(locked_names(&dir.path().join("none.lock")).is_empty());
    }

    #[test]
    fn an_unknown_dependency_s_app_or_factory_is_found_in_the_project_venv() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join(".venv/lib/python3.11/site-packages");
        write(
            &site,
            &[
                ("toy_server-1.0.dist-info/top_level.txt", "toy_server\n"),
                ("toy_server/__init__.py", ""),
                (
                    "toy_server/web.py",
                    "from starlette.applications import Starlette\n\ndef create_app():\n    return Starlette()\n",
                ),
                ("other-2.0.dist-info/RECORD", "other/app.py,sha256=x,1\nother-2.0.dist-info/RECORD,,\n"),
                ("other/app.py", "from fastapi import FastAPI\napi = FastAPI()\n"),
                ("unused-1.0.dist-info/RECORD", "unused/app.py,,\n"),
                ("unused/app.py", "app = FastAPI()\n"),
            ],
        );
        assert_eq!(venv_site_packages(dir.path()), Some(site.clone()));
        let found = find(&names(&["toy-server", "Other"]), Some(&site));
        let apps: Vec<(&str, String)> = found
            .iter()
            .map(|p| match p {
                Proposal::App { package, app } => (package.as_str(), app.app.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            apps,
            [
                ("toy-server", "toy_server.web:create_app()".to_string()),
                ("Other", "other.app:api".to_string())
            ]
        );
        // Without a venv, only the known servers can be proposed.
        assert!(find(&names(&["toy-server"]), None).is_empty());
        assert_eq!(venv_site_packages(&dir.path().join("nowhere")), None);
    }
}
