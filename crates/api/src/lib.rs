//! Types shared by the Postern client and gateway.
//!
//! Everything that crosses the wire between `postern-client` and
//! `postern-gateway` lives here: the HTTPS API's requests and responses, the
//! identity carried inside session certificates, and the route frame that
//! opens a database tunnel.

pub mod html;
pub mod identity;
pub mod route;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wire;

pub use identity::{IDENTITY_EXTENSION_OID, Identity};
pub use route::{ROUTE_FRAME_MAX, RouteFrame, RouteFrameError};

/// ALPN protocol id that marks a connection to the gateway as a database tunnel.
pub const ALPN_TUNNEL: &[u8] = b"postern-pg";
/// ALPN protocol ids of the gateway's HTTPS API.
pub const ALPN_HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];
