//! The local tunnel: a loopback PostgreSQL endpoint that carries each client
//! connection to the gateway over mutually authenticated TLS.

use std::net::SocketAddr;
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
use crate::ports::{port_key, remember, remembered};
use crate::profile::Home;
use crate::session::SessionSource;
use crate::tls::split_addr;

/// Relay buffer per direction.
const BUF: usize = 64 * 1024;
/// Time a client gets to send its startup packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to reach the gateway.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

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
}

/// Reaches the gateway with the current session.
pub struct Dialer {
    source: Arc<SessionSource>,
    gateway: String,
}

impl Dialer {
    /// Dials `gateway` with sessions from `source`.
    pub fn new(source: Arc<SessionSource>, gateway: String) -> Self {
        Dialer { source, gateway }
    }

    /// Opens a tunnel connection and sends the route frame.
    pub async fn open(&self, route: &RouteFrame) -> Result<GatewayStream, ClientError> {
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

/// A running tunnel; dropping it stops the listener and its connections.
pub struct Tunnel {
    addr: SocketAddr,
    stats: Arc<TunnelStats>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How the port was chosen, for telling the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortNote {
    /// The requested or remembered port.
    AsBefore,
    /// A new port (first use).
    New,
    /// The remembered port was taken; another was used.
    RememberedTaken(u16),
}

/// Binds the tunnel's loopback port: `fixed` if given (an error if taken),
/// else the remembered one, else a free one; the result is remembered.
pub async fn bind(
    home: &Home,
    profile: &str,
    spec: &TunnelSpec,
    fixed: Option<u16>,
) -> Result<(TcpListener, PortNote), ClientError> {
    let key = port_key(
        profile,
        &spec.database,
        spec.db_user.as_deref(),
        spec.db_name.as_deref(),
    );
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
    } else if let Some(port) = remembered(home, &key) {
        match TcpListener::bind(loopback(port)).await {
            Ok(l) => (l, PortNote::AsBefore),
            Err(_) => (bind_ephemeral().await?, PortNote::RememberedTaken(port)),
        }
    } else {
        (bind_ephemeral().await?, PortNote::New)
    };
    let port = listener
        .local_addr()
        .map_err(ClientError::io("reading the bound port"))?
        .port();
    remember(home, &key, port)?;
    Ok((listener, note))
}

/// Binds a free loopback port for a tunnel only this process uses.
pub async fn bind_ephemeral() -> Result<TcpListener, ClientError> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(ClientError::io("binding a loopback port"))
}

impl Tunnel {
    /// Serves `listener` until stopped.
    pub fn start(
        listener: TcpListener,
        dialer: Arc<Dialer>,
        spec: TunnelSpec,
    ) -> Result<Self, ClientError> {
        let addr = listener
            .local_addr()
            .map_err(ClientError::io("reading the bound port"))?;
        let stats = Arc::new(TunnelStats::default());
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let spec = Arc::new(spec);
        {
            let (stats, stop, tracker2) = (stats.clone(), stop.clone(), tracker.clone());
            tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = listener.accept() => r,
                    };
                    let (tcp, _) = match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let (dialer, spec, stats, stop) =
                        (dialer.clone(), spec.clone(), stats.clone(), stop.clone());
                    tracker2.spawn(async move {
                        stats.total.fetch_add(1, Relaxed);
                        stats.active.fetch_add(1, Relaxed);
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = serve(tcp, &dialer, &spec, &stats) => {}
                        }
                        stats.active.fetch_sub(1, Relaxed);
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

    /// The loopback address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

/// The user-facing error for a client connection.
pub fn client_error(e: &ClientError) -> ErrorFields {
    let code = match e {
        ClientError::SessionExpired | ClientError::NotLoggedIn => "28000",
        _ => "08001",
    };
    ErrorFields::fatal(code, format!("postern: {e}"))
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

async fn serve(mut client: TcpStream, dialer: &Dialer, spec: &TunnelSpec, stats: &TunnelStats) {
    let _ = client.set_nodelay(true);
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
        Opening::Cancel(pid, secret) => {
            // Cancels get no reply, as with PostgreSQL; wait for the gateway
            // to close so the cancel is delivered before we hang up.
            match dialer.open(&RouteFrame::Cancel { pid, secret }).await {
                Ok(mut gw) => {
                    let mut sink = [0u8; 16];
                    let _ = tokio::time::timeout(Duration::from_secs(10), gw.read(&mut sink)).await;
                }
                Err(e) => tracing::warn!(error = %e, "cancel request could not be forwarded"),
            }
        }
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
