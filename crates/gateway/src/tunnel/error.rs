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
    UpstreamTimeout {
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
    UpstreamProtocol(String),
    /// The gateway could not issue a certificate for the database login.
    #[error("internal: {0}")]
    Internal(String),
    /// A step took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The roles ask for automatic provisioning, but the database has no
    /// `admin_user`.
    #[error("database {0:?} has no admin_user for automatic provisioning")]
    NoAdminUser(String),
    /// The selecting roles give both `db_roles` and `db_permissions`.
    #[error("database {database:?}: db_roles {roles:?} and db_permissions both apply")]
    RolesAndPermissions {
        /// Catalog name.
        database: String,
        /// The db roles that would be granted.
        roles: Vec<String>,
    },
    /// A `db_permissions` entry cannot be applied as written.
    #[error("invalid db_permissions: {0}")]
    BadDbPermission(String),
    /// A database user of that name exists and Postern does not manage it.
    #[error("database user {user:?} exists and is not a member of {group:?}")]
    UnmanagedDbUser {
        /// The database user.
        user: String,
        /// The managed group role.
        group: String,
    },
    /// Live sessions of the user hold other roles than the ones requested.
    #[error("db user {user:?} has live sessions with roles {current:?}; {requested:?} requested")]
    DbRolesInUse {
        /// The database user.
        user: String,
        /// Roles the live sessions hold.
        current: Vec<String>,
        /// Roles requested now.
        requested: Vec<String>,
    },
    /// Live sessions of the user hold other table privileges.
    #[error("db user {user:?} has live sessions with other table privileges in {db_name:?}")]
    DbPermissionsInUse {
        /// The database user.
        user: String,
        /// Database name inside the server.
        db_name: String,
    },
    /// A requested db role does not exist in the database.
    #[error("db role {0:?} does not exist")]
    UnknownDbRole(String),
    /// The admin user may not connect to the database.
    #[error("admin user {admin:?} has no CONNECT on database {db_name:?}")]
    AdminNoConnect {
        /// The admin user.
        admin: String,
        /// Database name inside the server.
        db_name: String,
    },
    /// The admin user lacks USAGE on a schema (or no schema is usable).
    #[error("admin user {admin:?} has no USAGE on schema {schema:?}")]
    AdminNoSchemaUsage {
        /// The admin user.
        admin: String,
        /// The schema.
        schema: String,
        /// Database name inside the server.
        db_name: String,
    },
    /// Provisioning needs a writable primary; this is a reader or standby.
    #[error("database {0:?} is read-only for provisioning")]
    ReadOnlyEndpoint(String),
    /// The admin user may not create or alter roles.
    #[error("admin user {0:?} lacks CREATEROLE")]
    AdminNoCreateRole(String),
    /// The admin user may not grant or revoke a role.
    #[error("admin user {admin:?} has no ADMIN OPTION on role {role:?}")]
    AdminNoAdminOption {
        /// The admin user.
        admin: String,
        /// The role it must administer.
        role: String,
    },
    /// The admin user may not grant `rds_iam` (RDS IAM logins).
    #[error("admin user {0:?} cannot grant rds_iam")]
    AdminNoRdsIam(String),
    /// The admin user may not grant a table privilege.
    #[error("admin user {admin:?} cannot grant {privilege} on {table}")]
    AdminNoGrantOption {
        /// The admin user.
        admin: String,
        /// The privilege, e.g. `SELECT`.
        privilege: String,
        /// `schema.table`.
        table: String,
    },
    /// The admin user could not log in.
    #[error("admin user {admin:?} could not log in: {message}")]
    AdminLoginFailed {
        /// The admin user.
        admin: String,
        /// The server's message.
        message: String,
    },
    /// A provisioned user may not connect to the database.
    #[error("provisioned user {user:?} has no CONNECT on database {db_name:?}")]
    UserNoConnect {
        /// The provisioned user.
        user: String,
        /// Database name inside the server.
        db_name: String,
        /// Roles it was granted (candidates for the CONNECT grant).
        roles: Vec<String>,
    },
    /// Another provisioning of the same user did not finish in time.
    #[error("provisioning of db user {0:?} is busy")]
    ProvisioningBusy(String),
    /// Provisioning failed for another reason (details in the log only).
    #[error("provisioning failed: {0}")]
    ProvisioningFailed(String),
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
            Revoked(why) => ErrorFields::fatal("28000", format!("postern: {why}")).with_hint(match why {
                crate::revocation::Revoked::Expired => "run `postern login`",
                crate::revocation::Revoked::Locked { .. } => "ask an administrator (`postern-gateway locks ls`)",
                crate::revocation::Revoked::Unknown => "the gateway log has the details",
            }),
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
            Unreachable { database, .. } => ErrorFields::fatal(
                "08001",
                format!("postern: the gateway cannot reach database {database:?}"),
            )
            .with_hint("the database may be down, or a firewall/security group blocks the gateway"),
            UpstreamTimeout { database, .. } => ErrorFields::fatal(
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
            PasswordToUnverifiedServer { database, db_user } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: database {database:?} asked for a cleartext or MD5 password for {db_user:?}, which the gateway never sends to a server whose certificate it does not verify"
                ),
            )
            .with_hint("an administrator must use SCRAM-SHA-256 for this db user, or set tls.mode: verify-full (or verify-ca) for the database"),
            UpstreamProtocol(_) => ErrorFields::fatal(
                "08P01",
                "postern: the database sent an unexpected reply during login",
            ),
            Internal(_) => ErrorFields::fatal("XX000", "postern: internal gateway error; see the gateway log"),
            Timeout(step) => ErrorFields::fatal("08006", format!("postern: timed out while {step}")),
            NoAdminUser(database) => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: your roles create database users automatically, but database {database:?} is not set up for it (no admin_user)"
                ),
            )
            .with_hint("an administrator must set admin_user on this database in gateway.yaml, or set create_db_user_mode: off"),
            RolesAndPermissions { database, roles } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: your roles give both db_roles [{}] and db_permissions for database {database:?}; a connection gets one or the other",
                    roles.join(", ")
                ),
            )
            .with_hint("an administrator must move db_roles and db_permissions into roles that select different databases"),
            BadDbPermission(why) => ErrorFields::fatal(
                "28000",
                format!("postern: a db_permissions rule of your roles cannot be applied: {why}"),
            ),
            UnmanagedDbUser { user, group } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: database user {user:?} already exists and is not managed by Postern (not a member of {group:?}); it is left untouched"
                ),
            )
            .with_hint(format!(
                "an administrator must rename or drop that database user, or add it to the group: GRANT {} TO {}",
                quote(group),
                quote(user)
            )),
            DbRolesInUse { current, requested, .. } => ErrorFields::fatal(
                "55006",
                format!(
                    "postern: you already have sessions with roles [{}]; close them to switch to [{}]",
                    current.join(", "),
                    requested.join(", ")
                ),
            )
            .with_hint("or connect again with the same --db-roles"),
            DbPermissionsInUse { db_name, .. } => ErrorFields::fatal(
                "55006",
                format!(
                    "postern: you already have sessions with other table privileges in database {db_name:?}; close them to switch"
                ),
            ),
            UnknownDbRole(role) => ErrorFields::fatal(
                "42704",
                format!("postern: database role {role:?} does not exist in the database"),
            )
            .with_hint("an administrator must create the role, or remove it from db_roles of your Postern roles"),
            AdminNoConnect { admin, db_name } => ErrorFields::fatal(
                "42501",
                format!(
                    "postern: the provisioning admin {admin:?} may not connect to database {db_name:?}"
                ),
            )
            .with_hint(format!(
                "an administrator must run: GRANT CONNECT ON DATABASE {} TO {}",
                quote(db_name),
                quote(admin)
            )),
            AdminNoSchemaUsage { admin, schema, db_name } => ErrorFields::fatal(
                "42501",
                format!(
                    "postern: the provisioning admin {admin:?} has no USAGE on schema {schema:?} in database {db_name:?}"
                ),
            )
            .with_hint(format!(
                "an administrator must run in database {}: GRANT USAGE ON SCHEMA {} TO {}",
                quote(db_name),
                quote(schema),
                quote(admin)
            )),
            ReadOnlyEndpoint(database) => ErrorFields::fatal(
                "25006",
                format!(
                    "postern: database {database:?} is read-only, so users cannot be provisioned there (a reader endpoint or standby?)"
                ),
            )
            .with_hint("automatic provisioning needs the writer (primary) endpoint: point the database's uri at it"),
            AdminNoCreateRole(admin) => ErrorFields::fatal(
                "42501",
                format!("postern: the provisioning admin {admin:?} may not create or alter roles"),
            )
            .with_hint(format!("an administrator must run: ALTER ROLE {} CREATEROLE", quote(admin))),
            AdminNoAdminOption { admin, role } => ErrorFields::fatal(
                "42501",
                format!("postern: the provisioning admin {admin:?} may not grant role {role:?}"),
            )
            .with_hint(format!(
                "an administrator must run: GRANT {} TO {} WITH ADMIN OPTION",
                quote(role),
                quote(admin)
            )),
            AdminNoRdsIam(admin) => ErrorFields::fatal(
                "42501",
                format!(
                    "postern: the provisioning admin {admin:?} may not grant role \"rds_iam\" to other users"
                ),
            )
            .with_hint(format!(
                "an administrator must run: GRANT rds_iam TO {} WITH ADMIN OPTION",
                quote(admin)
            )),
            AdminNoGrantOption { admin, privilege, table } => ErrorFields::fatal(
                "42501",
                format!("postern: the provisioning admin {admin:?} may not grant {privilege} on {table}"),
            )
            .with_hint(format!(
                "an administrator must run: GRANT {privilege} ON {table} TO {} WITH GRANT OPTION",
                quote(admin)
            )),
            AdminLoginFailed { admin, message } => ErrorFields::fatal(
                "28000",
                format!("postern: the gateway could not log in as the provisioning admin {admin:?}: {message}"),
            )
            .with_hint("the admin logs in like any user: a certificate from the gateway's database CA, or a password in the database's passwords"),
            UserNoConnect { user, db_name, roles } => {
                let to = if roles.is_empty() {
                    quote(user)
                } else {
                    roles.iter().map(|r| quote(r)).collect::<Vec<_>>().join(", ")
                };
                ErrorFields::fatal(
                    "42501",
                    format!("postern: database user {user:?} may not connect to database {db_name:?}"),
                )
                .with_hint(format!(
                    "an administrator must run: GRANT CONNECT ON DATABASE {} TO {to}",
                    quote(db_name)
                ))
            }
            ProvisioningBusy(user) => ErrorFields::fatal(
                "55P03",
                format!("postern: database user {user:?} is being provisioned by another connection; try again"),
            ),
            ProvisioningFailed(_) => ErrorFields::fatal(
                "XX000",
                "postern: the database user could not be provisioned; see the gateway log",
            ),
            Io(_) => ErrorFields::fatal("08006", "postern: the connection failed"),
        }
    }
}

/// An identifier as the administrator would type it in SQL: bare when it
/// is a plain lower-case name, double-quoted otherwise.
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
