//! Gateway replicas on one shared PostgreSQL store behind HAProxy in TCP
//! mode, the shape the README's "Running several gateways" describes, all
//! on loopback:
//!
//! - the test PostgreSQL 15 holds the users' databases and, in a database
//!   of its own that no user reaches, the store (its role is an ordinary
//!   owner, see [`SharedStore`]);
//! - each replica is a real `postern-gateway start` process, so a test can
//!   stop one with SIGTERM and watch it drain;
//! - a real HAProxy spreads new connections over the replicas round-robin,
//!   and sends them to another replica when one stops listening.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use postern_gateway::ca::{CaKind, CaMaterial};
use postern_gateway::server::load_ca;
use postern_gateway::store::{PostgresStore, Store};
use tempfile::TempDir;
use tokio::process::{Child, Command};

pub use crate::gateway_process::GatewayProcess;

use crate::pg::PgServer;
use crate::shared_store::SharedStore;
use crate::stack::{Clients, StackConfig, bin, gateway_yaml, put_user, wait_audit};
use crate::{eventually, free_port};

/// The store's database.
const STORE_DB: &str = "postern_store";

/// Replicas, their load balancer and their store.
pub struct Replicas {
    /// The replicas, in HAProxy's order (`a`, `b`, ...).
    pub gateways: Vec<GatewayProcess>,
    /// The load balancer in front of them.
    pub haproxy: HaProxy,
    /// The test's own handle on the shared store.
    pub store: Arc<dyn Store>,
    /// The store's server, which also holds the users' databases.
    pub shared: SharedStore,
    /// Fingerprint of the replicas' (one, shared) CA.
    pub ca_pin: String,
    dir: TempDir,
}

impl Replicas {
    /// Starts `count` replicas with `roles` (YAML) and the databases of a
    /// [`crate::stack::Stack`], plus `extra`, and HAProxy in front of them.
    pub async fn start(roles: &str, count: usize, extra: StackConfig<'_>) -> Replicas {
        let dir = tempfile::Builder::new()
            .prefix("postern-replicas-")
            .tempdir()
            .expect("replicas dir");
        // The database CA is given to the replicas as files: PostgreSQL must
        // trust it before the store (which lives on that same server) exists.
        let db_ca = CaMaterial::generate(CaKind::Database, "postern").expect("database CA");
        std::fs::write(dir.path().join("db-ca.pem"), &db_ca.cert_pem).expect("write CA");
        std::fs::write(dir.path().join("db-ca.key"), &db_ca.key_pem).expect("write CA key");
        let pg = PgServer::start(&db_ca.cert_pem).await;
        crate::stack::write_gateway_files(dir.path(), &pg, roles);
        let shared = SharedStore::start(pg).await;
        let store_config = shared.database(STORE_DB).await;
        let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || {
            Arc::new(PostgresStore::open(&store_config).expect("open the shared store"))
        })
        .await
        .expect("store task");

        let balancer_port = free_port();
        let gateway_extra = format!(
            "{store}database_ca: {{ cert_file: db-ca.pem, key_file: db-ca.key }}\npublic_url: https://localhost:{balancer_port}\n{extra}",
            store = shared.yaml(STORE_DB),
            extra = extra.gateway_extra,
        );
        let mut gateways = Vec::new();
        for name in replica_names(count) {
            let config = dir.path().join(format!("gateway-{name}.yaml"));
            let gateway_extra = format!("replica: {name}\n{gateway_extra}");
            let yaml = gateway_yaml(
                &shared.pg,
                &format!("data-{name}"),
                StackConfig {
                    gateway_extra: &gateway_extra,
                    ..extra
                },
            );
            std::fs::write(&config, yaml).expect("write gateway.yaml");
            gateways.push(GatewayProcess::start(&name, &config, dir.path()).await);
        }
        let ca_pin = gateways[0].ready.ca_pin.clone();
        assert!(
            gateways.iter().all(|g| g.ready.ca_pin == ca_pin),
            "replicas on one store serve one CA"
        );
        let servers: Vec<_> = gateways
            .iter()
            .map(|g| (g.name.clone(), g.ready.address.clone()))
            .collect();
        let haproxy = HaProxy::start(
            dir.path(),
            balancer_port,
            &servers,
            &host_ca_pem(store.as_ref()),
        )
        .await;
        Replicas {
            gateways,
            haproxy,
            store,
            shared,
            ca_pin,
            dir,
        }
    }

    /// The users' database server.
    pub fn pg(&self) -> &PgServer {
        &self.shared.pg
    }

    /// People who reach the replicas through HAProxy.
    pub fn clients(&self) -> Clients {
        self.clients_at(&self.haproxy.address())
    }

    /// People who reach replica `i` directly (their own homes, so a
    /// profile for the replica does not mix with the load balancer's).
    pub fn clients_of(&self, i: usize) -> Clients {
        self.clients_at(&self.gateways[i].ready.address)
    }

    fn clients_at(&self, gateway: &str) -> Clients {
        Clients {
            homes: self
                .dir
                .path()
                .join("homes")
                .join(gateway.replace(':', "_")),
            gateway: gateway.to_owned(),
            ca_pin: self.ca_pin.clone(),
            cli: crate::stack::bin("postern"),
        }
    }

    /// Creates a local user in the shared store.
    pub fn add_user(&self, name: &str, password: &str, roles: &[&str]) {
        put_user(self.store.as_ref(), name, password, roles);
    }

    /// Waits for an audit event of `kind` matching `matches` in the store.
    pub async fn wait_audit(
        &self,
        kind: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_audit(self.store.as_ref(), kind, matches).await
    }

    /// The gateways' CA (PEM), for what checks their certificates without
    /// pinning (HAProxy's health checks, a browser).
    pub fn gateway_ca_pem(&self) -> String {
        host_ca_pem(self.store.as_ref())
    }

    /// Every replica's log so far, for a failing test to show.
    pub fn logs(&self) -> String {
        self.gateways
            .iter()
            .map(|g| format!("--- replica {} ---\n{}", g.name, g.log()))
            .chain([format!(
                "--- haproxy ---\n{}",
                std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
            )])
            .collect()
    }

    /// Runs `postern-gateway --config <replica i's config> ARGS...`, the
    /// operator's CLI on the shared store.
    pub async fn gateway_cli(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(bin("postern-gateway"));
        cmd.arg("--config")
            .arg(self.gateways[i].config())
            .args(args)
            .env_remove("POSTERN_GATEWAY_CONFIG")
            .kill_on_drop(true);
        crate::stack::output(cmd).await
    }
}

/// The CA of the gateways' TLS certificates (PEM), from the store.
fn host_ca_pem(store: &dyn Store) -> String {
    load_ca(store, CaKind::Host, "postern")
        .expect("host CA")
        .cert_pem()
        .to_owned()
}

/// `a`, `b`, ...: short names that read well in logs and the audit.
fn replica_names(count: usize) -> Vec<String> {
    (b'a'..)
        .take(count)
        .map(|c| char::from(c).to_string())
        .collect()
}

/// HAProxy in TCP mode in front of the replicas; killed on drop.
pub struct HaProxy {
    /// Its loopback port.
    pub port: u16,
    _child: Child,
}

impl HaProxy {
    /// Starts HAProxy on 127.0.0.1:`port` in front of `servers` (name and
    /// `host:port` of each replica), with its configuration and log in
    /// `dir`, and returns once it accepts connections. `gateway_ca_pem` is
    /// the CA of the replicas' TLS certificates, for the readiness checks.
    pub async fn start(
        dir: &Path,
        port: u16,
        servers: &[(String, String)],
        gateway_ca_pem: &str,
    ) -> HaProxy {
        let ca_file = dir.join("haproxy-gateway-ca.pem");
        std::fs::write(&ca_file, gateway_ca_pem).expect("write the gateways' CA");
        let servers: String = servers
            .iter()
            .map(|(name, address)| format!("    server {name} {address}\n"))
            .collect();
        // TCP mode: TLS passes through untouched, so the replicas see the
        // clients' certificates. Each replica's /v1/ready is checked over
        // TLS verified against the gateways' CA (as the README's example
        // does); a replica that is draining or has stopped listening is
        // taken out, and a connection that could not reach it is retried on
        // another (`redispatch`).
        let config = format!(
            "global\n    maxconn 4096\n    log stderr format raw local0 info\n\
             defaults\n    log global\n    option tcplog\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    timeout check 2s\n    retries 3\n    option redispatch 1\n\
             frontend gateways\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance roundrobin\n    option httpchk GET /v1/ready\n    http-check expect status 200\n\
             \x20   default-server check check-ssl verify required ca-file {ca} verifyhost localhost inter 500ms fall 1 rise 1\n{servers}",
            ca = ca_file.display(),
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("haproxy log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy (scripts/install-test-deps installs it)");
        tokio::select! {
            status = child.wait() => panic!(
                "haproxy exited ({status:?}):\n{}",
                std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
            ),
            up = eventually(Duration::from_secs(20), async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await
            }) => { up.expect("haproxy listens"); }
        }
        HaProxy {
            port,
            _child: child,
        }
    }

    /// `host:port` as `postern login` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
