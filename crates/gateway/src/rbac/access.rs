//! Access decisions for one identity on one database.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use postern_api::Identity;
use postern_api::identity::Traits;
use postern_api::wire::{AllowedValues, CatalogEntry};

use super::matcher::{LabelMatcher, RoleValue, name_matches, user_matches};
use super::template::expand_all;
use super::{AutoUserMode, DbPermission, Role, RoleConditions, RoleOptions, SessionLimits};

/// What RBAC needs to know about a database.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Name in the gateway catalog.
    pub name: &'a str,
    /// Labels matched by role `db_labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// AWS account of an AWS-hosted database; enables IAM role name/ARN
    /// equivalence in `db_users`.
    pub aws_account_id: Option<&'a str>,
}

/// Why a connection or a db role selection was refused. The text is meant
/// for the user: it says what was denied and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No role of the identity selects the database by its labels.
    #[error("access to database {database:?} denied: none of your roles allows this database")]
    NoRoleForDatabase {
        /// Catalog name of the database.
        database: String,
    },
    /// No role allows the database user.
    #[error("access to database {database:?} denied: no role allows db user {db_user:?}")]
    DbUser {
        /// Catalog name of the database.
        database: String,
        /// The requested database user.
        db_user: String,
    },
    /// No role allows the database name.
    #[error("access to database {database:?} denied: no role allows db name {db_name:?}")]
    DbName {
        /// Catalog name of the database.
        database: String,
        /// The requested database name.
        db_name: String,
    },
    /// Some role allows the user and some the name, but no single role both.
    #[error(
        "access to database {database:?} denied: no role allows db user {db_user:?} together with db name {db_name:?}"
    )]
    Combination {
        /// Catalog name of the database.
        database: String,
        /// The requested database user.
        db_user: String,
        /// The requested database name.
        db_name: String,
    },
    /// A deny rule of a role matches.
    #[error("access to database {database:?} is denied by role {role:?} for {subject} {value:?}")]
    ByRole {
        /// Catalog name of the database.
        database: String,
        /// The role whose deny rule matched.
        role: String,
        /// What was denied: `db user` or `db name`.
        subject: &'static str,
        /// The denied value.
        value: String,
    },
    /// Users are provisioned automatically, so only the own username works.
    #[error(
        "access to database {database:?} denied: database users are created automatically there; connect as {username:?}, not {db_user:?}"
    )]
    AutoUserOnly {
        /// Catalog name of the database.
        database: String,
        /// The requested database user.
        db_user: String,
        /// The identity's username, the only user allowed.
        username: String,
    },
    /// A requested database role is not among the allowed ones.
    #[error("db role {role:?} is not allowed; allowed: [{}]", allowed.join(", "))]
    DbRole {
        /// The refused database role.
        role: String,
        /// The database roles that may be requested.
        allowed: Vec<String>,
    },
}

/// One side of a role with templates expanded and labels compiled.
#[derive(Debug)]
struct Conditions {
    labels: LabelMatcher,
    db_names: Vec<RoleValue>,
    db_users: Vec<RoleValue>,
    db_roles: Vec<RoleValue>,
    db_permissions: Vec<DbPermission>,
}

impl Conditions {
    fn expand(conditions: &RoleConditions, traits: &Traits) -> Self {
        let labels = conditions
            .db_labels
            .iter()
            .map(|(key, values)| (key.clone(), expand_all(values, traits)))
            .collect();
        Self {
            labels: LabelMatcher::new(&labels),
            db_names: expand_all(&conditions.db_names, traits),
            db_users: expand_all(&conditions.db_users, traits),
            db_roles: expand_all(&conditions.db_roles, traits),
            db_permissions: conditions.db_permissions.clone(),
        }
    }

    fn matches_user(&self, db: &Target, db_user: &str) -> bool {
        self.db_users
            .iter()
            .any(|entry| user_matches(entry, db_user, db.aws_account_id))
    }

    fn matches_name(&self, db_name: &str) -> bool {
        self.db_names
            .iter()
            .any(|entry| name_matches(entry, db_name))
    }
}

/// A role of the identity, ready for checks.
#[derive(Debug)]
struct ExpandedRole {
    name: String,
    options: RoleOptions,
    allow: Conditions,
    deny: Conditions,
}

/// An identity's roles with templates expanded from its traits.
#[derive(Debug)]
pub struct AccessChecker {
    username: String,
    roles: Vec<ExpandedRole>,
}

impl AccessChecker {
    pub(crate) fn new(identity: &Identity, roles: Vec<&Role>) -> Self {
        let traits = &identity.traits;
        let roles = roles
            .into_iter()
            .map(|role| ExpandedRole {
                name: role.name.clone(),
                options: role.options.clone(),
                allow: Conditions::expand(&role.allow, traits),
                deny: Conditions::expand(&role.deny, traits),
            })
            .collect();
        Self {
            username: identity.username.clone(),
            roles,
        }
    }

    /// Roles whose allow labels select the database (whether or not they
    /// allow a particular db user and name).
    fn selecting<'s>(&'s self, db: &Target<'_>) -> impl Iterator<Item = &'s ExpandedRole> {
        let labels = db.labels;
        self.roles
            .iter()
            .filter(move |role| role.allow.labels.matches(labels))
    }

    /// Roles whose deny labels select the database.
    fn denying<'s>(&'s self, db: &Target<'_>) -> impl Iterator<Item = &'s ExpandedRole> {
        let labels = db.labels;
        self.roles
            .iter()
            .filter(move |role| role.deny.labels.matches(labels))
    }

    /// The shortest `max_session_ttl` among the roles, if any sets one.
    pub fn max_session_ttl(&self) -> Option<Duration> {
        self.roles
            .iter()
            .filter_map(|r| r.options.max_session_ttl)
            .min()
    }

    /// Whether live sessions end at the certificate's expiry: when any role
    /// says so (the strictest wins, as with every limit).
    pub fn disconnect_expired_cert(&self) -> bool {
        self.roles.iter().any(|r| r.options.disconnect_expired_cert)
    }

    /// Statement limits and session defaults on the database: those of the
    /// roles whose allow labels select it, the strictest winning.
    pub fn session_limits(&self, db: &Target) -> SessionLimits {
        SessionLimits::strictest(
            self.selecting(db)
                .map(|role| (role.name.as_str(), &role.options)),
        )
    }

    /// Effective auto-provisioning mode for the database: the strongest mode
    /// among the roles whose allow labels select it.
    pub fn auto_user_mode(&self, db: &Target) -> AutoUserMode {
        self.selecting(db)
            .map(|role| role.options.create_db_user_mode)
            .max()
            .unwrap_or_default()
    }

    /// Checks one connection. A missing db name defaults to the db user, as
    /// PostgreSQL does. With auto-provisioning on, the db user must be the
    /// identity's username and allow `db_users` is ignored (deny `db_users`
    /// still applies to that username: deny always wins).
    ///
    /// The answer carries the roles that allow exactly this db user and db
    /// name: the session's db roles and `db_permissions` come from those
    /// alone, so a role for another database name cannot add its grants.
    pub fn check<'a>(
        &'a self,
        db: &Target<'a>,
        db_user: &str,
        db_name: Option<&str>,
    ) -> Result<Allowed<'a>, Denied> {
        let database = || db.name.to_owned();
        let auto = self.auto_user_mode(db) != AutoUserMode::Off;
        if auto && db_user != self.username {
            return Err(Denied::AutoUserOnly {
                database: database(),
                db_user: db_user.to_owned(),
                username: self.username.clone(),
            });
        }
        let db_name = db_name.unwrap_or(db_user);

        let denying: Vec<_> = self.denying(db).collect();
        for role in &denying {
            let denied = if role.deny.matches_user(db, db_user) {
                ("db user", db_user)
            } else if role.deny.matches_name(db_name) {
                ("db name", db_name)
            } else {
                continue;
            };
            return Err(Denied::ByRole {
                database: database(),
                role: role.name.clone(),
                subject: denied.0,
                value: denied.1.to_owned(),
            });
        }

        // Allow needs one role that grants user and name together: two
        // roles must not combine into access neither grants on its own.
        let selecting: Vec<_> = self.selecting(db).collect();
        let user_ok = |role: &&ExpandedRole| auto || role.allow.matches_user(db, db_user);
        let name_ok = |role: &&ExpandedRole| role.allow.matches_name(db_name);
        let allowing: Vec<_> = selecting
            .iter()
            .copied()
            .filter(|role| user_ok(role) && name_ok(role))
            .collect();
        if !allowing.is_empty() {
            return Ok(Allowed {
                database: db.name,
                allowing,
                denying,
            });
        }
        Err(if selecting.is_empty() {
            Denied::NoRoleForDatabase {
                database: database(),
            }
        } else if !selecting.iter().any(user_ok) {
            Denied::DbUser {
                database: database(),
                db_user: db_user.to_owned(),
            }
        } else if !selecting.iter().any(name_ok) {
            Denied::DbName {
                database: database(),
                db_name: db_name.to_owned(),
            }
        } else {
            Denied::Combination {
                database: database(),
                db_user: db_user.to_owned(),
                db_name: db_name.to_owned(),
            }
        })
    }

    /// What the identity may do on the database, for the catalog; None when
    /// the database is out of reach (no role selects it, or every db user or
    /// every db name is denied or none is allowed).
    pub fn catalog_entry(
        &self,
        db: &Target,
        description: &str,
        protocol: &str,
        kind: &str,
    ) -> Option<CatalogEntry> {
        let selecting: Vec<_> = self.selecting(db).collect();
        if selecting.is_empty() {
            return None;
        }
        let denying: Vec<_> = self.denying(db).collect();
        let mode = self.auto_user_mode(db);

        let db_users = if mode == AutoUserMode::Off {
            spell_out(
                selecting.iter().flat_map(|r| &r.allow.db_users),
                denying.iter().flat_map(|r| &r.deny.db_users),
                |entry, user| user_matches(entry, user, db.aws_account_id),
            )
        } else if denying
            .iter()
            .any(|r| r.deny.matches_user(db, &self.username))
        {
            AllowedValues::default()
        } else {
            AllowedValues {
                allowed: vec![self.username.clone()],
                ..AllowedValues::default()
            }
        };
        let db_names = spell_out(
            selecting.iter().flat_map(|r| &r.allow.db_names),
            denying.iter().flat_map(|r| &r.deny.db_names),
            name_matches,
        );
        let reachable = |values: &AllowedValues| values.wildcard || !values.allowed.is_empty();
        if !reachable(&db_users) || !reachable(&db_names) {
            return None;
        }
        Some(CatalogEntry {
            name: db.name.to_owned(),
            description: description.to_owned(),
            protocol: protocol.to_owned(),
            kind: kind.to_owned(),
            labels: db.labels.clone(),
            db_users,
            db_names,
            // The catalog describes the database, not one session: it lists
            // every db role some db name may bring (the union over the roles
            // that select it). A connection gets only those of the roles that
            // allow its own db user and db name (`Allowed::db_roles`).
            db_roles: db_roles_of(&selecting, &denying),
            auto_user_mode: mode.as_str().to_owned(),
            limits: self.session_limits(db).to_wire(),
        })
    }
}

/// A connection [`AccessChecker::check`] allowed, with the roles that allow
/// it: what the session may be granted is derived from these only.
#[derive(Debug)]
pub struct Allowed<'a> {
    database: &'a str,
    /// Roles that select the database and allow its db user and db name.
    allowing: Vec<&'a ExpandedRole>,
    /// Roles whose deny labels select the database.
    denying: Vec<&'a ExpandedRole>,
}

impl Allowed<'_> {
    /// Catalog name of the database.
    pub fn database(&self) -> &str {
        self.database
    }

    /// The session's allowed db roles: the allowing roles' `db_roles` minus
    /// deny `db_roles` (`*` denies all), sorted and unique.
    pub fn db_roles(&self) -> Vec<String> {
        db_roles_of(&self.allowing, &self.denying)
    }

    /// Validates requested db roles; an empty request means all allowed.
    /// Returns the roles to grant, sorted and unique.
    pub fn select_db_roles(&self, requested: &[String]) -> Result<Vec<String>, Denied> {
        let allowed = self.db_roles();
        if requested.is_empty() {
            return Ok(allowed);
        }
        if let Some(role) = requested.iter().find(|r| !allowed.contains(r)) {
            return Err(Denied::DbRole {
                role: role.clone(),
                allowed,
            });
        }
        let selected: BTreeSet<&String> = requested.iter().collect();
        Ok(selected.into_iter().cloned().collect())
    }

    /// `db_permissions` of the allowing roles (for provisioning), without
    /// duplicates, in role order.
    pub fn db_permissions(&self) -> Vec<DbPermission> {
        let mut permissions: Vec<DbPermission> = Vec::new();
        for permission in self.allowing.iter().flat_map(|r| &r.allow.db_permissions) {
            if !permissions.contains(permission) {
                permissions.push(permission.clone());
            }
        }
        permissions
    }
}

/// The union of the `allowing` roles' allow `db_roles` minus the `denying`
/// roles' deny `db_roles` (`*` denies all), sorted and unique.
fn db_roles_of(allowing: &[&ExpandedRole], denying: &[&ExpandedRole]) -> Vec<String> {
    let deny: Vec<&RoleValue> = denying.iter().flat_map(|r| &r.deny.db_roles).collect();
    if deny.iter().any(|d| d.is_wildcard()) {
        return Vec::new();
    }
    let allowed: BTreeSet<&str> = allowing
        .iter()
        .flat_map(|role| &role.allow.db_roles)
        // `*` cannot be granted: provisioning grants named roles.
        .filter(|r| !r.is_wildcard())
        .map(RoleValue::as_str)
        .filter(|r| !deny.iter().any(|d| d.as_str() == *r))
        .collect();
    allowed.into_iter().map(str::to_owned).collect()
}

/// Spells out allowed values: explicit names not denied, the wildcard when
/// allowed and not denied by `*`, and the explicitly denied names.
fn spell_out<'a>(
    allow: impl Iterator<Item = &'a RoleValue>,
    deny: impl Iterator<Item = &'a RoleValue>,
    matches: impl Fn(&RoleValue, &str) -> bool,
) -> AllowedValues {
    let deny: Vec<&RoleValue> = deny.collect();
    if deny.iter().any(|d| d.is_wildcard()) {
        return AllowedValues::default();
    }
    let mut wildcard = false;
    let mut allowed = BTreeSet::new();
    for value in allow {
        if value.is_wildcard() {
            wildcard = true;
        } else if !deny.iter().any(|denied| matches(denied, value.as_str())) {
            allowed.insert(value.as_str().to_owned());
        }
    }
    let denied: BTreeSet<&str> = deny.iter().map(|d| d.as_str()).collect();
    AllowedValues {
        allowed: allowed.into_iter().collect(),
        wildcard,
        denied: denied.into_iter().map(str::to_owned).collect(),
    }
}
