//! zstd: a base whose layers are `tar+zstd` (as Docker Hardened Images ship them) is
//! read like a gzip one and its image runs under podman and containerd; and
//! `compression = "zstd"` writes reproducible zstd layers that unpack to the same
//! tree as gzip ones (skopeo reads them for umoci, which reads no zstd) and run under
//! containerd.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::containerd::Containerd;
use support::layout::{blob_json, json_file};

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const IMPORTS: &str = "python -c 'import fastapi, uvicorn, pydantic_core; print(\"imports ok\")'";

/// Builds with `spec` into `output`, returning the digest printed last.
fn build(project: &Path, spec: &str, output: &str, cache: &Path) -> String {
    let out = support::run_ok(&mut support::imgbuild_command(
        project,
        &[
            "build",
            "-f",
            spec,
            "--output",
            output,
            "--cache-dir",
            &cache.display().to_string(),
        ],
    ));
    support::last_line(&out, "imgbuild build")
}

/// The media types of an image's layers in an OCI layout, in order.
fn layer_media_types(layout: &Path) -> Vec<String> {
    let index = json_file(&layout.join("index.json"));
    let manifest = blob_json(layout, &index["manifests"][0]["digest"]);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// A locked hello-api with a spec on `base` (an OCI layout, tag latest) and `extra`
/// lines, and a directory outside the project for outputs and caches.
fn project(base: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let project = support::uv::uv_lock(&support::fixture("hello-api"));
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"hello_api.main:app\"\n{extra}",
            base.display()
        ),
    )
    .unwrap();
    let out = support::target_tempdir("zstd-out-").keep();
    (project, out)
}

/// Every path of an unpacked tree with its kind, mode and content hash or link target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let meta = e.path().symlink_metadata().unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(e.path()).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {mode:o}")
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                format!("file {mode:o} {}", hex::encode(Sha256::digest(&bytes)))
            };
            (rel, what)
        })
        .collect()
}

fn umoci_unpack(layout: &Path, bundle: &Path) -> BTreeMap<String, String> {
    let o = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack {}: {}",
        layout.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    tree(&bundle.join("rootfs"))
}

#[test]
fn a_zstd_base_is_read_like_gzip_and_its_image_runs_under_podman_and_containerd() {
    let base = support::base::zstd_copy(&support::base::base_image("amd64"));
    let (project, out) = project(&base, "");
    let cache = out.join("cache");
    // Bytecode (on by default) runs the base's Python, unpacked from its zstd layers,
    // and the native check reads the base's libraries for pydantic-core's.
    let layout = out.join("layout");
    let digest = build(
        &project,
        "imgbuild.toml",
        &format!("oci:{}:latest", layout.display()),
        &cache,
    );
    let types = layer_media_types(&layout);
    let base_layers = layer_media_types(&base).len();
    assert!(
        types[..base_layers].iter().all(|t| t == ZSTD),
        "the base's layers are kept as they are: {types:?}"
    );
    assert!(
        types[base_layers..].iter().all(|t| t == GZIP),
        "our own layers stay gzip by default: {types:?}"
    );

    let archive = out.join("image.tar");
    let again = build(
        &project,
        "imgbuild.toml",
        &format!("oci-archive:{}", archive.display()),
        &cache,
    );
    assert_eq!(digest, again);

    let run = support::podman::run_to_completion(
        &format!("oci-archive:{}", archive.display()),
        &["sh", "-c", IMPORTS],
    );
    assert_eq!(run.status, 0, "podman run failed: {}", run.stderr);
    assert!(run.stdout.contains("imports ok"), "{}", run.stdout);

    let ctrd = Containerd::start();
    let image = ctrd.import(&archive, "localhost/zstd-base");
    let said = ctrd.run_ok(&image, "zstd-base", &["sh", "-c", IMPORTS]);
    assert!(said.contains("imports ok"), "{said}");
}

#[test]
fn compression_zstd_is_reproducible_runs_and_unpacks_to_the_gzip_tree() {
    let base = support::base::base_image("amd64");
    let (project, out) = project(&base, "");
    std::fs::write(
        project.join("zstd.toml"),
        format!(
            "{}compression = \"zstd\"\n",
            std::fs::read_to_string(project.join("imgbuild.toml")).unwrap()
        ),
    )
    .unwrap();
    let layout = |name: &str| out.join(name);
    let oci = |name: &str| format!("oci:{}:latest", layout(name).display());

    let gzip = build(&project, "imgbuild.toml", &oci("gzip"), &out.join("c0"));
    let first = build(&project, "zstd.toml", &oci("zstd1"), &out.join("c1"));
    let second = build(&project, "zstd.toml", &oci("zstd2"), &out.join("c2"));
    assert_eq!(first, second, "two zstd builds from empty caches");
    assert_ne!(first, gzip);

    let types = layer_media_types(&layout("zstd1"));
    let base_layers = layer_media_types(&base).len();
    assert!(
        types[..base_layers].iter().all(|t| t == GZIP),
        "base layers are never recompressed: {types:?}"
    );
    assert!(
        types.len() > base_layers + 1 && types[base_layers..].iter().all(|t| t == ZSTD),
        "{types:?}"
    );

    // Debian's umoci (0.4.7) refuses zstd layers by media type; skopeo (containers/image,
    // what podman and CRI-O unpack with) reads ours and writes them as gzip for it.
    let o = Command::new("skopeo")
        .args(["copy", "--dest-compress-format", "gzip", "--dest-compress"])
        .arg(oci("zstd1"))
        .arg(oci("zstd-as-gzip"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let gzip_tree = umoci_unpack(&layout("gzip"), &out.join("bundle-gzip"));
    let zstd_tree = umoci_unpack(&layout("zstd-as-gzip"), &out.join("bundle-zstd"));
    assert!(gzip_tree.contains_key("app/hello_api/main.py"));
    let differ: Vec<_> = gzip_tree
        .iter()
        .filter(|(p, w)| zstd_tree.get(*p) != Some(*w))
        .map(|(p, _)| p)
        .chain(zstd_tree.keys().filter(|p| !gzip_tree.contains_key(*p)))
        .collect();
    assert!(differ.is_empty(), "the trees differ at {differ:?}");

    let archive = out.join("zstd.tar");
    let third = build(
        &project,
        "zstd.toml",
        &format!("oci-archive:{}", archive.display()),
        &out.join("c1"),
    );
    assert_eq!(third, first);
    let ctrd = Containerd::start();
    let image = ctrd.import(&archive, "localhost/zstd-layers");
    let said = ctrd.run_ok(&image, "zstd-layers", &["sh", "-c", IMPORTS]);
    assert!(said.contains("imports ok"), "{said}");
    let value: Value = json_file(&layout("zstd1").join("index.json"));
    assert_eq!(value["manifests"][0]["digest"], first);
}
