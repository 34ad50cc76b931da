//! The image config: the base's config with our layers, history and runtime
//! settings applied. Fields we do not touch (including ones we do not know)
//! are kept as the base had them.

use crate::digest::Digest;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The PATH a container gets when its image config sets none (Docker's
/// default): what a base without one runs with, and the tail of the PATH this
/// stage writes.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    pub user: String,
    pub working_dir: String,
    /// The venv's bin directory, put first on PATH.
    pub venv_bin: String,
    pub venv: String,
    /// `HOME`, a directory the user owns (`None` when `env` sets it).
    pub home: Option<String>,
    pub env: BTreeMap<String, String>,
    pub port: u16,
    /// `None` clears the base's entrypoint, so `run IMAGE python …` works as users expect.
    pub entrypoint: Option<Vec<String>>,
    /// `None` clears the base's Cmd: it belonged to the base's entrypoint, not ours.
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
}

#[derive(Clone, Debug)]
pub struct HistoryEntry {
    pub diff_id: Digest,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the base image config is not a JSON object")]
    NotAnObject,
    #[error("the base image config has no rootfs.diff_ids list")]
    NoDiffIds,
}

fn env_list(base: &Value) -> Vec<(String, String)> {
    base.pointer("/config/Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// The base's PATH with the venv's bin first; the standard PATH when the base sets none.
pub fn path_with_venv(base_path: Option<&str>, venv_bin: &str) -> String {
    let rest = base_path.filter(|p| !p.is_empty()).unwrap_or(DEFAULT_PATH);
    let rest: Vec<&str> = rest.split(':').filter(|p| *p != venv_bin).collect();
    format!("{venv_bin}:{}", rest.join(":"))
}

pub fn derive_config(
    base: &Value,
    settings: &RuntimeSettings,
    layers: &[HistoryEntry],
) -> Result<Value, ConfigError> {
    let mut cfg = base.as_object().cloned().ok_or(ConfigError::NotAnObject)?;

    let mut env = env_list(base);
    let base_path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    set_env(
        &mut env,
        "PATH",
        path_with_venv(base_path.as_deref(), &settings.venv_bin),
    );
    set_env(&mut env, "VIRTUAL_ENV", settings.venv.clone());
    set_env(&mut env, "PYTHONUNBUFFERED", "1".into());
    // Over the base's: its HOME (if any) is root's or another user's. Set in
    // the config, a runtime keeps it rather than guess one (podman takes the
    // workdir, which is the code's and not writable; Kubernetes takes `/`).
    if let Some(home) = &settings.home {
        set_env(&mut env, "HOME", home.clone());
    }
    for (k, v) in &settings.env {
        set_env(&mut env, k, v.clone());
    }

    let mut runtime = cfg
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    runtime.insert("User".into(), json!(settings.user));
    runtime.insert("WorkingDir".into(), json!(settings.working_dir));
    runtime.insert(
        "Env".into(),
        json!(env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()),
    );
    let mut ports = runtime
        .get("ExposedPorts")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    ports.insert(format!("{}/tcp", settings.port), json!({}));
    runtime.insert("ExposedPorts".into(), Value::Object(ports));
    match &settings.entrypoint {
        Some(ep) => runtime.insert("Entrypoint".into(), json!(ep)),
        None => runtime.remove("Entrypoint"),
    };
    match &settings.cmd {
        Some(cmd) => runtime.insert("Cmd".into(), json!(cmd)),
        None => runtime.remove("Cmd"),
    };
    let mut labels = runtime
        .get("Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in &settings.labels {
        labels.insert(k.clone(), json!(v));
    }
    runtime.insert("Labels".into(), Value::Object(labels));
    cfg.insert("config".into(), Value::Object(runtime));

    let rootfs = cfg
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs
        .get_mut("diff_ids")
        .and_then(Value::as_array_mut)
        .ok_or(ConfigError::NoDiffIds)?;
    for l in layers {
        diff_ids.push(json!(l.diff_id.to_string()));
    }

    let history = cfg.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        for l in layers {
            let mut e = Map::new();
            e.insert("created".into(), json!(settings.created));
            e.insert("created_by".into(), json!(l.created_by));
            e.insert("comment".into(), json!(l.comment));
            h.push(Value::Object(e));
        }
    }
    cfg.insert("created".into(), json!(settings.created));
    // Fields that describe the machine or daemon that built the base no longer apply.
    cfg.remove("container");
    cfg.remove("container_config");
    cfg.remove("docker_version");
    Ok(Value::Object(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RuntimeSettings {
        RuntimeSettings {
            user: "65532:65532".into(),
            working_dir: "/app".into(),
            venv_bin: "/app/.venv/bin".into(),
            venv: "/app/.venv".into(),
            home: Some("/home/app".into()),
            env: [("APP_MODE".to_string(), "prod".to_string())].into(),
            port: 8000,
            entrypoint: None,
            cmd: Some(vec!["/app/.venv/bin/uvicorn".into()]),
            labels: BTreeMap::new(),
            created: "1970-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn venv_first_on_path_and_base_fields_kept() {
        let base = json!({
            "architecture": "amd64", "os": "linux", "custom": 1,
            "config": {"Env": ["PATH=/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8"], "Entrypoint": ["/bin/sh"], "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "base"}]
        });
        let d = Digest::of_bytes(b"x");
        let layers = [HistoryEntry {
            diff_id: d.clone(),
            created_by: "imgbuild: app".into(),
            comment: "app".into(),
        }];
        let cfg = derive_config(&base, &settings(), &layers).unwrap();
        assert_eq!(
            cfg["config"]["Env"],
            json!([
                "PATH=/app/.venv/bin:/usr/bin:/bin",
                "HOME=/home/app",
                "LANG=C.UTF-8",
                "VIRTUAL_ENV=/app/.venv",
                "PYTHONUNBUFFERED=1",
                "APP_MODE=prod"
            ])
        );
        assert!(cfg["config"].get("Entrypoint").is_none());
        assert_eq!(cfg["custom"], 1);
        assert_eq!(cfg["rootfs"]["diff_ids"][1], json!(d.to_string()));
        assert_eq!(cfg["history"].as_array().unwrap().len(), 2);
        assert_eq!(cfg["config"]["ExposedPorts"], json!({"8000/tcp": {}}));
    }

    #[test]
    fn standard_path_when_base_sets_none() {
        assert_eq!(
            path_with_venv(None, "/v/bin"),
            format!("/v/bin:{DEFAULT_PATH}")
        );
    }
}
