//! One tunnel session as a pipeline of named stages, each a function from
//! what the previous one produced to what the next one needs:
//!
//! route frame (checked in [`super::route`]) → [`authorize`] →
//! [`provision`] → [`connect_upstream`] → [`greet`] → [`relay`] → [`end`].
//!
//! A stage that fails returns a [`TunnelError`]; whatever an earlier stage
//! set up (a provisioned user, a cancel key) is undone by the stage that
//! fails or by the value's own lifecycle, never left behind.

use std::sync::atomic::Ordering;

use postern_api::Identity;
use postern_pgwire::{CancelKey, backend};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::TunnelContext;
use super::cancellation::CancelKeyGuard;
use super::error::TunnelError;
use super::relay::{self as bytes_relay, Relayed};
use super::route::{SessionRequest, StartupParams};
use super::statement_clock::{Overrun, StatementLimits};
use crate::audit::AuditKind;
use crate::catalog::CatalogDb;
use crate::names::{DatabaseName, DbName, DbUser};
use crate::policy::Policy;
use crate::provisioning::{Activated, Grants, LiveUser, ProvisioningError, Request};
use crate::rbac::{AutoUserMode, SessionLimits};
use crate::upstream::{DbStream, Established, Refusal, UpstreamError};

/// Runs a session from its checked request to its end.
pub(super) async fn run<S>(
    conn: &mut S,
    ctx: &TunnelContext,
    identity: &Identity,
    request: SessionRequest,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // The policy this session is authorized under, for its whole life.
    let policy = ctx.policy.current();
    let authorized = authorize(&policy, identity, request)?;
    let activated = provision(ctx, &authorized).await?;
    let connected = connect_upstream(ctx, &authorized, activated).await?;
    let greeted = greet(conn, ctx, identity, &authorized, connected).await?;
    let ended = relay(
        conn,
        ctx,
        identity,
        &authorized,
        &greeted.live,
        greeted.stream,
    )
    .await;
    end(ctx, identity, &authorized, greeted.live, ended).await;
    Ok(())
}

/// A session RBAC allows, with every value that goes upstream decided.
struct Authorized<'c> {
    db: &'c CatalogDb,
    database: DatabaseName,
    db_user: DbUser,
    /// The requested one, or the kind's default, or the db user's name.
    db_name: DbName,
    /// What provisioning must give the user; `None` when the roles do not
    /// provision users on this database.
    provisioning: Option<(AutoUserMode, Grants)>,
    params: StartupParams,
    /// Whether the session ends at the certificate's expiry.
    disconnect_expired_cert: bool,
    /// What the roles selecting the database limit and set.
    limits: SessionLimits,
}

/// Decides, with the caller's roles, whether and how the session may run.
fn authorize<'c>(
    policy: &'c Policy,
    identity: &Identity,
    request: SessionRequest,
) -> Result<Authorized<'c>, TunnelError> {
    let SessionRequest {
        database,
        db_user,
        db_name,
        db_roles,
        params,
    } = request;
    let checker = policy
        .roles
        .checker(identity)
        .map_err(|e| TunnelError::BadIdentity(e.to_string()))?;
    let db = policy
        .catalog
        .reachable(&database, &checker)
        .ok_or_else(|| TunnelError::UnknownDatabase(database.to_string()))?;
    let target = db.target();
    let Some(db_user) = db_user else {
        return Err(TunnelError::Denied(format!(
            "no database user was given for database {database:?}; start the tunnel with --db-user"
        )));
    };
    let kind = &db.upstream.kind;
    let db_name = db_name.or(kind.default_db_name().map(DbName::new));
    let allowed = checker
        .check(
            &target,
            db_user.as_str(),
            db_name.as_ref().map(DbName::as_str),
        )
        .map_err(|e| TunnelError::Denied(e.to_string()))?;
    // PostgreSQL's own default: the database named after the user.
    let db_name = db_name.unwrap_or_else(|| DbName::new(db_user.as_str()));

    let mode = checker.auto_user_mode(&target);
    let provisioning = if mode == AutoUserMode::Off {
        if !db_roles.is_empty() {
            return Err(TunnelError::Denied(format!(
                "database {database:?} does not create database users automatically, so db roles cannot be chosen there"
            )));
        }
        None
    } else if !kind.can_provision() {
        return Err(TunnelError::Denied(format!(
            "your roles create database users automatically (create_db_user_mode: {}), which Redshift Serverless database {database:?} does not support; an administrator must set create_db_user_mode: off in the roles that select it",
            mode.as_str()
        )));
    } else {
        let mut grants = Grants::choose(&allowed, &db_roles)?;
        if let Grants::Roles(roles) = &mut grants {
            for needed in kind.login_roles() {
                if !roles.iter().any(|r| r == needed) {
                    roles.push((*needed).to_owned());
                }
            }
        }
        Some((mode, grants))
    };
    let limits = checker.session_limits(&target);
    if !limits.db_session_defaults.is_empty() && !kind.accepts_session_defaults() {
        let names: Vec<&str> = limits
            .db_session_defaults
            .iter()
            .map(|(name, _)| name)
            .collect();
        return Err(TunnelError::Denied(format!(
            "your roles start sessions with db_session_defaults ({}), which Redshift Serverless database {database:?} does not accept; an administrator must remove db_session_defaults from the roles that select it (max_statement_duration and max_idle_in_transaction do work there)",
            names.join(", ")
        )));
    }
    Ok(Authorized {
        db,
        database,
        db_user,
        db_name,
        provisioning,
        params,
        disconnect_expired_cert: checker.disconnect_expired_cert(),
        limits,
    })
}

/// Creates or re-enables the session's database user when the roles say so.
async fn provision<'p>(
    ctx: &'p TunnelContext,
    authorized: &Authorized<'_>,
) -> Result<Option<Activated<'p>>, TunnelError> {
    let Some((mode, grants)) = &authorized.provisioning else {
        return Ok(None);
    };
    let request = Request {
        db: authorized.db,
        user: &authorized.db_user,
        db_name: &authorized.db_name,
        mode: *mode,
        grants: grants.clone(),
    };
    Ok(Some(ctx.provisioner.activate(request).await?))
}

/// A database login made for the session, with its provisioned user.
struct Connected<'p> {
    established: Established,
    live: Option<LiveUser<'p>>,
}

/// Logs in to the database as the session's user. A provisioned user whose
/// login fails is undone here.
async fn connect_upstream<'p>(
    ctx: &TunnelContext,
    authorized: &Authorized<'_>,
    activated: Option<Activated<'p>>,
) -> Result<Connected<'p>, TunnelError> {
    // A role's defaults go up as startup parameters unless the client sent
    // its own value for the setting: like PostgreSQL's `ALTER ROLE ... SET`
    // defaults, which a client's startup parameters also override. A user
    // could `SET` it right after anyway.
    let mut params: Vec<(&str, &str)> = authorized.params.iter().collect();
    let defaults = authorized.limits.db_session_defaults.iter();
    let unset: Vec<_> = defaults
        .filter(|(name, _)| !params.iter().any(|(own, _)| own.eq_ignore_ascii_case(name)))
        .collect();
    params.extend(unset);
    // Each AWS call and each login attempt has its own timeout (with its
    // own error); this one only backs them up.
    let login = tokio::time::timeout(
        ctx.limits.upstream_timeout * 5,
        authorized
            .db
            .upstream
            .login(&authorized.db_user, &authorized.db_name, &params),
    )
    .await;
    let login = match login {
        Err(_) => Err(TunnelError::Timeout("connecting to the database")),
        Ok(Ok(established)) => Ok(established),
        Ok(Err(e)) => Err(match (&activated, e) {
            // The user exists now, so a refusal is about its privileges.
            (Some(activated), UpstreamError::Refused(fields))
                if Refusal::classify(&fields.code, &fields.message) == Refusal::NoConnect =>
            {
                ProvisioningError::UserNoConnect {
                    user: authorized.db_user.to_string(),
                    db_name: authorized.db_name.to_string(),
                    roles: activated.roles().to_vec(),
                }
                .into()
            }
            (_, e) => e.into(),
        }),
    };
    match (login, activated) {
        (Ok(established), activated) => {
            let live = activated.map(|a| a.connected(established.key.pid));
            Ok(Connected { established, live })
        }
        (Err(e), Some(activated)) => {
            activated.abandon().await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// The session, greeted and ready to relay.
struct Greeted<'p> {
    stream: DbStream,
    live: Live<'p>,
}

/// What lives exactly as long as the session.
struct Live<'p> {
    /// The client's cancel key; dropping it forgets the key.
    cancel: CancelKeyGuard,
    /// The database's real key, to cancel what runs when the gateway ends
    /// the session.
    real_key: CancelKey,
    /// The provisioned database user, if any.
    user: Option<LiveUser<'p>>,
}

/// A relayed session: its number in the audit, and how it went.
struct Ended {
    session: u64,
    relayed: Relayed,
}

/// Completes the client's startup: the database's messages with the
/// gateway's own cancel key in place of the real one.
async fn greet<'p, S>(
    conn: &mut S,
    ctx: &TunnelContext,
    identity: &Identity,
    authorized: &Authorized<'_>,
    connected: Connected<'p>,
) -> Result<Greeted<'p>, TunnelError>
where
    S: AsyncWrite + Unpin,
{
    let Connected { established, live } = connected;
    let upstream = &authorized.db.upstream;
    let registered = ctx
        .cancels
        .register(
            &identity.username,
            &upstream.name,
            upstream.address(),
            established.key,
        )
        .await;
    let cancel = match registered {
        Ok(cancel) => cancel,
        Err(e) => {
            if let Some(live) = live {
                live.end().await;
            }
            return Err(e.into());
        }
    };
    let key = cancel.key();
    let mut reply = established.reply;
    let tail = reply.split_off(established.key_at);
    backend::backend_key_data(key.pid, key.secret, &mut reply);
    reply.unsplit(tail);
    let greeted = async {
        conn.write_all(&reply).await?;
        conn.flush().await
    }
    .await;
    if let Err(e) = greeted {
        // The client left before the session began; the user it was
        // provisioned for must not stay enabled.
        drop(cancel);
        if let Some(live) = live {
            live.end().await;
        }
        return Err(e.into());
    }
    Ok(Greeted {
        stream: established.stream,
        live: Live {
            cancel,
            real_key: established.key,
            user: live,
        },
    })
}

/// Audits the start, relays until either side or the gateway ends the
/// session, and returns what was relayed.
async fn relay<S>(
    conn: &mut S,
    ctx: &TunnelContext,
    identity: &Identity,
    authorized: &Authorized<'_>,
    live: &Live<'_>,
    database: DbStream,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let session = ctx.next_session.fetch_add(1, Ordering::Relaxed);
    ctx.auditor.record(AuditKind::SessionStart {
        session,
        user: identity.username.clone(),
        database: authorized.database.to_string(),
        db_user: authorized.db_user.to_string(),
        db_name: authorized.db_name.to_string(),
    });
    let auditor = ctx.auditor.clone();
    let user = &identity.username;
    let ended = ctx
        .revocations
        .ended(identity, authorized.disconnect_expired_cert);
    let _live = ctx.drain.session();
    // The one way the gateway ends a session: a lock, the certificate's
    // expiry or the end of a drain's grace period.
    let stop = async {
        tokio::select! {
            revoked = ended => revoked.session_end_fields(),
            fields = ctx.drain.sessions_end() => fields,
        }
    };
    let limits = StatementLimits {
        statement: authorized.limits.max_statement_duration,
        idle_in_transaction: authorized.limits.max_idle_in_transaction,
    };
    let upstream = &authorized.db.upstream;
    // Through the database's own cancel key, as when the gateway ends a
    // session.
    let cancel_statement = |overrun: Overrun| {
        auditor.record(AuditKind::StatementCancelled {
            session,
            user: user.clone(),
            rule: overrun.rule().to_owned(),
            limit: overrun.limit(),
        });
        async move {
            if let Err(e) = upstream.cancel(live.real_key).await {
                tracing::warn!(error = %e, database = %upstream.name, "cancel of a statement over its limit could not be delivered");
            }
        }
    };
    let relayed = bytes_relay::relay(
        conn,
        database,
        ctx.limits.max_message_bytes,
        |event| {
            if let Some(what) = AuditKind::from_client(session, user, event) {
                auditor.record(what);
            }
        },
        limits,
        cancel_statement,
        stop,
    )
    .await;
    Ended { session, relayed }
}

/// Cancels what still runs when the gateway ended the session, forgets
/// the cancel key, audits the end and ends the provisioned user.
async fn end(
    ctx: &TunnelContext,
    identity: &Identity,
    authorized: &Authorized<'_>,
    live: Live<'_>,
    Ended { session, relayed }: Ended,
) {
    let upstream = &authorized.db.upstream;
    if relayed.stopped.is_some() {
        // The statement running now would otherwise go on on the server.
        if let Err(e) = upstream.cancel(live.real_key).await {
            tracing::warn!(error = %e, database = %upstream.name, "cancel of an ended session could not be delivered");
        }
    }
    drop(live.cancel);
    ctx.auditor.record(AuditKind::SessionEnd {
        session,
        user: identity.username.clone(),
        bytes_in: relayed.bytes_in,
        bytes_out: relayed.bytes_out,
        reason: relayed.stopped.map(|fields| fields.message),
    });
    if let Some(user) = live.user {
        user.end().await;
    }
}
