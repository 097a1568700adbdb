//! The HTTPS API (`/v1/...`), served on the same TLS port as tunnels.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Extension, Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use postern_api::Identity;
use postern_api::wire::{
    ApiError, Catalog, ConnectorInfo, Connectors, DeviceStartRequest, DeviceStartResponse,
    DeviceTokenError, DeviceTokenRequest, LocalLoginRequest, LoginResponse, Ping,
    SsoExchangeRequest, SsoStartRequest, SsoStartResponse, device_error, error_kind,
};
use serde::Deserialize;

use crate::audit::{AuditKind, Auditor};
use crate::auth::device::{self, ConfirmError, Decision, DeviceLogins, EnterError, PollError};
use crate::auth::limits::{Limiter, Refused, shown_username};
use crate::auth::oidc::{OidcConnector, OidcError, OidcPending};
use crate::auth::sso::{
    self, Arrival, CallbackLogin, DeviceArrival, ExchangeError, SsoLogins, StartError,
    loopback_redirect,
};
use crate::auth::{local, totp};
use crate::ca::{Authority, unix};
use crate::drain::Drain;
use crate::policy::LivePolicy;
use crate::revocation::{Revocations, Revoked};
use crate::store::Store;

/// State shared by API handlers.
pub struct ApiState {
    /// Users and CA material.
    pub store: Arc<dyn Store>,
    /// Signs session certificates.
    pub user_ca: Arc<Authority>,
    /// Roles and databases.
    pub policy: LivePolicy,
    /// Audit sink.
    pub auditor: Auditor,
    /// Default certificate lifetime before role caps.
    pub session_ttl: Duration,
    /// Single sign-on connectors, in configuration order.
    pub connectors: Vec<Arc<OidcConnector>>,
    /// Single sign-on logins in progress.
    pub sso: SsoLogins,
    /// Device sign-ins (RFC 8628) in progress.
    pub device: DeviceLogins,
    /// Expiry and locks, checked on every call.
    pub revocations: Arc<Revocations>,
    /// Budgets of password logins.
    pub login_limits: Limiter,
    /// The gateway's drain: a draining gateway is not ready.
    pub drain: Drain,
}

/// The identity of the TLS peer, if it presented a valid session certificate.
#[derive(Clone)]
pub struct Peer(pub Option<Identity>);

/// The TCP peer's address, which budgets of unauthenticated calls count by.
#[derive(Clone, Copy)]
pub struct Source(pub IpAddr);

/// An API failure: HTTP status plus a user-facing [`ApiError`], and how long
/// to wait before trying again (`Retry-After`) when that is the point.
pub struct Failure(
    pub(crate) StatusCode,
    pub(crate) ApiError,
    pub(crate) Option<Duration>,
);

/// The one answer to a wrong username, a wrong password, and a missing or
/// wrong one-time code, so a guesser cannot tell a right password.
const LOGIN_REFUSED: &str = "invalid username, password or one-time code";

impl Failure {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Failure(
            status,
            ApiError {
                kind: kind.into(),
                message: message.into(),
            },
            None,
        )
    }

    fn too_many(why: &Refused) -> Self {
        let mut failure = Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            error_kind::TOO_MANY_ATTEMPTS,
            why.to_string(),
        );
        failure.2 = Some(why.retry_after());
        failure
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
        let mut response = (self.0, Json(self.1)).into_response();
        if let Some(wait) = self.2 {
            // Whole seconds, rounded up so the caller never comes back early.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Builds the router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/ping", get(ping))
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route("/v1/login/local", post(login_local))
        .route("/v1/connectors", get(connectors))
        .route("/v1/login/sso/start", post(sso_start))
        .route("/v1/login/sso/callback", get(sso_callback))
        .route("/v1/login/sso/exchange", post(sso_exchange))
        .route("/v1/login/device/start", post(device_start))
        .route("/v1/login/device/token", post(device_token))
        .route(DEVICE_PAGE, get(device_page).post(device_enter))
        .route("/v1/login/device/confirm", post(device_confirm))
        .route("/v1/session", get(session))
        .route("/v1/databases", get(databases))
        .layer(axum::middleware::map_response(protect))
        .with_state(state)
}

/// Headers on every answer: the sign-in pages ask people to approve a
/// machine, so no other site may frame them under a decoy (clickjacking);
/// nothing here is worth caching, and nothing is sniffed as another type.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn ping() -> Json<Ping> {
    Json(Ping {
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// How long `/v1/ready` waits for the store to answer.
const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/v1/health` and `/v1/ready` answer load balancers; nothing more.
#[derive(serde::Serialize)]
struct Probe {
    /// `live`, `ready` or `not_ready`.
    status: &'static str,
    /// Why not ready: `draining` or `store unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// Liveness: 200 whenever the process serves requests.
async fn health() -> Json<Probe> {
    Json(Probe {
        status: "live",
        reason: None,
    })
}

/// Readiness: 200 when the store answers and the gateway is not draining,
/// else 503 with the reason.
async fn ready(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<Probe>) {
    let not_ready = |reason| {
        let probe = Probe {
            status: "not_ready",
            reason: Some(reason),
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(probe))
    };
    if state.drain.is_draining() {
        return not_ready("draining");
    }
    let store = state.store.clone();
    let pinged = tokio::time::timeout(
        READY_STORE_TIMEOUT,
        tokio::task::spawn_blocking(move || store.ping()),
    )
    .await;
    match pinged {
        Ok(Ok(Ok(()))) => (
            StatusCode::OK,
            Json(Probe {
                status: "ready",
                reason: None,
            }),
        ),
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "not ready: the store does not answer");
            not_ready("store unavailable")
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "not ready: the store check failed");
            not_ready("store unavailable")
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_STORE_TIMEOUT, "not ready: the store did not answer in time");
            not_ready("store unavailable")
        }
    }
}

/// The caller's identity, checked on every call: the TLS handshake verified
/// the certificate only when it was made, and a resumed TLS session (or a
/// long keep-alive connection) carries it on unchecked.
fn require(state: &ApiState, peer: Peer) -> Result<Identity, Failure> {
    let identity = peer.0.ok_or_else(|| {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            "no_session",
            "no valid session certificate; run `postern login`",
        )
    })?;
    state.revocations.check(&identity).map_err(revoked)?;
    Ok(identity)
}

/// The answer to a revoked identity, or to a login of a locked user.
fn revoked(why: Revoked) -> Failure {
    match why {
        Revoked::Expired => Failure::new(
            StatusCode::UNAUTHORIZED,
            error_kind::SESSION_EXPIRED,
            "your Postern session expired; run `postern login` again",
        ),
        Revoked::Locked { .. } => {
            Failure::new(StatusCode::FORBIDDEN, error_kind::LOCKED, why.to_string())
        }
        Revoked::Unknown => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            why.to_string(),
        ),
    }
}

async fn session(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Identity>, Failure> {
    Ok(Json(require(&state, peer)?))
}

async fn databases(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Catalog>, Failure> {
    let identity = require(&state, peer)?;
    let policy = state.policy.current();
    let checker = policy.roles.checker(&identity).map_err(|e| {
        Failure::new(
            StatusCode::FORBIDDEN,
            "bad_identity",
            format!("{e}; run `postern login` again"),
        )
    })?;
    Ok(Json(Catalog {
        databases: policy.catalog.visible(&checker),
    }))
}

/// A password login. Every failure gives the same answer and counts
/// against the user and the source address; a right password without the
/// one-time code it needs is a failure too, so the answer never tells a
/// guesser that the password was right (a client cannot learn that a code is
/// needed either: the user gives it up front, with `--totp` or in the app).
async fn login_local(
    State(state): State<Arc<ApiState>>,
    Extension(Source(source)): Extension<Source>,
    Json(req): Json<LocalLoginRequest>,
) -> Result<Json<LoginResponse>, Failure> {
    let LocalLoginRequest {
        username,
        password,
        csr_pem,
        totp: code,
    } = req;
    let shown = shown_username(&username);
    let audit_failure = |user: &str| {
        state.auditor.record(AuditKind::Login {
            user: user.to_owned(),
            method: "local".into(),
            success: false,
        });
    };
    let limits = state.clone();
    let name = shown.clone();
    let budget = tokio::task::spawn_blocking(move || limits.login_limits.check(&name, source))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    if let Err(why) = budget {
        audit_failure(&shown);
        return Err(Failure::too_many(&why));
    }
    let user = {
        let _slot = state.login_limits.argon2_slot().await.map_err(|why| {
            audit_failure(&shown);
            Failure::too_many(&why)
        })?;
        let store = state.store.clone();
        // argon2 is deliberately slow, and used one-time codes are in the
        // store: keep both off the async workers.
        tokio::task::spawn_blocking(move || {
            let record = store.user(&username).map_err(Failure::internal)?;
            let Some(user) = local::verify(record.as_ref(), &password).cloned() else {
                return Ok(None);
            };
            let second_factor = match (&user.totp, code.as_deref()) {
                (None, _) => true,
                (Some(secret), Some(code)) if !code.trim().is_empty() => totp::accept_once(
                    store.as_ref(),
                    &user.name,
                    &secret.0,
                    code,
                    totp::now_unix(),
                )
                .map_err(Failure::internal)?,
                (Some(_), _) => false,
            };
            Ok::<_, Failure>(second_factor.then_some(user))
        })
        .await
        .map_err(Failure::internal)??
    };
    let user = match user {
        Some(user) => user,
        _ => {
            audit_failure(&shown);
            let limits = state.clone();
            tokio::task::spawn_blocking(move || limits.login_limits.failed(&shown, source))
                .await
                .map_err(Failure::internal)?
                .map_err(Failure::internal)?;
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                error_kind::ACCESS_DENIED,
                LOGIN_REFUSED,
            ));
        }
    };
    state.revocations.check_user(&user.name).map_err(|why| {
        audit_failure(&user.name);
        revoked(why)
    })?;
    let limits = state.clone();
    let name = user.name.clone();
    tokio::task::spawn_blocking(move || limits.login_limits.succeeded(&name))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    let mut identity = Identity {
        username: user.name.clone(),
        roles: user.roles.clone(),
        traits: Default::default(),
        expires_unix: 0,
    };
    identity.traits.internal = user.traits.clone();
    let response = state.issue(&csr_pem, identity)?;
    state.auditor.record(AuditKind::Login {
        user: response.identity.username.clone(),
        method: "local".into(),
        success: true,
    });
    Ok(Json(response))
}

async fn connectors(State(state): State<Arc<ApiState>>) -> Json<Connectors> {
    Json(Connectors {
        connectors: state
            .connectors
            .iter()
            .map(|c| ConnectorInfo {
                name: c.name().to_owned(),
                kind: "oidc".into(),
            })
            .collect(),
    })
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Refuses a field longer than its bound, before anything is kept.
fn bounded(fields: &[(&str, &str, usize)]) -> Result<(), Failure> {
    for (field, value, max) in fields {
        if value.len() > *max {
            return Err(bad_request(format!("{field} is longer than {max} bytes")));
        }
    }
    Ok(())
}

/// The answer to a sign-in that could not be started.
fn start_failure(e: StartError) -> Failure {
    match e {
        StartError::Busy(busy) => {
            let mut failure = Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                error_kind::TOO_MANY_ATTEMPTS,
                busy.to_string(),
            );
            failure.2 = Some(busy.0);
            failure
        }
        StartError::Store(e) => Failure::internal(e),
    }
}

/// Starts a single sign-on. Strangers can call it, so every field is
/// bounded before anything is kept, and so are the logins kept per source.
async fn sso_start(
    State(state): State<Arc<ApiState>>,
    Extension(Source(source)): Extension<Source>,
    Json(req): Json<SsoStartRequest>,
) -> Result<Json<SsoStartResponse>, Failure> {
    bounded(&[
        ("connector", &req.connector, sso::MAX_CONNECTOR_BYTES),
        (
            "client_redirect",
            &req.client_redirect,
            sso::MAX_REDIRECT_BYTES,
        ),
        ("csr_pem", &req.csr_pem, sso::MAX_CSR_BYTES),
    ])?;
    let connector = state.connector(&req.connector)?;
    let client_redirect = loopback_redirect(&req.client_redirect).map_err(bad_request)?;
    if req.client_challenge.len() != 43
        || !req
            .client_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad_request(
            "client_challenge must be base64url(sha256(verifier)) without padding",
        ));
    }
    // Refuse a bad request now, not after the user has signed in.
    rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem)
        .map_err(|e| bad_request(format!("the certificate request was refused: {e}")))?;
    let (auth_url, pending) = connector.begin().await.map_err(oidc_failure)?;
    let request_id = state
        .sso
        .start(
            source,
            connector.name(),
            client_redirect,
            req.client_challenge,
            req.csr_pem,
            pending,
        )
        .await
        .map_err(start_failure)?;
    Ok(Json(SsoStartResponse {
        request_id,
        auth_url,
    }))
}

/// What the identity provider appends to the redirect URI.
#[derive(Default, Deserialize)]
pub(crate) struct CallbackQuery {
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) error_description: Option<String>,
}

/// The browser arrives here from the identity provider, and leaves for the
/// client's loopback listener with a one-time code or an error.
async fn sso_callback(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let login = match query.state.as_deref() {
        Some(s) => state.sso.callback(s).await,
        None => Ok(None),
    };
    let login = match login {
        Ok(Some(Arrival::Client(login))) => login,
        Ok(Some(Arrival::Device(leg))) => return state.device_signed_in(leg, query).await,
        Ok(None) => {
            return html_page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in link is not valid: it was already used, it expired, or it did not \
                 start at this gateway. Start again with `postern login --sso`.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "a sign-in could not be looked up");
            return html_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "The gateway cannot reach its store. Start again with `postern login --sso` \
                 in a minute.",
            );
        }
    };
    let request_id = login.request_id.clone();
    let mut target = login.client_redirect.clone();
    match state.finish_sso(login, query).await {
        Ok(response) => match state.sso.complete(&request_id, response).await {
            Ok(Some(code)) => {
                target.query_pairs_mut().append_pair("code", &code);
            }
            Err(e) => {
                tracing::error!(error = %e, "a signed sign-in could not be stored");
                target
                    .query_pairs_mut()
                    .append_pair("error", "internal")
                    .append_pair(
                        "error_description",
                        "internal gateway error; see the gateway log",
                    );
            }
            Ok(None) => {
                target
                    .query_pairs_mut()
                    .append_pair("error", error_kind::LOGIN_EXPIRED)
                    .append_pair("error_description", "the sign-in expired; start again");
            }
        },
        Err(failure) => {
            state.sso.abandon(&request_id).await;
            target
                .query_pairs_mut()
                .append_pair("error", &failure.1.kind)
                .append_pair("error_description", &failure.1.message);
        }
    }
    Redirect::to(target.as_str()).into_response()
}

async fn sso_exchange(
    State(state): State<Arc<ApiState>>,
    Json(req): Json<SsoExchangeRequest>,
) -> Result<Json<LoginResponse>, Failure> {
    state
        .sso
        .exchange(&req.request_id, &req.code, &req.verifier)
        .await
        .map(Json)
        .map_err(|e| {
            let (status, kind) = match e {
                ExchangeError::Expired => (StatusCode::FORBIDDEN, error_kind::LOGIN_EXPIRED),
                ExchangeError::Mismatch => (StatusCode::FORBIDDEN, error_kind::ACCESS_DENIED),
                ExchangeError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "internal"),
            };
            Failure::new(status, kind, e.to_string())
        })
}

/// Where people enter a device sign-in's code (RFC 8628 `verification_uri`).
pub const DEVICE_PAGE: &str = "/v1/login/device";

/// The login method device sign-ins are audited as.
const DEVICE_METHOD: &str = "sso-device";

/// Starts a device sign-in (RFC 8628 §3.1). Strangers can call it, so
/// every field is bounded and the certificate request checked before
/// anything is kept, and so are the sign-ins kept per source.
async fn device_start(
    State(state): State<Arc<ApiState>>,
    Extension(Source(source)): Extension<Source>,
    Json(req): Json<DeviceStartRequest>,
) -> Result<Json<DeviceStartResponse>, Failure> {
    bounded(&[
        ("connector", &req.connector, sso::MAX_CONNECTOR_BYTES),
        ("csr_pem", &req.csr_pem, sso::MAX_CSR_BYTES),
        ("hostname", &req.hostname, device::MAX_HOSTNAME_BYTES),
    ])?;
    let hostname = req.hostname.trim();
    if hostname.is_empty() || hostname.chars().any(char::is_control) {
        return Err(bad_request(
            "hostname must be the machine's name, without control characters",
        ));
    }
    let connector = state.connector(&req.connector)?;
    let fingerprint = device::csr_fingerprint(&req.csr_pem).map_err(bad_request)?;
    state
        .device
        .start(
            source,
            connector.name(),
            req.csr_pem,
            fingerprint,
            hostname.to_owned(),
        )
        .await
        .map(Json)
        .map_err(start_failure)
}

/// A device's poll (RFC 8628 §3.4): the certificate once approved, else an
/// RFC 8628 §3.5 error.
async fn device_token(
    State(state): State<Arc<ApiState>>,
    Json(req): Json<DeviceTokenRequest>,
) -> Response {
    let why = match state.device.poll(&req.device_code).await {
        Ok(response) => return Json(response).into_response(),
        Err(why) => why,
    };
    let (status, error, interval) = match &why {
        PollError::Pending => (
            StatusCode::BAD_REQUEST,
            device_error::AUTHORIZATION_PENDING,
            None,
        ),
        PollError::SlowDown(interval) => (
            StatusCode::BAD_REQUEST,
            device_error::SLOW_DOWN,
            Some(*interval),
        ),
        PollError::Denied(_) => (StatusCode::BAD_REQUEST, device_error::ACCESS_DENIED, None),
        PollError::Expired => (StatusCode::BAD_REQUEST, device_error::EXPIRED_TOKEN, None),
        PollError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            None,
        ),
    };
    let body = DeviceTokenError {
        error: error.into(),
        error_description: why.to_string(),
        interval,
    };
    (status, Json(body)).into_response()
}

/// A code as typed on the verification page (or carried by its link).
#[derive(Default, Deserialize)]
struct UserCodeForm {
    #[serde(default)]
    user_code: Option<String>,
}

/// The verification page: one field for the code, filled in when the
/// link (a QR code) carried it.
async fn device_page(Query(query): Query<UserCodeForm>) -> Response {
    let typed: String = query
        .user_code
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect();
    let form = format!(
        "<form id=\"code\" method=\"post\" action=\"{DEVICE_PAGE}\">\
         <label>Code <input type=\"text\" name=\"user_code\" value=\"{}\" autocomplete=\"off\" \
         autofocus></label> <button>Continue</button></form>",
        postern_api::html::escape(&typed)
    );
    let body = postern_api::html::page_with(
        "Sign in a machine",
        "Enter the code that `postern login --sso --device` shows on the machine. You will sign \
         in at your identity provider, then confirm which machine you are letting in.",
        &form,
    );
    (StatusCode::OK, Html(body)).into_response()
}

/// The person entered a code: on to the identity provider, once per code.
/// Wrong codes count against the source address, like wrong passwords.
async fn device_enter(
    State(state): State<Arc<ApiState>>,
    Extension(Source(source)): Extension<Source>,
    Form(form): Form<UserCodeForm>,
) -> Response {
    const FAILED: &str = "Sign-in failed";
    let limits = state.clone();
    let budget =
        tokio::task::spawn_blocking(move || limits.login_limits.check_source(source)).await;
    match budget {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(why))) => {
            return html_page(StatusCode::TOO_MANY_REQUESTS, FAILED, &why.to_string());
        }
        Ok(Err(e)) => return store_trouble(e),
        Err(e) => return store_trouble(e),
    }
    let typed = form.user_code.unwrap_or_default();
    let (id, connector) = match state.device.enter(&typed).await {
        Ok(entered) => entered,
        Err(why @ EnterError::Unknown) => {
            let limits = state.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || limits.login_limits.failed_source(source)).await
            {
                tracing::warn!(error = %e, "a wrong device code could not be counted");
            }
            return html_page(StatusCode::BAD_REQUEST, FAILED, &why.to_string());
        }
        Err(why @ EnterError::Used) => {
            return html_page(StatusCode::CONFLICT, FAILED, &why.to_string());
        }
        Err(EnterError::Store(e)) => return store_trouble(e),
    };
    let begun = match state.connector(&connector) {
        Ok(connector) => match connector.begin().await {
            Ok((auth_url, pending)) => state
                .sso
                .start_device(source, connector.name(), &id, pending)
                .await
                .map(|()| auth_url)
                .map_err(start_failure),
            Err(e) => Err(oidc_failure(e)),
        },
        Err(failure) => Err(failure),
    };
    match begun {
        Ok(auth_url) => Redirect::to(&auth_url).into_response(),
        Err(failure) => {
            // The machine stops with the same sentence.
            state.device.refuse(&id, failure.1.message.clone()).await;
            html_page(failure.0, FAILED, &failure.1.message)
        }
    }
}

/// The browser's page when the gateway cannot reach its store.
fn store_trouble(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "a device sign-in step failed");
    html_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in failed",
        "The gateway cannot reach its store. Try again in a minute.",
    )
}

/// Approve or Deny, with the single-use token of the confirmation page.
#[derive(Deserialize)]
struct ConfirmForm {
    login: String,
    token: String,
    decision: String,
}

async fn device_confirm(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    const FAILED: &str = "Sign-in failed";
    let confirming = match state.device.confirming(&form.login, &form.token).await {
        Ok(confirming) => confirming,
        Err(why @ ConfirmError::Invalid) => {
            return html_page(StatusCode::BAD_REQUEST, FAILED, &why.to_string());
        }
        Err(ConfirmError::Store(e)) => return store_trouble(e),
    };
    let username = confirming.identity.username.clone();
    let decision = if form.decision == "approve" {
        match state.approve_device(&confirming) {
            Ok(response) => Decision::Approved(response),
            Err(refused) => Decision::Denied(refused.1.message),
        }
    } else {
        Decision::Denied("the sign-in was denied in the browser; nothing was changed".into())
    };
    let page = match &decision {
        Decision::Approved(_) => (
            StatusCode::OK,
            "Approved — you can close this tab".to_owned(),
            format!("The machine is now signed in to Postern as {username}."),
        ),
        Decision::Denied(message) => (StatusCode::FORBIDDEN, "Denied".to_owned(), message.clone()),
    };
    let approved = matches!(decision, Decision::Approved(_));
    match state.device.decide(&form.login, confirming, decision).await {
        Ok(()) => {
            state.audit_login(&username, DEVICE_METHOD, approved);
            html_page(page.0, &page.1, &page.2)
        }
        Err(why @ ConfirmError::Invalid) => {
            html_page(StatusCode::BAD_REQUEST, FAILED, &why.to_string())
        }
        Err(ConfirmError::Store(e)) => store_trouble(e),
    }
}

fn oidc_failure(e: OidcError) -> Failure {
    let kind = match e {
        OidcError::Unreachable { .. } => error_kind::IDP_UNREACHABLE,
        OidcError::ClockSkew(_) => error_kind::CLOCK_SKEW,
        OidcError::Provider { .. } | OidcError::InvalidToken(_) | OidcError::NoUsername(_) => {
            error_kind::ACCESS_DENIED
        }
    };
    let status = match e {
        OidcError::Unreachable { .. } | OidcError::Provider { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::FORBIDDEN,
    };
    Failure::new(status, kind, e.to_string())
}

/// A minimal page for the browser; `message` is escaped.
fn html_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = postern_api::html::page(title, message);
    (status, Html(body)).into_response()
}

impl ApiState {
    /// A connector by name; the error lists the known ones.
    fn connector(&self, name: &str) -> Result<Arc<OidcConnector>, Failure> {
        if let Some(c) = self.connectors.iter().find(|c| c.name() == name) {
            return Ok(c.clone());
        }
        let known: Vec<&str> = self.connectors.iter().map(|c| c.name()).collect();
        let message = if known.is_empty() {
            "this gateway offers no single sign-on; log in with --user".to_owned()
        } else {
            format!(
                "there is no single sign-on connector {name:?}; this gateway has: {}",
                known.join(", ")
            )
        };
        Err(Failure::new(
            StatusCode::NOT_FOUND,
            error_kind::UNKNOWN_CONNECTOR,
            message,
        ))
    }

    /// Signs the session certificate for `identity`, its lifetime capped by
    /// its roles (the same for every login method).
    fn issue(&self, csr_pem: &str, mut identity: Identity) -> Result<LoginResponse, Failure> {
        let ttl = self.session_ttl_for(&identity)?;
        identity.expires_unix = unix(SystemTime::now() + ttl);
        let cert_pem = self
            .user_ca
            .sign_session(csr_pem, &identity)
            .map_err(|e| bad_request(format!("the certificate request was refused: {e}")))?;
        Ok(LoginResponse { cert_pem, identity })
    }

    /// The provider has sent the browser back: verify, map, sign.
    pub(crate) async fn finish_sso(
        &self,
        login: CallbackLogin,
        query: CallbackQuery,
    ) -> Result<LoginResponse, Failure> {
        let method = login.connector.clone();
        let identity = self
            .verified_identity(&login.connector, login.oidc, query, &method)
            .await?;
        let username = identity.username.clone();
        let response = self
            .issue(&login.csr_pem, identity)
            .inspect_err(|_| self.audit_login(&shown_username(&username), &method, false))?;
        self.audit_login(&response.identity.username, &method, true);
        Ok(response)
    }

    /// Records a login (or a refused one) of `user` by `method`.
    fn audit_login(&self, user: &str, method: &str, success: bool) {
        self.auditor.record(AuditKind::Login {
            user: user.to_owned(),
            method: method.to_owned(),
            success,
        });
    }

    /// Verifies the provider's answer and maps it to the identity a
    /// certificate would carry (without its expiry); every refusal is
    /// audited as a failed login by `method`.
    async fn verified_identity(
        &self,
        connector: &str,
        oidc: OidcPending,
        query: CallbackQuery,
        method: &str,
    ) -> Result<Identity, Failure> {
        let connector = self.connector(connector)?;
        let audit_failure = |user: &str| self.audit_login(&shown_username(user), method, false);
        if let Some(error) = query.error {
            audit_failure("");
            let detail: String = query
                .error_description
                .map(|d| d.chars().filter(|c| !c.is_control()).take(300).collect())
                .unwrap_or_default();
            return Err(if error == "access_denied" {
                Failure::new(
                    StatusCode::FORBIDDEN,
                    error_kind::CONSENT_DENIED,
                    "the sign-in was declined at the identity provider (consent was denied or \
                     access refused); nothing was changed",
                )
            } else {
                Failure::new(
                    StatusCode::FORBIDDEN,
                    error_kind::ACCESS_DENIED,
                    format!("the identity provider refused the sign-in: {error} {detail}")
                        .trim_end()
                        .to_owned(),
                )
            });
        }
        let code = query.code.ok_or_else(|| {
            audit_failure("");
            bad_request("the identity provider sent no authorization code")
        })?;
        let verified = connector
            .finish(code, oidc)
            .await
            .inspect_err(|_| audit_failure(""))
            .map_err(oidc_failure)?;
        // A local user of the same name is someone else (or a break-glass
        // account): sharing the name would share their locks, audit trail
        // and provisioned database user.
        let store = self.store.clone();
        let name = verified.username.clone();
        let local_user = tokio::task::spawn_blocking(move || store.user(&name))
            .await
            .map_err(Failure::internal)?
            .map_err(Failure::internal)?;
        if local_user.is_some() {
            audit_failure(&verified.username);
            tracing::warn!(
                connector = connector.name(),
                username = %shown_username(&verified.username),
                "single sign-on refused: the username belongs to a local user"
            );
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                error_kind::ACCESS_DENIED,
                format!(
                    "single sign-on through connector {:?} gives the username {:?}, which \
                     belongs to a local Postern user; an administrator must remove that local \
                     user or set username_claim on the connector to a claim that cannot collide",
                    connector.name(),
                    verified.username
                ),
            ));
        }
        if verified.roles.is_empty() {
            audit_failure(&verified.username);
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                error_kind::NO_ROLES,
                connector.no_role_message(&verified.claims),
            ));
        }
        if let Err(why) = self.revocations.check_user(&verified.username) {
            audit_failure(&verified.username);
            return Err(revoked(why));
        }
        let mut identity = Identity {
            username: verified.username,
            roles: verified.roles,
            traits: Default::default(),
            expires_unix: 0,
        };
        identity.traits.external = verified.claims;
        Ok(identity)
    }

    /// The person signed in at the provider for a device sign-in: verify
    /// and map as for any single sign-on, then ask them to confirm the
    /// machine. A refusal ends the machine's polling with the same sentence.
    async fn device_signed_in(&self, leg: DeviceArrival, query: CallbackQuery) -> Response {
        const FAILED: &str = "Sign-in failed";
        let identity = match self
            .verified_identity(&leg.connector, leg.oidc, query, DEVICE_METHOD)
            .await
        {
            Ok(identity) => identity,
            Err(refused) => {
                self.device
                    .refuse(&leg.device_login, refused.1.message.clone())
                    .await;
                return html_page(refused.0, FAILED, &refused.1.message);
            }
        };
        let username = identity.username.clone();
        let (machine, token) = match self.device.signed_in(&leg.device_login, identity).await {
            Ok(Some(confirm)) => confirm,
            Ok(None) => {
                return html_page(
                    StatusCode::BAD_REQUEST,
                    FAILED,
                    "This sign-in expired or was ended. Start again with `postern login --sso \
                     --device` on the machine.",
                );
            }
            Err(e) => return store_trouble(e),
        };
        let escape = postern_api::html::escape;
        let button = |id: &str, label: &str| {
            format!(
                "<form id=\"{id}\" method=\"post\" action=\"/v1/login/device/confirm\" \
                 style=\"display: inline\">\
                 <input type=\"hidden\" name=\"login\" value=\"{}\">\
                 <input type=\"hidden\" name=\"token\" value=\"{}\">\
                 <input type=\"hidden\" name=\"decision\" value=\"{id}\">\
                 <button>{label}</button></form> ",
                escape(&leg.device_login),
                escape(&token)
            )
        };
        let details = format!(
            "<dl><dt>Machine</dt><dd id=\"hostname\">{}</dd>\
             <dt>Key fingerprint</dt><dd id=\"fingerprint\"><code>{}</code></dd>\
             <dt>Signed in as</dt><dd id=\"username\">{}</dd></dl>{}{}",
            escape(&machine.hostname),
            escape(&machine.fingerprint),
            escape(&username),
            button("approve", "Approve"),
            button("deny", "Deny"),
        );
        let body = postern_api::html::page_with(
            "Approve this machine?",
            "A machine asks to sign in to Postern as you. Approve only if you started \
             `postern login --sso --device` there and its terminal shows the same machine name \
             and key fingerprint.",
            &details,
        );
        (StatusCode::OK, Html(body)).into_response()
    }

    /// The person approved: the same checks as any login at the moment it
    /// happens (a lock added since the sign-in counts), then the
    /// certificate for the machine's key.
    fn approve_device(&self, confirming: &device::Confirming) -> Result<LoginResponse, Failure> {
        let identity = confirming.identity.clone();
        self.revocations
            .check_user(&identity.username)
            .map_err(revoked)?;
        self.issue(&confirming.csr_pem, identity)
    }

    /// The session lifetime: the gateway default, capped by the roles'
    /// `max_session_ttl`. Unknown roles are refused so a typo in a user
    /// record is found at login, not at connect time.
    fn session_ttl_for(&self, identity: &Identity) -> Result<Duration, Failure> {
        let checker = self.policy.current().roles.checker(identity).map_err(|e| {
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
