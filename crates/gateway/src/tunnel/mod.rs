//! The tunnel endpoint: route frame, authorization, database login, relay.

pub mod cancellation;
pub mod error;
pub mod relay;
pub mod route;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use postern_api::{Identity, RouteFrame};
use postern_pgwire::backend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::audit::{AuditKind, Auditor};
use crate::catalog::Catalog;
use crate::config::{DatabaseKind, Limits};
use crate::provisioning::{Grants, Provisioner, Request};
use crate::rbac::{AutoUserMode, RoleSet};
use crate::revocation::Revocations;
use crate::store::Store;
use cancellation::{CancelDecision, CancelMap};
use error::TunnelError;
use route::SessionRequest;

/// The RDS role that lets a user log in with an IAM authentication token.
const RDS_IAM_ROLE: &str = "rds_iam";

/// The database Redshift Serverless creates in every namespace.
const REDSHIFT_DEFAULT_DB: &str = "dev";

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
    /// Automatic database-user provisioning.
    pub provisioner: Provisioner,
    /// Expiry and locks, checked per connection and watched per session.
    pub revocations: Arc<Revocations>,
    next_session: AtomicU64,
}

impl TunnelContext {
    /// Bundles the gateway's state for tunnels.
    pub fn new(
        catalog: Arc<Catalog>,
        roles: Arc<RoleSet>,
        auditor: Auditor,
        store: Arc<dyn Store>,
        revocations: Arc<Revocations>,
        limits: Limits,
    ) -> Self {
        TunnelContext {
            revocations,
            catalog,
            roles,
            cancels: CancelMap::new(limits.cancels_per_second),
            provisioner: Provisioner::new(store, auditor.clone(), limits.upstream_timeout),
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
    // Checked here, whether or not the TLS session was resumed.
    let admitted = ctx.revocations.check(&identity);
    match route {
        RouteFrame::Cancel { pid, secret } => match admitted {
            Ok(()) => cancel(ctx, &identity, (pid, secret)).await,
            // Like any cancel, a refused one gets no reply.
            Err(revoked) => tracing::info!(user = %identity.username, %revoked, "cancel refused"),
        },
        RouteFrame::Session {
            database,
            db_user,
            db_name,
            db_roles,
            params,
        } => {
            let request = admitted.map_err(TunnelError::Revoked).and_then(|()| {
                Ok(SessionRequest::new(
                    database.clone(),
                    db_user,
                    db_name,
                    db_roles,
                    params,
                )?)
            });
            let result = match request {
                Ok(request) => session(&mut conn, ctx, &identity, request).await,
                Err(e) => Err(e),
            };
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
    request: SessionRequest,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let SessionRequest {
        database,
        db_user,
        db_name,
        db_roles,
        params,
    } = request;
    let database = database.as_str();
    let db_roles = db_roles.as_slice();
    let db_name = db_name.as_deref();
    let checker = ctx
        .roles
        .checker(identity)
        .map_err(|e| TunnelError::BadIdentity(e.to_string()))?;
    let db = ctx
        .catalog
        .reachable(database, &checker)
        .ok_or_else(|| TunnelError::UnknownDatabase(database.to_owned()))?;
    let target = db.target();
    let db_user = match db_user {
        Some(u) => u,
        None => {
            return Err(TunnelError::Denied(format!(
                "no database user was given for database {database:?}; start the tunnel with --db-user"
            )));
        }
    };
    // Redshift's default database is `dev`, not one named after the user.
    let db_name = match db_name {
        None if db.config.kind == DatabaseKind::RedshiftServerless => Some(REDSHIFT_DEFAULT_DB),
        other => other,
    };
    let allowed = checker
        .check(&target, &db_user, db_name)
        .map_err(|e| TunnelError::Denied(e.to_string()))?;
    let db_name = db_name.unwrap_or(&db_user).to_owned();

    let mode = checker.auto_user_mode(&target);
    if mode != AutoUserMode::Off && db.config.kind == DatabaseKind::RedshiftServerless {
        // There the db user is an IAM role, which Postern cannot create.
        return Err(TunnelError::Denied(format!(
            "your roles create database users automatically (create_db_user_mode: {}), which Redshift Serverless database {database:?} does not support; an administrator must set create_db_user_mode: off in the roles that select it",
            mode.as_str()
        )));
    }
    let activated = if mode == AutoUserMode::Off {
        if !db_roles.is_empty() {
            return Err(TunnelError::Denied(format!(
                "database {database:?} does not create database users automatically, so db roles cannot be chosen there"
            )));
        }
        None
    } else {
        let mut grants = Grants::choose(&allowed, db_roles)?;
        // On RDS the user logs in with an IAM token, which needs rds_iam.
        if db.config.kind == DatabaseKind::RdsPostgres
            && let Grants::Roles(roles) = &mut grants
            && !roles.iter().any(|r| r == RDS_IAM_ROLE)
        {
            roles.push(RDS_IAM_ROLE.to_owned());
        }
        let request = Request {
            db,
            user: &db_user,
            db_name: &db_name,
            mode,
            grants,
        };
        Some(ctx.provisioner.activate(request).await?)
    };

    // Each AWS call and each login attempt has its own timeout (with its
    // own error); this one only backs them up.
    let login = tokio::time::timeout(
        ctx.limits.upstream_timeout * 5,
        db.upstream.login(&db_user, &db_name, &params),
    )
    .await
    .map_err(|_| TunnelError::Timeout("connecting to the database"))
    .and_then(|login| login);
    let (established, live_user) = match (login, activated) {
        (Ok(established), activated) => {
            let live = activated.map(|a| a.connected(established.key.0));
            (established, live)
        }
        (Err(e), None) => return Err(e),
        (Err(e), Some(activated)) => {
            let e = match e {
                TunnelError::UpstreamRefused(fields)
                    if fields.code == "42501"
                        && fields.message.contains("permission denied for database") =>
                {
                    TunnelError::UserNoConnect {
                        user: db_user.clone(),
                        db_name: db_name.clone(),
                        roles: activated.roles().to_vec(),
                    }
                }
                e => e,
            };
            activated.abandon().await;
            return Err(e);
        }
    };

    let guard = ctx
        .cancels
        .register(&identity.username, db.upstream.clone(), established.key);
    let (pid, secret) = guard.key();
    let mut reply = established.reply;
    let tail = reply.split_off(established.key_at);
    backend::backend_key_data(pid, secret, &mut reply);
    reply.unsplit(tail);
    let greeted = async {
        conn.write_all(&reply).await?;
        conn.flush().await
    }
    .await;
    if let Err(e) = greeted {
        // The client left before the session began; the user it was
        // provisioned for must not stay enabled.
        drop(guard);
        if let Some(live_user) = live_user {
            live_user.end().await;
        }
        return Err(e.into());
    }

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
    let ended = ctx
        .revocations
        .ended(identity, checker.disconnect_expired_cert());
    let counts = relay::relay(
        conn,
        established.stream,
        ctx.limits.max_message_bytes,
        |event| {
            if let Some(what) = AuditKind::from_client(session, &user, event) {
                auditor.record(what);
            }
        },
        async { ended.await.session_end_fields() },
    )
    .await;
    if counts.stopped.is_some() {
        // The statement running now would otherwise go on on the server.
        let (pid, secret) = established.key;
        if let Err(e) = db.upstream.cancel(pid, secret).await {
            tracing::warn!(error = %e, database = %db.upstream.name, "cancel of an ended session could not be delivered");
        }
    }
    drop(guard);
    ctx.auditor.record(AuditKind::SessionEnd {
        session,
        user: identity.username.clone(),
        bytes_in: counts.bytes_in,
        bytes_out: counts.bytes_out,
        reason: counts.stopped.map(|fields| fields.message),
    });
    if let Some(live_user) = live_user {
        live_user.end().await;
    }
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
