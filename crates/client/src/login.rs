//! Logging in: the client makes its own key pair, the gateway signs a
//! short-lived certificate for it, the key never leaves this machine.

use postern_api::wire::LocalLoginRequest;
use rcgen::{CertificateParams, KeyPair};

use crate::api::{GatewayClient, presented_ca};
use crate::error::ClientError;
use crate::home::Home;
use crate::keystore::{KeyStoreKind, delete_key, save_key};
use crate::profile::{Profile, profile_name_for};
use crate::tls::{parse_pin, split_addr};

/// A local-user login.
pub struct LocalLogin {
    /// Gateway `host:port`.
    pub gateway: String,
    /// Postern username.
    pub username: String,
    /// Password (kept only for the request).
    pub password: String,
    /// One-time code, for accounts that have one.
    pub totp: Option<String>,
    /// Explicit CA pin (`sha256:...`); overrides a stored one.
    pub ca_pin: Option<String>,
    /// Where to keep the private key.
    pub key_store: KeyStoreKind,
    /// Profile name (default: from the gateway address).
    pub profile: Option<String>,
}

/// Decides which CA to trust for a gateway: an explicit pin, the profile's
/// stored pin, or — first contact — the presented CA if `trust` accepts it.
pub async fn resolve_pin(
    home: &Home,
    profile: &str,
    gateway: &str,
    explicit: Option<&str>,
    trust: impl FnOnce(&str) -> bool,
) -> Result<String, ClientError> {
    if let Some(pin) = explicit {
        return parse_pin(pin);
    }
    if let Ok(existing) = home.load(profile)
        && existing.gateway == gateway
    {
        return Ok(existing.ca_pin);
    }
    let fingerprint = presented_ca(gateway).await?;
    if trust(&fingerprint) {
        Ok(fingerprint)
    } else {
        Err(ClientError::UntrustedCa {
            addr: gateway.to_owned(),
            fingerprint,
        })
    }
}

/// Logs in with a password and saves the session as the current profile.
pub async fn login_local(
    home: &Home,
    req: LocalLogin,
    trust: impl FnOnce(&str) -> bool,
) -> Result<Profile, ClientError> {
    let (name, pin, client) = begin(
        home,
        &req.gateway,
        req.profile.as_deref(),
        req.ca_pin.as_deref(),
        trust,
    )
    .await?;
    client.ping().await?;

    let (key, csr_pem) = new_key_and_csr()?;
    let response = client
        .login_local(&LocalLoginRequest {
            username: req.username,
            password: req.password,
            csr_pem,
            totp: req.totp,
        })
        .await?;
    save_session(home, &name, &req.gateway, pin, req.key_store, key, response)
}

/// The first steps of every login: the profile name, the CA to trust, and a
/// gateway client pinned to it.
pub(crate) async fn begin(
    home: &Home,
    gateway: &str,
    profile: Option<&str>,
    ca_pin: Option<&str>,
    trust: impl FnOnce(&str) -> bool,
) -> Result<(String, String, GatewayClient), ClientError> {
    split_addr(gateway)?;
    let name = profile.map_or_else(|| profile_name_for(gateway), str::to_owned);
    let pin = resolve_pin(home, &name, gateway, ca_pin, trust).await?;
    let client = GatewayClient::new(gateway, &pin, None)?;
    Ok((name, pin, client))
}

/// A fresh key pair and a certificate request for it; the key stays here.
pub(crate) fn new_key_and_csr() -> Result<(KeyPair, String), ClientError> {
    let key = KeyPair::generate().map_err(|e| ClientError::Crypto(e.to_string()))?;
    let csr_pem = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| ClientError::Crypto(e.to_string()))?;
    Ok((key, csr_pem))
}

/// Stores a fresh session: key first, then the profile that points at it.
pub(crate) fn save_session(
    home: &Home,
    name: &str,
    gateway: &str,
    pin: String,
    key_store: KeyStoreKind,
    key: KeyPair,
    response: postern_api::wire::LoginResponse,
) -> Result<Profile, ClientError> {
    if let Ok(old) = home.load(name)
        && old.key_store != key_store
    {
        delete_key(home, name, old.key_store)?;
    }
    save_key(home, name, key_store, &key.serialize_pem())?;
    let profile = Profile {
        name: name.to_owned(),
        gateway: gateway.to_owned(),
        ca_pin: pin,
        key_store,
        cert_pem: Some(response.cert_pem),
        identity: Some(response.identity),
    };
    home.save(&profile)?;
    home.set_current(name)?;
    Ok(profile)
}

/// Forgets a profile's session (certificate and key); the CA pin is kept so
/// the next login needs no new trust decision.
pub fn logout(home: &Home, profile: Option<&str>) -> Result<Profile, ClientError> {
    let mut profile = home.resolve(profile)?;
    delete_key(home, &profile.name, profile.key_store)?;
    profile.cert_pem = None;
    profile.identity = None;
    home.save(&profile)?;
    Ok(profile)
}
