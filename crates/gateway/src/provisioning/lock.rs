//! One provisioning at a time per (database server, user).
//!
//! Two layers: an async mutex per key for the tasks of this gateway (the
//! fast path, and fair), then a lease in the shared store for other gateway
//! replicas. The lease expires on its own when its holder dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::store::Store;

/// How often a lease held by another replica is tried again.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another holder kept it past the deadline.
    #[error("still held by another provisioning after the deadline")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The blocking store task failed.
    #[error("store task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The locks of one gateway process.
pub struct ProvisioningLocks {
    store: Arc<dyn Store>,
    /// Unique per process, so a restarted gateway never mistakes a lease of
    /// its previous life for its own.
    process: String,
    local: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    next: std::sync::atomic::AtomicU64,
}

/// A held lock; released (lease first, then the local mutex) when dropped.
pub struct LockGuard {
    store: Arc<dyn Store>,
    key: String,
    holder: String,
    local: Option<OwnedMutexGuard<()>>,
}

impl ProvisioningLocks {
    /// Locks backed by `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let process = format!("{:016x}", rand::random::<u64>());
        ProvisioningLocks {
            store,
            process,
            local: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Takes the lock for `key`, waiting until `deadline` at most. `ttl`
    /// bounds how long the lease survives a holder that dies with it.
    pub async fn lock(
        &self,
        key: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<LockGuard, LockError> {
        let mutex = self
            .local
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .clone();
        let local = tokio::time::timeout_at(deadline, mutex.lock_owned())
            .await
            .map_err(|_| LockError::Busy)?;
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!("{}-{n}", self.process);
        loop {
            let (store, k, h) = (self.store.clone(), key.to_owned(), holder.clone());
            if tokio::task::spawn_blocking(move || store.try_lease(&k, &h, ttl)).await?? {
                break;
            }
            if Instant::now() + LEASE_POLL > deadline {
                return Err(LockError::Busy);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
        self.forget_unused();
        Ok(LockGuard {
            store: self.store.clone(),
            key: key.to_owned(),
            holder,
            local: Some(local),
        })
    }

    /// Drops local mutexes nobody holds or waits for, so the map does not
    /// grow with every user ever seen.
    fn forget_unused(&self) {
        self.local
            .lock()
            .unwrap()
            .retain(|_, mutex| Arc::strong_count(mutex) > 1);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let holder = std::mem::take(&mut self.holder);
        let local = self.local.take();
        let release = move || {
            if let Err(e) = store.release_lease(&key, &holder) {
                // The lease expires by itself; until then others wait.
                tracing::warn!(error = %e, %key, "provisioning lease could not be released");
            }
            // Only now may the next local waiter try the lease.
            drop(local);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(release);
            }
            Err(_) => release(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn one_holder_per_key_and_the_next_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let locks = Arc::new(ProvisioningLocks::new(store.clone()));
        let ttl = Duration::from_secs(60);
        let soon = || Instant::now() + Duration::from_millis(200);

        let first = locks.lock("db/alice", ttl, soon()).await.unwrap();
        // Another key is independent.
        let other = locks.lock("db/bob", ttl, soon()).await.unwrap();
        assert!(matches!(
            locks.lock("db/alice", ttl, soon()).await,
            Err(LockError::Busy)
        ));
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                locks
                    .lock("db/alice", ttl, Instant::now() + Duration::from_secs(10))
                    .await
                    .map(|_| ())
            })
        };
        drop(first);
        waiter.await.unwrap().unwrap();
        drop(other);

        // A lease held by another replica (same store, other process) blocks
        // until it is released.
        assert!(store.try_lease("db/carol", "elsewhere", ttl).unwrap());
        assert!(matches!(
            locks.lock("db/carol", ttl, soon()).await,
            Err(LockError::Busy)
        ));
        store.release_lease("db/carol", "elsewhere").unwrap();
        locks.lock("db/carol", ttl, soon()).await.unwrap();
    }
}
