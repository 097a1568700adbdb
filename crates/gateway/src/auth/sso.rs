//! Brokered single sign-on: the state a login keeps between its three
//! requests.
//!
//! 1. `start`: the client sends its loopback address, the hash of a secret
//!    verifier and its certificate request; the gateway sends the browser to
//!    the identity provider.
//! 2. `callback`: the provider sends the browser back to the gateway, which
//!    verifies the sign-in, signs the certificate and sends the browser on
//!    to the client's loopback listener with a one-time code.
//! 3. `exchange`: the client trades the code and its verifier for the
//!    certificate. A code is single-use, lives two minutes and is worthless
//!    without the verifier, so whoever sees the browser's URL (another local
//!    process, a browser extension, history) gains nothing.
//!
//! The state lives in the store, so each request may reach another replica
//! (behind a load balancer): a login started on one is finished on another.
//! Each step takes what it needs once (the provider's `state`, the code),
//! so a replayed request finds nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use postern_api::wire::{LoginResponse, sso_challenge};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use super::oidc::OidcPending;
use crate::store::{self, PendingCounts, SsoLoginRecord, Store, StoreError};

/// How long a login may stay at the identity provider.
pub const PENDING_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a one-time code may wait for its exchange.
pub const CODE_TTL: Duration = Duration::from_secs(2 * 60);
/// Logins in progress at once; unauthenticated callers must not fill the
/// store (each holds at most about [`MAX_CSR_BYTES`] plus a redirect).
const MAX_PENDING: usize = 1_000;
/// Logins in progress from one source address, so one stranger cannot
/// take every slot.
const MAX_PENDING_PER_SOURCE: usize = 20;
/// Longest certificate request accepted (a real one is about 1 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Longest client redirect accepted.
pub const MAX_REDIRECT_BYTES: usize = 2 * 1024;
/// Longest connector name accepted.
pub const MAX_CONNECTOR_BYTES: usize = 128;
/// Wrong codes or verifiers tolerated for one login before it is dropped.
const MAX_FAILED_EXCHANGES: u32 = 5;

/// Why an exchange was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// Unknown request, expired, or its code already used.
    #[error(
        "this sign-in has expired or its one-time code was already used; run `postern login --sso` again"
    )]
    Expired,
    /// The code or the verifier does not belong to the request.
    #[error("the one-time code does not belong to this sign-in; run `postern login --sso` again")]
    Mismatch,
    /// The store failed (the gateway log has why).
    #[error("the gateway cannot reach its store; try again in a minute")]
    Unavailable,
}

/// Too many logins in progress, in all or from one source; the oldest of
/// them expires after the given time.
#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are in progress; try again in a few minutes")]
pub struct Busy(pub Duration);

/// Why a login could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Too many logins in progress.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the gateway's callback needs to finish a login.
pub struct CallbackLogin {
    /// The login's id.
    pub request_id: String,
    /// Connector name.
    pub connector: String,
    /// Where to send the browser afterwards.
    pub client_redirect: Url,
    /// The client's certificate request.
    pub csr_pem: String,
    /// What the connector kept for the provider's answer.
    pub oidc: OidcPending,
}

/// Where the provider's redirect leads.
pub enum Arrival {
    /// A login of a client with a loopback listener.
    Client(CallbackLogin),
    /// The provider leg of a device sign-in.
    Device(DeviceArrival),
}

/// What the callback needs to go on with a device sign-in.
pub struct DeviceArrival {
    /// The device sign-in's id.
    pub device_login: String,
    /// Connector name.
    pub connector: String,
    /// What the connector kept for the provider's answer.
    pub oidc: OidcPending,
}

/// A device sign-in's provider leg as stored.
#[derive(Serialize, Deserialize)]
struct DeviceLeg {
    device_login: String,
    connector: String,
    oidc: OidcPending,
}

/// A stored login at the provider: a client's (the original form, so
/// records of older gateways still read) or a device sign-in's leg.
#[derive(Deserialize)]
#[serde(untagged)]
enum AtProvider {
    Client(Login),
    Device(DeviceLeg),
}

/// Where a login is.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    /// At the provider (until the callback took its `state`, which the
    /// store then no longer finds).
    AtProvider(OidcPending),
    /// Signed; waits for the exchange of its code.
    Done {
        /// SHA-256 of the one-time code, hex.
        code_hash: String,
        response: Box<LoginResponse>,
    },
}

/// A login's data as stored (the record's body).
#[derive(Serialize, Deserialize)]
struct Login {
    connector: String,
    client_redirect: String,
    client_challenge: String,
    csr_pem: String,
    stage: Stage,
}

impl Login {
    fn of(record: &SsoLoginRecord) -> Result<Login, StoreError> {
        Ok(serde_json::from_str(&record.body)?)
    }
}

/// Logins in progress, in the store.
pub struct SsoLogins {
    store: Arc<dyn Store>,
}

/// A random, URL-safe token with 256 bits of entropy.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Refuses one more sign-in beside `pending` when all `max` slots, or the
/// source's `max_per_source`, are taken: [`Busy`] says how long until the
/// oldest in the way expires (sign-ins live `ttl`).
pub(super) fn room_for_one_more(
    pending: &PendingCounts,
    max: usize,
    max_per_source: usize,
    ttl: Duration,
) -> Result<(), StartError> {
    let oldest = if pending.total >= max {
        pending.oldest_ms
    } else if pending.from_source >= max_per_source {
        pending.oldest_from_source_ms
    } else {
        return Ok(());
    };
    let waited =
        Duration::from_millis(u64::try_from(now_ms() - oldest.unwrap_or_else(now_ms)).unwrap_or(0));
    Err(Busy(ttl.saturating_sub(waited)).into())
}

impl SsoLogins {
    /// The logins kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        SsoLogins { store }
    }

    /// Records a login that was just sent to the provider; returns its id.
    pub async fn start(
        &self,
        source: IpAddr,
        connector: &str,
        client_redirect: Url,
        client_challenge: String,
        csr_pem: String,
        oidc: OidcPending,
    ) -> Result<String, StartError> {
        let state = oidc.state.clone();
        let body = serde_json::to_string(&Login {
            connector: connector.to_owned(),
            client_redirect: client_redirect.into(),
            client_challenge,
            csr_pem,
            stage: Stage::AtProvider(oidc),
        })
        .map_err(StoreError::from)?;
        self.keep(source, state, body).await
    }

    /// Records the provider leg of a device sign-in (whose id is
    /// `device_login`) that was just sent to the provider.
    pub async fn start_device(
        &self,
        source: IpAddr,
        connector: &str,
        device_login: &str,
        oidc: OidcPending,
    ) -> Result<(), StartError> {
        let state = oidc.state.clone();
        let body = serde_json::to_string(&DeviceLeg {
            device_login: device_login.to_owned(),
            connector: connector.to_owned(),
            oidc,
        })
        .map_err(StoreError::from)?;
        self.keep(source, state, body).await.map(drop)
    }

    /// Stores a login at the provider, within the limits; returns its id.
    async fn keep(
        &self,
        source: IpAddr,
        state: String,
        body: String,
    ) -> Result<String, StartError> {
        let source = source.to_string();
        let store = self.store.clone();
        let counted = source.clone();
        let pending = store::blocking(move || store.sso_logins_pending(&counted)).await?;
        room_for_one_more(&pending, MAX_PENDING, MAX_PENDING_PER_SOURCE, PENDING_TTL)?;
        let record = SsoLoginRecord {
            id: random_token(),
            state: Some(state),
            source,
            created_ms: now_ms(),
            body,
        };
        let request_id = record.id.clone();
        let store = self.store.clone();
        store::blocking(move || store.put_sso_login(&record, PENDING_TTL)).await?;
        Ok(request_id)
    }

    /// The login the provider's redirect belongs to, by its `state`; `None`
    /// for an unknown, used or expired state. Each state works once, on
    /// whichever replica it reaches first.
    pub async fn callback(&self, state: &str) -> Result<Option<Arrival>, StoreError> {
        let store = self.store.clone();
        let state = state.to_owned();
        let Some(record) = store::blocking(move || store.take_sso_state(&state)).await? else {
            return Ok(None);
        };
        let login = match serde_json::from_str(&record.body)? {
            AtProvider::Client(login) => login,
            AtProvider::Device(leg) => {
                // The device sign-in goes on in its own record.
                self.abandon(&record.id).await;
                return Ok(Some(Arrival::Device(DeviceArrival {
                    device_login: leg.device_login,
                    connector: leg.connector,
                    oidc: leg.oidc,
                })));
            }
        };
        let Stage::AtProvider(oidc) = login.stage else {
            return Ok(None);
        };
        let client_redirect = Url::parse(&login.client_redirect)
            .map_err(|e| StoreError::Unavailable(format!("a stored redirect is invalid: {e}")))?;
        Ok(Some(Arrival::Client(CallbackLogin {
            request_id: record.id,
            connector: login.connector,
            client_redirect,
            csr_pem: login.csr_pem,
            oidc,
        })))
    }

    /// Stores the signed certificate; returns the one-time code for it,
    /// `None` when the login expired meanwhile.
    pub async fn complete(
        &self,
        request_id: &str,
        response: LoginResponse,
    ) -> Result<Option<String>, StoreError> {
        let store = self.store.clone();
        let id = request_id.to_owned();
        let code = random_token();
        let code_hash = hash(&code);
        let done = store::blocking(move || {
            let Some(record) = store.sso_login(&id)? else {
                return Ok(false);
            };
            let mut login = Login::of(&record)?;
            login.stage = Stage::Done {
                code_hash,
                response: Box::new(response),
            };
            store.update_sso_login(&id, &serde_json::to_string(&login)?, CODE_TTL)
        })
        .await?;
        Ok(done.then_some(code))
    }

    /// Forgets a login that failed.
    pub async fn abandon(&self, request_id: &str) {
        let store = self.store.clone();
        let id = request_id.to_owned();
        if let Err(e) = store::blocking(move || store.take_sso_login(&id)).await {
            // It expires on its own.
            tracing::warn!(error = %e, "a failed sign-in could not be forgotten");
        }
    }

    /// Trades a one-time code and the verifier for the certificate, once,
    /// on whichever replica the client reaches.
    pub async fn exchange(
        &self,
        request_id: &str,
        code: &str,
        verifier: &str,
    ) -> Result<LoginResponse, ExchangeError> {
        let store = self.store.clone();
        let (id, code_hash, challenge_hash) = (
            request_id.to_owned(),
            hash(code),
            hash(&sso_challenge(verifier)),
        );
        store::blocking(move || {
            let Some(record) = store.sso_login(&id)? else {
                return Ok(Err(ExchangeError::Expired));
            };
            let login = Login::of(&record)?;
            // Hashes are compared, so timing says nothing about the secrets.
            let good = matches!(&login.stage, Stage::Done { code_hash: stored, .. } if *stored == code_hash)
                && hash(&login.client_challenge) == challenge_hash;
            if !good {
                store.fail_sso_login(&id, MAX_FAILED_EXCHANGES)?;
                return Ok(Err(ExchangeError::Mismatch));
            }
            // Of two exchanges with the right code, one takes the login.
            let taken = store.take_sso_login(&id)?.map(|r| Login::of(&r)).transpose()?;
            Ok(match taken.map(|l| l.stage) {
                Some(Stage::Done { response, .. }) => Ok(*response),
                _ => Err(ExchangeError::Expired),
            })
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a sign-in could not be exchanged");
            Err(ExchangeError::Unavailable)
        })
    }
}

/// Accepts only the client's own loopback listener as the final redirect:
/// `http://127.0.0.1:PORT/...`, `http://[::1]:PORT/...` or
/// `http://localhost:PORT/...`. Anything else would let a crafted start
/// request send a freshly signed code to someone else's server.
pub fn loopback_redirect(raw: &str) -> Result<Url, String> {
    let refuse = |why: &str| {
        Err(format!(
            "client_redirect {raw:?} {why}; it must be http://127.0.0.1:PORT/... (the client's own loopback listener)"
        ))
    };
    let Ok(url) = Url::parse(raw) else {
        return refuse("is not a URL");
    };
    if url.scheme() != "http" {
        return refuse("is not http");
    }
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if !loopback {
        return refuse("is not on this computer");
    }
    if url.port().is_none() {
        return refuse("has no port");
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return refuse("has a user name, password or fragment");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_api::Identity;

    fn pending(state: &str) -> OidcPending {
        OidcPending::for_tests(state)
    }

    fn response() -> LoginResponse {
        LoginResponse {
            cert_pem: "CERT".into(),
            identity: Identity {
                username: "dana".into(),
                roles: vec!["dba".into()],
                traits: Default::default(),
                expires_unix: 0,
            },
        }
    }

    async fn started(logins: &SsoLogins, state: &str, verifier: &str) -> String {
        logins
            .start(
                Ipv4Addr::LOCALHOST.into(),
                "corp",
                loopback_redirect("http://127.0.0.1:4000/callback").unwrap(),
                sso_challenge(verifier),
                "CSR".into(),
                pending(state),
            )
            .await
            .unwrap()
    }

    /// Two replicas' views of one store.
    fn replicas(dir: &tempfile::TempDir) -> (SsoLogins, SsoLogins) {
        let open = || {
            SsoLogins::new(Arc::new(
                crate::store::SqliteStore::open(dir.path()).unwrap(),
            ))
        };
        (open(), open())
    }

    #[tokio::test]
    async fn a_code_is_exchanged_once_with_its_verifier_on_any_replica() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(&dir);
        let id = started(&a, "state-1", "verifier").await;
        assert_eq!(
            b.exchange(&id, "guess", "verifier").await.unwrap_err(),
            ExchangeError::Mismatch,
            "no code before the provider answered"
        );
        let Some(Arrival::Client(callback)) = b.callback("state-1").await.unwrap() else {
            panic!("a known state of a client's login");
        };
        assert_eq!(callback.request_id, id);
        assert_eq!(callback.csr_pem, "CSR");
        assert!(
            a.callback("state-1").await.unwrap().is_none(),
            "a state works once"
        );
        let code = b.complete(&id, response()).await.unwrap().unwrap();
        assert_eq!(
            a.exchange(&id, "forged", "verifier").await.unwrap_err(),
            ExchangeError::Mismatch
        );
        assert_eq!(
            a.exchange(&id, &code, "other verifier").await.unwrap_err(),
            ExchangeError::Mismatch
        );
        assert_eq!(
            a.exchange(&id, &code, "verifier").await.unwrap().cert_pem,
            "CERT"
        );
        assert_eq!(
            b.exchange(&id, &code, "verifier").await.unwrap_err(),
            ExchangeError::Expired,
            "a code works once"
        );
    }

    #[tokio::test]
    async fn unknown_states_and_repeated_failures_end_a_login() {
        let dir = tempfile::tempdir().unwrap();
        let (logins, _) = replicas(&dir);
        assert!(logins.callback("never-issued").await.unwrap().is_none());
        let id = started(&logins, "s", "v").await;
        logins.callback("s").await.unwrap().unwrap();
        let code = logins.complete(&id, response()).await.unwrap().unwrap();
        for _ in 0..MAX_FAILED_EXCHANGES {
            assert!(logins.exchange(&id, "forged", "v").await.is_err());
        }
        assert_eq!(
            logins.exchange(&id, &code, "v").await.unwrap_err(),
            ExchangeError::Expired,
            "too many wrong codes drop the login"
        );
    }

    #[tokio::test]
    async fn logins_in_progress_are_limited_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(&dir);
        for n in 0..MAX_PENDING_PER_SOURCE {
            started(if n % 2 == 0 { &a } else { &b }, &format!("s{n}"), "v").await;
        }
        let busy = b
            .start(
                Ipv4Addr::LOCALHOST.into(),
                "corp",
                loopback_redirect("http://127.0.0.1:4000/callback").unwrap(),
                sso_challenge("v"),
                "CSR".into(),
                pending("one-more"),
            )
            .await;
        match busy {
            Err(StartError::Busy(Busy(wait))) => assert!(wait <= PENDING_TTL),
            other => panic!(
                "the 21st login from one source waits, not {:?}",
                other.map(|_| ())
            ),
        }
    }

    #[tokio::test]
    async fn a_device_sign_ins_provider_leg_arrives_once_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(&dir);
        a.start_device(
            Ipv4Addr::LOCALHOST.into(),
            "corp",
            "device-1",
            pending("d-state"),
        )
        .await
        .unwrap();
        match b.callback("d-state").await.unwrap() {
            Some(Arrival::Device(leg)) => {
                assert_eq!(
                    (leg.device_login.as_str(), leg.connector.as_str()),
                    ("device-1", "corp")
                );
            }
            _ => panic!("the state belongs to a device sign-in"),
        }
        assert!(a.callback("d-state").await.unwrap().is_none(), "once");
        let store = a.store.clone();
        let left = store::blocking(move || store.sso_logins_pending("127.0.0.1"))
            .await
            .unwrap();
        assert_eq!(left.total, 0, "the leg is forgotten once it arrived");
    }

    #[test]
    fn only_loopback_redirects_are_accepted() {
        for good in [
            "http://127.0.0.1:4000/callback",
            "http://[::1]:4000/callback",
            "http://localhost:4000/callback",
            "http://LOCALHOST:1/",
        ] {
            assert!(loopback_redirect(good).is_ok(), "{good}");
        }
        for bad in [
            "https://127.0.0.1:4000/callback",
            "http://127.0.0.1/callback",
            "http://127.0.0.2:4000/callback",
            "http://evil.example.com:4000/callback",
            "http://localhost.evil.example.com:4000/",
            "http://127.0.0.1.nip.io:4000/",
            "http://user:pw@127.0.0.1:4000/",
            "http://127.0.0.1:4000/#frag",
            "javascript:alert(1)",
            "//127.0.0.1:4000/",
            "",
        ] {
            assert!(loopback_redirect(bad).is_err(), "{bad}");
        }
    }
}
