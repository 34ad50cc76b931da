//! What a command leaves behind: the `--json` summary, the digest as the last
//! line of stdout, and files written whole (`--digest-file`, `--image-refs`).
//! The summary is built here, apart from printing, so it can be tested.

use super::args::CommonArgs;
use crate::output::push::PushReport;
use crate::output::BuildResult;
use crate::registry::TransferStats;
use anyhow::{Context, Result};
use std::path::Path;

/// Prints the summary and the digest (last line of stdout), and writes --digest-file.
pub fn finish(common: &CommonArgs, result: &BuildResult, tags: &[String]) -> Result<()> {
    let digest = result.digest();
    if common.json {
        println!("{}", serde_json::to_string_pretty(&summary(result, tags))?);
    }
    if let Some(f) = &common.digest_file {
        write_atomic(f, format!("{digest}\n").as_bytes())?;
    }
    println!("{digest}");
    Ok(())
}

pub fn summary(result: &BuildResult, tags: &[String]) -> serde_json::Value {
    let images: Vec<_> = result
        .images
        .iter()
        .map(|i| {
            serde_json::json!({
                "platform": i.platform.to_string(),
                "digest": i.manifest_digest.to_string(),
                "layers": i.layers.iter().map(|l| serde_json::json!({
                    "digest": l.layer.digest.to_string(), "size": l.layer.size, "label": l.label,
                })).collect::<Vec<_>>(),
                "wheels_downloaded": i.sources.wheels_downloaded,
                "layers_from_registry_cache": i.sources.layers_from_registry_cache,
                "base_layers_downloaded": i.sources.base_layers_downloaded,
            })
        })
        .collect();
    serde_json::json!({ "digest": result.digest().to_string(), "mediaType": result.media_type(), "tags": tags, "images": images })
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The `--json` summary of a push: the build's, with each layer's outcome,
/// the bytes and requests it took, and the references pushed.
pub fn push_summary(
    result: &BuildResult,
    tags: &[String],
    report: &PushReport,
    stats: &TransferStats,
) -> serde_json::Value {
    let mut s = summary(result, tags);
    for (i, img) in s["images"].as_array_mut().into_iter().flatten().enumerate() {
        for (j, l) in img["layers"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            l["outcome"] = report.outcome(i, j).into();
        }
    }
    s["bytes_uploaded"] = stats.blob_bytes_uploaded.into();
    s["requests"] = stats.requests.into();
    s["pushed"] = report.pinned.clone().into();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::layer::Layer;
    use crate::output::{BlobOrigin, BuiltImage, ImageLayer, LayerSources};
    use crate::platform::Platform;
    use crate::registry::PushOutcome;

    fn layer(label: &str, size: u64) -> ImageLayer {
        ImageLayer {
            layer: Layer {
                digest: Digest::of_bytes(label.as_bytes()),
                diff_id: Digest::of_bytes(label.as_bytes()),
                size,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            },
            origin: BlobOrigin::Store,
            label: label.into(),
            annotations: None,
        }
    }

    fn result() -> BuildResult {
        BuildResult {
            images: vec![BuiltImage {
                platform: Platform::parse("linux/amd64").unwrap(),
                config: b"{}".to_vec(),
                config_digest: Digest::of_bytes(b"{}"),
                manifest: b"manifest".to_vec(),
                manifest_digest: Digest::of_bytes(b"manifest"),
                layers: vec![layer("base", 100), layer("app", 7)],
                base_repository: None,
                packages: Vec::new(),
                sdist_builds: Vec::new(),
                source_tree: None,
                sources: LayerSources {
                    wheels_downloaded: 3,
                    layers_from_registry_cache: 2,
                    base_layers_downloaded: 1,
                },
            }],
            index: None,
            base_facts: Vec::new(),
            local_dirs: Vec::new(),
        }
    }

    #[test]
    fn build_summary_lists_each_layer_with_its_label() {
        let s = summary(&result(), &["t:1".to_string()]);
        assert_eq!(s["digest"], Digest::of_bytes(b"manifest").to_string());
        assert_eq!(s["mediaType"], crate::image::MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(s["tags"], serde_json::json!(["t:1"]));
        let layers = &s["images"][0]["layers"];
        assert_eq!(layers[1]["label"], "app");
        assert_eq!(layers[1]["size"], 7);
        assert_eq!(s["images"][0]["platform"], "linux/amd64");
    }

    #[test]
    fn build_summary_says_how_many_wheels_were_downloaded_and_layers_reused_per_image() {
        let s = summary(&result(), &[]);
        assert_eq!(s["images"][0]["wheels_downloaded"], 3);
        assert_eq!(s["images"][0]["base_layers_downloaded"], 1);
        assert_eq!(s["images"][0]["layers_from_registry_cache"], 2);
    }

    #[test]
    fn push_summary_adds_outcomes_traffic_and_pinned_references() {
        let report = PushReport {
            layers: vec![vec![
                PushOutcome::Existed,
                PushOutcome::Uploaded { bytes: 7 },
            ]],
            pinned: vec!["127.0.0.1:5000/a:1@sha256:00".into()],
        };
        let stats = TransferStats {
            requests: 9,
            blob_bytes_uploaded: 7,
            ..TransferStats::default()
        };
        let s = push_summary(&result(), &["127.0.0.1:5000/a:1".into()], &report, &stats);
        let layers = &s["images"][0]["layers"];
        assert_eq!(layers[0]["outcome"], "existed");
        assert_eq!(layers[1]["outcome"], "uploaded");
        assert_eq!(
            (s["bytes_uploaded"].as_u64(), s["requests"].as_u64()),
            (Some(7), Some(9))
        );
        assert_eq!(
            s["pushed"],
            serde_json::json!(["127.0.0.1:5000/a:1@sha256:00"])
        );
        // Everything the build summary says is still there.
        assert_eq!(layers[1]["label"], "app");
        assert_eq!(s["images"][0]["wheels_downloaded"], 3);
    }

    #[test]
    fn write_atomic_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("digest");
        write_atomic(&f, b"one\n").unwrap();
        write_atomic(&f, b"two\n").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
        assert!(write_atomic(&dir.path().join("missing/digest"), b"x").is_err());
    }
}
