//! An SBOM imgbuild wrote, read back (issue 25): a rebase keeps the image's
//! packages and app, so its SBOM lists what the old one listed, on the new
//! base. Only our own SPDX documents are read; anything else gives nothing.

use super::licence::Licence;
use super::{Material, PackageInfo};
use serde_json::Value;

/// What an old SBOM says of the app and the packages in the image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listed {
    pub app_name: Option<String>,
    pub app_version: Option<String>,
    pub source_tree: Option<Material>,
    pub packages: Vec<PackageInfo>,
}

/// Reads an SPDX 2.3 document as `sbom::spdx` writes it.
pub fn from_spdx(bytes: &[u8]) -> Listed {
    let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
        return Listed::default();
    };
    let mut listed = Listed::default();
    for p in doc["packages"].as_array().into_iter().flatten() {
        let text = |k: &str| p[k].as_str().map(str::to_owned);
        if p["SPDXID"] == "SPDXRef-app" {
            listed.app_name = text("name");
            listed.app_version = text("versionInfo");
            listed.source_tree = sha256_of(p).map(|digest| Material {
                name: "source".into(),
                uri: text("downloadLocation").unwrap_or_default(),
                digest,
            });
            continue;
        }
        let purl = p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap_or("");
        if !purl.starts_with("pkg:pypi/") {
            continue;
        }
        let (Some(name), Some(version), Some(sha256)) = (
            text("name"),
            text("versionInfo"),
            sha256_of(p).map(|d| d.hex().to_owned()),
        ) else {
            continue;
        };
        listed.packages.push(PackageInfo {
            name,
            version,
            filename: text("packageFileName").unwrap_or_default(),
            url: text("downloadLocation").filter(|u| u != "NOASSERTION"),
            sha256,
            licence: text("licenseDeclared")
                .filter(|l| l != "NOASSERTION")
                .map(Licence::Spdx),
            built: None,
        });
    }
    listed
}

fn sha256_of(p: &Value) -> Option<crate::digest::Digest> {
    let hex = p["checksums"]
        .as_array()?
        .iter()
        .find(|c| c["algorithm"] == "SHA256")?["checksumValue"]
        .as_str()?;
    format!("sha256:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sbom_we_wrote_gives_back_its_packages_and_app() {
        let input = crate::attest::sbom::tests::input();
        let doc = crate::attest::sbom::generate(&input, crate::attest::SbomFormat::Spdx);
        let listed = from_spdx(&doc);
        assert_eq!(listed.app_name.as_deref(), Some("hello-api"));
        assert_eq!(listed.app_version.as_deref(), Some("0.1.0"));
        assert_eq!(
            listed.source_tree.map(|m| m.digest),
            input.source_tree.map(|m| m.digest)
        );
        let mut want = input.packages.clone();
        // Free-text licences are NOASSERTION in SPDX: they do not come back.
        want[1].licence = None;
        want.sort_by(|a, b| a.name.cmp(&b.name));
        let mut got = listed.packages;
        got.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(got, want);
    }

    #[test]
    fn a_document_that_is_not_ours_gives_nothing() {
        assert_eq!(from_spdx(b"not json"), Listed::default());
        assert_eq!(from_spdx(b"{\"packages\": 3}"), Listed::default());
    }
}
