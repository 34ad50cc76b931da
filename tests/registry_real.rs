//! The registry client against the real distribution registry (docker-registry
//! 2.8 on 127.0.0.1) in three setups: plain http, htpasswd over TLS with a test
//! CA, and token auth with our own token service. skopeo checks independently
//! that what we pushed is what it reads.

mod support;

use imgbuild::digest::Digest;
use imgbuild::layer::tar::{write_layer, NoExternal};
use imgbuild::layer::{ImagePath, LayerPlan};
use imgbuild::reference::Reference;
use imgbuild::registry::client::MEDIA_TYPE_OCI_MANIFEST;
use imgbuild::registry::credentials::{Anonymous, CredentialSource};
use imgbuild::registry::{
    login, Keychain, PushOutcome, RegistryClient, RegistryError, Secret, TransportOptions,
};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::push::{push_image as push, Image};
use support::registry::{Registry, Setup, PASSWORD, REFRESH_TOKEN, USERNAME};

/// Two deterministic tar+gzip layers and a minimal OCI config and manifest.
fn image(seed: &str) -> Image {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for (i, content) in [
        format!("hello from {seed}\n"),
        format!("second layer of {seed}\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut plan = LayerPlan::new();
        plan.bytes(
            ImagePath::new(&format!("app/file{i}.txt")).unwrap(),
            0o644,
            content.into_bytes(),
        )
        .unwrap();
        let (layer, bytes) = write_layer(&plan, 0, &mut NoExternal, Vec::new()).unwrap();
        diff_ids.push(layer.diff_id.to_string());
        descs.push(serde_json::json!({"mediaType": layer.media_type, "digest": layer.digest.to_string(), "size": layer.size}));
        layers.push(bytes);
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of_bytes(&config).to_string(), "size": config.len()},
        "layers": descs,
    })
    .to_string()
    .into_bytes();
    layers.push(config);
    Image {
        blobs: layers,
        manifest,
    }
}

fn options(reg: &Registry) -> TransportOptions {
    TransportOptions {
        ca_files: reg.ca_file.iter().cloned().collect(),
        retry_base: Duration::from_millis(20),
        max_retries: 2,
        ..Default::default()
    }
}

fn explicit() -> Keychain {
    Keychain::with_env(HashMap::new()).with_explicit(USERNAME, Secret::new(PASSWORD))
}

fn client(reg: &Registry, creds: impl CredentialSource + 'static) -> RegistryClient {
    RegistryClient::new(options(reg), creds).unwrap()
}

fn reference(reg: &Registry, name: &str) -> Reference {
    Reference::parse(&format!("{}/{name}", reg.host)).unwrap()
}

fn skopeo(args: &[String]) -> std::process::Output {
    support::run_ok(Command::new("skopeo").arg("--insecure-policy").args(args))
}

fn round_trip(setup: Setup) {
    let reg = Registry::start(setup);
    let creds: Box<dyn Fn() -> RegistryClient> = match setup {
        Setup::Plain => Box::new(|| client(&reg, Anonymous)),
        _ => Box::new(|| client(&reg, explicit())),
    };
    let c = creds();
    let img = image(&format!("{setup:?}"));
    let r = reference(&reg, "team/app:v1");

    let (outcomes, digest) = push(&c, &r, &img, None).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Uploaded { .. })),
        "{outcomes:?}"
    );
    assert_eq!(digest, Digest::of_bytes(&img.manifest));

    // Pulled back byte for byte, by tag and by digest.
    let (bytes, media_type, got) = c.get_manifest(&r).unwrap();
    assert_eq!(
        (bytes.as_slice(), media_type.as_str(), &got),
        (img.manifest.as_slice(), MEDIA_TYPE_OCI_MANIFEST, &digest)
    );
    assert_eq!(
        c.get_manifest(&r.with_digest(digest.clone())).unwrap().0,
        img.manifest
    );
    assert_eq!(
        c.head_manifest(&r).unwrap(),
        Some((digest.clone(), MEDIA_TYPE_OCI_MANIFEST.to_string()))
    );
    assert_eq!(
        c.head_manifest(&r.with_tag("absent").unwrap()).unwrap(),
        None
    );
    for b in &img.blobs {
        let mut out = Vec::new();
        c.get_blob(&r, &Digest::of_bytes(b), Some(b.len() as u64))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out, b);
    }

    // A second push uploads nothing: one HEAD per blob and the manifest PUT.
    let before = c.stats();
    let (outcomes, _) = push(&c, &r, &img, None).unwrap();
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Existed),
        "{outcomes:?}"
    );
    let after = c.stats();
    assert_eq!(after.blob_bytes_uploaded, before.blob_bytes_uploaded);
    assert_eq!(
        after.requests - before.requests,
        img.blobs.len() as u64 + 1,
        "{before:?} → {after:?}"
    );

    // Another repository on the same registry mounts instead of uploading.
    let fresh = creds();
    let r2 = reference(&reg, "team/copy:v1");
    let (outcomes, _) = push(&fresh, &r2, &img, Some("team/app")).unwrap();
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Mounted),
        "{outcomes:?}"
    );
    assert_eq!(fresh.stats().blob_bytes_uploaded, 0);

    // skopeo sees exactly our bytes and digests.
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_flags(""));
    args.push(format!("docker://{}/team/app:v1", reg.host));
    assert_eq!(skopeo(&args).stdout, img.manifest);
    let layout = tempfile::tempdir().unwrap();
    let mut args = vec!["copy".to_string(), "--preserve-digests".to_string()];
    args.extend(reg.skopeo_flags("src-"));
    args.push(format!("docker://{}/team/copy:v1", reg.host));
    args.push(format!("oci:{}:v1", layout.path().display()));
    skopeo(&args);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.to_string());
}

#[test]
fn plain_http_registry_push_pull_repush_and_mount() {
    round_trip(Setup::Plain);
}

#[test]
fn htpasswd_tls_registry_push_pull_repush_and_mount() {
    round_trip(Setup::Htpasswd);
}

#[test]
fn token_registry_push_pull_repush_and_mount() {
    round_trip(Setup::Token);
}

/// Checks an error is one line naming the registry, and keeps it for the secret scan.
fn record(seen: &mut Vec<String>, host: &str, e: RegistryError) -> RegistryError {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(s.contains(host), "error does not name the registry: {s}");
    eprintln!("{s}");
    seen.push(s);
    seen.push(format!("{e:?}"));
    e
}

fn failures_are_clear_and_never_show_the_password(setup: Setup) {
    let reg = Registry::start(setup);
    let wrong = "wrong-Pa55-4471";
    let mut seen = Vec::new();
    let img = image("errors");

    let bad = client(
        &reg,
        Keychain::with_env(HashMap::new()).with_explicit(USERNAME, Secret::new(wrong)),
    );
    let e = record(
        &mut seen,
        &reg.host,
        push(&bad, &reference(&reg, "team/app:v1"), &img, None).unwrap_err(),
    );
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let e = record(
        &mut seen,
        &reg.host,
        bad.check_login(&reg.host).unwrap_err(),
    );
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");

    let anon = client(&reg, Anonymous);
    let e = record(
        &mut seen,
        &reg.host,
        push(&anon, &reference(&reg, "team/app:v1"), &img, None).unwrap_err(),
    );
    assert!(matches!(e, RegistryError::NoCredentials { .. }), "{e}");

    let good = client(&reg, explicit());
    let e = record(
        &mut seen,
        &reg.host,
        good.get_manifest(&reference(&reg, "team/never-pushed:v1"))
            .unwrap_err(),
    );
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            RegistryError::ManifestUnknown { .. } | RegistryError::NameUnknown { .. }
        ),
        "{e}"
    );
    assert!(
        msg.contains("team/never-pushed:v1") && msg.contains("no such manifest"),
        "{msg}"
    );

    seen.push(format!("{:?}", explicit().resolve(&reg.host).unwrap()));
    for s in &seen {
        assert!(
            !s.contains(PASSWORD) && !s.contains(wrong),
            "a password leaked into: {s}"
        );
    }
}

#[test]
fn htpasswd_failures_are_one_line_and_never_show_the_password() {
    failures_are_clear_and_never_show_the_password(Setup::Htpasswd);
}

#[test]
fn token_failures_are_one_line_and_never_show_the_password() {
    failures_are_clear_and_never_show_the_password(Setup::Token);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Resolves with `keychain`, checks where the credential came from, then logs in and pushes.
fn works_with(reg: &Registry, keychain: Keychain, source_contains: &str, repo: &str) {
    let resolved = keychain.resolve(&reg.host).unwrap();
    assert!(
        resolved.source.contains(source_contains),
        "{source_contains:?} not in {:?}",
        resolved.source
    );
    let c = client(reg, keychain);
    c.check_login(&reg.host).unwrap();
    push(
        &c,
        &reference(reg, &format!("{repo}:v1")),
        &image(repo),
        None,
    )
    .unwrap();
}

#[cfg(unix)]
#[test]
fn every_credential_source_works_against_the_htpasswd_registry() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start(Setup::Htpasswd);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty_home = d.join("home");
    let env = |pairs: &[(&str, &Path)]| -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect();
        m.entry("HOME".into())
            .or_insert_with(|| empty_home.display().to_string());
        m
    };
    let auth = b64(&format!("{USERNAME}:{PASSWORD}"));

    // config.json auths, keyed by URL as old docker versions wrote it.
    write(
        &d.join("auths/config.json"),
        &format!(
            r#"{{"auths":{{"https://{}/v1/":{{"auth":"{auth}"}}}}}}"#,
            reg.host
        ),
    );
    works_with(
        &reg,
        Keychain::with_env(env(&[("DOCKER_CONFIG", &d.join("auths"))])),
        "config.json",
        "src/auths",
    );

    // credHelpers and credsStore, through a helper script on PATH.
    let bin = d.join("bin");
    write(
        &bin.join("docker-credential-imgtest"),
        &format!(
            "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = \"{}\" ]; then\n  echo '{{\"Username\":\"{USERNAME}\",\"Secret\":\"{PASSWORD}\"}}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            reg.host
        ),
    );
    std::fs::set_permissions(
        bin.join("docker-credential-imgtest"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(
        &d.join("helpers/config.json"),
        &format!(r#"{{"credHelpers":{{"{}":"imgtest"}}}}"#, reg.host),
    );
    let e = env(&[("DOCKER_CONFIG", &d.join("helpers")), ("PATH", &bin)]);
    works_with(
        &reg,
        Keychain::with_env(e),
        "docker-credential-imgtest",
        "src/helper",
    );
    write(&d.join("store/config.json"), r#"{"credsStore":"imgtest"}"#);
    let e = env(&[("DOCKER_CONFIG", &d.join("store")), ("PATH", &bin)]);
    works_with(&reg, Keychain::with_env(e), "credential store", "src/store");

    // podman's auth files.
    write(
        &d.join("podman/auth.json"),
        &format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host),
    );
    let e = env(&[("REGISTRY_AUTH_FILE", &d.join("podman/auth.json"))]);
    works_with(
        &reg,
        Keychain::with_env(e),
        "podman/auth.json",
        "src/authfile",
    );
    write(
        &d.join("run/containers/auth.json"),
        &format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host),
    );
    works_with(
        &reg,
        Keychain::with_env(env(&[("XDG_RUNTIME_DIR", &d.join("run"))])),
        "run/containers",
        "src/xdg",
    );

    // IMGBUILD_USERNAME/IMGBUILD_PASSWORD, and explicit flags.
    let mut e = env(&[]);
    e.insert("IMGBUILD_USERNAME".into(), USERNAME.into());
    e.insert("IMGBUILD_PASSWORD".into(), PASSWORD.into());
    works_with(&reg, Keychain::with_env(e), "IMGBUILD_USERNAME", "src/env");
    works_with(&reg, explicit(), "--username", "src/explicit");

    // `login` writes a config.json that the keychain then reads.
    let written = login(
        &reg.host,
        USERNAME,
        &Secret::new(PASSWORD),
        Some(&d.join("login")),
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );
    works_with(
        &reg,
        Keychain::with_env(env(&[("DOCKER_CONFIG", &d.join("login"))])),
        "config.json",
        "src/login",
    );

    // skopeo reads the same file the same way.
    let out = support::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--authfile"])
            .arg(&written)
            .arg(format!(
                "--cert-dir={}",
                reg.cert_dir.as_ref().unwrap().display()
            ))
            .arg(format!("docker://{}/src/login:v1", reg.host)),
    );
    assert_eq!(out.stdout, image("src/login").manifest);
}

#[test]
fn an_identity_token_is_exchanged_through_the_oauth2_form() {
    let reg = Registry::start(Setup::Token);
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("config.json"),
        &format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"{REFRESH_TOKEN}"}}}}}}"#,
            reg.host
        ),
    );
    let env: HashMap<String, String> = [(
        "DOCKER_CONFIG".to_string(),
        dir.path().display().to_string(),
    )]
    .into();
    works_with(&reg, Keychain::with_env(env), "config.json", "team/oauth");
}

// ---- Credentials only where safe (issue 13) ----

/// Token requests that carried credentials (Basic, or a grant in a form).
fn credentialed(reg: &Registry) -> usize {
    reg.token_requests()
        .iter()
        .filter(|r| {
            r.header("authorization").is_some()
                || String::from_utf8_lossy(&r.body).contains("password")
        })
        .count()
}

#[test]
fn an_https_registry_whose_token_realm_is_plain_http_gets_no_password() {
    let reg = Registry::start(Setup::TokenTls);
    let c = client(&reg, explicit());
    let e = push(
        &c,
        &reference(&reg, "team/app:v1"),
        &image("downgrade"),
        None,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n') && !msg.contains(PASSWORD), "{msg}");
    assert!(
        msg.contains("http://127.0.0.1:") && msg.contains("/token") && msg.contains("downgrade"),
        "the error must name the realm: {msg}"
    );
    assert_eq!(credentialed(&reg), 0, "credentials went over plain http");
}

#[test]
fn a_wrong_password_reaches_the_token_service_at_most_twice_in_a_push() {
    let reg = Registry::start(Setup::Token);
    let bad = client(
        &reg,
        Keychain::with_env(HashMap::new()).with_explicit(USERNAME, Secret::new("wrong-Pa55-8812")),
    );
    let e = push(
        &bad,
        &reference(&reg, "team/app:v1"),
        &image("lockout"),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let n = credentialed(&reg);
    assert!(
        (1..=2).contains(&n),
        "{n} credentialed token requests in one push"
    );
    // Later requests of the same run fail at once, without asking again.
    bad.check_login(&reg.host).unwrap_err();
    assert_eq!(credentialed(&reg), n);
}
