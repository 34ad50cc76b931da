//! The local-project stage: the root project, workspace members and path
//! dependencies become wheels in the store (see [`crate::python::project`]),
//! selected like any locked wheel, so fetch and the layer cache treat them the
//! same. `project-wheel` replaces the root project with a wheel built beforehand.

use crate::digest::Digest;
use crate::layer::ImagePath;
use crate::lock::select::SelectedWheel;
use crate::lock::LocalPackage;
use crate::python::project::{self, Placement, ProjectError};
use crate::python::tags::{Tags, WheelFilename};
use crate::spec::Spec;
use crate::store::{Store, StoreError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{spec}: project-wheel = {wheel:?}: {why}")]
    ProjectWheel {
        spec: String,
        wheel: String,
        why: String,
    },
    #[error("{}: the project's import root {} is not inside the source tree {}; move it, or build a wheel and set `project-wheel`", .pyproject.display(), .root.display(), .tree.display())]
    Outside {
        pyproject: PathBuf,
        root: PathBuf,
        tree: PathBuf,
    },
}

/// A local package, ready for the fetch and layer stages.
#[derive(Clone, Debug)]
pub struct LocalWheel {
    pub wheel: SelectedWheel,
    /// The image directories its `.pth` puts on `sys.path`.
    pub import_roots: Vec<ImagePath>,
}

/// The wheels for the root project (at `spec.source`) and every local package
/// the lock installs (`locals`, relative to `lock_dir`), in a stable order.
pub fn local_wheels(
    spec: &Spec,
    locals: &[LocalPackage],
    lock_dir: &Path,
    store: &Store,
    tags: &Tags,
) -> Result<Vec<LocalWheel>, LocalError> {
    let source = canonical(&spec.source);
    let mut dirs: Vec<(PathBuf, Option<String>)> = vec![(source.clone(), None)];
    for l in locals {
        let dir = canonical(&lock_dir.join(&l.path));
        match dirs.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, v)) => *v = l.version.clone(),
            None => dirs.push((dir, l.version.clone())),
        }
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, (dir, version)) in dirs.iter().enumerate() {
        if i == 0 {
            if let Some(wheel) = &spec.project_wheel {
                out.push(project_wheel(spec, wheel, store, tags)?);
                continue;
            }
        }
        if !dir.join(project::PYPROJECT).is_file() {
            continue;
        }
        let Some(p) = project::read(dir, version.as_deref())? else {
            continue;
        };
        if !seen.insert(p.wheel_filename()) {
            continue;
        }
        let inside = dir.starts_with(&source);
        let (placement, roots) = if inside {
            let mut roots = Vec::new();
            for r in &p.roots {
                let rel = r
                    .dir
                    .strip_prefix(&source)
                    .map_err(|_| LocalError::Outside {
                        pyproject: dir.join(project::PYPROJECT),
                        root: r.dir.clone(),
                        tree: source.clone(),
                    })?;
                let rel = rel.to_string_lossy();
                let image = if rel.is_empty() {
                    spec.workdir.clone()
                } else {
                    spec.workdir.join(&rel).map_err(|e| LocalError::Outside {
                        pyproject: dir.join(project::PYPROJECT),
                        root: PathBuf::from(e.0),
                        tree: source.clone(),
                    })?
                };
                roots.push(image);
            }
            (
                Placement::Pth(roots.iter().map(ImagePath::absolute).collect()),
                roots,
            )
        } else {
            (Placement::Copy, Vec::new())
        };
        let bytes = p.write_wheel(&placement)?;
        let (digest, size, ()) = store.write_blob(|w| w.write_all(&bytes))?;
        out.push(LocalWheel {
            wheel: SelectedWheel {
                name: project::wheel_name(&p.name).replace('_', "-"),
                version: p.version.clone(),
                filename: p.wheel_filename(),
                url: None,
                sha256: digest.hex().to_owned(),
                size: Some(size),
                index: None,
                from_sdist: false,
            },
            import_roots: roots,
        });
    }
    Ok(out)
}

/// `project-wheel`: a wheel file the user built, checked against the target's tags.
fn project_wheel(
    spec: &Spec,
    wheel: &Path,
    store: &Store,
    tags: &Tags,
) -> Result<LocalWheel, LocalError> {
    let filename = wheel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let err = |why: String| LocalError::ProjectWheel {
        spec: crate::text::shown_here(&spec.file),
        wheel: wheel.display().to_string(),
        why,
    };
    let parsed = WheelFilename::parse(&filename).map_err(|_| {
        err("the file name is not a wheel's (name-version-python-abi-platform.whl)".into())
    })?;
    if tags.priority(&parsed).is_none() {
        return Err(err(format!(
            "its tags ({}) do not fit the base image's Python; build it for the image's platform (e.g. in a container of the base)",
            parsed.tag_string()
        )));
    }
    let bytes = std::fs::read(wheel).map_err(|e| err(format!("cannot read it: {e}")))?;
    let digest = Digest::of_bytes(&bytes);
    if !store.has_blob(&digest) {
        store.write_blob(|w| w.write_all(&bytes))?;
    }
    Ok(LocalWheel {
        wheel: SelectedWheel {
            name: parsed.name.to_string(),
            version: parsed.version.clone(),
            filename,
            url: None,
            sha256: digest.hex().to_owned(),
            size: Some(bytes.len() as u64),
            index: None,
            from_sdist: false,
        },
        import_roots: Vec::new(),
    })
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::markers::test_python;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    const HATCH: &str = "[build-system]\nbuild-backend = \"hatchling.build\"\n";

    #[test]
    fn projects_in_the_tree_point_at_the_app_layer_and_others_are_copied() {
        let root = tempfile::tempdir().unwrap();
        let app = root.path().join("app");
        write(
            &app,
            &[
                (
                    "imgbuild.toml",
                    "base = \"oci:./base\"\napp = \"svc.main:app\"\n",
                ),
                (
                    "pyproject.toml",
                    &format!("[project]\nname = \"svc\"\nversion = \"1.0\"\n{HATCH}"),
                ),
                ("src/svc/__init__.py", ""),
                (
                    "libs/member/pyproject.toml",
                    &format!("[project]\nname = \"member\"\nversion = \"0.1\"\n{HATCH}"),
                ),
                ("libs/member/member.py", ""),
            ],
        );
        write(
            &root.path().join("outside"),
            &[
                (
                    "pyproject.toml",
                    &format!("[project]\nname = \"outside\"\n{HATCH}"),
                ),
                ("src/outside/__init__.py", "X = 1\n"),
            ],
        );
        let spec = crate::spec::load(None, &app).unwrap();
        let store = Store::open(root.path().join("store")).unwrap();
        let locals = [
            LocalPackage {
                name: "member".into(),
                version: None,
                path: "libs/member".into(),
                editable: true,
            },
            LocalPackage {
                name: "outside".into(),
                version: Some("0.2".into()),
                path: "../outside".into(),
                editable: false,
            },
        ];
        let tags = Tags::for_target(&test_python("x86_64"));
        let got = local_wheels(&spec, &locals, &app, &store, &tags).unwrap();
        let summary: Vec<(String, String, Vec<String>)> = got
            .iter()
            .map(|l| {
                (
                    l.wheel.name.clone(),
                    l.wheel.filename.clone(),
                    l.import_roots.iter().map(ImagePath::absolute).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "svc".into(),
                    "svc-1.0-py3-none-any.whl".into(),
                    vec!["/app/src".into()]
                ),
                (
                    "member".into(),
                    "member-0.1-py3-none-any.whl".into(),
                    vec!["/app/libs/member".into()]
                ),
                (
                    "outside".into(),
                    "outside-0.2-py3-none-any.whl".into(),
                    vec![]
                ),
            ]
        );
        // Each wheel is in the store under its digest, and the same inputs give the same wheel.
        for l in &got {
            assert!(store.has_blob(&Digest::from_hex(&l.wheel.sha256).unwrap()));
        }
        let again = local_wheels(&spec, &locals, &app, &store, &tags).unwrap();
        assert_eq!(again[2].wheel.sha256, got[2].wheel.sha256);
    }

    #[test]
    fn a_project_wheel_must_fit_the_target() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("dist/fast-1.0-cp311-cp311-win_amd64.whl", "not checked"),
                (
                    "imgbuild.toml",
                    "base = \"oci:./base\"\napp = \"fast:app\"\nproject-wheel = \"dist/fast-1.0-cp311-cp311-win_amd64.whl\"\n",
                ),
            ],
        );
        let spec = crate::spec::load(None, dir.path()).unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let tags = Tags::for_target(&test_python("x86_64"));
        let e = local_wheels(&spec, &[], dir.path(), &store, &tags)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("project-wheel") && e.contains("win_amd64") && e.contains("imgbuild.toml"),
            "{e}"
        );
    }
}
