//! When a session certificate stops opening anything: at its expiry, and
//! while an administrator's lock applies to its user.
//!
//! Both are checked by the gateway itself on every tunnel connection and
//! every API call. The TLS handshake is not enough: a resumed TLS session
//! restores the certificate of its first handshake without checking it
//! again, so yesterday's certificate would still open today's session.
//!
//! Locks live in the store, so one added by `postern-gateway locks add`
//! (another process) applies to the next connection at once. Live sessions
//! learn of new locks from a poller that reads the store every
//! `limits.lock_poll` (1 s by default) and publishes what it found; a
//! session ends when a lock on its user appears. Polling, rather than a
//! notification, works the same for every store and for a lock written by
//! any process.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_api::Identity;
use postern_pgwire::ErrorFields;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditKind, record_now};
use crate::store::{Lock, Store, StoreError};

/// Longest lock message: it is shown in one error line.
pub const LOCK_MESSAGE_MAX: usize = 300;

/// Why an identity may no longer be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    /// The session certificate's lifetime is over.
    #[error("your Postern session expired; log in again")]
    Expired,
    /// An administrator locked the user.
    #[error("access was locked by an administrator{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Locked {
        /// The administrator's words.
        message: Option<String>,
    },
    /// The locks could not be read, so access is refused rather than
    /// granted blindly (details in the log).
    #[error("the gateway cannot check access right now; try again shortly")]
    Unknown,
}

impl Revoked {
    /// The FATAL error that ends a live session for this reason.
    pub fn session_end_fields(&self) -> ErrorFields {
        let code = match self {
            // PostgreSQL's code for a session an administrator ended.
            Revoked::Locked { .. } => "57P01",
            Revoked::Expired | Revoked::Unknown => "28000",
        };
        ErrorFields::fatal(code, format!("postern: {self}"))
    }
}

/// Expiry and lock checks, and the live view of locks sessions wait on.
pub struct Revocations {
    store: Arc<dyn Store>,
    locks: watch::Receiver<Arc<Vec<Lock>>>,
}

impl Revocations {
    /// Starts the poller on the current runtime; it stops with `shutdown`.
    pub fn start(store: Arc<dyn Store>, poll: Duration, shutdown: CancellationToken) -> Arc<Self> {
        let initial = store.locks(None).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read locks");
            Vec::new()
        });
        let (tx, locks) = watch::channel(Arc::new(initial));
        tokio::spawn(poll_locks(store.clone(), tx, poll, shutdown));
        Arc::new(Revocations { store, locks })
    }

    /// Whether `identity` may be used now: not expired, its user not locked.
    pub fn check(&self, identity: &Identity) -> Result<(), Revoked> {
        if expires_in(identity).is_zero() {
            return Err(Revoked::Expired);
        }
        self.check_user(&identity.username)
    }

    /// Whether `username` is free of locks (for logins, before a
    /// certificate is issued). Reads the store, so a lock just added by
    /// another process applies at once.
    pub fn check_user(&self, username: &str) -> Result<(), Revoked> {
        match self.store.locks(Some(username)) {
            Ok(locks) => match locks.into_iter().next() {
                Some(lock) => Err(Revoked::Locked {
                    message: lock.message,
                }),
                None => Ok(()),
            },
            Err(error) => {
                tracing::error!(%error, "cannot read locks; refusing access");
                Err(Revoked::Unknown)
            }
        }
    }

    /// Completes when a live session of `identity` must end: when a lock on
    /// its user appears, and also at the certificate's expiry when
    /// `at_expiry` (role option `disconnect_expired_cert`).
    pub async fn ended(&self, identity: &Identity, at_expiry: bool) -> Revoked {
        let mut locks = self.locks.clone();
        let locked = async {
            loop {
                let seen = locks
                    .wait_for(|locks| locks.iter().any(|l| l.user == identity.username))
                    .await
                    .map(drop);
                if seen.is_err() {
                    // The poller stopped: the gateway is shutting down,
                    // which ends every session anyway.
                    return std::future::pending().await;
                }
                // The published list may be up to one poll old (a lock
                // removed a moment ago): the store decides.
                match self.check_user(&identity.username) {
                    Err(revoked) => return revoked,
                    Ok(()) => {
                        if locks.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                    }
                }
            }
        };
        if !at_expiry {
            return locked.await;
        }
        tokio::select! {
            revoked = locked => revoked,
            () = tokio::time::sleep(expires_in(identity)) => Revoked::Expired,
        }
    }
}

/// Locks `user` for `ttl` (until removed when `None`) and audits it. The
/// message is shown to the locked person: it must fit in one line.
pub fn add_lock(
    store: &dyn Store,
    user: &str,
    ttl: Option<Duration>,
    message: Option<String>,
) -> Result<Lock, LockError> {
    if let Some(message) = &message
        && (message.chars().count() > LOCK_MESSAGE_MAX || message.chars().any(char::is_control))
    {
        return Err(LockError::BadMessage);
    }
    let created_ms = unix_ms(SystemTime::now());
    let lock = Lock {
        id: format!("lock-{}", hex::encode(rand::random::<[u8; 6]>())),
        user: user.to_owned(),
        message,
        created_ms,
        expires_ms: ttl.map(|ttl| created_ms.saturating_add(unix_ms(UNIX_EPOCH + ttl))),
    };
    store.add_lock(&lock)?;
    record_now(
        store,
        AuditKind::LockAdded {
            id: lock.id.clone(),
            user: lock.user.clone(),
            message: lock.message.clone(),
            expires_ms: lock.expires_ms,
        },
    )?;
    Ok(lock)
}

/// Removes a lock and audits it; false when there was none with that id.
pub fn remove_lock(store: &dyn Store, id: &str) -> Result<bool, LockError> {
    let removed = store.remove_lock(id)?;
    if removed {
        record_now(store, AuditKind::LockRemoved { id: id.to_owned() })?;
    }
    Ok(removed)
}

/// Why a lock could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The message is too long or has control characters.
    #[error("the lock message must be one line of at most {LOCK_MESSAGE_MAX} characters")]
    BadMessage,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Time left until the identity's certificate expires (zero once it has).
fn expires_in(identity: &Identity) -> Duration {
    let expires = UNIX_EPOCH + Duration::from_secs(identity.expires_unix.max(0).unsigned_abs());
    expires
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// Reads the locks every `poll` and publishes them when they changed.
async fn poll_locks(
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<Vec<Lock>>>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.locks(None) {
            Ok(now) => {
                tx.send_if_modified(|current| {
                    let changed = **current != now;
                    if changed {
                        *current = Arc::new(now);
                    }
                    changed
                });
            }
            Err(error) => tracing::warn!(%error, "cannot read locks; keeping the last ones read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn identity(user: &str, expires_in: Duration) -> Identity {
        Identity {
            username: user.into(),
            roles: vec![],
            traits: Default::default(),
            expires_unix: (SystemTime::now() + expires_in)
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        }
    }

    fn lock(user: &str, message: &str) -> Lock {
        Lock {
            id: format!("lock-{user}"),
            user: user.into(),
            message: Some(message.into()),
            created_ms: 0,
            expires_ms: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_and_locks_are_checked_and_live_sessions_see_new_locks() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let shutdown = CancellationToken::new();
        let revocations =
            Revocations::start(store.clone(), Duration::from_millis(20), shutdown.clone());
        let alice = identity("alice", Duration::from_secs(3600));
        assert_eq!(revocations.check(&alice), Ok(()));
        assert_eq!(
            revocations.check(&identity("alice", Duration::ZERO)),
            Err(Revoked::Expired)
        );

        let live = revocations.ended(&alice, false);
        let bob = identity("bob", Duration::from_secs(3600));
        let bob_live = revocations.ended(&bob, false);
        store.add_lock(&lock("alice", "incident 42")).unwrap();
        // Refused at once, before the poller has run.
        let locked = Revoked::Locked {
            message: Some("incident 42".into()),
        };
        assert_eq!(revocations.check(&alice), Err(locked.clone()));
        assert_eq!(revocations.check_user("alice"), Err(locked.clone()));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), live).await,
            Ok(locked.clone())
        );
        assert_eq!(
            locked.session_end_fields().message,
            "postern: access was locked by an administrator: incident 42"
        );
        // Bob's session is not ended by alice's lock.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), bob_live)
                .await
                .is_err()
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_removed_a_moment_ago_ends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        store.add_lock(&lock("alice", "brief")).unwrap();
        // Polls so rarely that the published list still has the lock.
        let revocations = Revocations::start(
            store.clone(),
            Duration::from_secs(3600),
            CancellationToken::new(),
        );
        assert!(store.remove_lock("lock-alice").unwrap());
        let alice = identity("alice", Duration::from_secs(3600));
        assert_eq!(revocations.check(&alice), Ok(()));
        let live =
            tokio::time::timeout(Duration::from_millis(200), revocations.ended(&alice, false));
        assert!(live.await.is_err(), "the session goes on");
    }

    #[tokio::test(start_paused = true)]
    async fn disconnect_at_expiry_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let revocations =
            Revocations::start(store, Duration::from_secs(1), CancellationToken::new());
        let soon = identity("sam", Duration::from_secs(1));
        let ended = tokio::time::timeout(Duration::from_secs(5), revocations.ended(&soon, true));
        assert_eq!(ended.await, Ok(Revoked::Expired));
        let not_asked =
            tokio::time::timeout(Duration::from_millis(1500), revocations.ended(&soon, false));
        assert!(not_asked.await.is_err());
    }
}
