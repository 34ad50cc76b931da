//! Reading an OCI layout that a test wrote: its documents and its blobs.

use std::path::{Path, PathBuf};

/// A JSON file, parsed.
pub fn json_file(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The blob `digest` (a JSON string `sha256:…`) of `layout`, parsed as JSON.
pub fn blob_json(layout: &Path, digest: &serde_json::Value) -> serde_json::Value {
    let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
    json_file(&layout.join("blobs/sha256").join(hex))
}

/// The largest blob of `layout`: a base's biggest layer.
pub fn largest_blob(layout: &Path) -> PathBuf {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

/// The `(a, b)` string fields of each object in a JSON array, in order.
pub fn string_pairs(array: &serde_json::Value, a: &str, b: &str) -> Vec<(String, String)> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x[a].as_str().unwrap().to_string(),
                x[b].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The digest of the first manifest in an OCI layout's index.json.
#[allow(dead_code)]
pub fn top_digest(layout: &Path) -> String {
    json_file(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .expect("index.json lists a manifest")
        .to_string()
}
