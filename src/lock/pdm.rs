//! `pdm.lock` (lock_version 4.x, written with PDM's default `inherit_metadata`
//! strategy): every package lists the groups that need it and one `marker`
//! for when it does, so installing is a filter. In PDM, optional-dependency
//! extras of the project are groups too; `default` is the main one.
//!
//! Files carry a URL only when locked with the `static_urls` strategy;
//! otherwise they are looked up on the configured index (see `lock::locate`).
//! `[[metadata.targets]]` says which Pythons and platforms the lock is for:
//! the target image must be one of them. Local packages (`path`,
//! `editable`) are not returned.

use super::{
    active_groups, filename_from_url, group_key, hashed_package, listed_groups, Errors, LockError,
    LockOptions, LockResult, LockedPackage,
};
use crate::python::markers::MarkerEnv;
use serde::Deserialize;
use std::collections::BTreeSet;

#[derive(Deserialize)]
struct PdmLock {
    metadata: Metadata,
    #[serde(default)]
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Metadata {
    lock_version: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    strategy: Vec<String>,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    requires_python: Option<String>,
    platform: Option<String>,
    implementation: Option<String>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    groups: Option<Vec<String>>,
    marker: Option<String>,
    #[serde(default)]
    files: Vec<File>,
    path: Option<String>,
    editable: Option<bool>,
    git: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct File {
    file: Option<String>,
    url: Option<String>,
    hash: String,
}

pub fn parse(text: &str, path: &str, opts: &LockOptions, env: &MarkerEnv) -> LockResult {
    let at = Errors(path);
    let marker_err = |source| at.marker(source);
    let lock: PdmLock = super::from_toml(text, path)?;
    check_target(&lock.metadata, at, env)?;
    check_requested(&lock.metadata, at, opts)?;
    let active = active_groups(
        "default",
        opts.groups.iter().chain(&opts.extras),
        opts.include_dev,
    );

    let mut out: Vec<LockedPackage> = Vec::new();
    for pkg in &lock.package {
        let package_err = |message| at.package(&pkg.name, pkg.version.as_deref(), message);
        let groups = listed_groups(
            &pkg.groups,
            "run `pdm lock --strategy inherit_metadata` again",
        )
        .map_err(package_err)?;
        if !groups.iter().any(|g| active.contains(&group_key(g))) {
            continue;
        }
        if let Some(marker) = &pkg.marker {
            if !env.evaluate(marker, &opts.extras).map_err(marker_err)? {
                continue;
            }
        }
        if pkg.path.is_some() || pkg.editable == Some(true) {
            continue;
        }
        let new = locked_package(pkg).map_err(package_err)?;
        add_entry(&mut out, new).map_err(package_err)?;
    }
    Ok(out)
}

/// The lock is one this imgbuild reads (lock_version 4.x, `inherit_metadata`)
/// and one of its targets, if it lists any, is the target image.
fn check_target(meta: &Metadata, at: Errors, env: &MarkerEnv) -> Result<(), LockError> {
    let invalid = |message| at.invalid(message);
    let version = meta.lock_version.as_deref().unwrap_or("");
    if version.split('.').next() != Some("4") {
        return Err(invalid(format!(
            "lock_version `{version}` is not supported; imgbuild reads lock_version 4.x. Run `pdm lock` with PDM 2.11 or later"
        )));
    }
    if !meta.strategy.iter().any(|s| s == "inherit_metadata") {
        return Err(invalid(
            "was locked without the `inherit_metadata` strategy, so it does not say which packages each group needs; run `pdm lock --strategy inherit_metadata`".into(),
        ));
    }
    if !meta.targets.is_empty() {
        let mut any = false;
        for t in &meta.targets {
            any |= target_matches(t, env).map_err(|source| at.marker(source))?;
        }
        if !any {
            return Err(invalid(format!(
                "none of its targets ({}) is the base image's Python {} on linux/{}; lock for it with `pdm lock --append --python … --platform …`",
                meta.targets.iter().map(describe).collect::<Vec<_>>().join("; "),
                env.python_full_version(),
                env.environment().platform_machine()
            )));
        }
    }
    Ok(())
}

/// Every extra and group asked for is one of the lock's groups (PDM locks
/// extras as groups).
fn check_requested(meta: &Metadata, at: Errors, opts: &LockOptions) -> Result<(), LockError> {
    let known: BTreeSet<String> = meta.groups.iter().map(|g| group_key(g)).collect();
    for (kind, wanted) in [("extra", &opts.extras), ("dependency group", &opts.groups)] {
        if let Some(g) = wanted
            .iter()
            .find(|g| !known.contains(&group_key(g)) && g.as_str() != "dev")
        {
            return Err(at.invalid(format!(
                "the lock has no {kind} `{g}` (its groups: {}); fix the {}s setting or lock again with `pdm lock -G :all`",
                known.iter().cloned().collect::<Vec<_>>().join(", "),
                if kind == "extra" { "extra" } else { "group" }
            )));
        }
    }
    Ok(())
}

/// The package with its files; a file's URL is its own or the package's.
fn locked_package(pkg: &Package) -> Result<LockedPackage, String> {
    let files = pkg.files.iter().map(|f| {
        let url = f.url.clone().or_else(|| pkg.url.clone());
        let filename = f
            .file
            .clone()
            .or_else(|| url.as_deref().and_then(filename_from_url))
            .ok_or("has a file without `file` or `url`")?;
        Ok((filename, url, f.hash.as_str()))
    });
    hashed_package(
        &pkg.name,
        pkg.version.as_deref(),
        None,
        pkg.git.is_some(),
        files,
    )
}

/// Adds `new` to `out`. `uvicorn[standard]` is a second entry for uvicorn
/// with the same version: its files join the first; another version is an
/// error.
fn add_entry(out: &mut Vec<LockedPackage>, new: LockedPackage) -> Result<(), String> {
    match out.iter_mut().find(|p| p.name == new.name) {
        Some(p) if p.version == new.version => {
            for f in new.files {
                if !p.files.contains(&f) {
                    p.files.push(f);
                }
            }
            p.has_sdist |= new.has_sdist;
        }
        Some(p) => {
            return Err(format!(
                "versions {} and {} both apply to this target; the lock looks inconsistent, run `pdm lock` again",
                p.version, new.version
            ))
        }
        None => out.push(new),
    }
    Ok(())
}

/// A PDM target: `requires_python`, `implementation` and a platform such as
/// `linux`, `manylinux_2_17_x86_64`, `musllinux_1_2_aarch64` or `windows_amd64`.
fn target_matches(
    t: &Target,
    env: &MarkerEnv,
) -> Result<bool, crate::python::markers::MarkerError> {
    if let Some(rp) = &t.requires_python {
        if !env.satisfies_requires_python(rp)? {
            return Ok(false);
        }
    }
    if let Some(i) = &t.implementation {
        if !i.eq_ignore_ascii_case("cpython") {
            return Ok(false);
        }
    }
    let Some(platform) = &t.platform else {
        return Ok(true);
    };
    let p = platform.to_ascii_lowercase();
    let linux = ["linux", "manylinux", "musllinux", "alpine"]
        .iter()
        .any(|l| p.starts_with(l));
    if !linux {
        return Ok(false);
    }
    let arch = env.environment().platform_machine().to_string();
    let arches = ["x86_64", "aarch64", "i686", "armv7l", "ppc64le", "s390x"];
    Ok(match arches.iter().find(|a| p.ends_with(*a)) {
        Some(a) => *a == arch,
        None => true,
    })
}

fn describe(t: &Target) -> String {
    [
        t.requires_python.as_deref().map(|r| format!("Python {r}")),
        t.implementation.clone(),
        t.platform.clone(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::test_support::{
        assert_extras_and_groups_opt_in, env, error_of, hash, hashed_file as file, options, pins,
    };

    fn pkg(name: &str, version: &str, groups: &str, extra: &str, files: &str) -> String {
        format!(
            "[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nrequires_python = \">=3.8\"\nsummary = \"\"\ngroups = [{groups}]\n{extra}dependencies = [\n    \"idna>=2.8\",\n]\nfiles = [\n{files}]\n\n"
        )
    }

    fn lock(targets: &str) -> String {
        let mut s = format!("# This file is @generated by PDM.\n# It is not intended for manual editing.\n\n[metadata]\ngroups = [\"default\", \"dev\", \"json\", \"ops\"]\nstrategy = [\"inherit_metadata\"]\nlock_version = \"4.5.1\"\ncontent_hash = \"sha256:00\"\n\n{targets}\n");
        let packages: [(&str, &str, &str, &str, String); 8] = [
            ("uvicorn", "0.55.0", "\"default\"", "", file("uvicorn-0.55.0-py3-none-any.whl", 'a') + &file("uvicorn-0.55.0.tar.gz", 'b')),
            ("uvicorn", "0.55.0", "\"default\"", "extras = [\"standard\"]\n", file("uvicorn-0.55.0-py3-none-any.whl", 'a') + &file("uvicorn-0.55.0.tar.gz", 'b')),
            ("uvloop", "0.23.0", "\"default\"", "marker = \"sys_platform != \\\"win32\\\"\"\n", file("uvloop-0.23.0-cp311-cp311-manylinux_2_17_x86_64.whl", 'c')
                + &file("uvloop-0.23.0-cp311-cp311-manylinux_2_17_aarch64.whl", 'd')),
            ("colorama", "0.4.6", "\"default\", \"dev\"", "marker = \"sys_platform == \\\"win32\\\"\"\n", file("colorama-0.4.6-py2.py3-none-any.whl", 'e')),
            ("orjson", "3.11.0", "\"json\"", "", file("orjson-3.11.0-cp311-cp311-manylinux_2_17_x86_64.whl", 'f')),
            ("humanize", "4.14.0", "\"ops\"", "", format!(
                "    {{url = \"https://files.example/humanize-4.14.0-py3-none-any.whl\", hash = \"sha256:{}\"}},\n",
                hash('1')
            )),
            ("iniconfig", "2.3.1", "\"dev\"", "", file("iniconfig-2.3.1-py3-none-any.whl", '2')),
            ("shared", "0.1.0", "\"default\"", "path = \"./libs/shared\"\n", String::new()),
        ];
        for (name, version, groups, extra, files) in packages {
            s += &pkg(name, version, groups, extra, &files);
        }
        s
    }

    fn names(text: &str, opts: &LockOptions, arch: &str) -> Vec<String> {
        pins(parse(text, "pdm.lock", opts, &env(arch)))
    }

    /// `text` read as `path` for `arch` with the default options.
    fn parse_for(text: &str, path: &str, arch: &str) -> LockResult {
        parse(text, path, &LockOptions::default(), &env(arch))
    }

    /// `text` read for x86_64 with the default options.
    fn parse_default(text: &str) -> LockResult {
        parse_for(text, "pdm.lock", "x86_64")
    }

    #[test]
    fn the_default_group_is_installed_where_markers_hold_and_extras_entries_merge() {
        assert_eq!(
            names(&lock(""), &LockOptions::default(), "x86_64"),
            ["uvicorn==0.55.0", "uvloop==0.23.0"]
        );
        let got = parse_default(&lock("")).unwrap();
        let uvicorn = got.iter().find(|p| p.name == "uvicorn").unwrap();
        assert_eq!(uvicorn.files.len(), 1);
        assert_eq!(uvicorn.files[0].url, None);
        assert_eq!(uvicorn.files[0].sha256, hash('a'));
        assert!(uvicorn.has_sdist);
    }

    #[test]
    fn extras_and_groups_both_select_pdm_groups() {
        assert_extras_and_groups_opt_in(|opts| names(&lock(""), opts, "x86_64"));
    }

    #[test]
    fn static_urls_are_kept() {
        let opts = options(&[], &["ops"]);
        let got = parse(&lock(""), "pdm.lock", &opts, &env("x86_64")).unwrap();
        let h = got.iter().find(|p| p.name == "humanize").unwrap();
        assert_eq!(h.files[0].filename, "humanize-4.14.0-py3-none-any.whl");
        assert_eq!(
            h.files[0].url.as_deref(),
            Some("https://files.example/humanize-4.14.0-py3-none-any.whl")
        );
    }

    #[test]
    fn the_target_image_must_be_one_of_the_lock_targets() {
        let t = |rp: &str, platform: &str| {
            format!("[[metadata.targets]]\nrequires_python = \"{rp}\"\nplatform = \"{platform}\"\n")
        };
        let ok = lock(&(t(">=3.11", "windows_amd64") + &t(">=3.11", "manylinux_2_17_x86_64")));
        assert!(parse_default(&ok).is_ok());
        let err = error_of(parse_for(&ok, "app/pdm.lock", "aarch64"));
        assert!(
            err.starts_with("app/pdm.lock: none of its targets")
                && err.contains("manylinux_2_17_x86_64")
                && err.contains("linux/aarch64"),
            "{err}"
        );
        let py = lock(&t(">=3.12", "linux"));
        assert!(parse_default(&py).is_err());
        let any_linux = lock(&t(">=3.11", "linux"));
        assert!(parse_for(&any_linux, "pdm.lock", "aarch64").is_ok());
    }

    #[test]
    fn old_locks_and_unknown_groups_are_refused_with_what_to_do() {
        let err = error_of(parse_default(
            &lock("").replace("lock_version = \"4.5.1\"", "lock_version = \"3.0\""),
        ));
        assert!(err.contains("lock_version `3.0` is not supported"), "{err}");
        let err = error_of(parse_default(&lock("").replace(
            "strategy = [\"inherit_metadata\"]",
            "strategy = [\"cross_platform\"]",
        )));
        assert!(
            err.contains("pdm lock --strategy inherit_metadata"),
            "{err}"
        );
        let err = error_of(parse(
            &lock(""),
            "pdm.lock",
            &options(&["yaml"], &[]),
            &env("x86_64"),
        ));
        assert!(
            err.contains("no extra `yaml` (its groups: default, dev, json, ops)"),
            "{err}"
        );
    }
}
