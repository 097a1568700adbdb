//! The route frame: the first thing a client sends on a tunnel connection.
//!
//! Layout: a 4-byte big-endian length `n` (of the JSON body only), then `n`
//! bytes of JSON. The gateway bounds `n` by [`ROUTE_FRAME_MAX`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest route frame body the gateway accepts.
pub const ROUTE_FRAME_MAX: usize = 64 * 1024;

/// What a tunnel connection asks the gateway to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteFrame {
    /// Open a database session; the client's StartupMessage follows in spirit
    /// (its parameters are carried here) and the gateway answers with the
    /// PostgreSQL messages that complete the startup.
    Session {
        /// Database name in the gateway catalog.
        database: String,
        /// Database user to log in as; `None` means "the tunnel's default".
        db_user: Option<String>,
        /// Database name inside the server; `None` means the db user's name.
        db_name: Option<String>,
        /// Database roles requested for auto-provisioned users (empty: all allowed).
        #[serde(default)]
        db_roles: Vec<String>,
        /// Other StartupMessage parameters (application_name, options...).
        #[serde(default)]
        params: BTreeMap<String, String>,
    },
    /// Forward a CancelRequest for a key the gateway handed out earlier.
    Cancel {
        /// Process id from the gateway's BackendKeyData.
        pid: i32,
        /// Secret key from the gateway's BackendKeyData.
        secret: i32,
    },
}

/// Why a route frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RouteFrameError {
    /// The announced length exceeds [`ROUTE_FRAME_MAX`].
    #[error("route frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// The body is not a valid route frame.
    #[error("malformed route frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl RouteFrame {
    /// Encodes the frame with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("route frame serializes");
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Checks a length prefix before the body is read.
    pub fn check_len(prefix: [u8; 4]) -> Result<usize, RouteFrameError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len > ROUTE_FRAME_MAX {
            return Err(RouteFrameError::TooLarge(len));
        }
        Ok(len)
    }

    /// Decodes a body whose length was accepted by [`RouteFrame::check_len`].
    pub fn decode(body: &[u8]) -> Result<Self, RouteFrameError> {
        Ok(serde_json::from_slice(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode() {
        let frame = RouteFrame::Session {
            database: "pg".into(),
            db_user: Some("alice".into()),
            db_name: None,
            db_roles: vec!["reader".into()],
            params: BTreeMap::from([("application_name".into(), "psql".into())]),
        };
        let bytes = frame.encode();
        let len = RouteFrame::check_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(RouteFrame::decode(&bytes[4..]).unwrap(), frame);
    }

    #[test]
    fn oversize_length_is_refused_before_reading() {
        let err = RouteFrame::check_len(u32::MAX.to_be_bytes()).unwrap_err();
        assert!(matches!(err, RouteFrameError::TooLarge(_)));
    }

    #[test]
    fn garbage_body_is_malformed() {
        assert!(matches!(
            RouteFrame::decode(b"\x00\x01garbage"),
            Err(RouteFrameError::Malformed(_))
        ));
    }
}
