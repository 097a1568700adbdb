//! The gateway's whole opening, in process: a person with a valid session
//! certificate sends any bytes (a route frame, then whatever follows), and
//! a database on an in-memory pipe answers with any bytes. The gateway must
//! end every such session (no panic, no hang: virtual time runs out every
//! timeout), and whatever the client sent, a login that reaches the
//! database is for the one db user the person's role allows, with no
//! parameter the tunnel reserves for itself.
//!
//! Input layout: a 2-byte little-endian length `n`, then `n` bytes from the
//! client, then the rest from the database.
#![no_main]
// The session future nests deeply (gateway stages inside `join!`).
#![recursion_limit = "256"]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern_api::Identity;
use postern_gateway::audit::Auditor;
use postern_gateway::ca::{Authority, CaKind, CaMaterial};
use postern_gateway::catalog::Catalog;
use postern_gateway::config::{DatabaseConfig, Limits};
use postern_gateway::policy::{LivePolicy, Policy};
use postern_gateway::rbac::RoleSet;
use postern_gateway::revocation::Revocations;
use postern_gateway::store::{SqliteStore, Store};
use postern_gateway::tunnel::{self, TunnelContext};
use postern_gateway::upstream::{Connecting, Connector, DbStream, Dial};
use postern_pgwire::{StartupPacket, parse_startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The only db user the fuzzed person may log in as.
const DB_USER: &str = "app";

/// The in-process gateway tests' roles: every one allows only [`DB_USER`];
/// the fuzzed person holds `dev`.
const ROLES: &str = include_str!("../../crates/gateway/tests/common/roles.yaml");

/// The database's side of the current input: what it answers, and every
/// byte the gateway sent it (over all connections, cancels included).
#[derive(Default)]
struct Script {
    reply: Vec<u8>,
    received: Vec<Vec<u8>>,
}

/// Opens an in-memory "database" that plays the current [`Script`].
struct Scripted(Arc<Mutex<Script>>);

impl Connector for Scripted {
    fn connect<'a>(&'a self, _dial: Dial<'a>) -> Connecting<'a> {
        Box::pin(async move {
            let (gateway_end, database_end) = tokio::io::duplex(64 * 1024);
            tokio::spawn(play(self.0.clone(), database_end));
            Ok(Box::new(gateway_end) as DbStream)
        })
    }
}

/// Sends the script's reply and keeps what the gateway sends until it
/// closes the connection.
async fn play(script: Arc<Mutex<Script>>, conn: DuplexStream) {
    let reply = script.lock().await.reply.clone();
    let (mut read, mut write) = tokio::io::split(conn);
    let answer = async move {
        let _ = write.write_all(&reply).await;
        let _ = write.shutdown().await;
    };
    let listen = async {
        let mut received = Vec::new();
        let _ = read.read_to_end(&mut received).await;
        received
    };
    let ((), received) = tokio::join!(answer, listen);
    script.lock().await.received.push(received);
}

struct Fixture {
    runtime: Runtime,
    ctx: TunnelContext,
    script: Arc<Mutex<Script>>,
}

/// One gateway for the whole run: building it per input (CA, store,
/// threads) would cost more than the session under test.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Paused time advances by itself whenever every task waits, so a
        // session that waits for a timeout ends at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let script = Arc::new(Mutex::new(Script::default()));
        let dir = std::env::temp_dir().join(format!("postern-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a store directory");
        let ctx = runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).expect("a store"));
            let db_ca = CaMaterial::generate(CaKind::Database, "fuzz").expect("a CA");
            let config: DatabaseConfig =
                serde_yaml_ng::from_str("name: pg\nuri: db.test:5432\n").expect("a database");
            let catalog = Catalog::with_connector(
                &[config],
                Arc::new(Authority::load(&db_ca).expect("the CA loads")),
                None,
                Duration::from_secs(5),
                Arc::new(Scripted(script.clone())),
            )
            .expect("a catalog");
            let roles = RoleSet::from_yaml_documents(ROLES).expect("roles parse");
            let (auditor, _writer) = Auditor::start(store.clone(), "fuzz");
            let revocations =
                Revocations::start(store.clone(), Duration::from_secs(1), CancellationToken::new());
            let roles = RoleSet::from_roles(roles).expect("a role set");
            TunnelContext::new(
                LivePolicy::new(Policy { roles, catalog }),
                auditor,
                store,
                revocations,
                Limits::default(),
                "fuzz",
            )
        });
        Fixture {
            runtime,
            ctx,
            script,
        }
    })
}

/// Every login the database received is for [`DB_USER`] and carries no
/// parameter only the gateway may set.
fn check_logins(received: &[Vec<u8>]) {
    for bytes in received {
        let Ok(Some((StartupPacket::Startup { params }, _))) = parse_startup(&BytesMut::from(
            &bytes[..],
        )) else {
            continue;
        };
        let users: Vec<_> = params.iter().filter(|(k, _)| k == "user").collect();
        assert_eq!(users.len(), 1, "one user parameter: {params:?}");
        assert_eq!(users[0].1, DB_USER, "login as another db user: {params:?}");
        for (key, value) in &params {
            let reserved = key.eq_ignore_ascii_case("replication")
                || key.to_ascii_lowercase().starts_with("_pq_.")
                || (key != "user" && key.eq_ignore_ascii_case("user"))
                || (key != "database" && key.eq_ignore_ascii_case("database"));
            assert!(!reserved, "reserved parameter passed through: {params:?}");
            assert!(
                !key.chars().chain(value.chars()).any(char::is_control),
                "control character passed through: {params:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (client, database) = rest.split_at(usize::from(u16::from_le_bytes(len)).min(rest.len()));
    let fixture = fixture();
    let received = fixture.runtime.block_on(async {
        *fixture.script.lock().await = Script {
            reply: database.to_vec(),
            received: Vec::new(),
        };
        let (mut person, gateway_end) = tokio::io::duplex(64 * 1024);
        let identity = Identity {
            username: "alice".into(),
            roles: vec!["dev".into()],
            traits: Default::default(),
            expires_unix: i64::MAX / 2,
        };
        let talk = async {
            let _ = person.write_all(client).await;
            let _ = person.shutdown().await;
            let mut answer = Vec::new();
            let _ = person.read_to_end(&mut answer).await;
        };
        tokio::join!(tunnel::serve(gateway_end, Some(identity), &fixture.ctx), talk);
        // Connections the session opened finish on their own once the
        // gateway drops its ends; wait for them before reading the script.
        loop {
            tokio::task::yield_now().await;
            if tokio::runtime::Handle::current().metrics().num_alive_tasks() <= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::mem::take(&mut fixture.script.lock().await.received)
    });
    check_logins(&received);
});
