//! Checks that refuse an image that cannot start, before anything is written
//! or pushed: the `app` module and attribute, the programs `cmd` and
//! `entrypoint` name, `app-dir`, a project whose dependencies would be missing,
//! and the native libraries of every installed ELF file.
//!
//! The checks are pure: they look at an [`ImageView`], made from the plans of
//! the layers (the app layer's plan, what each wheel puts in site-packages and
//! `bin`) and a lazy view of the base's files; nothing here reads a layer blob.

pub(crate) mod app;
mod factory;
pub(crate) mod facts;
pub(crate) mod imports;
pub(crate) mod native;
pub(crate) mod scripts;
pub(crate) mod servers;

use crate::layer::{ImagePath, LayerPlan};
use crate::python::rootfs::{Occupant, RootFs};
use crate::spec::Spec;
use crate::text::shown;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "{file}: app = {app:?}: module `{module}` is not in the image (looked in {looked}); {hint}"
    )]
    AppModule {
        file: String,
        app: String,
        module: String,
        looked: String,
        hint: String,
    },
    #[error("{file}: app = {app:?}: {path} is a symlink to {target:?}, which is not a file in the image, so the app cannot be imported; point the link at the module or replace it with the file")]
    AppDangling {
        file: String,
        app: String,
        path: String,
        target: String,
    },
    #[error("{file}: app = {app:?}: {path} has no top-level `{attr}` (no def, class, assignment or import of it); define it there or fix `app`")]
    AppAttribute {
        file: String,
        app: String,
        path: String,
        attr: String,
    },
    #[error("{file}: app = {app:?}: `{attr}` in {path} is a {class} app, not a factory that makes one; write app = {:?} without the ()", .app.trim_end_matches("()"))]
    NotAFactory {
        file: String,
        app: String,
        attr: String,
        path: String,
        class: &'static str,
    },
    #[error("{file}: app-dir = {dir:?}: /{path} is not a directory in the image; point it at the directory (relative to the workdir) that holds the app's package")]
    AppDir {
        file: String,
        dir: String,
        path: String,
    },
    #[error("{file}: {key} runs {program:?}, which is not in the image; {hint}")]
    Program {
        file: String,
        key: String,
        program: String,
        hint: String,
    },
    #[error("{file} declares {count} dependencies but {dir} has no lockfile imgbuild reads{found}; run `uv lock` there (or export a pylock.toml or a requirements.txt with hashes), or set `lockfile`")]
    NoLockfile {
        file: String,
        count: usize,
        dir: String,
        found: String,
    },
    #[error("{file}: key \"{key}\": the base already has files in {dir} (e.g. {example}); the {content} would be mixed with them; choose another directory")]
    BaseFills {
        file: String,
        key: &'static str,
        dir: String,
        example: String,
        /// What we would put there: "venv" or "app".
        content: &'static str,
    },
    #[error("{file}: key \"{key}\": the base already has {entry} at {dir}, where the {content} would go; choose another directory")]
    BaseEntry {
        file: String,
        key: &'static str,
        dir: String,
        /// "a file", or "a symlink to \"TARGET\"".
        entry: String,
        content: &'static str,
    },
    #[error("package {package}: {file} needs {library}, which is not in the image; {hint}")]
    MissingLibrary {
        package: String,
        file: String,
        library: String,
        hint: String,
    },
}

/// What one installed package puts where the checks look.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageFiles {
    pub name: String,
    pub version: String,
    /// Names directly in site-packages (`pkg`, `mod.py`, `_x.cpython-311-x86_64-linux-gnu.so`).
    pub top_level: Vec<String>,
    /// Names in the venv's `bin`.
    pub bin: Vec<String>,
}

impl PackageFiles {
    /// Reads a package's install plan for the checks.
    pub fn from_plan(
        name: &str,
        version: &str,
        plan: &LayerPlan,
        site_packages: &ImagePath,
        bin: &ImagePath,
    ) -> PackageFiles {
        let mut top_level = Vec::new();
        let mut scripts = Vec::new();
        for (path, _) in plan.entries() {
            if path.parent().as_ref() == Some(site_packages) {
                top_level.push(path.file_name().to_owned());
            } else if path.parent().as_ref() == Some(bin) {
                scripts.push(path.file_name().to_owned());
            }
        }
        PackageFiles {
            name: name.to_owned(),
            version: version.to_owned(),
            top_level,
            bin: scripts,
        }
    }
}

/// The base image's files, as far as a check asks (absolute paths).
pub trait BaseFiles {
    fn exists(&self, path: &str) -> bool;
    /// What the base has at `path` unless nothing or an empty directory.
    fn occupant(&self, path: &str) -> Option<Occupant>;
}

impl BaseFiles for RootFs {
    fn exists(&self, path: &str) -> bool {
        RootFs::exists(self, path)
    }
    fn occupant(&self, path: &str) -> Option<Occupant> {
        RootFs::occupant(self, path)
    }
}

/// What the image will hold, from the plans.
pub struct ImageView<'a> {
    pub workdir: &'a ImagePath,
    /// The app layer.
    pub app: &'a LayerPlan,
    pub venv: &'a ImagePath,
    pub site_packages: &'a ImagePath,
    pub bin: &'a ImagePath,
    pub packages: &'a [PackageFiles],
    /// Directories the projects' `.pth` files put on `sys.path`.
    pub import_roots: &'a [ImagePath],
    pub base: &'a dyn BaseFiles,
    /// `PATH` in the image, venv `bin` first.
    pub path: Vec<String>,
    /// A lockfile was read (so a missing `uvicorn` is an error, not a warning).
    pub locked: bool,
}

impl ImageView<'_> {
    /// Whether the absolute path `p` is a file, directory or link in the image.
    pub fn exists(&self, p: &str) -> bool {
        let Ok(path) = ImagePath::new(p) else {
            return false;
        };
        if self.app.get(&path).is_some() {
            return true;
        }
        if path.parent().as_ref() == Some(self.bin) {
            let name = path.file_name();
            if self
                .packages
                .iter()
                .any(|pkg| pkg.bin.iter().any(|b| b == name))
                || name == "python"
                || name == "python3"
                || name.starts_with("python3.")
            {
                return true;
            }
        }
        if path.starts_with(self.venv) {
            return false;
        }
        self.base.exists(p)
    }
}

/// Runs the spec checks (app, app-dir, cmd/entrypoint); returns the warnings.
pub fn check_image(spec: &Spec, view: &ImageView) -> Result<Vec<String>, CheckError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let file = shown(&spec.file, &cwd);
    let mut warnings = Vec::new();
    scripts::check_app_dir(spec, &file, view)?;
    if let Some(w) = app::check_app(spec, &file, view)? {
        warnings.push(w);
    }
    warnings.extend(scripts::check_command(spec, &file, view)?);
    Ok(warnings)
}

/// `venv` and `workdir` must be directories the base leaves empty (or does
/// not have): the venv's layer, or the app's, would be mixed with the base's
/// own files there, and which of them a path ends up as would depend on both.
pub fn check_base_fills(spec: &Spec, base: &dyn BaseFiles) -> Result<(), CheckError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let file = || shown(&spec.file, &cwd);
    for (key, dir, content) in [
        ("venv", &spec.venv, "venv"),
        ("workdir", &spec.workdir, "app"),
    ] {
        let dir = dir.absolute();
        let entry = match base.occupant(&dir) {
            None => continue,
            Some(Occupant::Entries(example)) => {
                return Err(CheckError::BaseFills {
                    file: file(),
                    key,
                    dir,
                    example,
                    content,
                })
            }
            Some(Occupant::File) => "a file".to_string(),
            Some(Occupant::Symlink(target)) => format!("a symlink to {target:?}"),
        };
        return Err(CheckError::BaseEntry {
            file: file(),
            key,
            dir,
            entry,
            content,
        });
    }
    Ok(())
}

/// A project (pyproject.toml in `source`) that declares dependencies needs a
/// lockfile imgbuild reads; without one the image would hold none of them.
pub fn check_lockfile(spec: &Spec) -> Result<(), CheckError> {
    if spec.lockfile.is_some() {
        return Ok(());
    }
    let pyproject = spec.source.join(crate::spec::PYPROJECT_FILE);
    let place = crate::project_file::Place::Within(&spec.source);
    let limit = crate::project_file::SETTINGS_LIMIT;
    let Ok(text) = crate::project_file::read_text(&pyproject, place, limit) else {
        return Ok(());
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let count = declared_dependencies(&doc);
    if count == 0 {
        return Ok(());
    }
    let others: Vec<&str> = ["requirements.in", "Pipfile"]
        .into_iter()
        .filter(|f| spec.source.join(f).is_file())
        .collect();
    let cwd = std::env::current_dir().unwrap_or_default();
    Err(CheckError::NoLockfile {
        file: shown(&pyproject, &cwd),
        count,
        dir: shown(&spec.source, &cwd),
        found: if others.is_empty() {
            String::new()
        } else {
            format!(
                " (it has {}, which imgbuild does not read)",
                others.join(", ")
            )
        },
    })
}

/// `[project] dependencies`, or Poetry's `[tool.poetry.dependencies]` minus `python`.
fn declared_dependencies(doc: &toml::Table) -> usize {
    let project = doc
        .get("project")
        .and_then(|p| p.get("dependencies"))
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len);
    let poetry = doc
        .get("tool")
        .and_then(|t| t.get("poetry"))
        .and_then(|t| t.get("dependencies"))
        .and_then(toml::Value::as_table)
        .map_or(0, |t| t.keys().filter(|k| *k != "python").count());
    project + poetry
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::path::Path;

    pub struct NoBase(pub Vec<&'static str>);
    impl BaseFiles for NoBase {
        fn exists(&self, path: &str) -> bool {
            self.0.contains(&path)
        }
        fn occupant(&self, _: &str) -> Option<Occupant> {
            None
        }
    }

    /// A spec for `app` with the defaults, read from a temp dir.
    pub fn spec(dir: &Path, extra: &str) -> Spec {
        let text = format!("base = \"oci:./base\"\n{extra}");
        crate::spec::parse(&text, &dir.join("imgbuild.toml"), false, dir).unwrap()
    }

    pub fn path(p: &str) -> ImagePath {
        ImagePath::new(p).unwrap()
    }

    /// The image view of the checks' tests: /app, its venv, and `plan`.
    pub fn view<'a>(
        plan: &'a LayerPlan,
        packages: &'a [PackageFiles],
        roots: &'a [ImagePath],
        base: &'a NoBase,
    ) -> ImageView<'a> {
        static WORKDIR: std::sync::OnceLock<[ImagePath; 4]> = std::sync::OnceLock::new();
        let p = WORKDIR.get_or_init(|| {
            [
                path("/app"),
                path("/app/.venv"),
                path("/app/.venv/lib/python3.11/site-packages"),
                path("/app/.venv/bin"),
            ]
        });
        ImageView {
            workdir: &p[0],
            app: plan,
            venv: &p[1],
            site_packages: &p[2],
            bin: &p[3],
            packages,
            import_roots: roots,
            base,
            path: vec!["/app/.venv/bin".into(), "/usr/bin".into()],
            locked: true,
        }
    }

    /// An app plan of host files written to `dir` and placed under /app.
    pub fn app_plan(dir: &Path, files: &[(&str, &str)]) -> LayerPlan {
        let mut plan = LayerPlan::new();
        for (name, text) in files {
            let host = dir.join(name);
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            std::fs::write(&host, text).unwrap();
            plan.file(
                path(&format!("/app/{name}")),
                0o644,
                text.len() as u64,
                crate::layer::Content::HostFile(host),
            )
            .unwrap();
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    /// A directory holding a pyproject.toml for project `x` with `extra` in `[project]`.
    fn project(extra: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            format!("[project]\nname = \"x\"\nversion = \"1\"\n{extra}"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn dependencies_without_a_lockfile_are_refused() {
        let dir = project("dependencies = [\"fastapi\", \"uvicorn\"]\n");
        std::fs::write(dir.path().join("requirements.in"), "fastapi\n").unwrap();
        let s = spec(dir.path(), "app = \"main:app\"\n");
        let e = check_lockfile(&s).unwrap_err().to_string();
        assert!(
            e.contains("pyproject.toml declares 2 dependencies")
                && e.contains("requirements.in")
                && e.contains("uv lock"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        std::fs::write(dir.path().join("uv.lock"), "").unwrap();
        check_lockfile(&spec(dir.path(), "app = \"main:app\"\n")).unwrap();
    }

    #[test]
    fn a_project_without_dependencies_needs_no_lockfile() {
        let dir = project("");
        check_lockfile(&spec(dir.path(), "app = \"main:app\"\n")).unwrap();
    }

    /// A base with conda in /opt/conda, an empty /srv/app, a home directory
    /// with a file, and /opt/link pointing at conda.
    fn conda_base() -> RootFs {
        use crate::python::rootfs::test_tar::{layer, Item::*};
        let mut fs = RootFs::new();
        let tar = layer(&[
            File("opt/conda/bin/python", b"\x7fELF"),
            Dir("srv/app/"),
            File("home/app/.bashrc", b"# hi"),
            Symlink("opt/link", "/opt/conda"),
        ]);
        fs.apply_layer(&tar[..], &|_| true).unwrap();
        fs
    }

    /// The error for a spec with `settings`, over `conda_base`, with the
    /// spec's file name cut to `imgbuild.toml`.
    fn fills_error(settings: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &format!("app = \"main:app\"\n{settings}"));
        let e = check_base_fills(&s, &conda_base()).err()?.to_string();
        let shown = shown(&s.file, &std::env::current_dir().unwrap());
        Some(e.replacen(&shown, "imgbuild.toml", 1))
    }

    #[test]
    fn venv_and_workdir_where_the_base_already_has_files_are_refused() {
        assert_eq!(
            fills_error("venv = \"/opt/conda\"\n").as_deref(),
            Some(
                "imgbuild.toml: key \"venv\": the base already has files in /opt/conda \
                 (e.g. /opt/conda/bin/python); the venv would be mixed with them; choose \
                 another directory"
            )
        );
        assert_eq!(
            fills_error("workdir = \"/home/app\"\nenv = { HOME = \"/tmp\" }\n").as_deref(),
            Some(
                "imgbuild.toml: key \"workdir\": the base already has files in /home/app \
                 (e.g. /home/app/.bashrc); the app would be mixed with them; choose another \
                 directory"
            )
        );
        assert_eq!(
            fills_error("venv = \"/opt/link\"\n").as_deref(),
            Some(
                "imgbuild.toml: key \"venv\": the base already has a symlink to \"/opt/conda\" \
                 at /opt/link, where the venv would go; choose another directory"
            )
        );
        assert_eq!(
            fills_error("workdir = \"/opt/conda/bin/python\"\n").as_deref(),
            Some(
                "imgbuild.toml: key \"workdir\": the base already has a file at \
                 /opt/conda/bin/python, where the app would go; choose another directory"
            )
        );
    }

    #[test]
    fn venv_and_workdir_the_base_lacks_or_leaves_empty_are_fine() {
        // The defaults (/app and /app/.venv), an empty directory, a new one
        // beside the base's files.
        for settings in [
            "",
            "workdir = \"/srv/app\"\nvenv = \"/srv/app/.venv\"\n",
            "venv = \"/opt/venv\"\nworkdir = \"/opt/app\"\n",
        ] {
            assert_eq!(fills_error(settings), None, "{settings}");
        }
    }

    #[test]
    fn package_files_come_from_the_install_plan() {
        let mut plan = LayerPlan::new();
        let sp = path("/app/.venv/lib/python3.11/site-packages");
        let bin = path("/app/.venv/bin");
        for p in [
            "/app/.venv/lib/python3.11/site-packages/uvicorn/__init__.py",
            "/app/.venv/lib/python3.11/site-packages/uvicorn-0.30.dist-info/RECORD",
            "/app/.venv/bin/uvicorn",
        ] {
            plan.bytes(path(p), 0o644, vec![]).unwrap();
        }
        let f = PackageFiles::from_plan("uvicorn", "0.30", &plan, &sp, &bin);
        assert_eq!(f.top_level, ["uvicorn", "uvicorn-0.30.dist-info"]);
        assert_eq!(f.bin, ["uvicorn"]);
    }
}
