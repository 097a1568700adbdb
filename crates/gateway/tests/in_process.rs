//! A tunnel session driven in process: the client end is one half of an
//! in-memory pipe, and the "database" is a script on another pipe handed
//! to the gateway by its [`Connector`]. No sockets, no TLS, no PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postern_api::{Identity, RouteFrame};
use postern_gateway::audit::Auditor;
use postern_gateway::ca::{Authority, CaKind, CaMaterial};
use postern_gateway::catalog::Catalog;
use postern_gateway::config::{DatabaseConfig, Limits};
use postern_gateway::rbac::RoleSet;
use postern_gateway::revocation::Revocations;
use postern_gateway::store::{SqliteStore, Store};
use postern_gateway::tunnel::{self, TunnelContext};
use postern_gateway::upstream::{Connecting, Connector, DbStream, Dial};
use postern_pgwire::{BackendMessage, StartupPacket, backend, parse_message, parse_startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ROLES: &str = r#"
kind: role
version: v7
metadata: { name: dev }
spec:
  allow:
    db_labels: { "*": "*" }
    db_users: [app]
    db_names: ["*"]
"#;

/// Hands the test the database end of every connection the gateway opens.
struct Pipes(mpsc::UnboundedSender<(String, DuplexStream)>);

impl Connector for Pipes {
    fn connect<'a>(&'a self, dial: Dial<'a>) -> Connecting<'a> {
        Box::pin(async move {
            let (gateway_end, database_end) = tokio::io::duplex(64 * 1024);
            let _ = self.0.send((dial.host.to_owned(), database_end));
            Ok(Box::new(gateway_end) as DbStream)
        })
    }
}

/// A gateway whose one database, `pg`, is reached through [`Pipes`].
async fn gateway(
    store_dir: &std::path::Path,
) -> (
    TunnelContext,
    mpsc::UnboundedReceiver<(String, DuplexStream)>,
) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(store_dir).unwrap());
    let db_ca = Authority::load(&CaMaterial::generate(CaKind::Database, "test").unwrap()).unwrap();
    let config: DatabaseConfig = serde_yaml_ng::from_str("name: pg\nuri: db.test:5432\n").unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let catalog = Catalog::with_connector(
        &[config],
        Arc::new(db_ca),
        None,
        Duration::from_secs(5),
        Arc::new(Pipes(tx)),
    )
    .unwrap();
    let roles = RoleSet::from_roles(RoleSet::from_yaml_documents(ROLES).unwrap()).unwrap();
    let (auditor, _writer) = Auditor::start(store.clone());
    let revocations = Revocations::start(
        store.clone(),
        Duration::from_secs(1),
        CancellationToken::new(),
    );
    let ctx = TunnelContext::new(
        Arc::new(catalog),
        Arc::new(roles),
        auditor,
        store,
        revocations,
        Limits::default(),
    );
    (ctx, rx)
}

/// The next whole message from `conn`, read through `buf`.
async fn read_message(conn: &mut DuplexStream, buf: &mut BytesMut) -> BytesMut {
    loop {
        if let Some((_, len)) = parse_message(buf, 1 << 20).unwrap() {
            return buf.split_to(len);
        }
        assert_ne!(conn.read_buf(buf).await.unwrap(), 0, "connection closed");
    }
}

/// A database that accepts `app` without a password, then answers one query.
async fn scripted_database(mut conn: DuplexStream) -> (Vec<(String, String)>, Vec<u8>) {
    let mut buf = BytesMut::new();
    let startup = loop {
        if let Some((packet, _)) = parse_startup(&buf).unwrap() {
            break packet;
        }
        assert_ne!(conn.read_buf(&mut buf).await.unwrap(), 0);
    };
    let StartupPacket::Startup { params } = startup else {
        panic!("a StartupMessage, got {startup:?}");
    };
    let mut out = BytesMut::new();
    backend::authentication_ok(&mut out);
    backend::parameter_status("server_version", "15.0", &mut out).unwrap();
    backend::backend_key_data(4242, 77, &mut out);
    backend::ready_for_query(b'I', &mut out);
    conn.write_all(&out).await.unwrap();

    let mut buf = BytesMut::new();
    let query = read_message(&mut conn, &mut buf).await;
    // CommandComplete "SELECT 1", then ReadyForQuery.
    let mut reply = BytesMut::new();
    reply.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0");
    backend::ready_for_query(b'I', &mut reply);
    conn.write_all(&reply).await.unwrap();
    (params, query.to_vec())
}

#[tokio::test]
async fn a_session_runs_over_an_injected_connector() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut dials) = gateway(dir.path()).await;
    let (mut client, gateway_end) = tokio::io::duplex(64 * 1024);
    let identity = Identity {
        username: "alice".into(),
        roles: vec!["dev".into()],
        traits: Default::default(),
        expires_unix: i64::MAX / 2,
    };
    let serving =
        tokio::spawn(async move { tunnel::serve(gateway_end, Some(identity), &ctx).await });

    let route = RouteFrame::Session {
        database: "pg".into(),
        db_user: Some("app".into()),
        db_name: Some("shop".into()),
        db_roles: vec![],
        params: [("application_name".to_owned(), "in-process".to_owned())].into(),
    };
    client.write_all(&route.encode()).await.unwrap();
    let (host, database_end) = dials.recv().await.unwrap();
    assert_eq!(
        host, "db.test",
        "the connector is asked for the configured endpoint"
    );
    let database = tokio::spawn(scripted_database(database_end));

    // The greeting: the database's messages, with the gateway's own key.
    let mut buf = BytesMut::new();
    let mut greeting = Vec::new();
    loop {
        let raw = read_message(&mut client, &mut buf).await;
        let (message, _) = parse_message(&raw, 1 << 20).unwrap().unwrap();
        let message = BackendMessage::decode(&message).unwrap();
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

    let mut query = BytesMut::new();
    query.extend_from_slice(b"Q\0\0\0\x0dSELECT 1\0");
    client.write_all(&query).await.unwrap();
    let complete = read_message(&mut client, &mut buf).await;
    assert_eq!(&complete[..], b"C\0\0\0\x0dSELECT 1\0");
    let (params, relayed) = database.await.unwrap();
    assert_eq!(
        relayed,
        query.to_vec(),
        "the query reaches the database unchanged"
    );
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
    drop(client);
    serving.await.unwrap();
}
