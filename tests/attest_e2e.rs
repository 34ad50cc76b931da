//! Release pipelines: the SBOM and provenance imgbuild makes from what it
//! installed, attached on push as referrers, and `diff` / `verify`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .current_dir(cwd)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run imgbuild")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Where scripts/setup.sh installs spdx-tools and cyclonedx-python-lib.
fn sbom_tools() -> PathBuf {
    std::env::var_os("IMGBUILD_SBOM_TOOLS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/imgbuild-sbom-tools"))
}

/// A locked copy of fixtures/hello-api with an imgbuild.toml on the Debian base.
fn hello_project() -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"{}\"\napp = \"hello_api.main:app\"\n",
            support::base::base_image_ref("amd64")
        ),
    )
    .unwrap();
    project
}

/// `name==version` → the sha256 hashes `uv export --no-dev` lists for it.
fn uv_export(project: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    let out = Command::new("uv")
        .args([
            "export",
            "--no-dev",
            "--frozen",
            "--no-emit-project",
            "--format",
            "requirements-txt",
        ])
        .current_dir(project)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .expect("run uv export");
    let text = ok(out, "uv export");
    let mut pkgs: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let l = line.trim().trim_end_matches('\\').trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        if let Some(h) = l.strip_prefix("--hash=sha256:") {
            let name = current.as_ref().expect("a hash after a requirement");
            if let Some((_, hashes)) = pkgs.get_mut(name) {
                hashes.push(h.to_string());
            }
            continue;
        }
        let req = l.split(';').next().unwrap().trim();
        let (name, version) = req.split_once("==").expect("pinned requirement");
        let name = name.to_ascii_lowercase().replace(['_', '.'], "-");
        pkgs.insert(name.clone(), (version.trim().to_string(), Vec::new()));
        current = Some(name);
    }
    pkgs
}

#[test]
fn sbom_lists_exactly_the_locked_packages_validates_and_is_reproducible() {
    let project = hello_project();
    // Outputs outside the source tree, so both builds see the same tree.
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let at = |name: &str| out.path().join(name).to_str().unwrap().to_string();
    let cache = at("cache");
    let layout = format!("oci:{}", at("layout"));
    ok(
        imgbuild(
            &project,
            &[
                "build",
                "-o",
                &layout,
                "--sbom",
                &at("a.spdx.json"),
                "--cache-dir",
                &cache,
            ],
        ),
        "build --sbom",
    );
    ok(
        imgbuild(
            &project,
            &["sbom", "-o", &at("b.spdx.json"), "--cache-dir", &cache],
        ),
        "sbom",
    );
    let a = std::fs::read(at("a.spdx.json")).unwrap();
    assert!(
        a == std::fs::read(at("b.spdx.json")).unwrap(),
        "two builds must give the same SBOM bytes"
    );

    let check = Command::new(sbom_tools().join("bin/pyspdxtools"))
        .arg("-i")
        .arg(at("a.spdx.json"))
        .output()
        .expect("pyspdxtools: run scripts/setup.sh --deps-only");
    ok(check, "pyspdxtools -i");

    let doc: serde_json::Value = serde_json::from_slice(&a).unwrap();
    let mut pypi = BTreeMap::new();
    for p in doc["packages"].as_array().unwrap() {
        let purl = p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap_or("");
        if purl.starts_with("pkg:pypi/") {
            pypi.insert(
                p["name"].as_str().unwrap().to_string(),
                (
                    p["versionInfo"].as_str().unwrap().to_string(),
                    p["checksums"][0]["checksumValue"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ),
            );
        }
    }
    let exported = uv_export(&project);
    assert_eq!(
        pypi.keys().collect::<Vec<_>>(),
        exported.keys().collect::<Vec<_>>(),
        "the SBOM's pypi packages are those uv export lists"
    );
    for (name, (version, sha)) in &pypi {
        let (v, hashes) = &exported[name];
        assert_eq!(version, v, "{name}'s version");
        assert!(
            hashes.contains(sha),
            "{name}'s wheel sha256 {sha} is not in the lock's hashes {hashes:?}"
        );
    }

    ok(
        imgbuild(
            &project,
            &[
                "sbom",
                "-o",
                &at("c.cdx.json"),
                "--sbom-format",
                "cyclonedx",
                "--cache-dir",
                &cache,
            ],
        ),
        "sbom --sbom-format cyclonedx",
    );
    let script = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if err:
    sys.exit(f"invalid CycloneDX: {err}")
"#;
    let check = Command::new(sbom_tools().join("bin/python"))
        .args(["-c", script])
        .arg(at("c.cdx.json"))
        .output()
        .expect("cyclonedx-python-lib: run scripts/setup.sh --deps-only");
    ok(check, "CycloneDX schema validation");
    let cdx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(at("c.cdx.json")).unwrap()).unwrap();
    let libs = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "library")
        .count();
    assert_eq!(libs, exported.len());
}
