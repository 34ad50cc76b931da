//! Artifacts that refer to an image (its SBOM, its provenance), pushed as OCI
//! 1.1 artifact manifests whose `subject` is the image's manifest.
//!
//! Where the registry indexes referrers itself (it answers the push with
//! `OCI-Subject` and `GET /v2/<name>/referrers/<digest>` answers), nothing
//! else is written. Otherwise the distribution spec's fallback applies: an
//! index under the tag `sha256-<hex of the subject>`, updated by
//! read-modify-write, that keeps every entry already there (other tools'
//! signatures and attestations) and adds ours once.

use crate::digest::Digest;
use crate::image::json::canonical;
use crate::image::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Read};

pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

#[derive(Debug, thiserror::Error)]
pub enum ReferrersError {
    #[error("attaching {what} to {subject}")]
    Registry {
        what: String,
        subject: Digest,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("the referrers index at {tag} is not an image index; remove or fix that tag")]
    BadIndex { tag: String },
    /// The image they refer to was not pushed (its own error says why).
    #[error("{subject} was not pushed, so nothing was attached to it")]
    SubjectNotPushed { subject: Digest },
}

/// One document to attach.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// What it is (`application/spdx+json`, `application/vnd.in-toto+json`);
    /// also its one layer's media type.
    pub artifact_type: String,
    pub bytes: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// The image an artifact refers to.
#[derive(Clone, Debug)]
pub struct Subject {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Subject {
    /// An image manifest as a subject (its size matters only to a push).
    pub fn manifest(digest: &Digest, size: u64) -> Subject {
        Subject {
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
            digest: digest.clone(),
            size,
        }
    }
}

/// How the artifacts were made findable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// The registry's referrers API lists them.
    Api,
    /// The fallback tag, and whether this push changed its index.
    Tag { tag: String, changed: bool },
}

/// An artifact's manifest: empty config, the document as its one layer.
pub fn artifact_manifest(a: &Artifact, subject: &Subject) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": a.artifact_type,
        "config": {
            "mediaType": MEDIA_TYPE_EMPTY,
            "digest": Digest::of_bytes(EMPTY).to_string(),
            "size": EMPTY.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": a.artifact_type,
            "digest": Digest::of_bytes(&a.bytes).to_string(),
            "size": a.bytes.len(),
        }],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.to_string(),
            "size": subject.size,
        },
    });
    if !a.annotations.is_empty() {
        m["annotations"] = json!(a.annotations);
    }
    canonical(&m)
}

/// `sha256-<hex>`: the fallback tag for referrers of `subject`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

/// The index descriptor for an artifact manifest, as the fallback index lists it.
pub fn index_entry(a: &Artifact, manifest: &[u8]) -> Value {
    let mut d = json!({
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "digest": Digest::of_bytes(manifest).to_string(),
        "size": manifest.len(),
        "artifactType": a.artifact_type,
    });
    if !a.annotations.is_empty() {
        d["annotations"] = json!(a.annotations);
    }
    d
}

/// Adds `entries` to the fallback index `current` (or a new one) at `tag`,
/// keeping every entry already there; `None` when all were listed already.
pub fn merge_index(
    tag: &str,
    current: Option<&[u8]>,
    entries: &[Value],
) -> Result<Option<Vec<u8>>, ReferrersError> {
    let bad = || ReferrersError::BadIndex {
        tag: tag.to_string(),
    };
    let mut index = match current {
        Some(bytes) => serde_json::from_slice::<Value>(bytes).map_err(|_| bad())?,
        None => json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [],
        }),
    };
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(bad)?;
    let mut changed = false;
    for e in entries {
        if !manifests.iter().any(|m| m["digest"] == e["digest"]) {
            manifests.push(e.clone());
            changed = true;
        }
    }
    Ok(changed.then(|| canonical(&index)))
}

/// What [`already_attached`] found.
enum Listed {
    All(Attached),
    /// Some entry is missing; `api_answered` says the referrers API exists,
    /// `fallback` is the fallback tag's index as read, and when.
    NotAll {
        api_answered: bool,
        fallback: (String, Option<Vec<u8>>, std::time::Instant),
    },
}

/// How long a read of the fallback index stands in for the read right before
/// its write: the read-modify-write has no lock either way, and the inner
/// loop's attestations go up well within this.
const FALLBACK_READ_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Wraps the registry's failure at `what` (for `subject`'s referrers).
fn registry_failure(subject: &Digest, what: &str) -> impl FnOnce(RegistryError) -> ReferrersError {
    let (what, subject) = (what.to_string(), subject.clone());
    move |source| ReferrersError::Registry {
        what,
        subject,
        source: Box::new(source),
    }
}

/// Whether every entry is listed already where readers look: the referrers
/// API, else the fallback tag's index. Our manifests are pushed before they are
/// listed, so a listed entry was pushed; a push that changed nothing then costs
/// two or three requests instead of about ten.
fn already_attached(
    client: &RegistryClient,
    repo: &Reference,
    subject: &Subject,
    entries: &[Value],
) -> Result<Listed, ReferrersError> {
    let fail = |what: &str| registry_failure(&subject.digest, what);
    let lists_all = |index: &[u8]| {
        let index: Value = serde_json::from_slice(index).unwrap_or_default();
        let listed = index["manifests"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .all(|e| listed.iter().any(|m| m["digest"] == e["digest"]))
    };
    // The fallback tag and the API side by side (issue 26: a round trip less
    // in the inner loop, where neither lists a new image's artifacts yet).
    let read_at = std::time::Instant::now();
    let (fallback, api) = std::thread::scope(|s| {
        let api = s.spawn(|| client.get_referrers(repo, &subject.digest));
        let fallback = fallback_index(client, repo, subject);
        (
            fallback,
            api.join().expect("the referrers read's thread ended"),
        )
    });
    let (tag, current) = fallback?;
    if current.as_deref().is_some_and(lists_all) {
        return Ok(Listed::All(Attached::Tag {
            tag,
            changed: false,
        }));
    }
    let fallback = (tag, current, read_at);
    match api.map_err(fail("the referrers list"))? {
        Some(index) if lists_all(&index) => Ok(Listed::All(Attached::Api)),
        Some(_) => Ok(Listed::NotAll {
            api_answered: true,
            fallback,
        }),
        None => Ok(Listed::NotAll {
            api_answered: false,
            fallback,
        }),
    }
}

/// The fallback tag for `subject`'s referrers, and the index it holds now, if any.
fn fallback_index(
    client: &RegistryClient,
    repo: &Reference,
    subject: &Subject,
) -> Result<(String, Option<Vec<u8>>), ReferrersError> {
    let tag = fallback_tag(&subject.digest);
    let tag_ref = repo.with_tag(&tag).expect("sha256-<hex> is a valid tag");
    let fail = || registry_failure(&subject.digest, &tag);
    let current = match client.head_manifest(&tag_ref).map_err(fail())? {
        Some((digest, _)) => Some(
            client
                .get_manifest(&tag_ref.with_digest(digest))
                .map_err(fail())?
                .0,
        ),
        None => None,
    };
    Ok((tag, current))
}

fn cursor(bytes: &[u8]) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(io::Cursor::new(bytes.to_vec())))
}

/// The largest attached document read back (an SBOM of thousands of packages is a few MiB).
const MAX_DOCUMENT: u64 = 64 << 20;

/// The first document of `artifact_type` attached to `subject` in `repo`
/// (through the fallback tag, else the referrers API), its bytes checked
/// against its digest; `None` when there is none.
pub fn find_document(
    client: &RegistryClient,
    repo: &Reference,
    subject: &Subject,
    artifact_type: &str,
) -> Result<Option<Vec<u8>>, ReferrersError> {
    let fail = |what: &str| registry_failure(&subject.digest, what);
    let (_, index) = fallback_index(client, repo, subject)?;
    let index = match index {
        Some(i) => Some(i),
        None => client
            .get_referrers(repo, &subject.digest)
            .map_err(fail("the referrers list"))?,
    };
    let Some(index) = index else { return Ok(None) };
    let index: Value = serde_json::from_slice(&index).unwrap_or_default();
    let wanted = index["manifests"].as_array().and_then(|m| {
        m.iter()
            .find(|d| d["artifactType"].as_str() == Some(artifact_type))
    });
    let Some(digest) = wanted.and_then(|d| d["digest"].as_str()?.parse::<Digest>().ok()) else {
        return Ok(None);
    };
    let (manifest, _, _) = client
        .get_manifest(&repo.with_digest(digest))
        .map_err(fail("an attached document"))?;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap_or_default();
    let Some(layer) = manifest["layers"][0]["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
    else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    client
        .get_blob(repo, &layer, None)
        .map_err(fail("an attached document"))?
        .take(MAX_DOCUMENT)
        .read_to_end(&mut bytes)
        .map_err(|source| {
            fail("an attached document")(RegistryError::Io {
                what: format!("reading blob {layer}"),
                source,
            })
        })?;
    Ok((Digest::of_bytes(&bytes) == layer).then_some(bytes))
}

/// What the caller knows of the push of the image the artifacts refer to.
pub struct SubjectPush<'a> {
    /// Asked (and may wait) before the fallback tag's index is written, and
    /// before a manifest a registry refused is sent again: whether the image
    /// is in. False when it was not pushed: then nothing lists our artifacts.
    pub pushed: &'a (dyn Fn() -> bool + Sync),
    /// The image is most likely new to the repository (the push moves a tag
    /// from another image): its artifacts cannot be listed yet, so their
    /// documents go up while that is checked.
    pub likely_new: bool,
}

impl SubjectPush<'_> {
    /// An image that is in the registry already (a rebase's, pushed before).
    pub const PUSHED: SubjectPush<'static> = SubjectPush {
        pushed: &|| true,
        likely_new: false,
    };
}

/// Pushes `artifacts` as referrers of `subject` in `repo`'s repository.
///
/// Their blobs and manifests may go up before the image is in: the OCI
/// distribution spec has a registry accept a manifest whose subject it does
/// not hold yet, and a registry that refuses one (GitLab's did) gets it
/// again once the image is in. Only the listing, the fallback tag's index,
/// waits for the image, so nothing lists an image that failed. That takes
/// the manifests' round trip off the end of a push (issue 26).
pub fn attach(
    client: &RegistryClient,
    repo: &Reference,
    subject: &Subject,
    artifacts: &[Artifact],
    push: &SubjectPush,
) -> Result<Attached, ReferrersError> {
    let fail = |what: &str| registry_failure(&subject.digest, what);
    let manifests: Vec<Vec<u8>> = artifacts
        .iter()
        .map(|a| artifact_manifest(a, subject))
        .collect();
    let entries: Vec<Value> = artifacts
        .iter()
        .zip(&manifests)
        .map(|(a, m)| index_entry(a, m))
        .collect();
    // The empty config is the same blob in every push: a run within a day
    // that saw it in this repository saves the next ones its HEAD.
    let empty = Digest::of_bytes(EMPTY);
    let config_known = client.remembers_blob(repo, &empty);
    let documents = || push_documents(client, repo, subject, artifacts, !config_known);
    let config_again = || match config_known {
        true => {
            client.remember_blob(repo, &empty, false);
            push_empty_config(client, repo)
        }
        false => Ok(()),
    };
    let (listed, pushed_beside) = match push.likely_new {
        true => std::thread::scope(|s| {
            let pushing = s.spawn(documents);
            let listed = already_attached(client, repo, subject, &entries);
            (
                listed,
                Some(pushing.join().expect("the documents' thread ended")),
            )
        }),
        false => (already_attached(client, repo, subject, &entries), None),
    };
    let (api_answered, fallback) = match listed? {
        Listed::All(attached) => return Ok(attached),
        Listed::NotAll {
            api_answered,
            fallback,
        } => (api_answered, fallback),
    };
    pushed_beside.unwrap_or_else(documents)?;
    let pairs: Vec<(&Artifact, &Vec<u8>)> = artifacts.iter().zip(&manifests).collect();
    let pushed = crate::parallel::map_ordered(&pairs, pairs.len(), |(a, manifest)| {
        put_referrer(client, repo, subject, manifest, push.pushed, &config_again)
            .map_err(|e| e.or_failure(fail(a.artifact_type.as_str())))
    });
    let mut all_indexed = true;
    for indexed in pushed {
        all_indexed &= indexed?;
    }
    if !config_known {
        client.remember_blob(repo, &empty, true);
    }
    if !(push.pushed)() {
        return Err(ReferrersError::SubjectNotPushed {
            subject: subject.digest.clone(),
        });
    }
    // Some registries send OCI-Subject without the API (research notes: ECR),
    // so the API itself must answer too.
    if all_indexed
        && (api_answered
            || client
                .get_referrers(repo, &subject.digest)
                .map_err(fail("the referrers list"))?
                .is_some())
    {
        return Ok(Attached::Api);
    }
    // Read again right before the write when the read above is old: long
    // uploads leave time for another tool to change the index, and
    // read-modify-write keeps its entries.
    let (tag, current) = match fallback {
        (tag, current, read_at) if read_at.elapsed() < FALLBACK_READ_FRESH => (tag, current),
        _ => fallback_index(client, repo, subject)?,
    };
    let merged = merge_index(&tag, current.as_deref(), &entries)?;
    let changed = merged.is_some();
    if let Some(bytes) = merged {
        client
            .put_manifest(repo, &tag, &bytes, MEDIA_TYPE_OCI_INDEX)
            .map_err(fail(&tag))?;
    }
    Ok(Attached::Tag { tag, changed })
}

/// The empty config (when `with_config`) and the documents (an SBOM and a
/// provenance statement), side by side: each is a few small sequential requests.
fn push_documents(
    client: &RegistryClient,
    repo: &Reference,
    subject: &Subject,
    artifacts: &[Artifact],
    with_config: bool,
) -> Result<(), ReferrersError> {
    let fail = |what: &str| registry_failure(&subject.digest, what);
    let mut docs: Vec<Option<&Artifact>> = match with_config {
        true => vec![None],
        false => vec![],
    };
    docs.extend(artifacts.iter().map(Some));
    let blobs = crate::parallel::map_ordered(&docs, docs.len(), |doc| match doc {
        None => push_empty_config(client, repo).map_err(fail("the empty config")),
        // Not attached yet, so their documents (which name this image) are
        // new: a small one goes up without asking first.
        Some(a) => {
            let (digest, size) = (Digest::of_bytes(&a.bytes), a.bytes.len() as u64);
            let open = || cursor(&a.bytes);
            match size <= super::push::FRESH_BLOB_MAX {
                true => client.push_new_blob(repo, &digest, size, &open),
                false => client.push_blob(repo, &digest, size, &open, None),
            }
            .map(drop)
            .map_err(fail(a.artifact_type.as_str()))
        }
    });
    blobs.into_iter().collect()
}

/// The artifacts' config, `{}`, unless the registry has it.
fn push_empty_config(client: &RegistryClient, repo: &Reference) -> Result<(), RegistryError> {
    let empty = Digest::of_bytes(EMPTY);
    client
        .push_blob(repo, &empty, EMPTY.len() as u64, &|| cursor(EMPTY), None)
        .map(drop)
}

/// Why a referrer's manifest is not in.
enum NotPut {
    /// The registry refused it (again, after the subject was in).
    Refused(RegistryError),
    /// It was refused before the subject was in, and the subject never came.
    SubjectNotPushed(Digest),
}

impl NotPut {
    fn or_failure(self, fail: impl FnOnce(RegistryError) -> ReferrersError) -> ReferrersError {
        match self {
            NotPut::Refused(e) => fail(e),
            NotPut::SubjectNotPushed(subject) => ReferrersError::SubjectNotPushed { subject },
        }
    }
}

/// Puts a referrer's manifest; when the registry refuses it, sends it again
/// once its subject is in (a registry that wants the subject first), and
/// after `config_again` has sent the empty config if it was skipped on an
/// earlier run's word (a registry GC or a deleted repository may have taken
/// it). Says whether the registry indexed it (OCI-Subject).
fn put_referrer(
    client: &RegistryClient,
    repo: &Reference,
    subject: &Subject,
    manifest: &[u8],
    subject_pushed: &(dyn Fn() -> bool + Sync),
    config_again: &(dyn Fn() -> Result<(), RegistryError> + Sync),
) -> Result<bool, NotPut> {
    let put = || client.put_referrer_manifest(repo, manifest, MEDIA_TYPE_OCI_MANIFEST);
    if let Ok((_, indexed)) = put() {
        return Ok(indexed);
    }
    config_again().map_err(NotPut::Refused)?;
    if !subject_pushed() {
        return Err(NotPut::SubjectNotPushed(subject.digest.clone()));
    }
    put().map(|(_, indexed)| indexed).map_err(NotPut::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sbom() -> Artifact {
        Artifact {
            artifact_type: "application/spdx+json".into(),
            bytes: b"{\"spdxVersion\":\"SPDX-2.3\"}".to_vec(),
            annotations: BTreeMap::new(),
        }
    }

    fn subject() -> Subject {
        Subject {
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            digest: Digest::of_bytes(b"image"),
            size: 5,
        }
    }

    #[test]
    fn artifact_manifest_has_empty_config_one_layer_and_the_subject() {
        let m: Value = serde_json::from_slice(&artifact_manifest(&sbom(), &subject())).unwrap();
        assert_eq!(m["artifactType"], "application/spdx+json");
        assert_eq!(m["config"]["mediaType"], MEDIA_TYPE_EMPTY);
        assert_eq!(
            m["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(m["layers"][0]["mediaType"], "application/spdx+json");
        assert_eq!(m["subject"]["digest"], subject().digest.to_string());
    }

    #[test]
    fn merge_keeps_others_entries_and_adds_ours_once() {
        let other = json!({"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": Digest::of_bytes(b"sig").to_string(), "size": 3, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"});
        let current = canonical(
            &json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": [other]}),
        );
        let ours = index_entry(&sbom(), &artifact_manifest(&sbom(), &subject()));
        let merged = merge_index("t", Some(&current), std::slice::from_ref(&ours))
            .unwrap()
            .expect("ours is new");
        let v: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(v["manifests"][0], other);
        assert_eq!(v["manifests"][1]["artifactType"], "application/spdx+json");
        // A second push changes nothing.
        assert_eq!(merge_index("t", Some(&merged), &[ours]).unwrap(), None);
    }

    #[test]
    fn merge_starts_an_index_and_refuses_what_is_not_one() {
        let ours = index_entry(&sbom(), b"m");
        let v: Value = serde_json::from_slice(
            &merge_index("t", None, std::slice::from_ref(&ours))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["mediaType"], MEDIA_TYPE_OCI_INDEX);
        assert!(merge_index("t", Some(b"{\"layers\":[]}"), &[ours]).is_err());
    }

    #[test]
    fn fallback_tag_is_algorithm_dash_hex() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.hex()));
    }

    /// A registry without the referrers API that takes every upload.
    fn accepting_registry() -> crate::test_http::Server {
        use crate::test_http::{Reply, Request, Server};
        Server::start(|r: &Request| match (r.method.as_str(), r.path()) {
            ("GET", "/v2/") => Reply::status(200),
            ("POST", _) => Reply::status(202).header("Location", "/v2/app/blobs/uploads/u1"),
            ("PUT", p) if p.contains("/manifests/") => Reply::status(201),
            ("PUT", _) => Reply::status(201),
            _ => Reply::status(404),
        })
    }

    fn attach_with(
        server: &crate::test_http::Server,
        pushed: bool,
    ) -> Result<Attached, ReferrersError> {
        use crate::registry::{credentials::Anonymous, TransportOptions};
        let client = RegistryClient::new(TransportOptions::default(), Anonymous).unwrap();
        let repo = Reference::parse(&format!("{}/app:1", server.addr)).unwrap();
        let push = SubjectPush {
            pushed: &|| pushed,
            likely_new: true,
        };
        attach(&client, &repo, &subject(), &[sbom()], &push)
    }

    #[test]
    fn the_artifacts_go_up_beside_the_image_and_nothing_lists_an_image_that_failed() {
        let server = accepting_registry();
        let err = attach_with(&server, false).unwrap_err();
        assert!(
            matches!(err, ReferrersError::SubjectNotPushed { .. }),
            "{err}"
        );
        let lines = server.lines();
        assert!(
            lines.iter().any(|l| l == "POST /v2/app/blobs/uploads/"),
            "{lines:?}"
        );
        let tag = fallback_tag(&subject().digest);
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("PUT") && l.ends_with(&tag)),
            "{lines:?}"
        );

        let server = accepting_registry();
        assert!(matches!(
            attach_with(&server, true).unwrap(),
            Attached::Tag { .. }
        ));
        let puts: Vec<String> = server
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("PUT /v2/app/manifests/"))
            .collect();
        // The artifact's manifest, then the referrers tag's index.
        assert_eq!(puts.len(), 2, "{puts:?}");
        assert!(puts[1].ends_with(&tag), "{puts:?}");
    }

    #[test]
    fn a_referrer_refused_before_its_subject_is_sent_again_once_the_subject_is_in() {
        use crate::registry::{credentials::Anonymous, TransportOptions};
        use crate::test_http::{Reply, Request, Server};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let subject_in = Arc::new(AtomicBool::new(false));
        let server = Server::start({
            let subject_in = subject_in.clone();
            move |r: &Request| match (r.method.as_str(), r.path()) {
                ("GET", "/v2/") => Reply::status(200),
                ("POST", _) => Reply::status(202).header("Location", "/v2/app/blobs/uploads/u1"),
                // As GitLab's registry did: a manifest whose subject is unknown is refused.
                ("PUT", p) if p.contains("/manifests/sha256:") => {
                    match subject_in.load(Ordering::SeqCst) {
                        true => Reply::status(201),
                        false => Reply::status(400),
                    }
                }
                ("PUT", _) => Reply::status(201),
                _ => Reply::status(404),
            }
        });
        let client = RegistryClient::new(TransportOptions::default(), Anonymous).unwrap();
        let repo = Reference::parse(&format!("{}/app:1", server.addr)).unwrap();
        let pushed = || {
            subject_in.store(true, Ordering::SeqCst);
            true
        };
        let push = SubjectPush {
            pushed: &pushed,
            likely_new: false,
        };
        let attached = attach(&client, &repo, &subject(), &[sbom()], &push).unwrap();
        assert!(matches!(attached, Attached::Tag { .. }), "{attached:?}");
        let puts: Vec<String> = server
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("PUT /v2/app/manifests/"))
            .collect();
        // Refused, sent again once the image was in, then listed.
        assert_eq!(puts.len(), 3, "{puts:?}");
        assert_eq!(puts[0], puts[1]);
        assert!(
            puts[2].ends_with(&fallback_tag(&subject().digest)),
            "{puts:?}"
        );
    }

    #[test]
    fn the_empty_config_is_asked_for_once_a_day_and_sent_again_when_the_registry_lost_it() {
        use crate::registry::{credentials::Anonymous, TransportOptions};
        use crate::test_http::{Reply, Request, Server};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let empty_path = format!("/v2/app/blobs/{}", Digest::of_bytes(EMPTY));
        // Holds the empty config until `lost` is set (a GC, a deleted
        // repository); then refuses a manifest that needs it until it is sent.
        let (holds, lost) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let server = Server::start({
            let (holds, lost) = (holds.clone(), lost.clone());
            move |r: &Request| match (r.method.as_str(), r.path()) {
                ("GET", "/v2/") => Reply::status(200),
                ("HEAD", p) if p.contains("/blobs/") => match holds.load(Ordering::SeqCst) {
                    true => Reply::status(200).header("Content-Length", "2"),
                    false => Reply::status(404),
                },
                ("POST", _) => Reply::status(202).header("Location", "/v2/app/blobs/uploads/u1"),
                ("PUT", p) if p.contains("/manifests/sha256:") => {
                    match lost.load(Ordering::SeqCst) && !holds.load(Ordering::SeqCst) {
                        true => Reply::status(400),
                        false => Reply::status(201),
                    }
                }
                ("PUT", _) if r.query().contains(Digest::of_bytes(EMPTY).hex()) => {
                    holds.store(true, Ordering::SeqCst);
                    Reply::status(201)
                }
                ("PUT", _) => Reply::status(201),
                _ => Reply::status(404),
            }
        });
        let cache = tempfile::tempdir().unwrap();
        let repo = Reference::parse(&format!("{}/app:1", server.addr)).unwrap();
        let attach_once = || {
            let store = crate::store::Store::open(cache.path()).unwrap();
            let client = RegistryClient::new(TransportOptions::default(), Anonymous)
                .unwrap()
                .remember_endpoints(store);
            let push = SubjectPush {
                pushed: &|| true,
                likely_new: true,
            };
            let before = server.lines().len();
            let attached = attach(&client, &repo, &subject(), &[sbom()], &push);
            assert!(attached.is_ok(), "{attached:?}");
            server.lines()[before..].to_vec()
        };
        let asked = |lines: &[String]| lines.iter().any(|l| l.ends_with(&empty_path));
        assert!(
            asked(&attach_once()),
            "the first push asks for the empty config"
        );
        assert!(
            !asked(&attach_once()),
            "the next one takes the first one's word"
        );

        holds.store(false, Ordering::SeqCst);
        lost.store(true, Ordering::SeqCst);
        let lines = attach_once();
        assert!(
            holds.load(Ordering::SeqCst),
            "the lost config was not sent again: {lines:?}"
        );
        assert!(asked(&attach_once()), "the word that failed is forgotten");
    }
}
