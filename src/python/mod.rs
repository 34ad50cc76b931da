//! The target's Python, known from the base image's files: never by running it.

pub(crate) mod bytecode;
pub mod install;
pub(crate) mod interpreter;
pub(crate) mod markers;
pub mod project;
pub(crate) mod rootfs;
pub(crate) mod tags;
pub mod venv;
