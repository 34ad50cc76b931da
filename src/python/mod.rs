//! The target's Python, known from the base image's files: never by running it.

pub mod bytecode;
pub mod interpreter;
pub mod markers;
pub mod rootfs;
pub mod tags;
pub mod venv;
pub mod wheel;
