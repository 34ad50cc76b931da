//! The client over a scripted registry on 127.0.0.1: which requests it sends,
//! in which order, and what it makes of the answers.

use super::credentials::Anonymous;
use super::{PushOutcome, RegistryClient, RegistryError, TransferStats, TransportOptions};
use crate::digest::Digest;
use crate::image::MEDIA_TYPE_OCI_MANIFEST;
use crate::reference::Reference;
use crate::test_http::{Reply, Request, Server};
use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn client(chunk_size: Option<u64>) -> RegistryClient {
    let options = TransportOptions {
        retry_base: Duration::from_millis(1),
        max_retries: 2,
        chunk_size,
        ..Default::default()
    };
    RegistryClient::new(options, Anonymous).unwrap()
}

fn repo(server: &Server) -> Reference {
    Reference::parse(&format!("{}/team/app:1", server.addr)).unwrap()
}

/// A registry that has no blobs, hands out upload sessions and accepts them;
/// `put_status` answers each PUT in turn (then 201).
fn uploads_registry(put_status: Vec<u16>) -> Server {
    let puts = AtomicUsize::new(0);
    Server::start(move |r: &Request| match (r.method.as_str(), r.path()) {
        ("GET", "/v2/") => Reply::status(200),
        ("HEAD", _) => Reply::status(404),
        ("POST", "/v2/team/app/blobs/uploads/") => {
            Reply::status(202).header("Location", "/v2/team/app/blobs/uploads/s1?state=a")
        }
        ("PATCH", _) => {
            Reply::status(202).header("Location", "/v2/team/app/blobs/uploads/s1?state=b")
        }
        ("PUT", _) => {
            let n = puts.fetch_add(1, Ordering::SeqCst);
            Reply::status(put_status.get(n).copied().unwrap_or(201))
        }
        ("DELETE", _) => Reply::status(204),
        _ => Reply::status(400),
    })
}

/// Pushes `data` to `team/app`: the outcome, how often the blob was opened,
/// and the client's counters.
fn push(
    server: &Server,
    chunk_size: Option<u64>,
    data: &'static [u8],
    mount_from: Option<&str>,
) -> (PushOutcome, usize, TransferStats) {
    let c = client(chunk_size);
    let opened = AtomicUsize::new(0);
    let open = || {
        opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Cursor::new(data)) as Box<dyn Read + Send>)
    };
    let digest = Digest::of_bytes(data);
    let outcome = c
        .push_blob(&repo(server), &digest, data.len() as u64, &open, mount_from)
        .unwrap();
    (outcome, opened.load(Ordering::SeqCst), c.stats())
}

#[test]
fn a_missing_blob_is_uploaded_in_one_put_to_the_session_with_its_digest() {
    let server = uploads_registry(vec![]);
    let data: &[u8] = b"layer bytes";
    let digest = Digest::of_bytes(data);
    let (outcome, opened, stats) = push(&server, None, data, None);
    assert_eq!(outcome, PushOutcome::Uploaded { bytes: 11 });
    assert_eq!(
        server.lines(),
        [
            format!("HEAD /v2/team/app/blobs/{digest}"),
            "POST /v2/team/app/blobs/uploads/".to_string(),
            "PUT /v2/team/app/blobs/uploads/s1".to_string(),
        ]
    );
    let put = server.requests().pop().unwrap();
    // The session's own query is kept and the digest added to it.
    assert_eq!(
        put.query(),
        format!("state=a&digest=sha256%3A{}", digest.hex())
    );
    assert_eq!(put.body, data);
    assert_eq!(opened, 1);
    assert_eq!(stats.blob_bytes_uploaded, 11);
}

#[test]
fn chunked_uploads_patch_each_range_then_close_the_session_with_an_empty_put() {
    let server = uploads_registry(vec![]);
    push(&server, Some(4), b"0123456789", None);
    let patches: Vec<(String, Vec<u8>)> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.header("content-range").unwrap().to_string(), r.body))
        .collect();
    assert_eq!(
        patches,
        [
            ("0-3".to_string(), b"0123".to_vec()),
            ("4-7".to_string(), b"4567".to_vec()),
            ("8-9".to_string(), b"89".to_vec()),
        ]
    );
    let put = server.requests().pop().unwrap();
    assert_eq!(put.method, "PUT");
    // Later chunks go to the Location the last PATCH answered with.
    assert!(
        put.query().starts_with("state=b&digest=sha256"),
        "{}",
        put.query()
    );
    assert!(put.body.is_empty());
}

#[test]
fn a_failed_put_cancels_the_session_and_restarts_the_step_with_the_blob_reopened() {
    let server = uploads_registry(vec![503]);
    let (outcome, opened, _) = push(&server, None, b"layer", None);
    assert_eq!(outcome, PushOutcome::Uploaded { bytes: 5 });
    let lines = server.lines();
    assert_eq!(lines.iter().filter(|l| l.starts_with("PUT")).count(), 2);
    assert!(lines.contains(&"DELETE /v2/team/app/blobs/uploads/s1".to_string()));
    assert_eq!(opened, 2);
}

#[test]
fn a_mount_from_the_bases_repository_sends_no_bytes() {
    let server = Server::start(|r: &Request| match (r.method.as_str(), r.path()) {
        ("GET", "/v2/") => Reply::status(200),
        ("HEAD", _) => Reply::status(404),
        ("POST", _) if r.query().contains("mount=") => Reply::status(201),
        _ => Reply::status(400),
    });
    let data: &[u8] = b"base layer";
    let (outcome, opened, _) = push(&server, None, data, Some("library/python"));
    assert_eq!(outcome, PushOutcome::Mounted);
    let post = server.requests().pop().unwrap();
    assert_eq!(
        post.query(),
        format!(
            "mount=sha256%3A{}&from=library%2Fpython",
            Digest::of_bytes(data).hex()
        )
    );
    assert_eq!(opened, 0);
}

#[test]
fn manifests_labelled_json_are_typed_by_their_body_and_pinned_ones_are_checked() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","config":{{}},"layers":[]}}"#
    );
    let served = body.clone();
    let server = Server::start(move |r: &Request| {
        match r.path() {
        "/v2/" => Reply::status(200),
        "/v2/team/app/manifests/1" | "/v2/team/app/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000" => {
            Reply::status(200)
                .header("Content-Type", "application/json")
                .body(served.clone())
        }
        _ => Reply::status(404).body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
    }
    });
    let c = client(None);
    let (bytes, media_type, digest) = c.get_manifest(&repo(&server)).unwrap();
    assert_eq!(bytes, body.as_bytes());
    assert_eq!(media_type, MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(digest, Digest::of_bytes(body.as_bytes()));
    // The accept header names every manifest type we read.
    let get = server.requests().pop().unwrap();
    assert!(get
        .header("accept")
        .unwrap()
        .contains("manifest.list.v2+json"));

    let pinned = repo(&server).with_digest(Digest::from_hex(&"0".repeat(64)).unwrap());
    let err = c.get_manifest(&pinned).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");

    let missing = Reference::parse(&format!("{}/team/app:2", server.addr)).unwrap();
    let err = c.get_manifest(&missing).unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestUnknown { .. }),
        "{err}"
    );
}

#[test]
fn a_manifest_is_refused_before_any_request_when_its_digest_is_not_the_one_named() {
    let server = Server::start(|_: &Request| Reply::status(200));
    let other = Digest::of_bytes(b"something else");
    let err = client(None)
        .put_manifest(
            &repo(&server),
            &other.to_string(),
            b"{}",
            MEDIA_TYPE_OCI_MANIFEST,
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(server.requests().is_empty());
}

#[test]
fn a_registry_confirming_another_digest_for_our_manifest_is_an_error() {
    let server = Server::start(|r: &Request| match r.method.as_str() {
        "PUT" => Reply::status(201).header(
            "Docker-Content-Digest",
            Digest::of_bytes(b"not ours").to_string(),
        ),
        _ => Reply::status(200),
    });
    let err = client(None)
        .put_manifest(&repo(&server), "1", b"{}", MEDIA_TYPE_OCI_MANIFEST)
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    let put = server.requests().pop().unwrap();
    assert_eq!(put.header("content-type"), Some(MEDIA_TYPE_OCI_MANIFEST));
    assert_eq!(put.body, b"{}");
}

#[test]
fn a_blob_is_verified_as_it_streams_and_retried_on_503() {
    let tries = AtomicUsize::new(0);
    let server = Server::start(move |r: &Request| match r.path() {
        "/v2/" => Reply::status(200),
        _ if tries.fetch_add(1, Ordering::SeqCst) == 0 => Reply::status(503),
        _ => Reply::status(200).body("tampered"),
    });
    let c = client(None);
    let digest = Digest::of_bytes(b"original");
    let mut r = c.get_blob(&repo(&server), &digest, None).unwrap();
    let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    assert_eq!(c.stats().retries, 1);
}

#[test]
fn an_endless_token_reply_fails_with_one_line_and_memory_stays_bounded() {
    let server = Server::start(|r: &Request| match r.path() {
        "/token" => Reply::endless(200, r#"{"token": ""#, b'a'),
        _ => Reply::status(401).header(
            "WWW-Authenticate",
            format!(
                r#"Bearer realm="http://{}/token",service="fake""#,
                r.header("host").unwrap()
            ),
        ),
    });
    let before = crate::test_http::peak_rss();
    let err = client(None).get_manifest(&repo(&server)).unwrap_err();
    let grown = crate::test_http::peak_rss().saturating_sub(before);
    let line = crate::text::error_chain(&err);
    assert!(
        line.contains("/token is over 1 MiB, the most a token reply may hold"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    assert!(grown < 200 << 20, "peak RSS grew by {} MiB", grown >> 20);
}

#[test]
fn an_endless_manifest_fails_at_its_cap() {
    let server = Server::start(|r: &Request| match r.path() {
        "/v2/" => Reply::status(200),
        _ => Reply::endless(200, "{", b' ').header("Content-Type", MEDIA_TYPE_OCI_MANIFEST),
    });
    let err = client(None).get_manifest(&repo(&server)).unwrap_err();
    assert!(
        err.to_string().contains("the manifest is over 16 MiB"),
        "{err}"
    );
}

#[test]
fn a_registry_whose_ping_redirects_in_a_loop_is_named_as_misconfigured() {
    let server = Server::start(|r: &Request| match r.path() {
        "/v2/" => Reply::status(302).header("Location", "/v2/"),
        _ => Reply::status(404),
    });
    let err = client(None).get_manifest(&repo(&server)).unwrap_err();
    assert_eq!(
        crate::text::error_chain(&err),
        format!(
            "contacting {0}: {0} redirects /v2/ in a loop (over 10 redirects); the registry is \
             misconfigured or the address is wrong",
            server.addr
        )
    );
    // Not retried, and https is not tried after it (a plain server would
    // only fail the TLS hello, and that error would hide this one).
    assert_eq!(server.requests().len(), 11, "{:?}", server.lines());
}

#[test]
fn a_manifest_that_redirects_in_a_loop_is_named_and_not_retried() {
    let server = Server::start(|r: &Request| match r.path() {
        "/v2/" => Reply::status(200),
        p => Reply::status(307).header("Location", format!("{p}?again")),
    });
    let c = client(None);
    let err = c.get_manifest(&repo(&server)).unwrap_err();
    let line = crate::text::error_chain(&err);
    assert!(
        line.ends_with(&format!(
            "{} redirects /v2/team/app/manifests/1 in a loop (over 10 redirects); the registry is \
             misconfigured or the address is wrong",
            server.addr
        )),
        "{line}"
    );
    assert!(!line.contains("again"), "the query is not shown: {line}");
    assert_eq!(c.stats().retries, 0);
}

/// A registry that answers `/v2/` and has one manifest, `team/app:1`.
fn one_manifest_registry() -> Server {
    Server::start(|r: &Request| match (r.method.as_str(), r.path()) {
        ("GET", "/v2/") => Reply::status(200),
        ("HEAD", "/v2/team/app/manifests/1") => Reply::status(200)
            .header("Content-Type", MEDIA_TYPE_OCI_MANIFEST)
            .header("Docker-Content-Digest", Digest::of_bytes(b"m").to_string()),
        _ => Reply::status(404),
    })
}

#[test]
fn a_later_run_asks_a_remembered_registry_without_pinging_it_first() {
    let server = one_manifest_registry();
    let cache = tempfile::tempdir().unwrap();
    let store = || crate::store::Store::open(cache.path()).unwrap();
    let first = client(None).remember_endpoints(store());
    assert!(first.head_manifest(&repo(&server)).unwrap().is_some());
    let second = client(None).remember_endpoints(store());
    assert!(second.head_manifest(&repo(&server)).unwrap().is_some());
    let lines: Vec<String> = server.requests().iter().map(Request::line).collect();
    assert_eq!(
        lines,
        [
            "GET /v2/",
            "HEAD /v2/team/app/manifests/1",
            "HEAD /v2/team/app/manifests/1"
        ]
    );
}

#[test]
fn a_registry_without_the_referrers_api_is_asked_once_a_day() {
    let server = one_manifest_registry();
    let cache = tempfile::tempdir().unwrap();
    let store = || crate::store::Store::open(cache.path()).unwrap();
    let subject = Digest::of_bytes(b"m");
    let first = client(None).remember_endpoints(store());
    assert_eq!(first.get_referrers(&repo(&server), &subject).unwrap(), None);
    let second = client(None).remember_endpoints(store());
    assert_eq!(
        second.get_referrers(&repo(&server), &subject).unwrap(),
        None
    );
    let asked = server
        .requests()
        .iter()
        .filter(|r| r.path().contains("/referrers/"))
        .count();
    assert_eq!(asked, 1);
    // Without a store, nothing is remembered.
    assert_eq!(
        client(None)
            .get_referrers(&repo(&server), &subject)
            .unwrap(),
        None
    );
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path().contains("/referrers/"))
            .count(),
        2
    );
}

#[test]
fn a_remembered_endpoint_answered_400_as_plain_http_to_a_tls_port_is_pinged_again() {
    // The first HEAD gets what a TLS server says to plain http; after the
    // ping, the registry answers as before.
    let heads = AtomicUsize::new(0);
    let server = Server::start(move |r: &Request| match (r.method.as_str(), r.path()) {
        ("GET", "/v2/") => Reply::status(200),
        ("HEAD", _) if heads.fetch_add(1, Ordering::SeqCst) == 0 => Reply::status(400),
        ("HEAD", _) => Reply::status(200)
            .header("Content-Type", MEDIA_TYPE_OCI_MANIFEST)
            .header("Docker-Content-Digest", Digest::of_bytes(b"m").to_string()),
        _ => Reply::status(404),
    });
    let cache = tempfile::tempdir().unwrap();
    let store = || crate::store::Store::open(cache.path()).unwrap();
    let kept = reqwest::Url::parse(&format!("http://{}/", server.addr)).unwrap();
    super::endpoints::EndpointMemory::new(store()).keep(&server.addr, &kept, None);
    let c = client(None).remember_endpoints(store());
    assert!(c.head_manifest(&repo(&server)).unwrap().is_some());
    let lines: Vec<String> = server.requests().iter().map(Request::line).collect();
    assert_eq!(
        lines,
        [
            "HEAD /v2/team/app/manifests/1",
            "GET /v2/",
            "HEAD /v2/team/app/manifests/1"
        ]
    );
}

/// A registry whose sessions are numbered as opened; the PUT to `dropped`
/// answers 404 (a session it forgot), every other PUT 201.
fn numbered_sessions_registry(dropped: &'static str) -> Server {
    let opened = AtomicUsize::new(0);
    Server::start(move |r: &Request| match (r.method.as_str(), r.path()) {
        ("GET", "/v2/") => Reply::status(200),
        ("POST", "/v2/team/app/blobs/uploads/") => {
            let n = opened.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::status(202).header("Location", format!("/v2/team/app/blobs/uploads/s{n}"))
        }
        ("PUT", p) if p.ends_with(dropped) => Reply::status(404),
        ("PUT", _) => Reply::status(201),
        ("DELETE", _) => Reply::status(204),
        _ => Reply::status(400),
    })
}

fn push_new(c: &RegistryClient, server: &Server, data: &'static [u8]) -> PushOutcome {
    let open = || Ok(Box::new(Cursor::new(data)) as Box<dyn Read + Send>);
    let digest = Digest::of_bytes(data);
    c.push_new_blob(&repo(server), &digest, data.len() as u64, &open)
        .unwrap()
}

#[test]
fn sessions_opened_ahead_carry_the_new_blobs_and_the_unused_one_is_cancelled() {
    let server = numbered_sessions_registry("no such session");
    let c = client(None);
    assert_eq!(c.open_uploads(&repo(&server), 3), 3);
    let before = server.lines().len();
    push_new(&c, &server, b"app layer");
    push_new(&c, &server, b"config");
    let during: Vec<String> = server.lines()[before..].to_vec();
    assert!(
        during.iter().all(|l| l.starts_with("PUT ")),
        "a blob asked for a session of its own: {during:?}"
    );
    assert_eq!(during.len(), 2);
    c.cancel_unused_uploads();
    let deletes: Vec<String> = server
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    // Nothing is left to cancel twice.
    c.cancel_unused_uploads();
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.starts_with("DELETE"))
            .count(),
        1
    );
}

#[test]
fn a_session_the_registry_dropped_is_replaced_by_a_new_one_at_once() {
    let server = numbered_sessions_registry("/s1");
    let c = client(None);
    assert_eq!(c.open_uploads(&repo(&server), 1), 1);
    let outcome = push_new(&c, &server, b"app layer");
    assert_eq!(outcome, PushOutcome::Uploaded { bytes: 9 });
    let lines = server.lines();
    let tail: Vec<&str> = lines[lines.len() - 4..]
        .iter()
        .map(|l| l.as_str())
        .collect();
    assert_eq!(
        tail,
        [
            "PUT /v2/team/app/blobs/uploads/s1",
            "DELETE /v2/team/app/blobs/uploads/s1",
            "POST /v2/team/app/blobs/uploads/",
            "PUT /v2/team/app/blobs/uploads/s2",
        ]
    );
}

/// A registry behind Basic auth whose manifest HEADs take 150 ms; counts
/// the token requests, and how many HEADs it held at once at most.
fn slow_basic_registry(tokens: bool) -> (Server, std::sync::Arc<[AtomicUsize; 3]>) {
    // [in flight, most in flight, token requests]
    let counts = std::sync::Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let seen = counts.clone();
    let server = Server::start(move |r: &Request| match (r.method.as_str(), r.path()) {
        ("GET", "/v2/") if tokens => Reply::status(401).header(
            "WWW-Authenticate",
            format!(
                r#"Bearer realm="http://{}/token",service="fake""#,
                r.header("host").unwrap_or_default()
            ),
        ),
        ("GET", "/v2/") => Reply::status(401).header("WWW-Authenticate", r#"Basic realm="fake""#),
        ("GET", "/token") => {
            seen[2].fetch_add(1, Ordering::SeqCst);
            Reply::status(200).body(r#"{"token":"t","expires_in":300}"#)
        }
        ("HEAD", _) => {
            let now = seen[0].fetch_add(1, Ordering::SeqCst) + 1;
            seen[1].fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(150));
            seen[0].fetch_sub(1, Ordering::SeqCst);
            Reply::status(404)
        }
        _ => Reply::status(404),
    });
    (server, counts)
}

fn with_password(server: &Server) -> RegistryClient {
    let keychain = super::credentials::Keychain::with_env(Default::default())
        .with_explicit("u", super::credentials::Secret::new("p"))
        .explicit_only_for(&server.addr);
    RegistryClient::new(TransportOptions::default(), keychain).unwrap()
}

#[test]
fn basic_requests_that_waited_for_the_first_one_go_together_once_it_was_accepted() {
    let (server, counts) = slow_basic_registry(false);
    let client = with_password(&server);
    std::thread::scope(|s| {
        for tag in ["1", "2", "3", "4"] {
            let (client, server) = (&client, &server);
            s.spawn(move || {
                let r = Reference::parse(&format!("{}/team/app:{tag}", server.addr)).unwrap();
                assert!(client.head_manifest(&r).unwrap().is_none());
            });
        }
    });
    // The first alone, then the three that waited for it at once; one at a
    // time, they took 600 ms.
    assert!(
        counts[1].load(Ordering::SeqCst) >= 2,
        "the HEADs went one at a time"
    );
}

#[test]
fn the_attestations_client_uses_the_token_the_images_client_fetched() {
    let (server, counts) = slow_basic_registry(true);
    let image = with_password(&server);
    let attestations = with_password(&server).sharing_run_of(&image);
    for c in [&image, &attestations] {
        assert!(c.head_manifest(&repo(&server)).unwrap().is_none());
    }
    assert_eq!(counts[2].load(Ordering::SeqCst), 1, "token requests");
}
