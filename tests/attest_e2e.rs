//! Release pipelines: the SBOM and provenance imgbuild makes from what it
//! installed, attached on push as referrers, and `diff` / `verify`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    support::imgbuild_command(cwd, args)
        .output()
        .expect("run imgbuild")
}

fn ok(o: Output, what: &str) -> String {
    support::stdout_ok(&o, what)
}

/// Where scripts/setup.sh installs spdx-tools and cyclonedx-python-lib.
fn sbom_tools() -> PathBuf {
    std::env::var_os("IMGBUILD_SBOM_TOOLS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/imgbuild-sbom-tools"))
}

/// `imgbuild verify TAG` in `project` against the plain registry at `host`.
fn verify_in(project: &Path, tag: &str, host: &str, cache: &str) -> Output {
    imgbuild(
        project,
        &[
            "verify",
            tag,
            "--insecure-registry",
            host,
            "--cache-dir",
            cache,
        ],
    )
}

/// A plain registry, the hello project, and a scratch dir with the cache path in it.
fn registry_and_project() -> (
    support::registry::Registry,
    PathBuf,
    tempfile::TempDir,
    String,
) {
    let reg = support::registry::Registry::start(support::registry::Setup::Plain);
    let project = hello_project();
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = out.path().join("cache").to_str().unwrap().to_string();
    (reg, project, out, cache)
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

fn client_for(host: &str) -> imgbuild::registry::RegistryClient {
    imgbuild::registry::RegistryClient::new(
        imgbuild::registry::TransportOptions {
            insecure_registries: vec![host.to_string()],
            ..Default::default()
        },
        imgbuild::registry::credentials::Anonymous,
    )
    .unwrap()
}

/// Pushes the project and returns the digest (the last stdout line) and stderr.
fn push(project: &Path, tag: &str, host: &str, cache: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "push",
        "--tag",
        tag,
        "--insecure-registry",
        host,
        "--cache-dir",
        cache,
    ];
    args.extend(extra);
    let o = imgbuild(project, &args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = ok(o, "push");
    let pinned = out.lines().last().expect("a pushed reference").to_string();
    let digest = pinned.rsplit_once('@').expect("REF@digest").1.to_string();
    (digest, stderr)
}

/// Another tool's referrer (a cosign-style signature), and the fallback index
/// at `sha256-<hex>` listing it, as that tool would leave them.
fn seed_other_referrer(host: &str, repo: &str, subject: &str, subject_size: u64) -> String {
    use imgbuild::digest::Digest;
    let client = client_for(host);
    let r = imgbuild::reference::Reference::parse(&format!("{host}/{repo}")).unwrap();
    for blob in [&b"{}"[..], b"signature"] {
        client
            .push_blob(
                &r,
                &Digest::of_bytes(blob),
                blob.len() as u64,
                &|| Ok(Box::new(std::io::Cursor::new(blob.to_vec()))),
                None,
            )
            .unwrap();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of_bytes(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature", "digest": Digest::of_bytes(b"signature").to_string(), "size": 9}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_size},
    }))
    .unwrap();
    let md = Digest::of_bytes(&manifest);
    client
        .put_manifest(
            &r,
            &md.to_string(),
            &manifest,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": manifest.len(),
            "artifactType": "application/vnd.example.signature",
            "annotations": {"example.com/tool": "other"},
        }],
    }))
    .unwrap();
    let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
    client
        .put_manifest(&r, &tag, &index, "application/vnd.oci.image.index.v1+json")
        .unwrap();
    md.to_string()
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    let _ = ok(o.clone(), &format!("skopeo inspect --raw {reference}"));
    o.stdout
}

#[test]
fn push_attaches_sbom_and_provenance_through_the_referrers_tag() {
    let (reg, project, out, cache) = registry_and_project();
    let tag = format!("{}/hello:1", reg.host);

    let (digest, stderr) = push(
        &project,
        &tag,
        &reg.host,
        &cache,
        &["--sbom=false", "--provenance=false"],
    );
    assert!(!stderr.contains("attached"), "{stderr}");
    let manifest_size = skopeo_raw(&format!("{}/hello@{digest}", reg.host)).len() as u64;
    let other = seed_other_referrer(&reg.host, "hello", &digest, manifest_size);

    let (again, stderr) = push(&project, &tag, &reg.host, &cache, &[]);
    assert_eq!(again, digest);
    let fallback = format!(
        "{}/hello:sha256-{}",
        reg.host,
        digest.trim_start_matches("sha256:")
    );
    assert!(stderr.contains("attached SBOM and provenance"), "{stderr}");
    let index_bytes = skopeo_raw(&fallback);
    let index: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.example.signature",
            "application/spdx+json",
            "application/vnd.in-toto+json"
        ],
        "{index:#}"
    );
    assert_eq!(
        entries[0]["digest"],
        other.as_str(),
        "the other tool's entry is kept"
    );
    assert_eq!(entries[0]["annotations"]["example.com/tool"], "other");
    assert_eq!(
        entries[2]["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );

    // A second push of the same image leaves the index as it was.
    let (_, stderr) = push(&project, &tag, &reg.host, &cache, &[]);
    assert!(stderr.contains("unchanged"), "{stderr}");
    assert!(
        skopeo_raw(&fallback) == index_bytes,
        "the referrers index changed on a re-push"
    );

    // skopeo reads the artifacts: the manifest names the image as subject, and
    // copying it out gives the SBOM that describes that image.
    let sbom_ref = format!(
        "{}/hello@{}",
        reg.host,
        entries[1]["digest"].as_str().unwrap()
    );
    let m: serde_json::Value = serde_json::from_slice(&skopeo_raw(&sbom_ref)).unwrap();
    assert_eq!(m["subject"]["digest"], digest.as_str());
    assert_eq!(m["artifactType"], "application/spdx+json");
    let copy = out.path().join("sbom-artifact");
    let o = Command::new("skopeo")
        .args(["copy", "--insecure-policy", "--src-tls-verify=false"])
        .arg(format!("docker://{sbom_ref}"))
        .arg(format!("oci:{}", copy.display()))
        .output()
        .unwrap();
    ok(o, "skopeo copy of the SBOM artifact");
    let layer = m["layers"][0]["digest"].as_str().unwrap().replace(':', "/");
    let spdx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("blobs").join(layer)).unwrap()).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert!(spdx["name"].as_str().unwrap().ends_with(&digest));
}

#[test]
fn with_a_referrers_api_no_fallback_tag_is_written() {
    let fake = support::fake_registry::FakeRegistry::start();
    fake.enable_referrers_api();
    let project = hello_project();
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = out.path().join("cache").to_str().unwrap().to_string();
    let host = fake.host();
    let (digest, stderr) = push(&project, &format!("{host}/hello:1"), &host, &cache, &[]);
    assert!(stderr.contains("(referrers API)"), "{stderr}");
    let fallback = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    assert!(
        fake.manifest("hello", &fallback).is_none(),
        "the fallback tag was written although the registry has the referrers API"
    );
    assert_eq!(fake.count("GET", "/referrers/"), 1);
    // Both artifacts go up side by side, so in either order.
    let mut referrers: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter(|m| m["subject"]["digest"] == digest.as_str())
        .map(|m| m["artifactType"].as_str().unwrap().to_string())
        .collect();
    referrers.sort();
    assert_eq!(
        referrers,
        ["application/spdx+json", "application/vnd.in-toto+json"]
    );

    // Pushed again unchanged: the API lists both, so one GET and nothing written.
    let requests_before = fake.requests().len();
    let (again, stderr) = push(&project, &format!("{host}/hello:1"), &host, &cache, &[]);
    assert_eq!(again, digest);
    assert!(stderr.contains("(referrers API)"), "{stderr}");
    let attach_writes = fake.requests()[requests_before..]
        .iter()
        .filter(|r| r.method == "PUT" || r.method == "POST" || r.method == "PATCH")
        .count();
    assert_eq!(attach_writes, 0, "an unchanged push wrote to the registry");
    assert_eq!(fake.count("GET", "/referrers/"), 2);
}

/// Locks the project again with an earlier cut-off, so some packages go back a version.
fn relock_older(project: &Path) {
    support::uv::uv(
        project,
        &["lock", "--exclude-newer", "2025-01-15T00:00:00Z"],
    );
}

/// `name version` pairs of each package the two locks pin differently.
fn changed_versions(old: &Path, new: &Path) -> Vec<(String, String, String)> {
    let (a, b) = (uv_export(old), uv_export(new));
    a.iter()
        .filter_map(|(n, (va, _))| {
            let (vb, _) = b.get(n)?;
            (va != vb).then(|| (n.clone(), va.clone(), vb.clone()))
        })
        .collect()
}

#[test]
fn verify_passes_untouched_and_names_an_edited_file_or_a_changed_package() {
    let (reg, project, _out, cache) = registry_and_project();
    let tag = format!("{}/hello:verify", reg.host);
    push(&project, &tag, &reg.host, &cache, &[]);
    let verify = |project: &Path| verify_in(project, &tag, &reg.host, &cache);

    let o = verify(&project);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "verify of an untouched checkout failed:\n{stderr}"
    );
    assert!(stderr.contains("verified"), "{stderr}");

    // A one-line edit: exit 1, and the report names the file.
    let main = project.join("hello_api/main.py");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{text}# one more line\n")).unwrap();
    let o = verify(&project);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("app/hello_api/main.py"),
        "the edited file is not named:\n{stdout}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("error: "),
        "{stderr}"
    );
    std::fs::write(&main, text).unwrap();

    // A lock change: the report names each package with both versions.
    let before = project.with_extension("before");
    std::fs::create_dir_all(&before).unwrap();
    std::fs::copy(project.join("uv.lock"), before.join("uv.lock")).unwrap();
    std::fs::copy(
        project.join("pyproject.toml"),
        before.join("pyproject.toml"),
    )
    .unwrap();
    relock_older(&project);
    let changed = changed_versions(&before, &project);
    assert!(!changed.is_empty(), "the older lock changed no version");
    let o = verify(&project);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    for (name, old, new) in &changed {
        assert!(
            stdout.contains(&format!("~ {name} {old} -> {new}")),
            "{name} {old} -> {new} is not named:\n{stdout}"
        );
    }
}

#[test]
fn verify_checks_each_platform_of_a_multi_platform_index() {
    let reg = support::registry::Registry::start(support::registry::Setup::Plain);
    let project = hello_project();
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"hello_api.main:app\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n",
            support::base::multiarch_base().display()
        ),
    )
    .unwrap();
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = out.path().join("cache").to_str().unwrap().to_string();
    let tag = format!("{}/hello:multi", reg.host);
    let (digest, _) = push(&project, &tag, &reg.host, &cache, &[]);
    let o = verify_in(&project, &tag, &reg.host, &cache);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let stdout = ok(o, "verify of a multi-platform index");
    assert_eq!(stdout.trim_end().lines().last(), Some(digest.as_str()));
    assert_eq!(stderr.matches("verified").count(), 2, "{stderr}");
}

#[test]
fn diff_of_two_locks_names_changed_packages_and_config_fields() {
    let new = hello_project();
    let old = hello_project();
    relock_older(&old);
    let changed = changed_versions(&old, &new);
    assert!(!changed.is_empty(), "the older lock changed no version");
    let spec = std::fs::read_to_string(new.join("imgbuild.toml")).unwrap();
    std::fs::write(
        new.join("imgbuild.toml"),
        format!("{spec}[env]\nLOG_LEVEL = \"debug\"\n"),
    )
    .unwrap();

    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = out.path().join("cache").to_str().unwrap().to_string();
    let layout = |name: &str| format!("oci:{}:latest", out.path().join(name).display());
    ok(
        imgbuild(
            &old,
            &["build", "-o", &layout("old"), "--cache-dir", &cache],
        ),
        "build old",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .current_dir(&new)
        .args(["build", "-o", &layout("new"), "--cache-dir", &cache])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    ok(o, "build new");

    let text = ok(
        imgbuild(&new, &["diff", &layout("old"), &layout("new")]),
        "diff",
    );
    for (name, a, b) in &changed {
        assert!(
            text.contains(&format!("~ {name} {a} -> {b}")),
            "{name}:\n{text}"
        );
    }
    assert!(
        text.contains("created: \"1970-01-01T00:00:00Z\" -> \"2023-11-14T22:13:20Z\""),
        "{text}"
    );
    assert!(
        text.contains("env.LOG_LEVEL: (unset) -> \"debug\""),
        "{text}"
    );

    let json = ok(
        imgbuild(&new, &["diff", &layout("old"), &layout("new"), "--json"]),
        "diff --json",
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("diff --json parses");
    let pkgs = v["platforms"][0]["packages"].as_array().unwrap();
    for (name, a, b) in &changed {
        assert!(
            pkgs.iter().any(|p| p["name"] == name.as_str()
                && p["a"] == a.as_str()
                && p["b"] == b.as_str()),
            "{name} missing from {pkgs:?}"
        );
    }
    let fields: Vec<&str> = v["platforms"][0]["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"created") && fields.contains(&"env.LOG_LEVEL"),
        "{fields:?}"
    );
}

#[test]
fn bad_references_fail_with_one_line() {
    let reg = support::registry::Registry::start(support::registry::Setup::Plain);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let unreadable = dir.path().join("layout");
    std::fs::create_dir(&unreadable).unwrap();
    std::fs::write(unreadable.join("index.json"), "not json").unwrap();
    let missing_tag = format!("{}/nothing:here", reg.host);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "diff".into(),
                "does-not-exist.tar".into(),
                "oci:also-missing".into(),
            ],
            "does-not-exist.tar",
        ),
        (
            vec![
                "diff".into(),
                format!("oci:{}", unreadable.display()),
                ".".into(),
            ],
            "index.json",
        ),
        (
            vec![
                "verify".into(),
                missing_tag.clone(),
                "--insecure-registry".into(),
                reg.host.clone(),
            ],
            "nothing:here",
        ),
    ];
    for (args, names) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = imgbuild(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line:\n{stderr}"
        );
        assert!(
            stderr.starts_with("error: ") && stderr.contains(names),
            "{args:?}: {stderr}"
        );
        assert!(
            o.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
