//! Postern gateway: login, session certificates, RBAC, the database catalog
//! and the tunnel endpoint, all behind one TLS port.

pub mod api;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod budget;
pub mod ca;
pub mod catalog;
pub mod cmd;
pub mod config;
pub mod drain;
pub mod names;
pub mod policy;
pub mod provisioning;
pub mod rbac;
pub mod revocation;
pub mod server;
pub mod store;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod workers;
