//! The in-process gateway the tunnel tests drive: a [`TunnelContext`] whose
//! one database, `pg`, is reached through [`Pipes`] (each connection is one
//! end of an in-memory pipe handed to the test as a [`Db`]), an audit over a
//! SqliteStore in a temporary directory, and the client's and database's
//! halves of the PostgreSQL protocol. No sockets, no TLS, no PostgreSQL.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use postern_api::{Identity, RouteFrame};
use postern_gateway::audit::Auditor;
use postern_gateway::ca::{Authority, CaKind, CaMaterial};
use postern_gateway::catalog::Catalog;
use postern_gateway::config::{DatabaseConfig, Limits};
use postern_gateway::drain::Drained;
use postern_gateway::policy::{LivePolicy, Policy};
use postern_gateway::rbac::RoleSet;
use postern_gateway::revocation::Revocations;
use postern_gateway::store::{SqliteStore, Store};
use postern_gateway::tunnel::{self, TunnelContext};
use postern_gateway::upstream::{Connecting, Connector, DbStream, Dial, UpstreamError};
use postern_pgwire::{
    BackendMessage, CancelKey, ErrorFields, StartupPacket, backend, parse_message, parse_startup,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Role `dev`: every database, db user `app`, any db name but `secret`.
/// Role `prod-only`: databases labelled `env: prod`, which `pg` is not.
/// Role `strict`: like `dev`, and sessions end when the certificate expires.
pub const ROLES: &str = include_str!("roles.yaml");

/// The cancel key of the database's sessions in [`Gateway::session`].
pub const REAL_KEY: CancelKey = CancelKey {
    pid: 4242,
    secret: 77,
};

/// Largest message the test's readers accept.
const MAX_MESSAGE: usize = 1 << 20;

/// How the test gateway is set up; [`Setup::default`] is the common case.
pub struct Setup {
    /// Roles, as YAML documents.
    pub roles: &'static str,
    /// The catalog's one database `pg`, after `name: pg\n`.
    pub database: String,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Per-attempt login timeout of the catalog.
    pub login_timeout: Duration,
    /// The connector; [`Pipes`] when `None`.
    pub connector: Option<Arc<dyn Connector>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            roles: ROLES,
            database: "uri: db.test:5432\n".into(),
            limits: Limits::default(),
            login_timeout: Duration::from_secs(5),
            connector: None,
        }
    }
}

/// A gateway's tunnel endpoint, in process.
pub struct Gateway {
    /// What `tunnel::serve` runs with.
    pub ctx: Arc<TunnelContext>,
    /// The store behind the audit and the locks.
    pub store: Arc<dyn Store>,
    /// Every connection the gateway opened through [`Pipes`], in order.
    pub dials: mpsc::UnboundedReceiver<Db>,
    writer: std::thread::JoinHandle<()>,
    shutdown: CancellationToken,
    /// Every `tunnel::serve` started, so the audit can wait for them.
    tunnels: TaskTracker,
}

impl Gateway {
    /// A gateway with [`Setup::default`].
    pub fn start(dir: &Path) -> Gateway {
        Gateway::with(dir, Setup::default())
    }

    /// A gateway set up as `setup` says, its store in `dir`.
    pub fn with(dir: &Path, setup: Setup) -> Gateway {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        let db_ca =
            Authority::load(&CaMaterial::generate(CaKind::Database, "test").unwrap()).unwrap();
        let config: DatabaseConfig =
            serde_yaml_ng::from_str(&format!("name: pg\n{}", setup.database)).unwrap();
        let (tx, dials) = mpsc::unbounded_channel();
        let connector = setup.connector.unwrap_or_else(|| Arc::new(Pipes(tx)));
        let catalog = Catalog::with_connector(
            &[config],
            Arc::new(db_ca),
            None,
            setup.login_timeout,
            connector,
        )
        .unwrap();
        let roles =
            RoleSet::from_roles(RoleSet::from_yaml_documents(setup.roles).unwrap()).unwrap();
        let (auditor, writer) = Auditor::start(store.clone(), "test");
        let shutdown = CancellationToken::new();
        let revocations =
            Revocations::start(store.clone(), setup.limits.lock_poll, shutdown.clone());
        let ctx = TunnelContext::new(
            LivePolicy::new(Policy { roles, catalog }),
            auditor,
            store.clone(),
            revocations,
            setup.limits,
            "test",
        );
        Gateway {
            ctx: Arc::new(ctx),
            store,
            dials,
            writer,
            shutdown,
            tunnels: TaskTracker::new(),
        }
    }

    /// Serves one tunnel connection of `identity` in a task; the test
    /// holds the client's end.
    pub fn connect(&self, identity: Option<Identity>) -> (Client, JoinHandle<()>) {
        let (client, gateway_end) = tokio::io::duplex(64 * 1024);
        let ctx = self.ctx.clone();
        let serving = self
            .tunnels
            .spawn(async move { tunnel::serve(gateway_end, identity, &ctx).await });
        (Client::new(client), serving)
    }

    /// Opens a session of `identity` with `route`, and returns the client
    /// and the database connection the gateway opened for it.
    pub async fn open(&mut self, identity: Identity, route: RouteFrame) -> (Client, Db) {
        let (mut client, _serving) = self.connect(Some(identity));
        client.send(&route.encode()).await;
        let db = self
            .dials
            .recv()
            .await
            .expect("the gateway dials the database");
        (client, db)
    }

    /// A session of alice's to `pg` as `app`, greeted: the database
    /// accepted it with key [`REAL_KEY`].
    pub async fn session(&mut self) -> (Client, Db, Greeting) {
        let (mut client, mut db) = self.open(alice(), route("pg", "app", "shop")).await;
        db.startup().await;
        db.accept(REAL_KEY.pid, REAL_KEY.secret).await;
        let greeting = client.greeting().await;
        (client, db, greeting)
    }

    /// Drains the tunnels as `Running::drain` does, with `grace`: a future
    /// of its own, so the test can go on serving the gateway's dials.
    pub fn drain(&self, grace: Duration) -> impl Future<Output = Drained> + Send + 'static {
        let (drain, tunnels) = (self.ctx.drain.clone(), self.tunnels.clone());
        async move {
            let ending = Duration::from_secs(60);
            drain
                .run(&tunnels, grace, ending, std::future::pending())
                .await
        }
    }

    /// Every audit event: waits for every tunnel connection to end, stops
    /// the gateway and waits for the audit writer to store what it queued.
    pub async fn audit(self) -> Vec<Value> {
        let Gateway {
            ctx,
            store,
            writer,
            shutdown,
            tunnels,
            ..
        } = self;
        tunnels.close();
        tunnels.wait().await;
        shutdown.cancel();
        drop(Arc::into_inner(ctx).expect("no tunnel still runs"));
        writer.join().unwrap();
        store.recent_audit(1000).unwrap()
    }
}

/// The audit events named `event`.
pub fn events<'a>(audit: &'a [Value], event: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["event"] == event).collect()
}

/// Hands the test the database end of every connection the gateway opens.
pub struct Pipes(pub mpsc::UnboundedSender<Db>);

impl Connector for Pipes {
    fn connect<'a>(&'a self, dial: Dial<'a>) -> Connecting<'a> {
        Box::pin(async move {
            let (gateway_end, database_end) = tokio::io::duplex(64 * 1024);
            let _ = self.0.send(Db::new(dial.host.to_owned(), database_end));
            Ok(Box::new(gateway_end) as DbStream)
        })
    }
}

/// A connector whose database cannot be reached.
pub struct Unreachable;

impl Connector for Unreachable {
    fn connect<'a>(&'a self, dial: Dial<'a>) -> Connecting<'a> {
        Box::pin(async move {
            Err(UpstreamError::Unreachable {
                database: dial.database.to_owned(),
                addr: format!("{}:{}", dial.host, dial.port),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            })
        })
    }
}

/// A connector that never answers.
pub struct Silent;

impl Connector for Silent {
    fn connect<'a>(&'a self, _dial: Dial<'a>) -> Connecting<'a> {
        Box::pin(std::future::pending())
    }
}

/// alice, role `dev`, certificate valid for an hour.
pub fn alice() -> Identity {
    identity("alice", Duration::from_secs(3600))
}

/// `user` with role `dev`, whose certificate expires in `valid`.
pub fn identity(user: &str, valid: Duration) -> Identity {
    let expires = SystemTime::now() + valid;
    Identity {
        username: user.into(),
        roles: vec!["dev".into()],
        traits: Default::default(),
        expires_unix: expires.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
    }
}

/// A session route frame without startup parameters.
pub fn route(database: &str, db_user: &str, db_name: &str) -> RouteFrame {
    RouteFrame::Session {
        database: database.into(),
        db_user: Some(db_user.into()),
        db_name: Some(db_name.into()),
        db_roles: vec![],
        params: Default::default(),
    }
}

/// A PostgreSQL message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// One side of a PostgreSQL connection, read message by message.
pub struct Conn {
    io: DuplexStream,
    buf: BytesMut,
}

impl Conn {
    fn new(io: DuplexStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Writes `bytes` and flushes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next whole message, raw; `None` when the peer closed.
    pub async fn next_raw(&mut self) -> Option<BytesMut> {
        loop {
            if let Some((_, len)) = parse_message(&self.buf, MAX_MESSAGE).unwrap() {
                return Some(self.buf.split_to(len));
            }
            if self.io.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                assert!(self.buf.is_empty(), "closed inside a message");
                return None;
            }
        }
    }

    /// The next whole message, raw; the peer must not have closed.
    pub async fn raw(&mut self) -> BytesMut {
        self.next_raw().await.expect("connection closed")
    }

    /// Whether the peer closed with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        self.next_raw().await.is_none()
    }

    /// Reads exactly `n` bytes.
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert_ne!(
                self.io.read_buf(&mut self.buf).await.unwrap(),
                0,
                "closed after {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.split_to(n).to_vec()
    }

    /// Closes this side's writing half: the peer reads end of file.
    pub async fn close(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// The client's end of a tunnel.
pub struct Client(pub Conn);

impl std::ops::Deref for Client {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

impl Client {
    fn new(io: DuplexStream) -> Self {
        Client(Conn::new(io))
    }

    /// The startup reply up to ReadyForQuery.
    pub async fn greeting(&mut self) -> Greeting {
        let mut messages = Vec::new();
        let mut key = None;
        loop {
            let raw = self.raw().await;
            let message = decode(&raw);
            match &message {
                BackendMessage::ErrorResponse(fields) => {
                    panic!("the session was refused: {fields:?}")
                }
                BackendMessage::BackendKeyData { pid, secret } => {
                    key = Some(CancelKey {
                        pid: *pid,
                        secret: *secret,
                    })
                }
                _ => {}
            }
            messages.push(format!("{message:?}"));
            if matches!(message, BackendMessage::ReadyForQuery(_)) {
                let key = key.expect("BackendKeyData before ReadyForQuery");
                return Greeting { messages, key };
            }
        }
    }

    /// The ErrorResponse the gateway sends, after which it closes.
    pub async fn error(&mut self) -> ErrorFields {
        let raw = self.raw().await;
        let BackendMessage::ErrorResponse(fields) = decode(&raw) else {
            panic!("an ErrorResponse, got {:?}", decode(&raw));
        };
        assert!(self.closed().await, "the gateway closes after an error");
        fields
    }
}

/// What a client read before its session began.
#[derive(Debug)]
pub struct Greeting {
    /// Each message's Debug form.
    pub messages: Vec<String>,
    /// The cancel key the client was given.
    pub key: CancelKey,
}

/// Decodes one raw backend message.
pub fn decode(raw: &[u8]) -> BackendMessage<'_> {
    let (message, _) = parse_message(raw, MAX_MESSAGE).unwrap().unwrap();
    BackendMessage::decode(&message).unwrap()
}

/// A scripted database's end of one connection the gateway opened.
pub struct Db {
    /// The host the gateway dialed.
    pub host: String,
    conn: Conn,
}

impl std::ops::Deref for Db {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Db {
    fn new(host: String, io: DuplexStream) -> Self {
        Db {
            host,
            conn: Conn::new(io),
        }
    }

    /// The first packet: a StartupMessage or a CancelRequest.
    pub async fn packet(&mut self) -> StartupPacket {
        loop {
            if let Some((packet, len)) = parse_startup(&self.conn.buf).unwrap() {
                let _ = self.conn.buf.split_to(len);
                return packet;
            }
            assert_ne!(self.conn.io.read_buf(&mut self.conn.buf).await.unwrap(), 0);
        }
    }

    /// The StartupMessage's parameters.
    pub async fn startup(&mut self) -> Vec<(String, String)> {
        match self.packet().await {
            StartupPacket::Startup { params } => params,
            other => panic!("a StartupMessage, got {other:?}"),
        }
    }

    /// Accepts the login: AuthenticationOk, a ParameterStatus, the real
    /// cancel key, ReadyForQuery.
    pub async fn accept(&mut self, pid: i32, secret: i32) {
        let mut out = BytesMut::new();
        backend::authentication_ok(&mut out);
        backend::parameter_status("server_version", "15.0", &mut out).unwrap();
        backend::backend_key_data(pid, secret, &mut out);
        backend::ready_for_query(b'I', &mut out);
        self.send(&out).await;
    }

    /// Refuses the login with `fields`, then closes.
    pub async fn refuse(mut self, fields: &ErrorFields) {
        let mut out = BytesMut::new();
        backend::error_response(fields, &mut out);
        self.send(&out).await;
        self.close().await;
    }
}
