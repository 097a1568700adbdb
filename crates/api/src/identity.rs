//! The identity a session certificate carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Object identifier of the X.509 extension that holds the JSON-encoded
/// [`Identity`] (a private arc; the gateway is the only issuer and reader).
pub const IDENTITY_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59812, 1, 1];

/// Who a session belongs to: username, Postern roles and traits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Postern username (also the database user name when auto-provisioning).
    pub username: String,
    /// Postern role names granted to the session.
    pub roles: Vec<String>,
    /// Traits used by role templates: `internal.*` from the user record,
    /// `external.*` from the identity provider's claims.
    #[serde(default)]
    pub traits: Traits,
    /// Expiry as seconds since the Unix epoch.
    pub expires_unix: i64,
}

/// Trait values by name (`db_users`, `db_names`, `db_roles`, claim names...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traits {
    /// Traits set on the Postern user by an administrator.
    #[serde(default)]
    pub internal: BTreeMap<String, Vec<String>>,
    /// Claims from the identity provider.
    #[serde(default)]
    pub external: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// Encodes the identity for the certificate extension.
    pub fn to_extension_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("identity serializes")
    }

    /// Decodes the identity from the certificate extension.
    pub fn from_extension_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_round_trip_keeps_traits() {
        let mut traits = Traits::default();
        traits
            .internal
            .insert("db_names".into(), vec!["analytics".into()]);
        traits
            .external
            .insert("groups".into(), vec!["dba".into(), "dev".into()]);
        let id = Identity {
            username: "alice".into(),
            roles: vec!["analysts".into()],
            traits,
            expires_unix: 1_900_000_000,
        };
        let back = Identity::from_extension_bytes(&id.to_extension_bytes()).unwrap();
        assert_eq!(back, id);
    }
}
