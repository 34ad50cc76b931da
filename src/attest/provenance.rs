//! Provenance: an in-toto Statement v1 whose predicate is SLSA provenance v1.
//! Unsigned and deterministic; docs/attestations.md says how to sign it.

use super::{AttestInput, BUILDER_ID, BUILD_TYPE, PREDICATE_TYPE_SLSA1, REBASE_BUILD_TYPE};
use serde_json::{json, Value};

pub fn generate(input: &AttestInput) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&statement(input)).expect("JSON values serialise");
    out.push(b'\n');
    out
}

pub fn statement(input: &AttestInput) -> Value {
    let mut deps = vec![json!({
        "name": "base",
        "uri": input.base_name,
        "digest": {"sha256": input.base_digest.hex()},
    })];
    let mut packages: Vec<_> = input.packages.iter().collect();
    packages.sort_by(|a, b| (&a.name, &a.filename).cmp(&(&b.name, &b.filename)));
    for p in packages {
        deps.push(json!({
            "name": p.filename,
            "uri": p.url.clone().unwrap_or_else(|| super::pypi_purl(p)),
            "digest": {"sha256": p.sha256},
        }));
    }
    deps.extend(build_requirements(input));
    for m in input.lockfile.iter().chain(&input.source_tree) {
        deps.push(json!({
            "name": m.name,
            "uri": m.uri,
            "digest": {"sha256": m.digest.hex()},
        }));
    }
    if let Some(r) = &input.rebased {
        // What the rebase read: the image (whose own provenance says how it
        // was built) and the base it left.
        deps.push(json!({
            "name": "rebased image",
            "uri": r.image,
            "digest": {"sha256": r.digest.hex()},
        }));
        deps.push(json!({
            "name": "previous base",
            "uri": r.old_base,
            "digest": {"sha256": r.old_base_digest.hex()},
        }));
    }
    if let Some(rev) = &input.revision {
        let uri = match &input.source_url {
            Some(u) => format!("git+{u}"),
            None => "git".to_string(),
        };
        deps.push(json!({
            "name": "revision",
            "uri": uri,
            "digest": {"gitCommit": rev},
        }));
    }
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": input.image_name,
            "digest": {"sha256": input.digest.hex()},
        }],
        "predicateType": PREDICATE_TYPE_SLSA1,
        "predicate": {
            "buildDefinition": {
                "buildType": match input.rebased {
                    Some(_) => REBASE_BUILD_TYPE,
                    None => BUILD_TYPE,
                },
                "externalParameters": input.parameters,
                "internalParameters": {
                    "sourceDateEpoch": input.epoch,
                    "platform": input.platform.to_string(),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"imgbuild": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {},
                "byproducts": built_wheels(input),
            },
        },
    })
}

/// The wheels the sdists' builds used, once each, with the packages they
/// were built for (issue 22).
fn build_requirements(input: &AttestInput) -> Vec<Value> {
    let mut by_file: std::collections::BTreeMap<&str, (&str, &str, Vec<String>)> =
        Default::default();
    for p in &input.packages {
        for pin in p.built.iter().flat_map(|b| &b.requirements) {
            by_file
                .entry(&pin.filename)
                .or_insert((&pin.url, &pin.sha256, Vec::new()))
                .2
                .push(format!("{} {}", p.name, p.version));
        }
    }
    by_file
        .into_iter()
        .map(|(filename, (url, sha256, of))| {
            json!({
                "name": filename,
                "uri": url,
                "digest": {"sha256": sha256},
                "annotations": {"buildRequirementOf": of},
            })
        })
        .collect()
}

/// Each wheel built from an sdist: what went into the image in its place.
fn built_wheels(input: &AttestInput) -> Vec<Value> {
    let mut out: Vec<Value> = input
        .packages
        .iter()
        .filter_map(|p| p.built.as_ref())
        .map(|b| {
            json!({
                "name": b.wheel_filename,
                "digest": {"sha256": b.wheel_sha256},
                "annotations": {
                    "builtFrom": b.sdist_filename,
                    "backend": b.backend,
                    "requirementsUploadedBy": b.cutoff,
                },
            })
        })
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::sbom::tests::input;

    #[test]
    fn a_rebased_image_names_the_image_and_the_base_it_was_rebased_from() {
        let old = crate::digest::Digest::of_bytes(b"old image");
        let input = AttestInput {
            rebased: Some(crate::attest::RebaseOrigin {
                image: "127.0.0.1:5000/api:1".into(),
                digest: old.clone(),
                old_base: "127.0.0.1:5000/base:1@sha256:aa".into(),
                old_base_digest: crate::digest::Digest::of_bytes(b"old base"),
            }),
            ..input()
        };
        let s = statement(&input);
        let build = &s["predicate"]["buildDefinition"];
        assert_eq!(build["buildType"], REBASE_BUILD_TYPE);
        let deps = build["resolvedDependencies"].as_array().unwrap();
        let named = |n: &str| deps.iter().find(|d| d["name"] == n).cloned();
        assert_eq!(
            named("rebased image").unwrap()["digest"]["sha256"],
            old.hex()
        );
        assert_eq!(
            named("previous base").unwrap()["uri"],
            "127.0.0.1:5000/base:1@sha256:aa"
        );
        assert_eq!(
            named("base").unwrap()["digest"]["sha256"],
            input.base_digest.hex()
        );
        assert_eq!(
            statement(&crate::attest::sbom::tests::input())["predicate"]["buildDefinition"]
                ["buildType"],
            BUILD_TYPE
        );
    }

    #[test]
    fn statement_names_the_image_and_every_input_by_digest() {
        let s = statement(&input());
        assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(s["subject"][0]["digest"]["sha256"], input().digest.hex());
        let bd = &s["predicate"]["buildDefinition"];
        assert_eq!(bd["buildType"], BUILD_TYPE);
        assert_eq!(bd["externalParameters"]["platforms"][0], "linux/amd64");
        let deps = bd["resolvedDependencies"].as_array().unwrap();
        let names: Vec<&str> = deps.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "base",
                "fastapi-0.115.0-py3-none-any.whl",
                "uvicorn-0.30.0-py3-none-any.whl",
                "lockfile",
                "source",
                "revision"
            ]
        );
        assert_eq!(deps[2]["digest"]["sha256"], "11".repeat(32));
        // no URL in the lock: the purl names the wheel
        assert!(deps[1]["uri"]
            .as_str()
            .unwrap()
            .starts_with("pkg:pypi/fastapi@"));
        assert_eq!(
            deps[5]["digest"]["gitCommit"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(s["predicate"]["runDetails"]["builder"]["id"], BUILDER_ID);
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(generate(&input()), generate(&input()));
    }
}
