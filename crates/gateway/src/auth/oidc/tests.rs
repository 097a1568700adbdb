//! The connector against a small provider served in-process: discovery,
//! JWKS and token endpoint, with Ed25519 keys made at test time. The real
//! provider (oidc-provider) is exercised end to end in `tests/tests/sso.rs`;
//! these tests forge what a real provider never sends.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration as Span, Utc};
use openidconnect::core::{CoreEdDsaPrivateSigningKey, CoreGenderClaim, CoreJwsSigningAlgorithm};
use openidconnect::{
    AccessToken, Audience, EndUserEmail, EndUserUsername, IdTokenClaims, IssuerUrl, JsonWebKeyId,
    Nonce, PrivateSigningKey, StandardClaims, SubjectIdentifier,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::api::{ApiState, CallbackQuery};
use crate::audit::Auditor;
use crate::auth::local::hash_password;
use crate::auth::sso::CallbackLogin;
use crate::ca::{Authority, CaKind, CaMaterial};
use crate::catalog::Catalog;
use crate::config::{ClaimMapping, OidcConnectorConfig};
use crate::rbac::RoleSet;
use crate::revocation::Revocations;
use crate::store::{SqliteStore, Store, UserRecord};

const CLIENT_ID: &str = "postern";

#[derive(Default)]
struct FakeState {
    base: String,
    jwks: Vec<Value>,
    jwks_fetches: usize,
    token_response: Option<Value>,
    token_requests: Vec<HashMap<String, String>>,
}

/// The provider's side: whatever the test put in its state.
struct FakeProvider {
    state: Arc<Mutex<FakeState>>,
    base: String,
    _server: tokio::task::JoinHandle<()>,
}

type Shared = Arc<Mutex<FakeState>>;

async fn discovery(State(s): State<Shared>) -> axum::Json<Value> {
    let base = s.lock().unwrap().base.clone();
    axum::Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
}

async fn jwks(State(s): State<Shared>) -> axum::Json<Value> {
    let mut state = s.lock().unwrap();
    state.jwks_fetches += 1;
    axum::Json(json!({ "keys": state.jwks }))
}

async fn token(State(s): State<Shared>, body: String) -> axum::Json<Value> {
    let mut state = s.lock().unwrap();
    state.token_requests.push(
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect(),
    );
    axum::Json(
        state
            .token_response
            .clone()
            .expect("a token response was set"),
    )
}

impl FakeProvider {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state: Shared = Arc::new(Mutex::new(FakeState {
            base: base.clone(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeProvider {
            state,
            base,
            _server: server,
        }
    }

    fn publish(&self, key: &Key) {
        let jwk = serde_json::to_value(key.signer.as_verification_key()).unwrap();
        self.state.lock().unwrap().jwks.push(jwk);
    }

    fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }
}

struct Key {
    signer: CoreEdDsaPrivateSigningKey,
}

impl Key {
    fn new(kid: &str) -> Self {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        Key {
            signer: CoreEdDsaPrivateSigningKey::from_ed25519_pem(
                &pem,
                Some(JsonWebKeyId::new(kid.into())),
            )
            .unwrap(),
        }
    }
}

/// What goes into a test token; tests change one thing at a time.
struct TokenSpec {
    issuer: String,
    audience: String,
    nonce: String,
    issued: chrono::DateTime<Utc>,
    expires: chrono::DateTime<Utc>,
    /// `preferred_username`, when the token carries one.
    username: Option<&'static str>,
    /// `email` and `email_verified`, when the token carries them.
    email: Option<(&'static str, bool)>,
    extra: Value,
}

impl TokenSpec {
    fn new(issuer: &str, nonce: &str) -> Self {
        let now = Utc::now();
        TokenSpec {
            issuer: issuer.into(),
            audience: CLIENT_ID.into(),
            nonce: nonce.into(),
            issued: now,
            expires: now + Span::minutes(5),
            username: Some("dana"),
            email: None,
            extra: json!({
                "groups": ["dba", "eng-platform"],
                "db_users": ["reader", "writer"],
                "address": { "country": "NZ" },
                "level": 3,
                "nothing": null,
            }),
        }
    }

    fn sign(&self, key: &Key, access_token: Option<&AccessToken>) -> String {
        let Value::Object(extra) = self.extra.clone() else {
            panic!("extra claims must be an object")
        };
        let claims = IdTokenClaims::<OtherClaims, CoreGenderClaim>::new(
            IssuerUrl::new(self.issuer.clone()).unwrap(),
            vec![Audience::new(self.audience.clone())],
            self.expires,
            self.issued,
            StandardClaims::new(SubjectIdentifier::new("sub-of-dana".into()))
                .set_preferred_username(self.username.map(|u| EndUserUsername::new(u.into())))
                .set_email(self.email.map(|(e, _)| EndUserEmail::new(e.into())))
                .set_email_verified(self.email.map(|(_, verified)| verified)),
            OtherClaims(extra),
        )
        .set_nonce(Some(Nonce::new(self.nonce.clone())));
        OidcIdToken::new(
            claims,
            &key.signer,
            CoreJwsSigningAlgorithm::EdDsa,
            access_token,
            None,
        )
        .unwrap()
        .to_string()
    }
}

/// `claims_to_roles` rules: claim, value, roles.
type Rules<'a> = &'a [(&'a str, &'a str, &'a [&'a str])];

fn connector(issuer: &str) -> OidcConnector {
    connector_with(
        issuer,
        &[
            ("groups", "dba", &["dba"]),
            ("groups", "^eng-.*$", &["dev", "dba"]),
            ("address.country", "NZ", &["kiwi"]),
        ],
        None,
    )
}

fn connector_with(issuer: &str, rules: Rules, username_claim: Option<&str>) -> OidcConnector {
    let config = OidcConnectorConfig {
        name: "corp".into(),
        issuer_url: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret_file: None,
        client_secret_env: None,
        scopes: vec!["openid".into(), "profile".into(), "groups".into()],
        claims_to_roles: rules
            .iter()
            .map(|(claim, value, roles)| ClaimMapping {
                claim: claim.to_string(),
                value: value.to_string(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
            .collect(),
        username_claim: username_claim.map(str::to_owned),
        ca_cert_file: None,
    };
    OidcConnector::new(&config, "https://gw.example.com:3080/v1/login/sso/callback").unwrap()
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn parse(token: &str) -> OidcIdToken {
    OidcIdToken::from_str(token).unwrap()
}

/// Replaces the payload of a signed token, keeping header and signature.
fn with_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    format!("{}.{encoded}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn the_code_flow_verifies_the_token_and_maps_claims() {
    let idp = FakeProvider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    let corp = connector(&idp.base);

    let (auth_url, pending) = corp.begin().await.unwrap();
    assert!(
        auth_url.starts_with(&format!("{}/auth?", idp.base)),
        "{auth_url}"
    );
    let params = query(&auth_url);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(
        params["redirect_uri"],
        "https://gw.example.com:3080/v1/login/sso/callback"
    );
    assert_eq!(params["scope"], "openid profile groups");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["state"], pending.state);

    let access_token = AccessToken::new("access-token".into());
    let id_token = TokenSpec::new(&idp.base, &params["nonce"]).sign(&key, Some(&access_token));
    idp.state.lock().unwrap().token_response = Some(json!({
        "access_token": "access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }));

    let login = corp.finish("the-code".into(), pending).await.unwrap();
    assert_eq!(login.username, "dana");
    assert_eq!(login.roles, vec!["dba", "dev", "kiwi"]);
    let claims = &login.claims;
    assert_eq!(claims["groups"], vec!["dba", "eng-platform"]);
    assert_eq!(claims["db_users"], vec!["reader", "writer"]);
    assert_eq!(claims["address.country"], vec!["NZ"]);
    assert_eq!(claims["level"], vec!["3"]);
    assert_eq!(claims["preferred_username"], vec!["dana"]);
    assert_eq!(claims["sub"], vec!["sub-of-dana"]);
    assert_eq!(claims["iss"], vec![idp.base.clone()]);
    for bookkeeping in ["exp", "iat", "nonce", "aud", "at_hash", "nothing"] {
        assert!(
            !claims.contains_key(bookkeeping),
            "{bookkeeping}: {claims:?}"
        );
    }

    // The token request carried the code and the PKCE verifier whose hash
    // went out in the authorization URL.
    let requests = idp.state.lock().unwrap().token_requests.clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["grant_type"], "authorization_code");
    assert_eq!(requests[0]["code"], "the-code");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(requests[0]["code_verifier"].as_bytes()));
    assert_eq!(challenge, params["code_challenge"]);
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_refused() {
    let idp = FakeProvider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    let corp = connector(&idp.base);
    let nonce = Nonce::new("n-1".into());
    let good = TokenSpec::new(&idp.base, "n-1").sign(&key, None);
    assert_eq!(
        corp.verify_id_token(&parse(&good), &nonce)
            .await
            .unwrap()
            .username,
        "dana"
    );

    let invalid = |result: Result<OidcLogin, OidcError>| match result {
        Err(OidcError::InvalidToken(why)) => why,
        other => panic!("expected an invalid token, got {other:?}"),
    };

    // More groups in the payload, same signature.
    let promoted = with_payload(&good, |p| p["groups"] = json!(["dba", "superusers"]));
    invalid(corp.verify_id_token(&parse(&promoted), &nonce).await);

    // A flipped bit in the signature.
    let mut bytes = good.clone().into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(bytes).unwrap();
    invalid(corp.verify_id_token(&parse(&flipped), &nonce).await);

    // Signed by a key the provider never published.
    let stranger = Key::new("k1");
    invalid(
        corp.verify_id_token(
            &parse(&TokenSpec::new(&idp.base, "n-1").sign(&stranger, None)),
            &nonce,
        )
        .await,
    );

    // Another login's nonce, another client, another issuer.
    invalid(
        corp.verify_id_token(&parse(&good), &Nonce::new("n-2".into()))
            .await,
    );
    let mut spec = TokenSpec::new(&idp.base, "n-1");
    spec.audience = "someone-else".into();
    invalid(
        corp.verify_id_token(&parse(&spec.sign(&key, None)), &nonce)
            .await,
    );
    let spec = TokenSpec::new("https://evil.example.com", "n-1");
    invalid(
        corp.verify_id_token(&parse(&spec.sign(&key, None)), &nonce)
            .await,
    );

    // An unsigned token.
    let unsigned = {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = good.split('.').nth(1).unwrap();
        format!("{header}.{payload}.")
    };
    if let Ok(token) = OidcIdToken::from_str(&unsigned) {
        invalid(corp.verify_id_token(&token, &nonce).await);
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_then_cached() {
    let idp = FakeProvider::start().await;
    let old = Key::new("old");
    idp.publish(&old);
    let corp = connector(&idp.base);
    let nonce = Nonce::new("n".into());
    let spec = TokenSpec::new(&idp.base, "n");
    corp.verify_id_token(&parse(&spec.sign(&old, None)), &nonce)
        .await
        .unwrap();
    assert_eq!(idp.jwks_fetches(), 1, "discovery fetched the keys");

    // The provider rotates: tokens now name a key the gateway has not seen.
    let new = Key::new("new");
    idp.publish(&new);
    corp.verify_id_token(&parse(&spec.sign(&new, None)), &nonce)
        .await
        .unwrap();
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "an unknown kid fetches the keys again"
    );
    corp.verify_id_token(&parse(&spec.sign(&new, None)), &nonce)
        .await
        .unwrap();
    corp.verify_id_token(&parse(&spec.sign(&old, None)), &nonce)
        .await
        .unwrap();
    assert_eq!(idp.jwks_fetches(), 2, "known keys come from the cache");
}

#[tokio::test]
async fn clock_trouble_names_the_clocks() {
    let idp = FakeProvider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    let corp = connector(&idp.base);
    let nonce = Nonce::new("n".into());
    let now = Utc::now();

    let mut expired = TokenSpec::new(&idp.base, "n");
    expired.issued = now - Span::minutes(30);
    expired.expires = now - Span::minutes(10);
    let mut future = TokenSpec::new(&idp.base, "n");
    future.issued = now + Span::minutes(10);
    future.expires = now + Span::minutes(20);
    for spec in [expired, future] {
        let err = corp
            .verify_id_token(&parse(&spec.sign(&key, None)), &nonce)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::ClockSkew(_)), "{err:?}");
        assert!(err.to_string().contains("clocks"), "{err}");
    }

    // Within the leeway a slow clock is forgiven.
    let mut slightly = TokenSpec::new(&idp.base, "n");
    slightly.issued = now + Span::seconds(30);
    corp.verify_id_token(&parse(&slightly.sign(&key, None)), &nonce)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_provider_is_named() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{closed}");
    let err = connector(&issuer).begin().await.err().unwrap();
    assert!(matches!(err, OidcError::Unreachable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("the gateway cannot reach the identity provider at {issuer}")
    );
}

#[test]
fn claims_flatten_into_traits() {
    let flat = flatten_claims(&json!({
        "sub": "u1",
        "groups": ["a", "b", {"nested": "skipped"}, 7],
        "email_verified": true,
        "realm_access": {"roles": ["x"], "deep": {"er": "y"}},
        "exp": 1, "nonce": "n", "empty": [], "none": null,
    }));
    let want: BTreeMap<String, Vec<String>> = [
        ("sub", vec!["u1"]),
        ("groups", vec!["a", "b", "7"]),
        ("email_verified", vec!["true"]),
        ("realm_access.roles", vec!["x"]),
        ("realm_access.deep.er", vec!["y"]),
        ("empty", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(flat, want);
}

#[test]
fn no_role_message_lists_the_mapped_claims() {
    let corp = connector("https://idp.example.com");
    let claims: BTreeMap<String, Vec<String>> =
        [("groups".to_string(), vec!["a".to_string(), "b".to_string()])].into();
    assert_eq!(corp.roles_for(&claims), Vec::<String>::new());
    assert_eq!(
        corp.no_role_message(&claims),
        "your identity provider groups [a, b] and address.country [] map to no Postern role; \
         ask an administrator to grant you access"
    );
}

#[test]
fn claims_to_roles_regexes_match_whole_values() {
    let corp = connector_with(
        "https://idp.example.com",
        &[("groups", "^admins|dbas$", &["dba"])],
        None,
    );
    let roles = |groups: &[&str]| {
        let claims: BTreeMap<String, Vec<String>> = [(
            "groups".to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        )]
        .into();
        corp.roles_for(&claims)
    };
    assert_eq!(roles(&["admins-readonly"]), Vec::<String>::new());
    assert_eq!(roles(&["all-dbas"]), Vec::<String>::new());
    assert_eq!(roles(&["admins"]), ["dba"]);
    assert_eq!(roles(&["dbas"]), ["dba"]);
}

#[tokio::test]
async fn an_unverified_email_never_becomes_the_username() {
    let idp = FakeProvider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    // The username a token without preferred_username gives.
    async fn username(
        corp: &OidcConnector,
        idp: &FakeProvider,
        key: &Key,
        email: Option<(&'static str, bool)>,
    ) -> Result<String, String> {
        let mut spec = TokenSpec::new(&idp.base, "n");
        spec.username = None;
        spec.email = email;
        corp.verify_id_token(&parse(&spec.sign(key, None)), &Nonce::new("n".into()))
            .await
            .map(|login| login.username)
            .map_err(|e| e.to_string())
    }

    let default = connector(&idp.base);
    // Anyone can type the boss's address into an account at many providers.
    assert_eq!(
        username(&default, &idp, &key, Some(("boss@corp.example", false))).await,
        Ok("sub-of-dana".to_owned())
    );
    assert_eq!(
        username(&default, &idp, &key, Some(("dana@corp.example", true))).await,
        Ok("dana@corp.example".to_owned())
    );

    let by_email = connector_with(&idp.base, &[], Some("email"));
    assert_eq!(
        username(&by_email, &idp, &key, Some(("boss@corp.example", false))).await,
        Err(
            "the identity provider sent no usable email claim (with email_verified: true) to \
             use as your Postern username"
                .to_owned()
        )
    );
    assert_eq!(
        username(&by_email, &idp, &key, Some(("dana@corp.example", true))).await,
        Ok("dana@corp.example".to_owned())
    );
    let by_sub = connector_with(&idp.base, &[], Some("sub"));
    assert_eq!(
        username(&by_sub, &idp, &key, Some(("dana@corp.example", true))).await,
        Ok("sub-of-dana".to_owned())
    );
}

/// A gateway's API state with the connector `corp` and the roles it maps to.
fn api_state(corp: OidcConnector, store: Arc<dyn Store>) -> ApiState {
    let authority =
        |kind| Arc::new(Authority::load(&CaMaterial::generate(kind, "test").unwrap()).unwrap());
    let roles = ["dba", "dev", "kiwi"]
        .map(|name| format!("kind: role\nversion: v7\nmetadata: {{name: {name}}}\n"))
        .join("---\n");
    let roles = RoleSet::from_roles(RoleSet::from_yaml_documents(&roles).unwrap()).unwrap();
    let catalog = Catalog::new(
        &[],
        authority(CaKind::Database),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    ApiState {
        store: store.clone(),
        user_ca: authority(CaKind::User),
        policy: crate::policy::LivePolicy::new(crate::policy::Policy { roles, catalog }),
        auditor: Auditor::start(store.clone(), "test").0,
        session_ttl: Duration::from_secs(3600),
        connectors: vec![Arc::new(corp)],
        sso: crate::auth::sso::SsoLogins::new(store.clone()),
        device: crate::auth::device::DeviceLogins::new(
            store.clone(),
            crate::auth::device::DeviceSettings {
                ttl: Duration::from_secs(60),
                interval: Duration::from_secs(1),
                verification_uri: "https://gw.example.com/v1/login/device".into(),
            },
        ),
        login_limits: crate::auth::limits::Limiter::new(store.clone(), Default::default()),
        revocations: Revocations::start(
            store,
            Duration::from_secs(1),
            tokio_util::sync::CancellationToken::new(),
        ),
        drain: Default::default(),
    }
}

/// One sign-in through the provider, as the gateway's callback finishes it:
/// the username signed in, or the refusal the user reads.
async fn sign_in(state: &ApiState, idp: &FakeProvider, key: &Key) -> Result<String, String> {
    let corp = &state.connectors[0];
    let (auth_url, pending) = corp.begin().await.unwrap();
    let id_token = TokenSpec::new(&idp.base, &query(&auth_url)["nonce"]).sign(key, None);
    idp.state.lock().unwrap().token_response = Some(json!({
        "access_token": "access-token",
        "token_type": "Bearer",
        "id_token": id_token,
    }));
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem()
        .unwrap();
    let query = CallbackQuery {
        code: Some("the-code".into()),
        state: Some(pending.state.clone()),
        ..Default::default()
    };
    let login = CallbackLogin {
        request_id: "request".into(),
        connector: "corp".into(),
        client_redirect: url::Url::parse("http://127.0.0.1:9/").unwrap(),
        csr_pem,
        oidc: pending,
    };
    state
        .finish_sso(login, query)
        .await
        .map(|response| response.identity.username)
        .map_err(|failure| failure.1.message)
}

#[tokio::test]
async fn single_sign_on_cannot_take_a_local_users_name() {
    let idp = FakeProvider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let state = api_state(connector(&idp.base), store.clone());
    assert_eq!(sign_in(&state, &idp, &key).await, Ok("dana".to_owned()));

    // A local (break-glass) account of the same name belongs to someone
    // else: its roles, locks and database user must not be shared.
    store
        .put_user(&UserRecord {
            name: "dana".into(),
            password_hash: hash_password("secret").unwrap(),
            roles: vec!["dev".into()],
            traits: Default::default(),
            totp: None,
        })
        .unwrap();
    assert_eq!(
        sign_in(&state, &idp, &key).await,
        Err(
            "single sign-on through connector \"corp\" gives the username \"dana\", which \
             belongs to a local Postern user; an administrator must remove that local user or set \
             username_claim on the connector to a claim that cannot collide"
                .to_owned()
        )
    );
}
