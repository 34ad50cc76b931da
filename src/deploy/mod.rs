//! From a pushed image to a running service, on Kubernetes or on one server.
//!
//! * `imgbuild manifests` writes a Deployment, a Service, a
//!   HorizontalPodAutoscaler and, with `host`, an Ingress for a spec
//!   ([`manifests`]); with `--format compose` a `compose.yaml` ([`compose`]),
//!   with `--format systemd` a unit ([`systemd`]), both from one model of the
//!   server's containers ([`server`]), which `imgbuild run` runs too. The image
//!   is written `imgbuild://PATH`;
//! * `imgbuild resolve` ([`resolve`]) finds every `imgbuild://PATH` string in
//!   YAML documents ([`yaml`]) or a systemd unit, builds and pushes each
//!   project once, and prints the text with `REPO@sha256:…` in their place,
//!   as `ko resolve` does.
//!
//! This is planning only, below `cli`: which projects to build and push,
//! the objects and files to write, the containers to run, and the check that
//! an image holds its `init` program. `cli::manifests`, `cli::resolve` and
//! `cli::run` read the arguments, drive the builds, pushes and containers
//! (with the functions `imgbuild push` uses) and print.

pub(crate) mod compose;
pub(crate) mod manifests;
pub(crate) mod resolve;
pub(crate) mod server;
pub(crate) mod systemd;
pub(crate) mod yaml;

use crate::project_file::{read_text, Place, SETTINGS_LIMIT};
use crate::spec::{self, Spec, SpecError};
use std::io;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{file}: cannot read it")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}")]
    Yaml {
        file: String,
        #[source]
        source: yaml::YamlError,
    },
    #[error("{file}: document {document}: {SCHEME}{path}", SCHEME = yaml::SCHEME)]
    Reference {
        file: String,
        document: usize,
        path: String,
        #[source]
        source: Box<RefError>,
    },
    #[error("{path}: cannot write it")]
    Write {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{dir}: no YAML files (*.yaml, *.yml) in it")]
    NoYamlFiles { dir: String },
    #[error("-f - and --password-stdin both read standard input; set IMGBUILD_PASSWORD instead, or log in first with `imgbuild login`")]
    StdinTwice,
    #[error("--username is for one registry, but the images go to {registries}; log in to each with `imgbuild login` instead")]
    ManyRegistries { registries: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{spec}: key \"deploy.tls.{which}\": {path}")]
    TlsFile {
        spec: String,
        which: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{spec}: key \"deploy.tls\": uvicorn serves TLS with --ssl-certfile and --ssl-keyfile added to the image's command, but the spec sets `entrypoint` or `cmd`; add them to your command and mount the files yourself, or leave the command to imgbuild")]
    TlsNeedsUvicorn { spec: String },
    #[error("{file} is a systemd unit; resolve it alone (one -f), as its own file")]
    UnitNotAlone { file: String },
    #[error("--format {given:?}: expected kubernetes, compose or systemd")]
    UnknownFormat { given: String },
}

/// What is wrong with one `imgbuild://PATH` reference.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("{dir} does not exist; PATH is a directory holding a spec (or the spec file), relative to the current directory, e.g. imgbuild://. for the project you stand in")]
    NoSuchPath { dir: String },
    #[error("no {} or {} in {dir}; point the reference at a directory holding a spec, or at the spec file", spec::SPEC_FILE, spec::PYPROJECT_FILE)]
    NoSpec { dir: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{spec} has no `image`; add the repository to push to, such as image = \"ghcr.io/acme/orders\"")]
    NoImage { spec: String },
    #[error("no --tag, and no [project] version in a pyproject.toml beside {spec}; pass --tag or set the version")]
    NoTag { spec: String },
    #[error("{image}:{tag} is not a valid reference")]
    Tag {
        image: String,
        tag: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("init program {program:?} is not in the {platform} image (looked for {looked}); install the package that provides it, or fix `init` in {spec}")]
    InitMissing {
        program: String,
        platform: String,
        looked: String,
        spec: String,
    },
    #[error("building and pushing it")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The `[project]` name and version of the pyproject.toml beside the spec
/// (or in its source directory), when there is one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: Option<String>,
    pub version: Option<String>,
}

pub fn project(spec: &Spec) -> Project {
    let dirs = [spec.file.parent(), Some(spec.source.as_path())];
    for dir in dirs.into_iter().flatten() {
        let file = dir.join(spec::PYPROJECT_FILE);
        let Ok(text) = read_text(&file, Place::Within(dir), SETTINGS_LIMIT) else {
            continue;
        };
        let Ok(doc) = text.parse::<toml::Table>() else {
            continue;
        };
        let p = doc.get("project").and_then(|p| p.as_table());
        let get = |k: &str| {
            p.and_then(|p| p.get(k))
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        return Project {
            name: get("name"),
            version: get("version"),
        };
    }
    Project::default()
}

/// `deploy.name`, else the project's name (or its directory's) made a valid
/// Kubernetes name: lowercase, `-` for anything else, starting with a letter.
pub fn kube_name(spec: &Spec, project: &Project) -> String {
    if let Some(n) = &spec.deploy.name {
        return n.clone();
    }
    let raw = project
        .name
        .clone()
        .or_else(|| {
            spec.source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let mut name = name.trim_matches('-').to_string();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name = format!("app-{name}");
    }
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// `imgbuild://PATH` for a spec, PATH relative to `cwd`: the directory when
/// `imgbuild resolve` would find this spec there, else the file itself.
pub fn reference_for(spec: &Spec, cwd: &Path) -> String {
    let dir = spec.file.parent().unwrap_or(Path::new("/"));
    let name = spec.file.file_name().and_then(|n| n.to_str());
    let found_by_lookup = name == Some(spec::SPEC_FILE)
        || (name == Some(spec::PYPROJECT_FILE) && !dir.join(spec::SPEC_FILE).exists());
    let target = if found_by_lookup { dir } else { &spec.file };
    let shown = match crate::text::shown(target, cwd) {
        here if here.is_empty() => ".".to_string(),
        path => path,
    };
    format!("{}{shown}", yaml::SCHEME)
}

/// What `imgbuild manifests --format` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Kubernetes,
    Compose,
    Systemd,
}

impl std::str::FromStr for Format {
    type Err = DeployError;

    fn from_str(s: &str) -> Result<Format, DeployError> {
        match s {
            "kubernetes" | "k8s" => Ok(Format::Kubernetes),
            "compose" => Ok(Format::Compose),
            "systemd" => Ok(Format::Systemd),
            _ => Err(DeployError::UnknownFormat {
                given: s.to_string(),
            }),
        }
    }
}

/// The files `imgbuild manifests --format FORMAT` writes for `spec`, in
/// file-name order, the image written `imgbuild://PATH` relative to `cwd`.
pub fn manifests_for(
    spec: &Spec,
    cwd: &Path,
    format: Format,
) -> Result<Vec<manifests::Manifest>, DeployError> {
    let project = project(spec);
    let name = kube_name(spec, &project);
    let image = reference_for(spec, cwd);
    let spec_shown = crate::text::shown(&spec.file, cwd);
    if format == Format::Kubernetes {
        return manifests::generate(&manifests::Input {
            spec,
            name,
            version: project.version.clone(),
            image,
            spec_shown,
        });
    }
    // The user's HOME and the `writable` directories: volumes, so they are
    // writable on the read-only root and outlive a restart of the container.
    let state_dirs = spec.state_dirs();
    let server = server::plan(&server::Input {
        spec,
        name,
        image,
        spec_shown: spec_shown.clone(),
        writable: &state_dirs,
    })?;
    Ok(vec![match format {
        Format::Compose => manifests::Manifest {
            file_name: compose::FILE_NAME.to_string(),
            text: compose::generate(&server, &spec_shown),
        },
        _ => manifests::Manifest {
            file_name: systemd::file_name(&server),
            text: systemd::generate(&server, &spec_shown),
        },
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in(dir: &Path, file: &str, extra: &str) -> Spec {
        let text = format!("base = \"python:3.12-slim\"\napp = \"main:app\"\n{extra}");
        let path = dir.join(file);
        std::fs::write(&path, &text).unwrap();
        crate::spec::parse(&text, &path, false, dir).unwrap()
    }

    #[test]
    fn names_come_from_deploy_then_project_then_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("My_Service.v2");
        std::fs::create_dir(&dir).unwrap();
        let s = spec_in(&dir, "imgbuild.toml", "");
        assert_eq!(kube_name(&s, &Project::default()), "my-service-v2");
        let p = Project {
            name: Some("9lives_API".into()),
            version: None,
        };
        assert_eq!(kube_name(&s, &p), "app-9lives-api");
        let s = spec_in(&dir, "imgbuild.toml", "[deploy]\nname = \"orders\"\n");
        assert_eq!(kube_name(&s, &p), "orders");
    }

    #[test]
    fn project_name_and_version_come_from_pyproject() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("pyproject.toml"),
            "[project]\nname = \"orders\"\nversion = \"1.4.2\"\n",
        )
        .unwrap();
        let s = spec_in(tmp.path(), "imgbuild.toml", "");
        assert_eq!(
            project(&s),
            Project {
                name: Some("orders".into()),
                version: Some("1.4.2".into())
            }
        );
    }

    #[test]
    fn references_are_relative_to_the_current_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path();
        std::fs::create_dir_all(cwd.join("svc/a")).unwrap();
        let here = spec_in(cwd, "imgbuild.toml", "");
        assert_eq!(reference_for(&here, cwd), "imgbuild://.");
        let sub = spec_in(&cwd.join("svc/a"), "imgbuild.toml", "");
        assert_eq!(reference_for(&sub, cwd), "imgbuild://svc/a");
        let named = spec_in(&cwd.join("svc"), "api.toml", "");
        assert_eq!(reference_for(&named, cwd), "imgbuild://svc/api.toml");
        let elsewhere = tempfile::tempdir().unwrap();
        let out = spec_in(elsewhere.path(), "imgbuild.toml", "");
        assert_eq!(
            reference_for(&out, cwd),
            format!("imgbuild://{}", elsewhere.path().display())
        );
    }
}
