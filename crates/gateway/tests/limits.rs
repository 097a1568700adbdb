//! Role limits in process, on paused time: a statement over
//! `max_statement_duration` gets a warning (between two messages, never
//! inside one) and then the database's own cancel key; a transaction left
//! idle past `max_idle_in_transaction` ends the session; a COPY in
//! progress is running, not idle; session defaults go up as startup
//! parameters.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{Client, Db, Gateway, REAL_KEY, decode, events, identity, message, route};
use postern_pgwire::{BackendMessage, StartupPacket, backend};
use tokio::time::Instant;

/// A session for a user with `role`, greeted; and the startup parameters
/// the database got.
async fn session(gateway: &mut Gateway, role: &str) -> (Client, Db, Vec<(String, String)>) {
    let mut who = identity("alice", Duration::from_secs(24 * 3600));
    who.roles = vec![role.into()];
    let (mut client, mut db) = gateway.open(who, route("pg", "app", "shop")).await;
    let params = db.startup().await;
    db.accept(REAL_KEY.pid, REAL_KEY.secret).await;
    client.greeting().await;
    (client, db, params)
}

fn ready(status: u8) -> Vec<u8> {
    let mut out = BytesMut::new();
    backend::ready_for_query(status, &mut out);
    out.to_vec()
}

/// Runs `sql` with the database answering CommandComplete and a
/// ReadyForQuery with `status`.
async fn run(client: &mut Client, db: &mut Db, sql: &str, status: u8) {
    let query = message(b'Q', format!("{sql}\0").as_bytes());
    client.send(&query).await;
    assert_eq!(db.bytes(query.len()).await, query);
    let reply = [message(b'C', b"OK\0"), ready(status)].concat();
    db.send(&reply).await;
    assert_eq!(client.bytes(reply.len()).await, reply);
}

/// Whether the client gets nothing for `wait`.
async fn quiet_for(client: &mut Client, wait: Duration) -> bool {
    tokio::time::timeout(wait, client.next_raw()).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn a_statement_over_its_limit_is_warned_about_then_cancelled_with_the_real_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, params) = session(&mut gateway, "limited").await;
    assert!(
        params.contains(&("statement_timeout".into(), "5min".into())),
        "the role's default goes up at startup: {params:?}"
    );

    let query = message(b'Q', b"select pg_sleep(3600)\0");
    client.send(&query).await;
    let started = Instant::now();
    db.bytes(query.len()).await;
    // The database is inside a message when the limit passes: the warning
    // waits for its end.
    let row = message(b'D', b"\0\x01\0\0\0\x03abc");
    db.send(&row[..4]).await;
    assert!(quiet_for(&mut client, Duration::from_secs(600)).await);
    assert_eq!(client.bytes(4).await, &row[..4]);
    db.send(&row[4..]).await;
    assert_eq!(client.bytes(row.len() - 4).await, &row[4..]);

    let raw = client.raw().await;
    assert!(started.elapsed() >= Duration::from_secs(600));
    let BackendMessage::NoticeResponse(fields) = decode(&raw) else {
        panic!("a NoticeResponse, got {:?}", decode(&raw));
    };
    assert_eq!(
        fields.message,
        "postern: cancelling this statement: your role allows 10m"
    );
    let mut cancel = gateway.dials.recv().await.unwrap();
    assert!(matches!(
        cancel.packet().await,
        StartupPacket::Cancel {
            pid: 4242,
            secret: 77
        }
    ));
    drop(cancel);

    // The database's answer to the cancel ends the statement; the session
    // goes on, and the next statement has its own time.
    let reply = [
        message(b'E', b"SERROR\0C57014\0Mcanceling\0\0"),
        ready(b'I'),
    ]
    .concat();
    db.send(&reply).await;
    assert_eq!(client.bytes(reply.len()).await, reply);
    run(&mut client, &mut db, "select 1", b'I').await;
    assert!(quiet_for(&mut client, Duration::from_secs(3600)).await);

    drop((client, db));
    let audit = gateway.audit().await;
    let cancelled = events(&audit, "statement_cancelled");
    assert_eq!(cancelled.len(), 1, "{audit:?}");
    assert_eq!(cancelled[0]["rule"], "max_statement_duration");
    assert_eq!(cancelled[0]["limit"], "10m");
}

#[tokio::test(start_paused = true)]
async fn a_transaction_left_idle_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, _) = session(&mut gateway, "limited").await;
    // Idle outside a transaction: nothing happens.
    assert!(quiet_for(&mut client, Duration::from_secs(3600)).await);

    run(&mut client, &mut db, "begin", b'T').await;
    let idle_since = Instant::now();
    let fields = client.error().await;
    assert_eq!(idle_since.elapsed(), Duration::from_secs(15 * 60));
    assert_eq!(
        (fields.severity.as_str(), fields.code.as_str()),
        ("FATAL", "25P03")
    );
    assert!(
        fields.message.starts_with(
            "postern: ending this session: it stayed idle inside a transaction for 15m"
        ),
        "{}",
        fields.message
    );
    assert!(db.closed().await, "the transaction is rolled back");
}

#[tokio::test(start_paused = true)]
async fn a_copy_in_progress_is_not_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, params) = session(&mut gateway, "no-idle").await;
    assert!(!params.iter().any(|(name, _)| name == "statement_timeout"));

    run(&mut client, &mut db, "begin", b'T').await;
    let copy = message(b'Q', b"copy t from stdin\0");
    client.send(&copy).await;
    db.bytes(copy.len()).await;
    let copy_in = message(b'G', b"\0\0\0");
    db.send(&copy_in).await;
    assert_eq!(client.bytes(copy_in.len()).await, copy_in);
    // The client takes its time between rows.
    for row in ["1\n", "2\n"] {
        assert!(quiet_for(&mut client, Duration::from_secs(300)).await);
        let data = message(b'd', row.as_bytes());
        client.send(&data).await;
        db.bytes(data.len()).await;
    }
    let done = message(b'c', b"");
    client.send(&done).await;
    db.bytes(done.len()).await;
    let reply = [message(b'C', b"COPY 2\0"), ready(b'T')].concat();
    db.send(&reply).await;
    assert_eq!(client.bytes(reply.len()).await, reply);

    // Back to idle inside the transaction: now the limit applies.
    let fields = client.error().await;
    assert_eq!(fields.code, "25P03");
}
