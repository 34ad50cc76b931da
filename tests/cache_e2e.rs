//! The registry as the layer cache (issue 11), end to end on the real distribution
//! registry (docker-registry 2.8 on 127.0.0.1): a fresh runner with an empty cache
//! reuses the package layers an image already pushed, by the cache key each layer's
//! descriptor carries, without downloading their wheels; it trusts nothing it cannot
//! check (a blob gone, another key, a config that lies about a diff_id); a blob that
//! vanishes between planning and push makes the push build once more without the
//! cache; and the digest is the same whether a layer came from the registry, the
//! local cache or a fresh build.

mod support;

use imgbuild::digest::Digest;
use imgbuild::reference::Reference;
use imgbuild::registry::client::MEDIA_TYPE_OCI_MANIFEST;
use imgbuild::registry::{credentials::Anonymous, RegistryClient, TransportOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::fake_registry::{FakeRegistry, Fault};
use support::registry::{Registry, Setup};
use support::Run;

const KEY: &str = "dev.imgbuild.layer.key";

fn imgbuild(cwd: &Path, args: &[&str]) -> Run {
    let out = support::without_credentials(cwd, args)
        .env("IMGBUILD_RETRY_BASE_MS", "50")
        .output()
        .expect("cannot run imgbuild");
    Run::from(out)
}

/// A new, empty cache directory: a fresh CI runner.
fn empty_cache() -> PathBuf {
    support::target_tempdir("cache-e2e-").keep()
}

/// The wheels a run downloaded, by file name (one `downloaded NAME (SIZE)` line each).
fn downloads(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("downloaded "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

/// What `push --json` reported: the digest, each layer's (label, outcome), and
/// the wheels downloaded and layers reused it counted; and the run's stderr.
struct Pushed {
    digest: String,
    layers: Vec<(String, String)>,
    wheels_downloaded: u64,
    layers_from_registry_cache: u64,
    base_layers_downloaded: u64,
    downloads: Vec<String>,
    stderr: String,
}

fn push(project: &Path, tag: &str, cache: &Path, extra: &[&str]) -> Pushed {
    let cache = cache.display().to_string();
    let mut args = vec!["push", "-v", "--json", "--tag", tag, "--cache-dir", &cache];
    args.extend(extra);
    let run = imgbuild(project, &args).must_succeed("push");
    let end = run.stdout.rfind('}').expect("--json printed a summary");
    let summary: Value = serde_json::from_str(&run.stdout[..=end]).unwrap();
    let layers = summary["images"][0]["layers"]
        .as_array()
        .expect("summary has layers")
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap().to_string(),
                l["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |key: &str| {
        summary["images"][0][key]
            .as_u64()
            .unwrap_or_else(|| panic!("the summary counts {key}: {summary}"))
    };
    let pushed = Pushed {
        digest: summary["digest"].as_str().unwrap().to_string(),
        layers,
        wheels_downloaded: count("wheels_downloaded"),
        layers_from_registry_cache: count("layers_from_registry_cache"),
        base_layers_downloaded: count("base_layers_downloaded"),
        downloads: downloads(&run),
        stderr: run.stderr,
    };
    assert_eq!(
        pushed.wheels_downloaded,
        pushed.downloads.len() as u64,
        "--json and the `downloaded` lines agree: {}",
        pushed.stderr
    );
    pushed
}

/// `build --output oci:DIR` with `extra`; returns the run and the digest it printed.
fn build(project: &Path, out: &Path, cache: &Path, extra: &[&str]) -> (Run, String) {
    let (cache, dest) = (
        cache.display().to_string(),
        format!("oci:{}", out.display()),
    );
    let mut args = vec!["build", "-v", "--output", &dest, "--cache-dir", &cache];
    args.extend(extra);
    let run = imgbuild(project, &args).must_succeed("build");
    let digest = run.stdout.lines().last().unwrap_or_default().to_string();
    (run, digest)
}

/// The first push of a test: the project as `first:v1`, from an empty cache.
fn push_first(reg: &Registry, project: &Path) -> Pushed {
    push(
        project,
        &format!("{}/first:v1", reg.host),
        &empty_cache(),
        &[],
    )
}

/// The `--cache-from` argument for the image `name` on `reg`.
fn cache_from(reg: &Registry, name: &str) -> String {
    format!("--cache-from={}/{name}", reg.host)
}

/// A fresh runner's build (empty cache) into `out`, reusing layers from `name` on `reg`.
fn build_from(reg: &Registry, project: &Path, out: &Path, name: &str) -> (Run, String) {
    build(project, out, &empty_cache(), &[&cache_from(reg, name)])
}

/// The layers that carry a cache key: the packages' and the stdlib's pycs (slow to compile).
fn is_keyed(label: &str) -> bool {
    !matches!(label, "base" | "venv" | "app")
}

/// A registry holding the Debian base as `python:3.11`, and a locked hello-api on it.
fn registry_and_project() -> (Registry, PathBuf) {
    let reg = Registry::start(Setup::Plain);
    reg.copy_in(&support::base::base_image_ref("amd64"), "python:3.11");
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"{}/python:3.11\"\napp = \"hello_api.main:app\"\n",
            reg.host
        ),
    )
    .unwrap();
    (reg, project)
}

fn client() -> RegistryClient {
    RegistryClient::new(TransportOptions::default(), Anonymous).unwrap()
}

fn reference(reg: &Registry, name: &str) -> Reference {
    Reference::parse(&format!("{}/{name}", reg.host)).unwrap()
}

/// The manifest and config of `name` on the registry.
fn image(reg: &Registry, name: &str) -> (Value, Value) {
    let c = client();
    let r = reference(reg, name);
    let (bytes, ..) = c.get_manifest(&r).unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut config = Vec::new();
    std::io::Read::read_to_end(&mut c.get_blob(&r, &digest, None).unwrap(), &mut config).unwrap();
    (manifest, serde_json::from_slice(&config).unwrap())
}

/// Puts `config` and then `manifest` (naming it) as `name`; the layers are there already.
fn put_image(reg: &Registry, name: &str, mut manifest: Value, config: &Value) {
    let c = client();
    let r = reference(reg, name);
    let config = serde_json::to_vec(config).unwrap();
    let digest = Digest::of_bytes(&config);
    let open =
        || Ok(Box::new(std::io::Cursor::new(config.clone())) as Box<dyn std::io::Read + Send>);
    c.push_blob(&r, &digest, config.len() as u64, &open, None)
        .unwrap();
    manifest["config"]["digest"] = digest.to_string().into();
    manifest["config"]["size"] = config.len().into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    c.put_manifest(
        &r,
        r.tag.as_deref().unwrap(),
        &bytes,
        MEDIA_TYPE_OCI_MANIFEST,
    )
    .unwrap();
}

/// The position of `package`'s layer among the image's layers.
fn package_layer(pushed: &Pushed, package: &str) -> usize {
    let prefix = format!("{package} ");
    pushed
        .layers
        .iter()
        .position(|(l, _)| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no layer for {package}: {:?}", pushed.layers))
}

#[test]
fn a_fresh_runner_reuses_layers_from_another_repository_and_downloads_no_wheel() {
    let (reg, project) = registry_and_project();
    let built_cache = empty_cache();
    let first = push(
        &project,
        &format!("{}/first:v1", reg.host),
        &built_cache,
        &[],
    );
    assert!(
        first.downloads.len() > 3,
        "a cold build downloads every wheel: {:?}",
        first.downloads
    );
    let (manifest, _) = image(&reg, "first:v1");
    let keyed: Vec<&Value> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["annotations"][KEY].is_string())
        .collect();
    let packages = first.layers.iter().filter(|(l, _)| is_keyed(l)).count();
    assert_eq!(
        keyed.len(),
        packages,
        "every package layer (and the stdlib's pycs) carries its key"
    );

    // A fresh runner, another repository: every package layer comes from `first`.
    let from = cache_from(&reg, "first:v1");
    let second = push(
        &project,
        &format!("{}/second:v1", reg.host),
        &empty_cache(),
        &[&from],
    );
    assert_eq!(second.downloads, Vec::<String>::new(), "{}", second.stderr);
    assert_eq!(
        (
            first.layers_from_registry_cache,
            second.layers_from_registry_cache
        ),
        (0, packages as u64)
    );
    for (label, outcome) in second.layers.iter().filter(|(l, _)| is_keyed(l)) {
        assert_eq!(outcome, "mounted", "{label}: {:?}", second.layers);
    }
    assert_eq!(
        second.digest, first.digest,
        "registry cache and fresh build differ"
    );

    // The local cache of the first build: the same digest again.
    let third = push(
        &project,
        &format!("{}/third:v1", reg.host),
        &built_cache,
        &[],
    );
    assert_eq!(third.downloads, Vec::<String>::new());
    assert_eq!(
        third.digest, first.digest,
        "local cache and fresh build differ"
    );

    // A local output needs the bytes: pulled, verified, written.
    let out = support::target_tempdir("cache-e2e-out-").keep().join("oci");
    let (run, digest) = build(&project, &out, &empty_cache(), &[&from]);
    assert_eq!(downloads(&run), Vec::<String>::new(), "{}", run.stderr);
    assert_eq!(digest, first.digest, "{}", run.stderr);
    for l in keyed {
        let d: Digest = l["digest"].as_str().unwrap().parse().unwrap();
        let blob = out.join("blobs/sha256").join(d.hex());
        let bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
        assert_eq!(Digest::of_bytes(&bytes), d);
    }
}

/// Issue 26: a fresh runner pushing a one-line change over the previous image
/// reads the base facts (and, with bytecode on, the compile root) pushed beside
/// it and downloads no base layer and no wheel; the digest is the one a build
/// that read the base itself gives.
fn a_fresh_runner_reads_no_base_layer(bytecode: bool) {
    let (reg, project) = registry_and_project();
    if !bytecode {
        let spec = project.join("imgbuild.toml");
        let text = std::fs::read_to_string(&spec).unwrap();
        std::fs::write(&spec, format!("{text}bytecode = false\n")).unwrap();
    }
    let tag = format!("{}/svc:v1", reg.host);
    let first = push(&project, &tag, &empty_cache(), &[]);
    assert!(
        first.base_layers_downloaded > 0,
        "a cold runner reads the base: {}",
        first.stderr
    );
    assert!(
        first.stderr.contains("pushed base facts"),
        "{}",
        first.stderr
    );
    assert_eq!(
        first.stderr.contains("pushed compile root"),
        bytecode,
        "{}",
        first.stderr
    );

    let main = project.join("hello_api/main.py");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{source}# one more line\n")).unwrap();
    let second = push(&project, &tag, &empty_cache(), &[]);
    assert_eq!(
        (second.base_layers_downloaded, second.wheels_downloaded),
        (0, 0),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("base facts of"), "{}", second.stderr);
    assert_eq!(
        second.stderr.contains("compile root of"),
        bytecode,
        "{}",
        second.stderr
    );
    assert_ne!(second.digest, first.digest, "the app changed");

    // The same change built by a runner that reads the base itself.
    let out = support::target_tempdir("cache-e2e-out-").keep().join("oci");
    let (run, digest) = build(&project, &out, &empty_cache(), &[]);
    assert!(!run.stderr.contains("base facts of"), "{}", run.stderr);
    assert_eq!(digest, second.digest, "{}", run.stderr);
}

#[test]
fn a_fresh_runner_reads_the_base_facts_and_no_base_layer_for_the_same_digest() {
    a_fresh_runner_reads_no_base_layer(false);
}

#[test]
fn a_fresh_runner_compiles_in_the_compile_root_and_reads_no_base_layer_for_the_same_digest() {
    a_fresh_runner_reads_no_base_layer(true);
}

#[test]
fn a_layer_whose_blob_is_gone_is_built_from_its_wheel() {
    let (reg, project) = registry_and_project();
    let first = push_first(&reg, &project);
    let (manifest, _) = image(&reg, "first:v1");
    let i = package_layer(&first, "fastapi");
    let digest = manifest["layers"][i]["digest"].as_str().unwrap();
    let url = format!("http://{}/v2/first/blobs/{digest}", reg.host);
    let deleted = support::podman::http("DELETE", &url, None).unwrap();
    assert_eq!(deleted.status, 202, "{}", deleted.body);

    let second = push(
        &project,
        &format!("{}/second:v1", reg.host),
        &empty_cache(),
        &[&cache_from(&reg, "first:v1")],
    );
    assert_eq!(second.downloads.len(), 1, "{}", second.stderr);
    assert!(
        second.downloads[0].starts_with("fastapi-"),
        "{:?}",
        second.downloads
    );
    let fastapi: Vec<_> = second
        .layers
        .iter()
        .filter(|(l, _)| l.starts_with("fastapi "))
        .collect();
    assert_eq!(fastapi.len(), 1);
    assert_eq!(fastapi[0].1, "uploaded", "{:?}", second.layers);
    assert_eq!(second.digest, first.digest);
}

/// Copies the manifest and config of `name` on `reg`, and its keyed layers (the
/// ones a cache offers), to `fake` as `repo:v1`; returns the manifest.
fn copy_to_fake(reg: &Registry, name: &str, fake: &FakeRegistry, repo: &str) -> Value {
    use std::io::Read;
    let (c, r) = (client(), reference(reg, name));
    let (bytes, ..) = c.get_manifest(&r).unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let keyed = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["annotations"][KEY].is_string());
    for d in keyed.chain([&manifest["config"]]) {
        let d: Digest = d["digest"].as_str().unwrap().parse().unwrap();
        let mut blob = Vec::new();
        c.get_blob(&r, &d, None)
            .unwrap()
            .read_to_end(&mut blob)
            .unwrap();
        fake.put_blob(repo, &blob);
    }
    let to = Reference::parse(&format!("{}/{repo}:v1", fake.host())).unwrap();
    c.put_manifest(&to, "v1", &bytes, MEDIA_TYPE_OCI_MANIFEST)
        .unwrap();
    manifest
}

#[test]
fn a_reused_layer_that_vanishes_before_the_push_is_rebuilt_from_its_wheel_once() {
    let (reg, project) = registry_and_project();
    let first = push_first(&reg, &project);
    // The image as a cache on another registry (the scripted fake): fastapi's
    // blob is there when the build checks it (HEAD), and deleted just before
    // the push first reads it (GET), as a registry's GC would.
    let fake = FakeRegistry::start();
    let manifest = copy_to_fake(&reg, "first:v1", &fake, "cache");
    let i = package_layer(&first, "fastapi");
    let blob = format!(
        "/v2/cache/blobs/{}",
        manifest["layers"][i]["digest"].as_str().unwrap()
    );
    fake.fault("GET", &blob, "", 1, Fault::DeleteBlob);

    let cache = format!("{}/cache:v1", fake.host());
    let second = push(
        &project,
        &format!("{}/second:v1", reg.host),
        &empty_cache(),
        &[&format!("--cache-from={cache}")],
    );
    let warnings: Vec<&str> = second
        .stderr
        .lines()
        .filter(|l| l.contains("vanished"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one retry, one warning: {}",
        second.stderr
    );
    assert!(
        warnings[0].starts_with("warning: layer ")
            && warnings[0].contains(&format!(
                " of package fastapi {}",
                first.layers[i].0.split(' ').nth(1).unwrap()
            ))
            && warnings[0].contains(&format!(
                "vanished from {cache} between planning and push; rebuilt from its wheel"
            )),
        "{}",
        warnings[0]
    );
    // The plan saw the blob; the push found it gone, by GET and then HEAD.
    let seen: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == blob)
        .map(|r| r.method)
        .collect();
    assert_eq!(seen, ["HEAD", "GET", "HEAD"], "{}", second.stderr);
    // The second build read no registry cache: every wheel downloaded, and
    // the digest the first plan had. The layers the first push copied before
    // it failed were there already; fastapi's was not.
    assert_eq!(second.layers_from_registry_cache, 0);
    assert_eq!(second.wheels_downloaded, first.wheels_downloaded);
    assert_eq!(second.layers[i].1, "uploaded", "{:?}", second.layers);
    assert_eq!(second.digest, first.digest, "{}", second.stderr);
    assert!(
        !second.stderr.contains("as planned"),
        "the rebuild has the digest the first plan had: {}",
        second.stderr
    );
}

#[test]
fn another_key_or_a_config_that_lies_is_not_trusted() {
    let (reg, project) = registry_and_project();
    let first = push_first(&reg, &project);
    let (manifest, config) = image(&reg, "first:v1");

    // Another key on fastapi's layer: that layer is built from its wheel.
    let i = package_layer(&first, "fastapi");
    let mut other = manifest.clone();
    other["layers"][i]["annotations"][KEY] = Digest::of_bytes(b"another key").to_string().into();
    put_image(&reg, "first:otherkey", other, &config);
    let out = support::target_tempdir("cache-e2e-out-").keep();
    let (run, digest) = build_from(&reg, &project, &out.join("a"), "first:otherkey");
    let got = downloads(&run);
    assert_eq!(got.len(), 1, "{}", run.stderr);
    assert!(got[0].starts_with("fastapi-"), "{got:?}");
    assert_eq!(digest, first.digest);

    // A config whose diff_id for starlette's layer is wrong: found when the blob is
    // pulled, and the layer is built from its wheel.
    let j = package_layer(&first, "starlette");
    let mut lying = config.clone();
    lying["rootfs"]["diff_ids"][j] = Digest::of_bytes(b"not this layer").to_string().into();
    put_image(&reg, "first:tampered", manifest.clone(), &lying);
    let (run, digest) = build_from(&reg, &project, &out.join("b"), "first:tampered");
    let got = downloads(&run);
    assert_eq!(got.len(), 1, "{}", run.stderr);
    assert!(got[0].starts_with("starlette-"), "{got:?}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("diff_id")),
        "{}",
        run.stderr
    );
    assert_eq!(digest, first.digest);

    // A config with fewer diff_ids than the manifest has layers: the image is ignored.
    let mut short = config.clone();
    short["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    put_image(&reg, "first:short", manifest, &short);
    let (run, digest) = build_from(&reg, &project, &out.join("c"), "first:short");
    assert_eq!(
        downloads(&run).len(),
        first.downloads.len(),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with("warning:")
            && l.contains("first:short")
            && l.contains("diff_ids")),
        "{}",
        run.stderr
    );
    assert_eq!(digest, first.digest);

    // A cache that does not exist is no error.
    let (run, _) = build_from(&reg, &project, &out.join("d"), "nothing:here");
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("nothing:here")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_lock_bump_from_an_empty_cache_downloads_exactly_that_wheel() {
    let (reg, project) = registry_and_project();
    let tag = format!("{}/app:main", reg.host);
    push(&project, &tag, &empty_cache(), &[]);

    // idna one release back: uv keeps every other locked version.
    let lock = std::fs::read_to_string(project.join("uv.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l == "name = \"idna\""))
        .and_then(|p| p.split("version = \"").nth(1))
        .and_then(|v| v.split('"').next())
        .expect("hello-api locks idna")
        .to_string();
    let mut pyproject = std::fs::read_to_string(project.join("pyproject.toml")).unwrap();
    pyproject.push_str(&format!("constraint-dependencies = [\"idna<{version}\"]\n"));
    std::fs::write(project.join("pyproject.toml"), pyproject).unwrap();
    support::uv::uv(
        &project,
        &["lock", "--exclude-newer", support::uv::EXCLUDE_NEWER],
    );

    let bumped = push(&project, &tag, &empty_cache(), &[]);
    assert_eq!(bumped.downloads.len(), 1, "{}", bumped.stderr);
    assert!(
        bumped.downloads[0].starts_with("idna-"),
        "{:?}",
        bumped.downloads
    );
    let uploaded: Vec<&str> = bumped
        .layers
        .iter()
        .filter(|(_, o)| o == "uploaded")
        .map(|(l, _)| l.as_str())
        .collect();
    // The app layer holds pyproject.toml and uv.lock, which changed too.
    assert_eq!(uploaded.len(), 2, "{:?}", bumped.layers);
    assert!(
        uploaded[0].starts_with("idna ") && uploaded[1] == "app",
        "{:?}",
        bumped.layers
    );
}
