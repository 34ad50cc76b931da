//! The base's Python, read from its layers once per base manifest and cached;
//! and the base's layers as bytecode compiling reads them.

use super::{BaseError, BaseImage};
use crate::digest::Digest;
use crate::python::interpreter::{self, PythonInfo};
use crate::python::rootfs::RootFs;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BasePythonError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("base {base}")]
    Interpreter {
        base: String,
        #[source]
        source: interpreter::InterpreterError,
    },
}

/// Bumped when detection changes, so stale cached answers are not reused.
const DETECTION_VERSION: u32 = 1;

fn key(digest: &Digest) -> String {
    format!("python-v{DETECTION_VERSION}:{digest}")
}

/// Whether the store knows the Python of the base `digest` (no layer to read).
pub fn known(store: &Store, digest: &Digest) -> bool {
    store
        .get_meta::<PythonInfo>("python", &key(digest))
        .is_some()
}

/// Records the Python of the base `digest`, read elsewhere (the base facts a
/// registry holds), so [`detect`] finds it as if read here.
pub fn remember(store: &Store, digest: &Digest, info: &PythonInfo) {
    // A failed cache write only costs the next build a rescan.
    store.put_meta_best_effort("python", &key(digest), info);
}

pub fn detect(base: &BaseImage, store: Option<&Store>) -> Result<PythonInfo, BasePythonError> {
    let key = key(&base.manifest_digest);
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
        s.put_meta_best_effort("python", &key, &info);
    }
    Ok(info)
}

/// Applies every base layer, verifying each blob in full as it streams.
pub fn read_rootfs(base: &BaseImage) -> Result<RootFs, BasePythonError> {
    let mut rootfs = RootFs::new();
    for index in 0..base.manifest.layers.len() {
        base.read_layer_tar(index, |tar| {
            rootfs
                .apply_layer(tar, &RootFs::python_relevant)
                .map_err(Into::into)
        })?;
    }
    Ok(rootfs)
}

/// What compiling bytecode with the base's own interpreter reads from it.
impl crate::python::bytecode::BaseLayers for BaseImage {
    fn name(&self) -> &str {
        &self.name
    }

    fn layer_digests(&self) -> Vec<String> {
        self.manifest
            .layers
            .iter()
            .map(|d| d.digest.to_string())
            .collect()
    }

    fn read_layer(
        &self,
        index: usize,
        read: &mut dyn FnMut(&mut dyn std::io::Read) -> std::io::Result<()>,
    ) -> Result<(), super::BoxError> {
        Ok(self.read_layer_tar(index, |tar| read(tar).map_err(Into::into))?)
    }
}
