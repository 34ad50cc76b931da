//! The OCI distribution client: pull, push, auth, credentials.
//!
//! `RegistryClient` (in `client`) is the entry point; `credentials::Keychain`
//! says who we are; `transport::TransportOptions` says how we connect.

pub mod auth;
mod blob;
pub mod client;
pub mod credentials;
pub mod error;
mod manifest;
#[cfg(test)]
mod tests;
pub mod transport;
mod upload;

pub use client::{BlobUpload, PushOutcome, RegistryClient};
pub use credentials::{login, Credential, CredentialSource, Keychain, Secret};
pub use error::RegistryError;
pub use transport::{TransferStats, TransportOptions};
