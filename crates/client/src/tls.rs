//! TLS towards the gateway: the pinned CA, and the session certificate.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::ClientError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `sha256:<hex>` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Checks the shape of a `--ca-pin` value and normalises it to lower case.
pub fn parse_pin(pin: &str) -> Result<String, ClientError> {
    let hex_part = pin.strip_prefix("sha256:").ok_or(ClientError::BadPin)?;
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ClientError::BadPin);
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

/// Trusts exactly the pinned CA: some certificate the server sends must have
/// the pinned fingerprint, and the leaf must then verify against it as the
/// only root (expiry and host name included).
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    seen: Mutex<Option<String>>,
}

impl PinnedCa {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = intermediates.last().unwrap_or(end_entity);
        *self.seen.lock().unwrap() = Some(fingerprint(presented));
        let anchor = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| fingerprint(c) == self.pin)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, server_name, ocsp, now)
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
            &provider().signature_verification_algorithms,
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
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A verifier that records the presented CA and trusts it only if it is the pin.
/// Used for trust-on-first-use: the first handshake shows what to pin.
pub struct Pinning {
    verifier: Arc<PinnedCa>,
}

impl Pinning {
    /// Pins `pin`; use an empty pin to learn the presented CA (every handshake fails).
    pub fn new(pin: &str) -> Self {
        Pinning {
            verifier: Arc::new(PinnedCa {
                pin: pin.to_owned(),
                seen: Mutex::new(None),
            }),
        }
    }

    /// Fingerprint of the CA the server last presented.
    pub fn seen(&self) -> Option<String> {
        self.verifier.seen.lock().unwrap().clone()
    }

    /// A client config with this pin, the given ALPN and optional client certificate.
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        tls13_only: bool,
    ) -> Result<Arc<ClientConfig>, ClientError> {
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| ClientError::Crypto(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone());
        let mut config = match client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Crypto(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Splits `host:port` into the TLS server name and the address to dial.
pub fn split_addr(addr: &str) -> Result<(ServerName<'static>, String), ClientError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| ClientError::BadAddress(addr.to_owned()))?;
    port.parse::<u16>()
        .map_err(|_| ClientError::BadAddress(addr.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ClientError::BadAddress(addr.to_owned()))?;
    Ok((name, addr.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_validated_and_normalised() {
        let upper = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(
            parse_pin(&upper).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        assert!(parse_pin("md5:00").is_err());
        assert!(parse_pin("sha256:xyz").is_err());
    }

    #[test]
    fn addresses_need_a_port() {
        assert!(split_addr("gw.example.com").is_err());
        assert!(split_addr("gw.example.com:http").is_err());
        let (name, dial) = split_addr("127.0.0.1:3080").unwrap();
        assert_eq!(dial, "127.0.0.1:3080");
        assert_eq!(name.to_str(), "127.0.0.1");
    }
}
