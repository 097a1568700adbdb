//! The HTTPS API's router in process (`tower::ServiceExt::oneshot`, no
//! listener, no TLS): what a client reads for a ping, a refused login, and
//! an identity that is missing, expired or locked.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::{Extension, Router};
use common::{ROLES, identity};
use postern_api::Identity;
use postern_api::wire::error_kind;
use postern_gateway::api::{self, ApiState, Peer, Source};
use postern_gateway::audit::Auditor;
use postern_gateway::auth::limits::Limiter;
use postern_gateway::auth::local::hash_password;
use postern_gateway::ca::{Authority, CaKind, CaMaterial};
use postern_gateway::catalog::Catalog;
use postern_gateway::config::{DatabaseConfig, LoginLimits};
use postern_gateway::drain::{Drain, Drained};
use postern_gateway::policy::{LivePolicy, Policy};
use postern_gateway::rbac::RoleSet;
use postern_gateway::revocation::{Revocations, add_lock};
use postern_gateway::store::{SqliteStore, Store, UserRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The API of a gateway with user alice (password `right`), one database
/// `pg`, and at most two failed logins in a row per user.
struct Api {
    state: Arc<ApiState>,
    store: Arc<dyn Store>,
    writer: std::thread::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Api {
    fn start(dir: &std::path::Path) -> Api {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        store
            .put_user(&UserRecord {
                name: "alice".into(),
                password_hash: hash_password("right").unwrap(),
                roles: vec!["dev".into()],
                traits: BTreeMap::new(),
                totp: None,
            })
            .unwrap();
        let ca = |kind| Authority::load(&CaMaterial::generate(kind, "test").unwrap()).unwrap();
        let config: DatabaseConfig =
            serde_yaml_ng::from_str("name: pg\nuri: db.test:5432\n").unwrap();
        let catalog = Catalog::new(
            &[config],
            Arc::new(ca(CaKind::Database)),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let (auditor, writer) = Auditor::start(store.clone(), "test");
        let shutdown = CancellationToken::new();
        let limits = LoginLimits {
            max_failures: 2,
            ..LoginLimits::default()
        };
        let state = Arc::new(ApiState {
            store: store.clone(),
            user_ca: Arc::new(ca(CaKind::User)),
            policy: LivePolicy::new(Policy {
                roles: RoleSet::from_roles(RoleSet::from_yaml_documents(ROLES).unwrap()).unwrap(),
                catalog,
            }),
            auditor,
            session_ttl: Duration::from_secs(3600),
            connectors: vec![],
            sso: postern_gateway::auth::sso::SsoLogins::new(store.clone()),
            device: postern_gateway::auth::device::DeviceLogins::new(
                store.clone(),
                postern_gateway::auth::device::DeviceSettings {
                    ttl: Duration::from_secs(60),
                    interval: Duration::from_secs(1),
                    verification_uri: "https://gw.example.com/v1/login/device".into(),
                },
            ),
            revocations: Revocations::start(
                store.clone(),
                Duration::from_secs(1),
                shutdown.clone(),
            ),
            login_limits: Limiter::new(store.clone(), limits),
            drain: Drain::default(),
        });
        Api {
            state,
            store,
            writer,
            shutdown,
        }
    }

    /// The router as the server mounts it for a connection from 192.0.2.7
    /// whose certificate (if any) names `peer`.
    fn router(&self, peer: Option<Identity>) -> Router {
        api::router(self.state.clone())
            .layer(Extension(Peer(peer)))
            .layer(Extension(Source(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))))
    }

    /// Status, headers and JSON body of one request.
    async fn call(
        &self,
        peer: Option<Identity>,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self.router(peer).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    async fn get(&self, peer: Option<Identity>, path: &str) -> (StatusCode, Value) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let (status, _, body) = self.call(peer, request).await;
        (status, body)
    }

    async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let body = json!({ "username": username, "password": password, "csr_pem": "" });
        let request = Request::post("/v1/login/local")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.call(None, request).await
    }

    /// Every audit event, once the API is gone.
    fn audit(self) -> Vec<Value> {
        self.shutdown.cancel();
        drop(Arc::into_inner(self.state).expect("no request still runs"));
        self.writer.join().unwrap();
        self.store.recent_audit(1000).unwrap()
    }
}

#[tokio::test]
async fn ping_answers_anyone_with_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let (status, body) = api.get(None, "/v1/ping").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

/// The device sign-in's pages ask a person to approve a machine: another
/// site must not frame them under a decoy (clickjacking), and no answer
/// may be cached or sniffed as another type.
#[tokio::test]
async fn pages_cannot_be_framed_cached_or_sniffed() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    for path in ["/v1/login/device", "/v1/ping"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let (status, headers, _) = api.call(None, request).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert!(
            header("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}: {headers:?}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-store", "{path}");
    }
}

#[tokio::test]
async fn health_stays_live_and_ready_turns_503_once_draining() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    // No certificate: load balancers have none.
    let live = (StatusCode::OK, json!({"status": "live"}));
    assert_eq!(api.get(None, "/v1/health").await, live);
    assert_eq!(
        api.get(None, "/v1/ready").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );

    // Nothing open: the drain is over at once, however long the grace.
    let hour = Duration::from_secs(3600);
    let drained = tokio::time::timeout(
        Duration::from_secs(5),
        api.state
            .drain
            .run(&TaskTracker::new(), hour, hour, std::future::pending()),
    )
    .await
    .expect("a drain with nothing open returns promptly");
    assert_eq!(
        drained,
        Drained {
            ended: 0,
            finished: true
        }
    );
    assert_eq!(
        api.get(None, "/v1/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "draining"})
        )
    );
    assert_eq!(api.get(None, "/v1/health").await, live);
}

#[tokio::test]
async fn refused_logins_get_one_answer_then_a_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let refused = json!({
        "kind": error_kind::ACCESS_DENIED,
        "message": "invalid username, password or one-time code",
    });
    // An unknown user and a wrong password read the same.
    for (user, password) in [("mallory", "guess"), ("alice", "wrong"), ("alice", "wrong")] {
        let (status, headers, body) = api.login(user, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}");
        assert_eq!(body, refused, "{user}");
        assert!(headers.get(header::RETRY_AFTER).is_none());
    }
    // Two failures in a row: even the right password waits.
    let (status, headers, body) = api.login("alice", "right").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["kind"], error_kind::TOO_MANY_ATTEMPTS);
    assert_eq!(
        body["message"],
        "too many failed logins; try again in 30 minutes"
    );
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1790..=1800).contains(&retry), "Retry-After: {retry}");

    let audit = api.audit();
    let logins: Vec<_> = audit.iter().filter(|e| e["event"] == "login").collect();
    assert_eq!(logins.len(), 4, "{audit:?}");
    assert!(
        logins
            .iter()
            .all(|l| l["success"] == false && l["method"] == "local")
    );
    assert_eq!(logins[0]["user"], "mallory");
}

#[tokio::test]
async fn a_locked_user_cannot_log_in_even_with_the_right_password() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    add_lock(
        api.store.as_ref(),
        "alice",
        None,
        Some("incident 42".into()),
    )
    .unwrap();
    let (status, _, body) = api.login("alice", "right").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["kind"], error_kind::LOCKED);
    assert_eq!(
        body["message"],
        "access was locked by an administrator: incident 42"
    );
}

#[tokio::test]
async fn calls_that_need_a_session_tell_missing_expired_and_locked_apart() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let alice = identity("alice", Duration::from_secs(3600));

    let (status, body) = api.get(Some(alice.clone()), "/v1/session").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["username"], "alice");
    let (status, body) = api.get(Some(alice.clone()), "/v1/databases").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["databases"][0]["name"], "pg", "{body}");

    for path in ["/v1/session", "/v1/databases"] {
        let (status, body) = api.get(None, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["kind"], "no_session");
        assert_eq!(
            body["message"],
            "no valid session certificate; run `postern login`"
        );

        let (status, body) = api.get(Some(identity("alice", Duration::ZERO)), path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["kind"], error_kind::SESSION_EXPIRED);
        assert_eq!(
            body["message"],
            "your Postern session expired; run `postern login` again"
        );
    }

    add_lock(api.store.as_ref(), "alice", None, None).unwrap();
    for path in ["/v1/session", "/v1/databases"] {
        let (status, body) = api.get(Some(alice.clone()), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["kind"], error_kind::LOCKED);
        assert_eq!(body["message"], "access was locked by an administrator");
    }
}

#[tokio::test]
async fn a_one_time_code_used_on_one_replica_is_refused_on_another() {
    // Two replicas sharing one store, as behind a load balancer.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Api::start(dir.path()), Api::start(dir.path()));
    let secret = postern_gateway::auth::totp::generate_secret();
    let mut alice = a.store.user("alice").unwrap().unwrap();
    alice.totp = Some(postern_gateway::store::TotpSecret(secret.clone()));
    a.store.put_user(&alice).unwrap();
    let code = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(&secret).unwrap())
        .build()
        .unwrap()
        .generate_current()
        .to_string();
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem()
        .unwrap();
    let request = || {
        let body = json!({
            "username": "alice", "password": "right", "csr_pem": csr_pem, "totp": code,
        });
        Request::post("/v1/login/local")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (first, _, body) = a.call(None, request()).await;
    println!("replica A, first use of the code: {first} {body}");
    assert_eq!(first, StatusCode::OK, "{body}");
    let (replayed, _, body) = b.call(None, request()).await;
    println!("replica B, the same code again: {replayed} {body}");
    assert_eq!(replayed, StatusCode::UNAUTHORIZED, "{body}");
}
