//! Image references (`registry/repository[:tag][@digest]`), parsed and
//! normalised by Docker's rules (distribution/reference `normalize.go`), so a
//! name means the same image here as it does to docker, podman and skopeo.

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's canonical registry name, as written in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key Docker uses for Hub credentials in config.json and helpers.
pub const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

/// Docker's limit on the length of a name as written (registry + repository).
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference. `tag` is `None` when a digest is
/// given: a digest names the content exactly, so a tag beside it (`name:tag@digest`)
/// is dropped, as `docker pull` does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Normalised: `docker.io` for Hub, otherwise the host with its port as written.
    pub registry: String,
    /// The path inside the registry, e.g. `library/python`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference is empty: expected e.g. registry.example.com/team/app:1.0")]
    Empty,
    #[error("image reference {reference:?}: its full name (registry/repository) is longer than {NAME_MAX} characters")]
    TooLong { reference: String },
    #[error("image reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
}

impl Reference {
    /// Parses a reference the way `docker pull` does.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Invalid {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "looks like an image ID, not a name; write name@sha256:<hex> instead",
            ));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = d.parse::<Digest>().map_err(|_| {
                    invalid("the digest after '@' must be sha256:<64 lowercase hex digits>")
                })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts a tag; one before it is a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        // Cheap early refusal; the full name is checked once it is normalised.
        if name.len() > NAME_MAX {
            return Err(ReferenceError::TooLong {
                reference: s.to_string(),
            });
        }
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }
        let (registry, path) = split_registry(name);
        validate_registry(registry).map_err(|r| invalid(&r))?;
        validate_path(path).map_err(|r| invalid(&r))?;

        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        // As Docker's ParseNormalizedNamed: the limit is on the name in full
        // (`docker.io/library/x`), so what we print always parses again.
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::TooLong {
                reference: s.to_string(),
            });
        }
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// The host (and port) the registry API is served from.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The same repository, pinned to a digest (any tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at another tag (any digest is dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag).map_err(|reason| ReferenceError::Invalid {
            reference: format!("{self}"),
            reason,
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository in another repository path of the same registry.
    pub fn with_repository(&self, repository: &str) -> Result<Self, ReferenceError> {
        validate_path(repository).map_err(|reason| ReferenceError::Invalid {
            reference: repository.to_string(),
            reason,
        })?;
        Ok(Reference {
            repository: repository.to_string(),
            ..self.clone()
        })
    }

    /// What goes after `/manifests/`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// `registry-1.docker.io` for Docker Hub, otherwise the registry itself.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry when it
/// looks like a host (has '.' or ':', is `localhost`, or has uppercase letters,
/// which repository paths may not).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_MAX
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: use up to {TAG_MAX} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid registry {registry:?}: expected host, host:port or [ipv6]:port"
        ))
    };
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad();
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => return Ok(()),
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return bad(),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return bad();
        }
    }
    if registry.starts_with('[') {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        bad()
    }
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_path(path: &str) -> Result<(), String> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name {path:?} must be lowercase"));
    }
    for component in path.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "invalid repository component {component:?}: use lowercase letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Registry, repository and tag.
    fn parts(x: &Reference) -> (&str, &str, Option<&str>) {
        (&x.registry, &x.repository, x.tag.as_deref())
    }

    #[test]
    fn single_component_names_are_official_hub_images_at_latest() {
        let x = r("python");
        assert_eq!(parts(&x), ("docker.io", "library/python", Some("latest")));
        assert_eq!(x.to_string(), "docker.io/library/python:latest");
        assert_eq!(x.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn hub_user_repositories_get_no_library_prefix() {
        assert_eq!(r("team/app:1.0").to_string(), "docker.io/team/app:1.0");
        assert_eq!(
            r("index.docker.io/team/app").to_string(),
            "docker.io/team/app:latest"
        );
        assert_eq!(
            r("docker.io/python:3.12").to_string(),
            "docker.io/library/python:3.12"
        );
    }

    #[test]
    fn first_component_is_a_registry_only_when_it_looks_like_a_host() {
        assert_eq!(r("ghcr.io/org/app").registry, "ghcr.io");
        assert_eq!(r("localhost/app").registry, "localhost");
        assert_eq!(r("localhost:5000/app:v1").registry, "localhost:5000");
        assert_eq!(r("127.0.0.1:5000/a/b/c").repository, "a/b/c");
        assert_eq!(r("Registry/app").registry, "Registry");
        assert_eq!(r("org/app").registry, "docker.io");
        assert_eq!(r("localhost:5000/app").api_host(), "localhost:5000");
    }

    #[test]
    fn a_port_without_a_path_is_a_tag_as_in_docker() {
        let x = r("localhost:5000");
        assert_eq!(x.to_string(), "docker.io/library/localhost:5000");
    }

    #[test]
    fn ipv6_registries_need_brackets() {
        let x = r("[::1]:5000/app:v1");
        assert_eq!(parts(&x), ("[::1]:5000", "app", Some("v1")));
        assert!(Reference::parse("[zz]:5000/app").is_err());
    }

    #[test]
    fn a_digest_drops_the_tag_and_the_default_tag() {
        let x = r(&format!("ghcr.io/org/app:1.0@{D}"));
        assert_eq!(x.tag, None);
        assert_eq!(x.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(x.to_string(), format!("ghcr.io/org/app@{D}"));
        assert_eq!(x.manifest_reference(), D);
        assert_eq!(r(&format!("python@{D}")).tag, None);
    }

    #[test]
    fn with_tag_and_with_digest_replace_each_other() {
        let x = r("ghcr.io/org/app:1.0");
        let pinned = x.with_digest(D.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("ghcr.io/org/app@{D}"));
        assert_eq!(
            pinned.with_tag("2.0").unwrap().to_string(),
            "ghcr.io/org/app:2.0"
        );
        assert!(x.with_tag("-bad").is_err());
        assert_eq!(x.manifest_reference(), "1.0");
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "",
            "UPPER",
            "org/App",
            "app:",
            "app:-tag",
            "app:.tag",
            "a//b",
            "a/-b",
            "a__-b/c..d",
            "app@sha256:abc",
            "app@sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "host:port/app",
            "-host.io/app",
            "app with space",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Reference::parse(&format!("app:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn separators_follow_the_grammar() {
        for ok in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d__e"] {
            assert!(Reference::parse(ok).is_ok(), "{ok:?} should parse");
        }
    }

    #[test]
    fn names_longer_than_255_characters_are_rejected() {
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(
            Reference::parse(&long),
            Err(ReferenceError::TooLong { .. })
        ));
        let fits = format!("example.com/{}", "a".repeat(243));
        assert!(Reference::parse(&fits).is_ok());
    }

    #[test]
    fn the_limit_counts_the_name_in_full_so_what_is_printed_parses_again() {
        // 240 characters as written, 258 as docker.io/library/...
        let short = "a".repeat(240);
        assert!(matches!(
            Reference::parse(&short),
            Err(ReferenceError::TooLong { .. })
        ));
        let fits = "a".repeat(255 - "docker.io/library/".len());
        let r = Reference::parse(&fits).unwrap();
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn errors_name_the_reference() {
        let e = Reference::parse("org/App").unwrap_err().to_string();
        assert!(e.contains("org/App") && e.contains("lowercase"), "{e}");
    }
}

/// A registry as users type it for `login` (`https://index.docker.io/v1/`,
/// `ghcr.io`, `localhost:5000/`), as the host we key credentials by.
pub fn normalise_registry(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod normalise_tests {
    #[test]
    fn login_hosts_are_normalised() {
        assert_eq!(
            super::normalise_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(
            super::normalise_registry("localhost:5000/"),
            "localhost:5000"
        );
        assert_eq!(super::normalise_registry("ghcr.io"), "ghcr.io");
    }
}
