//! What can go wrong provisioning a database user, and the sentence the
//! database client sees.

use postern_pgwire::ErrorFields;

use crate::upstream::UpstreamError;
use crate::upstream::error::quote;

/// A provisioning failure. [`ProvisioningError::client_fields`] is the only
/// text that reaches the database client; `Display` goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
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
    Busy(String),
    /// Provisioning failed for another reason (details in the log only).
    #[error("provisioning failed: {0}")]
    Failed(String),
    /// A requested db role is not among the allowed ones.
    #[error("access denied: {0}")]
    Denied(crate::rbac::Denied),
    /// A step took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The provisioning lock could not be used (details in the log only).
    #[error("internal: {0}")]
    Internal(String),
    /// The admin user could not reach or log in to the database.
    #[error(transparent)]
    Upstream(Box<UpstreamError>),
}

impl ProvisioningError {
    /// The PostgreSQL error the client sees: a clear sentence and SQLSTATE.
    pub fn client_fields(&self) -> ErrorFields {
        use ProvisioningError::*;
        match self {
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
            Busy(user) => ErrorFields::fatal(
                "55P03",
                format!("postern: database user {user:?} is being provisioned by another connection; try again"),
            ),
            Failed(_) => ErrorFields::fatal(
                "XX000",
                "postern: the database user could not be provisioned; see the gateway log",
            ),
            Denied(why) => ErrorFields::fatal("28000", format!("postern: {why}"))
                .with_hint("run `postern db ls -v` to see what your roles allow"),
            Timeout(step) => ErrorFields::fatal("08006", format!("postern: timed out while {step}")),
            Internal(_) => ErrorFields::fatal("XX000", "postern: internal gateway error; see the gateway log"),
            Upstream(e) => e.client_fields(),
        }
    }
}

impl From<UpstreamError> for ProvisioningError {
    fn from(error: UpstreamError) -> Self {
        // Boxed: the upstream's errors are large and this one is returned often.
        ProvisioningError::Upstream(Box::new(error))
    }
}
