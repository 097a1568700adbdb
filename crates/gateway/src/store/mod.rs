//! Gateway state: users, CA material, audit events and leases.
//!
//! The gateway talks to its state only through [`Store`], so the embedded
//! SQLite file can be swapped for a shared PostgreSQL store when several
//! gateway replicas run side by side.
//!
//! The trait is synchronous, and this first PostgreSQL increment keeps it
//! so: its callers include the CLI's plain `main`, the audit writer's std
//! thread and tokio tasks (the latter already move store calls onto
//! `spawn_blocking` where they sit on a request path), and turning every
//! one of them async at once would touch most of the gateway and the test
//! fixtures. [`PostgresStore`] therefore drives its async client on its own
//! small runtime and hands results back over a std channel, which never
//! panics on a tokio worker (unlike `block_on`). Making the trait async is
//! the next step once the callers are moved.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod kek;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use postgres::{MIGRATION_LOCK_KEY, PostgresStore};
pub use sqlite::SqliteStore;

use crate::ca::{CaKind, CaMaterial};
use crate::config::{ConfigError, GatewayConfig, StoreConfig};

/// Opens the store `config` names: the PostgreSQL store when `store:
/// postgres` is set, else SQLite in `data_dir`.
pub fn open(config: &GatewayConfig) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match &config.store {
        StoreConfig::Sqlite => std::sync::Arc::new(SqliteStore::open(&config.data_dir)?),
        StoreConfig::Postgres(pg) => std::sync::Arc::new(PostgresStore::open(pg)?),
    })
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database reported an error.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The store's directory could not be prepared.
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    /// The PostgreSQL store reported an error.
    #[error("store: PostgreSQL: {}", describe_pg(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL store cannot be reached or set up.
    #[error("store: {0}")]
    Unavailable(String),
    /// The store's configuration is incomplete or its secrets unreadable.
    #[error("store: {0}")]
    Config(#[from] ConfigError),
    /// Another (newer) gateway migrated the shared store past this binary.
    #[error(
        "store: the database's schema is version {found}, newer than version {known} that this gateway knows; run a gateway release that knows version {found}"
    )]
    SchemaTooNew {
        /// Version found in the store.
        found: i32,
        /// Latest version this binary can migrate to.
        known: i32,
    },
    /// A CA key could not be sealed or opened with the key-encryption key.
    #[error("store: {0}")]
    Kek(String),
}

/// The server's own words for a database error, else the client's.
fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A time in milliseconds since the Unix epoch, as stores keep them.
fn time_of(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A local Postern user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Username.
    pub name: String,
    /// argon2 PHC string; never logged.
    pub password_hash: String,
    /// Postern roles.
    pub roles: Vec<String>,
    /// `internal.*` traits.
    pub traits: BTreeMap<String, Vec<String>>,
    /// Secret for one-time codes (TOTP); logins then need a code too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpSecret>,
}

/// A TOTP secret, base32 as authenticator apps show it. Never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TotpSecret(pub String);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// An administrator's lock on a Postern user: while it applies, the user's
/// certificates open nothing and their live sessions end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Identifier for `locks rm` (`lock-` and random hex).
    pub id: String,
    /// The Postern username it applies to.
    pub user: String,
    /// The administrator's words, shown to the locked person.
    pub message: Option<String>,
    /// When it was added, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When it stops applying; `None` until removed.
    pub expires_ms: Option<i64>,
}

/// Persistent gateway state.
pub trait Store: Send + Sync + 'static {
    /// A user by name.
    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Creates or replaces a user.
    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Removes a user; false when there was none.
    fn delete_user(&self, name: &str) -> Result<bool, StoreError>;
    /// All users, by name.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Returns the stored CA of this kind, storing `fresh` first if none exists
    /// (so concurrent first starts agree on one CA).
    fn ca_or_insert(&self, kind: CaKind, fresh: &CaMaterial) -> Result<CaMaterial, StoreError>;
    /// Appends audit events, each a JSON line (the audit module encodes
    /// them; the store only keeps text), in one transaction.
    fn append_audit(&self, lines: &[String]) -> Result<(), StoreError>;
    /// The most recent audit events as stored JSON, newest last.
    fn recent_audit(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Adds a lock.
    fn add_lock(&self, lock: &Lock) -> Result<(), StoreError>;
    /// The locks that apply now, of one user or of everyone, oldest first.
    fn locks(&self, user: Option<&str>) -> Result<Vec<Lock>, StoreError>;
    /// Removes a lock; false when there was none with that id.
    fn remove_lock(&self, id: &str) -> Result<bool, StoreError>;
    /// Takes the lease `key` for `holder` until `ttl` has passed; false when
    /// another holder's lease has not expired yet. Leases serialize work
    /// (user provisioning) across gateway replicas sharing the store; the
    /// expiry frees a lease whose holder died.
    fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Gives back a lease; does nothing unless `holder` holds it.
    fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;
    /// The run of failed logins counted under `key` (a user or a source
    /// address), if any. In the store so replicas share the budgets.
    fn login_failures(&self, key: &str) -> Result<Option<FailureRun>, StoreError>;
    /// Counts a failed login under `key` and returns the run it belongs to.
    /// A run that began more than `run_length` ago is replaced by a new one;
    /// runs of any key whose last failure is older than `forget_after` are
    /// deleted, so strangers' guesses do not pile up.
    fn add_login_failure(
        &self,
        key: &str,
        run_length: Duration,
        forget_after: Duration,
    ) -> Result<FailureRun, StoreError>;
    /// Forgets the failed logins under `key` (after a successful login).
    fn clear_login_failures(&self, key: &str) -> Result<(), StoreError>;
    /// Answers a trivial query: the store is reachable (for `/v1/ready`).
    fn ping(&self) -> Result<(), StoreError>;
}

/// Failed logins under one key, counted from the first of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureRun {
    /// Failures in the run.
    pub count: u32,
    /// When the run began.
    pub first: SystemTime,
    /// When its latest failure happened.
    pub last: SystemTime,
}
