//! The OCI distribution client: pull, push, auth, credentials.
//!
//! `RegistryClient` (in `client`) is the entry point; `credentials::Keychain`
//! says who we are; `transport::TransportOptions` says how we connect.

pub(crate) mod auth;
mod blob;
pub mod client;
pub mod credentials;
mod endpoints;
pub(crate) mod error;
mod first_contact;
mod manifest;
#[cfg(test)]
mod tests;
pub(crate) mod transport;
mod upload;

pub use client::{BlobUpload, PushOutcome, RegistryClient};
pub use credentials::{login, Credential, CredentialSource, Keychain, Secret};
pub use error::RegistryError;
pub use transport::{TransferStats, TransportOptions};
