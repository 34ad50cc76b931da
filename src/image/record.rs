//! What an image records about how it was made, for `imgbuild rebase`
//! (issue 25): one manifest annotation holding the base's Python as the
//! image's layers were made for it, the settings that shaped the layers
//! generated from the base (the venv, the bytecode mode), and the runtime
//! settings the config was derived with, so a rebase can derive the config a
//! build on the new base would have, from the registry alone.

use super::config::RuntimeSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest annotation that holds an [`ImageRecord`] as JSON.
pub const ANNOTATION_RECORD: &str = "dev.imgbuild.image";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImageRecord {
    /// The layer format of the build (`LAYER_FORMAT`); a rebase reads only its own.
    pub format: u32,
    /// How many of the manifest's layers are the base's (the rest are ours).
    pub base_layers: usize,
    pub python: RecordedPython,
    /// The venv's directory in the image, absolute.
    pub venv: String,
    /// `off`, `checked-hash` or `unchecked-hash`.
    pub bytecode: String,
    /// Whether the standard library's pycs were compiled into a layer of ours
    /// (`bytecode-stdlib`, for a base that ships none).
    pub bytecode_stdlib: bool,
    /// Whether the base's Python ran in the sandbox (`sandbox`).
    pub sandbox: bool,
    /// The identity (sha256 of the interpreter and its standard library) of
    /// the interpreter that compiled the pycs of the packages and the app;
    /// none without bytecode. A rebase keeps it: those layers are kept.
    pub compiled_by: Option<String>,
    /// That interpreter's pyc magic number (hex); none without bytecode.
    pub pyc_magic: Option<String>,
    /// `gzip` or `zstd`: how our layers are compressed.
    pub compression: String,
    /// SOURCE_DATE_EPOCH: every entry's mtime and the config's `created`.
    pub epoch: u64,
    /// `allow-missing-libraries`: what the native check lets the runtime provide.
    pub allow_missing_libraries: Vec<String>,
    pub runtime: RecordedRuntime,
}

/// The base's interpreter as the layers were made for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RecordedPython {
    /// `3.11.2`
    pub version: String,
    /// `cp311`, `cp313t`
    pub abi: String,
    /// The interpreter's real path, which the venv's `bin/python` links to.
    pub interpreter: String,
}

/// [`RuntimeSettings`] as recorded: the labels without the base's name and
/// digest, which a rebase writes for the new base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RecordedRuntime {
    pub user: String,
    pub working_dir: String,
    pub venv_bin: String,
    pub home: Option<String>,
    pub env: BTreeMap<String, String>,
    pub port: u16,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

impl RecordedRuntime {
    /// What a build records of `settings` (labels given without the base's keys).
    pub fn of(settings: &RuntimeSettings) -> RecordedRuntime {
        RecordedRuntime {
            user: settings.user.clone(),
            working_dir: settings.working_dir.clone(),
            venv_bin: settings.venv_bin.clone(),
            home: settings.home.clone(),
            env: settings.env.clone(),
            port: settings.port,
            entrypoint: settings.entrypoint.clone(),
            cmd: settings.cmd.clone(),
            labels: settings.labels.clone(),
        }
    }

    /// The settings again, for a config derived on `venv` at `created`.
    pub fn settings(&self, venv: &str, created: &str) -> RuntimeSettings {
        RuntimeSettings {
            user: self.user.clone(),
            working_dir: self.working_dir.clone(),
            venv_bin: self.venv_bin.clone(),
            venv: venv.to_owned(),
            home: self.home.clone(),
            env: self.env.clone(),
            port: self.port,
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            labels: self.labels.clone(),
            created: created.to_owned(),
        }
    }
}

impl ImageRecord {
    /// As the annotation's value: canonical JSON, so equal records give equal manifests.
    pub fn to_annotation(&self) -> String {
        let value = serde_json::to_value(self).expect("a record serialises");
        String::from_utf8(super::json::canonical(&value)).expect("JSON is UTF-8")
    }

    /// The record a manifest's annotations hold, if any (`Err` when it does not parse).
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Option<Result<ImageRecord, serde_json::Error>> {
        let text = annotations?.get(ANNOTATION_RECORD)?;
        Some(serde_json::from_str(text))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record as a build on a Debian 3.11 base writes it.
    pub(crate) fn record() -> ImageRecord {
        ImageRecord {
            format: 5,
            base_layers: 1,
            python: RecordedPython {
                version: "3.11.2".into(),
                abi: "cp311".into(),
                interpreter: "/usr/bin/python3.11".into(),
            },
            venv: "/app/.venv".into(),
            bytecode: "checked-hash".into(),
            bytecode_stdlib: true,
            sandbox: true,
            compiled_by: Some("ab".repeat(32)),
            pyc_magic: Some("a70d0d0a".into()),
            compression: "gzip".into(),
            epoch: 315532800,
            allow_missing_libraries: vec![],
            runtime: RecordedRuntime {
                user: "1000:1000".into(),
                working_dir: "/app".into(),
                venv_bin: "/app/.venv/bin".into(),
                home: Some("/home/app".into()),
                env: [("MODE".to_string(), "prod".to_string())].into(),
                port: 8000,
                entrypoint: None,
                cmd: Some(vec!["/app/.venv/bin/uvicorn".into()]),
                labels: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn a_record_reads_back_from_its_annotation_and_its_text_is_canonical() {
        let r = record();
        let text = r.to_annotation();
        assert!(text.starts_with("{\"allow-missing-libraries\":[],\"base-layers\":1,"));
        let annotations = [(ANNOTATION_RECORD.to_string(), text)].into();
        assert_eq!(
            ImageRecord::from_annotations(Some(&annotations))
                .unwrap()
                .unwrap(),
            r
        );
        assert!(ImageRecord::from_annotations(Some(&BTreeMap::new())).is_none());
        let unknown = [(ANNOTATION_RECORD.to_string(), "{\"format\":9}".to_string())].into();
        assert!(ImageRecord::from_annotations(Some(&unknown))
            .unwrap()
            .is_err());
    }

    #[test]
    fn recorded_settings_give_back_the_runtime_settings() {
        let r = record();
        let s = r.runtime.settings(&r.venv, "1980-01-01T00:00:00Z");
        assert_eq!(s.venv, "/app/.venv");
        assert_eq!(RecordedRuntime::of(&s), r.runtime);
    }
}
