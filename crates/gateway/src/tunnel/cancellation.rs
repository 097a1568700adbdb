//! Cancel keys: the gateway hands each client its own BackendKeyData and maps
//! it to the database's real key, so a client never learns the real one and a
//! key is only honoured for the identity that owns it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_pgwire::CancelKey;

use crate::upstream::Upstream;

/// Where a cancel for one gateway key goes.
struct Target {
    owner: String,
    upstream: Arc<Upstream>,
    real: CancelKey,
}

/// Outcome of a cancel lookup.
pub enum CancelDecision {
    /// Forward to this database with the real key.
    Forward(Arc<Upstream>, CancelKey),
    /// Unknown key, or owned by someone else: drop silently, as PostgreSQL does.
    Ignore,
    /// The identity sent too many cancels.
    RateLimited,
}

/// The live cancel keys of this gateway.
pub struct CancelMap {
    keys: Mutex<HashMap<CancelKey, Target>>,
    rate: Mutex<HashMap<String, (Instant, u32)>>,
    per_second: u32,
}

/// Removes its key from the map when the session ends.
pub struct CancelKeyGuard {
    map: Arc<CancelMap>,
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
        self.map.keys.lock().unwrap().remove(&self.key);
    }
}

impl CancelMap {
    /// An empty map allowing `per_second` cancels per identity.
    pub fn new(per_second: u32) -> Arc<Self> {
        Arc::new(CancelMap {
            keys: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
            per_second,
        })
    }

    /// Registers a session's real key and returns the key for the client:
    /// the database's real process id with a secret of the gateway's own,
    /// so the entry lives exactly as long as the guard.
    ///
    /// The pid is no secret (`pg_backend_pid()`, `pg_stat_activity` show
    /// it), and clients rely on it: pgAdmin's Cancel runs
    /// `pg_cancel_backend(pid)` on another connection, and `db queries`
    /// lists real pids. Only the secret, never the database's, protects
    /// the key.
    pub fn register(
        self: &Arc<Self>,
        owner: &str,
        upstream: Arc<Upstream>,
        real: CancelKey,
    ) -> CancelKeyGuard {
        let mut keys = self.keys.lock().unwrap();
        let key = loop {
            // Two databases behind one gateway may share a pid.
            let candidate = CancelKey {
                pid: real.pid,
                secret: rand::random(),
            };
            if candidate.secret != real.secret && !keys.contains_key(&candidate) {
                break candidate;
            }
        };
        keys.insert(
            key,
            Target {
                owner: owner.to_owned(),
                upstream,
                real,
            },
        );
        CancelKeyGuard {
            map: self.clone(),
            key,
        }
    }

    /// Looks a cancel up for `identity`.
    pub fn decide(&self, identity: &str, key: CancelKey) -> CancelDecision {
        if !self.allow_rate(identity) {
            return CancelDecision::RateLimited;
        }
        match self.keys.lock().unwrap().get(&key) {
            Some(t) if t.owner == identity => CancelDecision::Forward(t.upstream.clone(), t.real),
            _ => CancelDecision::Ignore,
        }
    }

    fn allow_rate(&self, identity: &str) -> bool {
        let now = Instant::now();
        let mut rate = self.rate.lock().unwrap();
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
    use crate::ca::{CaKind, CaMaterial};
    use crate::config::DatabaseConfig;

    fn upstream() -> Arc<Upstream> {
        let ca = crate::ca::Authority::load(&CaMaterial::generate(CaKind::Database, "t").unwrap())
            .unwrap();
        let config: DatabaseConfig =
            serde_yaml_ng::from_str("name: pg\nuri: localhost:5432\n").unwrap();
        Arc::new(
            Upstream::new(
                &config,
                crate::upstream::Kind::SelfHosted,
                Arc::new(ca),
                Arc::new(crate::upstream::TcpTls),
                std::time::Duration::from_secs(5),
            )
            .unwrap(),
        )
    }

    #[test]
    fn keys_are_honoured_only_for_their_owner_and_only_while_the_session_lives() {
        let map = CancelMap::new(100);
        let real = CancelKey {
            pid: 4242,
            secret: 7,
        };
        let guard = map.register("alice", upstream(), real);
        let key = guard.key();
        assert_eq!(key.pid, 4242, "clients see the real pid");
        assert_ne!(key.secret, 7, "clients never see the real secret");
        assert!(matches!(map.decide("bob", key), CancelDecision::Ignore));
        match map.decide("alice", key) {
            CancelDecision::Forward(_, forwarded) => assert_eq!(forwarded, real),
            _ => panic!("the owner's cancel is forwarded"),
        }
        drop(guard);
        assert!(matches!(map.decide("alice", key), CancelDecision::Ignore));
    }

    #[test]
    fn cancels_are_rate_limited_per_identity() {
        let map = CancelMap::new(3);
        let guard = map.register("alice", upstream(), CancelKey { pid: 1, secret: 1 });
        for _ in 0..3 {
            assert!(matches!(
                map.decide("alice", guard.key()),
                CancelDecision::Forward(..)
            ));
        }
        assert!(matches!(
            map.decide("alice", guard.key()),
            CancelDecision::RateLimited
        ));
        // Another identity has its own budget.
        assert!(matches!(
            map.decide("bob", guard.key()),
            CancelDecision::Ignore
        ));
    }
}
