//! The OCI distribution client: pull, push, auth, credentials.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod transport;
