//! The tunnel endpoint: route frame, authorization, database login, relay.

pub mod cancellation;
pub mod error;
pub mod relay;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use postern_api::{Identity, RouteFrame};
use postern_pgwire::backend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::audit::{AuditKind, Auditor};
use crate::catalog::Catalog;
use crate::config::Limits;
use crate::rbac::RoleSet;
use cancellation::{CancelDecision, CancelMap};
use error::TunnelError;

/// Everything a tunnel connection needs from the gateway.
pub struct TunnelContext {
    /// Databases.
    pub catalog: Arc<Catalog>,
    /// Roles.
    pub roles: Arc<RoleSet>,
    /// Live cancel keys.
    pub cancels: Arc<CancelMap>,
    /// Audit sink.
    pub auditor: Auditor,
    /// Limits and timeouts.
    pub limits: Limits,
    next_session: AtomicU64,
}

impl TunnelContext {
    /// Bundles the gateway's state for tunnels.
    pub fn new(
        catalog: Arc<Catalog>,
        roles: Arc<RoleSet>,
        auditor: Auditor,
        limits: Limits,
    ) -> Self {
        TunnelContext {
            catalog,
            roles,
            cancels: CancelMap::new(limits.cancels_per_second),
            auditor,
            limits,
            next_session: AtomicU64::new(1),
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
            Ok(Ok(route)) => route,
            Ok(Err(e)) => return fail(&mut conn, &e).await,
            Err(_) => return fail(&mut conn, &TunnelError::Timeout("waiting for the route")).await,
        };
    let Some(identity) = identity else {
        return fail(&mut conn, &TunnelError::NoIdentity).await;
    };
    match route {
        RouteFrame::Cancel { pid, secret } => cancel(ctx, &identity, (pid, secret)).await,
        RouteFrame::Session {
            database,
            db_user,
            db_name,
            db_roles: _,
            params,
        } => {
            let result = session(
                &mut conn,
                ctx,
                &identity,
                &database,
                db_user.as_deref(),
                db_name.as_deref(),
                &params,
            )
            .await;
            if let Err(e) = result {
                ctx.auditor.record(AuditKind::SessionRejected {
                    user: identity.username.clone(),
                    database,
                    reason: e.client_fields().message,
                });
                fail(&mut conn, &e).await;
            }
        }
    }
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

async fn session<S>(
    conn: &mut S,
    ctx: &TunnelContext,
    identity: &Identity,
    database: &str,
    db_user: Option<&str>,
    db_name: Option<&str>,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let db = ctx
        .catalog
        .get(database)
        .ok_or_else(|| TunnelError::UnknownDatabase(database.to_owned()))?;
    let checker = ctx
        .roles
        .checker(identity)
        .map_err(|e| TunnelError::BadIdentity(e.to_string()))?;
    let target = db.target();
    let db_user = match db_user {
        Some(u) => u.to_owned(),
        None => {
            return Err(TunnelError::Denied(format!(
                "no database user was given for database {database:?}; start the tunnel with --db-user"
            )));
        }
    };
    checker
        .check(&target, &db_user, db_name)
        .map_err(|e| TunnelError::Denied(e.to_string()))?;
    let db_name = db_name.unwrap_or(&db_user).to_owned();

    let established = tokio::time::timeout(
        ctx.limits.upstream_timeout,
        db.upstream.login(&db_user, &db_name, params),
    )
    .await
    .map_err(|_| TunnelError::Timeout("connecting to the database"))??;

    let guard = ctx
        .cancels
        .register(&identity.username, db.upstream.clone(), established.key);
    let (pid, secret) = guard.key();
    let mut reply = established.reply;
    let tail = reply.split_off(established.key_at);
    backend::backend_key_data(pid, secret, &mut reply);
    reply.unsplit(tail);
    conn.write_all(&reply).await?;
    conn.flush().await?;

    let session = ctx.next_session.fetch_add(1, Ordering::Relaxed);
    ctx.auditor.record(AuditKind::SessionStart {
        session,
        user: identity.username.clone(),
        database: database.to_owned(),
        db_user: db_user.clone(),
        db_name: db_name.clone(),
    });
    let auditor = ctx.auditor.clone();
    let user = identity.username.clone();
    let counts = relay::relay(
        conn,
        established.stream,
        ctx.limits.max_message_bytes,
        |query| {
            auditor.record(AuditKind::Query {
                session,
                user: user.clone(),
                query,
            })
        },
    )
    .await;
    drop(guard);
    ctx.auditor.record(AuditKind::SessionEnd {
        session,
        user: identity.username.clone(),
        bytes_in: counts.bytes_in,
        bytes_out: counts.bytes_out,
    });
    Ok(())
}

async fn cancel(ctx: &TunnelContext, identity: &Identity, key: (i32, i32)) {
    let forwarded = match ctx.cancels.decide(&identity.username, key) {
        CancelDecision::Forward(upstream, real) => match upstream.cancel(real.0, real.1).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, database = %upstream.name, "cancel could not be delivered");
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
