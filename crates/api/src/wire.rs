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
