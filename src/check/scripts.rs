//! `cmd`, `entrypoint` (and the default uvicorn command): the program they
//! run must exist in the image; `app-dir` must be a directory there.

use super::{CheckError, ImageView};
use crate::layer::EntryKind;
use crate::spec::Spec;
use crate::text::shown;

pub fn check_app_dir(spec: &Spec, file: &str, view: &ImageView) -> Result<(), CheckError> {
    let Some(dir) = &spec.app_dir else {
        return Ok(());
    };
    let path = view.workdir.join(dir.trim_end_matches('/')).ok();
    let is_dir = path
        .as_ref()
        .is_some_and(|p| matches!(view.app.get(p).map(|e| &e.kind), Some(EntryKind::Dir)));
    if is_dir {
        return Ok(());
    }
    Err(CheckError::AppDir {
        file: file.to_owned(),
        dir: dir.clone(),
        path: path.map_or_else(|| dir.clone(), |p| p.to_string()),
    })
}

/// The program the image runs must be there. For the default command (uvicorn
/// from the venv) without a lockfile it is a warning: such an image serves
/// nothing, but a bare app layer is a legitimate build.
pub fn check_command(spec: &Spec, file: &str, view: &ImageView) -> Result<Vec<String>, CheckError> {
    let (key, program) = match (&spec.entrypoint, &spec.cmd) {
        (Some(e), _) if !e.is_empty() => ("entrypoint", e[0].clone()),
        (None, Some(c)) if !c.is_empty() => ("cmd", c[0].clone()),
        (None, None) => (
            "the default command",
            format!("{}/bin/uvicorn", spec.venv.absolute()),
        ),
        _ => return Ok(Vec::new()),
    };
    if program_exists(&program, view) {
        return Ok(Vec::new());
    }
    let default = key == "the default command";
    let hint = if default {
        "add uvicorn to the project's dependencies and lock again, or set `cmd`".to_owned()
    } else if program.starts_with(&view.bin.absolute()) {
        format!(
            "no installed package provides the script `{}`; add the package that does and lock again, or fix `{key}`",
            program.rsplit('/').next().unwrap_or(&program)
        )
    } else {
        format!("install it in the base image, or fix `{key}`")
    };
    let err = CheckError::Program {
        file: file.to_owned(),
        key: key.to_owned(),
        program,
        hint,
    };
    if default && !view.locked {
        return Ok(vec![format!(
            "{err} (there is no lockfile, so no package is installed)"
        )]);
    }
    Err(err)
}

/// What the early check knows beyond the lock's package names.
pub struct LockedScripts<'a> {
    /// The `[project.scripts]` (and gui-scripts) of the lock's local packages,
    /// or `None` when one of them could not be read (it may provide any script).
    pub local: Option<&'a [String]>,
    /// Whether the base has a bare program name on its `PATH`; asked only
    /// before a refusal.
    pub in_base: &'a dyn Fn(&str) -> bool,
}

/// The early half of [`check_command`], on the lock's package names for the
/// target before any wheel is fetched: the default command needs uvicorn,
/// and a `cmd` or `entrypoint` that runs a server known by its script
/// ([`super::servers::SERVERS`]: `hypercorn`, `gunicorn`, `phoenix`,
/// `jupyverse`, …) from the venv or `PATH` needs one of the packages that
/// install that script, unless a local package declares it or (a bare name)
/// the base has it. Other scripts are known only from their wheels: the
/// later check. Without a lockfile there is nothing to look in.
pub fn check_server_locked<'a>(
    spec: &Spec,
    locked: impl IntoIterator<Item = &'a str>,
    scripts: &LockedScripts,
) -> Result<(), CheckError> {
    if spec.lockfile.is_none() {
        return Ok(());
    }
    let bin = format!("{}/bin/", spec.venv.absolute());
    let (key, program) = match (&spec.entrypoint, &spec.cmd) {
        (Some(e), _) if !e.is_empty() => ("entrypoint", e[0].as_str()),
        (None, Some(c)) if !c.is_empty() => ("cmd", c[0].as_str()),
        (None, None) => ("the default command", "uvicorn"),
        _ => return Ok(()),
    };
    let name = program.strip_prefix(&bin).unwrap_or(program);
    let Some(server) = super::servers::by_script(name) else {
        return Ok(());
    };
    let names: Vec<&str> = locked.into_iter().collect();
    let provided = server
        .packages
        .iter()
        .any(|p| names.iter().any(|n| crate::lock::same_name(n, p)));
    let local = scripts
        .local
        .is_none_or(|local| local.iter().any(|s| s == name));
    let default = key == "the default command";
    let bare = !default && !program.contains('/');
    if provided || local || (bare && (scripts.in_base)(name)) {
        return Ok(());
    }
    let file = shown(&spec.file, &std::env::current_dir().unwrap_or_default());
    let program = if default {
        format!("{bin}uvicorn")
    } else {
        program.to_string()
    };
    let package = server.packages[0];
    Err(CheckError::Program {
        file,
        key: key.to_owned(),
        program,
        hint: format!(
            "the lock has no `{package}` for this target ({} packages checked, before any download); add it to the project's dependencies and lock again{}",
            names.len(),
            if default {
                ", or set `cmd` to the server the project uses"
            } else {
                ""
            }
        ),
    })
}

fn program_exists(program: &str, view: &ImageView) -> bool {
    if program.starts_with('/') {
        return view.exists(program);
    }
    if program.contains('/') {
        // Relative to the workdir.
        return view
            .workdir
            .join(program.trim_start_matches("./"))
            .is_ok_and(|p| view.exists(&p.absolute()));
    }
    view.path
        .iter()
        .any(|dir| view.exists(&format!("{}/{program}", dir.trim_end_matches('/'))))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::PackageFiles;
    use super::*;
    use crate::layer::{ImagePath, LayerPlan};

    fn run(
        extra: &str,
        packages: &[PackageFiles],
        base: &[&'static str],
        locked: bool,
    ) -> Result<Vec<String>, CheckError> {
        let dir = tempfile::tempdir().unwrap();
        let plan: LayerPlan = app_plan(dir.path(), &[("bin/run.sh", "#!/bin/sh\n")]);
        let s = spec(dir.path(), &format!("app = \"main:app\"\n{extra}"));
        let (w, v, sp, b) = (
            path("/app"),
            path("/app/.venv"),
            path("/app/.venv/lib/python3.11/site-packages"),
            path("/app/.venv/bin"),
        );
        let base = NoBase(base.to_vec());
        let view = ImageView {
            workdir: &w,
            app: &plan,
            venv: &v,
            site_packages: &sp,
            bin: &b,
            packages,
            import_roots: &[] as &[ImagePath],
            base: &base,
            path: vec!["/app/.venv/bin".into(), "/usr/bin".into()],
            locked,
        };
        check_app_dir(&s, "imgbuild.toml", &view)?;
        check_command(&s, "imgbuild.toml", &view)
    }

    fn uvicorn() -> Vec<PackageFiles> {
        vec![PackageFiles {
            name: "uvicorn".into(),
            version: "0.30".into(),
            top_level: vec!["uvicorn".into()],
            bin: vec!["uvicorn".into()],
        }]
    }

    #[test]
    fn the_default_command_needs_uvicorn_in_the_venv() {
        assert!(run("", &uvicorn(), &[], true).unwrap().is_empty());
        let e = run("", &[], &[], true).unwrap_err().to_string();
        assert!(
            e.contains("/app/.venv/bin/uvicorn") && e.contains("lock again"),
            "{e}"
        );
        // Without a lockfile, a warning only.
        assert_eq!(run("", &[], &[], false).unwrap().len(), 1);
    }

    #[test]
    fn cmd_and_entrypoint_programs_must_exist() {
        run(
            "cmd = [\"/usr/bin/python3\", \"-V\"]\n",
            &[],
            &["/usr/bin/python3"],
            true,
        )
        .unwrap();
        run("cmd = [\"python3\"]\n", &[], &["/usr/bin/python3"], true).unwrap();
        run("entrypoint = [\"/app/bin/run.sh\"]\n", &[], &[], true).unwrap();
        run("entrypoint = [\"./bin/run.sh\"]\n", &[], &[], true).unwrap();
        run(
            "cmd = [\"/app/.venv/bin/python\", \"-m\", \"x\"]\n",
            &[],
            &[],
            true,
        )
        .unwrap();
        let e = run(
            "entrypoint = [\"/app/.venv/bin/gunicorn\"]\n",
            &uvicorn(),
            &[],
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("entrypoint runs") && e.contains("gunicorn"),
            "{e}"
        );
        let e = run("cmd = [\"/usr/bin/tini\"]\n", &[], &[], true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cmd runs \"/usr/bin/tini\"") && e.contains("base image"),
            "{e}"
        );
    }

    #[test]
    fn app_dir_must_be_a_directory() {
        run("app-dir = \"bin\"\n", &uvicorn(), &[], true).unwrap();
        let e = run("app-dir = \"src\"\n", &uvicorn(), &[], true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("app-dir = \"src\"") && e.contains("/app/src"),
            "{e}"
        );
    }

    #[test]
    fn a_server_the_lock_lacks_is_named_from_the_lock_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("uv.lock"), "").unwrap();
        let check = |extra: &str, names: &[&str]| {
            let s = spec(dir.path(), extra);
            let scripts = LockedScripts {
                local: Some(&[]),
                in_base: &|_| false,
            };
            check_server_locked(&s, names.iter().copied(), &scripts).map_err(|e| e.to_string())
        };
        let default = "app = \"main:app\"\n";
        assert!(check(default, &["fastapi", "Uvicorn"]).is_ok());
        let e = check(default, &["fastapi", "starlette"]).unwrap_err();
        assert!(
            e.ends_with("the default command runs \"/app/.venv/bin/uvicorn\", which is not in the image; the lock has no `uvicorn` for this target (2 packages checked, before any download); add it to the project's dependencies and lock again, or set `cmd` to the server the project uses"),
            "{e}"
        );
        // A server of its own: hypercorn needs hypercorn, not uvicorn.
        let hyper = "cmd = [\"/app/.venv/bin/hypercorn\", \"m:app\"]\n";
        assert!(check(hyper, &["hypercorn", "quart"]).is_ok());
        let e = check(hyper, &["quart"]).unwrap_err();
        assert!(
            e.contains("cmd runs \"/app/.venv/bin/hypercorn\"") && e.contains("no `hypercorn`"),
            "{e}"
        );
        // A script no package imgbuild knows of installs is left to the check after the fetch.
        assert!(check("cmd = [\"my-server\", \"serve\"]\n", &["anyio"]).is_ok());
        // Without a lockfile nothing is installed, and the later check warns.
        std::fs::remove_file(dir.path().join("uv.lock")).unwrap();
        assert!(check(default, &[]).is_ok());
    }

    #[test]
    fn a_packaged_server_s_script_needs_a_package_that_installs_it_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("uv.lock"), "").unwrap();
        let check = |cmd: &str, names: &[&str], local: Option<&[String]>, base: bool| {
            let s = spec(dir.path(), &format!("cmd = {cmd}\n"));
            let scripts = LockedScripts {
                local,
                in_base: &|_| base,
            };
            check_server_locked(&s, names.iter().copied(), &scripts).map_err(|e| e.to_string())
        };
        let phoenix = "[\"phoenix\", \"serve\"]";
        assert!(check(phoenix, &["arize-phoenix", "pandas"], Some(&[]), false).is_ok());
        let e = check(phoenix, &["pandas", "uvicorn"], Some(&[]), false).unwrap_err();
        assert!(
            e.ends_with("cmd runs \"phoenix\", which is not in the image; the lock has no `arize-phoenix` for this target (2 packages checked, before any download); add it to the project's dependencies and lock again"),
            "{e}"
        );
        // From the venv's bin, the same; mlflow's script comes from mlflow or mlflow-skinny.
        let e = check("[\"/app/.venv/bin/jupyverse\"]", &["fps"], Some(&[]), true).unwrap_err();
        assert!(e.contains("no `jupyverse`"), "{e}");
        let mlflow = "[\"mlflow\", \"server\"]";
        assert!(check(mlflow, &["mlflow-skinny"], Some(&[]), false).is_ok());
        // No false refusal: a local package that declares the script, a local
        // package that could not be read, or a bare name the base has on PATH.
        let own = ["phoenix".to_string()];
        assert!(check(phoenix, &["pandas"], Some(&own), false).is_ok());
        assert!(check(phoenix, &["pandas"], None, false).is_ok());
        assert!(check(phoenix, &["pandas"], Some(&[]), true).is_ok());
        // The base is not asked for a path into the venv.
        assert!(check("[\"/app/.venv/bin/phoenix\"]", &["pandas"], Some(&[]), true).is_err());
    }
}
