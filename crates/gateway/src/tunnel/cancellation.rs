//! Cancel keys: the gateway hands each client its own BackendKeyData and maps
//! it to the database's real key, so a client never learns the real one and a
//! key is only honoured for the identity that owns it.
//!
//! The keys are plain data in the store ([`CancelRecord`]), so a
//! CancelRequest may reach any replica: the one serving the session stores
//! the key when the session starts and deletes it when the session ends;
//! whichever replica the cancel reaches looks it up, checks its owner and
//! sends the real key to the database it finds under the same name in its
//! own catalog. That is one insert and one delete per session, none per
//! statement.
//!
//! A replica that crashes leaves its keys behind. They point at backends
//! that ended with its sessions, so forwarding one at worst sends
//! PostgreSQL a key it ignores (a wrong secret is silently dropped). A
//! replica deletes its own leftovers when it starts under the same name
//! (`replica:` set in gateway.yaml); with the default name, new at every
//! start, they stay until removed by hand (`DELETE FROM cancel_keys WHERE
//! replica = '...'`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_pgwire::CancelKey;

use crate::store::{self, CancelRecord, Store, StoreError};

/// How many secrets are drawn before registering gives up; one collision
/// among 2³² secrets for the same pid is already unlikely.
const MAX_DRAWS: usize = 8;

/// Outcome of a cancel lookup.
#[derive(Debug)]
pub enum CancelDecision {
    /// Send the real key to the catalog database named in the record.
    Forward(CancelRecord),
    /// Unknown key, or owned by someone else: drop silently, as PostgreSQL does.
    Ignore,
    /// The identity sent too many cancels (to this replica).
    RateLimited,
}

/// The cancel keys of the sessions this replica serves, and the lookup of
/// anyone's.
pub struct CancelKeys {
    store: Arc<dyn Store>,
    replica: String,
    rate: Mutex<HashMap<String, (Instant, u32)>>,
    per_second: u32,
}

/// Deletes its key from the store when the session ends.
pub struct CancelKeyGuard {
    store: Arc<dyn Store>,
    key: CancelKey,
}

impl CancelKeyGuard {
    /// The gateway's key to give the client.
    pub fn key(&self) -> CancelKey {
        self.key
    }
}

impl Drop for CancelKeyGuard {
    fn drop(&mut self) {
        let (store, key) = (self.store.clone(), self.key);
        let remove = move || {
            if let Err(e) = store.remove_cancel_key(key.pid, key.secret) {
                // The key stays: a later cancel with it reaches a backend
                // that ended (or one with another secret), which ignores it.
                tracing::warn!(error = %e, pid = key.pid, "a cancel key could not be removed");
            }
        };
        // Sessions end on the runtime, which must not wait for the store.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl CancelKeys {
    /// The keys of `replica`, allowing `per_second` cancels per identity.
    pub fn new(store: Arc<dyn Store>, replica: &str, per_second: u32) -> Arc<Self> {
        Arc::new(CancelKeys {
            store,
            replica: replica.to_owned(),
            rate: Mutex::new(HashMap::new()),
            per_second,
        })
    }

    /// Deletes the keys an earlier process under this replica's name left
    /// behind (none of its sessions can be alive); returns how many.
    pub fn forget_leftovers(&self) -> Result<u64, StoreError> {
        self.store.remove_replica_cancel_keys(&self.replica)
    }

    /// Registers a session's real key and returns the key for the client:
    /// the database's real process id with a secret of the gateway's own,
    /// so the record lives exactly as long as the guard.
    ///
    /// The pid is no secret (`pg_backend_pid()`, `pg_stat_activity` show
    /// it), and clients rely on it: pgAdmin's Cancel runs
    /// `pg_cancel_backend(pid)` on another connection, and `db queries`
    /// lists real pids. Only the secret, never the database's, protects
    /// the key.
    pub async fn register(
        self: &Arc<Self>,
        owner: &str,
        database: &str,
        upstream_addr: String,
        real: CancelKey,
    ) -> Result<CancelKeyGuard, StoreError> {
        let mut record = CancelRecord {
            client: real,
            owner: owner.to_owned(),
            replica: self.replica.clone(),
            database: database.to_owned(),
            upstream_addr,
            real,
        };
        for _ in 0..MAX_DRAWS {
            // Two databases behind the gateways may share a pid: the store
            // refuses a live key twice, and another secret is drawn.
            record.client.secret = rand::random();
            if record.client.secret == real.secret {
                continue;
            }
            let store = self.store.clone();
            let stored = record.clone();
            if store::blocking(move || store.put_cancel_key(&stored)).await? {
                return Ok(CancelKeyGuard {
                    store: self.store.clone(),
                    key: record.client,
                });
            }
        }
        Err(StoreError::Unavailable(format!(
            "no free cancel key for pid {} after {MAX_DRAWS} draws",
            real.pid
        )))
    }

    /// Looks a cancel up for `identity`, among the keys of every replica.
    pub async fn decide(&self, identity: &str, key: CancelKey) -> CancelDecision {
        if !self.allow_rate(identity) {
            return CancelDecision::RateLimited;
        }
        let store = self.store.clone();
        match store::blocking(move || store.cancel_key(key.pid, key.secret)).await {
            Ok(Some(record)) if record.owner == identity => CancelDecision::Forward(record),
            Ok(_) => CancelDecision::Ignore,
            Err(e) => {
                tracing::warn!(error = %e, "a cancel key could not be looked up");
                CancelDecision::Ignore
            }
        }
    }

    fn allow_rate(&self, identity: &str) -> bool {
        let now = Instant::now();
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle identities so the table stays small.
        if rate.len() > 10_000 {
            rate.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let (start, count) = rate.entry(identity.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    const REAL: CancelKey = CancelKey {
        pid: 4242,
        secret: 7,
    };

    fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(dir.path()).unwrap())
    }

    async fn register(keys: &Arc<CancelKeys>, owner: &str) -> CancelKeyGuard {
        keys.register(owner, "pg", "db.internal:5432".into(), REAL)
            .await
            .unwrap()
    }

    /// The key's record disappears a moment after its guard, on a worker.
    async fn gone(store: &Arc<dyn Store>, key: CancelKey) {
        while store.cancel_key(key.pid, key.secret).unwrap().is_some() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn keys_are_honoured_only_for_their_owner_and_only_while_the_session_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let keys = CancelKeys::new(store.clone(), "a", 100);
        let guard = register(&keys, "alice").await;
        let key = guard.key();
        assert_eq!(key.pid, 4242, "clients see the real pid");
        assert_ne!(key.secret, 7, "clients never see the real secret");
        assert!(matches!(
            keys.decide("bob", key).await,
            CancelDecision::Ignore
        ));
        match keys.decide("alice", key).await {
            CancelDecision::Forward(record) => {
                assert_eq!((record.real, record.database.as_str()), (REAL, "pg"));
                let shown = format!("{record:?}");
                assert!(!shown.contains("secret: 7"), "{shown}");
            }
            other => panic!("the owner's cancel is forwarded, not {other:?}"),
        }
        drop(guard);
        gone(&store, key).await;
        assert!(matches!(
            keys.decide("alice", key).await,
            CancelDecision::Ignore
        ));
    }

    #[tokio::test]
    async fn a_key_registered_by_one_replica_is_honoured_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            CancelKeys::new(store(&dir), "a", 100),
            CancelKeys::new(store(&dir), "b", 100),
        );
        let guard = register(&a, "alice").await;
        match b.decide("alice", guard.key()).await {
            CancelDecision::Forward(record) => {
                assert_eq!((record.replica.as_str(), record.real), ("a", REAL))
            }
            other => panic!("forwarded by the other replica, not {other:?}"),
        }
        // A replica starting again under its name forgets its leftovers.
        std::mem::forget(guard);
        assert_eq!(a.forget_leftovers().unwrap(), 1);
        assert_eq!(b.forget_leftovers().unwrap(), 0);
    }

    #[tokio::test]
    async fn unknown_keys_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let keys = CancelKeys::new(store(&dir), "a", 100);
        let guard = register(&keys, "alice").await;
        for wrong in [
            REAL,
            CancelKey {
                pid: 4243,
                secret: guard.key().secret,
            },
        ] {
            assert!(matches!(
                keys.decide("alice", wrong).await,
                CancelDecision::Ignore
            ));
        }
    }

    #[tokio::test]
    async fn cancels_are_rate_limited_per_identity() {
        let dir = tempfile::tempdir().unwrap();
        let keys = CancelKeys::new(store(&dir), "a", 3);
        let guard = register(&keys, "alice").await;
        for _ in 0..3 {
            assert!(matches!(
                keys.decide("alice", guard.key()).await,
                CancelDecision::Forward(..)
            ));
        }
        assert!(matches!(
            keys.decide("alice", guard.key()).await,
            CancelDecision::RateLimited
        ));
        // Another identity has its own budget.
        assert!(matches!(
            keys.decide("bob", guard.key()).await,
            CancelDecision::Ignore
        ));
    }
}
