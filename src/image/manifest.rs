//! Manifest, index and descriptor documents. Our own small serde types, so
//! unknown fields of a base image's documents survive a round trip (`extra`).

use crate::digest::Digest;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: None,
            urls: None,
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Self {
        Index {
            schema_version: 2,
            media_type: Some(super::MEDIA_TYPE_OCI_INDEX.to_string()),
            manifests,
            annotations: None,
            extra: BTreeMap::new(),
        }
    }
}

/// What a manifest-or-index document is, read from its mediaType field, or,
/// for documents that leave it out, from its shape.
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(mt.to_string());
    }
    if v.get("manifests").is_some() {
        Some(super::MEDIA_TYPE_OCI_INDEX.to_string())
    } else if v.get("layers").is_some() {
        Some(super::MEDIA_TYPE_OCI_MANIFEST.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::json::canonical;

    fn digest(s: &str) -> Digest {
        Digest::of_bytes(s.as_bytes())
    }

    /// The manifest we write, built with our types.
    fn our_manifest() -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(crate::image::MEDIA_TYPE_OCI_MANIFEST.into()),
            config: Descriptor::new(crate::image::MEDIA_TYPE_OCI_CONFIG, digest("config"), 6),
            layers: vec![Descriptor::new(
                crate::layer::MEDIA_TYPE_OCI_LAYER_GZIP,
                digest("layer"),
                5,
            )],
            annotations: Some(BTreeMap::from([(
                crate::image::ANNOTATION_BASE_NAME.to_string(),
                "oci:base:latest".to_string(),
            )])),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn oci_spec_could_write_our_manifest_byte_for_byte() {
        use oci_spec::image as oci;
        let ours = canonical(&our_manifest());
        let desc = |mt: &str, d: Digest, size| {
            oci::Descriptor::new(
                oci::MediaType::from(mt),
                size,
                d.to_string().parse::<oci::Digest>().unwrap(),
            )
        };
        let theirs = oci::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(oci::MediaType::ImageManifest)
            .config(desc(
                crate::image::MEDIA_TYPE_OCI_CONFIG,
                digest("config"),
                6,
            ))
            .layers(vec![desc(
                crate::layer::MEDIA_TYPE_OCI_LAYER_GZIP,
                digest("layer"),
                5,
            )])
            .annotations(std::collections::HashMap::from([(
                crate::image::ANNOTATION_BASE_NAME.to_string(),
                "oci:base:latest".to_string(),
            )]))
            .build()
            .unwrap();
        assert_eq!(
            String::from_utf8(canonical(&theirs)).unwrap(),
            String::from_utf8(ours).unwrap()
        );
    }

    /// Why we keep our own types: `output::layout` rewrites an existing
    /// index.json, and what other tools put there must survive. oci-spec's
    /// types have no place for unknown fields, and its Platform names the
    /// spec's `os.version` `os_version`, so it drops that too.
    #[test]
    fn oci_spec_drops_what_an_existing_layout_index_holds() {
        let existing = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"windows","os.version":"10.0.17763"}}}}],"io.example.tool":{{"kept":true}}}}"#,
            crate::image::MEDIA_TYPE_OCI_INDEX,
            crate::image::MEDIA_TYPE_OCI_MANIFEST,
            digest("m"),
        );
        let theirs: oci_spec::image::ImageIndex = serde_json::from_str(&existing).unwrap();
        let theirs = String::from_utf8(canonical(&theirs)).unwrap();
        assert!(!theirs.contains("io.example.tool"), "{theirs}");
        assert!(!theirs.contains("10.0.17763"), "{theirs}");

        let ours: Index = serde_json::from_str(&existing).unwrap();
        let ours = String::from_utf8(canonical(&ours)).unwrap();
        assert!(
            ours.contains(r#""io.example.tool":{"kept":true}"#),
            "{ours}"
        );
    }
}
