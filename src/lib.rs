//! imgbuild: container images for Python web services, built without a Docker
//! daemon and without running Python. See docs/architecture.md for the pipeline.

pub mod app;
pub mod attest;
pub mod base;
pub mod build;
pub mod check;
pub mod cli;
pub mod deploy;
pub mod digest;
pub mod dockerignore;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod image;
pub mod init;
pub mod inspect;
pub mod layer;
pub mod local;
pub mod lock;
pub mod output;
pub mod parallel;
pub mod platform;
pub mod python;
pub mod reference;
pub mod registry;
pub mod spec;
pub mod store;
pub mod tee;
#[cfg(test)]
mod test_http;
pub mod text;
#[cfg(test)]
mod tiers;
