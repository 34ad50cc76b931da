//! `imgbuild resolve`, planned: YAML (or one systemd unit) in, and for every
//! `imgbuild://PATH` string the spec it names, checked (an image to push to,
//! a tag) before anything is built; one target per spec file; then the same
//! text out with each reference replaced by the pinned `REPO@sha256:…` of its
//! image. `cli::resolve` builds and pushes the targets between the two.

use super::yaml::{self, Found};
use super::{DeployError, RefError};
use crate::digest::Digest;
use crate::layer::path::clean_absolute;
use crate::output::BuildResult;
use crate::reference::Reference;
use crate::spec::{self, Spec};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One input stream and the references in it.
struct Input {
    shown: String,
    text: String,
    found: Vec<Found>,
    /// A systemd unit (`imgbuild manifests --format systemd`), not YAML.
    unit: bool,
}

/// One project to build and push, and where it was first referenced (for messages).
pub struct Target {
    pub spec: Spec,
    /// The repository to push to (the spec's `image`).
    pub repo: String,
    /// The repository with the tag to push under.
    pub tag: Reference,
    /// The input, document and PATH of its first reference.
    first: (String, usize, String),
}

impl Target {
    /// `REPO@sha256:…`: what the references are replaced with.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repo)
    }

    /// `imgbuild://PATH` as first written, for progress lines.
    pub fn reference(&self) -> String {
        format!("{}{}", yaml::SCHEME, self.first.2)
    }

    /// The error for a failed build or push, at the target's first reference.
    pub fn failed(&self, source: RefError) -> DeployError {
        DeployError::Reference {
            file: self.first.0.clone(),
            document: self.first.1,
            path: self.first.2.clone(),
            source: Box::new(source),
        }
    }
}

/// What `imgbuild resolve` does: the documents read, the spec file each
/// reference names, and one target per spec file.
pub struct Plan {
    inputs: Vec<Input>,
    /// PATH as written → the spec file it names.
    specs: HashMap<String, PathBuf>,
    pub targets: BTreeMap<PathBuf, Target>,
}

fn at(file: &str, f: &Found, source: RefError) -> DeployError {
    DeployError::Reference {
        file: file.to_string(),
        document: f.document,
        path: f.path.clone(),
        source: Box::new(source),
    }
}

/// Reads `files` (`-` is standard input) and checks that every reference
/// names a spec with an `image`, and has a tag: `tag`, else the project's
/// version. PATHs are relative to `cwd`.
pub fn plan(files: &[PathBuf], tag: Option<&str>, cwd: &Path) -> Result<Plan, DeployError> {
    let inputs = read_inputs(files)?;
    let mut specs: HashMap<String, PathBuf> = HashMap::new();
    let mut targets: BTreeMap<PathBuf, Target> = BTreeMap::new();
    for input in &inputs {
        for f in &input.found {
            if specs.contains_key(&f.path) {
                continue;
            }
            let spec = load_spec(&f.path, cwd).map_err(|e| at(&input.shown, f, e))?;
            specs.insert(f.path.clone(), spec.file.clone());
            if targets.contains_key(&spec.file) {
                continue;
            }
            let shown = crate::text::shown(&spec.file, cwd);
            let repo = spec.image.clone().ok_or_else(|| {
                at(
                    &input.shown,
                    f,
                    RefError::NoImage {
                        spec: shown.clone(),
                    },
                )
            })?;
            let tag = match tag {
                Some(t) => t.to_string(),
                None => super::project(&spec).version.ok_or_else(|| {
                    at(
                        &input.shown,
                        f,
                        RefError::NoTag {
                            spec: shown.clone(),
                        },
                    )
                })?,
            };
            let reference = Reference::parse(&format!("{repo}:{tag}")).map_err(|source| {
                at(
                    &input.shown,
                    f,
                    RefError::Tag {
                        image: repo.clone(),
                        tag: tag.clone(),
                        source,
                    },
                )
            })?;
            targets.insert(
                spec.file.clone(),
                Target {
                    spec,
                    repo,
                    tag: reference,
                    first: (input.shown.clone(), f.document, f.path.clone()),
                },
            );
        }
    }
    Ok(Plan {
        inputs,
        specs,
        targets,
    })
}

impl Plan {
    /// `--username` is one registry's user: refused when the targets go to
    /// several registries.
    pub fn check_one_registry(&self, username: bool) -> Result<(), DeployError> {
        let registries: HashSet<&str> = self
            .targets
            .values()
            .map(|t| t.tag.registry.as_str())
            .collect();
        if username && registries.len() > 1 {
            let mut r: Vec<_> = registries.into_iter().collect();
            r.sort();
            return Err(DeployError::ManyRegistries {
                registries: r.join(", "),
            });
        }
        Ok(())
    }

    /// The documents as one stream, each reference replaced by what
    /// `pinned` holds for its spec file (every target must have an entry).
    pub fn render(&self, pinned: &HashMap<PathBuf, String>) -> String {
        let mut out = String::new();
        for input in &self.inputs {
            if !out.is_empty() && !input.text.starts_with("---") {
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str("---\n");
            }
            let new = |f: &Found| pinned[&self.specs[&f.path]].clone();
            out.push_str(&match input.unit {
                true => super::systemd::replace(&input.text, &input.found, new),
                false => yaml::replace(&input.text, &input.found, new),
            });
        }
        out
    }
}

fn read_inputs(files: &[PathBuf]) -> Result<Vec<Input>, DeployError> {
    let mut paths: Vec<(String, Option<PathBuf>)> = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            paths.push(("standard input".into(), None));
        } else if f.is_dir() {
            let read = |e| DeployError::Read {
                file: f.display().to_string(),
                source: e,
            };
            let mut found: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(read)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(DeployError::NoYamlFiles {
                    dir: f.display().to_string(),
                });
            }
            paths.extend(
                found
                    .into_iter()
                    .map(|p| (p.display().to_string(), Some(p))),
            );
        } else {
            paths.push((f.display().to_string(), Some(f.clone())));
        }
    }
    let mut out = Vec::new();
    for (shown, path) in paths {
        let text = match &path {
            None => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map(|_| s)
            }
            Some(p) => std::fs::read_to_string(p),
        }
        .map_err(|source| DeployError::Read {
            file: shown.clone(),
            source,
        })?;
        let unit = super::systemd::is_unit(&text);
        let found = match unit {
            true => super::systemd::find_refs(&text),
            false => yaml::find_refs(&text).map_err(|source| DeployError::Yaml {
                file: shown.clone(),
                source,
            })?,
        };
        out.push(Input {
            shown,
            text,
            found,
            unit,
        });
    }
    // A unit is a file of its own: joined to others it would be neither a
    // unit nor YAML.
    if let (Some(unit), true) = (out.iter().find(|i| i.unit), out.len() > 1) {
        return Err(DeployError::UnitNotAlone {
            file: unit.shown.clone(),
        });
    }
    Ok(out)
}

/// The spec a reference names: a spec file, or a directory holding
/// imgbuild.toml or a pyproject.toml, relative to `cwd`.
fn load_spec(path: &str, cwd: &Path) -> Result<Spec, RefError> {
    let p = cwd.join(path);
    if p.is_file() {
        return Ok(spec::load(Some(&p), cwd)?);
    }
    if !p.is_dir() {
        return Err(RefError::NoSuchPath {
            dir: path.to_string(),
        });
    }
    for name in [spec::SPEC_FILE, spec::PYPROJECT_FILE] {
        if p.join(name).is_file() {
            return Ok(spec::load(Some(&p.join(name)), cwd)?);
        }
    }
    Err(RefError::NoSpec {
        dir: path.to_string(),
    })
}

/// Fails when the spec's `init` program is in none of the places the runtime
/// would look for it in an image of `result`: its path as given, else each
/// directory of the image's PATH.
pub fn check_init(spec: &Spec, result: &BuildResult, store: &Store) -> Result<(), RefError> {
    let Some(program) = spec.init.as_ref().and_then(|i| i.first()) else {
        return Ok(());
    };
    for img in &result.images {
        let config: serde_json::Value = serde_json::from_slice(&img.config).unwrap_or_default();
        let env = config["config"]["Env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let path_var = env
            .iter()
            .filter_map(|e| e.as_str()?.strip_prefix("PATH="))
            .next()
            .unwrap_or(crate::python::interpreter::DEFAULT_PATH)
            .to_string();
        let candidates: Vec<String> = if program.contains('/') {
            let p = if program.starts_with('/') {
                program.clone()
            } else {
                format!("{}/{program}", spec.workdir.absolute())
            };
            vec![p]
        } else {
            path_var
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
                .collect()
        };
        let Some(files) = image_files(store, &img.layers) else {
            continue; // A layer we cannot list: the runtime will say.
        };
        if !candidates.iter().any(|c| files.contains(c)) {
            return Err(RefError::InitMissing {
                program: program.clone(),
                platform: img.platform.to_string(),
                looked: candidates.join(", "),
                spec: spec.file.display().to_string(),
            });
        }
    }
    Ok(())
}

/// The paths in the image's merged filesystem, with symbolic links to
/// directories followed; `None` when a layer cannot be read.
struct Files {
    entries: HashSet<String>,
    links: HashMap<String, String>,
}

impl Files {
    fn contains(&self, path: &str) -> bool {
        let mut path = path.to_string();
        'resolve: for _ in 0..40 {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            for i in 1..parts.len() {
                let prefix = format!("/{}", parts[..i].join("/"));
                if let Some(target) = self.links.get(&prefix) {
                    let base = if target.starts_with('/') {
                        target.clone()
                    } else {
                        format!("/{}/{target}", parts[..i - 1].join("/"))
                    };
                    path = format!("{base}/{}", parts[i..].join("/"));
                    path = clean_absolute(&path);
                    continue 'resolve;
                }
            }
            return self.entries.contains(&clean_absolute(&path));
        }
        false
    }
}

fn image_files(store: &Store, layers: &[crate::output::ImageLayer]) -> Option<Files> {
    let mut files = Files {
        entries: HashSet::new(),
        links: HashMap::new(),
    };
    for l in layers {
        let raw = crate::output::open_layer(store, l).ok()?;
        let reader = crate::layer::compress::decompressed(&l.layer.media_type, raw).ok()?;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().ok()? {
            let entry = entry.ok()?;
            let path = clean_absolute(&entry.path().ok()?.to_string_lossy());
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            if name == ".wh..wh..opq" {
                let under = format!("{dir}/");
                files.entries.retain(|e| !e.starts_with(&under));
                files.links.retain(|e, _| !e.starts_with(&under));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = format!("{dir}/{hidden}");
                files.entries.remove(&gone);
                files.links.remove(&gone);
                continue;
            }
            if entry.header().entry_type().is_symlink() {
                if let Ok(Some(target)) = entry.link_name() {
                    files
                        .links
                        .insert(path.clone(), target.to_string_lossy().into_owned());
                }
            } else {
                files.links.remove(&path);
            }
            files.entries.insert(path);
        }
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_spec_directory_or_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path();
        let spec = "base = \"python:3.12-slim\"\napp = \"main:app\"\n";
        std::fs::create_dir_all(cwd.join("svc")).unwrap();
        std::fs::create_dir_all(cwd.join("empty")).unwrap();
        std::fs::write(cwd.join("svc/imgbuild.toml"), spec).unwrap();
        std::fs::write(cwd.join("api.toml"), spec).unwrap();
        std::fs::write(
            cwd.join("pyproject.toml"),
            format!("[tool.imgbuild]\n{spec}"),
        )
        .unwrap();
        assert_eq!(
            load_spec("svc", cwd).unwrap().file,
            cwd.join("svc/imgbuild.toml")
        );
        assert_eq!(
            load_spec("api.toml", cwd).unwrap().file,
            cwd.join("api.toml")
        );
        assert_eq!(
            load_spec(".", cwd).unwrap().file,
            cwd.join("pyproject.toml")
        );
        assert!(matches!(
            load_spec("empty", cwd),
            Err(RefError::NoSpec { .. })
        ));
        assert!(matches!(
            load_spec("nowhere", cwd),
            Err(RefError::NoSuchPath { .. })
        ));
        std::fs::write(cwd.join("empty/imgbuild.toml"), "app = 1\n").unwrap();
        let err = load_spec("empty", cwd).unwrap_err().to_string();
        assert!(err.starts_with("empty/imgbuild.toml: "), "{err}");
    }

    #[test]
    fn a_systemd_unit_is_resolved_as_text_and_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path();
        std::fs::write(
            cwd.join("imgbuild.toml"),
            "base = \"python:3.12-slim\"\napp = \"main:app\"\nimage = \"ghcr.io/acme/orders\"\n",
        )
        .unwrap();
        let unit = "# imgbuild://. stays in comments\n[Service]\nExecStartPre=/usr/bin/podman run imgbuild://. migrate\nExecStart=/usr/bin/podman run imgbuild://.\n";
        std::fs::write(cwd.join("orders.service"), unit).unwrap();
        std::fs::write(cwd.join("other.yaml"), "image: imgbuild://.\n").unwrap();
        let p = plan(&[cwd.join("orders.service")], Some("1.0"), cwd).unwrap();
        assert_eq!(p.targets.len(), 1);
        let pinned = HashMap::from([(
            cwd.join("imgbuild.toml"),
            "ghcr.io/acme/orders@sha256:ab".to_string(),
        )]);
        assert_eq!(
            p.render(&pinned),
            unit.replace("run imgbuild://.", "run ghcr.io/acme/orders@sha256:ab")
        );
        let files = [cwd.join("other.yaml"), cwd.join("orders.service")];
        let err = plan(&files, Some("1.0"), cwd).err().unwrap();
        assert!(
            err.to_string().ends_with(
                "orders.service is a systemd unit; resolve it alone (one -f), as its own file"
            ),
            "{err}"
        );
    }

    #[test]
    fn image_files_follow_directory_links() {
        let files = Files {
            entries: ["/usr/bin/python3", "/bin", "/app/.venv/bin/migrate"]
                .into_iter()
                .map(String::from)
                .collect(),
            links: [("/bin".to_string(), "usr/bin".to_string())].into(),
        };
        assert!(files.contains("/bin/python3"));
        assert!(files.contains("/usr/bin/python3"));
        assert!(files.contains("/app/.venv/bin/../bin/migrate"));
        assert!(!files.contains("/bin/orders-migrate"));
    }
}
