//! The tunnel endpoint: the route frame, then a cancel or a session.
//!
//! - [`route`]: the route frame's values, checked once at the edge.
//! - `session`: a session's stages, authorize → provision → connect
//!   upstream → greet → relay → end.
//! - [`cancellation`]: cancel keys in the store, and their owners.
//! - [`relay`]: bytes both ways, statements audited.
//! - [`statement_clock`]: statements and idle transactions timed against
//!   the role limits.
//! - [`error`]: what can go wrong, and what the client reads.

pub mod cancellation;
pub mod error;
pub mod relay;
pub mod route;
mod session;
pub mod statement_clock;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::BytesMut;
use postern_api::{Identity, RouteFrame};
use postern_pgwire::{CancelKey, backend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::audit::{AuditKind, Auditor};
use crate::config::Limits;
use crate::drain::Drain;
use crate::policy::LivePolicy;
use crate::provisioning::Provisioner;
use crate::revocation::Revocations;
use crate::store::Store;
use cancellation::{CancelDecision, CancelKeys};
use error::TunnelError;
use route::SessionRequest;

/// Everything a tunnel connection needs from the gateway.
pub struct TunnelContext {
    /// Roles and databases.
    pub policy: LivePolicy,
    /// Cancel keys.
    pub cancels: Arc<CancelKeys>,
    /// Audit sink.
    pub auditor: Auditor,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Automatic database-user provisioning.
    pub provisioner: Provisioner,
    /// Expiry and locks, checked per connection and watched per session.
    pub revocations: Arc<Revocations>,
    /// The gateway's drain: refuses new sessions and ends live ones.
    pub drain: Drain,
    /// The next session's number in the audit.
    next_session: AtomicU64,
}

/// Where a process's session numbers start: random below 2⁵², so the
/// numbers of replicas sharing an audit (and of a restarted one) do not
/// meet, and stay exact as JSON numbers (2⁵³) for as many sessions as a
/// process can serve.
fn first_session_number() -> u64 {
    rand::random::<u64>() >> 12
}

impl TunnelContext {
    /// Bundles the gateway's state for tunnels; `replica` names this
    /// process in the cancel keys it stores.
    pub fn new(
        policy: LivePolicy,
        auditor: Auditor,
        store: Arc<dyn Store>,
        revocations: Arc<Revocations>,
        limits: Limits,
        replica: &str,
    ) -> Self {
        TunnelContext {
            revocations,
            policy,
            cancels: CancelKeys::new(store.clone(), replica, limits.cancels_per_second),
            provisioner: Provisioner::new(store, auditor.clone(), limits.upstream_timeout),
            auditor,
            limits,
            drain: Drain::default(),
            next_session: AtomicU64::new(first_session_number()),
        }
    }
}

/// Serves one tunnel connection whose TLS handshake is done. Every failure
/// ends in an ErrorResponse to the client; details go to the log.
pub async fn serve<S>(mut conn: S, identity: Option<Identity>, ctx: &TunnelContext)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let route =
        match tokio::time::timeout(ctx.limits.handshake_timeout, read_route(&mut conn)).await {
            Ok(route) => route,
            Err(_) => Err(TunnelError::Timeout("waiting for the route")),
        };
    let route = match (route, &identity) {
        (Ok(route), _) => route,
        // A person with a valid certificate who sends no valid route is
        // refused on the record; a stranger's noise is only logged.
        (Err(e), Some(identity)) => {
            return reject(&mut conn, ctx, identity, String::new(), &e).await;
        }
        (Err(e), None) => return fail(&mut conn, &e).await,
    };
    let Some(identity) = identity else {
        return fail(&mut conn, &TunnelError::NoIdentity).await;
    };
    // Checked here, whether or not the TLS session was resumed.
    let admitted = ctx.revocations.check(&identity);
    match route {
        RouteFrame::Cancel { pid, secret } => match admitted {
            Ok(()) => cancel(ctx, &identity, CancelKey { pid, secret }).await,
            // Like any cancel, a refused one gets no reply.
            Err(revoked) => {
                tracing::info!(user = %identity.username, %revoked, "cancel refused");
                ctx.auditor.record(AuditKind::Cancel {
                    user: identity.username.clone(),
                    forwarded: false,
                });
            }
        },
        RouteFrame::Session {
            database,
            db_user,
            db_name,
            db_roles,
            params,
        } => {
            let result = match admitted {
                Err(revoked) => Err(TunnelError::Revoked(revoked)),
                // Accepted just before the listener closed: the client's
                // next try reaches another replica.
                Ok(()) if ctx.drain.is_draining() => Err(TunnelError::Draining),
                Ok(()) => {
                    match SessionRequest::new(database.clone(), db_user, db_name, db_roles, params)
                    {
                        Err(refused) => Err(refused.into()),
                        Ok(request) => session::run(&mut conn, ctx, &identity, request).await,
                    }
                }
            };
            if let Err(e) = result {
                reject(&mut conn, ctx, &identity, database, &e).await;
            }
        }
    }
}

/// Refuses `identity`'s request for `database` (empty: none was read), on
/// the record.
async fn reject<S: AsyncWrite + Unpin>(
    conn: &mut S,
    ctx: &TunnelContext,
    identity: &Identity,
    database: String,
    error: &TunnelError,
) {
    ctx.auditor.record(AuditKind::SessionRejected {
        user: identity.username.clone(),
        database,
        reason: error.client_fields().message,
    });
    fail(conn, error).await;
}

async fn read_route<S: AsyncRead + Unpin>(conn: &mut S) -> Result<RouteFrame, TunnelError> {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).await?;
    let len = RouteFrame::check_len(prefix).map_err(|e| TunnelError::BadRoute(e.to_string()))?;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    RouteFrame::decode(&body).map_err(|e| TunnelError::BadRoute(e.to_string()))
}

async fn fail<S: AsyncWrite + Unpin>(conn: &mut S, error: &TunnelError) {
    tracing::info!(error = %error, "tunnel refused");
    let mut buf = BytesMut::new();
    backend::error_response(&error.client_fields(), &mut buf);
    // The client may already be gone; nothing more to do then.
    let _ = conn.write_all(&buf).await;
    let _ = conn.shutdown().await;
}

async fn cancel(ctx: &TunnelContext, identity: &Identity, key: CancelKey) {
    let forwarded = match ctx.cancels.decide(&identity.username, key).await {
        // The session may be served by another replica: the database is
        // found by name in this one's catalog.
        CancelDecision::Forward(record) => match ctx.policy.current().catalog.get(&record.database)
        {
            Some(db) => match db.upstream.cancel(record.real).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, database = %record.database, replica = %record.replica, "cancel could not be delivered");
                    false
                }
            },
            None => {
                tracing::warn!(database = %record.database, replica = %record.replica, upstream = %record.upstream_addr, "cancel for a database this replica's catalog does not have");
                false
            }
        },
        CancelDecision::Ignore => false,
        CancelDecision::RateLimited => {
            tracing::warn!(user = %identity.username, "cancel requests rate-limited");
            false
        }
    };
    // Like PostgreSQL, the client gets no reply either way.
    ctx.auditor.record(AuditKind::Cancel {
        user: identity.username.clone(),
        forwarded,
    });
}
