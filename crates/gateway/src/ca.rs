//! Certificate authorities the gateway owns.
//!
//! - the **user CA** signs short-lived session certificates for the keys
//!   clients generate themselves; the identity rides in a private extension;
//! - the **host CA** signs the gateway's own TLS server certificate, and is
//!   what clients pin on first login;
//! - the **database CA** signs the client certificates the gateway presents
//!   to PostgreSQL servers that authenticate with pg_hba `cert` (CN = db user).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use postern_api::tls::fingerprint;
use postern_api::{IDENTITY_EXTENSION_OID, Identity};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a certificate could not be issued or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused the parameters or the key.
    #[error("certificate operation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Stored or configured PEM could not be read.
    #[error("invalid PEM: {0}")]
    Pem(String),
}

/// Which authority a key pair belongs to (also its store key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKind {
    /// Signs session certificates.
    User,
    /// Signs the gateway's TLS server certificate.
    Host,
    /// Signs certificates the gateway presents to databases.
    Database,
}

impl CaKind {
    /// Stable name used in the store and in `ca export`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::User => "user",
            CaKind::Host => "host",
            CaKind::Database => "db",
        }
    }
}

/// A CA certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CaMaterial {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM. Never logged.
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A loaded authority, ready to sign.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

/// A freshly issued leaf: certificate chain and key for rustls.
pub struct Leaf {
    /// Leaf certificate then the issuing CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Expiry of the leaf.
    pub not_after: SystemTime,
}

/// Tolerance for clocks that run slightly behind the gateway's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

impl CaMaterial {
    /// Creates a new self-signed CA (ECDSA P-256, ten years).
    pub fn generate(kind: CaKind, cluster: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Postern {} CA ({cluster})", kind.as_str()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(CaMaterial {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Authority {
    /// Loads an authority from its stored material.
    pub fn load(material: &CaMaterial) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&material.key_pem)?;
        let cert_der = pem_certs(&material.cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Pem("no certificate in CA PEM".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Authority {
            issuer,
            cert_der,
            cert_pem: material.cert_pem.clone(),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sha256:<hex>` of the CA certificate, as clients pin it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Signs a session certificate for the key in `csr_pem`, carrying `identity`.
    /// The CSR's own subject and extensions are ignored: only its key is used,
    /// after its self-signature proved the client holds the private key.
    pub fn sign_session(&self, csr_pem: &str, identity: &Identity) -> Result<String, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = leaf_params(&identity.username, identity.expires_unix)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                IDENTITY_EXTENSION_OID,
                identity.to_extension_bytes(),
            ));
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issues a leaf with a fresh key: a TLS server certificate when `sans`
    /// is not empty, otherwise a client certificate for `common_name`.
    pub fn issue_leaf(
        &self,
        common_name: &str,
        sans: &[String],
        ttl: Duration,
    ) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        let not_after = SystemTime::now() + ttl;
        let mut params = leaf_params(common_name, unix(not_after))?;
        if sans.is_empty() {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            params.subject_alt_names = CertificateParams::new(sans.to_vec())?.subject_alt_names;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after,
        })
    }
}

fn leaf_params(common_name: &str, expires_unix: i64) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (UNIX_EPOCH + Duration::from_secs(expires_unix.max(0) as u64)).into();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// All certificates in a PEM string.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem(e.to_string()))
}

/// The first private key in a PEM string.
pub fn pem_key(pem: &str) -> Result<PrivateKeyDer<'static>, CaError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| CaError::Pem(e.to_string()))?
        .ok_or_else(|| CaError::Pem("no private key found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn session_certificate_carries_identity_and_expiry() {
        let ca = Authority::load(&CaMaterial::generate(CaKind::User, "test").unwrap()).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&client_key)
            .unwrap()
            .pem()
            .unwrap();
        let identity = Identity {
            username: "alice".into(),
            roles: vec!["dev".into()],
            traits: Default::default(),
            expires_unix: unix(SystemTime::now()) + 3600,
        };
        let pem = ca.sign_session(&csr, &identity).unwrap();
        let der = pem_certs(&pem).unwrap().remove(0);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.validity().not_after.timestamp(), identity.expires_unix);
        assert_eq!(
            &*cert.public_key().subject_public_key.data,
            client_key.public_key_raw(),
            "the certificate must be for the client's own key"
        );
        let ext = cert
            .extensions()
            .iter()
            .find(|e| {
                e.oid
                    .iter()
                    .unwrap()
                    .eq(IDENTITY_EXTENSION_OID.iter().copied())
            })
            .expect("identity extension");
        assert_eq!(Identity::from_extension_bytes(ext.value).unwrap(), identity);
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = Authority::load(&CaMaterial::generate(CaKind::User, "test").unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut der = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0xff;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64_lines(&der)
        );
        let identity = Identity {
            username: "mallory".into(),
            roles: vec![],
            traits: Default::default(),
            expires_unix: 0,
        };
        assert!(ca.sign_session(&pem, &identity).is_err());
    }

    fn base64_lines(der: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    }
}
