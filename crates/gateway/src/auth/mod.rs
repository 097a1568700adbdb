//! Login methods. Each ends in an [`Identity`](postern_api::Identity) that the
//! user CA signs into a session certificate.

pub mod device;
pub mod limits;
pub mod local;
pub mod oidc;
pub mod sso;
pub mod totp;
