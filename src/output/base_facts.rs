//! Base facts beside an image (docs/reproducibility.md, "Base facts"): what a
//! build learnt from its base's layers, as a small OCI artifact in the image's
//! repository, tagged by a name derived from the base's manifest digest. A
//! fresh runner reads it (from the push target or `--cache-from`) instead of
//! downloading the base. It is a manifest of its own: the image's manifest,
//! and so its digest, do not change. With bytecode on, the compile root (the
//! base's interpreter, loader, libraries and stdlib, as the build unpacked
//! them) goes beside it the same way, so the runner compiles without the base.

use crate::digest::Digest;
use crate::image::json::canonical;
use crate::image::MEDIA_TYPE_OCI_MANIFEST;
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};
use serde_json::json;
use std::io::{self, Read};

/// The artifact's type and its one layer's media type; the version is the
/// document's: a reader of another version finds no tag, and reads the base.
pub const ARTIFACT_TYPE: &str = "application/vnd.imgbuild.base-facts.v1+json";

/// The manifest annotation naming the base the facts are about.
pub const ANNOTATION_BASE: &str = "dev.imgbuild.base.digest";

/// The most a facts document may weigh (hello-api's is about 1 KiB; a
/// base's library listing is the bulk, tens of KiB), and how long it may
/// take to arrive.
const MAX_FACTS: u64 = 4 << 20;
const FACTS_CAP: crate::http::BodyCap = crate::http::BodyCap {
    kind: "base facts",
    limit: MAX_FACTS,
    deadline: std::time::Duration::from_secs(30),
};

const EMPTY: &[u8] = b"{}";

/// A facts document about the base `base`, as JSON, and the compile root
/// the build started the base's interpreter in (bytecode on), to push too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseFactsDoc {
    pub base: Digest,
    pub bytes: Vec<u8>,
    pub compile_root: Option<std::path::PathBuf>,
}

/// `imgbuild-base-facts-v1-sha256-<hex>`: where the facts about `base` are.
pub fn tag(base: &Digest) -> String {
    format!("imgbuild-base-facts-v1-{}-{}", base.algorithm(), base.hex())
}

/// The artifact's manifest: an empty config, the document as its one layer,
/// the base's digest in an annotation.
pub fn manifest(doc: &BaseFactsDoc) -> Vec<u8> {
    let layer = (
        ARTIFACT_TYPE,
        Digest::of_bytes(&doc.bytes),
        doc.bytes.len() as u64,
    );
    artifact_manifest(ARTIFACT_TYPE, &doc.base, &[layer])
}

/// An artifact of `artifact_type` about the base `base`: an empty config,
/// `layers` (media type, bytes) in order, the base's digest in an annotation.
fn artifact_manifest(
    artifact_type: &str,
    base: &Digest,
    layers: &[(&str, Digest, u64)],
) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(media_type, digest, size)| {
            json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": size,
            })
        })
        .collect();
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": super::referrers::MEDIA_TYPE_EMPTY,
            "digest": Digest::of_bytes(EMPTY).to_string(),
            "size": EMPTY.len(),
            "data": "e30=",
        },
        "layers": layers,
        "annotations": { ANNOTATION_BASE: base.to_string() },
    }))
}

fn cursor(bytes: &[u8]) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(io::Cursor::new(bytes.to_vec())))
}

/// Pushes `doc` into `repo`'s repository under its tag, unless the tag holds
/// it already (one HEAD). Says whether anything was pushed.
pub fn publish(
    client: &RegistryClient,
    repo: &Reference,
    doc: &BaseFactsDoc,
) -> Result<bool, RegistryError> {
    let bytes = manifest(doc);
    let tag = tag(&doc.base);
    let tag_ref = repo
        .with_tag(&tag)
        .expect("a base facts tag is a valid tag");
    if client.head_manifest(&tag_ref)?.map(|(d, _)| d) == Some(Digest::of_bytes(&bytes)) {
        return Ok(false);
    }
    put_artifact(client, repo, &tag, &bytes, &[&doc.bytes])?;
    Ok(true)
}

/// The empty config, `blobs`, then the manifest `bytes` under `tag`.
fn put_artifact(
    client: &RegistryClient,
    repo: &Reference,
    tag: &str,
    bytes: &[u8],
    blobs: &[&[u8]],
) -> Result<(), RegistryError> {
    push_small_blobs(client, repo, blobs)?;
    client.put_manifest(repo, tag, bytes, MEDIA_TYPE_OCI_MANIFEST)?;
    Ok(())
}

/// The empty config and `blobs` (each small, from memory).
fn push_small_blobs(
    client: &RegistryClient,
    repo: &Reference,
    blobs: &[&[u8]],
) -> Result<(), RegistryError> {
    let empty = Digest::of_bytes(EMPTY);
    client.push_blob(repo, &empty, EMPTY.len() as u64, &|| cursor(EMPTY), None)?;
    for blob in blobs {
        let (digest, size) = (Digest::of_bytes(blob), blob.len() as u64);
        client.push_blob(repo, &digest, size, &|| cursor(blob), None)?;
    }
    Ok(())
}

/// The artifact type of a compile root (docs/reproducibility.md): the base's
/// interpreter tree as a zstd tar, after its stamp (v1 was a gzip tar).
pub const COMPILE_ROOT_TYPE: &str = "application/vnd.imgbuild.compile-root.v2.tar+zstd";

/// The media type of a compile root's stamp (what probing the interpreter found).
pub const STAMP_TYPE: &str = "application/vnd.imgbuild.compile-root-stamp.v1+json";

/// `imgbuild-compile-root-v2-sha256-<hex>`: where the compile root of `base` is.
pub fn compile_root_tag(base: &Digest) -> String {
    format!(
        "imgbuild-compile-root-v2-{}-{}",
        base.algorithm(),
        base.hex()
    )
}

/// The most a compile root may weigh (bookworm's is 13 MB), and its stamp.
const ROOT_CAP: crate::http::BodyCap = crate::http::BodyCap {
    kind: "compile root",
    limit: 512 << 20,
    deadline: std::time::Duration::from_secs(600),
};
const STAMP_CAP: crate::http::BodyCap = crate::http::BodyCap {
    kind: "compile root stamp",
    limit: 64 << 10,
    deadline: std::time::Duration::from_secs(30),
};

/// Pushes the compile root of `base` into `repo`'s repository unless its tag
/// is there already: it depends only on the base, so one is enough, and
/// `pack` (tens of MB to compress) runs only when it is not. Says whether
/// anything was pushed.
pub fn publish_compile_root(
    client: &RegistryClient,
    repo: &Reference,
    base: &Digest,
    pack: impl FnOnce() -> io::Result<PackedRoot>,
) -> Result<bool, RegistryError> {
    let tag = compile_root_tag(base);
    let tag_ref = repo
        .with_tag(&tag)
        .expect("a compile root tag is a valid tag");
    if client.head_manifest(&tag_ref)?.is_some() {
        return Ok(false);
    }
    let packed = pack().map_err(|source| RegistryError::Io {
        what: format!("packing the compile root of {}", base.short()),
        source,
    })?;
    let stamp = &packed.stamp;
    let layers = [
        (STAMP_TYPE, Digest::of_bytes(stamp), stamp.len() as u64),
        (COMPILE_ROOT_TYPE, packed.digest.clone(), packed.size),
    ];
    let bytes = artifact_manifest(COMPILE_ROOT_TYPE, base, &layers);
    push_small_blobs(client, repo, &[stamp])?;
    // The tar, streamed from its file (and again from it on a retry).
    let path = packed.tar.path().to_path_buf();
    let open = || -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::new(std::fs::File::open(&path)?)))
    };
    client.push_blob(repo, &packed.digest, packed.size, &open, None)?;
    client.put_manifest(repo, &tag, &bytes, MEDIA_TYPE_OCI_MANIFEST)?;
    Ok(true)
}

pub use crate::python::bytecode::packed::PackedRoot;

/// A compile root as read back: its zstd tar in a temporary file, and its stamp.
pub struct FetchedRoot {
    pub tar: tempfile::NamedTempFile,
    pub size: u64,
    pub stamp: Vec<u8>,
}

/// The compile root of `base` in `repo`'s repository, if there is one: its
/// tar (streamed into a temporary file in `scratch`, within its cap) and its
/// stamp, each checked against the digest its manifest gives.
pub fn read_compile_root(
    client: &RegistryClient,
    repo: &Reference,
    base: &Digest,
    scratch: &std::path::Path,
) -> Result<Option<FetchedRoot>, RegistryError> {
    let tag_ref = repo.with_tag(&compile_root_tag(base)).expect("a valid tag");
    let manifest = match client.get_manifest(&tag_ref) {
        Ok((bytes, _, _)) => bytes,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let types = [(STAMP_TYPE, &STAMP_CAP), (COMPILE_ROOT_TYPE, &ROOT_CAP)];
    let Some(layers) = artifact_layers(&manifest, COMPILE_ROOT_TYPE, base, &types) else {
        return Ok(None);
    };
    let [(stamp_digest, stamp_size), (tar_digest, tar_size)] =
        [layers[0].clone(), layers[1].clone()];
    let stamp = read_blob(client, repo, &stamp_digest, stamp_size, &STAMP_CAP)?;
    let what = || format!("reading the compile root {tar_digest} of {}", repo.name());
    let io_err = |source: io::Error| RegistryError::Io {
        what: what(),
        source,
    };
    std::fs::create_dir_all(scratch).map_err(io_err)?;
    let mut tar = tempfile::NamedTempFile::new_in(scratch).map_err(io_err)?;
    // get_blob fails the read at its end unless the bytes match the digest;
    // the size is held to the manifest's (itself within the cap).
    let _span = crate::trace::span(|| "compile root: download".into());
    let blob = client.get_blob(repo, &tar_digest, Some(tar_size))?;
    let copied = io::copy(&mut blob.take(ROOT_CAP.limit + 1), tar.as_file_mut()).map_err(io_err)?;
    if copied != tar_size {
        return Err(io_err(io::Error::other(format!(
            "{copied} bytes, not the {tar_size} its manifest gives"
        ))));
    }
    Ok(Some(FetchedRoot {
        tar,
        size: copied,
        stamp,
    }))
}

/// A blob of an artifact, whole, within `cap`; verified against `digest`.
fn read_blob(
    client: &RegistryClient,
    repo: &Reference,
    digest: &Digest,
    size: u64,
    cap: &crate::http::BodyCap,
) -> Result<Vec<u8>, RegistryError> {
    let what = format!("reading {} {} of {}", cap.kind, digest, repo.name());
    let blob = client.get_blob(repo, digest, Some(size))?;
    // get_blob fails the read at its end unless the bytes match `digest`.
    crate::http::read_capped(blob, cap, cap.kind).map_err(|e| RegistryError::Io {
        what,
        source: io::Error::other(e),
    })
}

/// The facts document about `base` in `repo`'s repository, if there is one:
/// its manifest must say it is about `base`, and its bytes are checked
/// against the digest the manifest gives. `None` when absent or not ours.
pub fn read(
    client: &RegistryClient,
    repo: &Reference,
    base: &Digest,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let tag_ref = repo.with_tag(&tag(base)).expect("a valid tag");
    let manifest = match client.get_manifest(&tag_ref) {
        Ok((bytes, _, _)) => bytes,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some((digest, size)) = facts_layer(&manifest, base) else {
        return Ok(None);
    };
    Ok(Some(read_blob(client, repo, &digest, size, &FACTS_CAP)?))
}

/// Whether `e` says the tag (or the repository) is not there.
pub fn is_absent(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::ManifestUnknown { .. } | RegistryError::NameUnknown { .. }
    ) || matches!(e, RegistryError::Status { status: 404, .. })
}

/// The facts layer's digest and size, when `manifest` is a base facts
/// artifact about `base` whose document is within the size cap.
fn facts_layer(manifest: &[u8], base: &Digest) -> Option<(Digest, u64)> {
    artifact_layers(
        manifest,
        ARTIFACT_TYPE,
        base,
        &[(ARTIFACT_TYPE, &FACTS_CAP)],
    )?
    .pop()
}

/// Each layer's digest and size, when `manifest` is an artifact of
/// `artifact_type` about `base` whose layers are of `types`, in that order,
/// each within its cap.
fn artifact_layers(
    manifest: &[u8],
    artifact_type: &str,
    base: &Digest,
    types: &[(&str, &crate::http::BodyCap)],
) -> Option<Vec<(Digest, u64)>> {
    let m: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    if m["artifactType"] != artifact_type
        || m["annotations"][ANNOTATION_BASE] != base.to_string().as_str()
    {
        return None;
    }
    let layers = m["layers"].as_array()?;
    if layers.len() != types.len() {
        return None;
    }
    let mut out = Vec::new();
    for (layer, (media_type, cap)) in layers.iter().zip(types) {
        if layer["mediaType"] != *media_type {
            return None;
        }
        let size = layer["size"].as_u64().filter(|s| *s <= cap.limit)?;
        out.push((layer["digest"].as_str()?.parse().ok()?, size));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> BaseFactsDoc {
        BaseFactsDoc {
            base: Digest::of_bytes(b"base manifest"),
            bytes: br#"{"python":null}"#.to_vec(),
            compile_root: None,
        }
    }

    #[test]
    fn the_tag_is_derived_from_the_base_digest_and_is_a_valid_tag() {
        let d = doc();
        let t = tag(&d.base);
        assert_eq!(t, format!("imgbuild-base-facts-v1-sha256-{}", d.base.hex()));
        assert!(t.len() <= 128);
        let r = Reference::parse("127.0.0.1:5000/svc:latest").unwrap();
        assert!(r.with_tag(&t).is_ok());
    }

    #[test]
    fn the_manifest_names_its_base_and_only_that_base_is_accepted() {
        let d = doc();
        let m = manifest(&d);
        let (digest, size) = facts_layer(&m, &d.base).unwrap();
        assert_eq!(digest, Digest::of_bytes(&d.bytes));
        assert_eq!(size, d.bytes.len() as u64);
        assert_eq!(facts_layer(&m, &Digest::of_bytes(b"another base")), None);
        // Canonical and stable: an unchanged document is not pushed again.
        assert_eq!(m, manifest(&d));
    }

    #[test]
    fn an_oversized_or_foreign_document_is_refused() {
        let d = doc();
        let mut v: serde_json::Value = serde_json::from_slice(&manifest(&d)).unwrap();
        v["layers"][0]["size"] = (MAX_FACTS + 1).into();
        assert_eq!(facts_layer(&canonical(&v), &d.base), None);
        let mut v: serde_json::Value = serde_json::from_slice(&manifest(&d)).unwrap();
        v["artifactType"] = "application/spdx+json".into();
        assert_eq!(facts_layer(&canonical(&v), &d.base), None);
    }
}
