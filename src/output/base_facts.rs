//! Base facts beside an image (docs/reproducibility.md, "Base facts"): what a
//! build learnt from its base's layers, as a small OCI artifact in the image's
//! repository, tagged by a name derived from the base's manifest digest. A
//! fresh runner reads it (from the push target or `--cache-from`) instead of
//! downloading the base. It is a manifest of its own: the image's manifest,
//! and so its digest, do not change.

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

/// A facts document about the base `base`, as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseFactsDoc {
    pub base: Digest,
    pub bytes: Vec<u8>,
}

/// `imgbuild-base-facts-v1-sha256-<hex>`: where the facts about `base` are.
pub fn tag(base: &Digest) -> String {
    format!("imgbuild-base-facts-v1-{}-{}", base.algorithm(), base.hex())
}

/// The artifact's manifest: an empty config, the document as its one layer,
/// the base's digest in an annotation.
pub fn manifest(doc: &BaseFactsDoc) -> Vec<u8> {
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": super::referrers::MEDIA_TYPE_EMPTY,
            "digest": Digest::of_bytes(EMPTY).to_string(),
            "size": EMPTY.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": ARTIFACT_TYPE,
            "digest": Digest::of_bytes(&doc.bytes).to_string(),
            "size": doc.bytes.len(),
        }],
        "annotations": { ANNOTATION_BASE: doc.base.to_string() },
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
    let empty = Digest::of_bytes(EMPTY);
    client.push_blob(repo, &empty, EMPTY.len() as u64, &|| cursor(EMPTY), None)?;
    let facts = Digest::of_bytes(&doc.bytes);
    let size = doc.bytes.len() as u64;
    client.push_blob(repo, &facts, size, &|| cursor(&doc.bytes), None)?;
    client.put_manifest(repo, &tag, &bytes, MEDIA_TYPE_OCI_MANIFEST)?;
    Ok(true)
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
    let what = format!("reading base facts {} of {}", digest, repo.name());
    let blob = client.get_blob(repo, &digest, Some(size))?;
    // get_blob fails the read at its end unless the bytes match `digest`.
    let bytes = crate::http::read_capped(blob, &FACTS_CAP, "base facts").map_err(|e| {
        RegistryError::Io {
            what,
            source: io::Error::other(e),
        }
    })?;
    Ok(Some(bytes))
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
    let m: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    if m["artifactType"] != ARTIFACT_TYPE
        || m["annotations"][ANNOTATION_BASE] != base.to_string().as_str()
    {
        return None;
    }
    let layer = &m["layers"][0];
    if layer["mediaType"] != ARTIFACT_TYPE {
        return None;
    }
    let size = layer["size"].as_u64().filter(|s| *s <= MAX_FACTS)?;
    Some((layer["digest"].as_str()?.parse().ok()?, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> BaseFactsDoc {
        BaseFactsDoc {
            base: Digest::of_bytes(b"base manifest"),
            bytes: br#"{"python":null}"#.to_vec(),
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
