//! Requests and responses of the gateway's HTTPS API (`/v1/...`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Identity;

/// `POST /v1/login/local`: log in with a local user's password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalLoginRequest {
    /// Postern username.
    pub username: String,
    /// The user's password (sent over TLS only, never stored by the client).
    pub password: String,
    /// PKCS#10 certificate signing request (PEM) for the client's own key.
    pub csr_pem: String,
    /// The current one-time code (TOTP) of a user who has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
}

/// `GET /v1/connectors`: the single sign-on connectors a gateway offers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Connectors {
    /// Connectors, in configuration order.
    pub connectors: Vec<ConnectorInfo>,
}

/// One single sign-on connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorInfo {
    /// Name to pass to `postern login --sso NAME`.
    pub name: String,
    /// Protocol (`oidc`).
    pub kind: String,
}

/// `POST /v1/login/sso/start`: begin a brokered single sign-on login.
///
/// The client keeps `verifier` to itself and sends only its hash
/// ([`sso_challenge`]); the one-time code the browser brings back to
/// `client_redirect` is worth nothing without it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoStartRequest {
    /// Connector name.
    pub connector: String,
    /// The client's loopback listener, e.g. `http://127.0.0.1:PORT/callback`.
    pub client_redirect: String,
    /// `base64url(sha256(verifier))`, unpadded.
    pub client_challenge: String,
    /// PKCS#10 certificate signing request (PEM) for the client's own key.
    pub csr_pem: String,
}

/// The answer to [`SsoStartRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoStartResponse {
    /// Names this login in the exchange.
    pub request_id: String,
    /// Where to send the browser (the identity provider's sign-in page).
    pub auth_url: String,
}

/// `POST /v1/login/sso/exchange`: trade the one-time code for the
/// certificate; answered with a [`LoginResponse`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoExchangeRequest {
    /// From [`SsoStartResponse`].
    pub request_id: String,
    /// The one-time code the browser brought to the loopback listener.
    pub code: String,
    /// The secret whose hash was sent as `client_challenge`.
    pub verifier: String,
}

/// The challenge for a verifier: `base64url(sha256(verifier))` without padding
/// (the PKCE S256 form).
pub fn sso_challenge(verifier: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `POST /v1/login/device/start`: begin a device sign-in (RFC 8628) for a
/// machine without a browser; the person signs in on any other device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceStartRequest {
    /// Connector name.
    pub connector: String,
    /// PKCS#10 certificate signing request (PEM) for the client's own key;
    /// the certificate the sign-in ends with is for this key only.
    pub csr_pem: String,
    /// The machine's host name, shown to the person who approves it.
    pub hostname: String,
}

/// The answer to [`DeviceStartRequest`] (RFC 8628 §3.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceStartResponse {
    /// The secret the client polls with; only its hash is kept.
    pub device_code: String,
    /// What the person types on the verification page, e.g. `BDFG-HJKL`.
    pub user_code: String,
    /// The page where the person enters the code.
    pub verification_uri: String,
    /// The same page with the code filled in (for a QR code).
    pub verification_uri_complete: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds the client waits between polls.
    pub interval: u64,
}

/// `POST /v1/login/device/token`: a poll; answered with a [`LoginResponse`]
/// once approved, else with a [`DeviceTokenError`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceTokenRequest {
    /// From [`DeviceStartResponse`].
    pub device_code: String,
}

/// A poll's refusal in RFC 8628 §3.5 form; `error` is one of
/// [`device_error`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceTokenError {
    /// The RFC's error code.
    pub error: String,
    /// A sentence for people.
    pub error_description: String,
    /// With `slow_down`: the seconds to wait from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

/// The RFC 8628 §3.5 error codes of [`DeviceTokenError::error`].
pub mod device_error {
    /// Not approved yet: poll again after the interval.
    pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
    /// Polled too soon: the interval grows by five seconds.
    pub const SLOW_DOWN: &str = "slow_down";
    /// The person denied the sign-in, or the gateway refused it.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// The codes expired (or were never issued, or were used).
    pub const EXPIRED_TOKEN: &str = "expired_token";
}

/// The fingerprint of a public key that both the machine and the person
/// approving it see: SHA-256 of its DER SubjectPublicKeyInfo, the first 16
/// bytes as eight groups of four hex digits.
pub fn key_fingerprint(spki_der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(spki_der);
    digest[..16]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stable [`ApiError::kind`] values a client acts on.
pub mod error_kind {
    /// The user has a one-time code (TOTP) and sent none: ask for it. Only
    /// older gateways send it: it told a guesser the password was right, so
    /// a wrong code or none is now [`ACCESS_DENIED`] like a wrong password.
    pub const TOTP_REQUIRED: &str = "totp_required";
    /// No connector of that name; the message lists the known ones.
    pub const UNKNOWN_CONNECTOR: &str = "unknown_connector";
    /// The gateway cannot reach the identity provider.
    pub const IDP_UNREACHABLE: &str = "idp_unreachable";
    /// The identity provider's claims map to no Postern role.
    pub const NO_ROLES: &str = "no_roles";
    /// The gateway's and the identity provider's clocks disagree.
    pub const CLOCK_SKEW: &str = "clock_skew";
    /// The user (or the identity provider) declined the sign-in.
    pub const CONSENT_DENIED: &str = "consent_denied";
    /// The login took too long, or its one-time code was already used.
    pub const LOGIN_EXPIRED: &str = "login_expired";
    /// Wrong credentials or a refused login.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// The session certificate has expired: log in again.
    pub const SESSION_EXPIRED: &str = "session_expired";
    /// An administrator locked the user; the message says why.
    pub const LOCKED: &str = "locked";
    /// Too many failed logins, or the gateway is busy checking others: wait
    /// for the `Retry-After` the answer carries.
    pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";
}

/// A signed session certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Client certificate (PEM) for the key of the signing request.
    pub cert_pem: String,
    /// The identity encoded in the certificate.
    pub identity: Identity,
}

/// An error from the API: a stable kind and a sentence for people.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable kind, e.g. `access_denied`, `bad_request`.
    pub kind: String,
    /// User-facing explanation.
    pub message: String,
}

/// `GET /v1/databases`: what the caller may reach.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Databases with at least one allowed db user.
    pub databases: Vec<CatalogEntry>,
}

/// One database and what the caller may do on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Name in the gateway catalog.
    pub name: String,
    /// Free text from the configuration.
    pub description: String,
    /// Wire protocol (`postgres`).
    pub protocol: String,
    /// Kind of database (`self-hosted`, `rds-postgres`, `redshift-serverless`).
    pub kind: String,
    /// Labels used by role `db_labels` matchers.
    pub labels: BTreeMap<String, String>,
    /// Database users the caller may log in as.
    pub db_users: AllowedValues,
    /// Database names the caller may open.
    pub db_names: AllowedValues,
    /// Database roles the caller may be granted (auto-provisioning).
    pub db_roles: Vec<String>,
    /// Auto-provisioning mode: `off`, `keep` or `best_effort_drop`.
    pub auto_user_mode: String,
    /// Statement limits the gateway enforces on the caller's sessions here,
    /// and the settings those sessions start with.
    #[serde(default)]
    pub limits: SessionLimits,
}

/// The limits of the caller's roles on one database, strictest combined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// A statement running longer is cancelled by the gateway (e.g. `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_statement_duration: Option<String>,
    /// A session idle inside a transaction this long is ended (e.g. `15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_in_transaction: Option<String>,
    /// PostgreSQL settings sessions start with; only defaults, which the
    /// user may change with `SET`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub db_session_defaults: BTreeMap<String, String>,
}

impl SessionLimits {
    /// One line for people, e.g. `statements up to 10m; idle in
    /// transaction up to 15m; defaults (SET may change them)
    /// statement_timeout=5min`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = &self.max_statement_duration {
            parts.push(format!("statements up to {limit}"));
        }
        if let Some(limit) = &self.max_idle_in_transaction {
            parts.push(format!("idle in transaction up to {limit}"));
        }
        if !self.db_session_defaults.is_empty() {
            let settings: Vec<String> = self
                .db_session_defaults
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            parts.push(format!(
                "defaults (SET may change them) {}",
                settings.join(", ")
            ));
        }
        if parts.is_empty() {
            return "none".into();
        }
        parts.join("; ")
    }
}

/// A set of allowed values, spelling out a wildcard and its exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedValues {
    /// Values allowed by name (sorted, unique).
    pub allowed: Vec<String>,
    /// True when any value is allowed (`*`), except those in `denied`.
    pub wildcard: bool,
    /// Values denied by name (only meaningful alongside `wildcard`).
    pub denied: Vec<String>,
}

impl AllowedValues {
    /// The single value to use when the caller named none: the only allowed
    /// value, when there is exactly one and no wildcard.
    pub fn only_value(&self) -> Option<&str> {
        match (self.wildcard, self.allowed.as_slice()) {
            (false, [one]) => Some(one),
            _ => None,
        }
    }

    /// Human-readable summary, e.g. `[*] except [postgres]` or `[a, b]`.
    pub fn describe(&self) -> String {
        let mut out = String::from("[");
        let mut items: Vec<&str> = Vec::new();
        if self.wildcard {
            items.push("*");
        }
        items.extend(self.allowed.iter().map(String::as_str));
        out.push_str(&items.join(", "));
        out.push(']');
        if self.wildcard && !self.denied.is_empty() {
            out.push_str(&format!(" except [{}]", self.denied.join(", ")));
        }
        out
    }
}

/// `GET /v1/ping`: gateway version, reachable without a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ping {
    /// Gateway version string.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_is_pkce_s256() {
        // RFC 7636, appendix B.
        assert_eq!(
            sso_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_key_fingerprint_is_eight_groups_of_the_sha256() {
        // SHA-256("abc") starts ba7816bf 8f01cfea 414140de 5dae2223.
        assert_eq!(
            key_fingerprint(b"abc"),
            "ba78 16bf 8f01 cfea 4141 40de 5dae 2223"
        );
    }

    #[test]
    fn describe_spells_out_wildcard_exceptions() {
        let v = AllowedValues {
            allowed: vec!["reader".into()],
            wildcard: true,
            denied: vec!["postgres".into()],
        };
        assert_eq!(v.describe(), "[*, reader] except [postgres]");
        assert_eq!(v.only_value(), None);
        let one = AllowedValues {
            allowed: vec!["reader".into()],
            ..Default::default()
        };
        assert_eq!(one.only_value(), Some("reader"));
    }
}
