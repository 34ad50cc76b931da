//! The base's Python, read from its layers once per base manifest and cached.

use super::{BaseError, BaseImage};
use crate::layer::compress::decompressed;
use crate::python::interpreter::{self, PythonInfo};
use crate::python::rootfs::RootFs;
use crate::store::Store;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BasePythonError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("base {base}: layer {layer}")]
    Layer {
        base: String,
        layer: String,
        /// A digest mismatch, a compression we do not read, or a tar we cannot apply.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("base {base}")]
    Interpreter {
        base: String,
        #[source]
        source: interpreter::InterpreterError,
    },
}

/// Bumped when detection changes, so stale cached answers are not reused.
const DETECTION_VERSION: u32 = 1;

pub fn detect(base: &BaseImage, store: Option<&Store>) -> Result<PythonInfo, BasePythonError> {
    let key = format!("python-v{DETECTION_VERSION}:{}", base.manifest_digest);
    if let Some(info) = store.and_then(|s| s.get_meta::<PythonInfo>("python", &key)) {
        return Ok(info);
    }
    let rootfs = read_rootfs(base)?;
    let info = interpreter::detect(&rootfs, base.env_path().as_deref()).map_err(|source| {
        BasePythonError::Interpreter {
            base: base.name.clone(),
            source,
        }
    })?;
    if let Some(s) = store {
        // A failed cache write only costs the next build a rescan.
        let _ = s.put_meta("python", &key, &info);
    }
    Ok(info)
}

/// Applies every base layer, verifying each blob in full as it streams.
pub fn read_rootfs(base: &BaseImage) -> Result<RootFs, BasePythonError> {
    let mut rootfs = RootFs::new();
    for desc in &base.manifest.layers {
        let layer_err = |source: Box<dyn std::error::Error + Send + Sync>| BasePythonError::Layer {
            base: base.name.clone(),
            layer: desc.digest.to_string(),
            source,
        };
        let mut blob = base.open_blob(desc)?;
        let applied: Result<(), Box<dyn std::error::Error + Send + Sync>> =
            match decompressed(&desc.media_type, &mut blob) {
                Ok(mut tar) => rootfs
                    .apply_layer(&mut tar, &RootFs::python_relevant)
                    .map_err(Into::into)
                    .and_then(|()| {
                        io::copy(&mut tar, &mut io::sink())
                            .map(drop)
                            .map_err(Into::into)
                    }),
                Err(e) => Err(e.into()),
            };
        // Drain to EOF so the digest check always runs: a corrupt blob is
        // reported as a digest mismatch, not as whatever decoding error it caused.
        io::copy(&mut blob, &mut io::sink()).map_err(|e| layer_err(e.into()))?;
        applied.map_err(layer_err)?;
    }
    Ok(rootfs)
}
