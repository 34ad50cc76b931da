//! Lockfiles: each format becomes the same `LockedPackage` model.

pub mod pylock;
pub mod requirements;
pub mod uv;
