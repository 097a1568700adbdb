//! Automatic database-user provisioning for PostgreSQL (DESIGN.md §6).
//!
//! When a role of the session sets `create_db_user_mode` to `keep` or
//! `best_effort_drop`, the gateway logs in as the database's `admin_user`
//! before the session's own login and makes sure a database user named
//! after the Postern user exists, may log in, belongs to the group role
//! [`GROUP_ROLE`], and holds exactly the session's db roles (or table
//! privileges from `db_permissions`). When the user's last session on the
//! server ends, the user is locked (`keep`) or dropped (`best_effort_drop`,
//! locked instead when objects depend on it).
//!
//! The lifecycle is typed: [`Provisioner::activate`] returns an
//! [`Activated`] that still holds the per-user lock until the session's
//! own login is done ([`Activated::connected`] or [`Activated::abandon`]);
//! the resulting [`LiveUser`] is ended with [`LiveUser::end`].

mod error;
mod lock;
mod sql;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::audit::{AuditKind, Auditor};
use crate::catalog::CatalogDb;
use crate::config::AdminUser;
use crate::names::{DbName, DbUser};
use crate::rbac::{Allowed, AutoUserMode, DbPermission};
use crate::store::Store;

use crate::upstream::Upstream;
pub use error::ProvisioningError;
pub use lock::{LockError, ProvisioningLocks};
use sql::{Admin, Desired};

/// Group role every provisioned user belongs to. A database user of the
/// same name outside this group is never touched.
pub const GROUP_ROLE: &str = "postern-auto-user";

/// Table privileges `db_permissions` may grant.
const TABLE_PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

/// What a session's user is given: db roles or table privileges, never both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grants {
    /// Exactly these database roles (possibly none).
    Roles(Vec<String>),
    /// Table privileges in the session's database, and no db roles.
    Tables(Vec<TablePermission>),
}

/// A validated `db_permissions` rule for tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePermission {
    /// Schema to match; None matches every non-system schema.
    pub schema: Option<String>,
    /// Table (or view) name to match; None matches all.
    pub name: Option<String>,
    /// Upper-case privilege names.
    pub privileges: BTreeSet<&'static str>,
}

impl Grants {
    /// Decides the grants for an allowed session: `requested` db roles
    /// (empty: all allowed) when the roles allowing it give `db_roles`,
    /// otherwise their `db_permissions`. Both at once is refused, since a
    /// session's user cannot sensibly hold a role's privileges and also have
    /// object grants revoked and re-applied underneath it.
    pub fn choose(
        allowed: &Allowed<'_>,
        requested: &[String],
    ) -> Result<Grants, ProvisioningError> {
        let roles = allowed
            .select_db_roles(requested)
            .map_err(ProvisioningError::Denied)?;
        let permissions = allowed.db_permissions();
        if permissions.is_empty() {
            return Ok(Grants::Roles(roles));
        }
        if !roles.is_empty() {
            return Err(ProvisioningError::RolesAndPermissions {
                database: allowed.database().to_owned(),
                roles,
            });
        }
        permissions
            .iter()
            .map(TablePermission::from_rule)
            .collect::<Result<_, _>>()
            .map(Grants::Tables)
    }

    fn roles(&self) -> &[String] {
        match self {
            Grants::Roles(roles) => roles,
            Grants::Tables(_) => &[],
        }
    }
}

impl TablePermission {
    /// Checks one rule: tables only, known privileges (`ALL` means all).
    pub fn from_rule(rule: &DbPermission) -> Result<Self, ProvisioningError> {
        let bad = |why: String| ProvisioningError::BadDbPermission(why);
        match rule.match_.object_kind.as_deref() {
            None => {}
            Some(kind) if kind.eq_ignore_ascii_case("table") => {}
            Some(kind) => {
                return Err(bad(format!(
                    "object_kind {kind:?} is not supported (only \"table\")"
                )));
            }
        }
        let mut privileges = BTreeSet::new();
        for privilege in &rule.permissions {
            let upper = privilege.trim().to_ascii_uppercase();
            if upper == "ALL" || upper == "ALL PRIVILEGES" {
                privileges.extend(TABLE_PRIVILEGES);
            } else if let Some(known) = TABLE_PRIVILEGES.iter().find(|p| **p == upper) {
                privileges.insert(*known);
            } else {
                return Err(bad(format!(
                    "{privilege:?} is not a table privilege (use {})",
                    TABLE_PRIVILEGES.join(", ")
                )));
            }
        }
        if privileges.is_empty() {
            return Err(bad("a rule lists no permissions".into()));
        }
        Ok(TablePermission {
            schema: rule.match_.schema.clone(),
            name: rule.match_.name.clone(),
            privileges,
        })
    }
}

/// A session that needs its database user provisioned.
pub struct Request<'a> {
    /// The catalog database.
    pub db: &'a CatalogDb,
    /// The Postern user, who is also the database user.
    pub user: &'a DbUser,
    /// Database name inside the server.
    pub db_name: &'a DbName,
    /// Effective mode; never [`AutoUserMode::Off`].
    pub mode: AutoUserMode,
    /// What to grant.
    pub grants: Grants,
}

/// Provisions users for tunnel sessions; one per gateway.
pub struct Provisioner {
    locks: ProvisioningLocks,
    /// Sessions of this gateway per lock key (server and user).
    live: Mutex<HashMap<String, usize>>,
    auditor: Auditor,
    timeout: Duration,
}

/// Where and how to undo a provisioning.
struct Provisioned {
    key: String,
    upstream: Arc<Upstream>,
    database: String,
    admin: AdminUser,
    db_name: DbName,
    user: DbUser,
    mode: AutoUserMode,
}

impl Provisioned {
    fn admin_db(&self) -> &DbName {
        self.admin
            .default_database
            .as_ref()
            .unwrap_or(&self.db_name)
    }
}

/// A provisioned user whose session is still logging in; holds the lock so
/// no deactivation can slip in between.
#[must_use = "call connected() after the login, or abandon() when it failed"]
pub struct Activated<'p> {
    provisioner: &'p Provisioner,
    provisioned: Provisioned,
    roles: Vec<String>,
    _lock: lock::LockGuard,
}

/// A provisioned user with a live session; [`LiveUser::end`] it when the
/// session is over.
#[must_use = "call end() when the session is over"]
pub struct LiveUser<'p> {
    provisioner: &'p Provisioner,
    provisioned: Option<Provisioned>,
    backend_pid: i32,
}

impl Provisioner {
    /// A provisioner whose locks live in `store`; `timeout` bounds each wait
    /// for a lock and each conversation with the database.
    pub fn new(store: Arc<dyn Store>, auditor: Auditor, timeout: Duration) -> Self {
        Provisioner {
            locks: ProvisioningLocks::new(store),
            live: Mutex::new(HashMap::new()),
            auditor,
            timeout,
        }
    }

    fn lease_ttl(&self) -> Duration {
        // Held across provisioning and the session's login, each bounded by
        // `timeout`; the margin keeps a slow holder from losing it.
        self.timeout * 2 + Duration::from_secs(30)
    }

    fn live_count(&self, key: &str) -> usize {
        self.live.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Decrements the live count of `key`; returns what remains.
    fn session_gone(&self, key: &str) -> usize {
        let mut live = self.live.lock().unwrap();
        let remaining = match live.get_mut(key) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if remaining == 0 {
            live.remove(key);
        }
        remaining
    }

    /// Creates or re-enables the session's database user with exactly the
    /// requested grants.
    pub async fn activate<'p>(
        &'p self,
        req: Request<'_>,
    ) -> Result<Activated<'p>, ProvisioningError> {
        debug_assert_ne!(req.mode, AutoUserMode::Off);
        let database = &req.db.config.name;
        let admin = req
            .db
            .config
            .kind
            .admin_user()
            .cloned()
            .ok_or_else(|| ProvisioningError::NoAdminUser(database.clone()))?;
        let upstream = req.db.upstream.clone();
        let provisioned = Provisioned {
            key: format!("provisioning/{}/{}", upstream.server_addr(), req.user),
            upstream,
            database: database.clone(),
            admin,
            db_name: req.db_name.clone(),
            user: req.user.clone(),
            mode: req.mode,
        };
        let guard = self
            .locks
            .lock(
                &provisioned.key,
                self.lease_ttl(),
                Instant::now() + self.timeout,
            )
            .await
            .map_err(|e| match e {
                LockError::Busy => ProvisioningError::Busy(req.user.to_string()),
                other => ProvisioningError::Internal(other.to_string()),
            })?;
        // Table privileges live in the session's database, so that is where
        // the admin must be for them; roles are server-wide.
        let admin_db = match &req.grants {
            Grants::Roles(_) => provisioned.admin_db(),
            Grants::Tables(_) => &provisioned.db_name,
        };
        let admin = Admin {
            upstream: &provisioned.upstream,
            name: &provisioned.admin.name,
            db_name: admin_db,
        };
        let desired = match &req.grants {
            Grants::Roles(roles) => Desired::Roles(roles),
            Grants::Tables(rules) => Desired::Tables(rules),
        };
        let live = self.live_count(&provisioned.key) > 0;
        let granted = tokio::time::timeout(self.timeout, async {
            let mut client = sql::connect(admin, database).await?;
            sql::activate(
                &mut client,
                admin,
                database,
                req.user.as_str(),
                &desired,
                live,
            )
            .await
        })
        .await
        .map_err(|_| ProvisioningError::Timeout("provisioning the database user"))??;
        tracing::info!(user = %req.user, %database, roles = ?granted.roles, "database user provisioned");
        self.auditor.record(AuditKind::UserProvisioned {
            user: req.user.to_string(),
            database: database.clone(),
            roles: granted.roles.clone(),
            permissions: granted.permissions,
        });
        Ok(Activated {
            provisioner: self,
            provisioned,
            roles: req.grants.roles().to_vec(),
            _lock: guard,
        })
    }

    /// Locks or drops the user unless it is still in use; records what
    /// happened. Call with the lock held.
    async fn deactivate(&self, provisioned: &Provisioned, ended_pid: Option<i32>) {
        let admin = Admin {
            upstream: &provisioned.upstream,
            name: &provisioned.admin.name,
            db_name: provisioned.admin_db(),
        };
        let (database, user) = (&provisioned.database, &provisioned.user);
        let drop_user = provisioned.mode == AutoUserMode::BestEffortDrop;
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut client = sql::connect(admin, database).await?;
            sql::deactivate(
                &mut client,
                admin,
                database,
                user.as_str(),
                drop_user,
                ended_pid,
            )
            .await
        })
        .await
        .unwrap_or(Err(ProvisioningError::Timeout(
            "deactivating the database user",
        )));
        let action = match outcome {
            Ok(done) => match done.action() {
                Some(action) => action,
                None => {
                    tracing::debug!(%user, %database, ?done, "database user left as it is");
                    return;
                }
            },
            Err(e) => {
                tracing::error!(error = %e, %user, %database, "database user could not be deactivated");
                "failed"
            }
        };
        tracing::info!(%user, %database, action, "database user deactivated");
        self.auditor.record(AuditKind::UserDeactivated {
            user: user.to_string(),
            database: database.clone(),
            action: action.to_owned(),
        });
    }
}

impl<'p> Activated<'p> {
    /// The db roles the user was given.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The session logged in as backend `backend_pid`: count it, let others
    /// provision this user again.
    pub fn connected(self, backend_pid: i32) -> LiveUser<'p> {
        *self
            .provisioner
            .live
            .lock()
            .unwrap()
            .entry(self.provisioned.key.clone())
            .or_insert(0) += 1;
        LiveUser {
            provisioner: self.provisioner,
            provisioned: Some(self.provisioned),
            backend_pid,
        }
        // The lock is released here, after the count went up.
    }

    /// The session's login failed: undo the provisioning unless other
    /// sessions use the user.
    pub async fn abandon(self) {
        if self.provisioner.live_count(&self.provisioned.key) == 0 {
            self.provisioner.deactivate(&self.provisioned, None).await;
        }
    }
}

impl LiveUser<'_> {
    /// The session is over: when it was the user's last one on the server,
    /// deactivate the user according to the mode.
    pub async fn end(mut self) {
        let Some(provisioned) = self.provisioned.take() else {
            return;
        };
        let provisioner = self.provisioner;
        let lock = provisioner
            .locks
            .lock(
                &provisioned.key,
                provisioner.lease_ttl(),
                Instant::now() + provisioner.timeout,
            )
            .await;
        let remaining = provisioner.session_gone(&provisioned.key);
        match lock {
            Ok(_lock) if remaining == 0 => {
                provisioner
                    .deactivate(&provisioned, Some(self.backend_pid))
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e, user = %provisioned.user, database = %provisioned.database,
                "database user not deactivated: its provisioning lock is busy"
            ),
        }
    }
}

impl Drop for LiveUser<'_> {
    fn drop(&mut self) {
        // Only when end() never ran: the gateway cut the session because
        // its drain ran out of time.
        if let Some(provisioned) = self.provisioned.take() {
            self.provisioner.session_gone(&provisioned.key);
            tracing::warn!(
                user = %provisioned.user, database = %provisioned.database,
                "session dropped without ending; database user left active"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::{PermissionMatch, RoleSet, Target};
    use postern_api::Identity;
    use std::collections::BTreeMap;

    const ROLES: &str = r#"
kind: role
version: v7
metadata: { name: roles }
spec:
  options: { create_db_user_mode: keep }
  allow:
    db_labels: { kind: roles }
    db_names: ["*"]
    db_roles: [reader, writer]
---
kind: role
version: v7
metadata: { name: tables }
spec:
  options: { create_db_user_mode: keep }
  allow:
    db_labels: { kind: ["tables", "both"] }
    db_names: ["*"]
    db_permissions:
      - match: { object_kind: table, schema: public }
        permissions: [select]
---
kind: role
version: v7
metadata: { name: both }
spec:
  allow:
    db_labels: { kind: both }
    db_names: ["*"]
    db_roles: [reader]
"#;

    fn choose(kind: &str, requested: &[&str]) -> Result<Grants, String> {
        let set = RoleSet::from_roles(RoleSet::from_yaml_documents(ROLES).unwrap()).unwrap();
        let identity = Identity {
            username: "alice".into(),
            roles: vec!["roles".into(), "tables".into(), "both".into()],
            traits: Default::default(),
            expires_unix: 1_900_000_000,
        };
        let checker = set.checker(&identity).unwrap();
        let labels = BTreeMap::from([("kind".to_owned(), kind.to_owned())]);
        let target = Target {
            name: "db",
            labels: &labels,
            aws_account_id: None,
        };
        let requested: Vec<String> = requested.iter().map(|r| r.to_string()).collect();
        let allowed = checker.check(&target, "alice", Some("app")).unwrap();
        Grants::choose(&allowed, &requested).map_err(|e| e.client_fields().message)
    }

    #[test]
    fn a_session_gets_roles_or_table_privileges_never_both() {
        assert_eq!(
            choose("roles", &[]),
            Ok(Grants::Roles(vec!["reader".into(), "writer".into()]))
        );
        assert_eq!(
            choose("roles", &["writer"]),
            Ok(Grants::Roles(vec!["writer".into()]))
        );
        let Ok(Grants::Tables(rules)) = choose("tables", &[]) else {
            panic!("table privileges expected");
        };
        assert_eq!(rules[0].privileges, BTreeSet::from(["SELECT"]));
        let both = choose("both", &[]).unwrap_err();
        assert!(
            both.contains("give both db_roles [reader] and db_permissions"),
            "{both}"
        );
        let denied = choose("tables", &["reader"]).unwrap_err();
        assert!(denied.contains("allowed: []"), "{denied}");
    }

    fn rule(kind: Option<&str>, permissions: &[&str]) -> DbPermission {
        DbPermission {
            match_: PermissionMatch {
                object_kind: kind.map(str::to_owned),
                schema: Some("public".into()),
                name: None,
            },
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn table_rules_are_validated_and_normalized() {
        let ok = TablePermission::from_rule(&rule(Some("table"), &["select", " Insert"])).unwrap();
        assert_eq!(ok.privileges, BTreeSet::from(["INSERT", "SELECT"]));
        assert_eq!(ok.schema.as_deref(), Some("public"));
        let all = TablePermission::from_rule(&rule(None, &["ALL PRIVILEGES"])).unwrap();
        assert_eq!(all.privileges.len(), TABLE_PRIVILEGES.len());

        let err = |r: DbPermission| {
            TablePermission::from_rule(&r)
                .unwrap_err()
                .client_fields()
                .message
        };
        assert!(err(rule(Some("function"), &["EXECUTE"])).contains("\"function\""));
        assert!(err(rule(Some("table"), &["SELECT; DROP"])).contains("not a table privilege"));
        assert!(err(rule(Some("table"), &[])).contains("no permissions"));
    }
}
