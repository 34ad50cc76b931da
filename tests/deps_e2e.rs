//! Locked Python dependencies, chosen for the image's platform and installed
//! without Python: the image runs them, arm64 builds on amd64, layers are
//! shared between apps, and bad locks fail cleanly without corrupting the cache.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::podman;

fn imgbuild(cwd: &Path, args: &[&str]) -> Output {
    support::imgbuild_command(cwd, args)
        .output()
        .expect("run imgbuild")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a build that must succeed and returns its --json summary.
fn build_json(cwd: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = imgbuild(cwd, &all);
    assert!(
        o.status.success(),
        "imgbuild {args:?} failed:\n{}",
        stderr(&o)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let json_end = text.rfind('}').expect("a JSON summary");
    serde_json::from_str(&text[..=json_end]).expect("valid JSON summary")
}

/// The digest of the layer labelled `label` ("fastapi 0.1.0"-style labels start with the name).
fn layer_digest(summary: &Value, image: usize, package: &str) -> String {
    summary["images"][image]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"].as_str().unwrap().split(' ').next() == Some(package))
        .unwrap_or_else(|| panic!("no layer for {package} in {summary:#}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn write_spec(dir: &Path, base: &str, app: &str) {
    let allow = if base == "oci:base:latest" {
        SYNTHETIC
    } else {
        ""
    };
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!("base = \"{base}\"\napp = \"{app}\"\n{allow}"),
    )
    .unwrap();
}

/// The synthetic base (tests/support/synthetic.rs) has glibc's files but no
/// libgcc_s, which pydantic-core and watchfiles link; it never runs, so the
/// native check is told to let it pass; its Python cannot run, so no bytecode.
const SYNTHETIC: &str = "allow-missing-libraries = [\"libgcc_s.so.1\"]\nbytecode = false\n";

/// A locked hello-api on the synthetic base (an OCI layout in `base/`),
/// its spec naming that base.
fn hello_api_on_synthetic_base() -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    support::synthetic::write_base(&project.join("base"));
    write_spec(&project, "oci:base:latest", "hello_api.main:app");
    project
}

#[test]
fn the_locked_fastapi_app_runs_as_non_root_and_serves() {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    write_spec(
        &project,
        &support::base::base_image_ref("amd64"),
        "hello_api.main:app",
    );
    build_json(
        &project,
        &[
            "build",
            "--output",
            "oci-archive:image.tar",
            "--cache-dir",
            "cache",
        ],
    );
    let image = format!("oci-archive:{}", project.join("image.tar").display());

    let uid = podman::python_output(
        &[],
        &image,
        "python",
        "import fastapi, uvicorn, pydantic, os; print(os.getuid())",
    );
    assert_eq!(uid, "65532", "the imports run as the image's user");

    // The image's own command: the venv's uvicorn serving the app.
    let c = podman::run_detached(&image, &[], 8000);
    let health = c.wait_ready("/health", Duration::from_secs(60));
    assert!(health.contains("ok"), "GET /health: {health}\n{}", c.logs());
    let item = podman::http("GET", &c.url("/items/42?q=x"), None).unwrap();
    assert_eq!(item.status, 200);
    let body: Value = serde_json::from_str(&item.body).unwrap();
    assert_eq!(body["item_id"], 42);
    assert_eq!(body["q"], "x");
}

#[test]
fn one_lock_builds_amd64_and_arm64_each_with_its_own_wheels() {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    write_spec(
        &project,
        &format!("oci:{}:latest", support::base::multiarch_base().display()),
        "hello_api.main:app",
    );
    let summary = build_json(
        &project,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            "oci-archive:image.tar",
            "--cache-dir",
            "cache",
        ],
    );
    assert_eq!(
        summary["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(summary["images"][0]["platform"], "linux/amd64");
    assert_eq!(summary["images"][1]["platform"], "linux/arm64/v8");
    // Binary wheels differ per platform; pure-Python ones are the same layer.
    assert_ne!(
        layer_digest(&summary, 0, "pydantic-core"),
        layer_digest(&summary, 1, "pydantic-core")
    );
    assert_eq!(
        layer_digest(&summary, 0, "fastapi"),
        layer_digest(&summary, 1, "fastapi")
    );

    let image = format!("oci-archive:{}", project.join("image.tar").display());
    let printed = podman::python_output(
        &["--platform", "linux/arm64"],
        &image,
        "python",
        "import platform, pydantic_core; print(platform.machine(), pydantic_core.__version__)",
    );
    assert!(printed.starts_with("aarch64 "), "{printed}");
}

#[test]
fn apps_that_share_a_dependency_share_its_layer() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    let hello = support::uv::uv_lock(&support::fixture("hello-api"));
    let other = support::uv::uv_lock(&support::fixture("other-api"));
    let base = support::base::base_image_ref("amd64");
    write_spec(&hello, &base, "hello_api.main:app");
    write_spec(&other, &base, "other_api.app:app");
    // other-api locks no uvicorn, so the default command could not start: run Python.
    let spec = other.join("imgbuild.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        format!("{text}cmd = [\"python\", \"-c\", \"import other_api.app\"]\n"),
    )
    .unwrap();
    let a = build_json(
        &hello,
        &["build", "--output", "oci:out", "--cache-dir", cache],
    );
    let b = build_json(
        &other,
        &["build", "--output", "oci:out", "--cache-dir", cache],
    );
    for package in ["fastapi", "pydantic", "pydantic-core", "starlette"] {
        assert_eq!(
            layer_digest(&a, 0, package),
            layer_digest(&b, 0, package),
            "{package} layer differs between apps"
        );
    }
    assert_ne!(a["digest"], b["digest"]);
}

/// Every cached blob still matches its name, and no temp file is left over.
fn assert_cache_intact(cache: &Path) {
    assert_blobs_intact(cache);
    let leftovers = std::fs::read_dir(cache.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "temp files left in the cache");
}

fn assert_fails(dir: &Path, cache: &Path, expect: &[&str]) {
    let o = imgbuild(
        dir,
        &[
            "build",
            "--output",
            "oci:out",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success(), "expected a failure");
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "no one-line error: {err}");
    for e in expect {
        assert!(last.contains(e), "error {last:?} should mention {e:?}");
    }
    assert!(
        !dir.join("out").exists(),
        "output written despite the error"
    );
    assert_cache_intact(cache);
}

/// A wheel with one file, whose name may try to leave the install root.
fn wheel_with_entry(path: &Path, entry: &str) -> String {
    use std::io::Write;
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let o: zip::write::SimpleFileOptions = Default::default();
    for (name, body) in [
        (entry, "x = 1\n"),
        (
            "evil-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        ),
        (
            "evil-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        ("evil-1.0.dist-info/RECORD", ""),
    ] {
        z.start_file(name, o).unwrap();
        z.write_all(body.as_bytes()).unwrap();
    }
    z.finish().unwrap();
    let (d, _) = imgbuild::digest::Digest::of_reader(std::fs::File::open(path).unwrap()).unwrap();
    d.hex().to_string()
}

#[test]
fn bad_locks_and_bases_fail_clearly_and_leave_the_cache_intact() {
    let project = hello_api_on_synthetic_base();
    let cache = project.join("cache");
    let lock = std::fs::read_to_string(project.join("uv.lock")).unwrap();

    // A hash that does not match the downloaded wheel.
    let idna_wheel = lock
        .lines()
        .find(|l| l.contains("/idna-") && l.contains(".whl"))
        .expect("idna wheel in lock");
    let hash = idna_wheel.split("sha256:").nth(1).unwrap()[..64].to_string();
    let tampered = lock.replace(&hash, &"0".repeat(64));
    std::fs::write(project.join("uv.lock"), &tampered).unwrap();
    assert_fails(&project, &cache, &["idna", "sha256"]);

    // A package with only an sdist.
    let mut no_wheel = String::new();
    let (mut in_idna, mut skipping) = (false, false);
    for line in lock.lines() {
        if line.starts_with("name = ") {
            in_idna = line == "name = \"idna\"";
        }
        if in_idna && line.starts_with("wheels = ") {
            skipping = !line.ends_with(']');
            continue;
        }
        if skipping {
            skipping = line != "]";
            continue;
        }
        no_wheel.push_str(line);
        no_wheel.push('\n');
    }
    std::fs::write(project.join("uv.lock"), &no_wheel).unwrap();
    assert_fails(&project, &cache, &["idna", "sdist", "linux/amd64"]);

    // A lockfile version this imgbuild does not know.
    std::fs::write(
        project.join("uv.lock"),
        lock.replacen("version = 1", "version = 9", 1),
    )
    .unwrap();
    assert_fails(&project, &cache, &["uv.lock", "version"]);
    std::fs::write(project.join("uv.lock"), &lock).unwrap();

    // A wheel whose entry climbs out of site-packages. The lock has no uvicorn,
    // which stops the default command before any fetch: the spec runs python.
    let spec = std::fs::read_to_string(project.join("imgbuild.toml")).unwrap();
    std::fs::write(
        project.join("imgbuild.toml"),
        format!("{spec}cmd = [\"python\", \"-m\", \"hello_api.main\"]\n"),
    )
    .unwrap();
    std::fs::remove_file(project.join("uv.lock")).unwrap();
    let sha = wheel_with_entry(
        &project.join("evil-1.0-py3-none-any.whl"),
        "../../../../etc/evil.py",
    );
    std::fs::write(
        project.join("pylock.toml"),
        format!(
            "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"evil\"\nversion = \"1.0\"\nwheels = [{{ path = \"evil-1.0-py3-none-any.whl\", hashes = {{ sha256 = \"{sha}\" }} }}]\n"
        ),
    )
    .unwrap();
    assert_fails(&project, &cache, &["evil-1.0-py3-none-any.whl", ".."]);
    std::fs::write(project.join("imgbuild.toml"), spec).unwrap();
    std::fs::remove_file(project.join("pylock.toml")).unwrap();
    std::fs::write(project.join("uv.lock"), &lock).unwrap();

    // A base without Python.
    support::synthetic::write_base_with(&project.join("nopython"), false);
    write_spec(&project, "oci:nopython:latest", "hello_api.main:app");
    assert_fails(&project, &cache, &["Python"]);

    // And with the real lock and base, the same cache still builds.
    write_spec(&project, "oci:base:latest", "hello_api.main:app");
    build_json(
        &project,
        &[
            "build",
            "--output",
            "oci:out",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert_cache_intact(&cache);
}

#[test]
fn a_warm_cache_builds_offline_and_a_layer_budget_merges_the_smallest_packages() {
    let project = hello_api_on_synthetic_base();
    let cache = project.join("cache");
    let cache = cache.to_str().unwrap();
    let online = build_json(
        &project,
        &["build", "--output", "oci:out", "--cache-dir", cache],
    );
    let offline = build_json(
        &project,
        &[
            "build",
            "--offline",
            "--output",
            "oci:out",
            "--cache-dir",
            cache,
        ],
    );
    assert_eq!(
        online["digest"], offline["digest"],
        "--offline from a warm cache gives the same image"
    );
    let cold_offline = imgbuild(
        &project,
        &[
            "build",
            "--offline",
            "--output",
            "oci:out2",
            "--cache-dir",
            "empty-cache",
        ],
    );
    assert!(!cold_offline.status.success());
    assert!(
        stderr(&cold_offline).contains("--offline"),
        "{}",
        stderr(&cold_offline)
    );

    // 1 base layer + venv + 20 packages + app is 23; a budget of 12 leaves 9
    // package layers: the 8 largest packages on their own, the other 12 merged.
    std::fs::write(
        project.join("imgbuild.toml"),
        format!("base = \"oci:base:latest\"\napp = \"hello_api.main:app\"\nlayer-budget = 12\n{SYNTHETIC}"),
    )
    .unwrap();
    let merged = build_json(
        &project,
        &["build", "--output", "oci:out", "--cache-dir", cache],
    );
    let layers = merged["images"][0]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 12, "{merged:#}");
    let labels: Vec<&str> = layers
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert!(
        labels.iter().any(|l| l.starts_with("merged: ")),
        "{labels:?}"
    );
    assert!(
        labels.iter().any(|l| l.starts_with("uvloop ")),
        "the largest package keeps its own layer: {labels:?}"
    );
}

#[test]
fn uv_lock_pylock_and_hashed_requirements_give_the_same_image() {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    support::synthetic::write_base(&project.join("base"));
    let lock = std::fs::read_to_string(project.join("uv.lock")).unwrap();
    // The index the lock was made against, read at test time so no index host is committed.
    let index_url = lock
        .lines()
        .find_map(|l| {
            l.split("registry = \"")
                .nth(1)
                .map(|r| r.split('"').next().unwrap().to_string())
        })
        .expect("a registry source in uv.lock");
    support::uv::uv_export_pylock(&project);
    support::uv::uv_export_requirements(&project);
    let cache = project.join("cache");
    let cache = cache.to_str().unwrap();
    let mut digests = Vec::new();
    for lockfile in ["uv.lock", "pylock.toml", "requirements.txt"] {
        std::fs::write(
            project.join("imgbuild.toml"),
            format!(
                "base = \"oci:base:latest\"\napp = \"hello_api.main:app\"\nlockfile = \"{lockfile}\"\nindex-url = \"{index_url}\"\n{SYNTHETIC}"
            ),
        )
        .unwrap();
        let summary = build_json(
            &project,
            &["build", "--output", "oci:out", "--cache-dir", cache],
        );
        let layers: Vec<(String, String)> =
            support::layout::string_pairs(&summary["images"][0]["layers"], "label", "digest")
                .into_iter()
                .filter(|(label, _)| label != "app")
                .collect();
        digests.push((lockfile, layers));
    }
    assert_eq!(
        digests[0].1.len(),
        22,
        "base, venv and 20 packages: {:?}",
        digests[0].1
    );
    assert_eq!(
        digests[0].1, digests[1].1,
        "pylock.toml installs other wheels than uv.lock"
    );
    assert_eq!(
        digests[0].1, digests[2].1,
        "requirements.txt installs other wheels than uv.lock"
    );
}

/// Every cached blob matches its name (temp files of a killed build may remain).
fn assert_blobs_intact(cache: &Path) {
    for e in walkdir::WalkDir::new(cache.join("blobs/sha256")).min_depth(1) {
        let e = e.unwrap();
        let (d, _) =
            imgbuild::digest::Digest::of_reader(std::fs::File::open(e.path()).unwrap()).unwrap();
        assert_eq!(
            d.hex(),
            e.file_name().to_str().unwrap(),
            "corrupt cache entry {}",
            e.path().display()
        );
    }
}

#[test]
fn concurrent_builds_and_a_killed_build_leave_a_usable_cache() {
    let project = hello_api_on_synthetic_base();
    let spawn = |out: &str, cache: &str| {
        Command::new(env!("CARGO_BIN_EXE_imgbuild"))
            .current_dir(&project)
            .args(["build", "--output", out, "--cache-dir", cache])
            .env_remove("SOURCE_DATE_EPOCH")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let digest = |child: std::process::Child| {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string()
    };

    // Caches outside the project, so the app layer sees the same tree every time.
    let caches = tempfile::tempdir().unwrap();
    // Two builds race on one cold cache: both download, both write the same entries.
    let cache = caches.path().join("shared");
    let (a, b) = (
        spawn("oci:../out-a", cache.to_str().unwrap()),
        spawn("oci:../out-b", cache.to_str().unwrap()),
    );
    let (a, b) = (digest(a), digest(b));
    assert_eq!(a, b);
    assert_blobs_intact(&cache);

    // A build killed with SIGKILL part way through leaves nothing that a later build trips on.
    let cache = caches.path().join("killed");
    let mut victim = spawn("oci:../out-c", cache.to_str().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(400));
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_blobs_intact(&cache);
    let again = digest(spawn("oci:../out-c", cache.to_str().unwrap()));
    assert_eq!(again, a, "the rebuild after a kill gives the same image");
    assert_blobs_intact(&cache);
}
