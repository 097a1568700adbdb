//! Gateway state: users, CA material and audit events.
//!
//! The gateway talks to its state only through [`Store`], so the embedded
//! SQLite file can be swapped for a shared PostgreSQL store when several
//! gateway replicas run side by side.

mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

use crate::audit::AuditEvent;
use crate::ca::{CaKind, CaMaterial};

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
    /// Appends audit events in one transaction.
    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// The most recent audit events, newest last.
    fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
}
