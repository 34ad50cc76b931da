//! Whether an image's base has moved (issue 25): the base each platform's
//! manifest records (`org.opencontainers.image.base.name` and `.digest`,
//! written by every build) against what that name's tag points to now.

use super::LoadedImage;
use crate::digest::Digest;
use crate::image::manifest::Index;
use crate::image::{is_index_media_type, ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};

/// What one platform's base looks like now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum BaseStatus {
    /// The tag still points to the recorded manifest (or to an index holding it).
    Current,
    /// The tag now points elsewhere: `now` is its manifest for this platform.
    Moved { now: Digest },
    /// Nothing to compare with; `why` says what to do about it.
    Unknown { why: String },
}

/// One platform of one image: its base as recorded, and its status.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BaseCheck {
    pub platform: String,
    pub base: Option<String>,
    pub recorded: Option<Digest>,
    #[serde(flatten)]
    pub status: BaseStatus,
}

/// Checks `image`'s recorded base against the registry; an unreachable or
/// refusing registry is an error, a base that cannot be followed is `Unknown`.
pub fn check_base(
    image: &LoadedImage,
    client: &RegistryClient,
) -> Result<BaseCheck, RegistryError> {
    let annotation = |k: &str| {
        image
            .manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    let base = annotation(ANNOTATION_BASE_NAME);
    let recorded = annotation(ANNOTATION_BASE_DIGEST).and_then(|d| d.parse::<Digest>().ok());
    let check = |status| BaseCheck {
        platform: image.platform.to_string(),
        base: base.clone(),
        recorded: recorded.clone(),
        status,
    };
    let (Some(name), Some(recorded)) = (&base, &recorded) else {
        return Ok(check(unknown(
            "the image records no base (org.opencontainers.image.base.name and .digest); build it with imgbuild",
        )));
    };
    let Some(tagged) = followed_tag(name) else {
        return Ok(check(unknown(&format!(
            "the base `{name}` is not a registry reference with a tag (a local file, or pinned by digest alone); write the base as NAME:TAG@sha256:… to follow its tag"
        ))));
    };
    let (bytes, media_type, top) = client.get_manifest(&tagged)?;
    if &top == recorded {
        return Ok(check(BaseStatus::Current));
    }
    if !is_index_media_type(&media_type) {
        return Ok(check(BaseStatus::Moved { now: top }));
    }
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        what: format!("reading index {tagged}"),
        registry: tagged.registry.clone(),
        detail: format!("sent an index that is not valid JSON: {e}"),
    })?;
    if index.manifests.iter().any(|d| &d.digest == recorded) {
        return Ok(check(BaseStatus::Current));
    }
    let now = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.matches(&image.platform))
    });
    Ok(check(match now {
        Some(d) => BaseStatus::Moved {
            now: d.digest.clone(),
        },
        None => unknown(&format!(
            "{tagged} no longer has a manifest for {}",
            image.platform
        )),
    }))
}

fn unknown(why: &str) -> BaseStatus {
    BaseStatus::Unknown {
        why: why.to_owned(),
    }
}

/// The tag a recorded base name follows: `NAME:TAG` or `NAME:TAG@sha256:…`
/// (the digest dropped); None for a local base or a digest alone.
pub(crate) fn followed_tag(name: &str) -> Option<Reference> {
    let local = ["oci:", "oci-archive:", "docker-archive:", "/", "./", "../"];
    if local.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    let reference = Reference::parse(name).ok()?;
    // The tag written in the name; a bare name means `latest`, as to a
    // puller, but a base written as NAME@sha256:… alone was pinned on purpose.
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = match last.split('@').next().unwrap_or("").split_once(':') {
        Some((_, tag)) => tag,
        None if reference.digest.is_none() => "latest",
        None => return None,
    };
    Reference {
        digest: None,
        ..reference
    }
    .with_tag(tag)
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_followed_and_a_local_base_or_a_bare_digest_is_not() {
        let d = format!("sha256:{}", "a".repeat(64));
        let tag = |n: &str| followed_tag(n).map(|r| r.to_string());
        assert_eq!(
            tag("python:3.12-slim").as_deref(),
            Some("docker.io/library/python:3.12-slim")
        );
        assert_eq!(
            tag(&format!("127.0.0.1:5000/base:1@{d}")).as_deref(),
            Some("127.0.0.1:5000/base:1")
        );
        assert_eq!(tag(&format!("python@{d}")), None);
        assert_eq!(
            tag("ghcr.io/team/base").as_deref(),
            Some("ghcr.io/team/base:latest")
        );
        assert_eq!(tag("oci:../base:latest"), None);
        assert_eq!(tag("./base.tar"), None);
    }
}
