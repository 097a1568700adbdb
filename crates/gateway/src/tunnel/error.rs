//! What can go wrong on a tunnel, and the sentence the database client sees.

use postern_pgwire::ErrorFields;

use crate::provisioning::ProvisioningError;
use crate::upstream::UpstreamError;

/// A tunnel failure. [`TunnelError::client_fields`] is the only text that
/// reaches the database client; `Display` (with internals) goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The connection carried no session certificate.
    #[error("no session certificate")]
    NoIdentity,
    /// The route frame was missing, oversized or malformed.
    #[error("bad route frame: {0}")]
    BadRoute(String),
    /// The session certificate expired, or its user is locked.
    #[error("identity revoked: {0}")]
    Revoked(crate::revocation::Revoked),
    /// A session route frame carried a value no honest client sends.
    #[error("refused route frame: {0}")]
    RefusedRoute(#[from] super::route::RouteRefusal),
    /// The catalog has no such database (or the caller may not see it).
    #[error("unknown database {0:?}")]
    UnknownDatabase(String),
    /// RBAC refused the request.
    #[error("access denied: {0}")]
    Denied(String),
    /// The caller's roles no longer exist on the gateway.
    #[error("identity rejected: {0}")]
    BadIdentity(String),
    /// A step took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// An I/O error on the client's connection.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Reaching or logging in to the database failed.
    #[error(transparent)]
    Upstream(Box<UpstreamError>),
    /// Provisioning the session's database user failed.
    #[error(transparent)]
    Provisioning(#[from] ProvisioningError),
}

impl TunnelError {
    /// The PostgreSQL error the client sees: a clear sentence and SQLSTATE.
    pub fn client_fields(&self) -> ErrorFields {
        use TunnelError::*;
        match self {
            NoIdentity => ErrorFields::fatal(
                "28000",
                "postern: no session certificate was presented; run `postern login`",
            ),
            BadRoute(_) => ErrorFields::fatal(
                "08P01",
                "postern: the tunnel sent an invalid request; update the postern client",
            ),
            Revoked(why) => {
                ErrorFields::fatal("28000", format!("postern: {why}")).with_hint(match why {
                    crate::revocation::Revoked::Expired => "run `postern login`",
                    crate::revocation::Revoked::Locked { .. } => {
                        "ask an administrator (`postern-gateway locks ls`)"
                    }
                    crate::revocation::Revoked::Unknown => "the gateway log has the details",
                })
            }
            RefusedRoute(why) => ErrorFields::fatal("08P01", format!("postern: {why}")),
            // The same answer whether the database does not exist or the
            // caller's roles hide it, so names cannot be probed.
            UnknownDatabase(name) => ErrorFields::fatal(
                "3D000",
                format!("postern: database {name:?} does not exist or your roles do not allow it"),
            )
            .with_hint("run `postern db ls` to see the databases you may use"),
            Denied(why) => ErrorFields::fatal("28000", format!("postern: {why}"))
                .with_hint("run `postern db ls -v` to see what your roles allow"),
            BadIdentity(why) => ErrorFields::fatal("28000", format!("postern: {why}"))
                .with_hint("run `postern login` to get a new session"),
            Timeout(step) => {
                ErrorFields::fatal("08006", format!("postern: timed out while {step}"))
            }
            Io(_) => ErrorFields::fatal("08006", "postern: the connection failed"),
            Upstream(e) => e.client_fields(),
            Provisioning(e) => e.client_fields(),
        }
    }
}

impl From<UpstreamError> for TunnelError {
    fn from(error: UpstreamError) -> Self {
        // Boxed: the upstream's errors are large and this one is returned often.
        TunnelError::Upstream(Box::new(error))
    }
}
