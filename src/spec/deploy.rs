//! The keys for running the image on Kubernetes or a single server: `image`,
//! `init`, `health` and the `[deploy]` table (see docs/configuration.md,
//! docs/kubernetes.md and docs/single-server.md). Checked here with the same
//! messages as the rest of the spec; what they become is `crate::deploy`'s
//! business.

use super::serving::{forwarded_allow_ips, host, publish, tls, Publish, Tls};
use super::{Origin, SpecError, WORKERS};
use std::path::Path;

/// The `[deploy]` table, with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deploy {
    /// The Kubernetes name; `None` means the project's name, made a valid one.
    pub name: Option<String>,
    /// `None` leaves `replicas` out of the Deployment (1, or what the HPA decides).
    pub replicas: Option<u32>,
    pub resources: Resources,
    /// `None` when `autoscale = false`: no HorizontalPodAutoscaler.
    pub autoscale: Option<Autoscale>,
    pub pull_secret: Option<String>,
    pub service_port: u16,
    /// uvicorn workers per pod; 1 unless set (replication is the cluster's job).
    pub workers: u32,
    /// `host`: the public DNS name; on Kubernetes, an Ingress for it.
    pub host: Option<String>,
    /// `tls-issuer`: the cert-manager ClusterIssuer that gets the Ingress its certificate.
    pub tls_issuer: Option<String>,
    /// `tls`: uvicorn serves HTTPS itself, from this certificate and key.
    pub tls: Option<Tls>,
    /// `publish`: where a single server (compose, systemd) listens; `None`
    /// picks by `tls` (see `crate::deploy::server`).
    pub publish: Option<Publish>,
    /// `forwarded-allow-ips`: the proxies whose `X-Forwarded-*` headers
    /// uvicorn believes; `None` derives it from `host`, `tls` and `publish`.
    pub forwarded_allow_ips: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub requests_cpu: String,
    pub requests_memory: String,
    pub limits_cpu: String,
    pub limits_memory: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Target average CPU utilisation, percent of the request.
    pub cpu: u32,
}

/// Sized for one uvicorn worker serving a small API: a quarter of a core
/// requested (the HPA's 50 % target is then 125m), bursts up to a core, and
/// memory for CPython with FastAPI and pydantic loaded plus headroom.
impl Default for Resources {
    fn default() -> Self {
        Resources {
            requests_cpu: "250m".into(),
            requests_memory: "128Mi".into(),
            limits_cpu: "1".into(),
            limits_memory: "256Mi".into(),
        }
    }
}

impl Default for Autoscale {
    fn default() -> Self {
        Autoscale {
            min: 1,
            max: 10,
            cpu: 50,
        }
    }
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            name: None,
            replicas: None,
            resources: Resources::default(),
            autoscale: Some(Autoscale::default()),
            pull_secret: None,
            service_port: 80,
            workers: 1,
            host: None,
            tls_issuer: None,
            tls: None,
            publish: None,
            forwarded_allow_ips: None,
        }
    }
}

/// Keys of `[deploy]` and an example of each, for messages and suggestions.
pub(super) const DEPLOY_KEYS: &[(&str, &str)] = &[
    ("name", "name = \"orders\""),
    ("replicas", "replicas = 2"),
    (
        "resources",
        "resources = { requests = { cpu = \"250m\", memory = \"128Mi\" }, limits = { cpu = \"1\", memory = \"256Mi\" } }",
    ),
    ("autoscale", "autoscale = { min = 1, max = 10, cpu = 50 }"),
    ("pull-secret", "pull-secret = \"regcred\""),
    ("service-port", "service-port = 80"),
    ("workers", "workers = 1"),
    ("host", "host = \"api.example.com\""),
    ("tls-issuer", "tls-issuer = \"letsencrypt\""),
    ("tls", "tls = { cert = \"/etc/imgbuild/tls.crt\", key = \"/etc/imgbuild/tls.key\" }"),
    ("publish", "publish = \"127.0.0.1:8000\""),
    ("forwarded-allow-ips", "forwarded-allow-ips = \"10.0.0.2\""),
];

/// `image`: a repository without tag or digest (resolve picks the tag).
pub(super) fn image(origin: &Origin, value: Option<String>) -> Result<Option<String>, SpecError> {
    let Some(image) = value else { return Ok(None) };
    let last = image.rsplit('/').next().unwrap_or("");
    if image.contains('@') || last.contains(':') {
        return Err(origin.invalid(
            "image",
            format!("{image:?} must be a repository without tag or digest, such as \"ghcr.io/acme/orders\"; `imgbuild resolve` tags it with --tag or the project version"),
        ));
    }
    crate::reference::Reference::parse(&image)
        .map_err(|e| origin.invalid("image", e.to_string()))?;
    Ok(Some(image))
}

/// `init`: a command array run from the same image before the app starts.
pub(super) fn init(
    origin: &Origin,
    value: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, SpecError> {
    match value {
        Some(cmd) if cmd.first().is_none_or(|c| c.trim().is_empty()) => Err(origin.invalid(
            "init",
            "is empty; give the program and its arguments, such as [\"python\", \"-m\", \"app.migrate\"]",
        )),
        other => Ok(other),
    }
}

/// `health`: an HTTP path for the probes.
pub(super) fn health(origin: &Origin, value: Option<String>) -> Result<Option<String>, SpecError> {
    match value {
        Some(p)
            if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(origin.invalid(
                "health",
                format!("{p:?} must be an HTTP path starting with '/', such as \"/health\""),
            ))
        }
        other => Ok(other),
    }
}

/// The `[deploy]` table (`deploy = { … }` works too); `dir` is the spec's
/// directory, which relative `tls` paths start from.
pub(super) fn deploy(
    origin: &Origin,
    dir: &Path,
    table: Option<toml::Table>,
) -> Result<Deploy, SpecError> {
    let mut out = Deploy::default();
    let Some(table) = table else { return Ok(out) };
    for (key, value) in &table {
        let field = format!("deploy.{key}");
        match key.as_str() {
            "name" => {
                let name = string(origin, &field, value)?;
                if !is_dns_label(&name) {
                    return Err(origin.invalid(&field, format!("{name:?} is not a Kubernetes name: lowercase letters, digits and '-', starting with a letter, at most 63 characters")));
                }
                out.name = Some(name);
            }
            "replicas" => out.replicas = Some(int(origin, &field, value, 0, 1000)? as u32),
            "resources" => out.resources = resources(origin, value)?,
            "autoscale" => out.autoscale = autoscale(origin, value)?,
            "pull-secret" => {
                let name = string(origin, &field, value)?;
                if !is_dns_subdomain(&name) {
                    return Err(origin.invalid(&field, format!("{name:?} is not a Secret name: lowercase letters, digits, '-' and '.', at most 253 characters")));
                }
                out.pull_secret = Some(name);
            }
            "service-port" => out.service_port = int(origin, &field, value, 1, 65535)? as u16,
            "workers" => out.workers = int(origin, &field, value, WORKERS.0, WORKERS.1)? as u32,
            "host" => out.host = Some(host(origin, &field, value)?),
            "tls-issuer" => {
                let name = string(origin, &field, value)?;
                if !is_dns_subdomain(&name) {
                    return Err(origin.invalid(&field, format!("{name:?} is not a cert-manager issuer name: lowercase letters, digits, '-' and '.'")));
                }
                out.tls_issuer = Some(name);
            }
            "tls" => out.tls = Some(tls(origin, dir, value)?),
            "publish" => out.publish = Some(publish(origin, &field, value)?),
            "forwarded-allow-ips" => {
                out.forwarded_allow_ips = Some(forwarded_allow_ips(origin, &field, value)?)
            }
            _ => return Err(unknown(origin, "deploy", key, DEPLOY_KEYS)),
        }
    }
    if out.tls_issuer.is_some() && out.host.is_none() {
        return Err(origin.invalid(
            "deploy.tls-issuer",
            "needs `host`: cert-manager gets the certificate for the Ingress of that host",
        ));
    }
    if let (Some(r), Some(a)) = (out.replicas, out.autoscale) {
        if r < a.min || r > a.max {
            return Err(origin.invalid(
                "deploy.replicas",
                format!(
                    "{r} is outside autoscale's {} to {}; the autoscaler would change it at once",
                    a.min, a.max
                ),
            ));
        }
    }
    Ok(out)
}

pub(super) fn unknown(
    origin: &Origin,
    table: &str,
    key: &str,
    known: &[(&str, &str)],
) -> SpecError {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    let hint = known
        .iter()
        .map(|(k, _)| (*k, strsim::osa_distance(&dashed, k)))
        .filter(|(k, d)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_else(|| {
            let names: Vec<_> = known.iter().map(|(k, _)| *k).collect();
            format!(" (known: {})", names.join(", "))
        });
    SpecError::UnknownKey {
        file: origin.shown.clone(),
        key: format!("{table}.{key}"),
        section: origin.section.clone(),
        hint,
    }
}

pub(super) fn string(origin: &Origin, key: &str, value: &toml::Value) -> Result<String, SpecError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| origin.wrong_type(key, "a string", value.type_str()))
}

pub(super) fn int(
    origin: &Origin,
    key: &str,
    value: &toml::Value,
    min: i64,
    max: i64,
) -> Result<i64, SpecError> {
    let v = value
        .as_integer()
        .ok_or_else(|| origin.wrong_type(key, "an integer", value.type_str()))?;
    if v < min || v > max {
        return Err(origin.invalid(key, format!("{v} is out of range; use {min} to {max}")));
    }
    Ok(v)
}

fn table<'a>(
    origin: &Origin,
    key: &str,
    value: &'a toml::Value,
) -> Result<&'a toml::Table, SpecError> {
    value
        .as_table()
        .ok_or_else(|| origin.wrong_type(key, "a table", value.type_str()))
}

fn resources(origin: &Origin, value: &toml::Value) -> Result<Resources, SpecError> {
    let mut out = Resources::default();
    for (kind, v) in table(origin, "deploy.resources", value)? {
        let prefix = format!("deploy.resources.{kind}");
        let (cpu, memory) = match kind.as_str() {
            "requests" => (&mut out.requests_cpu, &mut out.requests_memory),
            "limits" => (&mut out.limits_cpu, &mut out.limits_memory),
            _ => {
                return Err(unknown(
                    origin,
                    "deploy.resources",
                    kind,
                    &[("requests", ""), ("limits", "")],
                ))
            }
        };
        for (res, q) in table(origin, &prefix, v)? {
            let key = format!("{prefix}.{res}");
            let q = string(origin, &key, q)?;
            let memory_like = match res.as_str() {
                "cpu" => false,
                "memory" => true,
                _ => {
                    return Err(unknown(
                        origin,
                        &prefix,
                        res,
                        &[("cpu", ""), ("memory", "")],
                    ))
                }
            };
            if quantity(&q, memory_like).is_none() {
                let example = if memory_like {
                    "\"256Mi\" or \"1Gi\""
                } else {
                    "\"250m\" or \"1\""
                };
                return Err(origin.invalid(
                    &key,
                    format!("{q:?} is not a Kubernetes quantity; write it such as {example}"),
                ));
            }
            *(if memory_like { &mut *memory } else { &mut *cpu }) = q;
        }
    }
    for (res, req, lim, memory_like) in [
        ("cpu", &out.requests_cpu, &out.limits_cpu, false),
        ("memory", &out.requests_memory, &out.limits_memory, true),
    ] {
        if quantity(req, memory_like) > quantity(lim, memory_like) {
            return Err(origin.invalid(
                &format!("deploy.resources.requests.{res}"),
                format!("{req} is more than the limit {lim}; Kubernetes refuses a request above its limit"),
            ));
        }
    }
    Ok(out)
}

fn autoscale(origin: &Origin, value: &toml::Value) -> Result<Option<Autoscale>, SpecError> {
    if value.as_bool() == Some(false) {
        return Ok(None);
    }
    let mut out = Autoscale::default();
    let t = value.as_table().ok_or_else(|| {
        origin.wrong_type(
            "deploy.autoscale",
            "a table such as { min = 1, max = 10, cpu = 50 }, or false",
            value.type_str(),
        )
    })?;
    for (k, v) in t {
        let key = format!("deploy.autoscale.{k}");
        match k.as_str() {
            "min" => out.min = int(origin, &key, v, 1, 1000)? as u32,
            "max" => out.max = int(origin, &key, v, 1, 1000)? as u32,
            "cpu" => out.cpu = int(origin, &key, v, 1, 100)? as u32,
            _ => {
                return Err(unknown(
                    origin,
                    "deploy.autoscale",
                    k,
                    &[("min", ""), ("max", ""), ("cpu", "")],
                ))
            }
        }
    }
    if out.min > out.max {
        return Err(origin.invalid(
            "deploy.autoscale",
            format!("min {} is more than max {}", out.min, out.max),
        ));
    }
    Ok(Some(out))
}

/// A Kubernetes quantity in base units (cores or bytes); `None` when it is not
/// one or does not suit the resource (cpu: plain or `m`; memory: plain,
/// decimal or binary suffixes).
pub fn quantity(q: &str, memory: bool) -> Option<f64> {
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let factor = match (suffix, memory) {
        ("", _) => 1.0,
        ("m", false) => 1e-3,
        ("k", true) => 1e3,
        ("M", true) => 1e6,
        ("G", true) => 1e9,
        ("T", true) => 1e12,
        ("Ki", true) => 1024.0,
        ("Mi", true) => 1024f64.powi(2),
        ("Gi", true) => 1024f64.powi(3),
        ("Ti", true) => 1024f64.powi(4),
        _ => return None,
    };
    (n > 0.0).then_some(n * factor)
}

/// RFC 1035 label, as Service names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// RFC 1123 subdomain, as Secret names must be.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
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
    fn defaults_without_deploy_keys() {
        let s = load("").unwrap();
        assert_eq!((s.image, s.init, s.health), (None, None, None));
        assert_eq!(s.deploy, Deploy::default());
        assert_eq!(
            s.deploy.autoscale,
            Some(Autoscale {
                min: 1,
                max: 10,
                cpu: 50
            })
        );
        assert_eq!((s.deploy.service_port, s.deploy.workers), (80, 1));
    }

    #[test]
    fn every_deploy_key_is_read() {
        let s = load(
            r#"image = "ghcr.io/acme/orders"
init = ["python", "-m", "orders.migrate"]
health = "/health"
[deploy]
name = "orders"
replicas = 2
resources = { requests = { cpu = "100m", memory = "64Mi" }, limits = { cpu = "2", memory = "1Gi" } }
autoscale = { min = 2, max = 4, cpu = 80 }
pull-secret = "regcred"
service-port = 8080
workers = 2
"#,
        )
        .unwrap();
        assert_eq!(s.image.as_deref(), Some("ghcr.io/acme/orders"));
        assert_eq!(s.init.unwrap()[2], "orders.migrate");
        assert_eq!(s.health.as_deref(), Some("/health"));
        let d = s.deploy;
        assert_eq!(d.name.as_deref(), Some("orders"));
        assert_eq!(d.replicas, Some(2));
        assert_eq!(
            d.resources,
            Resources {
                requests_cpu: "100m".into(),
                requests_memory: "64Mi".into(),
                limits_cpu: "2".into(),
                limits_memory: "1Gi".into()
            }
        );
        assert_eq!(
            d.autoscale,
            Some(Autoscale {
                min: 2,
                max: 4,
                cpu: 80
            })
        );
        assert_eq!(d.pull_secret.as_deref(), Some("regcred"));
        assert_eq!((d.service_port, d.workers), (8080, 2));
        assert_eq!(
            load("[deploy]\nautoscale = false\n")
                .unwrap()
                .deploy
                .autoscale,
            None
        );
    }

    #[test]
    fn bad_deploy_values_name_the_key() {
        for (toml, expect) in [
            (
                "image = \"ghcr.io/acme/orders:1.0\"",
                "key \"image\": \"ghcr.io/acme/orders:1.0\" must be a repository without tag",
            ),
            ("image = \"Bad Name\"", "key \"image\""),
            ("init = []", "key \"init\": is empty"),
            (
                "health = \"health\"",
                "key \"health\": \"health\" must be an HTTP path",
            ),
            (
                "[deploy]\nname = \"Orders\"",
                "key \"deploy.name\": \"Orders\" is not a Kubernetes name",
            ),
            (
                "[deploy]\nreplica = 2",
                "unknown key \"deploy.replica\" (did you mean \"replicas\"?)",
            ),
            (
                "[deploy]\nreplicas = \"2\"",
                "key \"deploy.replicas\" must be an integer, found string",
            ),
            (
                "[deploy]\nreplicas = 20",
                "key \"deploy.replicas\": 20 is outside autoscale's 1 to 10",
            ),
            (
                "[deploy]\nservice-port = 0",
                "key \"deploy.service-port\": 0 is out of range",
            ),
            (
                "[deploy]\npull-secret = \"Reg_Cred\"",
                "key \"deploy.pull-secret\"",
            ),
            (
                "[deploy]\nautoscale = { min = 5, max = 2 }",
                "key \"deploy.autoscale\": min 5 is more than max 2",
            ),
            (
                "[deploy]\nautoscale = { cpu = 0 }",
                "key \"deploy.autoscale.cpu\": 0 is out of range",
            ),
            (
                "[deploy]\nautoscale = true",
                "key \"deploy.autoscale\" must be a table",
            ),
            (
                "[deploy]\nresources = { requests = { cpu = \"1Gi\" } }",
                "key \"deploy.resources.requests.cpu\": \"1Gi\" is not a Kubernetes quantity",
            ),
            (
                "[deploy]\nresources = { requests = { memory = \"2Gi\" } }",
                "key \"deploy.resources.requests.memory\": 2Gi is more than the limit 256Mi",
            ),
            (
                "[deploy]\nresources = { request = {} }",
                "unknown key \"deploy.resources.request\" (did you mean \"requests\"?)",
            ),
            (
                "deploy = 3",
                "key \"deploy\" must be a table, found integer",
            ),
        ] {
            let err = load(toml).unwrap_err();
            assert!(err.starts_with("imgbuild.toml: "), "{toml}: {err}");
            assert!(
                err.contains(expect),
                "{toml}:\n  got {err}\n  want {expect}"
            );
        }
    }

    #[test]
    fn both_workers_keys_take_the_same_counts() {
        let s = load("workers = 65\n[deploy]\nworkers = 65").unwrap();
        assert_eq!((s.workers, s.deploy.workers), (65, 65));
        for key in ["workers", "[deploy]\nworkers"] {
            let err = load(&format!("{key} = 0")).unwrap_err();
            assert!(
                err.ends_with(": 0 is out of range; use 1 to 4294967295"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn quantities_follow_kubernetes_suffixes() {
        assert_eq!(quantity("250m", false), Some(0.25));
        assert_eq!(quantity("1", false), Some(1.0));
        assert_eq!(quantity("1.5", false), Some(1.5));
        assert_eq!(quantity("256Mi", true), Some(256.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1G", true), Some(1e9));
        assert_eq!(quantity("256Mi", false), None, "cpu has no Mi");
        assert_eq!(
            quantity("250m", true),
            None,
            "memory in millibytes is a typo"
        );
        assert_eq!(quantity("", false), None);
        assert_eq!(quantity("0", false), None);
        assert_eq!(quantity("1.2.3", false), None);
        assert_eq!(quantity("one", false), None);
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(is_dns_label("orders-api2"));
        assert!(!is_dns_label("Orders"));
        assert!(!is_dns_label("2orders"));
        assert!(!is_dns_label("orders-"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("regcred.prod"));
        assert!(!is_dns_subdomain("reg_cred"));
    }
}
