//! What can go wrong reaching and logging in to a database, and the
//! sentence the database client sees.

use postern_pgwire::ErrorFields;

/// A failure to reach or log in to a database.
/// [`UpstreamError::client_fields`] is the only text that reaches the
/// database client; `Display` (with internals) goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
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
    /// The database accepted no connection or login in time.
    #[error("database {database:?} at {addr} did not answer in time")]
    Timeout {
        /// Catalog name.
        database: String,
        /// Address tried (log only).
        addr: String,
    },
    /// Getting AWS credentials for the login failed.
    #[error("database {database:?}: {error}")]
    Aws {
        /// Catalog name.
        database: String,
        /// What AWS said.
        error: crate::aws::AwsError,
    },
    /// Redshift refused an IAM role's user that lacks privileges inside it.
    #[error("{iam_user:?} may not use database {db_name:?}: {message}")]
    RedshiftNoPrivileges {
        /// `IAMR:<role>`.
        iam_user: String,
        /// Database name inside the workgroup.
        db_name: String,
        /// The database's message (log only).
        message: String,
    },
    /// RDS refused an IAM authentication token.
    #[error("RDS database {database:?} refused the IAM token of {db_user:?}")]
    RdsIamRefused {
        /// Catalog name.
        database: String,
        /// The database user.
        db_user: String,
        /// `aws.rds.instance_id`, if configured.
        instance: Option<String>,
    },
    /// The database does not speak TLS; there is no plaintext fallback.
    #[error("database {0:?} does not accept TLS")]
    NoTls(String),
    /// The TLS handshake with the database failed.
    #[error("TLS handshake with database {database:?} failed: {source}")]
    Tls {
        /// Catalog name.
        database: String,
        /// The TLS error (log only).
        source: std::io::Error,
    },
    /// The database refused the login or sent an error during startup.
    #[error("database refused login: {}: {}", .0.code, .0.message)]
    Refused(ErrorFields),
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
    /// A database whose certificate is not verified asked for a cleartext
    /// or MD5 password.
    #[error(
        "database {database:?} (tls.mode: insecure) asked {db_user:?} for a cleartext or MD5 password"
    )]
    PasswordToUnverifiedServer {
        /// Catalog name.
        database: String,
        /// Database user.
        db_user: String,
    },
    /// The database broke the protocol.
    #[error("protocol error from database: {0}")]
    Protocol(String),
    /// The gateway could not prepare a login (a certificate, an endpoint);
    /// details in the log only.
    #[error("internal: {0}")]
    Internal(String),
    /// An I/O error on a connection to the database.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl UpstreamError {
    /// The PostgreSQL error the client sees: a clear sentence and SQLSTATE.
    pub fn client_fields(&self) -> ErrorFields {
        use UpstreamError::*;
        match self {
            Unreachable { database, .. } => ErrorFields::fatal(
                "08001",
                format!("postern: the gateway cannot reach database {database:?}"),
            )
            .with_hint("the database may be down, or a firewall/security group blocks the gateway"),
            Timeout { database, .. } => ErrorFields::fatal(
                "08001",
                format!("postern: the gateway got no answer from database {database:?} in time"),
            )
            .with_hint(
                "the database's security group (or firewall) must allow inbound traffic from the gateway, \
                 and the networks between them must route to each other; test from the gateway host with `nc -zv HOST PORT`",
            ),
            Aws { database, error } => error.client_fields(database),
            RedshiftNoPrivileges { iam_user, db_name, .. } => {
                let user = quote(iam_user);
                ErrorFields::fatal(
                    "42501",
                    format!(
                        "postern: database user {iam_user:?} has no privileges in database {db_name:?} of the Redshift Serverless workgroup"
                    ),
                )
                .with_hint(format!(
                    "log in as an administrator and run: CREATE USER {user} WITH PASSWORD DISABLE; \
                     GRANT ... TO {user}; (for example GRANT CONNECT ON DATABASE {} TO {user}; GRANT SELECT ON TABLE users TO {user};)",
                    quote(db_name)
                ))
            }
            RdsIamRefused { database, db_user, instance } => ErrorFields::fatal(
                "28P01",
                format!(
                    "postern: RDS database {database:?} refused the gateway's IAM authentication token for database user {db_user:?}"
                ),
            )
            .with_hint(format!(
                "an administrator must enable IAM database authentication on {}, run GRANT rds_iam TO {}, \
                 and allow the gateway's identity rds-db:connect on arn:aws:rds-db:REGION:ACCOUNT:dbuser:DB-RESOURCE-ID/{db_user}",
                instance.as_deref().map_or("the instance".to_owned(), |i| format!("instance {i:?}")),
                quote(db_user)
            )),
            NoTls(database) => ErrorFields::fatal(
                "08001",
                format!(
                    "postern: database {database:?} does not accept TLS and postern never connects in plaintext"
                ),
            ),
            Tls { database, .. } => ErrorFields::fatal(
                "08001",
                format!("postern: the TLS certificate of database {database:?} could not be verified"),
            )
            .with_hint("check the database's `tls.ca_cert_file` and `tls.server_name` in the gateway configuration"),
            Refused(fields) => {
                let mut f = fields.clone();
                f.message = format!("postern: the database refused the login: {}", fields.message);
                f
            }
            NoCredentials { database, db_user, .. } => ErrorFields::fatal(
                "28000",
                format!("postern: the gateway holds no credentials for db user {db_user:?} on database {database:?}"),
            )
            .with_hint("an administrator must configure a password or certificate login for this db user"),
            PasswordToUnverifiedServer { database, db_user } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: database {database:?} asked for a cleartext or MD5 password for {db_user:?}, which the gateway never sends to a server whose certificate it does not verify"
                ),
            )
            .with_hint("an administrator must use SCRAM-SHA-256 for this db user, or set tls.mode: verify-full (or verify-ca) for the database"),
            Protocol(_) => ErrorFields::fatal(
                "08P01",
                "postern: the database sent an unexpected reply during login",
            ),
            Internal(_) => ErrorFields::fatal("XX000", "postern: internal gateway error; see the gateway log"),
            Io(_) => ErrorFields::fatal("08006", "postern: the connection failed"),
        }
    }
}

/// An identifier as the administrator would type it in SQL: bare when it
/// is a plain lower-case name, double-quoted otherwise. Hints use it.
pub(crate) fn quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
