//! Everything the Postern CLI and desktop app share: the home directory,
//! profiles and the key store, login, the gateway API client, and local tunnels.

pub mod api;
pub mod connect;
pub mod device;
pub mod error;
pub mod home;
pub mod keystore;
pub mod launch;
pub mod login;
pub mod manager;
pub mod owner;
pub mod ports;
pub mod profile;
pub mod queries;
pub mod session;
pub mod sso;
pub mod tls;
pub mod tunnel;

pub use error::ClientError;
