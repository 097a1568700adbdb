//! TLS towards the gateway: the pinned CA, and the session certificate.

use std::sync::{Arc, Mutex};

use postern_api::tls::{ChainCheck, Verifier, fingerprint, provider};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};

use crate::error::ClientError;

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
/// only root (expiry and host name included). Remembers what was presented,
/// for trust-on-first-use and for a clear mismatch warning.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    seen: Mutex<Option<String>>,
}

impl ChainCheck for PinnedCa {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = intermediates.last().unwrap_or(end_entity);
        *self.seen.lock().unwrap() = Some(fingerprint(presented));
        let anchor = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| fingerprint(c) == self.pin)
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
    }
}

/// A pinned-CA verifier and the TLS configs built on it.
pub struct Pinning {
    verifier: Arc<Verifier<PinnedCa>>,
}

impl Pinning {
    /// Pins `pin`; use an empty pin to learn the presented CA (every handshake fails).
    pub fn new(pin: &str) -> Self {
        Pinning {
            verifier: Verifier::new(PinnedCa {
                pin: pin.to_owned(),
                seen: Mutex::new(None),
            }),
        }
    }

    /// Fingerprint of the CA the server last presented.
    pub fn seen(&self) -> Option<String> {
        self.verifier.chain_check().seen.lock().unwrap().clone()
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
