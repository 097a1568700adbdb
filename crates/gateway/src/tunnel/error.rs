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
    /// The gateway is draining and starts no new sessions.
    #[error("the gateway is draining")]
    Draining,
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
    /// The store (where the session's cancel key goes) failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
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
            Draining => crate::drain::restarting(),
            Timeout(step) => {
                ErrorFields::fatal("08006", format!("postern: timed out while {step}"))
            }
            Io(_) => ErrorFields::fatal("08006", "postern: the connection failed"),
            Upstream(e) => e.client_fields(),
            Provisioning(e) => e.client_fields(),
            Store(_) => ErrorFields::fatal(
                "08006",
                "postern: the gateway cannot reach its store; try again in a minute",
            )
            .with_hint("the gateway log has the details"),
        }
    }
}

impl From<UpstreamError> for TunnelError {
    fn from(error: UpstreamError) -> Self {
        // Boxed: the upstream's errors are large and this one is returned often.
        TunnelError::Upstream(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error as IoError, ErrorKind};

    use super::*;
    use crate::aws::AwsError;
    use crate::rbac::Denied;
    use crate::revocation::Revoked;
    use crate::tunnel::route::RouteRefusal;

    /// What only the log may see: every sample error carries it in its
    /// log-only fields, and no client text may repeat it.
    const INTERNAL: &str = "INTERNAL-7f3a";
    const ADDR: &str = "10.9.8.7:5432";

    fn io() -> IoError {
        IoError::new(ErrorKind::ConnectionReset, INTERNAL)
    }

    /// The variant's name. Exhaustive, so a new variant does not compile
    /// until it is named here, next to [`VARIANTS`], which the table must
    /// cover.
    fn variant(error: &TunnelError) -> String {
        use TunnelError::*;
        let name = match error {
            NoIdentity => "NoIdentity",
            BadRoute(_) => "BadRoute",
            Revoked(_) => "Revoked",
            RefusedRoute(_) => "RefusedRoute",
            UnknownDatabase(_) => "UnknownDatabase",
            Denied(_) => "Denied",
            BadIdentity(_) => "BadIdentity",
            Draining => "Draining",
            Timeout(_) => "Timeout",
            Io(_) => "Io",
            Store(_) => "Store",
            Upstream(e) => return format!("Upstream::{}", upstream_variant(e)),
            Provisioning(e) => return format!("Provisioning::{}", provisioning_variant(e)),
        };
        name.to_owned()
    }

    fn upstream_variant(error: &UpstreamError) -> &'static str {
        use UpstreamError::*;
        match error {
            Unreachable { .. } => "Unreachable",
            Timeout { .. } => "Timeout",
            Aws { .. } => "Aws",
            RedshiftNoPrivileges { .. } => "RedshiftNoPrivileges",
            RdsIamRefused { .. } => "RdsIamRefused",
            NoTls(_) => "NoTls",
            Tls { .. } => "Tls",
            Refused(_) => "Refused",
            NoCredentials { .. } => "NoCredentials",
            PasswordToUnverifiedServer { .. } => "PasswordToUnverifiedServer",
            Protocol(_) => "Protocol",
            Internal(_) => "Internal",
            Io(_) => "Io",
        }
    }

    fn provisioning_variant(error: &ProvisioningError) -> &'static str {
        use ProvisioningError::*;
        match error {
            NoAdminUser(_) => "NoAdminUser",
            RolesAndPermissions { .. } => "RolesAndPermissions",
            BadDbPermission(_) => "BadDbPermission",
            UnmanagedDbUser { .. } => "UnmanagedDbUser",
            DbRolesInUse { .. } => "DbRolesInUse",
            DbPermissionsInUse { .. } => "DbPermissionsInUse",
            UnknownDbRole(_) => "UnknownDbRole",
            AdminNoConnect { .. } => "AdminNoConnect",
            AdminNoSchemaUsage { .. } => "AdminNoSchemaUsage",
            ReadOnlyEndpoint(_) => "ReadOnlyEndpoint",
            AdminNoCreateRole(_) => "AdminNoCreateRole",
            AdminNoAdminOption { .. } => "AdminNoAdminOption",
            AdminNoRdsIam(_) => "AdminNoRdsIam",
            AdminNoGrantOption { .. } => "AdminNoGrantOption",
            AdminLoginFailed { .. } => "AdminLoginFailed",
            UserNoConnect { .. } => "UserNoConnect",
            Busy(_) => "Busy",
            Failed(_) => "Failed",
            Denied(_) => "Denied",
            Timeout(_) => "Timeout",
            Internal(_) => "Internal",
            Upstream(_) => "Upstream",
        }
    }

    /// Every variant, nested ones included (AWS errors have their own table
    /// in `aws::errors`).
    const VARIANTS: &[&str] = &[
        "NoIdentity",
        "BadRoute",
        "Revoked",
        "RefusedRoute",
        "UnknownDatabase",
        "Denied",
        "BadIdentity",
        "Draining",
        "Timeout",
        "Io",
        "Store",
        "Upstream::Unreachable",
        "Upstream::Timeout",
        "Upstream::Aws",
        "Upstream::RedshiftNoPrivileges",
        "Upstream::RdsIamRefused",
        "Upstream::NoTls",
        "Upstream::Tls",
        "Upstream::Refused",
        "Upstream::NoCredentials",
        "Upstream::PasswordToUnverifiedServer",
        "Upstream::Protocol",
        "Upstream::Internal",
        "Upstream::Io",
        "Provisioning::NoAdminUser",
        "Provisioning::RolesAndPermissions",
        "Provisioning::BadDbPermission",
        "Provisioning::UnmanagedDbUser",
        "Provisioning::DbRolesInUse",
        "Provisioning::DbPermissionsInUse",
        "Provisioning::UnknownDbRole",
        "Provisioning::AdminNoConnect",
        "Provisioning::AdminNoSchemaUsage",
        "Provisioning::ReadOnlyEndpoint",
        "Provisioning::AdminNoCreateRole",
        "Provisioning::AdminNoAdminOption",
        "Provisioning::AdminNoRdsIam",
        "Provisioning::AdminNoGrantOption",
        "Provisioning::AdminLoginFailed",
        "Provisioning::UserNoConnect",
        "Provisioning::Busy",
        "Provisioning::Failed",
        "Provisioning::Denied",
        "Provisioning::Timeout",
        "Provisioning::Internal",
        "Provisioning::Upstream",
    ];

    /// Each error, with the SQLSTATE and the sentence the client reads.
    fn table() -> Vec<(TunnelError, &'static str, &'static str)> {
        use ProvisioningError as P;
        use UpstreamError as U;
        let up = |e: UpstreamError| TunnelError::from(e);
        let prov = |e: ProvisioningError| TunnelError::from(e);
        vec![
            (
                TunnelError::NoIdentity,
                "28000",
                "postern: no session certificate was presented; run `postern login`",
            ),
            (
                TunnelError::BadRoute(INTERNAL.into()),
                "08P01",
                "postern: the tunnel sent an invalid request; update the postern client",
            ),
            (
                TunnelError::Revoked(Revoked::Expired),
                "28000",
                "postern: your Postern session expired; log in again",
            ),
            (
                TunnelError::Revoked(Revoked::Locked {
                    message: Some("incident 42".into()),
                }),
                "28000",
                "postern: access was locked by an administrator: incident 42",
            ),
            (
                TunnelError::Revoked(Revoked::Locked { message: None }),
                "28000",
                "postern: access was locked by an administrator",
            ),
            (
                TunnelError::Revoked(Revoked::Unknown),
                "28000",
                "postern: the gateway cannot check access right now; try again shortly",
            ),
            (
                TunnelError::RefusedRoute(RouteRefusal::Reserved {
                    key: "\"user\"".into(),
                }),
                "08P01",
                "postern: startup parameter \"user\" cannot be passed through the tunnel: the gateway sets the database user and name itself, and replication connections and protocol extensions are not supported",
            ),
            (
                TunnelError::RefusedRoute(RouteRefusal::ControlCharacter {
                    field: "db_user".into(),
                }),
                "08P01",
                "postern: the db_user of the request contains a control character, which is not allowed",
            ),
            (
                TunnelError::UnknownDatabase("pg".into()),
                "3D000",
                "postern: database \"pg\" does not exist or your roles do not allow it",
            ),
            (
                TunnelError::Denied(
                    "access to database \"pg\" denied: no role allows db user \"root\"".into(),
                ),
                "28000",
                "postern: access to database \"pg\" denied: no role allows db user \"root\"",
            ),
            (
                TunnelError::BadIdentity("unknown role \"gone\"".into()),
                "28000",
                "postern: unknown role \"gone\"",
            ),
            (
                TunnelError::Draining,
                "57P01",
                "postern: the gateway is restarting; reconnect",
            ),
            (
                TunnelError::Timeout("waiting for the route"),
                "08006",
                "postern: timed out while waiting for the route",
            ),
            (
                TunnelError::Io(io()),
                "08006",
                "postern: the connection failed",
            ),
            (
                TunnelError::Store(crate::store::StoreError::Unavailable(INTERNAL.into())),
                "08006",
                "postern: the gateway cannot reach its store; try again in a minute",
            ),
            (
                up(U::Unreachable {
                    database: "pg".into(),
                    addr: ADDR.into(),
                    source: io(),
                }),
                "08001",
                "postern: the gateway cannot reach database \"pg\"",
            ),
            (
                up(U::Timeout {
                    database: "pg".into(),
                    addr: ADDR.into(),
                }),
                "08001",
                "postern: the gateway got no answer from database \"pg\" in time",
            ),
            (
                up(U::Aws {
                    database: "wh".into(),
                    error: AwsError::Timeout {
                        service: "AWS STS",
                        region: "eu-central-1".into(),
                        endpoint: ADDR.into(),
                    },
                }),
                "08001",
                "postern: the gateway timed out reaching AWS STS in eu-central-1",
            ),
            (
                up(U::RedshiftNoPrivileges {
                    iam_user: "IAMR:reader".into(),
                    db_name: "dev".into(),
                    message: INTERNAL.into(),
                }),
                "42501",
                "postern: database user \"IAMR:reader\" has no privileges in database \"dev\" of the Redshift Serverless workgroup",
            ),
            (
                up(U::RdsIamRefused {
                    database: "rds".into(),
                    db_user: "app".into(),
                    instance: None,
                }),
                "28P01",
                "postern: RDS database \"rds\" refused the gateway's IAM authentication token for database user \"app\"",
            ),
            (
                up(U::NoTls("pg".into())),
                "08001",
                "postern: database \"pg\" does not accept TLS and postern never connects in plaintext",
            ),
            (
                up(U::Tls {
                    database: "pg".into(),
                    source: io(),
                }),
                "08001",
                "postern: the TLS certificate of database \"pg\" could not be verified",
            ),
            (
                up(U::Refused(ErrorFields::fatal(
                    "28P01",
                    "password authentication failed for user \"app\"",
                ))),
                "28P01",
                "postern: the database refused the login: password authentication failed for user \"app\"",
            ),
            (
                up(U::NoCredentials {
                    database: "pg".into(),
                    db_user: "app".into(),
                    why: INTERNAL.into(),
                }),
                "28000",
                "postern: the gateway holds no credentials for db user \"app\" on database \"pg\"",
            ),
            (
                up(U::PasswordToUnverifiedServer {
                    database: "pg".into(),
                    db_user: "app".into(),
                }),
                "28000",
                "postern: database \"pg\" asked for a cleartext or MD5 password for \"app\", which the gateway never sends to a server whose certificate it does not verify",
            ),
            (
                up(U::Protocol(INTERNAL.into())),
                "08P01",
                "postern: the database sent an unexpected reply during login",
            ),
            (
                up(U::Internal(INTERNAL.into())),
                "XX000",
                "postern: internal gateway error; see the gateway log",
            ),
            (up(U::Io(io())), "08006", "postern: the connection failed"),
            (
                prov(P::NoAdminUser("pg".into())),
                "28000",
                "postern: your roles create database users automatically, but database \"pg\" is not set up for it (no admin_user)",
            ),
            (
                prov(P::RolesAndPermissions {
                    database: "pg".into(),
                    roles: vec!["reader".into(), "writer".into()],
                }),
                "28000",
                "postern: your roles give both db_roles [reader, writer] and db_permissions for database \"pg\"; a connection gets one or the other",
            ),
            (
                prov(P::BadDbPermission("unknown privilege \"FLY\"".into())),
                "28000",
                "postern: a db_permissions rule of your roles cannot be applied: unknown privilege \"FLY\"",
            ),
            (
                prov(P::UnmanagedDbUser {
                    user: "alice".into(),
                    group: "postern-users".into(),
                }),
                "28000",
                "postern: database user \"alice\" already exists and is not managed by Postern (not a member of \"postern-users\"); it is left untouched",
            ),
            (
                prov(P::DbRolesInUse {
                    user: "alice".into(),
                    current: vec!["reader".into()],
                    requested: vec!["writer".into()],
                }),
                "55006",
                "postern: you already have sessions with roles [reader]; close them to switch to [writer]",
            ),
            (
                prov(P::DbPermissionsInUse {
                    user: "alice".into(),
                    db_name: "shop".into(),
                }),
                "55006",
                "postern: you already have sessions with other table privileges in database \"shop\"; close them to switch",
            ),
            (
                prov(P::UnknownDbRole("auditor".into())),
                "42704",
                "postern: database role \"auditor\" does not exist in the database",
            ),
            (
                prov(P::AdminNoConnect {
                    admin: "postern".into(),
                    db_name: "shop".into(),
                }),
                "42501",
                "postern: the provisioning admin \"postern\" may not connect to database \"shop\"",
            ),
            (
                prov(P::AdminNoSchemaUsage {
                    admin: "postern".into(),
                    schema: "sales".into(),
                    db_name: "shop".into(),
                }),
                "42501",
                "postern: the provisioning admin \"postern\" has no USAGE on schema \"sales\" in database \"shop\"",
            ),
            (
                prov(P::ReadOnlyEndpoint("pg".into())),
                "25006",
                "postern: database \"pg\" is read-only, so users cannot be provisioned there (a reader endpoint or standby?)",
            ),
            (
                prov(P::AdminNoCreateRole("postern".into())),
                "42501",
                "postern: the provisioning admin \"postern\" may not create or alter roles",
            ),
            (
                prov(P::AdminNoAdminOption {
                    admin: "postern".into(),
                    role: "reader".into(),
                }),
                "42501",
                "postern: the provisioning admin \"postern\" may not grant role \"reader\"",
            ),
            (
                prov(P::AdminNoRdsIam("postern".into())),
                "42501",
                "postern: the provisioning admin \"postern\" may not grant role \"rds_iam\" to other users",
            ),
            (
                prov(P::AdminNoGrantOption {
                    admin: "postern".into(),
                    privilege: "SELECT".into(),
                    table: "sales.orders".into(),
                }),
                "42501",
                "postern: the provisioning admin \"postern\" may not grant SELECT on sales.orders",
            ),
            (
                prov(P::AdminLoginFailed {
                    admin: "postern".into(),
                    message: "password authentication failed".into(),
                }),
                "28000",
                "postern: the gateway could not log in as the provisioning admin \"postern\": password authentication failed",
            ),
            (
                prov(P::UserNoConnect {
                    user: "alice".into(),
                    db_name: "shop".into(),
                    roles: vec![],
                }),
                "42501",
                "postern: database user \"alice\" may not connect to database \"shop\"",
            ),
            (
                prov(P::Busy("alice".into())),
                "55P03",
                "postern: database user \"alice\" is being provisioned by another connection; try again",
            ),
            (
                prov(P::Failed(INTERNAL.into())),
                "XX000",
                "postern: the database user could not be provisioned; see the gateway log",
            ),
            (
                prov(P::Denied(Denied::NoRoleForDatabase {
                    database: "pg".into(),
                })),
                "28000",
                "postern: access to database \"pg\" denied: none of your roles allows this database",
            ),
            (
                prov(P::Timeout("waiting for the provisioning lock")),
                "08006",
                "postern: timed out while waiting for the provisioning lock",
            ),
            (
                prov(P::Internal(INTERNAL.into())),
                "XX000",
                "postern: internal gateway error; see the gateway log",
            ),
            (
                prov(P::Upstream(Box::new(U::Timeout {
                    database: "pg".into(),
                    addr: ADDR.into(),
                }))),
                "08001",
                "postern: the gateway got no answer from database \"pg\" in time",
            ),
        ]
    }

    #[test]
    fn every_error_has_a_clear_fatal_sentence_without_internals() {
        let table = table();
        for (error, code, message) in &table {
            let fields = error.client_fields();
            let name = variant(error);
            assert_eq!(fields.severity, "FATAL", "{name}");
            assert_eq!(fields.code, *code, "{name}");
            assert_eq!(fields.message, *message, "{name}");
            let shown = format!(
                "{} {}",
                fields.message,
                fields.hint.as_deref().unwrap_or("")
            );
            for internal in [
                INTERNAL,
                ADDR,
                "ConnectionReset",
                "Custom {",
                "kind:",
                "Box(",
                "src/",
            ] {
                assert!(
                    !shown.contains(internal),
                    "{name} shows {internal:?}: {shown}"
                );
            }
            assert!(
                !shown.contains("postern-gateway --") && !shown.contains("cargo "),
                "{name} names a flag only administrators use: {shown}"
            );
        }
        let covered: std::collections::BTreeSet<String> =
            table.iter().map(|(error, ..)| variant(error)).collect();
        let all: std::collections::BTreeSet<String> =
            VARIANTS.iter().map(|v| v.to_string()).collect();
        assert_eq!(covered, all, "every variant has a row");
    }

    #[test]
    fn a_database_refusal_keeps_its_code_and_hint() {
        let refusal =
            ErrorFields::fatal("28000", "no pg_hba.conf entry for host").with_hint("ask the DBA");
        let fields = TunnelError::from(UpstreamError::Refused(refusal)).client_fields();
        assert_eq!(fields.code, "28000");
        assert_eq!(fields.hint.as_deref(), Some("ask the DBA"));
    }
}
