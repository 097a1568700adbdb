//! One behaviour for every [`Store`]: the checks each implementation must
//! pass, run for SQLite by the gateway's unit tests and for PostgreSQL by
//! the end-to-end tests (`tests/tests/store.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Lock, Store, TotpSecret, UserRecord};
use crate::ca::{CaKind, CaMaterial};

/// Opens another handle on the same stored state (as another replica, or
/// the CLI beside a gateway, would).
pub type Opener<'a> = &'a dyn Fn() -> Arc<dyn Store>;

/// Runs every check against the state `open` reaches, which must start empty.
pub fn run_all(open: Opener<'_>) {
    open().ping().expect("a reachable store answers a ping");
    users_round_trip(open);
    ca_is_stored_once(open);
    locks_apply_until_removed_or_expired(open);
    a_lease_has_one_holder_until_released_or_expired(open);
    login_failures_count_in_runs_and_clear(open);
    audit_keeps_the_most_recent_in_order(open);
}

/// Users are stored whole (roles, traits, TOTP secret) and deleted once.
pub fn users_round_trip(open: Opener<'_>) {
    let store = open();
    let user = UserRecord {
        name: "alice".into(),
        password_hash: "$argon2id$...".into(),
        roles: vec!["dev".into()],
        traits: BTreeMap::from([("db_names".into(), vec!["app".into()])]),
        totp: Some(TotpSecret("JBSWY3DPEHPK3PXP".into())),
    };
    let bob = UserRecord {
        name: "bob".into(),
        totp: None,
        ..user.clone()
    };
    store.put_user(&bob).unwrap();
    store.put_user(&user).unwrap();
    assert_eq!(store.user("alice").unwrap(), Some(user.clone()));
    assert_eq!(open().users().unwrap(), vec![user.clone(), bob.clone()]);
    let changed = UserRecord {
        roles: vec!["admin".into()],
        ..user
    };
    store.put_user(&changed).unwrap();
    assert_eq!(open().user("alice").unwrap(), Some(changed));
    assert!(store.delete_user("alice").unwrap());
    assert!(!store.delete_user("alice").unwrap());
    assert_eq!(store.user("alice").unwrap(), None);
    assert!(store.delete_user("bob").unwrap());
}

/// The first CA stored for a kind stays, whoever asks later.
pub fn ca_is_stored_once(open: Opener<'_>) {
    let store = open();
    let first = CaMaterial {
        cert_pem: "first".into(),
        key_pem: "k1".into(),
    };
    let second = CaMaterial {
        cert_pem: "second".into(),
        key_pem: "k2".into(),
    };
    let got = store.ca_or_insert(CaKind::User, &first).unwrap();
    assert_eq!(
        (got.cert_pem.as_str(), got.key_pem.as_str()),
        ("first", "k1")
    );
    let got = store.ca_or_insert(CaKind::User, &second).unwrap();
    assert_eq!(
        (got.cert_pem.as_str(), got.key_pem.as_str()),
        ("first", "k1")
    );
    drop(store);
    let got = open().ca_or_insert(CaKind::User, &second).unwrap();
    assert_eq!(
        (got.cert_pem.as_str(), got.key_pem.as_str()),
        ("first", "k1")
    );
    let host = open().ca_or_insert(CaKind::Host, &second).unwrap();
    assert_eq!(host.key_pem, "k2", "each kind has its own CA");
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Locks apply until removed or past their expiry, for every handle.
pub fn locks_apply_until_removed_or_expired(open: Opener<'_>) {
    let store = open();
    let now = now_ms();
    let lock = |id: &str, user: &str, expires_ms| Lock {
        id: id.into(),
        user: user.into(),
        message: Some("incident".into()),
        created_ms: now,
        expires_ms,
    };
    store.add_lock(&lock("lock-a", "alice", None)).unwrap();
    store
        .add_lock(&lock("lock-b", "bob", Some(now + 60_000)))
        .unwrap();
    store
        .add_lock(&lock("lock-c", "alice", Some(now - 1)))
        .unwrap();
    let ids = |user| -> Vec<String> {
        store
            .locks(user)
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect()
    };
    assert_eq!(
        ids(None),
        ["lock-a", "lock-b"],
        "the expired lock no longer applies"
    );
    assert_eq!(ids(Some("alice")), ["lock-a"]);
    assert_eq!(ids(Some("carol")), Vec::<String>::new());
    assert_eq!(
        store.locks(Some("alice")).unwrap()[0],
        lock("lock-a", "alice", None)
    );
    assert!(store.remove_lock("lock-a").unwrap());
    assert!(!store.remove_lock("lock-a").unwrap());
    assert_eq!(ids(Some("alice")), Vec::<String>::new());
    // Two gateways (or the CLI and a gateway) see the same locks.
    let other = open();
    assert_eq!(other.locks(None).unwrap().len(), 1);
    assert!(other.remove_lock("lock-b").unwrap());
}

/// A lease has one holder, across handles, until released or expired.
pub fn a_lease_has_one_holder_until_released_or_expired(open: Opener<'_>) {
    let (store, other) = (open(), open());
    let long = Duration::from_secs(60);
    assert!(store.try_lease("pg/alice", "a", long).unwrap());
    assert!(!other.try_lease("pg/alice", "b", long).unwrap());
    assert!(store.try_lease("pg/alice", "a", long).unwrap(), "renewal");
    assert!(other.try_lease("pg/bob", "b", long).unwrap());
    // Releasing someone else's lease does nothing.
    other.release_lease("pg/alice", "b").unwrap();
    assert!(!other.try_lease("pg/alice", "b", long).unwrap());
    store.release_lease("pg/alice", "a").unwrap();
    assert!(other.try_lease("pg/alice", "b", long).unwrap());
    // An expired lease (its holder died) can be taken over.
    assert!(store.try_lease("pg/carol", "a", Duration::ZERO).unwrap());
    assert!(other.try_lease("pg/carol", "b", long).unwrap());
    assert!(!store.try_lease("pg/carol", "a", long).unwrap());
}

/// Failed logins add up across handles within a run and are forgotten on
/// success; a run older than its length starts again.
pub fn login_failures_count_in_runs_and_clear(open: Opener<'_>) {
    let (store, other) = (open(), open());
    let long = Duration::from_secs(3600);
    assert_eq!(store.login_failures("user:alice").unwrap(), None);
    let first = store.add_login_failure("user:alice", long, long).unwrap();
    assert_eq!(first.count, 1);
    assert_eq!(first.first, first.last);
    let second = other.add_login_failure("user:alice", long, long).unwrap();
    assert_eq!((second.count, second.first), (2, first.first));
    assert!(second.last >= first.last);
    assert_eq!(store.login_failures("user:alice").unwrap(), Some(second));
    // A zero-length run is over at once: the next failure starts afresh.
    let fresh = store
        .add_login_failure("user:alice", Duration::ZERO, long)
        .unwrap();
    assert_eq!(fresh.count, 1);
    other.clear_login_failures("user:alice").unwrap();
    assert_eq!(store.login_failures("user:alice").unwrap(), None);
}

/// Audit lines come back as JSON, the latest `limit` of them, oldest first.
pub fn audit_keeps_the_most_recent_in_order(open: Opener<'_>) {
    let store = open();
    let lines: Vec<String> = (0..5).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    store.append_audit(&lines[..3]).unwrap();
    open().append_audit(&lines[3..]).unwrap();
    store.append_audit(&[]).unwrap();
    let recent = store.recent_audit(3).unwrap();
    assert_eq!(
        recent,
        [2, 3, 4].map(|n| serde_json::json!({ "n": n })).to_vec()
    );
    assert_eq!(store.recent_audit(100).unwrap().len(), 5);
}
