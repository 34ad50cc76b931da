//! The one error type of the registry client. Every message is one line that
//! names the operation and the registry and says what to do; none ever holds a
//! password or token (credentials are only ever carried as `Secret`).

use super::credentials::CredentialError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what}: cannot reach {registry}: {detail}")]
    Connection {
        what: String,
        registry: String,
        detail: String,
        retryable: bool,
    },

    #[error(
        "{what}: {registry} redirects {path} in a loop (over {limit} redirects); the registry is \
         misconfigured or the address is wrong"
    )]
    Redirects {
        what: String,
        registry: String,
        /// The path (never the query) of the last URL that redirected, or
        /// "the request" when reqwest names none.
        path: String,
        limit: usize,
    },

    #[error("{what}: {registry} answered HTTP {status}: {detail}")]
    Status {
        what: String,
        registry: String,
        status: u16,
        detail: String,
        retryable: bool,
    },

    #[error(
        "{what}: {registry} refused the credentials ({detail}); check them with `imgbuild login {registry}`, \
         --username/--password-stdin, IMGBUILD_USERNAME/IMGBUILD_PASSWORD or ~/.docker/config.json"
    )]
    Unauthorized {
        what: String,
        registry: String,
        detail: String,
    },

    #[error(
        "{what}: {registry} requires credentials and none were found for it ({detail}); log in with \
         `imgbuild login {registry}`, pass --username/--password-stdin, or set IMGBUILD_USERNAME/IMGBUILD_PASSWORD"
    )]
    NoCredentials {
        what: String,
        registry: String,
        detail: String,
    },

    #[error("{what}: {registry} has no such manifest ({detail}); check the repository name and the tag or digest")]
    ManifestUnknown {
        what: String,
        registry: String,
        detail: String,
    },

    #[error("{what}: {registry} denied access ({detail}); the account lacks permission for this repository")]
    Denied {
        what: String,
        registry: String,
        detail: String,
    },

    #[error(
        "{what}: {registry} does not know this repository ({detail}); check the name, or create the \
         repository first (some registries, e.g. ECR, do not create repositories on push)"
    )]
    NameUnknown {
        what: String,
        registry: String,
        detail: String,
    },

    #[error("{what}: {registry} is rate limiting requests ({detail}); wait and retry, or log in for a higher limit")]
    RateLimited {
        what: String,
        registry: String,
        detail: String,
    },

    #[error("{what}: {registry} returned content with digest {got}, expected {expected}; refusing to use it")]
    DigestMismatch {
        what: String,
        registry: String,
        expected: String,
        got: String,
    },

    #[error("{what}: {registry} {detail}")]
    Protocol {
        what: String,
        registry: String,
        detail: String,
    },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{what}: {detail}")]
    Auth { what: String, detail: String },

    #[error(
        "{what}: {registry} is not answering ({cause}, earlier in this run); not asking it \
         again (check that the registry is up and the address is right)"
    )]
    Dead {
        what: String,
        registry: String,
        cause: String,
    },

    #[error("{what}: gave up on {registry} when the --timeout of {seconds} s ran out")]
    Deadline {
        what: String,
        registry: String,
        seconds: f64,
    },

    #[error(transparent)]
    Credential(#[from] CredentialError),

    /// The HTTP client could not be made (a bad `--ca-file`).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("{what}: no CA certificate to verify {registry}'s TLS certificate with ({bundle}); set SSL_CERT_FILE to a PEM bundle of CAs, or pass --ca-file")]
    NoCaBundle {
        what: String,
        registry: String,
        bundle: String,
    },
    #[error("{registry:?} is not a usable registry host")]
    BadHost { registry: String },
    #[error("{what}: the request cannot be made")]
    Request {
        what: String,
        #[source]
        source: reqwest::Error,
    },
}

impl RegistryError {
    /// Whether trying the same step again may succeed: connection failures,
    /// 408, 429 and 5xx. Never DENIED, NAME_UNKNOWN or UNAUTHORIZED.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Connection { retryable, .. }
            | RegistryError::Status { retryable, .. } => *retryable,
            RegistryError::RateLimited { .. } => true,
            _ => false,
        }
    }
}

/// One line for any error with sources: `a: b: c`, without repeating a
/// source that the outer message already quotes.
pub(crate) fn chain_message(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
