//! `imgbuild build`: a reproducible, valid OCI image from a base and a source
//! tree, and a clean one-line failure for bad input.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::layout::{blob_json, json_file, largest_blob};

/// The digest of fixtures/golden-app on the synthetic base with SOURCE_DATE_EPOCH unset.
/// A change here changes the bytes we produce: see docs/reproducibility.md before updating it.
const GOLDEN_DIGEST: &str =
    "sha256:e001a9427f059d058e1a95d4f00d67e723decddcf41d43c2206f02c53ff2700a";

fn imgbuild(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = support::imgbuild_command(cwd, args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run imgbuild")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn digest_of(o: &Output) -> String {
    support::last_line(o, "imgbuild")
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of the golden fixture with the synthetic base beside it.
fn golden_copy(root: &Path) -> PathBuf {
    let dir = root.join("golden-app");
    copy_tree(&support::fixture("golden-app"), &dir);
    support::synthetic::write_base(&dir.join("base"));
    dir
}

#[test]
fn same_digest_across_paths_umask_tz_mtimes_and_users() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    // A: a plain build.
    let a = golden_copy(&tmp.path().join("a"));
    let digest_a = digest_of(&imgbuild(
        &a,
        &["build", "--output", "oci:out", "--cache-dir", "../cache"],
        &[],
    ));

    // B: a deeper path, another time zone, files copied under umask 077 with new mtimes.
    let b_root = tmp.path().join("b/some/much/deeper/checkout");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && mkdir -p '{0}' && cp -r '{1}' '{0}/golden-app' && find '{0}' -exec touch -d '2001-02-03 04:05:06' {{}} +",
            b_root.display(),
            support::fixture("golden-app").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let b = b_root.join("golden-app");
    support::synthetic::write_base(&b.join("base"));
    let digest_b = digest_of(&imgbuild(
        &b,
        &["build", "--output", "oci:out", "--cache-dir", "../cache"],
        &[("TZ", "Pacific/Chatham")],
    ));

    // C: another user (nobody), with its own cold cache.
    let c = golden_copy(&tmp.path().join("c"));
    let status = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(tmp.path().join("c"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["build", "--output", "oci:out", "--cache-dir", "../cache"])
        .current_dir(&c)
        .env("HOME", tmp.path().join("c"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let digest_c = digest_of(&out);

    assert_eq!(
        digest_a, digest_b,
        "different checkout path, umask, TZ or mtimes changed the digest"
    );
    assert_eq!(
        digest_a, digest_c,
        "another building user changed the digest"
    );
    assert_eq!(
        digest_a, GOLDEN_DIGEST,
        "the golden digest changed: if the byte format changed on purpose, bump LAYER_FORMAT and update GOLDEN_DIGEST (docs/reproducibility.md)"
    );
}

#[test]
fn source_date_epoch_sets_created_and_changes_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    let zero = digest_of(&imgbuild(
        &dir,
        &["build", "--output", "oci:out0", "--cache-dir", "../cache"],
        &[],
    ));
    let later = imgbuild(
        &dir,
        &["build", "--output", "oci:out1", "--cache-dir", "../cache"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_ne!(zero, digest_of(&later));
    let layout = dir.join("out1");
    let index = json_file(&layout.join("index.json"));
    let manifest = blob_json(&layout, &index["manifests"][0]["digest"]);
    let config = blob_json(&layout, &manifest["config"]["digest"]);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn dockerignore_and_default_skips_shape_the_app_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    std::fs::create_dir_all(dir.join("golden_app/__pycache__")).unwrap();
    std::fs::write(
        dir.join("golden_app/__pycache__/main.cpython-311.pyc"),
        b"pyc",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/HEAD"), b"ref").unwrap();
    digest_of(&imgbuild(
        &dir,
        &["build", "--output", "oci:out", "--cache-dir", "../cache"],
        &[],
    ));
    let unpacked = tmp.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", dir.join("out").display()))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci unpack: {}", stderr(&o));
    let rootfs = unpacked.join("rootfs");
    assert!(rootfs.join("app/golden_app/main.py").is_file());
    assert!(rootfs.join("app/data/nested/deep.txt").is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(rootfs.join("app/bin/run.sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o755, "exec bit kept and normalised");
    for gone in [
        "app/debug.log",
        "app/secret",
        "app/.git",
        "app/golden_app/__pycache__",
    ] {
        assert!(
            !rootfs.join(gone).exists(),
            "{gone} should have been left out"
        );
    }
}

#[test]
fn images_written_into_the_source_tree_stay_out_of_later_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    let build = |output: &str| {
        let o = imgbuild(
            &dir,
            &["build", "--output", output, "--cache-dir", "../cache"],
            &[],
        );
        (digest_of(&o), stderr(&o))
    };
    let (first, err) = build("oci:out:latest");
    assert!(!err.contains("left out of the app layer"), "{err}");
    // The layout and then the archive are the outputs of earlier runs now:
    // the same image every time, each named in one warning.
    let (second, err) = build("docker-archive:svc.tar");
    assert_eq!(second, first, "{err}");
    assert_eq!(err.matches("left out of the app layer").count(), 1, "{err}");
    assert!(err.contains("out/ (an OCI image layout"), "{err}");
    let (third, err) = build("oci:elsewhere");
    assert_eq!(third, first, "{err}");
    assert_eq!(err.matches("left out of the app layer").count(), 1, "{err}");
    assert!(
        err.contains("out/ (an OCI image layout")
            && err.contains("svc.tar (an image archive imgbuild wrote"),
        "{err}"
    );
    let app_layer = json_file(&dir.join("elsewhere/index.json"));
    assert!(app_layer["manifests"].is_array());
}

/// A spec for a copy of fixtures/hello-api (no lockfile: just the app layer) on the
/// Debian base. The copy declares no dependencies: a project that declares some and
/// has no lockfile is refused (an image without them would not start).
fn hello_spec(dir: &Path) -> PathBuf {
    let base = support::base::base_image("amd64");
    let source = dir.join("hello-api");
    copy_tree(&support::fixture("hello-api"), &source);
    let pyproject = std::fs::read_to_string(source.join("pyproject.toml")).unwrap();
    let start = pyproject.find("dependencies = [").unwrap();
    let end = start + pyproject[start..].find("\n]").unwrap() + 2;
    std::fs::write(
        source.join("pyproject.toml"),
        format!("{}{}", &pyproject[..start], &pyproject[end..]),
    )
    .unwrap();
    let spec = dir.join("imgbuild.toml");
    std::fs::write(
        &spec,
        format!(
            "base = \"oci:{}:latest\"\nsource = \"hello-api\"\napp = \"hello_api.main:app\"\n",
            base.display(),
        ),
    )
    .unwrap();
    spec
}

#[test]
fn skopeo_and_umoci_accept_layout_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    hello_spec(tmp.path());
    let digest = digest_of(&imgbuild(
        tmp.path(),
        &["build", "--output", "oci:layout:v1", "--cache-dir", "cache"],
        &[],
    ));
    let archive_digest = digest_of(&imgbuild(
        tmp.path(),
        &[
            "build",
            "--output",
            "oci-archive:image.tar",
            "--cache-dir",
            "cache",
        ],
        &[],
    ));
    assert_eq!(digest, archive_digest);
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(
        mode(&tmp.path().join("image.tar")),
        0o644,
        "the archive is readable by others"
    );
    assert_eq!(
        mode(&tmp.path().join("layout")),
        0o755,
        "the layout is readable by others"
    );

    for reference in [
        format!("oci:{}:v1", tmp.path().join("layout").display()),
        format!("oci-archive:{}", tmp.path().join("image.tar").display()),
    ] {
        let inspect = |flags: &[&str]| {
            let o = Command::new("skopeo")
                .arg("inspect")
                .args(flags)
                .arg(&reference)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "skopeo inspect {reference}: {}",
                stderr(&o)
            );
            o
        };
        let o = inspect(&["--raw"]);
        let raw_digest = imgbuild::digest::Digest::of_bytes(&o.stdout).to_string();
        assert_eq!(
            raw_digest, digest,
            "skopeo sees another manifest in {reference}"
        );
        let o = inspect(&[]);
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(info["Architecture"], "amd64");
    }

    let bundle = tmp.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", tmp.path().join("layout").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci unpack: {}", stderr(&o));
    let message =
        std::fs::read_to_string(bundle.join("rootfs/app/hello_api/static/message.txt")).unwrap();
    assert!(message.contains("hello from the app layer"));
    assert!(
        bundle.join("rootfs/usr/bin/python3").exists(),
        "base layers are in the unpacked image"
    );
}

#[test]
fn docker_archive_runs_under_podman_as_the_non_root_user() {
    let tmp = tempfile::tempdir().unwrap();
    hello_spec(tmp.path());
    let name = format!("localhost/imgbuild-e2e-{}:latest", std::process::id());
    let out = format!(
        "docker-archive:{}:{name}",
        tmp.path().join("image.tar").display()
    );
    digest_of(&imgbuild(
        tmp.path(),
        &["build", "--output", &out, "--cache-dir", "cache"],
        &[],
    ));
    let id = support::podman::load(&tmp.path().join("image.tar"));
    let run = support::podman::run_to_completion(
        &id,
        &[
            "sh",
            "-c",
            "id -u; id -g; cat /app/hello_api/static/message.txt",
        ],
    );
    support::podman::remove_image(&name);
    assert_eq!(run.status, 0, "podman run failed: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "65532", "runs as the non-root uid");
    assert_eq!(lines[1], "65532", "runs as the non-root gid");
    assert!(
        run.stdout.contains("hello from the app layer"),
        "{}",
        run.stdout
    );
}

/// Runs a failing build and checks the one-line error and that nothing was written.
fn assert_fails_cleanly(dir: &Path, args: &[&str], output_path: &Path, expect: &[&str]) {
    let o = imgbuild(dir, args, &[]);
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "no one-line error: {err}");
    for word in expect {
        assert!(
            last.contains(word),
            "error {last:?} should mention {word:?}"
        );
    }
    assert!(
        !output_path.exists(),
        "{} was written despite the error",
        output_path.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(output_path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp") || n.starts_with(".imgbuild"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

#[test]
fn bad_input_fails_with_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    let out = dir.join("out.tar");
    let args = [
        "build",
        "--output",
        "oci-archive:out.tar",
        "--cache-dir",
        "../cache",
    ];
    let spec = std::fs::read_to_string(dir.join("imgbuild.toml")).unwrap();

    // A missing base.
    std::fs::write(
        dir.join("imgbuild.toml"),
        spec.replace("oci:base:latest", "oci:nowhere:latest"),
    )
    .unwrap();
    assert_fails_cleanly(&dir, &args, &out, &["nowhere"]);

    // An unknown key.
    std::fs::write(dir.join("imgbuild.toml"), format!("{spec}prot = 8000\n")).unwrap();
    assert_fails_cleanly(&dir, &args, &out, &["imgbuild.toml", "prot"]);

    // A missing source directory.
    std::fs::write(
        dir.join("imgbuild.toml"),
        format!("{spec}source = \"missing-dir\"\n"),
    )
    .unwrap();
    assert_fails_cleanly(&dir, &args, &out, &["source", "missing-dir"]);

    // A symlink that escapes the source tree.
    std::fs::write(dir.join("imgbuild.toml"), &spec).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("leak")).unwrap();
    assert_fails_cleanly(&dir, &args, &out, &["leak", "/etc/passwd"]);
    std::fs::remove_file(dir.join("leak")).unwrap();

    // A base layout whose layer does not match its digest.
    let biggest = largest_blob(&dir.join("base"));
    let mut bytes = std::fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&biggest, bytes).unwrap();
    let cache = tmp.path().join("fresh-cache");
    let args = [
        "build",
        "--output",
        "oci-archive:out.tar",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    assert_fails_cleanly(&dir, &args, &out, &["does not match", "sha256:"]);
}

#[test]
fn a_base_blob_changed_after_a_build_is_caught_on_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    let build = |out: &str| {
        imgbuild(
            &dir,
            &["build", "--output", out, "--cache-dir", "../cache"],
            &[],
        )
    };
    digest_of(&build("oci:first"));
    digest_of(&build("oci:second")); // copied by the kernel: checked before, unchanged since

    let layer = largest_blob(&dir.join("base"));
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    assert_fails_cleanly(
        &dir,
        &["build", "--output", "oci:third", "--cache-dir", "../cache"],
        &dir.join("third"),
        &["does not match"],
    );
}

/// Rewrites the config of `layout`'s one image with `edit`, and the manifest
/// and index that name it, so every blob still matches its digest.
fn edit_base_config(layout: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let write_blob = |value: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).unwrap();
        let digest = imgbuild::digest::Digest::of_bytes(&bytes);
        std::fs::write(layout.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
        (digest.to_string(), bytes.len())
    };
    let mut index = json_file(&layout.join("index.json"));
    let mut manifest = blob_json(layout, &index["manifests"][0]["digest"]);
    let mut config = blob_json(layout, &manifest["config"]["digest"]);
    edit(&mut config);
    let (digest, size) = write_blob(&config);
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = write_blob(&manifest);
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_base_whose_config_diff_ids_do_not_match_its_layers_fails_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    let wrong = imgbuild::digest::Digest::of_bytes(b"another layer's tar").to_string();
    edit_base_config(&dir.join("base"), |config| {
        config["rootfs"]["diff_ids"][0] = wrong.clone().into();
    });
    assert_fails_cleanly(
        &dir,
        &["build", "--output", "oci:out", "--cache-dir", "../cache"],
        &dir.join("out"),
        &[
            "base oci:base:latest",
            &format!(
                "its config's diff_id {wrong} does not match the layer's uncompressed content"
            ),
        ],
    );
}

#[test]
fn a_venv_where_the_base_already_has_files_fails_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = golden_copy(tmp.path());
    let base = support::base::with_files(
        &dir.join("base"),
        &[("/opt/conda/bin/python", b"\x7fELF conda's own")],
    );
    let settings = std::fs::read_to_string(dir.join("imgbuild.toml")).unwrap();
    let settings = settings.replace(
        "base = \"oci:base:latest\"",
        &format!(
            "base = \"oci:{}:latest\"\nvenv = \"/opt/conda\"",
            base.display()
        ),
    );
    std::fs::write(dir.join("imgbuild.toml"), settings).unwrap();
    assert_fails_cleanly(
        &dir,
        &["build", "--output", "oci:out", "--cache-dir", "../cache"],
        &dir.join("out"),
        &[
            "error: imgbuild.toml: key \"venv\": the base already has files in /opt/conda \
           (e.g. /opt/conda/bin/python); the venv would be mixed with them; choose another \
           directory",
        ],
    );
}
