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
        let roots = self.roots()?;
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

    /// The project: the package whose source is `.`; in a workspace, every
    /// member that is a virtual or editable package.
    fn roots(&self) -> Result<Vec<usize>, LockError> {
        let packages = &self.lock.package;
        let members: BTreeSet<String> = self
            .lock
            .manifest
            .iter()
            .flat_map(|m| m.members.iter().filter_map(|n| normalise_name(n)))
            .collect();
        let roots: Vec<usize> = if members.len() > 1 {
            (0..packages.len())
                .filter(|&i| {
                    normalise_name(&packages[i].name).is_some_and(|n| members.contains(&n))
                        && matches!(packages[i].source_kind(), Some("virtual" | "editable"))
                })
                .collect()
        } else {
            (0..packages.len())
                .filter(|&i| packages[i].is_project_root())
                .collect()
        };
        if roots.is_empty() {
            return Err(self.invalid(
                "no project package (a package with source `virtual`, `editable` or `directory` = \".\"); run `uv lock` in the project directory".into(),
            ));
        }
        Ok(roots)
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
mod tests {
    use super::*;
    use crate::lock::test_support::{assert_mentions, env, error_of, hash, pins, uv_project};

    /// `text` read as uv.lock for x86_64 with the default options.
    fn parse_default(text: &str) -> LockResult {
        parse(text, "uv.lock", &LockOptions::default(), &env("x86_64"))
    }

    fn wheel(name: &str, version: &str, tag: &str, h: char) -> String {
        format!(
            "{{ url = \"https://files.example/{name}-{version}-{tag}.whl\", hash = \"sha256:{}\", size = 100 }}",
            hash(h)
        )
    }

    fn pkg(name: &str, version: &str, deps: &str, extra_tables: &str) -> String {
        format!(
            "[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = {{ registry = \"https://index.example/simple\" }}\ndependencies = [{deps}]\nsdist = {{ url = \"https://files.example/{name}-{version}.tar.gz\", hash = \"sha256:{}\", size = 10 }}\nwheels = [{}]\n{extra_tables}\n",
            hash('0'),
            wheel(name, version, "py3-none-any", 'a')
        )
    }

    fn lock() -> String {
        let mut s = String::from("version = 1\nrevision = 3\nrequires-python = \">=3.10\"\nresolution-markers = [\"python_full_version >= '3.12'\", \"python_full_version < '3.12'\"]\n\n");
        s += r#"[[package]]
name = "app"
version = "0.1.0"
source = { virtual = "." }
dependencies = [
    { name = "fastapi" },
    { name = "uvicorn", extra = ["standard"] },
    { name = "numpy", version = "2.0.0", source = { registry = "https://index.example/simple" }, marker = "python_full_version < '3.12'" },
    { name = "numpy", version = "2.3.0", source = { registry = "https://index.example/simple" }, marker = "python_full_version >= '3.12'" },
    { name = "pywin", marker = "sys_platform == 'win32'" },
    { name = "lib" },
]

[package.optional-dependencies]
yaml = [{ name = "pyyaml" }]

[package.dev-dependencies]
dev = [{ name = "pytest" }]
lint = [{ name = "ruff" }]

"#;
        s += "[[package]]\nname = \"lib\"\nversion = \"0.2.0\"\nsource = { editable = \"libs/lib\" }\ndependencies = [{ name = \"idna\" }]\n\n";
        s += &pkg("fastapi", "0.165.0", "{ name = \"starlette\" }", "");
        s += &pkg("starlette", "1.10.0", "", "");
        s += &pkg(
            "uvicorn",
            "0.54.0",
            "{ name = \"h11\" }",
            "[package.optional-dependencies]\nstandard = [{ name = \"uvloop\", marker = \"sys_platform != 'win32'\" }, { name = \"colorama\", marker = \"sys_platform == 'win32'\" }]\n",
        );
        s += &pkg("h11", "0.16.0", "", "");
        s += &pkg("uvloop", "0.23.0", "", "");
        s += &pkg("colorama", "0.4.6", "", "");
        s += &pkg("numpy", "2.0.0", "", "");
        s += &pkg("numpy", "2.3.0", "", "");
        s += &pkg("pywin", "1.0", "", "");
        s += &pkg("idna", "3.20", "", "");
        s += &pkg("pyyaml", "6.0.4", "", "");
        s += &pkg("pytest", "9.2.0", "{ name = \"Iniconfig\" }", "");
        s += &pkg("iniconfig", "2.3.1", "", "");
        s += &pkg("ruff", "0.17.3", "", "");
        s
    }

    fn names(opts: &LockOptions) -> Vec<String> {
        pins(parse(&lock(), "uv.lock", opts, &env("x86_64")))
    }

    #[test]
    fn walks_dependencies_edge_extras_and_markers_for_the_target() {
        assert_eq!(
            names(&LockOptions::default()),
            [
                "fastapi==0.165.0",
                "h11==0.16.0",
                "idna==3.20",
                "numpy==2.0.0",
                "starlette==1.10.0",
                "uvicorn==0.54.0",
                "uvloop==0.23.0",
            ]
        );
    }

    #[test]
    fn project_extras_and_groups_are_opt_in() {
        let opts = LockOptions {
            extras: vec!["yaml".into()],
            groups: vec!["lint".into()],
            ..Default::default()
        };
        let got = names(&opts);
        assert!(got.contains(&"pyyaml==6.0.4".to_string()));
        assert!(got.contains(&"ruff==0.17.3".to_string()));
        assert!(!got.iter().any(|n| n.starts_with("pytest")));

        let dev = names(&LockOptions {
            include_dev: true,
            ..Default::default()
        });
        assert!(dev.contains(&"pytest==9.2.0".to_string()));
        assert!(dev.contains(&"iniconfig==2.3.1".to_string()));
    }

    #[test]
    fn unknown_extras_and_groups_are_errors() {
        let opts = LockOptions {
            extras: vec!["gpu".into()],
            ..Default::default()
        };
        let err = error_of(parse(&lock(), "uv.lock", &opts, &env("x86_64")));
        assert_mentions(&err, &["no extra `gpu`", "yaml"]);
        let opts = LockOptions {
            groups: vec!["docs".into()],
            ..Default::default()
        };
        let err = error_of(parse(&lock(), "uv.lock", &opts, &env("x86_64")));
        assert_mentions(&err, &["group `docs`", "lint"]);
    }

    #[test]
    fn files_carry_url_hash_and_size_and_local_packages_are_left_out() {
        let got = parse_default(&lock()).unwrap();
        assert!(!got.iter().any(|p| p.name == "app" || p.name == "lib"));
        let h11 = got.iter().find(|p| p.name == "h11").unwrap();
        assert!(h11.has_sdist);
        assert_eq!(
            h11.files,
            vec![LockedFile {
                filename: "h11-0.16.0-py3-none-any.whl".into(),
                url: Some("https://files.example/h11-0.16.0-py3-none-any.whl".into()),
                sha256: hash('a'),
                size: Some(100),
            }]
        );
    }

    #[test]
    fn the_sdist_is_kept_with_its_hash_and_the_registry_is_the_packages_index() {
        let got = parse_default(&lock()).unwrap();
        let h11 = got.iter().find(|p| p.name == "h11").unwrap();
        assert_eq!(
            h11.sdist,
            Some(LockedFile {
                filename: "h11-0.16.0.tar.gz".into(),
                url: Some("https://files.example/h11-0.16.0.tar.gz".into()),
                sha256: hash('0'),
                size: Some(10),
            })
        );
        assert_eq!(h11.index.as_deref(), Some("https://index.example/simple"));
    }

    #[test]
    fn a_path_source_sdist_is_named_by_its_source() {
        let text = "version = 1\nrevision = 3\nrequires-python = \">=3.10\"\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\ndependencies = [{ name = \"local-pkg\" }]\n\n[[package]]\nname = \"local-pkg\"\nversion = \"1.0\"\nsource = { path = \"dists/local_pkg-1.0.tar.gz\" }\nsdist = { hash = \"sha256:HASH\" }\n"
            .replace("HASH", &hash('5'));
        let got = parse_default(&text).unwrap();
        let sdist = got[0].sdist.as_ref().expect("the path source's sdist");
        assert_eq!(sdist.url.as_deref(), Some("dists/local_pkg-1.0.tar.gz"));
        assert_eq!(sdist.filename, "local_pkg-1.0.tar.gz");
        assert_eq!(sdist.sha256, hash('5'));
        assert!(got[0].files.is_empty());
    }

    #[test]
    fn the_cutoff_is_exclude_newer_else_the_newest_upload_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uv.lock");
        let files = "[[package]]\nname = \"a\"\nsdist = { url = \"u\", upload-time = \"2024-01-02T00:00:00Z\" }\nwheels = [{ url = \"w\", upload-time = \"2025-03-04T05:06:07.5Z\" }]\n";
        std::fs::write(&path, files).unwrap();
        assert_eq!(
            crate::lock::build_cutoff(&path).as_deref(),
            Some("2025-03-04T05:06:07.5Z")
        );
        std::fs::write(
            &path,
            format!("[options]\nexclude-newer = \"2024-06-01T00:00:00Z\"\n\n{files}"),
        )
        .unwrap();
        assert_eq!(
            crate::lock::build_cutoff(&path).as_deref(),
            Some("2024-06-01T00:00:00Z")
        );
        std::fs::write(dir.path().join("poetry.lock"), files).unwrap();
        assert_eq!(
            crate::lock::build_cutoff(&dir.path().join("poetry.lock")),
            None
        );
    }

    #[test]
    fn an_unknown_lock_version_is_refused_by_number() {
        let text = lock().replacen("version = 1", "version = 2", 1);
        let err = error_of(parse(
            &text,
            "proj/uv.lock",
            &LockOptions::default(),
            &env("x86_64"),
        ));
        assert_mentions(
            &err,
            &["proj/uv.lock", "uv.lock version 2 is not supported"],
        );
    }

    /// Each case edits the lock, and the error must name what is wrong.
    #[test]
    fn a_lock_that_cannot_serve_the_target_names_what_is_wrong() {
        let cases: [(&str, &str, &[&str]); 2] = [
            // requires-python must admit the target's Python.
            (
                "requires-python = \">=3.10\"",
                "requires-python = \">=3.12\"",
                &[">=3.12", "3.11.2"],
            ),
            // A dangling dependency edge names the package and the missing name.
            (
                "{ name = \"starlette\" }",
                "{ name = \"starlette\" }, { name = \"ghost\" }",
                &["fastapi 0.165.0", "`ghost`"],
            ),
        ];
        for (from, to, named) in cases {
            let err = error_of(parse_default(&lock().replace(from, to)));
            assert_mentions(&err, named);
        }
    }

    #[test]
    fn workspace_members_are_all_roots() {
        let text = format!(
            "version = 1\n[manifest]\nmembers = [\"api\", \"worker\"]\n\n[[package]]\nname = \"api\"\nversion = \"1.0\"\nsource = {{ editable = \"api\" }}\ndependencies = [{{ name = \"h11\" }}]\n\n[[package]]\nname = \"worker\"\nversion = \"1.0\"\nsource = {{ virtual = \"worker\" }}\ndependencies = [{{ name = \"idna\" }}]\n\n{}{}",
            pkg("h11", "0.16.0", "", ""),
            pkg("idna", "3.20", "", "")
        );
        let got = parse_default(&text).unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["h11", "idna"]);
    }

    #[test]
    fn conflicting_extras_pick_their_fork_through_uvs_encoded_markers() {
        let text = format!(
            r#"version = 1
[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}
[package.optional-dependencies]
cpu = [{{ name = "torch", version = "2.0.0", source = {{ registry = "https://cpu.example/simple" }} }}]
gpu = [{{ name = "torch", version = "2.0.1", source = {{ registry = "https://gpu.example/simple" }} }}]

[[package]]
name = "torch"
version = "2.0.0"
source = {{ registry = "https://cpu.example/simple" }}
dependencies = [{{ name = "idna", marker = "extra == 'extra-3-app-cpu'" }}, {{ name = "h11", marker = "extra == 'extra-3-app-gpu'" }}]
wheels = [{}]

[[package]]
name = "torch"
version = "2.0.1"
source = {{ registry = "https://gpu.example/simple" }}
wheels = [{}]

{}{}"#,
            wheel("torch", "2.0.0", "py3-none-any", 'c'),
            wheel("torch", "2.0.1", "py3-none-any", 'd'),
            pkg("idna", "3.20", "", ""),
            pkg("h11", "0.16.0", "", "")
        );
        let opts = LockOptions {
            extras: vec!["cpu".into()],
            ..Default::default()
        };
        let got = parse(&text, "uv.lock", &opts, &env("x86_64")).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect();
        assert_eq!(names, ["torch==2.0.0", "idna==3.20"]);
    }

    #[test]
    fn local_packages_are_listed_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uv.lock");
        std::fs::write(&path, lock()).unwrap();
        let local = local_packages(&path, &LockOptions::default(), &env("x86_64")).unwrap();
        let got: Vec<(&str, &str, bool)> = local
            .iter()
            .map(|l| (l.name.as_str(), l.path.to_str().unwrap(), l.editable))
            .collect();
        assert_eq!(got, [("app", ".", false), ("lib", "libs/lib", true)]);
    }

    #[test]
    fn a_path_wheel_installs_from_its_path_and_a_git_source_says_what_to_do() {
        let text = format!(
            "version = 1\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = {{ virtual = \".\" }}\ndependencies = [{{ name = \"local-whl\" }}]\n\n[[package]]\nname = \"local-whl\"\nversion = \"1.0\"\nsource = {{ path = \"wheels/local_whl-1.0-py3-none-any.whl\" }}\nwheels = [{{ filename = \"local_whl-1.0-py3-none-any.whl\", hash = \"sha256:{}\" }}]\n",
            hash('a')
        );
        let got = parse_default(&text).unwrap();
        assert_eq!(
            got[0].files[0].url.as_deref(),
            Some("wheels/local_whl-1.0-py3-none-any.whl")
        );
        let git = text.replace(
            "source = { path = \"wheels/local_whl-1.0-py3-none-any.whl\" }",
            "source = { git = \"https://example.invalid/x.git?rev=main#abc\" }",
        );
        let err = error_of(parse_default(&git));
        assert_mentions(&err, &["local-whl 1.0", "git", "path source"]);
    }

    /// Checks the parser against a lock written by the real uv (needs network).
    #[test]
    #[ignore]
    fn parses_a_real_uv_lock() {
        let dir = uv_project(
            "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"fastapi\", \"uvicorn[standard]\"]\n[dependency-groups]\ndev = [\"pytest\"]\n[tool.uv]\npackage = false\n",
            &[&["lock", "--exclude-newer", "2026-11-01"]],
        );
        let lock = dir.path().join("uv.lock");
        let text = std::fs::read_to_string(&lock).unwrap();
        let got = parse_default(&text).unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        for n in [
            "fastapi",
            "uvicorn",
            "uvloop",
            "httptools",
            "pydantic-core",
            "starlette",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(
            !names.contains(&"demo") && !names.contains(&"pytest") && !names.contains(&"colorama")
        );
        assert!(got.iter().all(|p| !p.files.is_empty()));
    }
}
