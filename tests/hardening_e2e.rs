//! imgbuild runs unprivileged, as in Kubernetes-based CI: inside a container as
//! uid 1000, every capability dropped, a read-only root, no new privileges, with
//! only the cache and the output writable. It gives the same digest as on the host.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::last_line;

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).sort_by_file_name() {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn writable_dir(path: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    path
}

#[test]
fn builds_as_uid_1000_with_no_capabilities_and_a_read_only_root_to_the_host_digest() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let project = tmp.path().join("golden-app");
    copy_tree(&support::fixture("golden-app"), &project);
    support::synthetic::write_base(&project.join("base"));
    // Everything read-only in the container must be readable by uid 1000.
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&project)
        .status()
        .unwrap();
    assert!(status.success());

    let host = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .current_dir(&project)
        .args(["build", "--output", "oci:../host-out", "--cache-dir"])
        .arg(tmp.path().join("host-cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let host_digest = last_line(&host, "imgbuild on the host");

    // The container's own image is the Debian base the e2e tests use; imgbuild
    // itself is mounted from the host, read-only.
    let base = support::base::base_image("amd64");
    let image = support::podman::import(&format!("oci:{}:latest", base.display()), None);
    // The container's user makes its own cache: imgbuild refuses one that
    // belongs to another user or that every user may write to.
    let cache_home = writable_dir(tmp.path().join("cache-home"));
    let cache = cache_home.join("cache");
    let out = writable_dir(tmp.path().join("out"));
    let vol = |from: &Path, to: &str, mode: &str| format!("{}:{to}:{mode}", from.display());
    let run = support::podman::podman()
        .args(["run", "--rm"])
        .args(support::podman::RUN_ARGS)
        .args([
            "--user",
            "1000:1000",
            "--cap-drop=ALL",
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "--network",
            "none",
            "-e",
            "HOME=/nonexistent",
            "-w",
            "/src",
        ])
        .arg("-v")
        .arg(vol(
            Path::new(env!("CARGO_BIN_EXE_imgbuild")),
            "/usr/local/bin/imgbuild",
            "ro",
        ))
        // The base has no CA bundle: a build that contacts no registry needs none.
        .arg("-v")
        .arg(vol(&project, "/src", "ro"))
        .arg("-v")
        .arg(vol(&cache_home, "/cache-home", "rw"))
        .arg("-v")
        .arg(vol(&out, "/out", "rw"))
        .arg(&image)
        .args([
            "imgbuild",
            "build",
            "--output",
            "oci:/out/image",
            "--cache-dir",
            "/cache-home/cache",
        ])
        .output()
        .expect("cannot run podman; run scripts/setup.sh");
    let container_digest = last_line(&run, "imgbuild in the unprivileged container");
    assert_eq!(
        container_digest, host_digest,
        "the unprivileged build differs from the host's"
    );
    assert!(out.join("image/index.json").is_file());
    // The run left nothing behind in the cache's temp directory.
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn kill_9_during_a_layer_build_leaves_nothing_the_next_run_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("golden-app");
    copy_tree(&support::fixture("golden-app"), &project);
    support::synthetic::write_base(&project.join("base"));
    // A big, incompressible file keeps the app layer's write going long enough to kill it.
    let mut noise = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(project.join("noise.bin"), &noise).unwrap();
    let cache = tmp.path().join("cache");
    let build = |out: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
        cmd.current_dir(&project)
            .args(["build", "--output", out, "--cache-dir"])
            .arg(&cache)
            .env_remove("SOURCE_DATE_EPOCH");
        cmd
    };
    let temp_files = || -> Vec<String> {
        std::fs::read_dir(cache.join("tmp"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| !n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default()
    };

    let mut child = build(&format!("oci:{}", tmp.path().join("a").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The layer's temp file, once it holds a MiB: smaller temp files (a pyc
    // cache record, written by the app's compile beside the build) are
    // renamed into place at once, so killing then would catch none.
    let layer_started = || {
        std::fs::read_dir(cache.join("tmp")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 1 << 20))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !layer_started() {
        assert!(
            std::time::Instant::now() < deadline,
            "no temp file appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended first");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = temp_files();
    assert!(!left.is_empty(), "kill -9 should leave the temp file here");

    let out = build(&format!("oci:{}", tmp.path().join("b").display()))
        .output()
        .unwrap();
    last_line(&out, "the build after kill -9");
    let remaining: Vec<_> = std::fs::read_dir(cache.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        remaining.is_empty(),
        "the next run kept {remaining:?} (killed run left {left:?})"
    );
}
