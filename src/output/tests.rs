//! The outputs over an in-memory build: a store layer, a base layer served
//! from bytes by a `BlobSource`, a config and a manifest.

use super::archive::write_docker_archive;
use super::layout::{write_oci_archive, write_oci_layout};
use super::*;
use crate::base::{BaseError, BlobSource};
use crate::image::manifest::Index;
use crate::image::{ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_MANIFEST};
use crate::layer::MEDIA_TYPE_OCI_LAYER_GZIP;
use std::collections::HashMap;
use std::path::Path;

/// A base whose blobs are bytes in memory; the bytes may differ from what
/// their digest promises, to play a corrupt source.
struct BytesSource(HashMap<Digest, Vec<u8>>);

impl BlobSource for BytesSource {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        match self.0.get(digest) {
            Some(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
            None => Err(BaseError::MissingBlob {
                base: "bytes".into(),
                digest: digest.clone(),
            }),
        }
    }
    fn name(&self) -> &str {
        "bytes"
    }
}

fn layer(digest: Digest, size: u64) -> Layer {
    Layer {
        diff_id: digest.clone(),
        digest,
        size,
        media_type: MEDIA_TYPE_OCI_LAYER_GZIP.into(),
    }
}

/// One image: a base layer (served as `base_served`) and a store layer.
fn image(store: &Store, app: &[u8], base_served: &[u8]) -> BuildResult {
    let base_bytes: &[u8] = b"base layer";
    let base_digest = Digest::of_bytes(base_bytes);
    let source = BytesSource(HashMap::from([(base_digest.clone(), base_served.to_vec())]));
    let (app_digest, app_size, ()) = store.write_blob(|w| w.write_all(app)).unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let manifest = format!(r#"{{"app":"{app_digest}"}}"#).into_bytes();
    BuildResult {
        images: vec![BuiltImage {
            platform: "linux/amd64".parse().unwrap(),
            config_digest: Digest::of_bytes(&config),
            config,
            manifest_digest: Digest::of_bytes(&manifest),
            manifest,
            layers: vec![
                ImageLayer {
                    layer: layer(base_digest, base_bytes.len() as u64),
                    origin: BlobOrigin::Base(Arc::new(source)),
                    label: "base".into(),
                    annotations: None,
                },
                ImageLayer {
                    layer: layer(app_digest, app_size),
                    origin: BlobOrigin::Store,
                    label: "app".into(),
                    annotations: None,
                },
            ],
            base_repository: None,
            packages: Vec::new(),
            sdist_builds: Vec::new(),
            source_tree: None,
            sources: Default::default(),
        }],
        index: None,
        base_facts: Vec::new(),
        local_dirs: Vec::new(),
    }
}

/// A temporary directory with a store in it.
fn scratch() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    (tmp, store)
}

fn read_index(dir: &Path) -> Index {
    serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap()
}

fn tags(index: &Index) -> Vec<(String, Digest)> {
    index
        .manifests
        .iter()
        .map(|d| {
            (
                d.annotation(ANNOTATION_REF_NAME).unwrap_or("").to_string(),
                d.digest.clone(),
            )
        })
        .collect()
}

#[test]
fn a_new_layout_holds_every_blob_under_its_digest_and_the_tag_in_index_json() {
    let (tmp, store) = scratch();
    let result = image(&store, b"app layer", b"base layer");
    let dir = tmp.path().join("out");
    write_oci_layout(&result, &dir, "v1", &store).unwrap();

    assert_eq!(
        std::fs::read(dir.join("oci-layout")).unwrap(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 4, "two layers, config, manifest");
    for b in blobs {
        let name = b.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(Digest::of_bytes(&std::fs::read(&b).unwrap()).hex(), name);
    }
    let index = read_index(&dir);
    assert_eq!(tags(&index), [("v1".to_string(), result.digest())]);
    assert_eq!(index.manifests[0].media_type, MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(
        index.manifests[0].platform.as_ref().unwrap().to_string(),
        "linux/amd64"
    );
}

#[test]
fn an_existing_layout_gains_the_tag_and_keeps_the_rest_of_its_index() {
    let (tmp, store) = scratch();
    let dir = tmp.path().join("out");
    let first = image(&store, b"app one", b"base layer");
    write_oci_layout(&first, &dir, "v1", &store).unwrap();
    // Another tool's field in index.json survives our rewrite.
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["io.example.tool"] = serde_json::json!("kept");
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();

    let second = image(&store, b"app two", b"base layer");
    write_oci_layout(&second, &dir, "v2", &store).unwrap();
    let third = image(&store, b"app three", b"base layer");
    write_oci_layout(&third, &dir, "v1", &store).unwrap();

    let index = read_index(&dir);
    assert_eq!(
        tags(&index),
        [
            ("v2".to_string(), second.digest()),
            ("v1".to_string(), third.digest())
        ]
    );
    assert_eq!(index.extra["io.example.tool"], "kept");
    assert!(dir
        .join("blobs/sha256")
        .join(first.digest().hex())
        .is_file());
}

#[test]
fn a_directory_that_is_not_a_layout_is_refused_and_left_alone() {
    let (tmp, store) = scratch();
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err =
        write_oci_layout(&image(&store, b"a", b"base layer"), &dir, "v1", &store).unwrap_err();
    assert!(matches!(err, OutputError::NotALayout { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn a_corrupt_base_blob_fails_the_layout_and_leaves_nothing_behind() {
    let (tmp, store) = scratch();
    let dir = tmp.path().join("out");
    let result = image(&store, b"app", b"base layeR");
    let err = write_oci_layout(&result, &dir, "v1", &store).unwrap_err();
    let chain = crate::registry::error::chain_message(&err);
    assert!(chain.contains("does not match its digest"), "{chain}");
    assert!(!dir.exists());
    // Only the store is left in the parent: no staged directory.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn an_oci_archive_is_the_same_file_every_time_and_holds_the_layout() {
    let (tmp, store) = scratch();
    let result = image(&store, b"app", b"base layer");
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    write_oci_archive(&result, &a, "v1", &store, 0).unwrap();
    write_oci_archive(&result, &b, "v1", &store, 0).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    let mut names: Vec<String> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with('/'))
        .collect();
    names.retain(|n| !n.starts_with("blobs/"));
    assert_eq!(names, ["index.json", "oci-layout"]);
}

#[test]
fn a_docker_archive_names_config_layers_and_tag_and_takes_one_platform_only() {
    let (tmp, store) = scratch();
    let result = image(&store, b"app", b"base layer");
    let file = tmp.path().join("d.tar");
    write_docker_archive(&result, &file, "localhost/app:1", &store, 0).unwrap();
    let mut archive = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let manifest: serde_json::Value = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    let img = &result.images[0];
    assert_eq!(
        manifest,
        serde_json::json!([{
            "Config": format!("blobs/sha256/{}", img.config_digest.hex()),
            "RepoTags": ["localhost/app:1"],
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.layer.digest.hex())).collect::<Vec<_>>(),
        }])
    );

    let mut two = result.clone();
    two.images.push(result.images[0].clone());
    let err = write_docker_archive(&two, &tmp.path().join("e.tar"), "x:1", &store, 0).unwrap_err();
    assert!(
        matches!(err, OutputError::OnePlatformOnly { count: 2 }),
        "{err}"
    );
    assert!(!tmp.path().join("e.tar").exists());
}
