//! An established session, in process: bytes relayed unchanged both ways,
//! either side closing, the audit of what was relayed, and cancels.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{Client, Db, Gateway, REAL_KEY, events, identity, message};
use postern_api::RouteFrame;
use postern_pgwire::{BackendMessage, CancelKey, ErrorFields, StartupPacket, backend};
use tokio::task::JoinHandle;

/// A DataRow of one `len`-byte column.
fn data_row(len: usize) -> Vec<u8> {
    let mut body = 1i16.to_be_bytes().to_vec();
    body.extend_from_slice(&(len as i32).to_be_bytes());
    body.extend((0..len).map(|i| (i % 251) as u8));
    message(b'D', &body)
}

#[tokio::test]
async fn queries_and_replies_are_relayed_byte_for_byte_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, greeting) = gateway.session().await;
    assert_eq!(greeting.key.pid, REAL_KEY.pid);

    // A small query, and one far larger than the relay's 64 KiB buffers.
    let small = message(b'Q', b"SELECT 1\0");
    let big_text = format!("SELECT '{}'\0", "x".repeat(300 * 1024));
    let big = message(b'Q', big_text.as_bytes());
    let sent = [small.clone(), big.clone()].concat();
    let ((), received) = tokio::join!(client.send(&sent), db.bytes(sent.len()));
    assert_eq!(received, sent, "client to database");

    let mut reply = data_row(5 * 64 * 1024 + 17);
    reply.extend_from_slice(&message(b'C', b"SELECT 1\0"));
    let mut ready = BytesMut::new();
    backend::ready_for_query(b'I', &mut ready);
    reply.extend_from_slice(&ready);
    let ((), received) = tokio::join!(db.send(&reply), client.bytes(reply.len()));
    assert_eq!(received, reply, "database to client");

    let terminate = message(b'X', b"");
    client.send(&terminate).await;
    client.close().await;
    assert_eq!(db.raw().await.to_vec(), terminate);
    assert!(db.closed().await, "the database sees the client leave");
    drop((client, db));

    let audit = gateway.audit().await;
    let start = events(&audit, "session_start");
    assert_eq!(start.len(), 1, "{audit:?}");
    assert_eq!(start[0]["db_user"], "app");
    assert_eq!(start[0]["db_name"], "shop");
    let queries = events(&audit, "query");
    assert_eq!(queries.len(), 2, "{queries:?}");
    assert_eq!(queries[0]["query"], "SELECT 1");
    let end = events(&audit, "session_end");
    assert_eq!(end.len(), 1, "{audit:?}");
    assert_eq!(end[0]["user"], "alice");
    assert_eq!(end[0]["bytes_in"], (sent.len() + terminate.len()) as u64);
    assert_eq!(end[0]["bytes_out"], reply.len() as u64);
    assert!(end[0].get("reason").is_none(), "the client ended it");
}

#[tokio::test]
async fn a_client_that_leaves_mid_message_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, _) = gateway.session().await;
    let query = message(b'Q', b"SELECT 'cut short'\0");
    client.send(&query[..7]).await;
    client.close().await;
    assert_eq!(db.bytes(7).await, &query[..7], "what was sent goes on");
    assert!(db.closed().await, "then the database connection closes");
    drop((client, db));
    let audit = gateway.audit().await;
    let end = events(&audit, "session_end");
    assert_eq!(end[0]["bytes_in"], 7);
    assert!(end[0].get("reason").is_none());
}

#[tokio::test]
async fn the_database_ending_the_session_reaches_the_client_in_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (mut client, mut db, _) = gateway.session().await;
    let mut out = BytesMut::new();
    backend::error_response(
        &ErrorFields::fatal(
            "57P01",
            "terminating connection due to administrator command",
        ),
        &mut out,
    );
    db.send(&out).await;
    db.close().await;
    let BackendMessage::ErrorResponse(fields) = common::decode(&client.raw().await) else {
        panic!("an ErrorResponse");
    };
    assert_eq!(fields.code, "57P01");
    assert_eq!(
        fields.message,
        "terminating connection due to administrator command"
    );
    assert!(client.closed().await, "then the client's connection closes");
    drop((client, db));
    let audit = gateway.audit().await;
    let end = events(&audit, "session_end");
    assert_eq!(end[0]["bytes_out"], out.len() as u64);
}

/// Sends a CancelRequest for `key` as `user` on a new tunnel connection;
/// the client's end and the connection's task.
/// The database received the session's real key (pid 4242, secret 77) on
/// `cancel_conn`, and the canceller's connection closed without a reply.
async fn real_key_forwarded_without_reply(
    mut cancel_conn: Db,
    serving: JoinHandle<()>,
    canceller: &mut Client,
) {
    assert!(
        matches!(
            cancel_conn.packet().await,
            StartupPacket::Cancel {
                pid: 4242,
                secret: 77
            }
        ),
        "the database gets its own key"
    );
    drop(cancel_conn);
    serving.await.unwrap();
    assert!(canceller.closed().await, "a cancel gets no reply");
}

async fn cancel(gateway: &Gateway, user: &str, key: CancelKey) -> (Client, JoinHandle<()>) {
    let (mut client, serving) = gateway.connect(Some(identity(user, Duration::from_secs(3600))));
    client
        .send(
            &RouteFrame::Cancel {
                pid: key.pid,
                secret: key.secret,
            }
            .encode(),
        )
        .await;
    (client, serving)
}

#[tokio::test]
async fn the_sessions_own_key_cancels_with_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (client, db, greeting) = gateway.session().await;
    assert_ne!(greeting.key, REAL_KEY, "the client holds the gateway's key");

    let (mut canceller, serving) = cancel(&gateway, "alice", greeting.key).await;
    let cancel_conn = gateway.dials.recv().await.unwrap();
    assert_eq!(cancel_conn.host, "db.test");
    real_key_forwarded_without_reply(cancel_conn, serving, &mut canceller).await;
    drop((client, db));
    let audit = gateway.audit().await;
    let cancels = events(&audit, "cancel");
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["user"], "alice");
    assert_eq!(cancels[0]["forwarded"], true);
}

#[tokio::test]
async fn a_wrong_key_or_another_users_key_cancels_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let (client, db, greeting) = gateway.session().await;
    let wrong = CancelKey {
        secret: greeting.key.secret.wrapping_add(1),
        ..greeting.key
    };
    for (user, key) in [("alice", wrong), ("alice", REAL_KEY), ("bob", greeting.key)] {
        let (mut canceller, serving) = cancel(&gateway, user, key).await;
        serving.await.unwrap();
        assert!(canceller.closed().await, "a cancel gets no reply");
        assert!(
            gateway.dials.try_recv().is_err(),
            "{user}: nothing reaches the database"
        );
    }
    drop((client, db));
    let audit = gateway.audit().await;
    let cancels = events(&audit, "cancel");
    assert_eq!(cancels.len(), 3, "{audit:?}");
    assert!(
        cancels.iter().all(|c| c["forwarded"] == false),
        "{cancels:?}"
    );
    assert_eq!(cancels[2]["user"], "bob");
}

#[tokio::test]
async fn a_cancel_that_reaches_another_replica_is_forwarded_with_the_real_key() {
    // Two replicas sharing one store, as behind a load balancer: the
    // session runs on A, the client's CancelRequest lands on B.
    let dir = tempfile::tempdir().unwrap();
    let mut a = Gateway::start(dir.path());
    let mut b = Gateway::start(dir.path());
    let (client, db, greeting) = a.session().await;
    let (mut canceller, mut serving) = cancel(&b, "alice", greeting.key).await;
    let dialed = tokio::select! {
        dialed = b.dials.recv() => dialed,
        _ = &mut serving => None,
    };
    let cancel_conn = dialed.expect("replica B sends the cancel to the database");
    real_key_forwarded_without_reply(cancel_conn, serving, &mut canceller).await;
    drop((client, db));
    let audit = b.audit().await;
    assert_eq!(events(&audit, "cancel")[0]["forwarded"], true, "{audit:?}");
    drop(a);
}
