//! The transport's own rules: which hosts may use plain http, TLS without a CA bundle, and how registry error bodies are read.

use super::*;
use std::path::Path;

#[test]
fn loopback_hosts_may_use_http_others_need_listing() {
    for h in [
        "127.0.0.1:5000",
        "127.8.9.1",
        "localhost",
        "localhost:5000",
        "[::1]:5000",
        "app.localhost:80",
    ] {
        assert!(is_loopback(h), "{h}");
    }
    for h in [
        "10.0.0.1:5000",
        "registry.example.com",
        "[2001:db8::1]:5000",
        "localhost.example.com",
    ] {
        assert!(!is_loopback(h), "{h}");
    }
    let t = Transport::new(TransportOptions {
        insecure_registries: vec!["reg.lan:5000".into(), "other.lan".into()],
        ..Default::default()
    })
    .unwrap();
    assert!(t.allows_http("reg.lan:5000"));
    assert!(!t.allows_http("reg.lan:5001"));
    assert!(t.allows_http("other.lan:443"));
    assert!(!t.allows_http("ghcr.io"));
}

#[test]
fn registry_error_bodies_are_read_leniently() {
    let (codes, text) = describe_error_body(
        br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"x"}}]}"#,
    );
    assert_eq!(codes, vec!["NAME_UNKNOWN"]);
    assert_eq!(
        text,
        r#"NAME_UNKNOWN: repository name not known to registry ({"name":"x"})"#
    );
    let (codes, text) = describe_error_body(br#"{"details":"invalid repository name"}"#);
    assert!(codes.is_empty());
    assert_eq!(text, r#"{"details":"invalid repository name"}"#);
    let (_, text) = describe_error_body(&b"<html>\n  bad gateway\n</html>".repeat(50));
    assert!(
        text.chars().count() <= DETAIL_MAX + 1 && !text.contains('\n'),
        "{text}"
    );
}

/// Runs the test `name` (in this module) again in a child process with
/// `SSL_CERT_FILE` set to `bundle`: the trust store is read from the
/// environment, which the other tests of this process share.
fn rerun_with_ssl_cert_file(name: &str, bundle: &Path) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([&format!("registry::transport::tests::{name}"), "--exact"])
        .args(["--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .env("SSL_CERT_FILE", bundle)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{errors}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
}

const CHILD: &str = "IMGBUILD_TEST_CHILD";

/// A CA, and a certificate for 127.0.0.1 it signed (with its key), made
/// by the `openssl` CLI in `dir`.
fn test_ca(dir: &Path) -> (PathBuf, String, String) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-nodes", "-days", "2", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(args)
            .output()
            .expect("openssl (scripts/setup.sh installs it)")
            .status;
        assert!(status.success(), "openssl req {args:?}");
    };
    openssl(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(&[
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-keyout",
        "server.key",
        "-out",
        "server.pem",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (dir.join("ca.pem"), read("server.pem"), read("server.key"))
}

/// A registry with no manifests.
fn registry(r: &crate::test_http::Request) -> crate::test_http::Reply {
    crate::test_http::Reply::status(if r.path() == "/v2/" { 200 } else { 404 })
}

#[test]
fn without_a_ca_bundle_plain_http_works_and_tls_names_what_is_missing() {
    use crate::reference::Reference;
    use crate::registry::{credentials::Anonymous, RegistryClient};
    use crate::test_http::Server;
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os(CHILD).is_none() {
        return rerun_with_ssl_cert_file(
            "without_a_ca_bundle_plain_http_works_and_tls_names_what_is_missing",
            &dir.path().join("no-such-bundle.pem"),
        );
    }
    let bundle = PathBuf::from(std::env::var_os("SSL_CERT_FILE").unwrap());
    let (ca, cert, key) = test_ca(dir.path());
    let client = |ca_files: Vec<PathBuf>| {
        let opts = TransportOptions {
            ca_files,
            max_retries: 0,
            ..Default::default()
        };
        RegistryClient::new(opts, Anonymous).unwrap()
    };
    let at = |server: &Server| Reference::parse(&format!("{}/team/app:1", server.addr)).unwrap();

    // Made without a trust store; plain http needs none.
    let plain = Server::start(registry);
    assert!(client(vec![]).head_manifest(&at(&plain)).is_ok());

    // TLS does: the error says there is no CA certificate, where none was
    // found, and what to set.
    let tls = Server::start_tls(&cert, &key, registry);
    let e = client(vec![]).head_manifest(&at(&tls)).unwrap_err();
    assert!(matches!(e, RegistryError::NoCaBundle { .. }), "{e:?}");
    let e = e.to_string();
    for part in [
        "no CA certificate",
        &format!("SSL_CERT_FILE {} holds none", bundle.display()),
        "set SSL_CERT_FILE",
        "--ca-file",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }

    // --ca-file is enough on its own.
    assert!(client(vec![ca]).head_manifest(&at(&tls)).is_ok());
}

#[test]
fn bad_ca_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ca.pem");
    std::fs::write(&f, "not a cert").unwrap();
    let e = Transport::new(TransportOptions {
        ca_files: vec![f.clone()],
        ..Default::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("ca.pem"), "{e}");
}

#[test]
fn the_trust_store_is_read_only_for_a_certificate_no_ca_file_vouches_for() {
    use crate::http::{HttpClient, RetryPolicy};
    use crate::test_http::Server;
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cert, key) = test_ca(ours.path());
    let (_, other_cert, other_key) = test_ca(theirs.path());
    let http = HttpClient::new(RetryPolicy::default(), false, &[ca]).unwrap();
    let get = |url: String| http.verified().unwrap().get(url).send();

    let plain = Server::start(registry);
    assert_eq!(
        get(format!("http://{}/v2/", plain.addr)).unwrap().status(),
        200
    );
    assert!(
        !http.trust_store_loaded(),
        "plain http read the trust store"
    );

    let tls = Server::start_tls(&cert, &key, registry);
    assert_eq!(
        get(format!("https://{}/v2/", tls.addr)).unwrap().status(),
        200
    );
    assert!(
        !http.trust_store_loaded(),
        "the --ca-file CA was not enough"
    );

    // Issued by a CA the system does not trust either: refused, after the
    // system store was asked.
    let stranger = Server::start_tls(&other_cert, &other_key, registry);
    let refused = get(format!("https://{}/v2/", stranger.addr)).unwrap_err();
    assert!(crate::http::is_certificate_error(&refused), "{refused:?}");
    assert!(http.trust_store_loaded());
}
