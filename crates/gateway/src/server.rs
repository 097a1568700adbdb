//! The gateway process: state, the single TLS port, and its accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use bytes::BytesMut;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use postern_api::ALPN_TUNNEL;
use postern_pgwire::{ErrorFields, backend};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState, Peer, Source};
use crate::audit::{AuditKind, Auditor};
use crate::auth::limits::Limiter;
use crate::auth::oidc::OidcConnector;
use crate::aws::AwsIdentity;
use crate::budget::{Budgets, Unauthenticated};
use crate::ca::{Authority, CaKind, CaMaterial, Leaf, fingerprint, pem_certs, pem_key};
use crate::config::{ConnectorConfig, GatewayConfig, KeyPairFiles};
use crate::drain::{Drain, Drained};
use crate::policy::{LivePolicy, PolicyError, PolicySources};
use crate::revocation::Revocations;
use crate::store::Store;
use crate::tls::{identity_from_cert, server_config};
use crate::tunnel::{self, TunnelContext};
use crate::upstream::READ_BUFFER;
use crate::workers::Workers;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// CA or certificate problem.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// TLS problem.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The roles and databases could not be put in force.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// A single sign-on connector could not be set up.
    #[error(transparent)]
    Connector(#[from] crate::auth::oidc::SetupError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// The connection worker threads could not be started.
    #[error("cannot start the connection workers: {0}")]
    Workers(std::io::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

/// How long a drain waits for the audit queue to reach the store.
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A started gateway. Dropping it does not stop it; call [`Running::drain`].
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Fingerprint of the CA clients pin (`sha256:...`).
    pub ca_pin: String,
    /// The store, for inspection by operators' tools and tests.
    pub store: Arc<dyn Store>,
    /// Cuts every connection still open (the end of a drain that ran out
    /// of time) and stops the lock poller.
    shutdown: CancellationToken,
    tracker: TaskTracker,
    drain: Drain,
    auditor: Auditor,
    reload: Reload,
    /// `limits.drain_grace`.
    grace: Duration,
    /// How long sessions ended by the drain may take to end: the message
    /// in progress, the upstream cancel and the provisioning end, each
    /// bounded by `limits.upstream_timeout`.
    ending: Duration,
    /// Its worker threads stop when the gateway has stopped and this is
    /// dropped.
    _serving: Arc<Serving>,
}

impl Running {
    /// Drains the gateway ([`crate::drain`]) and stops it: no new
    /// connections, live sessions run for `limits.drain_grace` (less when
    /// `hurry` completes first, e.g. on a second signal), then end with a
    /// FATAL `57P01`, audited and with their provisioned users ended.
    /// Returns once the audit queue is in the store; at most about
    /// `drain_grace + 3 × upstream_timeout + 20 s` after the call.
    pub async fn drain(self, hurry: impl Future<Output = ()>) -> Drained {
        let drained = self
            .drain
            .run(&self.tracker, self.grace, self.ending, hurry)
            .await;
        self.shutdown.cancel();
        if !drained.finished {
            // The connections cut just now end at their next await.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        if !self.auditor.flush(AUDIT_FLUSH_TIMEOUT).await {
            tracing::error!(
                "the store did not take the last audit events in time; the log has them"
            );
        }
        drained
    }

    /// Puts the roles and databases of `config` in force ([`crate::policy`]),
    /// or changes nothing and says why. Other settings take effect at the
    /// next start.
    pub async fn reload(&self, config: &GatewayConfig) -> Result<Reloaded, PolicyError> {
        let reload = &self.reload;
        let policy = reload.sources.load(config, &reload.connectors).await?;
        let reloaded = Reloaded {
            roles: policy.roles.names().count(),
            databases: policy.catalog.names().count(),
        };
        reload.policy.replace(policy);
        self.auditor.record(AuditKind::PolicyReloaded {
            roles: reloaded.roles,
            databases: reloaded.databases,
        });
        Ok(reloaded)
    }

    /// [`Running::drain`] with a grace period of at most `grace`, for
    /// embedding and tests.
    pub async fn shutdown(self, grace: Duration) -> Drained {
        self.drain(tokio::time::sleep(grace)).await
    }
}

/// What a reload needs: kept from the start.
struct Reload {
    sources: PolicySources,
    /// The connectors in force: a reload keeps them.
    connectors: Vec<ConnectorConfig>,
    policy: LivePolicy,
}

/// What a reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Roles defined now.
    pub roles: usize,
    /// Databases in the catalog now.
    pub databases: usize,
}

/// Loads (or creates on first start) a CA from the store.
pub fn load_ca(store: &dyn Store, kind: CaKind, cluster: &str) -> Result<Authority, StartError> {
    let material = store.ca_or_insert(kind, &CaMaterial::generate(kind, cluster)?)?;
    Ok(Authority::load(&material)?)
}

fn read(path: &std::path::Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|source| StartError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_pair(files: &KeyPairFiles) -> Result<CaMaterial, StartError> {
    Ok(CaMaterial {
        cert_pem: read(&files.cert_file)?,
        key_pem: read(&files.key_file)?,
    })
}

/// What the gateway takes from its surroundings, for embedding and tests.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Where the gateway's own AWS credentials come from (default: the
    /// standard chain).
    pub aws_identity: AwsIdentity,
}

/// Starts the gateway described by `config` and returns once it listens.
pub async fn start(config: GatewayConfig) -> Result<Running, StartError> {
    start_with(config, StartOptions::default()).await
}

/// Like [`start`], with `options`.
pub async fn start_with(
    config: GatewayConfig,
    options: StartOptions,
) -> Result<Running, StartError> {
    let store = crate::store::open(&config)?;
    let cluster = &config.cluster_name;
    let user_ca = Arc::new(load_ca(store.as_ref(), CaKind::User, cluster)?);
    let db_ca = Arc::new(match &config.database_ca {
        Some(files) => Authority::load(&load_pair(files)?)?,
        None => load_ca(store.as_ref(), CaKind::Database, cluster)?,
    });
    let (leaf, ca_pin) = match &config.tls {
        Some(files) => {
            let pair = load_pair(files)?;
            let chain = pem_certs(&pair.cert_pem)?;
            let pin = chain.last().map(|c| fingerprint(c)).unwrap_or_default();
            let leaf = Leaf {
                chain,
                key: pem_key(&pair.key_pem)?,
                not_after: std::time::SystemTime::now(),
            };
            (leaf, pin)
        }
        None => {
            let host_ca = load_ca(store.as_ref(), CaKind::Host, cluster)?;
            let leaf = host_ca.issue_leaf(
                "postern gateway",
                &config.public_addrs,
                Duration::from_secs(365 * 24 * 3600),
            )?;
            (leaf, host_ca.fingerprint())
        }
    };
    let sources = PolicySources::new(&config, db_ca, options.aws_identity).await;
    let replica = config.replica_name();
    let (auditor, _writer) = Auditor::start(store.clone(), &replica);
    let flushed = auditor.clone();
    let tls = TlsAcceptor::from(server_config(leaf, user_ca.cert_der())?);

    // Bound before the API is built: the default public URL (the SSO
    // redirect URI) names the real port.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let shutdown = CancellationToken::new();
    let revocations = Revocations::start(store.clone(), config.limits.lock_poll, shutdown.clone());
    let connectors = sso_connectors(&config, addr.port())?;
    let policy = LivePolicy::new(sources.load(&config, &config.connectors).await?);
    let tunnels = Arc::new(TunnelContext::new(
        policy.clone(),
        auditor.clone(),
        store.clone(),
        revocations.clone(),
        config.limits.clone(),
        &replica,
    ));
    let leftovers = tunnels.cancels.forget_leftovers()?;
    if leftovers > 0 {
        tracing::info!(
            leftovers,
            "cancel keys of this replica's previous run removed"
        );
    }
    let drain = tunnels.drain.clone();
    let api_state = Arc::new(ApiState {
        store: store.clone(),
        user_ca,
        policy: policy.clone(),
        auditor: auditor.clone(),
        session_ttl: config.session_ttl,
        connectors,
        sso: crate::auth::sso::SsoLogins::new(store.clone()),
        device: crate::auth::device::DeviceLogins::new(
            store.clone(),
            crate::auth::device::DeviceSettings {
                ttl: config.sso.device_code_ttl,
                interval: config.sso.device_poll_interval,
                verification_uri: format!(
                    "{}{}",
                    config.public_url_for(addr.port()),
                    api::DEVICE_PAGE
                ),
            },
        ),
        revocations: revocations.clone(),
        login_limits: Limiter::new(store.clone(), config.limits.login.clone()),
        drain: drain.clone(),
    });
    let router = api::router(api_state);

    let tracker = TaskTracker::new();
    let workers = Workers::start(
        config
            .limits
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
    )
    .map_err(StartError::Workers)?;
    let serving = Arc::new(Serving {
        tls,
        router,
        tunnels,
        limits: config.limits.clone(),
        budgets: Budgets::new(
            config.limits.max_unauthenticated,
            config.limits.max_unauthenticated_per_source,
            config.limits.max_connections,
        ),
        workers,
    });
    tracker.spawn(accept_loop(
        listener,
        serving.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    if let Some(retention) = config.audit.retention {
        tracker.spawn(crate::audit::retention(
            store.clone(),
            retention,
            replica.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(%addr, %ca_pin, %replica, "gateway listening");
    Ok(Running {
        addr,
        ca_pin,
        store,
        shutdown,
        tracker,
        drain,
        auditor: flushed,
        reload: Reload {
            sources,
            connectors: config.connectors.clone(),
            policy,
        },
        grace: config.limits.drain_grace,
        ending: config.limits.upstream_timeout * 3 + Duration::from_secs(10),
        _serving: serving,
    })
}

/// The configured connectors; [`PolicySources::load`] checks their
/// `claims_to_roles` against the role files.
fn sso_connectors(
    config: &GatewayConfig,
    port: u16,
) -> Result<Vec<Arc<OidcConnector>>, StartError> {
    let redirect = format!("{}/v1/login/sso/callback", config.public_url_for(port));
    let mut connectors = Vec::new();
    for ConnectorConfig::Oidc(oidc) in &config.connectors {
        let connector = OidcConnector::new(oidc, &redirect)?;
        tracing::info!(connector = %oidc.name, %redirect, "single sign-on connector ready");
        connectors.push(Arc::new(connector));
    }
    Ok(connectors)
}

/// What every connection is served with.
struct Serving {
    tls: TlsAcceptor,
    router: axum::Router,
    tunnels: Arc<TunnelContext>,
    limits: crate::config::Limits,
    budgets: Arc<Budgets>,
    workers: Workers,
}

async fn accept_loop(
    listener: TcpListener,
    serving: Arc<Serving>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = tokio::select! {
            // Returning drops the listener: new connections are refused.
            () = serving.tunnels.drain.started() => return,
            r = listener.accept() => match r {
                Ok(conn) => { backoff = Duration::from_millis(5); conn }
                Err(e) => {
                    // Usually EMFILE: wait for connections to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        // Closed before any TLS work when strangers (from this address, or
        // all together) hold their whole budget.
        let Some(slot) = serving.budgets.unauthenticated(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: unauthenticated connection budget spent");
            drop(tcp);
            continue;
        };
        let shutdown = shutdown.clone();
        let serving_it = serving.clone();
        serving.workers.spawn(&tracker, tcp, move |tcp| async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection(tcp, slot, &serving_it) => {}
            }
            tracing::trace!(%peer, "connection closed");
        });
    }
}

async fn connection(tcp: TcpStream, slot: Unauthenticated, serving: &Serving) {
    let timeout = serving.limits.handshake_timeout;
    // The address accept() reported, not another getpeername per connection.
    let source = Source(slot.source());
    let _ = tcp.set_nodelay(true);
    if !starts_with_tls(&tcp, timeout).await {
        return refuse_plain(tcp).await;
    }
    let stream = match tokio::time::timeout(
        timeout,
        serving
            .tls
            .accept(BufReader::with_capacity(READ_BUFFER, tcp)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let identity = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(identity_from_cert);
    // A session certificate moves the connection out of the strangers'
    // budget; without one it stays there for its whole (short) life.
    let (_slot, _established) = match identity {
        Some(_) => match serving.budgets.established() {
            Some(established) => (None, Some(established)),
            None => {
                tracing::warn!("connection refused: max_connections reached");
                return;
            }
        },
        None => (Some(slot), None),
    };
    if session.alpn_protocol() == Some(ALPN_TUNNEL) {
        if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            tracing::debug!("tunnel refused: TLS 1.3 required");
            return;
        }
        return tunnel::serve(stream, identity, &serving.tunnels).await;
    }
    serve_http(stream, identity, source, serving).await;
}

/// Serves HTTP on one connection. A request's headers must arrive within
/// `handshake_timeout`, and the connection is closed (after the request in
/// progress) once it has lived `http_connection_lifetime`, so neither a
/// slow client nor an idle keep-alive connection holds its place forever,
/// or when the gateway starts draining.
async fn serve_http<S>(
    stream: S,
    identity: Option<postern_api::Identity>,
    source: Source,
    serving: &Serving,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(
        serving
            .router
            .clone()
            .layer(Extension(Peer(identity)))
            .layer(Extension(source)),
    );
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(serving.limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let closing = async {
        tokio::select! {
            () = tokio::time::sleep(serving.limits.http_connection_lifetime) => {}
            () = serving.tunnels.drain.started() => {}
        }
    };
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = closing => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(serving.limits.handshake_timeout, connection)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// True when the first byte is a TLS handshake record.
async fn starts_with_tls(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}

/// Someone pointed a database client (or anything else) straight at the
/// gateway port: answer in PostgreSQL's language, then close.
async fn refuse_plain(mut tcp: TcpStream) {
    let mut buf = BytesMut::new();
    backend::error_response(
        &ErrorFields::fatal(
            "08P01",
            "this is a Postern gateway port; connect through a local tunnel: `postern proxy db NAME`",
        ),
        &mut buf,
    );
    let _ = tcp.write_all(&buf).await;
    let _ = tcp.shutdown().await;
}
