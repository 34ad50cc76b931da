//! What an image is made of and how it was made, as documents others read:
//! an SBOM (SPDX 2.3 or CycloneDX 1.6) and an in-toto provenance statement
//! (SLSA provenance v1). Generation is pure: the same [`AttestInput`] always
//! gives the same bytes. `collect` gathers the input from a build.

pub(crate) mod collect;
pub(crate) mod licence;
pub(crate) mod provenance;
pub(crate) mod readback;
pub(crate) mod sbom;
pub(crate) mod tree;

use crate::digest::Digest;
use crate::platform::Platform;
use std::path::PathBuf;

/// The URI naming how imgbuild builds (docs/attestations.md documents it).
pub const BUILD_TYPE: &str = "https://imgbuild.dev/buildtypes/python-image/v1";
/// The builder id in provenance; the version goes beside it.
/// How `imgbuild rebase` makes an image (docs/rebase.md).
pub const REBASE_BUILD_TYPE: &str = "https://imgbuild.dev/buildtypes/rebase/v1";
pub const BUILDER_ID: &str = "https://imgbuild.dev/builder/imgbuild";
pub const PREDICATE_TYPE_SLSA1: &str = "https://slsa.dev/provenance/v1";
pub const MEDIA_TYPE_SPDX: &str = "application/spdx+json";
pub const MEDIA_TYPE_CYCLONEDX: &str = "application/vnd.cyclonedx+json";
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("reading {path} for the attestation")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image's {what} is not valid JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the SBOM describes one image, but the build has {count} platforms: pass --platform to pick one")]
    SeveralPlatforms { count: usize },
}

/// Which SBOM format to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormat {
    #[default]
    Spdx,
    Cyclonedx,
}

impl SbomFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => MEDIA_TYPE_SPDX,
            SbomFormat::Cyclonedx => MEDIA_TYPE_CYCLONEDX,
        }
    }
}

/// One installed Python package, as the lock pinned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageInfo {
    /// Normalised (PEP 503) name.
    pub name: String,
    pub version: String,
    pub filename: String,
    /// Where the wheel was downloaded from, when the lock says.
    pub url: Option<String>,
    /// Lowercase hex.
    pub sha256: String,
    /// From the wheel's METADATA; `None` when it declares none usable.
    pub licence: Option<licence::Licence>,
    /// How the wheel was built, for a package the lock has only as an sdist
    /// (then `filename`, `url` and `sha256` are the sdist's).
    pub built: Option<crate::sdist::Built>,
}

/// One file a build read, by digest: the lockfile, the source tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub name: String,
    pub uri: String,
    pub digest: Digest,
}

/// Everything the documents say about one platform's image.
#[derive(Clone, Debug, PartialEq)]
pub struct AttestInput {
    /// The image's name in the documents (e.g. the repository, or the app's name).
    pub image_name: String,
    /// The platform manifest's digest: what the documents describe.
    pub digest: Digest,
    pub platform: Platform,
    /// RFC 3339, from the image config (SOURCE_DATE_EPOCH).
    pub created: String,
    /// The base as the spec names it, and its manifest digest.
    pub base_name: String,
    pub base_digest: Digest,
    pub app_name: String,
    pub app_version: Option<String>,
    pub packages: Vec<PackageInfo>,
    /// The spec's settings and the platforms (provenance externalParameters).
    pub parameters: serde_json::Value,
    pub lockfile: Option<Material>,
    pub source_tree: Option<Material>,
    pub source_url: Option<String>,
    pub revision: Option<String>,
    pub epoch: u64,
    /// Set when the image was made by `imgbuild rebase` from another.
    pub rebased: Option<RebaseOrigin>,
}

/// What a rebased image was made from: the image and its base before.
#[derive(Clone, Debug, PartialEq)]
pub struct RebaseOrigin {
    /// The image as named to `imgbuild rebase`, and its digest then.
    pub image: String,
    pub digest: Digest,
    pub old_base: String,
    pub old_base_digest: Digest,
}

/// `pkg:pypi/<name>@<version>?file_name=<wheel>` (name lowercased, `_` → `-`).
pub fn pypi_purl(p: &PackageInfo) -> String {
    let name = p.name.to_ascii_lowercase().replace(['_', '.'], "-");
    format!(
        "pkg:pypi/{}@{}?file_name={}",
        purl_encode(&name),
        purl_encode(&p.version),
        purl_encode(&p.filename)
    )
}

/// `pkg:oci/<name>@sha256%3A<hex>[?arch=…&repository_url=…]` for an image
/// named as a spec names a base (`oci:DIR:TAG`, a registry reference).
pub fn oci_purl(name: &str, digest: &Digest, platform: Option<&Platform>) -> String {
    let (last, repository_url) = oci_name(name);
    let mut q = Vec::new();
    if let Some(p) = platform {
        q.push(format!("arch={}", purl_encode(&p.architecture)));
    }
    if let Some(r) = repository_url {
        q.push(format!("repository_url={}", purl_encode(&r)));
    }
    let mut out = format!(
        "pkg:oci/{}@{}",
        purl_encode(&last.to_ascii_lowercase()),
        purl_encode(&digest.to_string())
    );
    if !q.is_empty() {
        out.push('?');
        out.push_str(&q.join("&"));
    }
    out
}

/// The last path segment without tag or digest, and the repository for a
/// registry reference (a local layout has none).
fn oci_name(name: &str) -> (String, Option<String>) {
    let local = name
        .strip_prefix("oci:")
        .or_else(|| name.strip_prefix("oci-archive:"));
    let text = local.unwrap_or(name);
    let text = text.split('@').next().unwrap_or(text);
    // A tag is after the last ':' that comes after the last '/'.
    let slash = text.rfind('/').map(|i| i + 1).unwrap_or(0);
    let repo = match text[slash..].rfind(':') {
        Some(i) => &text[..slash + i],
        None => text,
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let last = last.trim_end_matches(".tar");
    let last = if last.is_empty() { "image" } else { last };
    (
        last.to_string(),
        local
            .is_none()
            .then(|| repo.to_string())
            .filter(|r| r.contains('/')),
    )
}

/// Percent-encodes what a purl component may not hold as is.
fn purl_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, file: &str) -> PackageInfo {
        PackageInfo {
            name: name.into(),
            version: version.into(),
            filename: file.into(),
            url: None,
            sha256: "ab".repeat(32),
            licence: None,
            built: None,
        }
    }

    #[test]
    fn pypi_purls_normalise_the_name_and_carry_the_wheel() {
        assert_eq!(
            pypi_purl(&pkg(
                "Typing_Extensions",
                "4.12.2",
                "typing_extensions-4.12.2-py3-none-any.whl"
            )),
            "pkg:pypi/typing-extensions@4.12.2?file_name=typing_extensions-4.12.2-py3-none-any.whl"
        );
        assert_eq!(
            pypi_purl(&pkg("a", "1.0+local", "a-1.0+local-py3-none-any.whl")),
            "pkg:pypi/a@1.0%2Blocal?file_name=a-1.0%2Blocal-py3-none-any.whl"
        );
    }

    #[test]
    fn oci_purls_name_local_and_registry_images() {
        let d = Digest::of_bytes(b"x");
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            oci_purl("oci:../.imgbuild/base-amd64:latest", &d, Some(&amd64)),
            format!("pkg:oci/base-amd64@sha256%3A{}?arch=amd64", d.hex())
        );
        assert_eq!(
            oci_purl("registry.example:5000/library/python:3.11-slim", &d, None),
            format!(
                "pkg:oci/python@sha256%3A{}?repository_url=registry.example%3A5000/library/python",
                d.hex()
            )
        );
        assert_eq!(
            oci_purl(&format!("oci-archive:/x/base.tar@{d}"), &d, None),
            format!("pkg:oci/base@sha256%3A{}", d.hex())
        );
    }
}
