//! Shared helpers for the end-to-end tests: the Debian base images, podman, and uv.
//!
//! Each test crate includes this with `mod support;` and uses only part of it, so the
//! unused rest must not warn.
#![allow(dead_code)]

pub mod base;
pub mod fake_registry;
pub mod layout;
pub mod podman;
pub mod push;
pub mod registry;
pub mod synthetic;
pub mod uv;

use std::path::PathBuf;

/// The repository root, where `scripts/`, `fixtures/` and `images/` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture project under `fixtures/`, e.g. `fixture("hello-api")`.
pub fn fixture(name: &str) -> PathBuf {
    let dir = repo_root().join("fixtures").join(name);
    assert!(dir.is_dir(), "no fixture directory {}", dir.display());
    dir
}
