//! `imgbuild rebase` (issue 25), on the real registry (Debian's
//! docker-registry on 127.0.0.1): a service pushed on base A is rebased onto
//! A' (the same Python, a changed OS and an extra library) with a handful of
//! uploads, runs and serves under podman and containerd, and has the digest
//! a fresh push on A' has; `outdated` sees the move, then nothing; a swap
//! that is not safe is refused in one line.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::registry::{Registry, Setup};
use support::Run;

fn imgbuild(cwd: &Path, args: &[&str]) -> Run {
    support::run_isolated(cwd, args)
}

/// The last stderr line of `imgbuild rebase IMAGE --base BASE`, which must fail.
fn refused_line(dir: &Path, image: &str, base: &str) -> String {
    let refused = imgbuild(
        dir,
        &["rebase", image, "--base", base, "--cache-dir", "../cache"],
    );
    assert!(!refused.success, "{}", refused.stderr);
    let last = refused.stderr.trim_end().lines().last();
    last.unwrap_or_default().to_owned()
}

/// `oci:DIR:latest` for a layout.
fn oci(layout: &Path) -> String {
    format!("oci:{}:latest", layout.display())
}

/// A locked copy of fixture `name` whose spec names `base` and `app`.
fn project(name: &str, base: &str, app: &str) -> PathBuf {
    let project = support::uv::uv_lock(&support::fixture(name));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!("base = \"{base}\"\napp = \"{app}\"\n"),
    )
    .unwrap();
    // The spec is not the app's: a test that pins it later keeps the app layer.
    std::fs::write(project.join(".dockerignore"), "imgbuild.toml\n").unwrap();
    project
}

/// hello-api without dependencies (quick to build for several platforms),
/// with `spec` and its app in imgbuild.toml; the directory goes with the guard.
fn small_project(prefix: &str, spec: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = support::target_tempdir(prefix);
    let project = support::fixture_without_dependencies("hello-api", &dir.path().join("app"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!("{spec}app = \"hello_api.main:app\"\n"),
    )
    .unwrap();
    (dir, project)
}

/// The registry log's lines from `from` on that finished a blob upload (the
/// PUT that closes one; a cross-repository mount is a POST).
fn blob_uploads(reg: &Registry, from: usize) -> Vec<String> {
    reg.log()
        .lines()
        .skip(from)
        .filter(|l| l.contains("response completed"))
        .filter(|l| l.contains("http.request.method=PUT") && l.contains("/blobs/uploads/"))
        .map(str::to_owned)
        .collect()
}

fn pinned_digest(run: &Run) -> String {
    let last = run.stdout.lines().last().unwrap_or_default();
    last.rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default()
}

#[test]
fn a_rebase_swaps_the_base_with_a_few_uploads_serves_and_equals_a_fresh_push() {
    let reg = Registry::start(Setup::Plain);
    let base_a = support::base::base_image("amd64");
    let base_b = support::base::base_image_with("amd64", &["libstdc++6"]);
    reg.copy_in(&oci(&base_a), "python:3.11");
    let base = format!("{}/python:3.11", reg.host);
    let dir = project("hello-api", &base, "hello_api.main:app");
    let image = format!("{}/api:1", reg.host);
    let push = |tag: &str, cache: &str| {
        imgbuild(&dir, &["push", "--tag", tag, "--cache-dir", cache]).must_succeed("push")
    };
    let first = pinned_digest(&push(&image, "../cache"));

    reg.copy_in(&oci(&base_b), "python:3.11");
    let outdated = imgbuild(&dir, &["outdated", &image]);
    assert!(!outdated.success, "{}", outdated.stderr);

    let log_mark = reg.log().lines().count();
    let started = std::time::Instant::now();
    let rebased = imgbuild(
        &dir,
        &["rebase", &image, "--json", "--cache-dir", "../cache"],
    )
    .must_succeed("rebase");
    eprintln!("rebase took {:?}", started.elapsed());
    let digest = pinned_digest(&rebased);
    assert_ne!(digest, first);
    assert!(
        rebased.stderr.contains("[linux/amd64] rebased from"),
        "{}",
        rebased.stderr
    );
    // The config and manifest are the image's only new blobs besides the
    // attestations (their documents and the empty config): no layer of ours
    // or of the base is uploaded.
    let uploads = blob_uploads(&reg, log_mark);
    eprintln!(
        "{} blob uploads; rebase said:\n{}",
        uploads.len(),
        rebased.stderr
    );
    assert!(
        uploads.len() <= 4,
        "{} uploads:\n{}",
        uploads.len(),
        uploads.join("\n")
    );

    // What a fresh push on the new base gives, from another cache.
    let fresh = pinned_digest(&push(
        &format!("{}/api-fresh:1", reg.host),
        "../cache-fresh",
    ));
    assert_eq!(
        digest, fresh,
        "a rebase onto A' and a fresh push on A' differ"
    );

    let record: serde_json::Value = serde_json::from_str(
        reg.manifest("api:1")["annotations"]["dev.imgbuild.image"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["python"]["version"], "3.11.2", "{record}");
    assert_eq!(
        record["pyc-magic"].as_str().map(str::len),
        Some(8),
        "{record}"
    );
    let now = imgbuild(&dir, &["outdated", &image]).must_succeed("outdated after the rebase");
    assert!(now.stderr.contains("is current"), "{}", now.stderr);

    let pulled = support::podman::pull(&image, None, support::podman::Tls::Insecure);
    let server = support::podman::run_detached(&pulled, &[], 8000);
    let body = server.wait_ready("/health", Duration::from_secs(60));
    assert!(body.contains("ok"), "{body}");
    let has_libstdcxx = support::podman::run_to_completion(
        &pulled,
        &[
            "python",
            "-c",
            "import os; print(os.path.exists('/usr/lib/x86_64-linux-gnu/libstdc++.so.6'))",
        ],
    );
    assert!(
        has_libstdcxx.stdout.contains("True"),
        "{:?}",
        has_libstdcxx.stdout
    );

    // containerd pulls the rebased image from the registry and runs it.
    let ctrd = support::containerd::Containerd::start();
    ctrd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let said = ctrd.run_ok(
        &image,
        "rebased",
        &[
            "python",
            "-c",
            "import hello_api.main, fastapi; print('imports ok')",
        ],
    );
    assert!(said.contains("imports ok"), "{said}");

    let again = imgbuild(&dir, &["rebase", &image, "--cache-dir", "../cache"])
        .must_succeed("a second rebase");
    assert!(again.stderr.contains("already on"), "{}", again.stderr);
    assert_eq!(pinned_digest(&again), digest);

    // A checkout still pinned to A: verify finds the rebase in the image's
    // provenance and compares with the checkout built on the new base.
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!(
            "base = \"{base}@{}\"\napp = \"hello_api.main:app\"\n",
            support::layout::top_digest(&base_a)
        ),
    )
    .unwrap();
    let verified =
        imgbuild(&dir, &["verify", &image, "--cache-dir", "../cache"]).must_succeed("verify");
    assert!(
        verified
            .stderr
            .contains("was made by `imgbuild rebase` from"),
        "{}",
        verified.stderr
    );
    assert!(
        verified
            .stderr
            .contains(&format!("[linux/amd64] verified {digest}")),
        "{}",
        verified.stderr
    );
}

#[test]
fn a_multi_platform_index_is_rebased_per_platform() {
    let reg = Registry::start(Setup::Plain);
    reg.copy_in(
        &format!("oci:{}", support::base::multiarch_base().display()),
        "python:3.11",
    );
    let base = format!("{}/python:3.11", reg.host);
    let (_dir, project) = small_project(
        "rebase-multi-",
        &format!("base = \"{base}\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n"),
    );
    let image = format!("{}/multi:1", reg.host);
    let before = imgbuild(
        &project,
        &["push", "--tag", &image, "--cache-dir", "../cache"],
    )
    .must_succeed("push");
    // The tag moves to an index whose amd64 image changed and arm64 did not.
    let new_index = support::base::multiarch_of(&[
        (
            support::base::base_image_with("amd64", &["libstdc++6"]),
            "amd64",
            None,
        ),
        (support::base::base_image("arm64"), "arm64", Some("v8")),
    ]);
    reg.copy_in(&format!("oci:{}", new_index.display()), "python:3.11");
    let rebased =
        imgbuild(&project, &["rebase", &image, "--cache-dir", "../cache"]).must_succeed("rebase");
    assert!(
        rebased.stderr.contains("[linux/amd64] rebased from"),
        "{}",
        rebased.stderr
    );
    assert!(
        rebased.stderr.contains("[linux/arm64/v8] already on"),
        "{}",
        rebased.stderr
    );
    let digest = pinned_digest(&rebased);
    assert_ne!(digest, pinned_digest(&before));
    let fresh = imgbuild(
        &project,
        &[
            "push",
            "--tag",
            &format!("{}/multi-fresh:1", reg.host),
            "--cache-dir",
            "../cache-fresh",
        ],
    )
    .must_succeed("fresh push");
    assert_eq!(digest, pinned_digest(&fresh));
}

#[test]
fn unsafe_swaps_are_refused_in_one_line() {
    let reg = Registry::start(Setup::Plain);
    let with_cxx = support::base::base_image_with("amd64", &["libstdc++6"]);
    reg.copy_in(&oci(&with_cxx), "python:3.11");
    let base = format!("{}/python:3.11", reg.host);
    let dir = project("proj-numpy", &base, "app:app");
    let image = format!("{}/numpy:1", reg.host);
    imgbuild(&dir, &["push", "--tag", &image, "--cache-dir", "../cache"]).must_succeed("push");

    reg.copy_in(
        &oci(&support::base::base_image("amd64")),
        "python:3.11-bare",
    );
    let bare = format!("{}/python:3.11-bare", reg.host);
    let line = refused_line(&dir, &image, &bare);
    for part in ["cannot rebase", "numpy", "libstdc++.so.6", "imgbuild push"] {
        assert!(line.contains(part), "{part} not in: {line}");
    }

    let bullseye = support::base::debian_python_base("amd64", "bullseye", "python3.9", &[]);
    reg.copy_in(&oci(&bullseye), "python:3.9");
    let older = format!("{}/python:3.9", reg.host);
    let line = refused_line(&dir, &image, &older);
    assert!(line.contains("its Python is 3.9."), "{line}");
    assert!(line.contains("made for 3.11."), "{line}");
}

#[test]
fn a_changed_standard_library_remakes_the_stdlib_pycs_layer_as_a_fresh_push_would() {
    let reg = Registry::start(Setup::Plain);
    let base_a = support::base::base_image("amd64");
    reg.copy_in(&oci(&base_a), "python:3.11");
    // The same interpreter, one more module in its standard library: the
    // stdlib pycs layer (the test base ships none) must be compiled again.
    let changed = support::base::with_files(
        &base_a,
        &[("usr/lib/python3.11/imgbuild_probe.py", b"PROBE = 1\n")],
    );
    let base = format!("{}/python:3.11", reg.host);
    let (_dir, project) = small_project("rebase-stdlib-", &format!("base = \"{base}\"\n"));
    let image = format!("{}/stdlib:1", reg.host);
    let push = |tag: &str, cache: &str| {
        pinned_digest(
            &imgbuild(&project, &["push", "--tag", tag, "--cache-dir", cache]).must_succeed("push"),
        )
    };
    let before = push(&image, "../cache");
    reg.copy_in(&oci(&changed), "python:3.11");
    let rebased = imgbuild(
        &project,
        &["rebase", &image, "--json", "--cache-dir", "../cache"],
    )
    .must_succeed("rebase");
    assert!(
        rebased
            .stderr
            .contains("made again for its Python: stdlib bytecode"),
        "{}",
        rebased.stderr
    );
    assert!(
        rebased
            .stderr
            .contains("is not the build that compiled the image's pycs"),
        "{}",
        rebased.stderr
    );
    let digest = pinned_digest(&rebased);
    assert_ne!(digest, before);
    // A fresh push on the changed base writes every layer the rebase wrote
    // (the stdlib pycs compiled again the same way); the records differ only
    // in which interpreter compiled the app's pycs, which the rebase kept.
    let fresh_tag = format!("{}/stdlib-fresh:1", reg.host);
    let fresh = push(&fresh_tag, "../cache-fresh");
    assert_ne!(digest, fresh);
    let (ours, theirs) = (reg.manifest("stdlib:1"), reg.manifest("stdlib-fresh:1"));
    assert_eq!(ours["layers"], theirs["layers"]);
    let record = |m: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str(m["annotations"]["dev.imgbuild.image"].as_str().unwrap()).unwrap()
    };
    let (mut a, mut b) = (record(&ours), record(&theirs));
    assert_ne!(a["compiled-by"], b["compiled-by"]);
    a["compiled-by"] = serde_json::Value::Null;
    b["compiled-by"] = serde_json::Value::Null;
    assert_eq!(a, b);
    let pulled = support::podman::pull(&image, None, support::podman::Tls::Insecure);
    let out = support::podman::python_output(
        &[],
        &pulled,
        "python",
        "import imgbuild_probe, os; print(os.path.exists(imgbuild_probe.__cached__), imgbuild_probe.PROBE)",
    );
    // The new module's pyc is in the image (a user cannot write it there at run time).
    assert_eq!(out, "True 1");
}
