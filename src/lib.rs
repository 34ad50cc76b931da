//! imgbuild: container images for Python web services, built without a Docker
//! daemon and without running Python. See docs/architecture.md for the pipeline.

pub mod app;
pub mod digest;
pub mod layer;
pub mod lock;
pub mod python;
pub mod reference;
pub mod registry;
pub mod spec;
