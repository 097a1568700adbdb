//! TLS pieces both sides need: the crypto provider, certificate
//! fingerprints, and one server-certificate verifier with a pluggable check.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The crypto provider used for every TLS connection Postern makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `sha256:<hex>` fingerprint of a DER certificate, as pins are written.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Decides whether a server certificate chain is acceptable.
pub trait ChainCheck: Send + Sync + std::fmt::Debug {
    /// Accepts or rejects the presented chain.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error>;
}

/// A verifier whose chain decision is a [`ChainCheck`]; handshake signatures
/// are always verified with the provider's algorithms, so whatever the check
/// accepts, the peer must hold the certificate's key.
#[derive(Debug)]
pub struct Verifier<C> {
    check: C,
    provider: Arc<CryptoProvider>,
}

impl<C: ChainCheck> Verifier<C> {
    /// Wraps a chain check.
    pub fn new(check: C) -> Arc<Self> {
        Arc::new(Verifier {
            check,
            provider: provider(),
        })
    }

    /// The chain check.
    pub fn chain_check(&self) -> &C {
        &self.check
    }
}

impl<C: ChainCheck> ServerCertVerifier for Verifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(end_entity, intermediates, server_name, now)
    }

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
