//! The registry client against a scripted fake registry that misbehaves on
//! purpose. Every scenario ends in a correct push or a clear error, and never
//! in a manifest PUT whose blobs the registry had not confirmed.

mod support;

use imgbuild::digest::Digest;
use imgbuild::reference::Reference;
use imgbuild::registry::client::MEDIA_TYPE_OCI_MANIFEST;
use imgbuild::registry::credentials::Anonymous;
use imgbuild::registry::{
    CredentialSource, Keychain, PushOutcome, RegistryClient, RegistryError, Secret,
    TransportOptions,
};
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fake_registry::{
    FakeRegistry, Fault, SilentServer, TokenService, TokenServiceOptions,
};
use support::push::{push_image, Image};

fn options() -> TransportOptions {
    TransportOptions {
        retry_base: Duration::from_millis(10),
        max_retry_wait: Duration::from_secs(5),
        max_retries: 3,
        jobs: 2,
        ..Default::default()
    }
}

fn client() -> RegistryClient {
    client_with(options())
}

/// An anonymous client with these transport settings.
fn client_with(options: TransportOptions) -> RegistryClient {
    RegistryClient::new(options, Anonymous).unwrap()
}

/// Two layers and a config, and a manifest naming them.
fn image(seed: u8, layer_size: usize) -> Image {
    let layer = |n: u8| {
        (0..layer_size)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n))
            .collect::<Vec<u8>>()
    };
    let blobs = vec![
        layer(seed),
        layer(seed.wrapping_add(1)),
        format!("{{\"seed\":{seed}}}").into_bytes(),
    ];
    let desc = |b: &[u8], mt: &str| serde_json::json!({"mediaType": mt, "digest": Digest::of_bytes(b).to_string(), "size": b.len()});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": desc(&blobs[2], "application/vnd.oci.image.config.v1+json"),
        "layers": [desc(&blobs[0], "application/vnd.oci.image.layer.v1.tar+gzip"), desc(&blobs[1], "application/vnd.oci.image.layer.v1.tar+gzip")],
    })
    .to_string()
    .into_bytes();
    Image { blobs, manifest }
}

fn repo(fake: &FakeRegistry, name: &str) -> Reference {
    Reference::parse(&format!("{}/{name}:v1", fake.host())).unwrap()
}

fn push(
    client: &RegistryClient,
    r: &Reference,
    img: &Image,
) -> Result<(Vec<PushOutcome>, Digest), RegistryError> {
    push_image(client, r, img, None)
}

fn assert_pushed(fake: &FakeRegistry, name: &str, img: &Image) {
    for b in &img.blobs {
        assert!(fake.has_blob(name, &Digest::of_bytes(b).to_string()));
    }
    assert_eq!(
        fake.manifest(name, "v1").map(|m| m.1),
        Some(img.manifest.clone())
    );
    fake.assert_manifests_complete();
}

/// Fails unless less than `limit` has passed since `started`.
fn assert_took_less_than(started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}, not less than {limit:?}");
}

fn assert_one_line(e: &RegistryError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error spans lines: {s}");
    s
}

/// Pushes `img` to a fake that answers the first `method` on `path` with
/// `status` and `Retry-After: seconds`; checks the push waited that long and
/// completed. Returns the client, for its stats.
fn push_through_one_retry_after(
    method: &str,
    path: &str,
    status: u16,
    seconds: u32,
    img: Image,
) -> RegistryClient {
    let fake = FakeRegistry::start();
    fake.fault(method, path, "", 1, Fault::retry_after(status, seconds));
    let c = client();
    let started = Instant::now();
    push(&c, &repo(&fake, "app"), &img).unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(seconds.into()),
        "Retry-After: {seconds} on {method} {path} was not honoured ({waited:?})"
    );
    assert_pushed(&fake, "app", &img);
    c
}

#[test]
fn a_429_with_retry_after_is_waited_out_then_the_push_completes() {
    let c = push_through_one_retry_after("HEAD", "/blobs/", 429, 1, image(1, 2000));
    assert!(c.stats().retries >= 1);
}

#[test]
fn two_500s_then_success_is_retried_transparently() {
    let fake = FakeRegistry::start();
    fake.fault("POST", "/blobs/uploads/", "", 2, Fault::status(500, "oops"));
    let c = client();
    let img = image(2, 1000);
    let (outcomes, _) = push(&c, &repo(&fake, "app"), &img).unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, PushOutcome::Uploaded { .. })));
    assert_eq!(fake.count("POST", "/blobs/uploads/"), img.blobs.len() + 2);
    assert_eq!(c.stats().retries, 2);
    assert_pushed(&fake, "app", &img);
}

#[test]
fn a_connection_reset_mid_upload_restarts_the_blob_from_a_reopened_source() {
    let fake = FakeRegistry::start();
    fake.fault("PUT", "/blobs/uploads/", "", 1, Fault::DropMidBody(1000));
    let c = client();
    let img = image(3, 256 * 1024);
    let (outcomes, _) = push(&c, &repo(&fake, "app"), &img).unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, PushOutcome::Uploaded { .. })));
    // The broken session was abandoned: a new POST, and a complete PUT.
    assert_eq!(fake.count("POST", "/blobs/uploads/"), img.blobs.len() + 1);
    let total: u64 = img.blobs.iter().map(|b| b.len() as u64).sum();
    assert!(
        c.stats().blob_bytes_uploaded > total,
        "the failed attempt's bytes are counted too"
    );
    assert_pushed(&fake, "app", &img);
}

#[test]
fn a_token_expiring_mid_push_is_renewed_once_and_the_request_replayed() {
    let fake = FakeRegistry::start_with_tokens();
    let c = client();
    let img = image(4, 1000);
    let r = repo(&fake, "app");
    // Blobs first, under the first token.
    let opens: Vec<Vec<u8>> = img.blobs.clone();
    for b in &opens {
        let bytes = b.clone();
        let open = move || Ok(Box::new(Cursor::new(bytes.clone())) as Box<dyn Read + Send>);
        c.push_blob(&r, &Digest::of_bytes(b), b.len() as u64, &open, None)
            .unwrap();
    }
    let tokens_before = fake.count("GET", "/token");
    fake.fault("PUT", "/manifests/", "", 1, Fault::ExpireTokens);
    let d = c
        .put_manifest(&r, "v1", &img.manifest, MEDIA_TYPE_OCI_MANIFEST)
        .unwrap();
    assert_eq!(d, Digest::of_bytes(&img.manifest));
    assert_eq!(
        fake.count("GET", "/token"),
        tokens_before + 1,
        "exactly one re-authentication"
    );
    assert_eq!(
        fake.count("PUT", "/manifests/"),
        2,
        "the rejected PUT is replayed once"
    );
    assert_pushed(&fake, "app", &img);
}

#[test]
fn a_mount_answered_with_202_uploads_into_the_returned_session() {
    let fake = FakeRegistry::start_with_tokens();
    let c = client();
    let blob = b"layer-not-in-source-repo".to_vec();
    let d = Digest::of_bytes(&blob);
    let open = || Ok(Box::new(Cursor::new(blob.clone())) as Box<dyn Read + Send>);
    let out = c
        .push_blob(
            &repo(&fake, "app"),
            &d,
            blob.len() as u64,
            &open,
            Some("base"),
        )
        .unwrap();
    assert_eq!(
        out,
        PushOutcome::Uploaded {
            bytes: blob.len() as u64
        }
    );
    let posts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "the 202 session is used, not a second POST");
    assert!(posts[0].query.contains("mount=") && posts[0].query.contains("from=base"));
    // The mount asked for both scopes, push first.
    let token_req = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/token")
        .unwrap();
    let push_at = token_req
        .query
        .find("scope=repository%3Aapp%3Apull%2Cpush")
        .expect("push scope");
    let pull_at = token_req
        .query
        .find("scope=repository%3Abase%3Apull")
        .expect("source pull scope");
    assert!(push_at < pull_at, "push scope first: {}", token_req.query);
    assert!(fake.has_blob("app", &d.to_string()));

    // When the source holds it, the mount succeeds and no bytes move.
    let other = b"layer-in-source".to_vec();
    fake.put_blob("base", &other);
    let open = || Ok(Box::new(Cursor::new(other.clone())) as Box<dyn Read + Send>);
    let before = c.stats().blob_bytes_uploaded;
    let out = c
        .push_blob(
            &repo(&fake, "app"),
            &Digest::of_bytes(&other),
            other.len() as u64,
            &open,
            Some("base"),
        )
        .unwrap();
    assert_eq!(out, PushOutcome::Mounted);
    assert_eq!(c.stats().blob_bytes_uploaded, before);
}

#[test]
fn a_cross_host_redirect_on_a_blob_get_carries_no_authorization() {
    let fake = FakeRegistry::start_with_tokens();
    let blob = b"redirected blob content".to_vec();
    let d = Digest::of_bytes(&blob);
    fake.put_blob("app", &blob);
    fake.fault(
        "GET",
        "/v2/app/blobs/",
        "",
        1,
        Fault::Respond {
            status: 307,
            headers: vec![(
                "Location".into(),
                format!("http://localhost:{{port}}/redirected/{d}"),
            )],
            body: String::new(),
        },
    );
    let c = client();
    let mut got = Vec::new();
    c.get_blob(&repo(&fake, "app"), &d, Some(blob.len() as u64))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, blob);
    let reqs = fake.requests();
    let first = reqs
        .iter()
        .find(|r| r.method == "GET" && r.path.starts_with("/v2/app/blobs/"))
        .unwrap();
    assert!(first
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    let second = reqs
        .iter()
        .find(|r| r.path.starts_with("/redirected/"))
        .expect("redirect followed");
    assert!(second.header("host").unwrap().starts_with("localhost:"));
    assert_eq!(
        second.header("authorization"),
        None,
        "Authorization leaked to another host"
    );
}

#[test]
fn an_ecr_like_manifest_put_without_location_succeeds() {
    let fake = FakeRegistry::start();
    let img = image(5, 500);
    fake.fault("PUT", "/manifests/", "", 1, Fault::status(201, ""));
    let c = client();
    let (_, d) = push(&c, &repo(&fake, "app"), &img).unwrap();
    assert_eq!(d, Digest::of_bytes(&img.manifest));
}

#[test]
fn an_upload_without_location_is_a_clear_error_and_no_manifest_is_put() {
    let fake = FakeRegistry::start();
    fake.fault("POST", "/blobs/uploads/", "", 99, Fault::status(202, ""));
    let c = client();
    let e = push(&c, &repo(&fake, "app"), &image(6, 500)).unwrap_err();
    let msg = assert_one_line(&e);
    assert!(
        msg.contains("Location") && msg.contains(&fake.host()),
        "{msg}"
    );
    assert_eq!(fake.count("PUT", "/manifests/"), 0);
}

#[test]
fn persistent_503s_end_in_a_clear_error_after_bounded_retries() {
    let fake = FakeRegistry::start();
    fake.fault(
        "POST",
        "/blobs/uploads/",
        "",
        99,
        Fault::status(503, "<html>\n<b>down</b>\n</html>"),
    );
    let c = client();
    let img = image(7, 500);
    let e = push(&c, &repo(&fake, "app"), &img).unwrap_err();
    let msg = assert_one_line(&e);
    assert!(msg.contains("503") && msg.contains("down"), "{msg}");
    assert_eq!(
        fake.count("POST", "/blobs/uploads/"),
        img.blobs.len() * 4,
        "1 try + 3 retries per blob, no nesting"
    );
    assert_eq!(fake.count("PUT", "/manifests/"), 0);
}

#[test]
fn denied_is_not_retried() {
    let fake = FakeRegistry::start();
    let body =
        r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
    fake.fault("POST", "/blobs/uploads/", "", 99, Fault::status(403, body));
    let c = client();
    let img = image(8, 500);
    let e = push(&c, &repo(&fake, "app"), &img).unwrap_err();
    assert!(matches!(e, RegistryError::Denied { .. }), "{e}");
    assert!(assert_one_line(&e).contains("requested access to the resource is denied"));
    assert_eq!(fake.count("POST", "/blobs/uploads/"), img.blobs.len());
    assert_eq!(c.stats().retries, 0);
}

#[test]
fn hub_style_rate_limits_show_the_message_and_limit_headers() {
    let fake = FakeRegistry::start();
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#;
    fake.fault(
        "GET",
        "/manifests/",
        "",
        99,
        Fault::Respond {
            status: 429,
            headers: vec![
                ("Retry-After".into(), "0".into()),
                ("ratelimit-limit".into(), "100;w=21600".into()),
                ("ratelimit-remaining".into(), "0;w=21600".into()),
            ],
            body: body.into(),
        },
    );
    let e = client().get_manifest(&repo(&fake, "app")).unwrap_err();
    let msg = assert_one_line(&e);
    assert!(matches!(e, RegistryError::RateLimited { .. }));
    assert!(
        msg.contains("pull rate limit") && msg.contains("ratelimit-remaining: 0;w=21600"),
        "{msg}"
    );
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_is_refused() {
    let fake = FakeRegistry::start();
    let d = Digest::of_bytes(b"the real bytes");
    fake.fault(
        "GET",
        "/blobs/",
        "",
        1,
        Fault::status(200, "tampered bytes"),
    );
    let mut out = Vec::new();
    let err = client()
        .get_blob(&repo(&fake, "app"), &d, None)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
}

#[test]
fn chunked_uploads_send_ranges_and_close_with_the_digest() {
    let fake = FakeRegistry::start();
    let c = client_with(TransportOptions {
        chunk_size: Some(1000),
        ..options()
    });
    let blob: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let d = Digest::of_bytes(&blob);
    let open = || Ok(Box::new(Cursor::new(blob.clone())) as Box<dyn Read + Send>);
    assert_eq!(
        c.push_blob(&repo(&fake, "app"), &d, 2500, &open, None)
            .unwrap(),
        PushOutcome::Uploaded { bytes: 2500 }
    );
    let ranges: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.header("content-range").unwrap().to_string())
        .collect();
    assert_eq!(ranges, ["0-999", "1000-1999", "2000-2499"]);
    assert!(fake.has_blob("app", &d.to_string()));
}

#[test]
fn a_manifest_fetched_by_digest_is_verified_and_typed() {
    let fake = FakeRegistry::start();
    let c = client();
    let img = image(9, 100);
    let r = repo(&fake, "app");
    let (_, d) = push(&c, &r, &img).unwrap();
    let (bytes, mt, got) = c.get_manifest(&r.with_digest(d.clone())).unwrap();
    assert_eq!(
        (bytes, mt.as_str(), got),
        (img.manifest.clone(), MEDIA_TYPE_OCI_MANIFEST, d)
    );
    // A second push finds everything in place and moves no blob bytes.
    let before = c.stats();
    let (outcomes, _) = push(&c, &r, &img).unwrap();
    assert!(outcomes.iter().all(|o| *o == PushOutcome::Existed));
    assert_eq!(c.stats().blob_bytes_uploaded, before.blob_bytes_uploaded);
}

#[test]
fn tokens_are_renewed_before_they_expire_and_reused_until_then() {
    let fake = FakeRegistry::start_with_tokens();
    let c = client();
    let img = image(10, 100);
    let r = repo(&fake, "app");
    push(&c, &r, &img).unwrap();
    fake.set_token_lifetime(1);
    let tokens = fake.count("GET", "/token");
    // A new scope (pull only) needs its own token; asking twice reuses it.
    c.get_manifest(&r).unwrap();
    c.get_manifest(&r).unwrap();
    assert_eq!(fake.count("GET", "/token"), tokens + 1);
    let first = last_manifest_auth(&fake);
    std::thread::sleep(Duration::from_millis(1100));
    c.get_manifest(&r).unwrap();
    assert_eq!(
        fake.count("GET", "/token"),
        tokens + 2,
        "an expired token is renewed up front"
    );
    assert_ne!(
        last_manifest_auth(&fake),
        first,
        "the renewed token is the one sent"
    );
}

fn last_manifest_auth(fake: &FakeRegistry) -> String {
    let reqs = fake.requests();
    let last = reqs
        .iter()
        .rev()
        .find(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .unwrap();
    last.header("authorization").unwrap().to_string()
}

#[test]
fn an_unknown_repository_on_push_is_named_and_not_retried() {
    let fake = FakeRegistry::start();
    let body = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'app' does not exist"}]}"#;
    fake.fault("POST", "/blobs/uploads/", "", 99, Fault::status(404, body));
    let c = client();
    let img = image(11, 100);
    let e = push(&c, &repo(&fake, "app"), &img).unwrap_err();
    assert!(matches!(e, RegistryError::NameUnknown { .. }), "{e}");
    let msg = assert_one_line(&e);
    assert!(
        msg.contains("does not exist") && msg.contains("create the repository"),
        "{msg}"
    );
    assert_eq!(fake.count("POST", "/blobs/uploads/"), img.blobs.len());
    assert_eq!(fake.count("PUT", "/manifests/"), 0);
}

// ---- Bounded time (issue 13) ----

/// Runs `f` on a thread and fails the test if it has not returned within `limit`
/// (a hang must show as a failure, not as a test that never ends).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: the client hangs"))
}

#[test]
fn a_registry_that_never_answers_fails_within_a_minute_with_default_settings() {
    let silent = SilentServer::start();
    let host = silent.host();
    let started = Instant::now();
    let e = within(Duration::from_secs(120), move || {
        let c = RegistryClient::new(TransportOptions::default(), Anonymous).unwrap();
        let r = Reference::parse(&format!("{host}/app:v1")).unwrap();
        push(&c, &r, &image(40, 100)).unwrap_err()
    });
    let took = started.elapsed();
    let msg = assert_one_line(&e);
    assert!(msg.contains(&silent.host()), "{msg}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {msg}");
    assert!(silent.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

/// issue 26: `imgbuild push` to a host that accepts connections and never
/// answers: the cache read times out once (a warning), and the push then
/// fails at once with one line naming the host and the same cause, instead
/// of waiting on the dead host again for every request.
#[test]
fn imgbuild_push_to_a_silent_registry_ends_within_30_s_naming_it_once() {
    let silent = SilentServer::start();
    let dir = support::target_tempdir("silent-push-");
    let source = support::fixture_without_dependencies("hello-api", &dir.path().join("app"));
    std::fs::write(
        source.join("imgbuild.toml"),
        format!(
            "base = \"oci:{}:latest\"\napp = \"hello_api.main:app\"\nbytecode = false\n",
            support::base::base_image("amd64").display()
        ),
    )
    .unwrap();
    let tag = format!("{}/app:1", silent.host());
    let started = Instant::now();
    let out = within(Duration::from_secs(150), move || {
        support::without_credentials(&source, &["push", "--tag", &tag, "--cache-dir", "../cache"])
            .output()
            .unwrap()
    });
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // 15 s for the first ping's timeout; a generous margin over that, since machines are noisy.
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&silent.host()), "{stderr}");
    assert!(errors[0].contains("timed out"), "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: cache"))
        .unwrap_or_else(|| panic!("no cache warning in:\n{stderr}"));
    assert!(warning.contains("timed out"), "{warning}");
    // Said once: the base facts asked of the same dead host after it add no warning.
    let host = silent.host();
    let warnings = stderr
        .lines()
        .filter(|l| l.starts_with("warning") && l.contains(&host));
    assert_eq!(warnings.count(), 1, "{stderr}");
    // One ping timed out; nothing after it was sent (a connection or two at most).
    assert!(
        silent.accepted.load(std::sync::atomic::Ordering::Relaxed) <= 2,
        "{} connections",
        silent.accepted.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn a_registry_that_stops_answering_mid_push_fails_at_the_stall_timeout() {
    let fake = FakeRegistry::start();
    fake.fault("HEAD", "/blobs/", "", 99, Fault::Silent);
    let r = repo(&fake, "app");
    let started = Instant::now();
    let e = within(Duration::from_secs(60), move || {
        let c = client_with(TransportOptions {
            stall_timeout: Duration::from_secs(2),
            ..options()
        });
        push(&c, &r, &image(41, 100)).unwrap_err()
    });
    let msg = assert_one_line(&e);
    assert!(msg.contains(&fake.host()), "{msg}");
    // One timed-out request (2 s; others in parallel), then the registry is dead for the run.
    assert_took_less_than(started, Duration::from_secs(10));
    assert!(
        fake.count("HEAD", "/blobs/") <= 3,
        "{}",
        fake.count("HEAD", "/blobs/")
    );
    assert_eq!(fake.count("PUT", "/manifests/"), 0);
}

#[test]
fn the_overall_timeout_ends_a_push_that_keeps_being_told_to_wait() {
    let fake = FakeRegistry::start();
    fake.fault("HEAD", "/blobs/", "", 99, Fault::retry_after(503, 30));
    let r = repo(&fake, "app");
    let started = Instant::now();
    let e = within(Duration::from_secs(30), move || {
        let c = client_with(TransportOptions {
            timeout: Some(Duration::from_secs(2)),
            max_retry_wait: Duration::from_secs(60),
            ..options()
        });
        push(&c, &r, &image(42, 100)).unwrap_err()
    });
    let msg = assert_one_line(&e);
    assert!(msg.contains(&fake.host()), "{msg}");
    assert_took_less_than(started, Duration::from_secs(5));
}

#[test]
fn the_retry_budget_bounds_retries_across_the_whole_push() {
    let fake = FakeRegistry::start();
    fake.fault(
        "POST",
        "/blobs/uploads/",
        "",
        99,
        Fault::status(503, "down"),
    );
    let c = client_with(TransportOptions {
        retry_budget: 2,
        ..options()
    });
    let img = image(43, 100);
    push(&c, &repo(&fake, "app"), &img).unwrap_err();
    assert_eq!(c.stats().retries, 2);
    // One POST per blob at most, plus the two budgeted retries.
    assert!(fake.count("POST", "/blobs/uploads/") <= img.blobs.len() + 2);
}

#[test]
fn each_retry_is_reported_with_its_reason() {
    let fake = FakeRegistry::start();
    fake.fault("POST", "/blobs/uploads/", "", 2, Fault::status(500, "oops"));
    let c = client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    c.on_retry(move |n| s2.lock().unwrap().push(n.to_string()));
    push(&c, &repo(&fake, "app"), &image(44, 100)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Blobs go up in parallel: the two faults may fall on two blobs (attempt 2
    // each) or on one (attempts 2 and 3); each line names its own attempt.
    for line in seen.iter() {
        let attempt = line.contains("attempt 2") || line.contains("attempt 3");
        assert!(
            line.contains("HTTP 500") && line.contains(&fake.host()) && attempt,
            "{line}"
        );
    }
}

#[test]
fn an_insecure_registry_is_tried_over_plain_http_first() {
    // The fake, like many plain servers, never answers a TLS hello: trying
    // TLS first would wait out a timeout.
    let fake = FakeRegistry::start();
    let c = client_with(TransportOptions {
        insecure_registries: vec![fake.host()],
        ..options()
    });
    let img = image(45, 100);
    let started = Instant::now();
    push(&c, &repo(&fake, "app"), &img).unwrap();
    assert_took_less_than(started, Duration::from_secs(5));
    assert_pushed(&fake, "app", &img);
}

#[test]
fn a_restarted_blob_step_waits_for_retry_after() {
    push_through_one_retry_after("PUT", "/blobs/uploads/", 503, 2, image(46, 100));
}

// ---- Credentials (issue 13) ----

fn keychain(user: &str, password: &str) -> Keychain {
    Keychain::with_env(HashMap::new()).with_explicit(user, Secret::new(password))
}

fn client_as(creds: impl CredentialSource + 'static) -> RegistryClient {
    RegistryClient::new(options(), creds).unwrap()
}

#[test]
fn a_refused_basic_password_is_sent_once_and_the_push_fails_at_once() {
    let fake = FakeRegistry::start_with_basic("ci", "right");
    let c = client_as(keychain("ci", "wrong-pw-1"));
    let e = push(&c, &repo(&fake, "app"), &image(50, 100)).unwrap_err();
    let msg = assert_one_line(&e);
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(!msg.contains("wrong-pw-1"), "{msg}");
    assert!(
        fake.basic_refusals() <= 2,
        "{} refusals",
        fake.basic_refusals()
    );
    // The same client never tries them again.
    let before = fake.basic_refusals();
    c.check_login(&fake.host()).unwrap_err();
    assert_eq!(fake.basic_refusals(), before);
}

#[test]
fn the_right_basic_password_pushes() {
    let fake = FakeRegistry::start_with_basic("ci", "right");
    let img = image(51, 100);
    push(
        &client_as(keychain("ci", "right")),
        &repo(&fake, "app"),
        &img,
    )
    .unwrap();
    assert_pushed(&fake, "app", &img);
}

#[test]
fn a_refused_password_at_the_token_service_is_sent_at_most_twice_in_a_push() {
    let fake = FakeRegistry::start();
    let svc = TokenService::start(&fake, TokenServiceOptions::new("ci:right", "fake"));
    let c = client_as(keychain("ci", "wrong-pw-2"));
    let e = push(&c, &repo(&fake, "app"), &image(52, 100)).unwrap_err();
    let msg = assert_one_line(&e);
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains(&svc.realm), "{msg}");
    assert!(
        svc.credentialed() <= 2,
        "{} credentialed token requests",
        svc.credentialed()
    );
    assert!(svc.refusals() <= 2);
}

#[test]
fn a_token_service_that_refuses_get_is_asked_with_the_oauth2_password_grant() {
    let fake = FakeRegistry::start();
    let svc = TokenService::start(
        &fake,
        TokenServiceOptions {
            refuse_get: true,
            ..TokenServiceOptions::new("ci:right", "fake")
        },
    );
    let img = image(53, 100);
    push(
        &client_as(keychain("ci", "right")),
        &repo(&fake, "app"),
        &img,
    )
    .unwrap();
    assert_pushed(&fake, "app", &img);
    let posts: Vec<String> = svc
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(!posts.is_empty());
    assert!(
        posts.iter().all(|b| b.contains("grant_type=password")
            && b.contains("username=ci")
            && b.contains("service=fake")
            && b.contains("scope=repository%3Aapp%3Apull%2Cpush")),
        "{posts:?}"
    );
}

// ---- Registry profiles (issue 13): Hub, GHCR, ECR, as the fake plays them ----

#[test]
fn hub_profile_tokens_come_from_a_separate_auth_host_and_credentials_go_only_there() {
    // registry-1 and auth are different hosts on the Hub: here 127.0.0.1 and 127.0.0.2.
    let fake = FakeRegistry::start();
    let auth = TokenService::start(
        &fake,
        TokenServiceOptions {
            ip: "127.0.0.2".into(),
            credentials: "hubuser:hubpass".into(),
            service: "registry.docker.io".into(),
            ..Default::default()
        },
    );
    let img = image(60, 100);
    let c = client_as(keychain("hubuser", "hubpass"));
    push(&c, &repo(&fake, "library/app"), &img).unwrap();
    assert_pushed(&fake, "library/app", &img);
    assert!(auth.realm.starts_with("http://127.0.0.2:"));
    let token_gets = auth.requests();
    assert!(token_gets
        .iter()
        .any(
            |r| r.query_param("service").as_deref() == Some("registry.docker.io")
                && r.query_param("scope").as_deref() == Some("repository:library/app:pull,push")
        ));
    // The registry host saw only Bearer tokens, never the password.
    for r in fake.requests() {
        if let Some(a) = r.header("authorization") {
            assert!(a.starts_with("Bearer "), "{} {} sent {a}", r.method, r.path);
        }
    }
    // One token per scope set, reused across blobs.
    assert!(token_gets.len() <= 3, "{} token requests", token_gets.len());
}

#[test]
fn ghcr_profile_token_endpoint_and_a_404_referrers_api() {
    let fake = FakeRegistry::start();
    let _svc = TokenService::start(
        &fake,
        TokenServiceOptions::new("ghuser:ghp_token", "ghcr.io"),
    );
    let img = image(61, 100);
    let c = client_as(keychain("ghuser", "ghp_token"));
    let r = repo(&fake, "org/app");
    let (_, d) = push(&c, &r, &img).unwrap();
    assert_pushed(&fake, "org/app", &img);
    // GHCR answers the referrers API with 404: the client says "no such API",
    // so attachments fall back to the referrers tag schema.
    assert_eq!(c.get_referrers(&r, &d).unwrap(), None);
    assert!(fake.count("GET", "/referrers/") >= 1);
}

#[test]
fn ecr_profile_no_locations_and_a_refused_mount_still_push() {
    let fake = FakeRegistry::start_with_basic("AWS", "ecr-token");
    fake.ecr_quirks();
    let img = image(62, 3000);
    let c = RegistryClient::new(
        TransportOptions {
            chunk_size: Some(1024),
            ..options()
        },
        keychain("AWS", "ecr-token"),
    )
    .unwrap();
    // The blobs exist in another repository, but ECR refuses to mount them.
    for b in &img.blobs {
        fake.put_blob("other", b);
    }
    let (outcomes, d) =
        support::push::push_image(&c, &repo(&fake, "app"), &img, Some("other")).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Uploaded { .. })),
        "{outcomes:?}"
    );
    assert_eq!(d, Digest::of_bytes(&img.manifest));
    assert_pushed(&fake, "app", &img);
    assert!(fake.count("PATCH", "/blobs/uploads/") >= 3);
}

#[test]
fn a_namespaced_auth_json_key_serves_its_repositories_over_the_registry_key() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let fake = FakeRegistry::start_with_basic("team-bot", "team-pw");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    let host = fake.host();
    std::fs::write(
        &file,
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}},"{host}/team":{{"auth":"{}"}}}}}}"#,
            b64("someone:else"),
            b64("team-bot:team-pw")
        ),
    )
    .unwrap();
    let env: HashMap<String, String> = [
        ("HOME".to_string(), "/nonexistent".to_string()),
        ("REGISTRY_AUTH_FILE".to_string(), file.display().to_string()),
    ]
    .into();
    let img = image(70, 100);
    push(
        &client_as(Keychain::with_env(env)),
        &repo(&fake, "team/app"),
        &img,
    )
    .unwrap();
    assert_pushed(&fake, "team/app", &img);
    assert_eq!(fake.basic_refusals(), 0);
}
