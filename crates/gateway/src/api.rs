//! The HTTPS API (`/v1/...`), served on the same TLS port as tunnels.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use postern_api::Identity;
use postern_api::wire::{ApiError, Catalog, LocalLoginRequest, LoginResponse, Ping};

use crate::audit::{AuditKind, Auditor};
use crate::auth::local;
use crate::ca::{Authority, unix};
use crate::catalog;
use crate::rbac::RoleSet;
use crate::store::Store;

/// State shared by API handlers.
pub struct ApiState {
    /// Users and CA material.
    pub store: Arc<dyn Store>,
    /// Signs session certificates.
    pub user_ca: Arc<Authority>,
    /// Roles.
    pub roles: Arc<RoleSet>,
    /// Databases.
    pub catalog: Arc<catalog::Catalog>,
    /// Audit sink.
    pub auditor: Auditor,
    /// Default certificate lifetime before role caps.
    pub session_ttl: Duration,
}

/// The identity of the TLS peer, if it presented a valid session certificate.
#[derive(Clone)]
pub struct Peer(pub Option<Identity>);

/// An API failure: HTTP status plus a user-facing [`ApiError`].
pub struct Failure(StatusCode, ApiError);

impl Failure {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Failure(
            status,
            ApiError {
                kind: kind.into(),
                message: message.into(),
            },
        )
    }

    fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "API request failed");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal gateway error; see the gateway log",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// Builds the router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/ping", get(ping))
        .route("/v1/login/local", post(login_local))
        .route("/v1/session", get(session))
        .route("/v1/databases", get(databases))
        .with_state(state)
}

async fn ping() -> Json<Ping> {
    Json(Ping {
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

fn require(peer: Peer) -> Result<Identity, Failure> {
    peer.0.ok_or_else(|| {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            "no_session",
            "no valid session certificate; run `postern login`",
        )
    })
}

async fn session(Extension(peer): Extension<Peer>) -> Result<Json<Identity>, Failure> {
    Ok(Json(require(peer)?))
}

async fn databases(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Catalog>, Failure> {
    let identity = require(peer)?;
    let checker = state.roles.checker(&identity).map_err(|e| {
        Failure::new(
            StatusCode::FORBIDDEN,
            "bad_identity",
            format!("{e}; run `postern login` again"),
        )
    })?;
    Ok(Json(Catalog {
        databases: state.catalog.visible(&checker),
    }))
}

async fn login_local(
    State(state): State<Arc<ApiState>>,
    Json(req): Json<LocalLoginRequest>,
) -> Result<Json<LoginResponse>, Failure> {
    let store = state.store.clone();
    let LocalLoginRequest {
        username,
        password,
        csr_pem,
    } = req;
    let name = username.clone();
    // argon2 is deliberately slow: keep it off the async workers.
    let user = tokio::task::spawn_blocking(move || {
        let record = store.user(&name)?;
        Ok::<_, crate::store::StoreError>(local::verify(record.as_ref(), &password).cloned())
    })
    .await
    .map_err(Failure::internal)?
    .map_err(Failure::internal)?;
    let Some(user) = user else {
        state.auditor.record(AuditKind::Login {
            user: username,
            method: "local".into(),
            success: false,
        });
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "access_denied",
            "invalid username or password",
        ));
    };
    let mut identity = Identity {
        username: user.name.clone(),
        roles: user.roles.clone(),
        traits: Default::default(),
        expires_unix: 0,
    };
    identity.traits.internal = user.traits.clone();
    let ttl = state.session_ttl_for(&identity)?;
    identity.expires_unix = unix(SystemTime::now() + ttl);
    let cert_pem = state
        .user_ca
        .sign_session(&csr_pem, &identity)
        .map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the certificate request was refused: {e}"),
            )
        })?;
    state.auditor.record(AuditKind::Login {
        user: identity.username.clone(),
        method: "local".into(),
        success: true,
    });
    Ok(Json(LoginResponse { cert_pem, identity }))
}

impl ApiState {
    /// The session lifetime: the gateway default, capped by the roles'
    /// `max_session_ttl`. Unknown roles are refused so a typo in a user
    /// record is found at login, not at connect time.
    fn session_ttl_for(&self, identity: &Identity) -> Result<Duration, Failure> {
        let checker = self.roles.checker(identity).map_err(|e| {
            Failure::new(
                StatusCode::FORBIDDEN,
                "bad_identity",
                format!("{e}; ask an administrator to fix your account"),
            )
        })?;
        Ok(checker
            .max_session_ttl()
            .map_or(self.session_ttl, |max| max.min(self.session_ttl)))
    }
}
