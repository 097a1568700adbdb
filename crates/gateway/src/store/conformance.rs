//! One behaviour for every [`Store`]: the checks each implementation must
//! pass, run for SQLite by the gateway's unit tests and for PostgreSQL by
//! the end-to-end tests (`tests/tests/store.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    AuditLine, CancelRecord, DeviceLoginRecord, Lock, SsoLoginRecord, Store, TotpSecret, UserRecord,
};
use crate::ca::{CaKind, CaMaterial};
use postern_pgwire::CancelKey;

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
    audit_is_read_since_a_time_in_pages_and_deleted_before_one(open);
    a_cancel_key_is_found_through_every_handle_until_removed(open);
    a_totp_step_is_accepted_once_across_handles(open);
    an_sso_login_is_taken_once_across_handles(open);
    a_device_login_moves_on_once_across_handles(open);
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
    let lines: Vec<AuditLine> = (0..5)
        .map(|i| AuditLine {
            time_ms: i,
            json: format!(r#"{{"n":{i}}}"#),
        })
        .collect();
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

/// `audit ls|export --since` read events from a time on, oldest first and
/// in pages; retention deletes the older ones.
pub fn audit_is_read_since_a_time_in_pages_and_deleted_before_one(open: Opener<'_>) {
    let (store, other) = (open(), open());
    let base = 1_900_000_000_000;
    let line = |time_ms: i64, n: i64| AuditLine {
        time_ms,
        json: format!(r#"{{"at":{n}}}"#),
    };
    // Two writers whose batches arrive out of time order; two events share
    // a time.
    store
        .append_audit(&[line(base + 30, 3), line(base + 10, 1)])
        .unwrap();
    other
        .append_audit(&[line(base + 20, 2), line(base + 30, 4)])
        .unwrap();
    let mut read = Vec::new();
    let mut after = None;
    loop {
        let page = other.audit_since(base + 10, after, 2).unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        after = Some(last.position);
        read.extend(page.into_iter().map(|e| e.json));
    }
    assert_eq!(
        read,
        [1, 2, 3, 4].map(|n| format!(r#"{{"at":{n}}}"#)),
        "oldest first, ties in the order stored"
    );
    let later: Vec<String> = store
        .audit_since(base + 20, None, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.json)
        .collect();
    assert_eq!(later.len(), 3);
    assert!(
        store.delete_audit_before(base + 20).unwrap() >= 1,
        "the event at base + 10 and any older"
    );
    assert_eq!(other.audit_since(0, None, 10).unwrap().len(), 3);
}

/// A cancel key stored by one replica is found by another, is unique by
/// its client-facing key, and goes with its session or its replica.
pub fn a_cancel_key_is_found_through_every_handle_until_removed(open: Opener<'_>) {
    let (a, b) = (open(), open());
    let record = |secret: i32, replica: &str| CancelRecord {
        client: CancelKey { pid: 4242, secret },
        owner: "alice".into(),
        replica: replica.into(),
        database: "pg".into(),
        upstream_addr: "db.internal:5432".into(),
        real: CancelKey {
            pid: 4242,
            secret: 77,
        },
    };
    assert!(a.put_cancel_key(&record(1, "a")).unwrap());
    assert!(
        !b.put_cancel_key(&record(1, "b")).unwrap(),
        "a live client key is never given twice"
    );
    assert_eq!(b.cancel_key(4242, 1).unwrap(), Some(record(1, "a")));
    assert_eq!(b.cancel_key(4242, 2).unwrap(), None);
    assert!(b.put_cancel_key(&record(2, "b")).unwrap());
    b.remove_cancel_key(4242, 2).unwrap();
    assert_eq!(a.cancel_key(4242, 2).unwrap(), None);
    assert!(b.put_cancel_key(&record(3, "b")).unwrap());
    // A replica starting again under its name forgets only its own keys.
    assert_eq!(a.remove_replica_cancel_keys("a").unwrap(), 1);
    assert_eq!(b.cancel_key(4242, 1).unwrap(), None);
    assert!(a.cancel_key(4242, 3).unwrap().is_some());
    b.remove_cancel_key(4242, 3).unwrap();
}

/// A one-time code's step is accepted once for a user, whichever replica
/// sees it first; an older step after a newer one is refused too.
pub fn a_totp_step_is_accepted_once_across_handles(open: Opener<'_>) {
    let (a, b) = (open(), open());
    assert!(a.accept_totp_step("alice", 10).unwrap());
    assert!(!b.accept_totp_step("alice", 10).unwrap());
    assert!(!a.accept_totp_step("alice", 9).unwrap());
    assert!(b.accept_totp_step("bob", 10).unwrap());
    assert!(b.accept_totp_step("alice", 11).unwrap());
    assert!(!a.accept_totp_step("alice", 11).unwrap());
}

/// A login in progress started on one replica is found by its state once
/// and taken once on another; expired ones are neither found nor counted.
pub fn an_sso_login_is_taken_once_across_handles(open: Opener<'_>) {
    let (a, b) = (open(), open());
    let long = Duration::from_secs(300);
    let login = |id: &str, source: &str| SsoLoginRecord {
        id: id.into(),
        state: Some(format!("state-{id}")),
        source: source.into(),
        created_ms: now_ms(),
        body: format!(r#"{{"login":"{id}"}}"#),
    };
    a.put_sso_login(&login("one", "10.0.0.1"), long).unwrap();
    a.put_sso_login(&login("two", "10.0.0.2"), long).unwrap();
    a.put_sso_login(&login("old", "10.0.0.1"), Duration::ZERO)
        .unwrap();
    let counts = b.sso_logins_pending("10.0.0.1").unwrap();
    assert_eq!((counts.total, counts.from_source), (2, 1), "{counts:?}");
    assert!(counts.oldest_ms.is_some() && counts.oldest_from_source_ms.is_some());
    assert_eq!(b.take_sso_state("state-old").unwrap(), None, "expired");

    let taken = b
        .take_sso_state("state-one")
        .unwrap()
        .expect("started on a");
    assert_eq!(
        (taken.id.as_str(), taken.body.as_str()),
        ("one", r#"{"login":"one"}"#)
    );
    assert_eq!(
        a.take_sso_state("state-one").unwrap(),
        None,
        "a state works once"
    );
    assert!(a.update_sso_login("one", r#"{"done":1}"#, long).unwrap());
    assert!(!a.update_sso_login("nobody", "{}", long).unwrap());
    assert_eq!(b.sso_login("one").unwrap().unwrap().body, r#"{"done":1}"#);

    b.fail_sso_login("one", 2).unwrap();
    assert!(a.sso_login("one").unwrap().is_some(), "one failure of two");
    assert_eq!(
        a.take_sso_login("one").unwrap().unwrap().body,
        r#"{"done":1}"#
    );
    assert_eq!(b.take_sso_login("one").unwrap(), None, "taken once");
    assert_eq!(b.sso_login("one").unwrap(), None);

    a.fail_sso_login("two", 2).unwrap();
    b.fail_sso_login("two", 2).unwrap();
    assert_eq!(a.sso_login("two").unwrap(), None, "too many failures");
    assert_eq!(b.sso_logins_pending("10.0.0.1").unwrap().total, 0);
}

/// A device sign-in is found by id and by user code on every handle,
/// moves on by compare and swap, and is taken once.
pub fn a_device_login_moves_on_once_across_handles(open: Opener<'_>) {
    let (a, b) = (open(), open());
    let long = Duration::from_secs(300);
    let login = |id: &str, code: &str, source: &str| DeviceLoginRecord {
        id: id.into(),
        user_code: code.into(),
        source: source.into(),
        created_ms: now_ms(),
        body: "waiting".into(),
    };
    assert!(
        a.put_device_login(&login("d1", "BCDFGHJK", "10.0.0.1"), long)
            .unwrap()
    );
    assert!(
        !b.put_device_login(&login("d2", "BCDFGHJK", "10.0.0.1"), long)
            .unwrap(),
        "a user code is unique"
    );
    assert!(
        b.put_device_login(&login("d2", "LMNPQRST", "10.0.0.2"), long)
            .unwrap()
    );
    assert!(
        a.put_device_login(&login("old", "VWXZBCDF", "10.0.0.1"), Duration::ZERO)
            .unwrap()
    );
    let counts = b.device_logins_pending("10.0.0.1").unwrap();
    assert_eq!((counts.total, counts.from_source), (2, 1), "{counts:?}");
    assert_eq!(b.device_login("old").unwrap(), None, "expired");
    assert_eq!(
        b.device_login_by_user_code("VWXZBCDF").unwrap(),
        None,
        "expired"
    );

    assert_eq!(
        b.device_login_by_user_code("BCDFGHJK").unwrap().unwrap().id,
        "d1"
    );
    assert!(b.replace_device_login("d1", "waiting", "entered").unwrap());
    assert!(
        !a.replace_device_login("d1", "waiting", "entered twice")
            .unwrap(),
        "a stale body loses the race"
    );
    assert_eq!(a.device_login("d1").unwrap().unwrap().body, "entered");
    assert!(!a.replace_device_login("nobody", "waiting", "x").unwrap());

    assert_eq!(a.take_device_login("d1").unwrap().unwrap().body, "entered");
    assert_eq!(b.take_device_login("d1").unwrap(), None, "taken once");
    assert_eq!(b.device_login("d1").unwrap(), None);
    assert!(b.take_device_login("d2").unwrap().is_some());
    assert_eq!(a.device_logins_pending("10.0.0.2").unwrap().total, 0);
}
