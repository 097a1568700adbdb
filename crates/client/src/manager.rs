//! Several tunnels at once, for the desktop app (and any long-running
//! client): start, list with live counters, stop, running queries, the
//! runaway guard, and favourites that come back on the next start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use postern_api::wire::CatalogEntry;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use crate::connect::{ConnectRequest, prepare};
use crate::error::ClientError;
use crate::home::{Home, write_private};
use crate::launch::Endpoint;
use crate::queries::{
    CancelOutcome, Dialect, GuardEvent, GuardPolicy, QueryHelper, RunningQuery, run_guard,
};
use crate::session::SessionSource;
use crate::tunnel::{self, Dialer, GatewayDialer, PortNote, Tunnel, TunnelListener, TunnelSpec};

/// What the user asked for when opening a tunnel; enough to open it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRequest {
    /// Profile (gateway) the tunnel belongs to.
    pub profile: String,
    /// Catalog database.
    pub database: String,
    /// Database user (None: the catalog default).
    pub db_user: Option<String>,
    /// Database name (None: the catalog default).
    pub db_name: Option<String>,
    /// Database roles (empty: all allowed).
    #[serde(default)]
    pub db_roles: Vec<String>,
    /// A fixed port (None: remembered or new).
    pub port: Option<u16>,
    /// Listen on a Unix socket in this directory instead of loopback TCP.
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
}

/// A tunnel as shown to the user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TunnelInfo {
    /// Stable id within this manager.
    pub id: u64,
    /// The request it was opened with.
    pub request: TunnelRequest,
    /// Resolved db user.
    pub db_user: Option<String>,
    /// Resolved db name.
    pub db_name: Option<String>,
    /// Database kind (`self-hosted`, `redshift-serverless`, ...).
    pub kind: String,
    /// libpq's `host`: the loopback address or the socket directory.
    pub host: String,
    /// libpq's `port`.
    pub port: u16,
    /// Where clients connect, as shown to people.
    pub address: String,
    /// When it started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Open client connections.
    pub connections: u64,
    /// Client connections so far.
    pub total_connections: u64,
    /// Bytes from clients so far.
    pub bytes_in: u64,
    /// Bytes to clients so far.
    pub bytes_out: u64,
    /// Runaway-guard thresholds in seconds.
    pub warn_after_secs: Option<u64>,
    /// Runaway-guard thresholds in seconds.
    pub cancel_after_secs: Option<u64>,
    /// Reopened on the next start.
    pub favourite: bool,
    /// The remembered port was taken and another was used.
    pub port_changed_from: Option<u16>,
    /// What to tell the user about that, when it happened.
    pub port_notice: Option<String>,
    /// Connections refused because another OS user made them.
    pub refused_connections: u64,
}

/// Where [`TunnelManager`] binds a tunnel.
enum Listen {
    /// The request's port or socket directory, else the remembered port.
    Remembered,
    /// Any free loopback port, not remembered.
    Private,
}

impl TunnelInfo {
    /// The tunnel's endpoint, for launchers and for showing how to connect.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            database: self.request.database.clone(),
            host: self.host.clone(),
            port: self.port,
            db_user: self.db_user.clone(),
            db_name: self.db_name.clone(),
        }
    }
}

/// A guard event, tagged with its tunnel.
#[derive(Clone, Debug)]
pub struct TunnelGuardEvent {
    /// Which tunnel.
    pub tunnel: u64,
    /// What happened.
    pub event: GuardEvent,
}

struct Managed {
    request: TunnelRequest,
    spec: TunnelSpec,
    kind: String,
    tunnel: Tunnel,
    started: SystemTime,
    policy: GuardPolicy,
    guard: Option<tokio::task::JoinHandle<()>>,
    port_note: PortNote,
}

/// How a [`TunnelManager`] reaches the gateway of a profile: the catalog
/// lookup that turns a request into a tunnel spec (mistakes caught before any
/// port is opened), and the dialer the tunnel's connections use.
/// [`ProfileGateways`] is the real one; tests inject a gateway over
/// in-memory pipes, so the manager is tested without a gateway.
pub trait GatewayAccess: Send + Sync + 'static {
    /// How the tunnel's connections reach the gateway.
    type Dialer: Dialer;

    /// Resolves `request` against the catalog of `profile`'s gateway: the
    /// tunnel spec, the catalog entry and a dialer for that gateway.
    fn prepare(
        &self,
        profile: &str,
        request: ConnectRequest,
    ) -> impl Future<Output = Result<(TunnelSpec, CatalogEntry, Arc<Self::Dialer>), ClientError>> + Send;
}

/// The gateways of the profiles under a home, reached with each profile's
/// current session (reloaded when the profile is signed in again).
pub struct ProfileGateways {
    home: Home,
}

impl ProfileGateways {
    /// The gateways of the profiles under `home`.
    pub fn new(home: Home) -> Self {
        ProfileGateways { home }
    }
}

impl GatewayAccess for ProfileGateways {
    type Dialer = GatewayDialer;

    async fn prepare(
        &self,
        profile: &str,
        request: ConnectRequest,
    ) -> Result<(TunnelSpec, CatalogEntry, Arc<GatewayDialer>), ClientError> {
        let source = Arc::new(SessionSource::new(self.home.clone(), profile.to_owned()));
        let session = source.current().await?;
        let (spec, entry) = prepare(&session, request).await?;
        let dialer = Arc::new(GatewayDialer::new(source, session.profile.gateway.clone()));
        Ok((spec, entry, dialer))
    }
}

/// Owns the running tunnels.
pub struct TunnelManager<G = ProfileGateways> {
    home: Home,
    gateways: G,
    tunnels: Mutex<BTreeMap<u64, Managed>>,
    next_id: std::sync::atomic::AtomicU64,
    guard_events: mpsc::Sender<TunnelGuardEvent>,
}

impl TunnelManager {
    /// A manager over `home` reaching each profile's gateway; guard events
    /// are sent to the returned receiver.
    pub fn new(home: Home) -> (Arc<Self>, mpsc::Receiver<TunnelGuardEvent>) {
        let gateways = ProfileGateways::new(home.clone());
        TunnelManager::with_gateways(home, gateways)
    }
}

impl<G: GatewayAccess> TunnelManager<G> {
    /// A manager over `home` reaching gateways through `gateways`; guard
    /// events are sent to the returned receiver.
    pub fn with_gateways(home: Home, gateways: G) -> (Arc<Self>, mpsc::Receiver<TunnelGuardEvent>) {
        let (tx, rx) = mpsc::channel(256);
        (
            Arc::new(TunnelManager {
                home,
                gateways,
                tunnels: Mutex::new(BTreeMap::new()),
                next_id: std::sync::atomic::AtomicU64::new(1),
                guard_events: tx,
            }),
            rx,
        )
    }

    /// Opens a tunnel on its remembered port (or the request's fixed port,
    /// or its Unix socket directory): a tunnel for other programs. An
    /// identical running tunnel is returned instead of a second one, so a
    /// double click never fails on a taken port.
    pub async fn start(&self, request: TunnelRequest) -> Result<TunnelInfo, ClientError> {
        if let Some(existing) = self.list().await.into_iter().find(|t| t.request == request) {
            return Ok(existing);
        }
        self.open(request, Listen::Remembered).await
    }

    /// Opens a tunnel only this process uses (the CLI's `db queries`): any
    /// free loopback port, not remembered, so a tunnel other programs know
    /// keeps its port. The request's `port` and `socket_dir` are not used.
    pub async fn start_private(&self, request: TunnelRequest) -> Result<TunnelInfo, ClientError> {
        self.open(request, Listen::Private).await
    }

    async fn open(
        &self,
        request: TunnelRequest,
        listen: Listen,
    ) -> Result<TunnelInfo, ClientError> {
        let (spec, entry, dialer) = self
            .gateways
            .prepare(
                &request.profile,
                ConnectRequest {
                    database: request.database.clone(),
                    db_user: request.db_user.clone(),
                    db_name: request.db_name.clone(),
                    db_roles: request.db_roles.clone(),
                },
            )
            .await?;
        let (listener, port_note) = match listen {
            Listen::Remembered => {
                tunnel::bind(
                    &self.home,
                    &request.profile,
                    &spec,
                    request.port,
                    request.socket_dir.as_deref(),
                )
                .await?
            }
            Listen::Private => (
                TunnelListener::Tcp(tunnel::bind_ephemeral().await?),
                PortNote::New,
            ),
        };
        let tunnel = Tunnel::start(listener, dialer, spec.clone())?;
        let id = self.next_id.fetch_add(1, Relaxed);
        let managed = Managed {
            request,
            spec,
            kind: entry.kind,
            tunnel,
            started: SystemTime::now(),
            policy: GuardPolicy::default(),
            guard: None,
            port_note,
        };
        let info = info(id, &managed, &load_favourites(&self.home));
        self.tunnels.lock().await.insert(id, managed);
        Ok(info)
    }

    /// Stops a tunnel and its guard.
    pub async fn stop(&self, id: u64) -> Result<(), ClientError> {
        let managed = self
            .tunnels
            .lock()
            .await
            .remove(&id)
            .ok_or(ClientError::UnknownTunnel(id))?;
        if let Some(guard) = managed.guard {
            guard.abort();
        }
        managed.tunnel.stop().await;
        Ok(())
    }

    /// Stops every tunnel (sign-out, quit).
    pub async fn stop_all(&self) {
        let all = std::mem::take(&mut *self.tunnels.lock().await);
        for (_, managed) in all {
            if let Some(guard) = managed.guard {
                guard.abort();
            }
            managed.tunnel.stop().await;
        }
    }

    /// All tunnels with live counters.
    pub async fn list(&self) -> Vec<TunnelInfo> {
        let favourites = load_favourites(&self.home);
        let tunnels = self.tunnels.lock().await;
        tunnels
            .iter()
            .map(|(id, m)| info(*id, m, &favourites))
            .collect()
    }

    async fn helper(&self, id: u64) -> Result<QueryHelper, ClientError> {
        let (addr, db_name, kind) = {
            let tunnels = self.tunnels.lock().await;
            let m = tunnels.get(&id).ok_or(ClientError::UnknownTunnel(id))?;
            (
                m.tunnel.addr().clone(),
                m.spec.db_name.clone(),
                m.kind.clone(),
            )
        };
        QueryHelper::connect(&addr, db_name.as_deref(), Dialect::for_kind(&kind)).await
    }

    /// The caller's running statements on a tunnel's database.
    pub async fn queries(&self, id: u64) -> Result<Vec<RunningQuery>, ClientError> {
        self.helper(id).await?.list().await
    }

    /// Cancels or terminates one statement through a tunnel.
    pub async fn cancel(
        &self,
        id: u64,
        pid: i32,
        terminate: bool,
    ) -> Result<CancelOutcome, ClientError> {
        self.helper(id).await?.cancel(pid, terminate).await
    }

    /// Sets (or clears, with an inactive policy) a tunnel's runaway guard.
    pub async fn set_guard(&self, id: u64, policy: GuardPolicy) -> Result<(), ClientError> {
        let helper = if policy.is_active() {
            Some(self.helper(id).await?)
        } else {
            None
        };
        let mut tunnels = self.tunnels.lock().await;
        let m = tunnels.get_mut(&id).ok_or(ClientError::UnknownTunnel(id))?;
        if let Some(old) = m.guard.take() {
            old.abort();
        }
        m.policy = policy;
        if let Some(helper) = helper {
            let (tx, mut rx) = mpsc::channel(16);
            let out = self.guard_events.clone();
            m.guard = Some(tokio::spawn(async move {
                let forward = async {
                    while let Some(event) = rx.recv().await {
                        if out
                            .send(TunnelGuardEvent { tunnel: id, event })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                };
                tokio::join!(run_guard(helper, policy, tx), forward);
            }));
        }
        Ok(())
    }

    /// Marks or unmarks a tunnel as a favourite.
    pub async fn set_favourite(&self, id: u64, favourite: bool) -> Result<(), ClientError> {
        let request = {
            let tunnels = self.tunnels.lock().await;
            tunnels
                .get(&id)
                .ok_or(ClientError::UnknownTunnel(id))?
                .request
                .clone()
        };
        let mut favourites = load_favourites(&self.home);
        favourites.retain(|r| *r != request);
        if favourite {
            favourites.push(request);
        }
        save_favourites(&self.home, &favourites)
    }

    /// Reopens the favourite tunnels; failures are returned per request so
    /// the app can say which did not come back and why.
    pub async fn restore_favourites(
        &self,
    ) -> Vec<(TunnelRequest, Result<TunnelInfo, ClientError>)> {
        let mut out = Vec::new();
        for request in load_favourites(&self.home) {
            let result = self.start(request.clone()).await;
            out.push((request, result));
        }
        out
    }
}

fn info(id: u64, m: &Managed, favourites: &[TunnelRequest]) -> TunnelInfo {
    let stats = m.tunnel.stats();
    let addr = m.tunnel.addr();
    TunnelInfo {
        id,
        request: m.request.clone(),
        db_user: m.spec.db_user.clone(),
        db_name: m.spec.db_name.clone(),
        kind: m.kind.clone(),
        host: addr.host(),
        port: addr.port(),
        address: addr.to_string(),
        started_unix: m
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        connections: stats.active.load(Relaxed),
        total_connections: stats.total.load(Relaxed),
        bytes_in: stats.bytes_in.load(Relaxed),
        bytes_out: stats.bytes_out.load(Relaxed),
        warn_after_secs: m.policy.warn_after.map(|d| d.as_secs()),
        cancel_after_secs: m.policy.cancel_after.map(|d| d.as_secs()),
        favourite: favourites.contains(&m.request),
        port_changed_from: match m.port_note {
            PortNote::RememberedTaken { port, .. } => Some(port),
            _ => None,
        },
        port_notice: m.port_note.notice(addr),
        refused_connections: stats.refused.load(Relaxed),
    }
}

fn favourites_path(home: &Home) -> std::path::PathBuf {
    home.dir().join("favourites.json")
}

fn load_favourites(home: &Home) -> Vec<TunnelRequest> {
    std::fs::read_to_string(favourites_path(home))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_favourites(home: &Home, favourites: &[TunnelRequest]) -> Result<(), ClientError> {
    write_private(
        &favourites_path(home),
        serde_json::to_string_pretty(favourites)
            .expect("favourites serialize")
            .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use postern_api::RouteFrame;
    use postern_api::wire::AllowedValues;
    use postern_pgwire::{backend, frontend};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::TcpStream;

    /// What the fake database says first: authentication ok, ready for query.
    fn greeting() -> Vec<u8> {
        let mut out = BytesMut::new();
        backend::authentication_ok(&mut out);
        backend::ready_for_query(b'I', &mut out);
        out.to_vec()
    }

    /// A gateway over in-memory pipes: every session is greeted, then
    /// whatever the client sends is echoed back.
    struct ScriptedDialer;

    impl Dialer for ScriptedDialer {
        type Stream = DuplexStream;

        async fn open(&self, _route: &RouteFrame) -> Result<DuplexStream, ClientError> {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = tokio::io::split(theirs);
                to_client.write_all(&greeting()).await?;
                tokio::io::copy(&mut from_client, &mut to_client).await
            });
            Ok(ours)
        }
    }

    /// A catalog with every database but `missing`, each with one db user.
    struct FakeGateways;

    impl GatewayAccess for FakeGateways {
        type Dialer = ScriptedDialer;

        async fn prepare(
            &self,
            _profile: &str,
            request: ConnectRequest,
        ) -> Result<(TunnelSpec, CatalogEntry, Arc<ScriptedDialer>), ClientError> {
            if request.database == "missing" {
                return Err(ClientError::UnknownDatabase(request.database));
            }
            let spec = TunnelSpec {
                database: request.database.clone(),
                db_user: request.db_user.or(Some("reader".into())),
                db_name: request.db_name,
                db_roles: request.db_roles,
            };
            let entry = CatalogEntry {
                name: request.database,
                description: String::new(),
                protocol: "postgres".into(),
                kind: "self-hosted".into(),
                labels: Default::default(),
                db_users: AllowedValues::default(),
                db_names: AllowedValues::default(),
                db_roles: vec![],
                auto_user_mode: "off".into(),
                limits: Default::default(),
            };
            Ok((spec, entry, Arc::new(ScriptedDialer)))
        }
    }

    fn manager(home: &tempfile::TempDir) -> Arc<TunnelManager<FakeGateways>> {
        TunnelManager::with_gateways(Home::at(home.path().to_owned()), FakeGateways).0
    }

    fn request(database: &str) -> TunnelRequest {
        TunnelRequest {
            profile: "work".into(),
            database: database.into(),
            db_user: None,
            db_name: None,
            db_roles: vec![],
            port: None,
            socket_dir: None,
        }
    }

    async fn connect(tunnel: &TunnelInfo) -> std::io::Result<TcpStream> {
        TcpStream::connect((tunnel.host.as_str(), tunnel.port)).await
    }

    /// Opens a session through the tunnel as psql would, reads the greeting
    /// and has `query` echoed; returns the open connection.
    async fn session(tunnel: &TunnelInfo, query: &[u8]) -> TcpStream {
        let mut client = connect(tunnel).await.unwrap();
        let mut out = BytesMut::new();
        frontend::startup_message([("user", "alice")], &mut out).unwrap();
        client.write_all(&out).await.unwrap();
        let mut got = vec![0; greeting().len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, greeting());
        client.write_all(query).await.unwrap();
        let mut echo = vec![0; query.len()];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, query);
        client
    }

    #[tokio::test]
    async fn a_second_identical_start_returns_the_running_tunnel() {
        let home = tempfile::tempdir().unwrap();
        let manager = manager(&home);
        let first = manager.start(request("pg")).await.unwrap();
        let again = manager.start(request("pg")).await.unwrap();
        assert_eq!((again.id, again.port), (first.id, first.port));
        assert_eq!(first.db_user.as_deref(), Some("reader"));
        assert_eq!(first.kind, "self-hosted");

        let other = manager.start(request("analytics")).await.unwrap();
        assert_ne!(other.id, first.id);
        assert_ne!(other.port, first.port);
        assert_eq!(manager.list().await.len(), 2);
        manager.stop_all().await;
    }

    #[tokio::test]
    async fn a_database_the_catalog_lacks_opens_no_tunnel() {
        let home = tempfile::tempdir().unwrap();
        let manager = manager(&home);
        let err = manager.start(request("missing")).await.unwrap_err();
        assert!(matches!(err, ClientError::UnknownDatabase(ref d) if d == "missing"));
        assert!(manager.list().await.is_empty());
    }

    #[tokio::test]
    async fn stop_and_stop_all_close_the_listeners() {
        let home = tempfile::tempdir().unwrap();
        let manager = manager(&home);
        let a = manager.start(request("pg")).await.unwrap();
        let b = manager.start(request("analytics")).await.unwrap();

        manager.stop(a.id).await.unwrap();
        let refused = connect(&a).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            manager.stop(a.id).await,
            Err(ClientError::UnknownTunnel(id)) if id == a.id
        ));
        assert_eq!(manager.list().await.len(), 1);
        session(&b, b"still served").await;

        manager.stop_all().await;
        let refused = connect(&b).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(manager.list().await.is_empty());
    }

    #[tokio::test]
    async fn the_list_shows_live_connections_and_bytes() {
        let home = tempfile::tempdir().unwrap();
        let manager = manager(&home);
        let tunnel = manager.start(request("pg")).await.unwrap();
        assert_eq!((tunnel.connections, tunnel.total_connections), (0, 0));

        // The session is open and both ways have been relayed once the
        // echo is back: the counters already say so.
        let _psql = session(&tunnel, b"select 1").await;
        let [now] = manager.list().await.try_into().unwrap();
        assert_eq!(now.connections, 1);
        assert_eq!(now.total_connections, 1);
        assert_eq!(now.bytes_in, 8);
        assert_eq!(now.bytes_out, greeting().len() as u64 + 8);
        assert_eq!(now.refused_connections, 0);
        manager.stop_all().await;
    }

    #[tokio::test]
    async fn favourites_come_back_on_their_remembered_port() {
        let home = tempfile::tempdir().unwrap();
        let before = manager(&home);
        let pg = before.start(request("pg")).await.unwrap();
        let other = before.start(request("analytics")).await.unwrap();
        assert!(!pg.favourite);
        before.set_favourite(pg.id, true).await.unwrap();
        before.set_favourite(other.id, true).await.unwrap();
        before.set_favourite(other.id, false).await.unwrap();
        let favourites: Vec<bool> = before.list().await.iter().map(|t| t.favourite).collect();
        assert_eq!(favourites, [true, false]);
        before.stop_all().await;

        // The next start of the app: a new manager over the same home.
        let after = manager(&home);
        let restored = after.restore_favourites().await;
        assert_eq!(restored.len(), 1);
        let (request_back, result) = &restored[0];
        assert_eq!(*request_back, request("pg"));
        let back = result.as_ref().unwrap();
        assert_eq!(back.port, pg.port);
        assert!(back.favourite);
        assert_eq!(back.port_notice, None);
        session(back, b"select 1").await;
        after.stop_all().await;
    }

    #[tokio::test]
    async fn a_remembered_port_held_by_another_program_is_told_and_kept() {
        let home = tempfile::tempdir().unwrap();
        let manager = manager(&home);
        let first = manager.start(request("pg")).await.unwrap();
        let port = first.port;
        manager.stop_all().await;

        let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let moved = manager.start(request("pg")).await.unwrap();
        assert_ne!(moved.port, port);
        assert_eq!(moved.port_changed_from, Some(port));
        let notice = moved.port_notice.clone().unwrap();
        assert!(
            notice.contains(&format!(
                "Port {port}, used by this tunnel last time, is held by another program"
            )) && notice.contains(&format!("listens on {} for now", moved.address)),
            "{notice}"
        );
        session(&moved, b"select 1").await;
        manager.stop_all().await;

        // Once the other program is gone the tunnel is back where saved
        // connections expect it.
        drop(squatter);
        let back = manager.start(request("pg")).await.unwrap();
        assert_eq!(back.port, port);
        assert_eq!((back.port_changed_from, back.port_notice), (None, None));
        manager.stop_all().await;
    }
}
