//! Draining the tunnels (DESIGN.md §9, lifecycle) on tokio's paused clock:
//! what a session sees when the gateway is told to stop, and what the
//! audit keeps of it.

mod common;

use std::time::Duration;

use common::{Gateway, REAL_KEY, alice, events, message, route};
use postern_gateway::drain::Drained;
use postern_pgwire::StartupPacket;
use tokio::time::Instant;

const GRACE: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn a_live_session_ends_with_57p01_when_the_grace_period_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, db, _) = gateway.session().await;
    let started = Instant::now();
    let drain = tokio::spawn(gateway.drain(GRACE));

    let fields = client.error().await;
    let lived = started.elapsed();
    assert!(
        lived >= GRACE && lived < GRACE + Duration::from_secs(1),
        "ended when the grace period was over, not after {lived:?}"
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
            "postern: the gateway is restarting; reconnect"
        )
    );
    // What still ran is cancelled with the database's own key.
    let mut cancel = gateway.dials.recv().await.unwrap();
    assert!(matches!(
        cancel.packet().await,
        StartupPacket::Cancel { pid, secret } if pid == REAL_KEY.pid && secret == REAL_KEY.secret
    ));
    drop((cancel, db));
    assert_eq!(
        drain.await.unwrap(),
        Drained {
            ended: 1,
            finished: true
        }
    );
    let audit = gateway.audit().await;
    let end = events(&audit, "session_end");
    assert_eq!(end.len(), 1, "{audit:?}");
    assert_eq!(end[0]["reason"], fields.message);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_ends_during_the_grace_period_ends_as_usual() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, _) = gateway.session().await;
    let started = Instant::now();
    let drain = tokio::spawn(gateway.drain(GRACE));

    // The session goes on while the gateway drains.
    let query = message(b'Q', b"SELECT 1\0");
    client.send(&query).await;
    assert_eq!(db.raw().await.to_vec(), query);
    let terminate = message(b'X', b"");
    client.send(&terminate).await;
    client.close().await;
    assert_eq!(db.raw().await.to_vec(), terminate);
    assert!(db.closed().await);

    assert_eq!(
        drain.await.unwrap(),
        Drained {
            ended: 0,
            finished: true
        }
    );
    assert!(
        started.elapsed() < GRACE,
        "the drain was over when the last session was"
    );
    assert!(gateway.dials.try_recv().is_err(), "nothing was cancelled");
    drop((client, db));
    let audit = gateway.audit().await;
    let end = events(&audit, "session_end");
    assert_eq!(end.len(), 1, "{audit:?}");
    assert!(end[0].get("reason").is_none(), "the client ended it");
}

#[tokio::test(start_paused = true)]
async fn a_draining_gateway_is_over_at_once_without_sessions_and_starts_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let started = Instant::now();
    assert_eq!(
        gateway.drain(GRACE).await,
        Drained {
            ended: 0,
            finished: true
        }
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "no wait for nothing");

    // A connection accepted just before the listener closed.
    let (mut client, _serving) = gateway.connect(Some(alice()));
    client.send(&route("pg", "app", "shop").encode()).await;
    let fields = client.error().await;
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        ("57P01", "postern: the gateway is restarting; reconnect")
    );
    assert!(gateway.dials.try_recv().is_err(), "no database was reached");
    let audit = gateway.audit().await;
    let rejected = events(&audit, "session_rejected");
    assert_eq!(rejected.len(), 1, "{audit:?}");
    assert_eq!(rejected[0]["reason"], fields.message);
}
