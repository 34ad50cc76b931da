//! imgbuild: container images for Python web services, built without a Docker
//! daemon and without running Python. See docs/architecture.md for the pipeline.

mod app;
mod attest;
mod base;
mod build;
mod check;
pub mod cli;
mod deploy;
pub mod digest;
mod dockerignore;
mod fetch;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod image;
mod init;
mod inspect;
pub mod layer;
mod local;
mod lock;
mod output;
mod parallel;
mod platform;
mod project_file;
pub mod python;
pub mod reference;
pub mod registry;
mod sandbox;
mod sdist;
pub mod spec;
mod store;
mod tee;
#[cfg(test)]
mod test_http;
mod text;
#[cfg(test)]
mod tiers;
mod trace;

/// Starts the clock `IMGBUILD_TRACE` lines count from: called first thing in `main`.
pub fn trace_start() {
    trace::start();
}
