//! How the service is reached: the `[deploy]` keys `host`, `tls`, `publish`
//! and `forwarded-allow-ips` (docs/single-server.md, docs/kubernetes.md).
//! Apart from `deploy.rs` so that each stays short; the same messages.

use super::deploy::{int, is_dns_subdomain, string, unknown};
use super::{Origin, SpecError};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The certificate (chain) and private key uvicorn serves HTTPS with, as
/// absolute paths on the machine that runs the service (relative ones are
/// taken from the spec's directory). Whether they exist is checked by the
/// outputs that mount them, not here: a build never needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A host port, on one address or (`address: None`) on all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub address: Option<IpAddr>,
    pub port: u16,
}

/// `host`: a DNS name as an Ingress takes it (lowercase, not an IP address).
pub(super) fn host(origin: &Origin, key: &str, value: &toml::Value) -> Result<String, SpecError> {
    let name = string(origin, key, value)?;
    let numeric_end = name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    if !is_dns_subdomain(&name) || numeric_end || name.parse::<IpAddr>().is_ok() {
        return Err(origin.invalid(key, format!("{name:?} is not a DNS name: lowercase letters, digits, '-' and '.', such as \"api.example.com\"")));
    }
    Ok(name)
}

/// `tls = { cert = "…", key = "…" }`, both required.
pub(super) fn tls(origin: &Origin, dir: &Path, value: &toml::Value) -> Result<Tls, SpecError> {
    let t = value.as_table().ok_or_else(|| {
        origin.wrong_type(
            "deploy.tls",
            "a table such as { cert = \"tls.crt\", key = \"tls.key\" }",
            value.type_str(),
        )
    })?;
    let mut paths = [None, None];
    for (k, v) in t {
        let key = format!("deploy.tls.{k}");
        let slot = match k.as_str() {
            "cert" => 0,
            "key" => 1,
            _ => {
                return Err(unknown(
                    origin,
                    "deploy.tls",
                    k,
                    &[("cert", ""), ("key", "")],
                ))
            }
        };
        let p = string(origin, &key, v)?;
        if p.trim().is_empty() {
            return Err(origin.invalid(&key, "is empty; give the path of a PEM file"));
        }
        paths[slot] = Some(super::normalise(&dir.join(p)));
    }
    match paths {
        [Some(cert), Some(key)] => Ok(Tls { cert, key }),
        [None, _] => Err(origin.invalid("deploy.tls", "has no `cert`; uvicorn needs the certificate (chain) and the key, such as { cert = \"tls.crt\", key = \"tls.key\" }")),
        [_, None] => Err(origin.invalid("deploy.tls", "has no `key`; uvicorn needs the certificate (chain) and the key, such as { cert = \"tls.crt\", key = \"tls.key\" }")),
    }
}

/// `publish`: `"PORT"`, `"ADDRESS:PORT"` or `"[IPV6]:PORT"`.
pub(super) fn publish(
    origin: &Origin,
    key: &str,
    value: &toml::Value,
) -> Result<Publish, SpecError> {
    let text = match value {
        toml::Value::Integer(_) => int(origin, key, value, 1, 65535)?.to_string(),
        _ => string(origin, key, value)?,
    };
    let bad = || {
        origin.invalid(
            key,
            format!("{text:?} is not PORT or ADDRESS:PORT, such as \"443\" or \"127.0.0.1:8000\""),
        )
    };
    let (address, port) = match text.rsplit_once(':') {
        None => (None, text.as_str()),
        Some((a, p)) => {
            let a = a
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(a);
            (Some(a.parse::<IpAddr>().map_err(|_| bad())?), p)
        }
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Publish { address, port }),
        _ => Err(bad()),
    }
}

/// `forwarded-allow-ips`: `"*"`, or addresses and networks separated by commas.
pub(super) fn forwarded_allow_ips(
    origin: &Origin,
    key: &str,
    value: &toml::Value,
) -> Result<String, SpecError> {
    let list = string(origin, key, value)?;
    let ok = |item: &str| {
        let (ip, prefix) = item.split_once('/').unwrap_or((item, "0"));
        ip.parse::<IpAddr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 128)
    };
    if list.trim() == "*" || (!list.is_empty() && list.split(',').all(|i| ok(i.trim()))) {
        return Ok(list.trim().to_string());
    }
    Err(origin.invalid(
        key,
        format!("{list:?} is not \"*\" or a comma-separated list of addresses and networks, such as \"10.0.0.2,192.168.1.0/24\""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse, Spec};

    fn load(extra: &str) -> Result<Spec, String> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("base = \"python:3.12-slim\"\napp = \"main:app\"\n{extra}");
        let file = dir.path().join("imgbuild.toml");
        parse(&text, &file, false, dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn https_and_single_server_keys_are_read() {
        let s = load(
            r#"[deploy]
host = "api.example.com"
tls-issuer = "letsencrypt-prod"
tls = { cert = "certs/tls.crt", key = "/etc/ssl/private/api.key" }
publish = "[::1]:8443"
forwarded-allow-ips = "10.0.0.2, 192.168.1.0/24"
"#,
        )
        .unwrap();
        let d = s.deploy;
        assert_eq!(d.host.as_deref(), Some("api.example.com"));
        assert_eq!(d.tls_issuer.as_deref(), Some("letsencrypt-prod"));
        let tls = d.tls.unwrap();
        let dir = s.file.parent().unwrap();
        assert_eq!(tls.cert, dir.join("certs/tls.crt"), "relative to the spec");
        assert_eq!(tls.key, Path::new("/etc/ssl/private/api.key"));
        assert_eq!(
            d.publish,
            Some(Publish {
                address: Some("::1".parse().unwrap()),
                port: 8443
            })
        );
        assert_eq!(
            d.forwarded_allow_ips.as_deref(),
            Some("10.0.0.2, 192.168.1.0/24")
        );
        let d = load("[deploy]\npublish = 443\n").unwrap().deploy;
        assert_eq!(
            d.publish,
            Some(Publish {
                address: None,
                port: 443
            })
        );
        assert!(!load("").unwrap().workers_set);
        assert!(load("workers = 1").unwrap().workers_set);
    }

    #[test]
    fn bad_https_keys_name_the_key() {
        for (toml, expect) in [
            (
                "host = \"Api_Example.com\"",
                "key \"deploy.host\": \"Api_Example.com\" is not a DNS name",
            ),
            ("host = \"10.0.0.1\"", "\"10.0.0.1\" is not a DNS name"),
            ("host = \"https://api.example.com\"", "is not a DNS name"),
            (
                "tls-issuer = \"le\"",
                "key \"deploy.tls-issuer\": needs `host`",
            ),
            ("tls = \"tls.crt\"", "key \"deploy.tls\" must be a table"),
            ("tls = { cert = \"c\" }", "key \"deploy.tls\": has no `key`"),
            (
                "tls = { cert = \"c\", key = \"k\", ca = \"x\" }",
                "unknown key \"deploy.tls.ca\"",
            ),
            (
                "publish = \"localhost:80\"",
                "key \"deploy.publish\": \"localhost:80\" is not PORT or ADDRESS:PORT",
            ),
            ("publish = 0", "key \"deploy.publish\": 0 is out of range"),
            (
                "forwarded-allow-ips = \"proxy.local\"",
                "key \"deploy.forwarded-allow-ips\"",
            ),
        ] {
            let err = load(&format!("[deploy]\n{toml}")).unwrap_err();
            assert!(
                err.contains(expect),
                "{toml}:\n  got {err}\n  want {expect}"
            );
        }
    }
}
