//! The certificate verifier of the verifying client: the system store (with
//! SSL_CERT_FILE) and every `--ca-file`, read at the first certificate to
//! check. Reading and parsing the system store costs 4 to 9 ms of CPU here;
//! a push to a plain-http registry, with a local base, never checks a
//! certificate and so never pays it, and a registry whose certificate a
//! `--ca-file` CA issued is trusted without it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_platform_verifier::Verifier;
use std::sync::{Arc, OnceLock};

/// Trusts what the platform's [`Verifier`] (as reqwest makes it) trusts:
/// the system store and the `--ca-file` certificates. Both are read at the
/// first certificate to check, and a certificate that the `--ca-file`
/// certificates alone vouch for is trusted without the system store (the
/// platform verifier is WebPKI over the union of the two, so the answer is
/// the same).
#[derive(Debug)]
pub(super) struct LazyStore {
    provider: Arc<CryptoProvider>,
    extra: Vec<CertificateDer<'static>>,
    /// WebPKI over the `--ca-file` certificates only; `None` without any.
    extra_only: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
    /// `None`: the system has no CA certificate and no `--ca-file` was
    /// given, so no certificate can be trusted.
    loaded: OnceLock<Option<Verifier>>,
}

impl LazyStore {
    pub(super) fn new(provider: Arc<CryptoProvider>, extra: Vec<CertificateDer<'static>>) -> Self {
        LazyStore {
            provider,
            extra,
            extra_only: OnceLock::new(),
            loaded: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Option<&Verifier> {
        self.loaded
            .get_or_init(|| {
                let _span = crate::trace::span(|| "http: the trust store".into());
                // It fails only when no certificate at all was found.
                Verifier::new_with_extra_roots(self.extra.iter().cloned(), self.provider.clone())
                    .ok()
            })
            .as_ref()
    }

    fn extra_only(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.extra_only
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                // Each was parsed as a root when its file was read.
                roots.add_parsable_certificates(self.extra.iter().cloned());
                if roots.is_empty() {
                    return None;
                }
                WebPkiServerVerifier::builder_with_provider(roots.into(), self.provider.clone())
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Whether the store was read and held no certificate.
    pub(super) fn found_none(&self) -> bool {
        matches!(self.loaded.get(), Some(None))
    }

    /// Whether the system store has been read.
    #[cfg(test)]
    pub(super) fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }
}

impl ServerCertVerifier for LazyStore {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(ours) = self.extra_only() {
            let verified =
                ours.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
            if verified.is_ok() {
                return verified;
            }
        }
        match self.verifier() {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            // What an empty store answers: nothing issued this certificate.
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    // The signatures are checked as the platform verifier checks them, with
    // the provider's algorithms: no store is needed for that.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS settings reqwest makes by default, with [`LazyStore`] as the
/// verifier: TLS 1.2 and 1.3, SNI, and ALPN for the HTTP versions allowed.
pub(super) fn client_config(
    http1_only: bool,
    extra: Vec<CertificateDer<'static>>,
) -> Result<(rustls::ClientConfig, Arc<LazyStore>), rustls::Error> {
    // reqwest's own choice: an installed default, else aws-lc-rs.
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let store = Arc::new(LazyStore::new(provider.clone(), extra));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(store.clone())
        .with_no_client_auth();
    config.alpn_protocols = match http1_only {
        true => vec![b"http/1.1".to_vec()],
        false => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok((config, store))
}
