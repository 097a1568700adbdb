//! What provisioning runs as the admin user, and how the database's errors
//! become the messages of the troubleshooting guide.
//!
//! Statements run from the gateway inside one transaction per step; nothing
//! is stored in the database (no procedures), so the admin needs CREATEROLE
//! and CONNECT, and — for `db_permissions` — USAGE on the schemas and the
//! table privileges WITH GRANT OPTION, but no CREATE on any schema.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, NoTls};

use super::{GROUP_ROLE, ProvisioningError, TablePermission};
use crate::names::{DbName, DbUser};
use crate::upstream::{Refusal, Upstream};

/// Attempts for a transaction that hits a serialization failure, deadlock or
/// a concurrent catalog update.
const ATTEMPTS: u32 = 4;
const RETRY_PAUSE: Duration = Duration::from_millis(40);

/// Who provisions where; for error messages and connections.
#[derive(Clone, Copy)]
pub(super) struct Admin<'a> {
    pub upstream: &'a Upstream,
    /// The admin database user.
    pub name: &'a DbUser,
    /// Database name inside the server the admin connects to.
    pub db_name: &'a DbName,
}

/// What the session should hold.
pub(super) enum Desired<'a> {
    /// Exactly these db roles.
    Roles(&'a [String]),
    /// No db roles; these table privileges in the admin's database.
    Tables(&'a [TablePermission]),
}

/// What the user holds after activation.
#[derive(Debug, Default)]
pub(super) struct Granted {
    pub roles: Vec<String>,
    /// `PRIVILEGE ON schema.table`, sorted.
    pub permissions: Vec<String>,
}

/// How a deactivation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deactivated {
    /// Another backend of the user is still connected; nothing changed.
    InUse,
    /// The user does not exist (any more), or is not managed.
    Absent,
    /// Roles revoked, NOLOGIN.
    Locked,
    /// DROP ROLE.
    Dropped,
    /// DROP ROLE failed because objects depend on the user; locked instead.
    KeptWithDependents,
}

impl Deactivated {
    /// The audit `action`, or None when nothing happened.
    pub fn action(self) -> Option<&'static str> {
        match self {
            Deactivated::InUse | Deactivated::Absent => None,
            Deactivated::Locked => Some("locked"),
            Deactivated::Dropped => Some("dropped"),
            Deactivated::KeptWithDependents => Some("kept_with_dependents"),
        }
    }
}

/// A failed attempt: worth another try, or final.
enum Failure {
    Retry(String),
    Fatal(ProvisioningError),
}

impl From<ProvisioningError> for Failure {
    fn from(e: ProvisioningError) -> Self {
        Failure::Fatal(e)
    }
}

/// The statement that failed, which decides what its error means.
#[derive(Clone, Debug)]
enum Step {
    Read,
    CreateGroup,
    CreateUser,
    AlterUser,
    DropUser,
    GrantRole(String),
    RevokeRole(String),
    Table { schema: String },
}

/// Logs in as the admin over the database's TLS, like any user login.
pub(super) async fn connect(admin: Admin<'_>, database: &str) -> Result<Client, ProvisioningError> {
    // The admin logs in as the database's kind says: certificate or
    // configured password (self-hosted), IAM token or configured password (RDS).
    let credentials = admin
        .upstream
        .credentials(admin.name, admin.db_name)
        .await?;
    let stream = admin
        .upstream
        .connect(credentials.certificate_user())
        .await?;
    let mut config = tokio_postgres::Config::new();
    config
        .user(&credentials.user)
        .dbname(admin.db_name.as_str())
        .application_name("postern-gateway provisioning")
        // The stream is already TLS; tokio-postgres must not negotiate again.
        .ssl_mode(SslMode::Disable);
    if let Some(password) = &credentials.password {
        config.password(password);
    }
    let (client, connection) = config.connect_raw(stream, NoTls).await.map_err(|e| {
        let Some(db) = e.as_db_error() else {
            return ProvisioningError::Failed(format!(
                "admin login to {database:?}: {}",
                describe(&e)
            ));
        };
        if Refusal::classify(db.code().code(), db.message()) == Refusal::NoConnect {
            ProvisioningError::AdminNoConnect {
                admin: admin.name.to_string(),
                db_name: admin.db_name.to_string(),
            }
        } else {
            ProvisioningError::AdminLoginFailed {
                admin: admin.name.to_string(),
                message: db.message().to_owned(),
            }
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "provisioning connection ended");
        }
    });
    Ok(client)
}

/// Runs `attempt` until it succeeds, fails for good, or retries run out.
macro_rules! with_retries {
    ($what:expr, $attempt:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            match $attempt.await {
                Ok(value) => break Ok(value),
                Err(Failure::Fatal(e)) => break Err(e),
                Err(Failure::Retry(why)) if tries < ATTEMPTS => {
                    tracing::debug!(%why, tries, "provisioning retried");
                    let jitter = Duration::from_millis(rand::random::<u64>() % 40);
                    tokio::time::sleep(RETRY_PAUSE * tries + jitter).await;
                }
                Err(Failure::Retry(why)) => {
                    break Err(ProvisioningError::Failed(format!(
                        "{} gave up after {ATTEMPTS} attempts: {why}",
                        $what
                    )));
                }
            }
        }
    }};
}

/// Creates or re-enables `user` and gives it exactly `desired`. `live` says
/// whether the gateway already has sessions of the user on this server.
pub(super) async fn activate(
    client: &mut Client,
    admin: Admin<'_>,
    database: &str,
    user: &str,
    desired: &Desired<'_>,
    live: bool,
) -> Result<Granted, ProvisioningError> {
    with_retries!(
        "activation",
        activate_once(client, admin, database, user, desired, live)
    )
}

async fn activate_once(
    client: &mut Client,
    admin: Admin<'_>,
    database: &str,
    user: &str,
    desired: &Desired<'_>,
    live: bool,
) -> Result<Granted, Failure> {
    let err = |step: Step| move |e: tokio_postgres::Error| classify(&e, &step, admin, database);
    let tx = client.transaction().await.map_err(err(Step::Read))?;
    prepare(&tx, admin, database, user).await?;

    let group_exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&GROUP_ROLE])
        .await
        .map_err(err(Step::Read))?
        .is_some();
    if !group_exists {
        run(
            &tx,
            &format!("CREATE ROLE {} NOLOGIN", ident(GROUP_ROLE)),
            err(Step::CreateGroup),
        )
        .await?;
    }
    let state = match user_state(&tx, user).await.map_err(err(Step::Read))? {
        None => {
            run(
                &tx,
                &format!("CREATE ROLE {} LOGIN", ident(user)),
                err(Step::CreateUser),
            )
            .await?;
            let grant = format!("GRANT {} TO {}", ident(GROUP_ROLE), ident(user));
            run(&tx, &grant, err(Step::GrantRole(GROUP_ROLE.to_owned()))).await?;
            user_state(&tx, user)
                .await
                .map_err(err(Step::Read))?
                .ok_or_else(|| Failure::Retry("created user not visible".into()))?
        }
        Some(state) if !state.managed => {
            return Err(ProvisioningError::UnmanagedDbUser {
                user: user.to_owned(),
                group: GROUP_ROLE.to_owned(),
            }
            .into());
        }
        Some(state) => {
            if !state.can_login {
                let alter = format!("ALTER ROLE {} LOGIN", ident(user));
                run(&tx, &alter, err(Step::AlterUser)).await?;
            }
            state
        }
    };
    let busy = live || backends(&tx, user, &[]).await.map_err(err(Step::Read))? > 0;

    let wanted_roles: BTreeSet<String> = match desired {
        Desired::Roles(roles) => roles.iter().cloned().collect(),
        Desired::Tables(_) => BTreeSet::new(),
    };
    if busy && state.roles != wanted_roles {
        return Err(ProvisioningError::DbRolesInUse {
            user: user.to_owned(),
            current: state.roles.iter().cloned().collect(),
            requested: wanted_roles.into_iter().collect(),
        }
        .into());
    }
    for role in wanted_roles.difference(&state.roles) {
        let grant = format!("GRANT {} TO {}", ident(role), ident(user));
        run(&tx, &grant, err(Step::GrantRole(role.clone()))).await?;
    }
    for role in state.roles.difference(&wanted_roles) {
        let revoke = format!("REVOKE {} FROM {}", ident(role), ident(user));
        run(&tx, &revoke, err(Step::RevokeRole(role.clone()))).await?;
    }

    let mut granted = Granted {
        roles: wanted_roles.into_iter().collect(),
        permissions: Vec::new(),
    };
    if let Desired::Tables(rules) = desired {
        let current = table_privileges(&tx, state.oid)
            .await
            .map_err(err(Step::Read))?;
        let wanted = matching_tables(&tx, rules).await.map_err(err(Step::Read))?;
        if busy && !current.is_empty() && current != wanted {
            return Err(ProvisioningError::DbPermissionsInUse {
                user: user.to_owned(),
                db_name: admin.db_name.to_string(),
            }
            .into());
        }
        apply_table_privileges(&tx, admin, database, user, &current, &wanted).await?;
        granted.permissions = wanted
            .iter()
            .flat_map(|((schema, table), privileges)| {
                privileges
                    .iter()
                    .map(move |p| format!("{p} ON {schema}.{table}"))
            })
            .collect();
    }
    tx.commit().await.map_err(err(Step::Read))?;
    Ok(granted)
}

/// Disables or drops `user` unless another backend of it (other than
/// `ended_pid`, the session that just closed) is still connected.
pub(super) async fn deactivate(
    client: &mut Client,
    admin: Admin<'_>,
    database: &str,
    user: &str,
    drop_user: bool,
    ended_pid: Option<i32>,
) -> Result<Deactivated, ProvisioningError> {
    with_retries!(
        "deactivation",
        deactivate_once(client, admin, database, user, drop_user, ended_pid)
    )
}

async fn deactivate_once(
    client: &mut Client,
    admin: Admin<'_>,
    database: &str,
    user: &str,
    drop_user: bool,
    ended_pid: Option<i32>,
) -> Result<Deactivated, Failure> {
    let err = |step: Step| move |e: tokio_postgres::Error| classify(&e, &step, admin, database);
    let mut tx = client.transaction().await.map_err(err(Step::Read))?;
    prepare(&tx, admin, database, user).await?;
    let Some(state) = user_state(&tx, user).await.map_err(err(Step::Read))? else {
        return Ok(Deactivated::Absent);
    };
    if !state.managed {
        tracing::warn!(%user, "database user left Postern's group; not deactivating it");
        return Ok(Deactivated::Absent);
    }
    let skip: Vec<i32> = ended_pid.into_iter().collect();
    if backends(&tx, user, &skip).await.map_err(err(Step::Read))? > 0 {
        return Ok(Deactivated::InUse);
    }

    // Table privileges count as dependencies for DROP ROLE, in every
    // database of the server: revoke them wherever they are.
    let here: String = tx
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(err(Step::Read))?
        .get(0);
    let elsewhere = databases_with_privileges(&tx, state.oid)
        .await
        .map_err(err(Step::Read))?;
    let current = table_privileges(&tx, state.oid)
        .await
        .map_err(err(Step::Read))?;
    apply_table_privileges(&tx, admin, database, user, &current, &BTreeMap::new()).await?;
    for db_name in elsewhere.iter().filter(|d| **d != here) {
        if let Err(e) = revoke_privileges_in(admin, database, user, state.oid, db_name).await {
            // DROP ROLE will then refuse and the user is locked instead.
            tracing::warn!(error = %e, %user, %db_name, "table privileges could not be revoked");
        }
    }
    for role in &state.roles {
        let revoke = format!("REVOKE {} FROM {}", ident(role), ident(user));
        run(&tx, &revoke, err(Step::RevokeRole(role.clone()))).await?;
    }

    let nologin = format!("ALTER ROLE {} NOLOGIN", ident(user));
    let outcome = if drop_user {
        let savepoint = tx
            .savepoint("postern_drop")
            .await
            .map_err(err(Step::Read))?;
        let drop = format!("DROP ROLE {}", ident(user));
        match savepoint.batch_execute(&drop).await {
            Ok(()) => {
                savepoint.commit().await.map_err(err(Step::Read))?;
                Deactivated::Dropped
            }
            Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
                tracing::info!(%user, detail = ?e.as_db_error().and_then(|d| d.detail()), "objects depend on the user; locking it instead");
                savepoint.rollback().await.map_err(err(Step::Read))?;
                run(&tx, &nologin, err(Step::AlterUser)).await?;
                Deactivated::KeptWithDependents
            }
            Err(e) => return Err(classify(&e, &Step::DropUser, admin, database)),
        }
    } else {
        run(&tx, &nologin, err(Step::AlterUser)).await?;
        Deactivated::Locked
    };
    tx.commit().await.map_err(err(Step::Read))?;
    Ok(outcome)
}

/// Checks the server can take writes and serializes with other gateways
/// provisioning the same user in this database.
async fn prepare(
    tx: &tokio_postgres::Transaction<'_>,
    admin: Admin<'_>,
    database: &str,
    user: &str,
) -> Result<(), Failure> {
    let err = |e: tokio_postgres::Error| classify(&e, &Step::Read, admin, database);
    let standby: bool = tx
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(err)?
        .get(0);
    if standby {
        return Err(ProvisioningError::ReadOnlyEndpoint(database.to_owned()).into());
    }
    let key = format!("{GROUP_ROLE}:{user}");
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
    )
    .await
    .map_err(err)?;
    Ok(())
}

async fn run<C: GenericClient>(
    client: &C,
    sql: &str,
    err: impl FnOnce(tokio_postgres::Error) -> Failure,
) -> Result<(), Failure> {
    client.batch_execute(sql).await.map_err(err)
}

struct UserState {
    oid: u32,
    can_login: bool,
    managed: bool,
    /// Roles held besides the managed group.
    roles: BTreeSet<String>,
}

async fn user_state<C: GenericClient>(
    client: &C,
    user: &str,
) -> Result<Option<UserState>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT r.oid, r.rolcanlogin,
                    EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                            WHERE m.member = r.oid AND g.rolname = $2),
                    ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                          WHERE m.member = r.oid AND g.rolname <> $2)
             FROM pg_roles r WHERE r.rolname = $1",
            &[&user, &GROUP_ROLE],
        )
        .await?;
    Ok(row.map(|row| UserState {
        oid: row.get(0),
        can_login: row.get(1),
        managed: row.get(2),
        roles: row.get::<_, Vec<String>>(3).into_iter().collect(),
    }))
}

/// Backends of `user` anywhere on the server, except `skip`.
async fn backends<C: GenericClient>(
    client: &C,
    user: &str,
    skip: &[i32],
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND pid <> ALL($2)",
            &[&user, &skip],
        )
        .await?
        .get(0))
}

/// (schema, table) → privileges, as plain names.
type TablePrivileges = BTreeMap<(String, String), BTreeSet<String>>;

const RELATION_KINDS: &str = "('r', 'p', 'v', 'm', 'f')";

/// Privileges the user holds on tables it does not own, in this database.
async fn table_privileges<C: GenericClient>(
    client: &C,
    oid: u32,
) -> Result<TablePrivileges, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, a.privilege_type
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                      LATERAL aclexplode(c.relacl) a
                 WHERE a.grantee = $1 AND c.relowner <> $1 AND c.relkind IN {RELATION_KINDS}"
            ),
            &[&oid],
        )
        .await?;
    let mut out = TablePrivileges::new();
    for row in rows {
        out.entry((row.get(0), row.get(1)))
            .or_default()
            .insert(row.get(2));
    }
    Ok(out)
}

/// The privileges `rules` give on the tables of this database.
async fn matching_tables<C: GenericClient>(
    client: &C,
    rules: &[TablePermission],
) -> Result<TablePrivileges, tokio_postgres::Error> {
    let mut out = TablePrivileges::new();
    for rule in rules {
        let rows = client
            .query(
                &format!(
                    "SELECT n.nspname::text, c.relname::text
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN {RELATION_KINDS}
                       AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
                       AND ($1::text IS NULL OR n.nspname = $1)
                       AND ($2::text IS NULL OR c.relname = $2)"
                ),
                &[&rule.schema, &rule.name],
            )
            .await?;
        for row in rows {
            out.entry((row.get(0), row.get(1)))
                .or_default()
                .extend(rule.privileges.iter().map(|p| p.to_string()));
        }
    }
    Ok(out)
}

/// Grants what `wanted` has and `current` lacks, revokes the reverse.
async fn apply_table_privileges<C: GenericClient>(
    client: &C,
    admin: Admin<'_>,
    database: &str,
    user: &str,
    current: &TablePrivileges,
    wanted: &TablePrivileges,
) -> Result<(), Failure> {
    let none = BTreeSet::new();
    let tables: BTreeSet<&(String, String)> = current.keys().chain(wanted.keys()).collect();
    for key @ (schema, table) in tables {
        let have = current.get(key).unwrap_or(&none);
        let want = wanted.get(key).unwrap_or(&none);
        let name = format!("{}.{}", ident(schema), ident(table));
        let step = || Step::Table {
            schema: schema.clone(),
        };
        let grant: Vec<&str> = want.difference(have).map(String::as_str).collect();
        if !grant.is_empty() {
            // Without the grant option PostgreSQL only warns and grants
            // nothing; ask first so the administrator learns what to fix.
            for privilege in &grant {
                let grantable: bool = client
                    .query_one(
                        "SELECT has_table_privilege(format('%I.%I', $1::text, $2::text), $3)",
                        &[schema, table, &format!("{privilege} WITH GRANT OPTION")],
                    )
                    .await
                    .map_err(|e| classify(&e, &step(), admin, database))?
                    .get(0);
                if !grantable {
                    return Err(ProvisioningError::AdminNoGrantOption {
                        admin: admin.name.to_string(),
                        privilege: (*privilege).to_owned(),
                        table: format!(
                            "{}.{}",
                            crate::upstream::error::quote(schema),
                            crate::upstream::error::quote(table)
                        ),
                    }
                    .into());
                }
            }
            let sql = format!(
                "GRANT {} ON TABLE {name} TO {}",
                grant.join(", "),
                ident(user)
            );
            run(client, &sql, |e| classify(&e, &step(), admin, database)).await?;
        }
        let revoke: Vec<&str> = have.difference(want).map(String::as_str).collect();
        if !revoke.is_empty() {
            let sql = format!(
                "REVOKE {} ON TABLE {name} FROM {}",
                revoke.join(", "),
                ident(user)
            );
            run(client, &sql, |e| classify(&e, &step(), admin, database)).await?;
        }
    }
    Ok(())
}

/// Databases (other than system ones) where the user holds privileges on
/// relations.
async fn databases_with_privileges<C: GenericClient>(
    client: &C,
    oid: u32,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT DISTINCT d.datname::text FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
             WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = $1
               AND s.deptype = 'a' AND s.classid = 'pg_class'::regclass",
            &[&oid],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

async fn revoke_privileges_in(
    admin: Admin<'_>,
    database: &str,
    user: &str,
    oid: u32,
    db_name: &str,
) -> Result<(), ProvisioningError> {
    let db_name = DbName::new(db_name);
    let there = Admin {
        db_name: &db_name,
        ..admin
    };
    let client = connect(there, database).await?;
    let current = table_privileges(&client, oid)
        .await
        .map_err(|e| ProvisioningError::Failed(describe(&e)))?;
    apply_table_privileges(&client, there, database, user, &current, &BTreeMap::new())
        .await
        .map_err(|f| match f {
            Failure::Fatal(e) => e,
            Failure::Retry(why) => ProvisioningError::Failed(why),
        })
}

/// Turns a database error into the user-facing error for the step, or a
/// retry for transient conflicts between concurrent provisionings.
fn classify(e: &tokio_postgres::Error, step: &Step, admin: Admin<'_>, database: &str) -> Failure {
    let Some(db) = e.as_db_error() else {
        return Failure::Fatal(ProvisioningError::Failed(format!(
            "{step:?}: {}",
            describe(e)
        )));
    };
    let code = db.code();
    let message = db.message();
    let admin_name = || admin.name.to_string();
    // Two gateways (or two users creating the group) raced; the next
    // attempt sees the winner's work.
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::DUPLICATE_OBJECT,
        SqlState::UNIQUE_VIOLATION,
    ];
    if transient.contains(code)
        || (*code == SqlState::INTERNAL_ERROR && message.contains("concurrently"))
    {
        return Failure::Retry(format!("{}: {message}", code.code()));
    }
    let error = match (code, step) {
        (c, _) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => {
            ProvisioningError::ReadOnlyEndpoint(database.to_owned())
        }
        (c, _) if *c == SqlState::INVALID_SCHEMA_NAME => ProvisioningError::AdminNoSchemaUsage {
            admin: admin_name(),
            schema: "public".into(),
            db_name: admin.db_name.to_string(),
        },
        (c, Step::Table { schema }) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            ProvisioningError::AdminNoSchemaUsage {
                admin: admin_name(),
                schema: schema_in(message).unwrap_or(schema).to_owned(),
                db_name: admin.db_name.to_string(),
            }
        }
        (c, Step::GrantRole(role) | Step::RevokeRole(role))
            if *c == SqlState::INSUFFICIENT_PRIVILEGE
                || *c == SqlState::INVALID_GRANT_OPERATION =>
        {
            if role == "rds_iam" {
                ProvisioningError::AdminNoRdsIam(admin_name())
            } else {
                ProvisioningError::AdminNoAdminOption {
                    admin: admin_name(),
                    role: role.clone(),
                }
            }
        }
        (c, Step::GrantRole(role)) if *c == SqlState::UNDEFINED_OBJECT => {
            ProvisioningError::UnknownDbRole(role.clone())
        }
        (c, Step::CreateGroup | Step::CreateUser | Step::AlterUser | Step::DropUser)
            if *c == SqlState::INSUFFICIENT_PRIVILEGE =>
        {
            ProvisioningError::AdminNoCreateRole(admin_name())
        }
        _ => ProvisioningError::Failed(format!("{step:?}: {}: {message}", code.code())),
    };
    Failure::Fatal(error)
}

/// The schema named in "permission denied for schema X".
fn schema_in(message: &str) -> Option<&str> {
    message.strip_prefix("permission denied for schema ")
}

/// A double-quoted SQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An error with the server's message, which `Display` leaves out.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident("alice"), "\"alice\"");
        assert_eq!(ident("postern-auto-user"), "\"postern-auto-user\"");
        assert_eq!(ident("a\"; DROP ROLE x; --"), "\"a\"\"; DROP ROLE x; --\"");
    }

    #[test]
    fn schema_is_read_from_the_permission_error() {
        assert_eq!(
            schema_in("permission denied for schema public"),
            Some("public")
        );
        assert_eq!(schema_in("permission denied for table items"), None);
    }

    #[test]
    fn audit_actions() {
        assert_eq!(Deactivated::Locked.action(), Some("locked"));
        assert_eq!(Deactivated::Dropped.action(), Some("dropped"));
        assert_eq!(
            Deactivated::KeptWithDependents.action(),
            Some("kept_with_dependents")
        );
        assert_eq!(Deactivated::InUse.action(), None);
    }
}
