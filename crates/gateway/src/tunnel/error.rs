//! What can go wrong on a tunnel, and the sentence the database client sees.

use postern_pgwire::ErrorFields;

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
    /// The catalog has no such database (or the caller may not see it).
    #[error("unknown database {0:?}")]
    UnknownDatabase(String),
    /// RBAC refused the request.
    #[error("access denied: {0}")]
    Denied(String),
    /// The caller's roles no longer exist on the gateway.
    #[error("identity rejected: {0}")]
    BadIdentity(String),
    /// The database could not be reached in time or refused TCP.
    #[error("cannot reach database {database:?} at {addr}: {source}")]
    Unreachable {
        /// Catalog name.
        database: String,
        /// Address tried (log only).
        addr: String,
        /// The I/O error (log only).
        source: std::io::Error,
    },
    /// The database does not speak TLS; there is no plaintext fallback.
    #[error("database {0:?} does not accept TLS")]
    NoTls(String),
    /// The TLS handshake with the database failed.
    #[error("TLS handshake with database {database:?} failed: {source}")]
    UpstreamTls {
        /// Catalog name.
        database: String,
        /// The TLS error (log only).
        source: std::io::Error,
    },
    /// The database refused the login or sent an error during startup.
    #[error("database refused login: {}: {}", .0.code, .0.message)]
    UpstreamRefused(ErrorFields),
    /// The database asked for a password the gateway does not hold, or an
    /// authentication method it does not support.
    #[error("cannot authenticate to database {database:?} as {db_user:?}: {why}")]
    NoCredentials {
        /// Catalog name.
        database: String,
        /// Database user.
        db_user: String,
        /// What is missing.
        why: String,
    },
    /// The database broke the protocol.
    #[error("protocol error from database: {0}")]
    UpstreamProtocol(String),
    /// The gateway could not issue a certificate for the database login.
    #[error("internal: {0}")]
    Internal(String),
    /// A step took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// An I/O error on an established connection.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
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
            UnknownDatabase(name) => ErrorFields::fatal(
                "3D000",
                format!("postern: database {name:?} is not in the catalog or not available to you"),
            )
            .with_hint("run `postern db ls` to see the databases you may use"),
            Denied(why) => ErrorFields::fatal("28000", format!("postern: {why}"))
                .with_hint("run `postern db ls -v` to see what your roles allow"),
            BadIdentity(why) => ErrorFields::fatal("28000", format!("postern: {why}"))
                .with_hint("run `postern login` to get a new session"),
            Unreachable { database, .. } => ErrorFields::fatal(
                "08001",
                format!("postern: the gateway cannot reach database {database:?}"),
            )
            .with_hint("the database may be down, or a firewall/security group blocks the gateway"),
            NoTls(database) => ErrorFields::fatal(
                "08001",
                format!(
                    "postern: database {database:?} does not accept TLS and postern never connects in plaintext"
                ),
            ),
            UpstreamTls { database, .. } => ErrorFields::fatal(
                "08001",
                format!("postern: the TLS certificate of database {database:?} could not be verified"),
            )
            .with_hint("check the database's `tls.ca_cert_file` and `tls.server_name` in the gateway configuration"),
            UpstreamRefused(fields) => {
                let mut f = fields.clone();
                f.message = format!("postern: the database refused the login: {}", fields.message);
                f
            }
            NoCredentials { database, db_user, .. } => ErrorFields::fatal(
                "28000",
                format!("postern: the gateway holds no credentials for db user {db_user:?} on database {database:?}"),
            )
            .with_hint("an administrator must configure a password or certificate login for this db user"),
            UpstreamProtocol(_) => ErrorFields::fatal(
                "08P01",
                "postern: the database sent an unexpected reply during login",
            ),
            Internal(_) => ErrorFields::fatal("XX000", "postern: internal gateway error; see the gateway log"),
            Timeout(step) => ErrorFields::fatal("08006", format!("postern: timed out while {step}")),
            Io(_) => ErrorFields::fatal("08006", "postern: the connection failed"),
        }
    }
}
