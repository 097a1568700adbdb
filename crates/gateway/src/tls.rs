//! TLS configurations: the gateway's listener and its connections to databases.

use std::sync::Arc;

use postern_api::tls::{ChainCheck, Verifier, provider};
use postern_api::{ALPN_HTTP, ALPN_TUNNEL, IDENTITY_EXTENSION_OID, Identity};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{Leaf, pem_certs};
use crate::config::TlsMode;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the material.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A CA file was unreadable or empty.
    #[error("TLS: {0}")]
    Ca(String),
}

/// The listener's config: TLS 1.2+ (tunnels insist on 1.3 via ALPN checks in
/// the client), optional client certificates signed by the user CA, and ALPN
/// for both the tunnel and HTTP.
pub fn server_config(
    leaf: Leaf,
    user_ca: &CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(user_ca.clone())?;
    // Clients without a certificate may still log in and ping; everything
    // else checks for an identity.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(leaf.chain, leaf.key)?;
    config.alpn_protocols = std::iter::once(ALPN_TUNNEL)
        .chain(ALPN_HTTP)
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Arc::new(config))
}

/// Reads the identity from a verified session certificate.
pub fn identity_from_cert(der: &CertificateDer<'_>) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let ext = cert.extensions().iter().find(|e| {
        e.oid
            .iter()
            .is_some_and(|arcs| arcs.eq(IDENTITY_EXTENSION_OID.iter().copied()))
    })?;
    Identity::from_extension_bytes(ext.value).ok()
}

/// Builds the config used to reach one database as one db user.
pub fn upstream_config(
    mode: TlsMode,
    ca_pem: Option<&str>,
    client_cert: Option<ClientCertForCa>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = pem_certs(pem).map_err(|e| TlsError::Ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(TlsError::Ca("the CA file holds no certificate".into()));
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots_anchors()),
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    let verifier = Verifier::new(match mode {
        TlsMode::VerifyFull => DbCheck::Full(webpki),
        TlsMode::VerifyCa => DbCheck::ChainOnly(webpki),
        TlsMode::Insecure => DbCheck::Nothing,
    });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_cert {
        Some(c) => builder.with_client_cert_resolver(Arc::new(c)),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn webpki_roots_anchors() -> impl Iterator<Item = rustls::pki_types::TrustAnchor<'static>> {
    // Without a configured CA the public web roots apply, which is what
    // managed services with public certificates need. No OS store is read so
    // behaviour is the same on every machine.
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned()
}

/// Presents the gateway's database-CA certificate only when the server asks
/// for certificates from that CA (or from any CA), so databases that do not
/// trust it are not offered a certificate they would reject.
#[derive(Debug)]
pub struct ClientCertForCa {
    key: Arc<CertifiedKey>,
    ca_subject: Vec<u8>,
}

impl ClientCertForCa {
    /// Wraps a leaf issued by the database CA whose DER subject is `ca_subject`.
    pub fn new(leaf: Leaf, ca_subject: Vec<u8>) -> Result<Self, TlsError> {
        let key = CertifiedKey::from_der(leaf.chain, leaf.key, &provider())?;
        Ok(ClientCertForCa {
            key: Arc::new(key),
            ca_subject,
        })
    }
}

impl ResolvesClientCert for ClientCertForCa {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let wanted = root_hint_subjects.is_empty()
            || root_hint_subjects.contains(&self.ca_subject.as_slice());
        wanted.then(|| self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// DER of a certificate's subject Name (as TLS CertificateRequest hints carry it).
pub fn subject_der(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    Some(parsed.tbs_certificate.subject.as_raw().to_vec())
}

/// How much of a database's certificate is checked, per [`TlsMode`].
#[derive(Debug)]
enum DbCheck {
    /// Chain and host name.
    Full(Arc<WebPkiServerVerifier>),
    /// Chain only.
    ChainOnly(Arc<WebPkiServerVerifier>),
    /// Nothing: encryption without authentication, for labs.
    Nothing,
}

impl ChainCheck for DbCheck {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self {
            DbCheck::Full(webpki) => {
                webpki.verify_server_cert(end_entity, intermediates, server_name, &[], now)
            }
            DbCheck::ChainOnly(webpki) => {
                match webpki.verify_server_cert(end_entity, intermediates, server_name, &[], now) {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    )) => Ok(ServerCertVerified::assertion()),
                    other => other,
                }
            }
            DbCheck::Nothing => Ok(ServerCertVerified::assertion()),
        }
    }
}
