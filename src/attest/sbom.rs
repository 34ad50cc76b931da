//! SBOM documents: SPDX 2.3 JSON and CycloneDX 1.6 JSON. Deterministic: the
//! time is the image's created time, the namespace and serial number come
//! from the image digest, and packages are sorted.

use super::licence::Licence;
use super::{oci_purl, pypi_purl, AttestInput, PackageInfo, SbomFormat};
use crate::digest::Digest;
use crate::platform::Platform;
use serde_json::{json, Value};

pub fn generate(input: &AttestInput, format: SbomFormat) -> Vec<u8> {
    let doc = match format {
        SbomFormat::Spdx => spdx(input),
        SbomFormat::Cyclonedx => cyclonedx(input),
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("JSON values serialise");
    out.push(b'\n');
    out
}

fn sorted_packages(input: &AttestInput) -> Vec<&PackageInfo> {
    let mut p: Vec<&PackageInfo> = input.packages.iter().collect();
    p.sort_by(|a, b| (&a.name, &a.version, &a.filename).cmp(&(&b.name, &b.version, &b.filename)));
    p
}

/// SPDXIDs allow letters, digits, `.` and `-`.
fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

fn download_location(url: Option<&str>) -> String {
    match url {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u.to_string(),
        _ => "NOASSERTION".into(),
    }
}

fn tool() -> String {
    format!("imgbuild-{}", env!("CARGO_PKG_VERSION"))
}

/// An SPDX package for a container image (ours or the base), by digest.
fn spdx_container(id: &str, name: &str, digest: &Digest, platform: &Platform) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": oci_purl(name, digest, Some(platform)),
        }],
    })
}

pub fn spdx(input: &AttestInput) -> Value {
    let image_id = "SPDXRef-image".to_string();
    let mut packages = vec![spdx_container(
        &image_id,
        &input.image_name,
        &input.digest,
        &input.platform,
    )];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut contains = |id: &str| {
        relationships.push(json!({
            "spdxElementId": "SPDXRef-image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }))
    };
    packages.push(spdx_container(
        "SPDXRef-base",
        &input.base_name,
        &input.base_digest,
        &input.platform,
    ));
    contains("SPDXRef-base");
    let mut app = json!({
        "SPDXID": "SPDXRef-app",
        "name": input.app_name,
        "downloadLocation": input.source_url.as_deref().map_or("NOASSERTION".into(), |u| download_location(Some(u))),
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
    });
    if let Some(v) = &input.app_version {
        app["versionInfo"] = v.clone().into();
    }
    if let Some(t) = &input.source_tree {
        app["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": t.digest.hex()}]);
    }
    packages.push(app);
    contains("SPDXRef-app");
    for p in sorted_packages(input) {
        let id = spdx_id("pypi", &format!("{}-{}", p.name, p.version));
        let mut package = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "packageFileName": p.filename,
            "downloadLocation": download_location(p.url.as_deref()),
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": Licence::spdx(p.licence.as_ref()),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": pypi_purl(p),
            }],
        });
        if let Some(b) = &p.built {
            package["comment"] = format!(
                "the lock has only this sdist; the image holds {} (sha256 {}), built from it with {} in imgbuild's sandbox",
                b.wheel_filename, b.wheel_sha256, b.backend
            )
            .into();
        }
        packages.push(package);
        contains(&id);
    }
    let (build_packages, build_relationships) = build_dependencies(input);
    packages.extend(build_packages);
    relationships.extend(build_relationships);
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", input.image_name, input.digest),
        "documentNamespace": format!("https://imgbuild.dev/spdx/{}/{}", sanitise_path(&input.image_name), input.digest.hex()),
        "creationInfo": {
            "created": input.created,
            "creators": [format!("Tool: {}", tool())],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// The build requirements of the packages built from sdists: SPDX packages
/// (not in the image) with BUILD_DEPENDENCY_OF relationships (issue 22).
fn build_dependencies(input: &AttestInput) -> (Vec<Value>, Vec<Value>) {
    let mut packages: std::collections::BTreeMap<String, Value> = Default::default();
    let mut relationships = Vec::new();
    for p in sorted_packages(input) {
        let Some(built) = &p.built else { continue };
        let of = spdx_id("pypi", &format!("{}-{}", p.name, p.version));
        for pin in &built.requirements {
            let id = spdx_id("build", &format!("{}-{}", pin.name, pin.version));
            packages.entry(id.clone()).or_insert_with(|| {
                json!({
                    "SPDXID": id,
                    "name": pin.name,
                    "versionInfo": pin.version,
                    "packageFileName": pin.filename,
                    "downloadLocation": download_location(Some(&pin.url)),
                    "filesAnalyzed": false,
                    "primaryPackagePurpose": "LIBRARY",
                    "checksums": [{"algorithm": "SHA256", "checksumValue": pin.sha256}],
                    "comment": "a build requirement, not in the image",
                })
            });
            relationships.push(json!({
                "spdxElementId": id,
                "relationshipType": "BUILD_DEPENDENCY_OF",
                "relatedSpdxElement": of,
            }));
        }
    }
    (packages.into_values().collect(), relationships)
}

fn sanitise_path(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A UUID-shaped serial number from the digest (RFC 4122 version 8 layout).
fn serial_number(input: &AttestInput) -> String {
    let h = input.digest.hex();
    format!(
        "urn:uuid:{}-{}-8{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn cyclonedx(input: &AttestInput) -> Value {
    let mut components = Vec::new();
    let base_purl = oci_purl(&input.base_name, &input.base_digest, Some(&input.platform));
    components.push(json!({
        "type": "container",
        "bom-ref": base_purl,
        "name": input.base_name,
        "version": input.base_digest.to_string(),
        "purl": base_purl,
    }));
    let mut app = json!({
        "type": "application",
        "bom-ref": "app",
        "name": input.app_name,
    });
    if let Some(v) = &input.app_version {
        app["version"] = v.clone().into();
    }
    if let Some(t) = &input.source_tree {
        app["hashes"] = json!([{"alg": "SHA-256", "content": t.digest.hex()}]);
    }
    components.push(app);
    for p in sorted_packages(input) {
        let purl = pypi_purl(p);
        let mut c = json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "hashes": [{"alg": "SHA-256", "content": p.sha256}],
        });
        match &p.licence {
            Some(Licence::Spdx(e)) => c["licenses"] = json!([{"expression": e}]),
            Some(Licence::Text(t)) => {
                c["licenses"] = json!([{"license": {"name": t.lines().next().unwrap_or(t)}}])
            }
            None => {}
        }
        if let Some(u) = p.url.as_deref().filter(|u| u.starts_with("http")) {
            c["externalReferences"] = json!([{"type": "distribution", "url": u}]);
        }
        components.push(c);
    }
    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    let image_purl = oci_purl(&input.image_name, &input.digest, Some(&input.platform));
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(input),
        "version": 1,
        "metadata": {
            "timestamp": input.created,
            "tools": {"components": [{"type": "application", "name": "imgbuild", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "container",
                "bom-ref": image_purl,
                "name": input.image_name,
                "version": input.digest.to_string(),
                "purl": image_purl,
            },
        },
        "components": components,
        "dependencies": [{"ref": image_purl, "dependsOn": refs}],
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attest::Material;
    use crate::digest::Digest;
    use crate::platform::Platform;

    pub(crate) fn input() -> AttestInput {
        AttestInput {
            image_name: "hello-api".into(),
            digest: Digest::of_bytes(b"manifest"),
            platform: Platform::parse("linux/amd64").unwrap(),
            created: "1970-01-01T00:00:00Z".into(),
            base_name: "oci:../base:latest".into(),
            base_digest: Digest::of_bytes(b"base"),
            app_name: "hello-api".into(),
            app_version: Some("0.1.0".into()),
            packages: vec![
                PackageInfo {
                    name: "uvicorn".into(),
                    version: "0.30.0".into(),
                    filename: "uvicorn-0.30.0-py3-none-any.whl".into(),
                    url: Some(
                        "https://files.example.invalid/uvicorn-0.30.0-py3-none-any.whl".into(),
                    ),
                    sha256: "11".repeat(32),
                    licence: Some(Licence::Spdx("BSD-3-Clause".into())),
                    built: None,
                },
                PackageInfo {
                    name: "fastapi".into(),
                    version: "0.115.0".into(),
                    filename: "fastapi-0.115.0-py3-none-any.whl".into(),
                    url: None,
                    sha256: "22".repeat(32),
                    licence: Some(Licence::Text("Copyright someone".into())),
                    built: None,
                },
            ],
            parameters: json!({"spec": {"app": "hello_api.main:app"}, "platforms": ["linux/amd64"]}),
            lockfile: Some(Material {
                name: "lockfile".into(),
                uri: "uv.lock".into(),
                digest: Digest::of_bytes(b"lock"),
            }),
            source_tree: Some(Material {
                name: "source".into(),
                uri: ".".into(),
                digest: Digest::of_bytes(b"tree"),
            }),
            source_url: None,
            revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            epoch: 0,
            rebased: None,
        }
    }

    #[test]
    fn spdx_lists_every_package_with_purl_checksum_and_licence() {
        let doc = spdx(&input());
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        let pkgs = doc["packages"].as_array().unwrap();
        // image, base, app, then packages sorted by name
        assert_eq!(pkgs.len(), 5);
        assert_eq!(pkgs[3]["name"], "fastapi");
        assert_eq!(pkgs[3]["licenseDeclared"], "NOASSERTION");
        assert_eq!(pkgs[3]["downloadLocation"], "NOASSERTION");
        assert_eq!(pkgs[4]["name"], "uvicorn");
        assert_eq!(pkgs[4]["licenseDeclared"], "BSD-3-Clause");
        assert_eq!(pkgs[4]["checksums"][0]["checksumValue"], "11".repeat(32));
        assert_eq!(
            pkgs[4]["externalRefs"][0]["referenceLocator"],
            "pkg:pypi/uvicorn@0.30.0?file_name=uvicorn-0.30.0-py3-none-any.whl"
        );
        assert!(pkgs[1]["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .starts_with("pkg:oci/base@sha256%3A"));
        let rels = doc["relationships"].as_array().unwrap();
        assert_eq!(rels[0]["relationshipType"], "DESCRIBES");
        assert_eq!(
            rels.iter()
                .filter(|r| r["relationshipType"] == "CONTAINS")
                .count(),
            4
        );
        assert!(doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(Digest::of_bytes(b"manifest").hex()));
    }

    #[test]
    fn same_input_same_bytes_and_the_digest_changes_the_namespace() {
        let a = generate(&input(), SbomFormat::Spdx);
        assert_eq!(a, generate(&input(), SbomFormat::Spdx));
        let mut other = input();
        other.digest = Digest::of_bytes(b"other");
        assert_ne!(a, generate(&other, SbomFormat::Spdx));
    }

    #[test]
    fn cyclonedx_has_purls_hashes_and_a_uuid_serial() {
        let doc = cyclonedx(&input());
        assert_eq!(doc["specVersion"], "1.6");
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        let comps = doc["components"].as_array().unwrap();
        let uv = comps.iter().find(|c| c["name"] == "uvicorn").unwrap();
        assert_eq!(uv["hashes"][0]["alg"], "SHA-256");
        assert_eq!(uv["licenses"][0]["expression"], "BSD-3-Clause");
        let fa = comps.iter().find(|c| c["name"] == "fastapi").unwrap();
        assert_eq!(fa["licenses"][0]["license"]["name"], "Copyright someone");
        assert_eq!(
            doc["dependencies"][0]["dependsOn"]
                .as_array()
                .unwrap()
                .len(),
            comps.len()
        );
    }
}
