//! Timeouts, expiry and locks of tunnels, on tokio's paused clock: each
//! test runs in milliseconds however long the gateway waits. The
//! certificate's expiry is read from the wall clock once, then waited for
//! with `tokio::time::sleep`, so the paused clock drives it too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Gateway, REAL_KEY, Setup, Silent, alice, events, identity, route};
use postern_gateway::config::Limits;
use postern_gateway::revocation::add_lock;
use postern_pgwire::ErrorFields;
use postern_pgwire::StartupPacket;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_no_route_is_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path());
    let started = Instant::now();
    let (mut client, _) = gateway.connect(Some(alice()));
    let fields = client.error().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "limits.handshake_timeout"
    );
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        ("08006", "postern: timed out while waiting for the route")
    );
    let audit = gateway.audit().await;
    let rejected = events(&audit, "session_rejected");
    assert_eq!(rejected.len(), 1, "the timeout is on the record: {audit:?}");
    assert_eq!(rejected[0]["user"], "alice");
}

/// The error a client gets when the login timeout (5 s after `started`)
/// runs out.
async fn no_answer_in_time(client: &mut Client, started: Instant) -> ErrorFields {
    let fields = client.error().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "the login timeout"
    );
    assert_eq!(fields.code, "08001");
    assert_eq!(
        fields.message,
        "postern: the gateway got no answer from database \"pg\" in time"
    );
    fields
}

#[tokio::test(start_paused = true)]
async fn a_connector_that_never_answers_is_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        connector: Some(Arc::new(Silent)),
        ..Setup::default()
    };
    let gateway = Gateway::with(dir.path(), setup);
    let started = Instant::now();
    let (mut client, _) = gateway.connect(Some(alice()));
    client.send(&route("pg", "app", "shop").encode()).await;
    let fields = no_answer_in_time(&mut client, started).await;
    let audit = gateway.audit().await;
    assert_eq!(
        events(&audit, "session_rejected")[0]["reason"],
        fields.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_database_that_never_answers_the_startup_is_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let started = Instant::now();
    let (mut client, mut db) = gateway.open(alice(), route("pg", "app", "shop")).await;
    db.startup().await;
    // The database stays connected and silent.
    no_answer_in_time(&mut client, started).await;
    assert!(db.closed().await, "the gateway hangs up on the database");
}

#[tokio::test(start_paused = true)]
async fn a_session_ends_when_its_certificate_expires_if_the_roles_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let mut strict = identity("alice", Duration::from_secs(3600));
    strict.roles = vec!["strict".into()];
    let started = Instant::now();
    let (mut client, mut db) = gateway.open(strict, route("pg", "app", "shop")).await;
    db.startup().await;
    db.accept(REAL_KEY.pid, REAL_KEY.secret).await;
    client.greeting().await;

    let fields = client.error().await;
    let lived = started.elapsed();
    assert!(
        lived > Duration::from_secs(3598) && lived <= Duration::from_secs(3600),
        "ended at the expiry, after {lived:?}"
    );
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        (
            "28000",
            "postern: your Postern session expired; log in again"
        )
    );
    // What still ran is cancelled with the database's own key.
    let mut cancel = gateway.dials.recv().await.unwrap();
    assert!(matches!(
        cancel.packet().await,
        StartupPacket::Cancel {
            pid: 4242,
            secret: 77
        }
    ));
    drop((cancel, db));
    let audit = gateway.audit().await;
    assert_eq!(events(&audit, "session_end")[0]["reason"], fields.message);
}

#[tokio::test(start_paused = true)]
async fn by_default_a_session_outlives_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // Locks are not the point here: few polls over the two hours.
    let setup = Setup {
        limits: Limits {
            lock_poll: Duration::from_secs(600),
            ..Limits::default()
        },
        ..Setup::default()
    };
    let mut gateway = Gateway::with(dir.path(), setup);
    let (mut client, _db, _) = gateway.session().await;
    let after_expiry = tokio::time::timeout(Duration::from_secs(2 * 3600), client.next_raw());
    assert!(after_expiry.await.is_err(), "nothing ends the session");
}

#[tokio::test(start_paused = true)]
async fn a_lock_ends_live_sessions_within_one_poll() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, db, _) = gateway.session().await;
    let locked_at = Instant::now();
    add_lock(
        gateway.store.as_ref(),
        "alice",
        None,
        Some("incident 42".into()),
    )
    .unwrap();
    let fields = client.error().await;
    assert!(
        locked_at.elapsed() <= Duration::from_secs(1),
        "within limits.lock_poll, not {:?}",
        locked_at.elapsed()
    );
    assert_eq!(
        (
            fields.severity.as_str(),
            fields.code.as_str(),
            fields.message.as_str()
        ),
        (
            "FATAL",
            "57P01",
            "postern: access was locked by an administrator: incident 42"
        )
    );
    let mut cancel = gateway.dials.recv().await.unwrap();
    assert!(matches!(
        cancel.packet().await,
        StartupPacket::Cancel { .. }
    ));
    drop((cancel, db));
    let audit = gateway.audit().await;
    assert_eq!(events(&audit, "session_end")[0]["reason"], fields.message);
    assert_eq!(events(&audit, "lock_added")[0]["user"], "alice");
}
