//! Poetry and PDM locks, and index settings where Python keeps them.
//!
//! One fixture (fixtures/locks-api) is locked at test time by Poetry, by uv and by PDM
//! (installed pinned by scripts/setup.sh), with uv and PDM held to the versions Poetry
//! chose, so the three locks name the same files. No lock and no index URL is committed:
//! the index is the one uv resolved against on this machine, read from its uv.lock.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Environment variables that configure a package index; cleared for every imgbuild run
/// so only what a test sets counts.
const INDEX_ENV: &[&str] = &[
    "UV_DEFAULT_INDEX",
    "UV_INDEX_URL",
    "PIP_INDEX_URL",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_CONFIG_FILE",
    "PIP_CONFIG_FILE",
    "VIRTUAL_ENV",
];

fn tool(name: &str) -> PathBuf {
    let out = Command::new("uv")
        .args(["tool", "dir", "--bin"])
        .output()
        .expect("cannot run uv; run scripts/setup.sh");
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name);
    assert!(
        bin.is_file(),
        "{} is missing; run scripts/setup.sh --deps-only",
        bin.display()
    );
    bin
}

fn run(dir: &Path, program: &Path, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {} failed:\n{}\n{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The index uv used: the registry of the first package in uv.lock.
fn index_of(uv_lock: &Path) -> String {
    std::fs::read_to_string(uv_lock)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.split("registry = \"")
                .nth(1)
                .map(|r| r.split('"').next().unwrap().to_string())
        })
        .expect("a registry source in uv.lock")
}

struct Locked {
    dir: PathBuf,
    index: String,
}

/// fixtures/locks-api with poetry.lock, uv.lock and pdm.lock of the same versions; made
/// once per test run, then copied by each test.
fn locked() -> &'static Locked {
    static LOCKED: OnceLock<Locked> = OnceLock::new();
    LOCKED.get_or_init(|| {
        // uv first, only to learn which index this machine uses.
        let dir = support::uv::uv_lock(&support::fixture("locks-api"));
        let index = index_of(&dir.join("uv.lock"));
        let configured = ["UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"]
            .iter()
            .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
        let pyproject = dir.join("pyproject.toml");
        let original = std::fs::read_to_string(&pyproject).unwrap();
        // Poetry reads no pip or uv settings: a configured index becomes its primary source.
        let poetry_source = if configured {
            format!(
                "\n[[tool.poetry.source]]\nname = \"index\"\nurl = \"{index}\"\npriority = \"primary\"\n"
            )
        } else {
            String::new()
        };
        std::fs::write(&pyproject, format!("{original}{poetry_source}")).unwrap();
        run(&dir, &tool("poetry"), &["lock", "--no-interaction"], &[]);

        // Poetry's versions hold uv and PDM.
        let poetry: toml::Table = std::fs::read_to_string(dir.join("poetry.lock"))
            .unwrap()
            .parse()
            .unwrap();
        let pins: Vec<(String, String)> = poetry["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let constraints = pins
            .iter()
            .map(|(n, v)| format!("\"{n}=={v}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let overrides: String = pins.iter().map(|(n, v)| format!("{n} = \"=={v}\"\n")).collect();
        let pinned = original.replace(
            "[tool.uv]\n",
            &format!("[tool.uv]\nconstraint-dependencies = [{constraints}]\n"),
        ) + &format!("\n[tool.pdm.resolution.overrides]\n{overrides}")
            + &poetry_source;
        std::fs::write(&pyproject, pinned).unwrap();
        support::uv::uv(&dir, &["lock"]);
        run(
            &dir,
            &tool("pdm"),
            &["lock", "-G", ":all"],
            &[("PDM_PYPI_URL", &index), ("PDM_CHECK_UPDATE", "false")],
        );
        support::synthetic::write_base(&dir.join("base"));
        Locked { dir, index }
    })
}

/// `imgbuild build --output oci:out --json` in `dir` with `cache` and `env`.
fn build_json(dir: &Path, cache: &str, env: &[(&str, &str)]) -> Output {
    imgbuild(
        dir,
        &[
            "build",
            "--output",
            "oci:out",
            "--cache-dir",
            cache,
            "--json",
        ],
        env,
    )
}

/// A private copy of the locked project, so tests may edit it.
fn copy_of_locked() -> PathBuf {
    let from = &locked().dir;
    let to = support::target_tempdir("locks-copy-").keep();
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        if rel.starts_with("out") || rel.starts_with("cache") {
            continue;
        }
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
    to
}

fn imgbuild(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = support::imgbuild_command(cwd, args);
    for k in INDEX_ENV {
        cmd.env_remove(k);
    }
    // No uv settings files: the project's pyproject.toml and the machine's uv.toml stay out.
    cmd.env("UV_NO_CONFIG", "1");
    cmd.envs(env.iter().copied())
        .output()
        .expect("run imgbuild")
}

/// The synthetic base (tests/support/synthetic.rs) never runs: it has no
/// libgcc_s for pydantic-core's native check, and no Python to compile bytecode.
const SYNTHETIC: &str = "allow-missing-libraries = [\"libgcc_s.so.1\"]\nbytecode = false\n";

fn write_spec(dir: &Path, lockfile: &str, extra: &str) {
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"oci:base:latest\"\napp = \"locks_api.main:app\"\nlockfile = \"{lockfile}\"\n{SYNTHETIC}{extra}"
        ),
    )
    .unwrap();
}

/// (label, digest) of every layer but the app's, which holds the lockfiles themselves.
fn package_layers(stdout: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(stdout);
    let summary: Value = serde_json::from_str(&text[..=text.rfind('}').unwrap()]).unwrap();
    support::layout::string_pairs(&summary["images"][0]["layers"], "label", "digest")
        .into_iter()
        .filter(|(label, _)| label != "app")
        .collect()
}

#[test]
fn poetry_and_pdm_locks_give_the_package_layers_of_uv_lock_with_groups_and_extras() {
    let dir = copy_of_locked();
    let index = &locked().index;
    let cache = dir.join("cache");
    let cache = cache.to_str().unwrap();
    let mut results = Vec::new();
    for lockfile in ["uv.lock", "poetry.lock", "pdm.lock"] {
        write_spec(&dir, lockfile, "extras = [\"yaml\"]\ngroups = [\"ops\"]\n");
        let o = build_json(&dir, cache, &[("UV_DEFAULT_INDEX", index)]);
        assert!(
            o.status.success(),
            "build from {lockfile} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        results.push((lockfile, package_layers(&o.stdout)));
    }
    let labels: Vec<&str> = results[0]
        .1
        .iter()
        .map(|(l, _)| l.split(' ').next().unwrap())
        .collect();
    for wanted in ["fastapi", "uvicorn", "uvloop", "pyyaml", "humanize"] {
        assert!(labels.contains(&wanted), "{wanted} missing: {labels:?}");
    }
    for unwanted in ["orjson", "iniconfig", "colorama"] {
        assert!(
            !labels.contains(&unwanted),
            "{unwanted} installed: {labels:?}"
        );
    }
    for (lockfile, layers) in &results[1..] {
        assert_eq!(
            &results[0].1, layers,
            "{lockfile} installs other wheels than uv.lock"
        );
    }
}

#[test]
fn a_tampered_hash_in_poetry_lock_fails_naming_the_file() {
    let dir = copy_of_locked();
    let lock = dir.join("poetry.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    // Every file of h11 gets a hash no index publishes for it.
    std::fs::write(&lock, support::uv::with_zeroed_hashes(&text, "h11")).unwrap();

    write_spec(&dir, "poetry.lock", "");
    let cache = dir.join("fresh-cache");
    let o = imgbuild(
        &dir,
        &[
            "build",
            "--output",
            "oci:out",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[("UV_DEFAULT_INDEX", &locked().index)],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a tampered lock built:\n{err}");
    assert!(
        err.contains("poetry.lock") && err.contains("h11") && err.contains(&"0".repeat(64)),
        "{err}"
    );
    assert!(!dir.join("out").exists(), "nothing is written: {err}");
}

#[test]
fn requirements_without_index_url_use_the_index_from_pip_conf() {
    let dir = copy_of_locked();
    let requirements = support::uv::uv_export_requirements(&dir);
    let text = std::fs::read_to_string(&requirements).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("--index-url") || l.starts_with("-i ")),
        "the export names an index:\n{text}"
    );
    write_spec(&dir, "requirements.txt", "");
    let pip_conf = dir.join("pip.conf");
    std::fs::write(
        &pip_conf,
        format!("[global]\ntimeout = 60\nindex-url = {}\n", locked().index),
    )
    .unwrap();
    let cache = dir.join("cache");
    let cache = cache.to_str().unwrap();

    // With every pip file switched off, nothing names an index, and the error says what was read.
    let o = imgbuild(
        &dir,
        &["build", "--output", "oci:none", "--cache-dir", cache],
        &[("PIP_CONFIG_FILE", "/dev/null")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "built without an index:\n{err}");
    assert!(
        err.contains("requirements.txt")
            && err.contains("UV_DEFAULT_INDEX, UV_INDEX_URL, PIP_INDEX_URL")
            && err.contains("PIP_CONFIG_FILE is /dev/null"),
        "{err}"
    );

    let o = build_json(
        &dir,
        cache,
        &[("PIP_CONFIG_FILE", pip_conf.to_str().unwrap())],
    );
    assert!(
        o.status.success(),
        "build with the index in pip.conf failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let layers = package_layers(&o.stdout);
    assert!(
        layers.iter().any(|(l, _)| l.starts_with("fastapi ")),
        "{layers:?}"
    );
}
