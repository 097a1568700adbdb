//! The local tunnel: a loopback PostgreSQL endpoint that carries each client
//! connection to the gateway over mutually authenticated TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use postern_api::RouteFrame;
use postern_pgwire::{ErrorFields, StartupPacket, backend, parse_startup};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ClientError;
use crate::home::Home;
use crate::owner;
use crate::ports::{port_key, remember, remembered};
use crate::session::SessionSource;
use crate::tls::split_addr;

/// Relay buffer per direction.
const BUF: usize = 64 * 1024;
/// Time a client gets to send its startup packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to reach the gateway.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Cancels per second forwarded for clients that closed before the owner
/// check (see [`Shared::checked`]): each costs a TLS handshake with the
/// gateway, and any local user can send them.
const CLOSED_CANCELS_PER_SECOND: u32 = 10;

/// A tunnel connection to the gateway. rustls reads at most 4 KiB per call;
/// the buffer underneath turns that into one syscall per 64 KiB.
pub type GatewayStream = TlsStream<BufReader<TcpStream>>;

/// What a tunnel connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Catalog database.
    pub database: String,
    /// Database user; `None` takes the client's startup `user`.
    pub db_user: Option<String>,
    /// Default database name; a client's own `database` is honoured when given.
    pub db_name: Option<String>,
    /// Database roles to request (auto-provisioning).
    pub db_roles: Vec<String>,
}

/// Live counters of a tunnel.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Open client connections.
    pub active: AtomicU64,
    /// Client connections accepted so far.
    pub total: AtomicU64,
    /// Bytes from clients to the database so far.
    pub bytes_in: AtomicU64,
    /// Bytes from the database to clients so far.
    pub bytes_out: AtomicU64,
    /// Connections refused because another OS user made them.
    pub refused: AtomicU64,
}

/// How a tunnel reaches the gateway for each client connection (as
/// cloud-sql-proxy's `Dialer`): [`GatewayDialer`] is the real one; tests
/// inject in-memory pipes and failing dialers, so the listener's logic is
/// tested without a gateway.
pub trait Dialer: Send + Sync + 'static {
    /// A connection to the gateway, carrying one client connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a connection for `route` (the route frame is already sent).
    fn open(
        &self,
        route: &RouteFrame,
    ) -> impl Future<Output = Result<Self::Stream, ClientError>> + Send;
}

/// Reaches the gateway over mutually authenticated TLS with the current
/// session of a profile.
pub struct GatewayDialer {
    source: Arc<SessionSource>,
    gateway: String,
}

impl GatewayDialer {
    /// Dials `gateway` with sessions from `source`.
    pub fn new(source: Arc<SessionSource>, gateway: String) -> Self {
        GatewayDialer { source, gateway }
    }
}

impl Dialer for GatewayDialer {
    type Stream = GatewayStream;

    async fn open(&self, route: &RouteFrame) -> Result<GatewayStream, ClientError> {
        let session = self.source.current().await?;
        let (name, addr) = split_addr(&self.gateway)?;
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: self.gateway.clone(),
            reason,
        };
        let connect = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| unreachable(e.to_string()))?;
            TlsConnector::from(session.tunnel_tls())
                .connect(name, BufReader::with_capacity(BUF, tcp))
                .await
                .map_err(|e| unreachable(format!("TLS: {e}")))
        };
        let mut tls = tokio::time::timeout(DIAL_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable("timed out".into()))??;
        tls.write_all(&route.encode())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(tls)
    }
}

/// Where a tunnel listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelAddr {
    /// A loopback TCP port.
    Tcp(SocketAddr),
    /// A Unix socket `DIR/.s.PGSQL.PORT`, named as libpq expects, so
    /// `psql "host=DIR port=PORT"` finds it.
    Socket {
        /// The socket's directory (mode 0700).
        dir: PathBuf,
        /// The port in the socket's name.
        port: u16,
    },
}

impl TunnelAddr {
    /// libpq's `host`: the loopback address, or the socket directory.
    pub fn host(&self) -> String {
        match self {
            TunnelAddr::Tcp(a) => a.ip().to_string(),
            TunnelAddr::Socket { dir, .. } => dir.display().to_string(),
        }
    }

    /// libpq's `port`.
    pub fn port(&self) -> u16 {
        match self {
            TunnelAddr::Tcp(a) => a.port(),
            TunnelAddr::Socket { port, .. } => *port,
        }
    }

    /// The socket file of a Unix-socket tunnel.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            TunnelAddr::Tcp(_) => None,
            TunnelAddr::Socket { dir, port } => Some(socket_file(dir, *port)),
        }
    }
}

impl std::fmt::Display for TunnelAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.socket_path() {
            Some(path) => write!(f, "{}", path.display()),
            None => write!(f, "{}:{}", self.host(), self.port()),
        }
    }
}

/// A good directory for Unix-socket tunnels: the user's runtime directory
/// (private, and short, as socket paths must be), else the profile directory.
pub fn default_socket_dir(home: &Home) -> PathBuf {
    directories::BaseDirs::new()
        .and_then(|b| b.runtime_dir().map(|d| d.join("postern")))
        .unwrap_or_else(|| home.dir().join("sockets"))
}

/// libpq's name for the socket of `port` in `dir`.
fn socket_file(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// A bound tunnel endpoint, ready for [`Tunnel::start`].
pub enum TunnelListener {
    /// Loopback TCP.
    Tcp(TcpListener),
    /// A Unix socket.
    #[cfg(unix)]
    Socket {
        /// The listening socket.
        listener: tokio::net::UnixListener,
        /// Where it is.
        dir: PathBuf,
        /// The port in its name.
        port: u16,
    },
}

/// An accepted client connection.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    #[cfg(unix)]
    Socket(tokio::net::UnixStream),
}

impl TunnelListener {
    /// Where it listens.
    pub fn addr(&self) -> Result<TunnelAddr, ClientError> {
        match self {
            TunnelListener::Tcp(l) => Ok(TunnelAddr::Tcp(
                l.local_addr()
                    .map_err(ClientError::io("reading the bound port"))?,
            )),
            #[cfg(unix)]
            TunnelListener::Socket { dir, port, .. } => Ok(TunnelAddr::Socket {
                dir: dir.clone(),
                port: *port,
            }),
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            TunnelListener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            #[cfg(unix)]
            TunnelListener::Socket { listener, .. } => {
                listener.accept().await.map(|(s, _)| Accepted::Socket(s))
            }
        }
    }
}

/// A running tunnel; dropping it stops the listener and its connections
/// (and removes its socket file).
pub struct Tunnel {
    addr: TunnelAddr,
    stats: Arc<TunnelStats>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(path) = self.addr.socket_path() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How the port was chosen, for telling the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortNote {
    /// The requested or remembered port.
    AsBefore,
    /// A new port (first use).
    New,
    /// The remembered port is held by another program; another port was
    /// used for now, and the remembered one stays remembered.
    RememberedTaken {
        /// The remembered port.
        port: u16,
        /// The OS user running the program that holds it, when known.
        holder: Option<String>,
    },
}

impl PortNote {
    /// What to tell the user when the tunnel is not where it was last time:
    /// saved connections (pg_service.conf, pgAdmin) still name the old port,
    /// and they now reach someone else's program, not Postern.
    pub fn notice(&self, now: &TunnelAddr) -> Option<String> {
        let PortNote::RememberedTaken { port, holder } = self else {
            return None;
        };
        let who = holder
            .as_deref()
            .map(|u| format!(" (run by OS user {u})"))
            .unwrap_or_default();
        Some(format!(
            "Port {port}, used by this tunnel last time, is held by another program{who}. \
             Saved connections that use port {port} reach that program, not Postern: \
             do not use them until it is gone. This tunnel listens on {now} for now; \
             port {port} stays remembered for next time."
        ))
    }
}

/// Binds the tunnel: on loopback TCP, or on a Unix socket in `socket_dir`.
/// The port is `fixed` if given (an error if taken), else the remembered
/// one, else a new one. A new port is remembered; when the remembered port
/// is held by another program a new one is used for now and the remembered
/// one is kept, so the user is never told the new port is the old one.
pub async fn bind(
    home: &Home,
    profile: &str,
    spec: &TunnelSpec,
    fixed: Option<u16>,
    socket_dir: Option<&Path>,
) -> Result<(TunnelListener, PortNote), ClientError> {
    let key = port_key(
        profile,
        &spec.database,
        spec.db_user.as_deref(),
        spec.db_name.as_deref(),
    );
    let (listener, note) = match socket_dir {
        None => bind_tcp(fixed, remembered(home, &key)).await?,
        Some(dir) => bind_socket(dir, fixed, remembered(home, &key))?,
    };
    if !matches!(note, PortNote::RememberedTaken { .. }) {
        remember(home, &key, listener.addr()?.port())?;
    }
    Ok((listener, note))
}

async fn bind_tcp(
    fixed: Option<u16>,
    remembered: Option<u16>,
) -> Result<(TunnelListener, PortNote), ClientError> {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (listener, note) = if let Some(port) = fixed {
        let listener =
            TcpListener::bind(loopback(port))
                .await
                .map_err(|e| ClientError::PortUnavailable {
                    port,
                    reason: e.to_string(),
                })?;
        (listener, PortNote::AsBefore)
    } else if let Some(port) = remembered {
        match TcpListener::bind(loopback(port)).await {
            Ok(l) => (l, PortNote::AsBefore),
            Err(_) => (
                bind_ephemeral().await?,
                PortNote::RememberedTaken {
                    port,
                    holder: owner::tcp_listener_uid(port).map(owner::user_name),
                },
            ),
        }
    } else {
        (bind_ephemeral().await?, PortNote::New)
    };
    Ok((TunnelListener::Tcp(listener), note))
}

/// The first port tried for a new socket: PostgreSQL's own.
#[cfg(unix)]
const FIRST_SOCKET_PORT: u16 = 5432;

#[cfg(unix)]
fn bind_socket(
    dir: &Path,
    fixed: Option<u16>,
    remembered: Option<u16>,
) -> Result<(TunnelListener, PortNote), ClientError> {
    private_dir(dir)?;
    let taken = |port| ClientError::SocketTaken {
        dir: dir.display().to_string(),
        port,
    };
    let (listener, port, note) = if let Some(port) = fixed {
        let listener = listen_socket(dir, port)?.ok_or_else(|| taken(port))?;
        (listener, port, PortNote::AsBefore)
    } else if let Some(port) = remembered {
        match listen_socket(dir, port)? {
            Some(l) => (l, port, PortNote::AsBefore),
            None => {
                let (l, new) = first_free_socket(dir)?;
                let holder = None;
                (l, new, PortNote::RememberedTaken { port, holder })
            }
        }
    } else {
        let (l, port) = first_free_socket(dir)?;
        (l, port, PortNote::New)
    };
    Ok((
        TunnelListener::Socket {
            listener,
            dir: dir.to_owned(),
            port,
        },
        note,
    ))
}

#[cfg(not(unix))]
fn bind_socket(
    _dir: &Path,
    _fixed: Option<u16>,
    _remembered: Option<u16>,
) -> Result<(TunnelListener, PortNote), ClientError> {
    Err(ClientError::NoUnixSockets)
}

/// Listens on the first free socket name from PostgreSQL's own port up.
#[cfg(unix)]
fn first_free_socket(dir: &Path) -> Result<(tokio::net::UnixListener, u16), ClientError> {
    for port in FIRST_SOCKET_PORT..FIRST_SOCKET_PORT.saturating_add(1000) {
        if let Some(listener) = listen_socket(dir, port)? {
            return Ok((listener, port));
        }
    }
    Err(ClientError::SocketTaken {
        dir: dir.display().to_string(),
        port: FIRST_SOCKET_PORT,
    })
}

/// Makes sure `dir` is a directory only this user can enter, creating it
/// (mode 0700) when missing. An existing directory that others can enter is
/// refused rather than changed: it is the user's, and others may rely on it.
#[cfg(unix)]
fn private_dir(dir: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let refuse = |reason: String| ClientError::SocketDir {
        dir: dir.display().to_string(),
        reason,
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| refuse(e.to_string()))?;
            std::fs::symlink_metadata(dir).map_err(|e| refuse(e.to_string()))?
        }
        Err(e) => return Err(refuse(e.to_string())),
        Ok(meta) => meta,
    };
    let me = owner::Owner::current();
    if !meta.is_dir() {
        Err(refuse("it is not a directory".into()))
    } else if meta.uid() != me.uid() {
        Err(refuse(format!(
            "it belongs to OS user {}",
            owner::user_name(meta.uid())
        )))
    } else if meta.mode() & 0o077 != 0 {
        Err(refuse(format!(
            "other users can enter it (mode {:o})",
            meta.mode() & 0o777
        )))
    } else {
        Ok(())
    }
}

/// Listens on `dir/.s.PGSQL.port` (mode 0600); `None` when another program
/// serves it. A socket file nobody answers on is left over from a process
/// that died, and is replaced.
#[cfg(unix)]
fn listen_socket(dir: &Path, port: u16) -> Result<Option<tokio::net::UnixListener>, ClientError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = socket_file(dir, port);
    let io = |e| ClientError::io(format!("listening on {}", path.display()))(e);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
        Ok(meta) if !meta.file_type().is_socket() => return Ok(None),
        Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(&path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        },
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(io)?;
    // The 0700 directory already keeps others out; the mode says so too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(Some(listener))
}

/// Binds a free loopback port for a tunnel only this process uses.
pub async fn bind_ephemeral() -> Result<TcpListener, ClientError> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(ClientError::io("binding a loopback port"))
}

impl Tunnel {
    /// Serves `listener` until stopped. Connections from programs of other
    /// OS users are refused before anything reaches the gateway.
    pub fn start<D: Dialer>(
        listener: TunnelListener,
        dialer: Arc<D>,
        spec: TunnelSpec,
    ) -> Result<Self, ClientError> {
        let addr = listener.addr()?;
        if matches!(addr, TunnelAddr::Tcp(_)) && !owner::TCP_OWNER_CHECK {
            tracing::warn!(
                tunnel = %addr,
                "the tunnel owner check is not available on this system: other local users can use this port"
            );
        }
        let stats = Arc::new(TunnelStats::default());
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared {
            dialer,
            spec,
            owner: owner::Owner::current(),
            addr: addr.clone(),
            closed_cancels: Default::default(),
        });
        {
            let (stats, stop, tracker2) = (stats.clone(), stop.clone(), tracker.clone());
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = listener.accept() => r,
                    };
                    let conn = match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let (shared, stats, stop) = (shared.clone(), stats.clone(), stop.clone());
                    tracker2.spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = shared.handle(conn, &stats) => {}
                        }
                    });
                }
            });
        }
        tracker.close();
        Ok(Tunnel {
            addr,
            stats,
            stop,
            tracker,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> &TunnelAddr {
        &self.addr
    }

    /// Live counters.
    pub fn stats(&self) -> &TunnelStats {
        &self.stats
    }

    /// Stops accepting, closes connections and waits for them.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

/// What every connection of a tunnel needs.
struct Shared<D> {
    dialer: Arc<D>,
    spec: TunnelSpec,
    owner: owner::Owner,
    addr: TunnelAddr,
    /// The start of the current second and the cancels forwarded in it for
    /// clients that had closed.
    closed_cancels: std::sync::Mutex<Option<(tokio::time::Instant, u32)>>,
}

impl<D: Dialer> Shared<D> {
    /// Checks who connected, then serves or refuses the connection.
    async fn handle(&self, conn: Accepted, stats: &TunnelStats) {
        match conn {
            Accepted::Tcp(stream, peer) => {
                let checked = match stream.local_addr() {
                    Ok(local) => self.owner.check_tcp(local, peer),
                    Err(e) => Err(owner::OwnerError::Unknown {
                        owner: self.owner.name().to_owned(),
                        reason: e.to_string(),
                    }),
                };
                let _ = stream.set_nodelay(true);
                self.checked(stream, checked, stats).await
            }
            #[cfg(unix)]
            Accepted::Socket(stream) => {
                let checked = self.owner.check_unix(&stream);
                self.checked(stream, checked, stats).await
            }
        }
    }

    async fn checked<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut client: S,
        checked: Result<(), owner::OwnerError>,
        stats: &TunnelStats,
    ) {
        if let Err(e) = checked {
            // Read the client's opening first, as PostgreSQL does, so it
            // receives the error instead of a reset.
            let opening = tokio::time::timeout(STARTUP_TIMEOUT, read_opening(&mut client)).await;
            match (&e, opening) {
                // tokio-postgres closes its socket as soon as its
                // CancelRequest is written, so on a busy machine it is gone
                // before the check. Its cancel is forwarded: whoever sent it,
                // the gateway honours a key only for this user's sessions,
                // with a secret only they were told, under a per-identity
                // rate limit. Anything else from a socket nobody holds is
                // refused: a startup and a query written before closing
                // would run as this user.
                (owner::OwnerError::Closed { .. }, Ok(Ok(Opening::Cancel(pid, secret)))) => {
                    if self.allow_closed_cancel() {
                        stats.total.fetch_add(1, Relaxed);
                        forward_cancel(self.dialer.as_ref(), pid, secret).await;
                    } else {
                        stats.refused.fetch_add(1, Relaxed);
                        tracing::warn!(tunnel = %self.addr, "cancel request dropped: too many from closed connections");
                    }
                }
                (_, opening) => {
                    stats.refused.fetch_add(1, Relaxed);
                    let (peer_uid, reason) = match &e {
                        owner::OwnerError::OtherUser { peer_uid, .. } => {
                            (Some(peer_uid.to_string()), None)
                        }
                        owner::OwnerError::Closed { .. } => (None, Some("closed before the check")),
                        owner::OwnerError::Unknown { reason, .. } => (None, Some(reason.as_str())),
                    };
                    tracing::warn!(tunnel = %self.addr, peer_uid, reason, "tunnel connection refused: not the tunnel owner");
                    // A refused cancel gets no reply, as any cancel.
                    if let Ok(Ok(Opening::Startup(_))) = opening {
                        let fields = ErrorFields::fatal("28000", format!("postern: {e}"));
                        refuse(&mut client, &fields).await;
                    }
                }
            }
            return;
        }
        stats.total.fetch_add(1, Relaxed);
        stats.active.fetch_add(1, Relaxed);
        serve(client, self.dialer.as_ref(), &self.spec, stats).await;
        stats.active.fetch_sub(1, Relaxed);
    }

    /// Counts one cancel from a closed connection against
    /// [`CLOSED_CANCELS_PER_SECOND`].
    fn allow_closed_cancel(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut window = self
            .closed_cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (start, count) = match *window {
            Some((start, count)) if now.duration_since(start) < Duration::from_secs(1) => {
                (start, count)
            }
            _ => (now, 0),
        };
        *window = Some((start, count + 1));
        count < CLOSED_CANCELS_PER_SECOND
    }
}

/// The startup packet a client opened with, after SSL/GSS negotiation.
enum Opening {
    Startup(Vec<(String, String)>),
    Cancel(i32, i32),
}

async fn read_opening<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
) -> Result<Opening, ErrorFields> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        match parse_startup(&buf) {
            Ok(Some((packet, used))) => {
                let _ = buf.split_to(used);
                match packet {
                    // The tunnel is on loopback and TLS starts at the tunnel:
                    // decline client-side encryption so any client works.
                    StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                        if !buf.is_empty() {
                            return Err(ErrorFields::fatal(
                                "08P01",
                                "postern: unexpected data after SSL negotiation",
                            ));
                        }
                        conn.write_all(b"N").await.map_err(|_| closed())?;
                    }
                    StartupPacket::Cancel { pid, secret } => {
                        return Ok(Opening::Cancel(pid, secret));
                    }
                    StartupPacket::Startup { params } => return Ok(Opening::Startup(params)),
                }
            }
            Ok(None) => {
                if conn.read_buf(&mut buf).await.map_err(|_| closed())? == 0 {
                    return Err(closed());
                }
            }
            Err(e) => {
                return Err(ErrorFields::fatal(
                    "08P01",
                    format!("postern: invalid startup packet: {e}"),
                ));
            }
        }
    }
}

fn closed() -> ErrorFields {
    ErrorFields::fatal("08006", "connection closed")
}

/// The error a database client (psql, pgAdmin) receives when its
/// connection cannot be carried. Such a client may have been started from
/// the CLI or the app, so the text names neither's commands or buttons.
pub fn client_error(e: &ClientError) -> ErrorFields {
    let (code, message) = match e {
        ClientError::NotLoggedIn => ("28000", format!("{e}; sign in, then connect again")),
        ClientError::SessionExpired => ("28000", format!("{e}; sign in to Postern again")),
        _ => ("08001", e.to_string()),
    };
    ErrorFields::fatal(code, format!("postern: {message}"))
}

async fn refuse<S: AsyncWrite + Unpin>(conn: &mut S, fields: &ErrorFields) {
    let mut out = BytesMut::new();
    backend::error_response(fields, &mut out);
    let _ = conn.write_all(&out).await;
    let _ = conn.shutdown().await;
}

/// Chooses the route for a client's startup parameters.
pub fn route_for(spec: &TunnelSpec, params: Vec<(String, String)>) -> RouteFrame {
    let mut user = None;
    let mut database = None;
    let mut rest = std::collections::BTreeMap::new();
    for (k, v) in params {
        match k.as_str() {
            "user" => user = Some(v),
            "database" => database = Some(v),
            _ => {
                rest.insert(k, v);
            }
        }
    }
    // libpq sends database = user when none was given; treat that as "none"
    // so a bare `psql -h 127.0.0.1 -p PORT` opens the tunnel's database.
    let client_db = database.filter(|d| !d.is_empty() && Some(d) != user.as_ref());
    RouteFrame::Session {
        database: spec.database.clone(),
        db_user: spec.db_user.clone().or(user),
        db_name: client_db.or_else(|| spec.db_name.clone()),
        db_roles: spec.db_roles.clone(),
        params: rest,
    }
}

/// Cancels get no reply, as with PostgreSQL; waits for the gateway to close
/// so the cancel is delivered before the client is hung up on.
async fn forward_cancel<D: Dialer>(dialer: &D, pid: i32, secret: i32) {
    match dialer.open(&RouteFrame::Cancel { pid, secret }).await {
        Ok(mut gw) => {
            let mut sink = [0u8; 16];
            let _ = tokio::time::timeout(Duration::from_secs(10), gw.read(&mut sink)).await;
        }
        Err(e) => tracing::warn!(error = %e, "cancel request could not be forwarded"),
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin, D: Dialer>(
    mut client: S,
    dialer: &D,
    spec: &TunnelSpec,
    stats: &TunnelStats,
) {
    let opening = match tokio::time::timeout(STARTUP_TIMEOUT, read_opening(&mut client)).await {
        Ok(Ok(o)) => o,
        Ok(Err(fields)) => return refuse(&mut client, &fields).await,
        Err(_) => {
            return refuse(
                &mut client,
                &ErrorFields::fatal("08006", "postern: no startup packet received"),
            )
            .await;
        }
    };
    match opening {
        Opening::Cancel(pid, secret) => forward_cancel(dialer, pid, secret).await,
        Opening::Startup(params) => {
            let route = route_for(spec, params);
            let gateway = match dialer.open(&route).await {
                Ok(g) => g,
                Err(e) => return refuse(&mut client, &client_error(&e)).await,
            };
            let mut client = Counted::new(client, &stats.bytes_in);
            let mut gateway = Counted::new(gateway, &stats.bytes_out);
            let _ =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut gateway, BUF, BUF).await;
        }
    }
}

/// A stream that adds every byte read from it to a live counter (one
/// relaxed atomic add per read, so the tunnels view is always current).
struct Counted<'a, S> {
    inner: S,
    count: &'a AtomicU64,
}

impl<'a, S> Counted<'a, S> {
    fn new(inner: S, count: &'a AtomicU64) -> Self {
        Counted { inner, count }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.count.fetch_add(read as u64, Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_pgwire::frontend;
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;

    /// Hands each connection's gateway end to the test, with its route: the
    /// test plays the gateway over an in-memory pipe.
    struct PipeDialer(mpsc::UnboundedSender<(RouteFrame, DuplexStream)>);

    impl Dialer for PipeDialer {
        type Stream = DuplexStream;

        async fn open(&self, route: &RouteFrame) -> Result<DuplexStream, ClientError> {
            let (ours, theirs) = tokio::io::duplex(BUF);
            self.0
                .send((route.clone(), theirs))
                .expect("the test plays the gateway");
            Ok(ours)
        }
    }

    /// A gateway that cannot be used, for this reason.
    struct FailingDialer(fn() -> ClientError);

    impl Dialer for FailingDialer {
        type Stream = DuplexStream;

        async fn open(&self, _route: &RouteFrame) -> Result<DuplexStream, ClientError> {
            Err((self.0)())
        }
    }

    async fn tunnel_with<D: Dialer>(dialer: D) -> Tunnel {
        let listener = TunnelListener::Tcp(bind_ephemeral().await.unwrap());
        Tunnel::start(
            listener,
            Arc::new(dialer),
            spec(Some("reader"), Some("app")),
        )
        .unwrap()
    }

    async fn client(tunnel: &Tunnel) -> TcpStream {
        let TunnelAddr::Tcp(addr) = tunnel.addr() else {
            panic!("a loopback tunnel")
        };
        TcpStream::connect(addr).await.unwrap()
    }

    async fn send_startup(client: &mut TcpStream, pairs: &[(&str, &str)]) {
        let mut out = BytesMut::new();
        frontend::startup_message(pairs.iter().copied(), &mut out).unwrap();
        client.write_all(&out).await.unwrap();
    }

    /// Everything the tunnel sends until it closes the connection.
    async fn read_to_close(client: &mut TcpStream) -> String {
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        String::from_utf8_lossy(&all).into_owned()
    }

    #[tokio::test]
    async fn a_connection_is_routed_then_relayed_both_ways_and_counted() {
        let (tx, mut gateway) = mpsc::unbounded_channel();
        let tunnel = tunnel_with(PipeDialer(tx)).await;
        let mut psql = client(&tunnel).await;
        let mut out = BytesMut::new();
        frontend::ssl_request(&mut out);
        psql.write_all(&out).await.unwrap();
        let mut answer = [0u8; 1];
        psql.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N", "TLS is declined on the loopback leg");
        send_startup(&mut psql, &[("user", "anyone"), ("database", "analytics")]).await;

        let (route, mut gw) = gateway.recv().await.unwrap();
        let RouteFrame::Session {
            db_user, db_name, ..
        } = route
        else {
            panic!("{route:?}")
        };
        assert_eq!(db_user.as_deref(), Some("reader"));
        assert_eq!(db_name.as_deref(), Some("analytics"));

        gw.write_all(b"from the database").await.unwrap();
        let mut got = [0u8; 17];
        psql.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"from the database");
        psql.write_all(b"query").await.unwrap();
        let mut got = [0u8; 5];
        gw.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"query");

        let stats = tunnel.stats();
        assert_eq!(stats.active.load(Relaxed), 1);
        assert_eq!(stats.total.load(Relaxed), 1);
        assert_eq!(stats.bytes_in.load(Relaxed), 5);
        assert_eq!(stats.bytes_out.load(Relaxed), 17);

        // The gateway ends the session: the client sees the close.
        drop(gw);
        assert_eq!(read_to_close(&mut psql).await, "");
        tunnel.stop().await;
    }

    #[tokio::test]
    async fn a_cancel_goes_on_its_own_connection_and_gets_no_reply() {
        let (tx, mut gateway) = mpsc::unbounded_channel();
        let tunnel = tunnel_with(PipeDialer(tx)).await;
        let mut psql = client(&tunnel).await;
        let mut out = BytesMut::new();
        frontend::cancel_request(4242, 77, &mut out);
        psql.write_all(&out).await.unwrap();
        let (route, gw) = gateway.recv().await.unwrap();
        assert_eq!(
            route,
            RouteFrame::Cancel {
                pid: 4242,
                secret: 77
            }
        );
        drop(gw);
        assert_eq!(read_to_close(&mut psql).await, "", "no reply, only a close");
        assert_eq!(tunnel.stats().total.load(Relaxed), 1);
    }

    /// Serves one connection whose client wrote `opening` and closed its
    /// socket before the owner check ran, as happens on a busy machine:
    /// the kernel then names no program holding the client's end.
    async fn served_after_the_client_closed(
        opening: &[u8],
    ) -> (Option<RouteFrame>, Arc<TunnelStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(opening).await.unwrap();
        drop(client);
        let (stream, peer) = listener.accept().await.unwrap();
        let me = owner::Owner::current();
        assert!(
            me.check_tcp(stream.local_addr().unwrap(), peer).is_err(),
            "the closed socket has no owner any more"
        );
        let (tx, mut gateway) = mpsc::unbounded_channel();
        let shared = Shared {
            dialer: Arc::new(PipeDialer(tx)),
            spec: spec(Some("reader"), Some("app")),
            owner: me,
            addr: TunnelAddr::Tcp(listener.local_addr().unwrap()),
            closed_cancels: Default::default(),
        };
        let stats = Arc::new(TunnelStats::default());
        let served = stats.clone();
        // The dialer goes with the task: the channel closes when it ends.
        tokio::spawn(async move { shared.handle(Accepted::Tcp(stream, peer), &served).await });
        let route = gateway.recv().await.map(|(route, _gateway_end)| route);
        (route, stats)
    }

    /// tokio-postgres writes its CancelRequest and closes at once; the
    /// cancel must still reach the gateway, which honours a key only for
    /// this user's identity.
    #[tokio::test]
    async fn a_cancel_from_a_client_that_already_closed_is_forwarded() {
        let mut out = BytesMut::new();
        frontend::cancel_request(4242, 77, &mut out);
        let (route, stats) = served_after_the_client_closed(&out).await;
        assert_eq!(
            route,
            Some(RouteFrame::Cancel {
                pid: 4242,
                secret: 77
            })
        );
        assert_eq!(stats.refused.load(Relaxed), 0);
    }

    /// Anything else from a socket nobody holds is refused: another OS user
    /// could otherwise write a startup and a query, close, and have them
    /// run as this user.
    #[tokio::test]
    async fn a_session_from_a_client_that_already_closed_is_refused() {
        let mut out = BytesMut::new();
        frontend::startup_message([("user", "anyone")], &mut out).unwrap();
        let query = b"DROP TABLE everything\0";
        out.extend_from_slice(b"Q");
        out.extend_from_slice(&(4 + query.len() as i32).to_be_bytes());
        out.extend_from_slice(query);
        let (route, stats) = served_after_the_client_closed(&out).await;
        assert_eq!(route, None, "nothing reaches the gateway");
        assert_eq!(stats.refused.load(Relaxed), 1);
    }

    /// Any local user can send cancels from closed connections; each costs
    /// a TLS handshake, so only so many a second are forwarded.
    #[tokio::test(start_paused = true)]
    async fn cancels_from_closed_connections_are_limited_per_second() {
        let (tx, _gateway) = mpsc::unbounded_channel();
        let shared = Shared {
            dialer: Arc::new(PipeDialer(tx)),
            spec: spec(None, None),
            owner: owner::Owner::current(),
            addr: TunnelAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 1))),
            closed_cancels: Default::default(),
        };
        let allowed = (0..CLOSED_CANCELS_PER_SECOND + 5)
            .filter(|_| shared.allow_closed_cancel())
            .count();
        assert_eq!(allowed, CLOSED_CANCELS_PER_SECOND as usize);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            shared.allow_closed_cancel(),
            "a new second, a new allowance"
        );
    }

    #[tokio::test]
    async fn an_expired_session_is_an_error_the_client_shows_not_a_disconnect() {
        let tunnel = tunnel_with(FailingDialer(|| ClientError::SessionExpired)).await;
        let mut psql = client(&tunnel).await;
        send_startup(&mut psql, &[("user", "anyone")]).await;
        let reply = read_to_close(&mut psql).await;
        assert!(reply.starts_with('E'), "an ErrorResponse: {reply:?}");
        assert!(reply.contains("C28000"), "{reply:?}");
        assert!(
            reply.contains("postern: your Postern session expired; sign in to Postern again"),
            "{reply:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_starts_is_told_after_the_startup_timeout() {
        let (tx, _gateway) = mpsc::unbounded_channel();
        let tunnel = tunnel_with(PipeDialer(tx)).await;
        let mut silent = client(&tunnel).await;
        let started = tokio::time::Instant::now();
        let reply = read_to_close(&mut silent).await;
        assert!(
            reply.contains("postern: no startup packet received"),
            "{reply:?}"
        );
        assert!(
            started.elapsed() >= STARTUP_TIMEOUT,
            "not before the timeout"
        );
        assert_eq!(tunnel.stats().total.load(Relaxed), 1);
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec(db_user: Option<&str>, db_name: Option<&str>) -> TunnelSpec {
        TunnelSpec {
            database: "pg".into(),
            db_user: db_user.map(str::to_owned),
            db_name: db_name.map(str::to_owned),
            db_roles: vec![],
        }
    }

    #[test]
    fn tunnel_user_wins_over_client_user_and_client_database_is_honoured() {
        let route = route_for(
            &spec(Some("reader"), Some("app")),
            params(&[
                ("user", "anything"),
                ("database", "analytics"),
                ("application_name", "psql"),
            ]),
        );
        let RouteFrame::Session {
            db_user,
            db_name,
            params,
            ..
        } = route
        else {
            panic!()
        };
        assert_eq!(db_user.as_deref(), Some("reader"));
        assert_eq!(db_name.as_deref(), Some("analytics"));
        assert_eq!(
            params.get("application_name").map(String::as_str),
            Some("psql")
        );
        assert!(!params.contains_key("user"));
    }

    #[test]
    fn libpq_default_database_falls_back_to_the_tunnel_database() {
        let route = route_for(
            &spec(Some("reader"), Some("app")),
            params(&[("user", "root"), ("database", "root")]),
        );
        let RouteFrame::Session { db_name, .. } = route else {
            panic!()
        };
        assert_eq!(db_name.as_deref(), Some("app"));
    }

    #[test]
    fn database_clients_are_told_every_failure_without_cli_or_app_words() {
        for e in ClientError::examples() {
            let fields = client_error(&e);
            let text = &fields.message;
            assert!(text.starts_with("postern: "), "{e:?}: {text}");
            for word in ["--", "postern login", "button", "Sign in again"] {
                assert!(!text.contains(word), "{e:?} names {word:?}: {text}");
            }
        }
        let expired = client_error(&ClientError::SessionExpired);
        assert_eq!(expired.code, "28000");
        assert_eq!(
            expired.message,
            "postern: your Postern session expired; sign in to Postern again"
        );
    }

    #[test]
    fn tunnel_without_user_takes_the_client_user() {
        let route = route_for(&spec(None, None), params(&[("user", "certuser")]));
        let RouteFrame::Session {
            db_user, db_name, ..
        } = route
        else {
            panic!()
        };
        assert_eq!(db_user.as_deref(), Some("certuser"));
        assert_eq!(db_name, None);
    }
}
