//! The registry as a layer cache, the pure half: the layers an image
//! already pushed offers for reuse, read from the annotations `identity`
//! gives each package layer. Registry I/O lives in `remote_cache`; see
//! docs/reproducibility.md.

use super::identity::{ANNOTATION_LAYER_FACTS, ANNOTATION_LAYER_KEY};
use crate::check::facts::WheelFacts;
use crate::digest::Digest;
use crate::image::manifest::{Descriptor, Manifest};
use crate::layer::Layer;
use std::collections::HashMap;

/// A layer an image in a registry offers, with what its annotations recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Offered {
    pub layer: Layer,
    pub facts: Vec<WheelFacts>,
    /// Which `--cache-from` (or push target) it came from, by position.
    pub source: usize,
}

/// Why an image's layers are not offered at all.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("its manifest is not an OCI or Docker image manifest")]
    NotAManifest,
    #[error("its config is not a JSON image config with rootfs.diff_ids")]
    NotAConfig,
    #[error("its manifest names {layers} layers but its config {diff_ids} diff_ids")]
    CountMismatch { layers: usize, diff_ids: usize },
}

/// The layers of one image (manifest and config bytes, both read by digest)
/// that carry a cache key, by key digest. Layers without our annotations, or
/// whose facts do not parse, are left out; the diff_id is the config's.
pub fn offered(
    manifest: &[u8],
    config: &[u8],
    source: usize,
) -> Result<Vec<(String, Offered)>, Refused> {
    let manifest: Manifest = serde_json::from_slice(manifest).map_err(|_| Refused::NotAManifest)?;
    let config: serde_json::Value =
        serde_json::from_slice(config).map_err(|_| Refused::NotAConfig)?;
    let diff_ids: Vec<Digest> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or(Refused::NotAConfig)?
        .iter()
        .map(|d| d.as_str().and_then(|s| s.parse().ok()))
        .collect::<Option<_>>()
        .ok_or(Refused::NotAConfig)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Refused::CountMismatch {
            layers: manifest.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    Ok(manifest
        .layers
        .iter()
        .zip(diff_ids)
        .filter_map(|(d, diff_id)| {
            let key = d.annotation(ANNOTATION_LAYER_KEY)?;
            let facts = serde_json::from_str(d.annotation(ANNOTATION_LAYER_FACTS)?).ok()?;
            Some((key.to_string(), offer(d, diff_id, facts, source)))
        })
        .collect())
}

fn offer(d: &Descriptor, diff_id: Digest, facts: Vec<WheelFacts>, source: usize) -> Offered {
    Offered {
        layer: Layer {
            digest: d.digest.clone(),
            diff_id,
            size: d.size,
            media_type: d.media_type.clone(),
        },
        facts,
        source,
    }
}

/// Every offered layer by key digest; the first source to offer a key wins
/// (the push target before `--cache-from`, in the order given).
pub fn by_key(offers: impl IntoIterator<Item = (String, Offered)>) -> HashMap<String, Offered> {
    let mut out = HashMap::new();
    for (k, o) in offers {
        out.entry(k).or_insert(o);
    }
    out
}

/// The offer for a layer whose key digest is `key_digest`, if its facts
/// cover `wheels` wheels.
pub fn find<'a>(
    offers: &'a HashMap<String, Offered>,
    key_digest: &str,
    wheels: usize,
) -> Option<&'a Offered> {
    offers.get(key_digest).filter(|o| o.facts.len() == wheels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::identity::key_digest;
    use crate::check::PackageFiles;
    use std::collections::BTreeMap;

    /// The annotations `identity` gives a package layer whose key string is `key`.
    fn annotations(key: &str, facts: &[WheelFacts]) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ANNOTATION_LAYER_KEY.to_string(), key_digest(key)),
            (
                ANNOTATION_LAYER_FACTS.to_string(),
                serde_json::to_string(facts).unwrap(),
            ),
        ])
    }

    fn facts(name: &str) -> WheelFacts {
        WheelFacts {
            files: PackageFiles {
                name: name.into(),
                version: "1.0".into(),
                top_level: vec![name.into()],
                bin: vec![format!("{name}-cli")],
            },
            ..WheelFacts::default()
        }
    }

    fn d(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    /// A manifest of a plain layer and a package layer keyed `key`, and a config with `diff_ids`.
    fn image(key: &str, diff_ids: &[Digest]) -> (Vec<u8>, Vec<u8>) {
        let mut pkg = Descriptor::new("application/vnd.oci.image.layer.v1.tar+gzip", d(2), 20);
        pkg.annotations = Some(annotations(key, &[facts("demo")]));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": Descriptor::new("application/vnd.oci.image.config.v1+json", d(9), 2),
            "layers": [Descriptor::new("application/vnd.oci.image.layer.v1.tar+gzip", d(1), 10), pkg],
        });
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}});
        (
            serde_json::to_vec(&manifest).unwrap(),
            serde_json::to_vec(&config).unwrap(),
        )
    }

    #[test]
    fn a_package_layer_is_offered_with_the_configs_diff_id_and_its_facts() {
        let (m, c) = image("k1", &[d(11), d(12)]);
        let offers = offered(&m, &c, 3).unwrap();
        assert_eq!(offers.len(), 1, "only the annotated layer is offered");
        let (key, o) = &offers[0];
        assert_eq!(key, &key_digest("k1"));
        assert_eq!(o.layer.digest, d(2));
        assert_eq!(o.layer.diff_id, d(12));
        assert_eq!((o.layer.size, o.source), (20, 3));
        assert_eq!(o.facts, [facts("demo")]);
        let offers = by_key(offers);
        assert!(find(&offers, &key_digest("k1"), 1).is_some());
        assert!(
            find(&offers, &key_digest("k2"), 1).is_none(),
            "another key is not reused"
        );
        assert!(
            find(&offers, &key_digest("k1"), 2).is_none(),
            "facts for too few wheels"
        );
    }

    #[test]
    fn a_config_whose_diff_ids_do_not_match_the_layers_is_refused() {
        let (m, c) = image("k1", &[d(11)]);
        assert_eq!(
            offered(&m, &c, 0),
            Err(Refused::CountMismatch {
                layers: 2,
                diff_ids: 1
            })
        );
        assert_eq!(offered(&m, b"{}", 0), Err(Refused::NotAConfig));
        assert_eq!(offered(b"[]", &c, 0), Err(Refused::NotAManifest));
    }

    #[test]
    fn facts_that_do_not_parse_offer_nothing_and_the_first_source_wins() {
        let (m, c) = image("k1", &[d(11), d(12)]);
        let text = String::from_utf8(m)
            .unwrap()
            .replace("top_level", "renamed");
        assert!(offered(text.as_bytes(), &c, 0).unwrap().is_empty());
        let (m, c) = image("k1", &[d(11), d(12)]);
        let mut first = offered(&m, &c, 0).unwrap();
        first.extend(offered(&m, &c, 1).unwrap());
        assert_eq!(by_key(first)[&key_digest("k1")].source, 0);
    }
}
