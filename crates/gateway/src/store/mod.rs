//! Gateway state: users, CA material, audit events, leases, and what one
//! replica hands over to another: cancel keys, pending single sign-on
//! logins and used one-time-code steps.
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

pub use postgres::{MIGRATION_LOCK_KEY, PostgresStore, SCHEMA_VERSION};
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

/// Runs a store call off the async workers (the [`Store`] trait is
/// synchronous).
pub async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| StoreError::Unavailable(format!("a store call failed: {e}")))?
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
    /// them; the store keeps text and the time), in one transaction.
    fn append_audit(&self, lines: &[AuditLine]) -> Result<(), StoreError>;
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

    /// Events stored at or after `since_ms` (their own `time_ms`), oldest
    /// first, at most `limit` of them and only past `after` (the last event
    /// of the previous page), so a caller reads any number in pages.
    fn audit_since(
        &self,
        since_ms: i64,
        after: Option<AuditPosition>,
        limit: usize,
    ) -> Result<Vec<StoredAudit>, StoreError>;
    /// Deletes the events older than `before_ms`; returns how many.
    fn delete_audit_before(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Records a live session's cancel key; false (nothing stored) when a
    /// live key with the same client-facing pid and secret exists, so the
    /// caller draws another secret.
    fn put_cancel_key(&self, key: &CancelRecord) -> Result<bool, StoreError>;
    /// The live cancel key a client presents, whichever replica stored it.
    fn cancel_key(&self, pid: i32, secret: i32) -> Result<Option<CancelRecord>, StoreError>;
    /// Forgets a cancel key (its session ended).
    fn remove_cancel_key(&self, pid: i32, secret: i32) -> Result<(), StoreError>;
    /// Forgets every cancel key `replica` stored; a replica calls it at
    /// start, when none of its sessions can be alive. Returns how many.
    fn remove_replica_cancel_keys(&self, replica: &str) -> Result<u64, StoreError>;

    /// Records that `user` used the one-time code of time step `step`;
    /// false when that step or a later one was used already (by any
    /// replica), so each code is accepted once (RFC 6238 §5.2).
    fn accept_totp_step(&self, user: &str, step: u64) -> Result<bool, StoreError>;

    /// The single sign-on logins in progress (not expired) in all and from
    /// `source`, after deleting expired ones.
    fn sso_logins_pending(&self, source: &str) -> Result<PendingCounts, StoreError>;
    /// Stores a login sent to the identity provider, until `ttl` passes.
    fn put_sso_login(&self, login: &SsoLoginRecord, ttl: Duration) -> Result<(), StoreError>;
    /// Takes the login the provider's `state` belongs to, once: the state
    /// no longer finds it afterwards. `None` when unknown, used or expired.
    fn take_sso_state(&self, state: &str) -> Result<Option<SsoLoginRecord>, StoreError>;
    /// Replaces a login's data and expiry; false when it is gone.
    fn update_sso_login(&self, id: &str, body: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// A login by id, unless expired.
    fn sso_login(&self, id: &str) -> Result<Option<SsoLoginRecord>, StoreError>;
    /// Counts a wrong code or verifier for a login and deletes the login at
    /// `max` of them.
    fn fail_sso_login(&self, id: &str, max: u32) -> Result<(), StoreError>;
    /// Deletes a login and returns it, unless expired; of concurrent takers
    /// only one gets it.
    fn take_sso_login(&self, id: &str) -> Result<Option<SsoLoginRecord>, StoreError>;

    /// The device sign-ins in progress (not expired) in all and from
    /// `source`, after deleting expired ones.
    fn device_logins_pending(&self, source: &str) -> Result<PendingCounts, StoreError>;
    /// Stores a device sign-in until `ttl` passes; false (nothing stored)
    /// when its id or user code is taken, so the caller draws another.
    fn put_device_login(
        &self,
        login: &DeviceLoginRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// A device sign-in by id, unless expired.
    fn device_login(&self, id: &str) -> Result<Option<DeviceLoginRecord>, StoreError>;
    /// A device sign-in by the code the person types, unless expired.
    fn device_login_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceLoginRecord>, StoreError>;
    /// Replaces a device sign-in's data if it still is `old` (compare and
    /// swap, so of two replicas moving one sign-in on only one succeeds);
    /// false when it changed or is gone.
    fn replace_device_login(&self, id: &str, old: &str, new: &str) -> Result<bool, StoreError>;
    /// Deletes a device sign-in and returns it, unless expired; of
    /// concurrent takers only one gets it.
    fn take_device_login(&self, id: &str) -> Result<Option<DeviceLoginRecord>, StoreError>;
}

/// Where an audit event sits in the order events are read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditPosition {
    /// The event's time.
    pub time_ms: i64,
    /// Its number in the store (insertion order), which breaks ties.
    pub id: i64,
}

/// An audit event to store: its time (for `audit ls --since` and
/// retention) and its JSON line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLine {
    /// The event's time, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The event as one JSON line.
    pub json: String,
}

/// A stored audit event and where it sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAudit {
    /// Where it sits, to read on after it.
    pub position: AuditPosition,
    /// The event as one JSON line.
    pub json: String,
}

/// A live session's cancel key as plain data, so that a CancelRequest
/// reaching any replica can be forwarded: the client's key, whose it is,
/// and the database's real key behind it.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRecord {
    /// The key the client got (the backend's real pid, the gateway's secret).
    pub client: postern_pgwire::CancelKey,
    /// The Postern user whose session it is; only they may cancel.
    pub owner: String,
    /// The replica serving the session.
    pub replica: String,
    /// The catalog database, which the cancelling replica resolves itself.
    pub database: String,
    /// The database's address when the key was stored, for diagnosis.
    pub upstream_addr: String,
    /// The database's real key; a secret, never logged or shown.
    pub real: postern_pgwire::CancelKey,
}

impl std::fmt::Debug for CancelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // CancelKey's own Debug leaves the secrets out.
        f.debug_struct("CancelRecord")
            .field("client", &self.client)
            .field("owner", &self.owner)
            .field("replica", &self.replica)
            .field("database", &self.database)
            .field("upstream_addr", &self.upstream_addr)
            .field("real", &self.real)
            .finish()
    }
}

/// A single sign-on login in progress, as the store keeps it: what it is
/// looked up by, and the login module's own data.
#[derive(Clone, PartialEq, Eq)]
pub struct SsoLoginRecord {
    /// The login's id (the client's `request_id`).
    pub id: String,
    /// The `state` sent to the provider, until the provider's redirect
    /// used it.
    pub state: Option<String>,
    /// The client's address, for the per-source limit.
    pub source: String,
    /// When the login started, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The login's data (JSON; holds PKCE verifier, nonce and, once signed,
    /// the certificate): never logged.
    pub body: String,
}

impl std::fmt::Debug for SsoLoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoLoginRecord")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// A device sign-in (RFC 8628) in progress, as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceLoginRecord {
    /// SHA-256 (hex) of the device code the client polls with.
    pub id: String,
    /// The code the person types, normalized (eight letters, no dash).
    pub user_code: String,
    /// The client's address, for the per-source limit.
    pub source: String,
    /// When the sign-in started, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The sign-in's data (JSON; once approved it holds the certificate):
    /// never logged.
    pub body: String,
}

impl std::fmt::Debug for DeviceLoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLoginRecord")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// Single sign-on (or device) logins in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PendingCounts {
    /// In all.
    pub total: usize,
    /// From the source asked about.
    pub from_source: usize,
    /// When the oldest of all started (ms since the epoch).
    pub oldest_ms: Option<i64>,
    /// When the oldest from the source started.
    pub oldest_from_source_ms: Option<i64>,
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
