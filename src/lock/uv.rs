//! `uv.lock` (version 1): a universal lock, so installing is a walk of its
//! dependency graph from the project, following only the edges whose markers
//! hold for the target.
//!
//! The project itself and every other local package (`virtual`, `editable`,
//! `directory` sources) are not returned: they are not downloaded, and their
//! dependencies are still followed. [`local_packages`] lists them.

use super::{
    filename_from_url, normalise_name, same_name, sha256_from_hash, LockError, LockOptions,
    LockResult, LockedFile, LockedPackage,
};
use crate::python::markers::MarkerEnv;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The project of a uv workspace the image installs, with its dependencies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectRoot {
    /// The spec's `package`: the member to install, by name (`uv sync --package`).
    pub package: Option<String>,
    /// The source tree, relative to the lockfile's directory (`/`-separated,
    /// empty when they are the same): a member built from its own directory.
    pub dir: String,
}

/// The lock past its `version`, which is read (and checked) on its own first.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UvLock {
    requires_python: Option<String>,
    #[serde(default)]
    package: Vec<Package>,
    manifest: Option<Manifest>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Package {
    name: String,
    version: Option<String>,
    source: Option<toml::Table>,
    #[serde(default)]
    dependencies: Vec<Dependency>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, Vec<Dependency>>,
    #[serde(default)]
    dev_dependencies: BTreeMap<String, Vec<Dependency>>,
    sdist: Option<toml::Table>,
    #[serde(default)]
    wheels: Vec<Wheel>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    version: Option<String>,
    source: Option<toml::Table>,
    marker: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
}

#[derive(Deserialize)]
struct Wheel {
    url: Option<String>,
    path: Option<String>,
    filename: Option<String>,
    hash: Option<String>,
    size: Option<u64>,
}

impl Package {
    fn source_kind(&self) -> Option<&str> {
        let source = self.source.as_ref()?;
        [
            "registry",
            "virtual",
            "editable",
            "directory",
            "path",
            "git",
            "url",
        ]
        .into_iter()
        .find(|k| source.contains_key(*k))
    }

    fn is_local(&self) -> bool {
        matches!(
            self.source_kind(),
            Some("virtual" | "editable" | "directory")
        )
    }

    fn is_project_root(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        ["virtual", "editable", "directory"]
            .iter()
            .any(|k| source.get(*k).and_then(|v| v.as_str()) == Some("."))
    }
}

// --- issue 8: local packages (the project, workspace members, path dependencies) ---

/// The local packages (`editable`, `virtual`, `directory` sources) the target
/// installs, with their paths relative to the lockfile's directory.
pub fn local_packages(
    path: &std::path::Path,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<Vec<super::LocalPackage>, LockError> {
    let text = super::read_text(path)?;
    Ok(parse_with_local(&text, &path.display().to_string(), opts, env)?.1)
}

/// [`super::load`] and [`local_packages`] from one read and one walk of the lock.
pub fn load_with_local(
    path: &std::path::Path,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<(Vec<LockedPackage>, Vec<super::LocalPackage>), LockError> {
    let text = super::read_text(path)?;
    parse_with_local(&text, &path.display().to_string(), opts, env)
}

impl Walker<'_> {
    fn locals(&self, reached: &BTreeSet<usize>) -> Vec<super::LocalPackage> {
        let mut out = Vec::new();
        for &idx in reached {
            let pkg = &self.lock.package[idx];
            let Some(kind) = pkg.source_kind().filter(|_| pkg.is_local()) else {
                continue;
            };
            let dir = pkg
                .source
                .as_ref()
                .and_then(|s| s.get(kind))
                .and_then(toml::Value::as_str)
                .unwrap_or(".");
            out.push(super::LocalPackage {
                name: normalise_name(&pkg.name).unwrap_or_else(|| pkg.name.clone()),
                version: pkg.version.clone(),
                path: dir.into(),
                editable: kind == "editable",
            });
        }
        out
    }
}

// --- end issue 8 ---

pub fn parse(text: &str, path: &str, opts: &LockOptions, env: &MarkerEnv) -> LockResult {
    Ok(parse_with_local(text, path, opts, env)?.0)
}

fn parse_with_local(
    text: &str,
    path: &str,
    opts: &LockOptions,
    env: &MarkerEnv,
) -> Result<(Vec<LockedPackage>, Vec<super::LocalPackage>), LockError> {
    let at = super::Errors(path);
    let invalid = |message| at.invalid(message);
    // Read the version alone first, so a future format fails on the version and
    // not on some field it renamed.
    let header: toml::Table = super::from_toml(text, path)?;
    match header.get("version").and_then(toml::Value::as_integer) {
        Some(1) => {}
        Some(n) => {
            return Err(invalid(format!(
                "uv.lock version {n} is not supported by this imgbuild; it reads version 1 (written by uv 0.5 and later). Regenerate the lock with a uv release that writes version 1, or upgrade imgbuild"
            )))
        }
        None => return Err(invalid("missing or non-integer `version`; is this a uv.lock?".into())),
    }
    let lock: UvLock = super::from_toml(text, path)?;
    if let Some(rp) = &lock.requires_python {
        if !env
            .satisfies_requires_python(rp)
            .map_err(|e| at.marker(e))?
        {
            return Err(invalid(format!(
                "requires-python `{rp}` excludes the base image's Python {}; use a base image whose Python matches, or relax requires-python and lock again",
                env.python_full_version()
            )));
        }
    }
    let mut walker = Walker {
        lock: &lock,
        path,
        env,
        conflict_items: Vec::new(),
    };
    let reached = walker.reach(opts)?;
    let locals = walker.locals(&reached);
    Ok((walker.collect(reached)?, locals))
}

struct Walker<'a> {
    lock: &'a UvLock,
    path: &'a str,
    env: &'a MarkerEnv,
    /// uv's encoding of the selected extras and groups, which edge markers of
    /// conflicting forks test: `extra-{len}-{project}-{extra}`, `group-{len}-{project}-{group}`.
    conflict_items: Vec<String>,
}

impl Walker<'_> {
    /// Every package the target installs, local ones included.
    fn reach(&mut self, opts: &LockOptions) -> Result<BTreeSet<usize>, LockError> {
        let roots = self.roots(&opts.project)?;
        let mut queue: Vec<(usize, Option<String>)> = Vec::new();
        let mut seen_extras: BTreeSet<String> = BTreeSet::new();
        let mut seen_groups: BTreeSet<String> = BTreeSet::new();
        let mut groups: Vec<String> = opts.groups.clone();
        if opts.include_dev && !groups.iter().any(|g| g == "dev") {
            groups.push("dev".into());
        }
        for &r in &roots {
            let pkg = &self.lock.package[r];
            let project = normalise_name(&pkg.name).ok_or_else(|| {
                self.package_error(pkg, "is not a valid package name (PEP 508)".into())
            })?;
            let encode = |kind: &str, item: &str| {
                format!(
                    "{kind}-{}-{project}-{}",
                    project.len(),
                    // An invalid extra or group name matches nothing, as an unknown one does.
                    normalise_name(item).unwrap_or_else(|| item.to_owned())
                )
            };
            let extras = opts.extras.iter().map(|e| encode("extra", e));
            let groups = groups.iter().map(|g| encode("group", g));
            self.conflict_items
                .extend(extras.chain(groups).collect::<Vec<_>>());
        }
        for &r in &roots {
            let pkg = &self.lock.package[r];
            queue.push((r, None));
            for extra in &opts.extras {
                if pkg.optional_dependencies.contains_key(extra) {
                    seen_extras.insert(extra.clone());
                    queue.push((r, Some(extra.clone())));
                }
            }
            for group in &groups {
                if let Some(deps) = pkg.dev_dependencies.get(group) {
                    seen_groups.insert(group.clone());
                    for dep in deps {
                        self.follow(r, dep, &mut queue)?;
                    }
                }
            }
        }
        if let Some(missing) = opts.extras.iter().find(|e| !seen_extras.contains(*e)) {
            return Err(self.invalid(format!(
                "the project has no extra `{missing}` (known: {}); fix the extras setting or lock again",
                known(roots.iter().flat_map(|&r| self.lock.package[r].optional_dependencies.keys()))
            )));
        }
        // `dev` is uv's default group: asking for it when it is absent is harmless.
        if let Some(missing) = opts
            .groups
            .iter()
            .find(|g| !seen_groups.contains(*g) && g.as_str() != "dev")
        {
            return Err(self.invalid(format!(
                "the project has no dependency group `{missing}` (known: {}); fix the groups setting or lock again",
                known(roots.iter().flat_map(|&r| self.lock.package[r].dev_dependencies.keys()))
            )));
        }

        let mut visited: HashSet<(usize, Option<String>)> = HashSet::new();
        while let Some((idx, extra)) = queue.pop() {
            if !visited.insert((idx, extra.clone())) {
                continue;
            }
            let pkg = &self.lock.package[idx];
            let deps = match &extra {
                None => &pkg.dependencies,
                Some(e) => match pkg.optional_dependencies.get(e) {
                    Some(deps) => deps,
                    None => continue,
                },
            };
            for dep in deps {
                self.follow(idx, dep, &mut queue)?;
            }
        }

        Ok(visited.into_iter().map(|(i, _)| i).collect())
    }

    fn collect(&self, reached: BTreeSet<usize>) -> Result<Vec<LockedPackage>, LockError> {
        let mut out: Vec<LockedPackage> = Vec::new();
        let mut by_name: BTreeMap<String, &str> = BTreeMap::new();
        for idx in reached {
            let pkg = &self.lock.package[idx];
            if pkg.is_local() {
                continue;
            }
            if pkg.source_kind() == Some("git") {
                // issue 8: a git source has no wheel to install; say what to do.
                return Err(self.package_error(
                    pkg,
                    "comes from a git repository, and imgbuild installs wheels only: build a wheel from it (`uv build --wheel`), point a path source at it (`[tool.uv.sources] NAME = { path = \"wheels/NAME-VERSION-py3-none-any.whl\" }`) and lock again".into(),
                ));
            }
            let name = normalise_name(&pkg.name).ok_or_else(|| {
                self.package_error(pkg, "is not a valid package name (PEP 508)".into())
            })?;
            let version = pkg
                .version
                .clone()
                .ok_or_else(|| self.package_error(pkg, "has no `version`".into()))?;
            if let Some(other) = by_name.insert(name.clone(), pkg.version.as_deref().unwrap_or(""))
            {
                return Err(self.package_error(
                    pkg,
                    format!("versions {other} and {version} both apply to this target; the lock looks inconsistent, run `uv lock` again"),
                ));
            }
            out.push(LockedPackage {
                files: self.files(pkg)?,
                has_sdist: pkg.sdist.is_some() || matches!(pkg.source_kind(), Some("git")),
                sdist: self.sdist(pkg),
                // The index the lock was resolved against: where an sdist's
                // build requirements are looked up.
                index: pkg
                    .source
                    .as_ref()
                    .and_then(|s| s.get("registry"))
                    .and_then(toml::Value::as_str)
                    .filter(|r| r.contains("://"))
                    .map(str::to_owned),
                name,
                version,
            });
        }
        Ok(out)
    }

    /// The project: the member `package` names; else the member whose
    /// directory is the source tree (a member built from its own directory);
    /// else the package whose source is `.`, or in a workspace every member
    /// that is a virtual or editable package (a virtual root has none of
    /// its own, with one member or many).
    fn roots(&self, root: &ProjectRoot) -> Result<Vec<usize>, LockError> {
        let packages = &self.lock.package;
        let members: BTreeSet<String> = self
            .lock
            .manifest
            .iter()
            .flat_map(|m| m.members.iter().filter_map(|n| normalise_name(n)))
            .collect();
        let is_member = |i: &usize| {
            normalise_name(&packages[*i].name).is_some_and(|n| members.contains(&n))
                && matches!(packages[*i].source_kind(), Some("virtual" | "editable"))
        };
        if let Some(name) = &root.package {
            return self.named_root(name, &members);
        }
        let dir = root.dir.trim_matches('/');
        let own_dir: Vec<usize> = (0..packages.len())
            .filter(|&i| {
                !dir.is_empty() && packages[i].is_local() && self.local_dir(i) == Some(dir)
            })
            .collect();
        let roots: Vec<usize> = if !own_dir.is_empty() {
            own_dir
        } else if members.len() > 1 {
            (0..packages.len()).filter(is_member).collect()
        } else {
            let dot: Vec<usize> = (0..packages.len())
                .filter(|&i| packages[i].is_project_root())
                .collect();
            if dot.is_empty() {
                (0..packages.len()).filter(is_member).collect()
            } else {
                dot
            }
        };
        if roots.is_empty() {
            return Err(self.invalid(
                "no project package (a package with source `virtual`, `editable` or `directory` = \".\", or a workspace member); run `uv lock` in the project directory".into(),
            ));
        }
        Ok(roots)
    }

    /// The local package `name` (the spec's `package`), or an error listing
    /// the workspace's members.
    fn named_root(&self, name: &str, members: &BTreeSet<String>) -> Result<Vec<usize>, LockError> {
        let found = (0..self.lock.package.len()).find(|&i| {
            same_name(&self.lock.package[i].name, name) && self.lock.package[i].is_local()
        });
        match found {
            Some(i) => Ok(vec![i]),
            None => Err(self.invalid(format!(
                "`package = {name:?}` is not a project of this workspace (members: {}); set `package` to one of them, or lock again",
                known(members.iter())
            ))),
        }
    }

    /// A local package's directory, relative to the lock (`backend`).
    fn local_dir(&self, i: usize) -> Option<&str> {
        let pkg = &self.lock.package[i];
        let kind = pkg.source_kind()?;
        let dir = pkg.source.as_ref()?.get(kind)?.as_str()?;
        Some(dir.trim_start_matches("./").trim_end_matches('/'))
    }

    fn follow(
        &self,
        from: usize,
        dep: &Dependency,
        queue: &mut Vec<(usize, Option<String>)>,
    ) -> Result<(), LockError> {
        if let Some(marker) = &dep.marker {
            let holds = self
                .env
                .evaluate(marker, &self.conflict_items)
                .map_err(|source| LockError::Marker {
                    path: self.path.to_owned(),
                    source,
                })?;
            if !holds {
                return Ok(());
            }
        }
        let target = self.resolve_edge(from, dep)?;
        queue.push((target, None));
        for extra in &dep.extra {
            queue.push((target, Some(extra.clone())));
        }
        Ok(())
    }

    /// The package an edge points at; `version` and `source` on the edge pick
    /// between several locked versions of one name.
    fn resolve_edge(&self, from: usize, dep: &Dependency) -> Result<usize, LockError> {
        let candidates: Vec<usize> = (0..self.lock.package.len())
            .filter(|&i| same_name(&self.lock.package[i].name, &dep.name))
            .filter(|&i| dep.version.is_none() || self.lock.package[i].version == dep.version)
            .filter(|&i| dep.source.is_none() || self.lock.package[i].source == dep.source)
            .collect();
        match candidates.as_slice() {
            [one] => Ok(*one),
            [] => Err(self.package_error(
                &self.lock.package[from],
                format!(
                    "depends on `{}`{} which is not in the lock; run `uv lock` again",
                    dep.name,
                    dep.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default()
                ),
            )),
            _ => Err(self.package_error(
                &self.lock.package[from],
                format!("its dependency `{}` matches several locked versions and the edge names none; run `uv lock` again", dep.name),
            )),
        }
    }

    fn files(&self, pkg: &Package) -> Result<Vec<LockedFile>, LockError> {
        pkg.wheels
            .iter()
            .map(|w| {
                let location = w.url.as_deref().or(w.path.as_deref()).unwrap_or("");
                let filename = w
                    .filename
                    .clone()
                    .or_else(|| filename_from_url(location))
                    .ok_or_else(|| self.package_error(pkg, "has a wheel without `url`, `path` or `filename`".into()))?;
                let sha256 = w
                    .hash
                    .as_deref()
                    .and_then(sha256_from_hash)
                    .ok_or_else(|| {
                        self.package_error(
                            pkg,
                            format!("wheel {filename} has no sha256 `hash`; imgbuild verifies every download, lock again with hashes"),
                        )
                    })?;
                // issue 8: `source = { path = "x.whl" }` names the wheel itself.
                let source_path = pkg
                    .source
                    .as_ref()
                    .and_then(|s| s.get("path"))
                    .and_then(toml::Value::as_str)
                    .filter(|p| p.ends_with(".whl"))
                    .map(str::to_owned);
                Ok(LockedFile {
                    filename,
                    url: w.url.clone().or_else(|| w.path.clone()).or(source_path),
                    sha256,
                    size: w.size,
                })
            })
            .collect()
    }

    /// The package's sdist, when the lock gives it a sha256 and a URL or path.
    fn sdist(&self, pkg: &Package) -> Option<LockedFile> {
        let table = pkg.sdist.as_ref()?;
        let text = |k: &str| table.get(k).and_then(toml::Value::as_str);
        // `source = { path = "dists/x-1.0.tar.gz" }` names the sdist itself.
        let source_path = pkg
            .source
            .as_ref()
            .and_then(|s| s.get("path"))
            .and_then(toml::Value::as_str);
        let location = text("url").or(text("path")).or(source_path)?;
        let filename = filename_from_url(location)?;
        Some(LockedFile {
            sha256: text("hash").and_then(sha256_from_hash)?,
            url: Some(location.to_owned()),
            size: table
                .get("size")
                .and_then(toml::Value::as_integer)
                .and_then(|n| u64::try_from(n).ok()),
            filename,
        })
        .filter(|f| super::is_sdist_name(&f.filename))
    }

    fn invalid(&self, message: String) -> LockError {
        LockError::Invalid {
            path: self.path.to_owned(),
            message,
        }
    }

    fn package_error(&self, pkg: &Package, message: String) -> LockError {
        LockError::Package {
            path: self.path.to_owned(),
            package: match &pkg.version {
                Some(v) => format!("{} {v}", pkg.name),
                None => pkg.name.clone(),
            },
            message,
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: BTreeSet<&String> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names
            .into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests;
