//! Pushing a test image straight through the registry client, as the CLI's
//! push does: every blob, then the manifest only if every blob was confirmed.
//! Shared by the fake-registry and real-registry tests.

use imgbuild::digest::Digest;
use imgbuild::reference::Reference;
use imgbuild::registry::client::MEDIA_TYPE_OCI_MANIFEST;
use imgbuild::registry::{BlobUpload, PushOutcome, RegistryClient, RegistryError};
use std::io::{Cursor, Read};

/// Blobs (layers, then the config) and a manifest naming them.
pub struct Image {
    pub blobs: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

/// Pushes `img` to `r` (which must carry a tag), mounting each blob from
/// `mount_from` when given. The first failed blob ends the push before any
/// manifest is put.
pub fn push_image(
    client: &RegistryClient,
    r: &Reference,
    img: &Image,
    mount_from: Option<&str>,
) -> Result<(Vec<PushOutcome>, Digest), RegistryError> {
    type Open = Box<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Sync>;
    let opens: Vec<Open> = img
        .blobs
        .iter()
        .map(|b| {
            let b = b.clone();
            Box::new(move || Ok(Box::new(Cursor::new(b.clone())) as Box<dyn Read + Send>)) as Open
        })
        .collect();
    let uploads: Vec<BlobUpload> = img
        .blobs
        .iter()
        .zip(&opens)
        .map(|(b, open)| BlobUpload {
            digest: Digest::of_bytes(b),
            size: b.len() as u64,
            open: &**open,
            mount_from: mount_from.map(str::to_string),
        })
        .collect();
    let outcomes = client
        .push_blobs_parallel(r, &uploads)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let d = client.put_manifest(
        r,
        r.tag.as_deref().unwrap(),
        &img.manifest,
        MEDIA_TYPE_OCI_MANIFEST,
    )?;
    Ok((outcomes, d))
}

/// Puts an OCI index of `manifests` (whose blobs are already there) on the
/// anonymous registry at `host` as `python:3.11`, and returns its digest.
pub fn put_base_index(host: &str, manifests: Vec<serde_json::Value>) -> String {
    let media_type = imgbuild::registry::client::MEDIA_TYPE_OCI_INDEX;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media_type, "manifests": manifests,
    }))
    .unwrap();
    let client = RegistryClient::new(
        imgbuild::registry::TransportOptions::default(),
        imgbuild::registry::credentials::Anonymous,
    )
    .unwrap();
    let repo = Reference::parse(&format!("{host}/python:3.11")).unwrap();
    client
        .put_manifest(&repo, "3.11", &index, media_type)
        .unwrap_or_else(|e| panic!("putting the base index: {e}"))
        .to_string()
}
