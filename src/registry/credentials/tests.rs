use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn basic(u: &str, p: &str) -> Credential {
    Credential::Basic {
        username: u.into(),
        password: Secret::new(p),
    }
}

#[test]
fn secrets_never_print() {
    let c = basic("alice", "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
    let k = Keychain::with_env(env(&[(PASSWORD_ENV, "hunter2")]))
        .with_explicit("a", Secret::new("hunter2"));
    assert!(!format!("{k:?}").contains("hunter2"));
    assert_eq!(Secret::new("hunter2").to_string(), "***");
}

#[test]
fn auths_split_at_the_first_colon_and_match_url_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(
            r#"{{"auths":{{"https://reg.example.com/v2/":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            b64("bob:pa:ss"),
            b64("hubuser:hubpass")
        ),
    )
    .unwrap();
    let k = Keychain::with_env(env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]));
    assert_eq!(
        k.resolve("reg.example.com").unwrap().credential,
        basic("bob", "pa:ss")
    );
    assert_eq!(
        k.resolve("docker.io").unwrap().credential,
        basic("hubuser", "hubpass")
    );
    assert_eq!(
        k.resolve("other.example.com").unwrap().credential,
        Credential::Anonymous
    );
}

#[test]
fn namespaced_auth_json_keys_longest_prefix_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"auths":{{"r.io":{{"auth":"{}"}},"r.io/team":{{"auth":"{}"}},"r.io/team/app":{{"auth":"{}"}},"r.io/te":{{"auth":"{}"}}}}}}"#,
            b64("host:h"),
            b64("team:t"),
            b64("app:a"),
            b64("te:x")
        ),
    )
    .unwrap();
    let k = Keychain::with_env(env(&[
        ("HOME", "/nonexistent"),
        ("REGISTRY_AUTH_FILE", file.to_str().unwrap()),
    ]));
    let for_repo = |r: &str| k.resolve_for("r.io", Some(r)).unwrap().credential;
    assert_eq!(for_repo("team/app"), basic("app", "a"));
    assert_eq!(for_repo("team/app/sub"), basic("app", "a"));
    assert_eq!(for_repo("team/other"), basic("team", "t"));
    // Prefixes match whole path components only.
    assert_eq!(for_repo("teams/x"), basic("host", "h"));
    assert_eq!(for_repo("other"), basic("host", "h"));
    // Without a repository, and for the registry as a whole, the host key.
    assert_eq!(k.resolve("r.io").unwrap().credential, basic("host", "h"));
    // A namespaced key alone never serves the rest of its registry.
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{"s.io/team":{{"auth":"{}"}}}}}}"#, b64("t:t")),
    )
    .unwrap();
    assert_eq!(
        k.resolve_for("s.io", Some("other/x")).unwrap().credential,
        Credential::Anonymous
    );
    assert_eq!(
        k.resolve_for("s.io", Some("team/x")).unwrap().credential,
        basic("t", "t")
    );
}

#[test]
fn tokens_and_username_password_fields_are_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths":{"a.io":{"identitytoken":"idt","auth":"dTpw"},"b.io":{"registrytoken":"rt"},
            "c.io":{"username":"u","password":"p"},"d.io":{}}}"#,
    )
    .unwrap();
    let k = Keychain::with_env(env(&[
        ("HOME", "/nonexistent"),
        ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
    ]));
    assert_eq!(
        k.resolve("a.io").unwrap().credential,
        Credential::IdentityToken {
            username: Some("u".into()),
            token: Secret::new("idt")
        }
    );
    assert_eq!(
        k.resolve("b.io").unwrap().credential,
        Credential::RegistryToken(Secret::new("rt"))
    );
    assert_eq!(k.resolve("c.io").unwrap().credential, basic("u", "p"));
    assert_eq!(k.resolve("d.io").unwrap().credential, Credential::Anonymous);
}

#[test]
fn explicit_beats_env_beats_files_and_can_be_limited_to_one_registry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("f:f")),
    )
    .unwrap();
    let e = env(&[
        ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
        (USERNAME_ENV, "envuser"),
        (PASSWORD_ENV, "envpass"),
    ]);
    let k = Keychain::with_env(e.clone());
    assert_eq!(
        k.resolve("r.io").unwrap().credential,
        basic("envuser", "envpass")
    );
    let k = k.with_explicit("cli", Secret::new("clipass"));
    assert_eq!(
        k.resolve("r.io").unwrap().credential,
        basic("cli", "clipass")
    );
    let k = k.explicit_only_for("other.io");
    assert_eq!(k.resolve("r.io").unwrap().credential, basic("f", "f"));
    assert_eq!(
        k.resolve("other.io").unwrap().credential,
        basic("cli", "clipass")
    );
}

#[test]
fn half_set_env_credentials_are_an_error() {
    let k = Keychain::with_env(env(&[(USERNAME_ENV, "u")]));
    let e = k.resolve("r.io").unwrap_err().to_string();
    assert!(e.contains(PASSWORD_ENV), "{e}");
}

#[test]
fn podman_auth_files_come_after_docker_config() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("pod:man")),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("run/containers")).unwrap();
    std::fs::write(
        dir.path().join("run/containers/auth.json"),
        format!(r#"{{"auths":{{"x.io":{{"auth":"{}"}}}}}}"#, b64("xdg:x")),
    )
    .unwrap();
    let k = Keychain::with_env(env(&[
        ("HOME", dir.path().join("home").to_str().unwrap()),
        ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
        ("XDG_RUNTIME_DIR", dir.path().join("run").to_str().unwrap()),
    ]));
    let r = k.resolve("r.io").unwrap();
    assert_eq!(r.credential, basic("pod", "man"));
    assert!(r.source.contains("auth.json"));
    assert_eq!(k.resolve("x.io").unwrap().credential, basic("xdg", "x"));
}

#[test]
fn broken_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths":{"r.io":{"auth":"@@@"}}}"#,
    )
    .unwrap();
    let k = Keychain::with_env(env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]));
    let e = k.resolve("r.io").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("r.io"), "{e}");
    std::fs::write(dir.path().join("config.json"), "{nope").unwrap();
    assert!(k
        .resolve("r.io")
        .unwrap_err()
        .to_string()
        .contains("config.json"));
}

#[cfg(unix)]
#[test]
fn helpers_are_asked_in_order_and_not_found_means_next_source() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let p = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "per",
        r#"read s; [ "$s" = "r.io" ] && echo '{"Username":"<token>","Secret":"idtok"}'"#,
    );
    script(
        "store",
        r#"read s; echo "credentials not found in native keychain"; exit 1"#,
    );
    std::fs::write(
        dir.path().join("config.json"),
        format!(
            r#"{{"credHelpers":{{"r.io":"per"}},"credsStore":"store","auths":{{"s.io":{{"auth":"{}"}}}}}}"#,
            b64("file:user")
        ),
    )
    .unwrap();
    let k = Keychain::with_env(env(&[
        ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
        ("PATH", bin.to_str().unwrap()),
    ]));
    assert_eq!(
        k.resolve("r.io").unwrap().credential,
        Credential::IdentityToken {
            username: None,
            token: Secret::new("idtok")
        }
    );
    assert_eq!(k.resolve("s.io").unwrap().credential, basic("file", "user"));
    assert_eq!(k.resolve("t.io").unwrap().credential, Credential::Anonymous);
}

#[cfg(unix)]
#[test]
fn login_keeps_other_keys_and_writes_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths":{"x.io":{"auth":"eDp5"}},"psFormat":"table"}"#,
    )
    .unwrap();
    let path = login("docker.io", "me", &Secret::new("pw"), Some(dir.path())).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["psFormat"], "table");
    assert_eq!(v["auths"]["x.io"]["auth"], "eDp5");
    assert_eq!(
        v["auths"]["https://index.docker.io/v1/"]["auth"],
        b64("me:pw")
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let k = Keychain::with_env(env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]));
    assert_eq!(
        k.resolve("docker.io").unwrap().credential,
        basic("me", "pw")
    );
}
