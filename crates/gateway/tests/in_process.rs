//! A tunnel session driven in process: the client end is one half of an
//! in-memory pipe, and the "database" is a script on another pipe handed
//! to the gateway by its [`Connector`](postern_gateway::upstream::Connector).
//! No sockets, no TLS, no PostgreSQL.

mod common;

use bytes::BytesMut;
use common::{Gateway, alice, decode};
use postern_api::RouteFrame;
use postern_pgwire::{BackendMessage, backend};

#[tokio::test]
async fn a_session_runs_over_an_injected_connector() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    let route = RouteFrame::Session {
        database: "pg".into(),
        db_user: Some("app".into()),
        db_name: Some("shop".into()),
        db_roles: vec![],
        params: [("application_name".to_owned(), "in-process".to_owned())].into(),
    };
    let (mut client, mut database) = gateway.open(alice(), route).await;
    assert_eq!(
        database.host, "db.test",
        "the connector is asked for the configured endpoint"
    );
    let params = database.startup().await;
    database.accept(4242, 77).await;

    // The greeting: the database's messages, with the gateway's own key.
    let mut greeting = Vec::new();
    loop {
        let raw = client.raw().await;
        let message = decode(&raw);
        let ready = matches!(message, BackendMessage::ReadyForQuery(_));
        greeting.push(format!("{message:?}"));
        if let BackendMessage::BackendKeyData { pid, secret } = message {
            assert_eq!(pid, 4242, "clients see the real pid");
            assert_ne!(secret, 77, "clients never see the real secret");
        }
        if ready {
            break;
        }
    }
    assert_eq!(greeting.len(), 4, "{greeting:?}");

    let query = b"Q\0\0\0\x0dSELECT 1\0";
    client.send(query).await;
    assert_eq!(
        &database.raw().await[..],
        query,
        "the query reaches the database unchanged"
    );
    // CommandComplete "SELECT 1", then ReadyForQuery.
    let mut reply = BytesMut::new();
    reply.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0");
    backend::ready_for_query(b'I', &mut reply);
    database.send(&reply).await;
    assert_eq!(&client.raw().await[..], b"C\0\0\0\x0dSELECT 1\0");

    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(param("user"), Some("app"));
    assert_eq!(param("database"), Some("shop"));
    assert_eq!(param("application_name"), Some("in-process"));

    // The client leaves; the session ends.
    client.close().await;
    assert!(database.closed().await);
}
