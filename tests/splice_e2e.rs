//! Layers spliced from wheels (layer format 4): each deflated wheel file is a gzip
//! member of its own. Real unpackers must read such layers as one tar, giving the
//! same tree as the previous format, where each layer was one gzip stream.
//!
//! The previous format is made here from the image itself: every layer inflated
//! and compressed again as one member, the way format 3 wrote it, the manifest
//! pointing at those blobs. umoci, podman (through skopeo) and skopeo copy plus
//! umoci unpack both images; containerd runs the spliced one.

mod support;

use base64::Engine as _;
use flate2::read::MultiGzDecoder;
use imgbuild::digest::Digest;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::containerd::Containerd;
use support::layout::json_file;
use support::podman;

/// A wheel with a stored (method 0) entry next to deflated ones, and a
/// `#!python` script the installer rewrites.
fn stored_demo_wheel(dir: &Path) -> String {
    let name = "stored_demo-1.0-py3-none-any.whl";
    let big: String = (0..3000)
        .map(|i| format!("def f{i}(x):\n    return x + {i}\n"))
        .collect();
    let files: [(&str, &[u8], bool); 6] = [
        (
            "stored_demo/__init__.py",
            b"from pathlib import Path\nDATA = (Path(__file__).parent / 'data.txt').read_text()\n",
            false,
        ),
        ("stored_demo/data.txt", b"stored, not deflated\n", true),
        ("stored_demo/big.py", big.as_bytes(), false),
        (
            "stored_demo-1.0.data/scripts/stored-demo",
            b"#!python\nimport stored_demo\nprint(stored_demo.DATA)\n",
            false,
        ),
        (
            "stored_demo-1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: stored-demo\nVersion: 1.0\n",
            false,
        ),
        (
            "stored_demo-1.0.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            false,
        ),
    ];
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.join(name)).unwrap());
    let mut record = String::new();
    for (path, bytes, stored) in files {
        let method = if stored {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .unix_permissions(0o644);
        zip.start_file(path, opts).unwrap();
        zip.write_all(bytes).unwrap();
        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes));
        record.push_str(&format!("{path},sha256={hash},{}\n", bytes.len()));
    }
    record.push_str("stored_demo-1.0.dist-info/RECORD,,\n");
    zip.start_file(
        "stored_demo-1.0.dist-info/RECORD",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    name.to_string()
}

/// hello-api with its locked dependencies plus the stored-entry wheel as a path
/// source, built on the Debian base into `oci:layout:v1` and `oci-archive:image.tar`.
fn build_spliced(root: &Path) -> PathBuf {
    let source = root.join("src");
    copy_tree(&support::fixture("hello-api"), &source);
    std::fs::create_dir_all(source.join("wheels")).unwrap();
    let wheel = stored_demo_wheel(&source.join("wheels"));
    let pyproject = std::fs::read_to_string(source.join("pyproject.toml")).unwrap();
    let pyproject = pyproject.replacen(
        "dependencies = [",
        "dependencies = [\n    \"stored-demo\",",
        1,
    );
    std::fs::write(
        source.join("pyproject.toml"),
        format!("{pyproject}\n[tool.uv.sources]\nstored-demo = {{ path = \"wheels/{wheel}\" }}\n"),
    )
    .unwrap();
    let project = support::uv::uv_lock(&source);
    std::fs::write(
        project.join("imgbuild.toml"),
        format!(
            "base = \"{}\"\napp = \"hello_api.main:app\"\nbytecode = false\n",
            support::base::base_image_ref("amd64")
        ),
    )
    .unwrap();
    for output in ["oci:layout:v1", "oci-archive:image.tar"] {
        support::run_ok(&mut support::imgbuild_command(
            &project,
            &["build", "--output", output, "--cache-dir", "cache"],
        ));
    }
    project
}

fn copy_tree(from: &Path, to: &Path) {
    support::run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Gzip members in a blob: counted by reading one member at a time.
fn gzip_members(blob: &[u8]) -> usize {
    let mut rest = blob;
    let mut members = 0;
    while !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        rest = d.into_inner();
        members += 1;
    }
    members
}

/// Copies `layout` to `dest` with every layer of its one image compressed again
/// as a single gzip member (format 3's shape); checks each still inflates to its
/// diff_id. Returns the spliced and the recompressed sizes of all layers.
fn recompressed_copy(layout: &Path, dest: &Path) -> (u64, u64) {
    copy_tree(layout, dest);
    let mut index = json_file(&dest.join("index.json"));
    let manifest_desc = &mut index["manifests"][0];
    let mut manifest = json_file(&blob_path(dest, manifest_desc["digest"].as_str().unwrap()));
    let config = json_file(&blob_path(
        dest,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let (mut spliced, mut single) = (0, 0);
    let mut multi = 0;
    for (layer, diff_id) in manifest["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        let blob = std::fs::read(blob_path(dest, layer["digest"].as_str().unwrap())).unwrap();
        let mut tar = Vec::new();
        MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(
            Digest::of_bytes(&tar).to_string(),
            diff_id.as_str().unwrap(),
            "a layer does not inflate to its diff_id"
        );
        if gzip_members(&blob) > 1 {
            multi += 1;
        }
        let mut gz = imgbuild::layer::compress::gzip_writer(Vec::new());
        gz.write_all(&tar).unwrap();
        let again = gz.finish().unwrap();
        let digest = Digest::of_bytes(&again);
        std::fs::write(blob_path(dest, &digest.to_string()), &again).unwrap();
        spliced += blob.len() as u64;
        single += again.len() as u64;
        layer["digest"] = Value::String(digest.to_string());
        layer["size"] = Value::from(again.len());
    }
    assert!(
        multi >= 2,
        "no package layer was spliced ({multi} multi-member layers)"
    );
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = Digest::of_bytes(&bytes);
    std::fs::write(blob_path(dest, &digest.to_string()), &bytes).unwrap();
    manifest_desc["digest"] = Value::String(digest.to_string());
    manifest_desc["size"] = Value::from(bytes.len());
    std::fs::write(dest.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    (spliced, single)
}

/// Path -> "type mode content" for every entry: the sha256 of a file's bytes,
/// a symlink's target.
type Tree = BTreeMap<String, String>;

fn walk(root: &Path, dir: &Path, out: &mut Tree) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let line = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            walk(root, &path, out);
            format!("dir {mode:o}")
        } else {
            let hash = Digest::of_bytes(&std::fs::read(&path).unwrap());
            format!("file {mode:o} {hash}")
        };
        out.insert(rel, line);
    }
}

fn umoci_tree(image: &str, bundle: &Path) -> Tree {
    support::run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image", image])
            .arg(bundle),
    );
    let rootfs = bundle.join("rootfs");
    let mut tree = Tree::new();
    walk(&rootfs, &rootfs, &mut tree);
    tree
}

/// The image's filesystem as podman stores it: imported through skopeo into
/// containers-storage, then `podman export` of a container never started.
fn podman_tree(layout: &Path) -> Tree {
    let image = podman::import(&format!("oci:{}:v1", layout.display()), None);
    let container = podman::podman_ok(&["create", &image, "true"])
        .trim()
        .to_string();
    let out = podman::podman()
        .args(["export", &container])
        .output()
        .unwrap();
    let _ = podman::podman().args(["rm", "-f", &container]).output();
    podman::remove_image(&image);
    assert!(out.status.success(), "podman export failed");
    let mut tree = Tree::new();
    let mut archive = tar::Archive::new(&out.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let mode = entry.header().mode().unwrap() & 0o7777;
        let line = match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                format!("link {}", entry.link_name().unwrap().unwrap().display())
            }
            tar::EntryType::Directory => format!("dir {mode:o}"),
            _ => {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                format!("file {mode:o} {}", Digest::of_bytes(&bytes))
            }
        };
        tree.insert(path, line);
    }
    tree
}

fn assert_same_tree(what: &str, spliced: &Tree, previous: &Tree) {
    let differ: Vec<_> = spliced
        .keys()
        .chain(previous.keys())
        .filter(|k| spliced.get(*k) != previous.get(*k))
        .take(10)
        .map(|k| format!("{k}: {:?} vs {:?}", spliced.get(k), previous.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: the trees differ:\n{}",
        differ.join("\n")
    );
    assert!(
        spliced.contains_key("app/.venv/lib/python3.11/site-packages/stored_demo/data.txt"),
        "{what}: the stored entry is missing"
    );
}

#[test]
fn spliced_layers_unpack_to_the_previous_formats_tree_in_umoci_podman_skopeo_and_containerd() {
    let tmp = support::target_tempdir("splice-");
    let project = build_spliced(tmp.path());
    let layout = project.join("layout");
    let previous = tmp.path().join("previous");
    let (spliced_bytes, single_bytes) = recompressed_copy(&layout, &previous);
    eprintln!("layers: spliced {spliced_bytes} bytes, one member each {single_bytes} bytes");
    assert!(
        spliced_bytes < single_bytes,
        "splicing made the layers bigger: {spliced_bytes} vs {single_bytes}"
    );

    let umoci_spliced = umoci_tree(&format!("{}:v1", layout.display()), &tmp.path().join("u1"));
    let umoci_previous = umoci_tree(
        &format!("{}:v1", previous.display()),
        &tmp.path().join("u2"),
    );
    assert_same_tree("umoci", &umoci_spliced, &umoci_previous);
    let data = std::fs::read_to_string(
        tmp.path()
            .join("u1/rootfs/app/.venv/lib/python3.11/site-packages/stored_demo/data.txt"),
    )
    .unwrap();
    assert_eq!(data, "stored, not deflated\n");

    let copied = tmp.path().join("copied");
    support::run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:v1", layout.display()),
        &format!("oci:{}:v1", copied.display()),
    ]));
    let skopeo_umoci = umoci_tree(&format!("{}:v1", copied.display()), &tmp.path().join("u3"));
    assert_same_tree("skopeo copy + umoci", &skopeo_umoci, &umoci_previous);

    assert_same_tree("podman", &podman_tree(&layout), &podman_tree(&previous));

    // containerd unpacks the spliced archive and runs the app's packages from it.
    let ctrd = Containerd::start();
    let imported = ctrd.ctr_ok(&[
        "images",
        "import",
        "--index-name",
        "localhost/splice:v1",
        &project.join("image.tar").to_string_lossy(),
    ]);
    let listed = ctrd.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        listed.contains("localhost/splice:v1"),
        "{imported}\n{listed}"
    );
    let out = ctrd.ctr_ok(&[
        "run",
        "--rm",
        "localhost/splice:v1",
        "splice-check",
        "/app/.venv/bin/python",
        "-c",
        "import fastapi, stored_demo; print(stored_demo.DATA, end='')",
    ]);
    assert_eq!(out, "stored, not deflated\n");
    let out = ctrd.ctr_ok(&[
        "run",
        "--rm",
        "localhost/splice:v1",
        "splice-script",
        "/app/.venv/bin/stored-demo",
    ]);
    assert_eq!(out, "stored, not deflated\n\n");
}
