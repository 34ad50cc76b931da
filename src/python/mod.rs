//! The target's Python, known from the base image's files: never by running it.

pub mod bytecode;
pub mod install;
pub mod interpreter;
pub mod markers;
pub mod project;
pub mod rootfs;
pub mod tags;
pub mod venv;
