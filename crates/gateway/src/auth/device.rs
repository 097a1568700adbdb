//! Device sign-in (RFC 8628) for machines without a browser.
//!
//! 1. `start`: the machine sends its certificate request and host name; the
//!    gateway answers with a secret device code (kept only hashed), a short
//!    user code and the page where a person enters it.
//! 2. The person enters the user code on any device. The code works once:
//!    the browser goes on to the identity provider through the connector's
//!    ordinary authorization-code flow (so any provider works), and comes
//!    back to the gateway's callback.
//! 3. The gateway shows which machine is asking (host name and key
//!    fingerprint, which the machine shows too) and who signed in, with
//!    Approve and Deny buttons carrying a single-use token.
//! 4. The machine polls with its device code at the interval the gateway
//!    set; a poll too soon is told `slow_down` and the interval grows by
//!    five seconds (RFC 8628 §3.5). Once approved, one poll gets the
//!    certificate and the sign-in is gone.
//!
//! Every step is a compare-and-swap on the record in the store, so the
//! steps may reach different replicas and of two racing requests only one
//! moves a sign-in on.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_api::Identity;
use postern_api::wire::{DeviceStartResponse, LoginResponse, key_fingerprint};
use rand::RngExt;
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};

use super::sso::{StartError, hash, now_ms, random_token, room_for_one_more};
use crate::store::{self, DeviceLoginRecord, Store, StoreError};

/// Sign-ins in progress at once; strangers can start them.
const MAX_PENDING: usize = 1_000;
/// Sign-ins in progress from one source address.
const MAX_PENDING_PER_SOURCE: usize = 20;
/// Longest host name accepted (a DNS name's limit).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// What `slow_down` adds to a sign-in's interval (RFC 8628 §3.5).
const SLOW_DOWN_STEP: u64 = 5;
/// How much sooner than the interval a poll may arrive (network jitter)
/// before it counts as too fast.
const POLL_SLACK_MS: i64 = 250;
/// The RFC 8628 §6.1 alphabet: consonants only, so no words are spelled
/// and no letters look alike.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code (20^8, about 34 bits).
const USER_CODE_LEN: usize = 8;
/// Attempts to draw a user code that is not in use.
const USER_CODE_DRAWS: usize = 5;

/// Where a device sign-in is.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    /// Waits for the person to enter the user code.
    Waiting,
    /// The code was entered; the person is at the identity provider.
    AtProvider,
    /// Signed in; waits for Approve or Deny.
    Confirming {
        identity: Box<Identity>,
        /// SHA-256 of the Approve/Deny token, hex.
        token_hash: String,
    },
    /// Approved: the certificate waits for the machine's next poll.
    Approved { response: Box<LoginResponse> },
    /// Denied in the browser or refused by the gateway.
    Denied { message: String },
}

/// A device sign-in's data as stored (the record's body).
#[derive(Clone, Serialize, Deserialize)]
struct DeviceLogin {
    connector: String,
    csr_pem: String,
    hostname: String,
    fingerprint: String,
    /// Seconds between polls; grows at each `slow_down`.
    interval: u64,
    /// When the machine last polled (ms since the epoch).
    last_poll_ms: Option<i64>,
    stage: Stage,
}

impl DeviceLogin {
    fn of(record: &DeviceLoginRecord) -> Result<DeviceLogin, StoreError> {
        Ok(serde_json::from_str(&record.body)?)
    }

    fn body(&self) -> Result<String, StoreError> {
        Ok(serde_json::to_string(self)?)
    }
}

/// The machine a sign-in is for, as the person approving it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The host name the machine sent.
    pub hostname: String,
    /// The fingerprint of its key ([`key_fingerprint`]).
    pub fingerprint: String,
}

/// Why a poll got no certificate (RFC 8628 §3.5).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// Not approved yet.
    #[error("the sign-in has not been approved yet")]
    Pending,
    /// Polled before the interval passed; the new interval in seconds.
    #[error("polling too often; wait {0} seconds between polls")]
    SlowDown(u64),
    /// Denied or refused; the sentence says why.
    #[error("{0}")]
    Denied(String),
    /// Expired, used, or never issued.
    #[error(
        "the sign-in code expired or was already used; run `postern login --sso --device` again"
    )]
    Expired,
    /// The store failed (the gateway log has why).
    #[error("the gateway cannot reach its store; try again in a minute")]
    Unavailable,
}

/// Why a typed user code was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// No sign-in waits for this code (a typo, a guess, or expired).
    #[error(
        "this code is not valid: check it against the one your terminal shows, or start again \
         with `postern login --sso --device` if it expired"
    )]
    Unknown,
    /// The code was entered before.
    #[error(
        "this code was already used; start again with `postern login --sso --device` on the machine"
    )]
    Used,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an Approve or Deny was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    /// Unknown sign-in, wrong token, or already decided.
    #[error(
        "this confirmation is not valid: it was already used, or the sign-in expired; start \
         again with `postern login --sso --device` on the machine"
    )]
    Invalid,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signed-in person's pending decision, read back for Approve or Deny.
pub struct Confirming {
    /// Who signed in at the provider.
    pub identity: Identity,
    /// The machine's certificate request.
    pub csr_pem: String,
    /// The record as read, which the decision replaces if unchanged.
    body: String,
}

/// What the person decided.
pub enum Decision {
    /// Approved: the certificate for the machine's next poll.
    Approved(LoginResponse),
    /// Denied or refused, with the sentence the machine prints.
    Denied(String),
}

/// Settings of device sign-ins (`sso:` in `gateway.yaml`).
#[derive(Clone, Debug)]
pub struct DeviceSettings {
    /// How long the codes live.
    pub ttl: Duration,
    /// Seconds between polls at first.
    pub interval: Duration,
    /// The page where people enter codes (`<public_url>/v1/login/device`).
    pub verification_uri: String,
}

/// Device sign-ins in progress, in the store.
pub struct DeviceLogins {
    store: Arc<dyn Store>,
    settings: DeviceSettings,
}

/// The fingerprint of the key in a certificate request; refuses a request
/// that does not parse (before anyone signs in for it).
pub fn csr_fingerprint(csr_pem: &str) -> Result<String, String> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| format!("the certificate request was refused: {e}"))?;
    Ok(key_fingerprint(&csr.public_key.subject_public_key_info()))
}

/// A user code as people type it: any case, with or without the dash or
/// spaces; `None` when it cannot be one.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// A user code as shown: `BCDF-GHJK`.
fn shown_user_code(code: &str) -> String {
    let (a, b) = code.split_at(USER_CODE_LEN / 2);
    format!("{a}-{b}")
}

fn new_user_code() -> String {
    let mut rng = rand::rng();
    (0..USER_CODE_LEN)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())]))
        .collect()
}

impl DeviceLogins {
    /// The sign-ins kept in `store`.
    pub fn new(store: Arc<dyn Store>, settings: DeviceSettings) -> Self {
        DeviceLogins { store, settings }
    }

    /// Starts a sign-in for the machine that sent `csr_pem` (already
    /// checked: `fingerprint` is its key's).
    pub async fn start(
        &self,
        source: IpAddr,
        connector: &str,
        csr_pem: String,
        fingerprint: String,
        hostname: String,
    ) -> Result<DeviceStartResponse, StartError> {
        let source = source.to_string();
        let store = self.store.clone();
        let counted = source.clone();
        let pending = store::blocking(move || store.device_logins_pending(&counted)).await?;
        room_for_one_more(
            &pending,
            MAX_PENDING,
            MAX_PENDING_PER_SOURCE,
            self.settings.ttl,
        )?;
        let interval = self.settings.interval.as_secs();
        let body = DeviceLogin {
            connector: connector.to_owned(),
            csr_pem,
            hostname,
            fingerprint,
            interval,
            last_poll_ms: None,
            stage: Stage::Waiting,
        }
        .body()?;
        let device_code = random_token();
        let mut record = DeviceLoginRecord {
            id: hash(&device_code),
            user_code: String::new(),
            source,
            created_ms: now_ms(),
            body,
        };
        let ttl = self.settings.ttl;
        let store = self.store.clone();
        let user_code = store::blocking(move || {
            for _ in 0..USER_CODE_DRAWS {
                record.user_code = new_user_code();
                if store.put_device_login(&record, ttl)? {
                    return Ok(Some(record.user_code));
                }
            }
            Ok(None)
        })
        .await?
        .ok_or_else(|| StoreError::Unavailable("no free user code was drawn".into()))?;
        let user_code = shown_user_code(&user_code);
        let uri = &self.settings.verification_uri;
        Ok(DeviceStartResponse {
            device_code,
            verification_uri_complete: format!("{uri}?user_code={user_code}"),
            verification_uri: uri.clone(),
            user_code,
            expires_in: self.settings.ttl.as_secs(),
            interval,
        })
    }

    /// Moves the sign-in at `id` on with `change`, if it is still as read
    /// (compare and swap); `change` returns `None` to leave it.
    async fn change<T: Send + 'static>(
        &self,
        id: &str,
        change: impl Fn(&mut DeviceLogin) -> Option<T> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        let store = self.store.clone();
        let id = id.to_owned();
        store::blocking(move || {
            // A concurrent step (a poll, the browser) may win the swap;
            // read again and decide again.
            for _ in 0..5 {
                let Some(record) = store.device_login(&id)? else {
                    return Ok(None);
                };
                let mut login = DeviceLogin::of(&record)?;
                let Some(out) = change(&mut login) else {
                    return Ok(None);
                };
                if store.replace_device_login(&id, &record.body, &login.body()?)? {
                    return Ok(Some(out));
                }
            }
            Err(StoreError::Unavailable(
                "a device sign-in kept changing under a step".into(),
            ))
        })
        .await
    }

    /// The person typed `user_code`: the sign-in it belongs to moves on to
    /// the provider, once. Returns its id and connector.
    pub async fn enter(&self, user_code: &str) -> Result<(String, String), EnterError> {
        let code = normalize_user_code(user_code).ok_or(EnterError::Unknown)?;
        let store = self.store.clone();
        let record = store::blocking(move || store.device_login_by_user_code(&code))
            .await?
            .ok_or(EnterError::Unknown)?;
        let entered = self
            .change(&record.id, |login| {
                matches!(login.stage, Stage::Waiting).then(|| {
                    login.stage = Stage::AtProvider;
                    login.connector.clone()
                })
            })
            .await?;
        match entered {
            Some(connector) => Ok((record.id, connector)),
            None => Err(EnterError::Used),
        }
    }

    /// The person signed in as `identity`: the sign-in waits for their
    /// decision. Returns the machine and the Approve/Deny token; `None`
    /// when the sign-in expired meanwhile.
    pub async fn signed_in(
        &self,
        id: &str,
        identity: Identity,
    ) -> Result<Option<(Machine, String)>, StoreError> {
        let token = random_token();
        let token_hash = hash(&token);
        let machine = self
            .change(id, move |login| {
                matches!(login.stage, Stage::AtProvider).then(|| {
                    login.stage = Stage::Confirming {
                        identity: Box::new(identity.clone()),
                        token_hash: token_hash.clone(),
                    };
                    Machine {
                        hostname: login.hostname.clone(),
                        fingerprint: login.fingerprint.clone(),
                    }
                })
            })
            .await?;
        Ok(machine.map(|m| (m, token)))
    }

    /// Ends a sign-in that failed before the person decided (the provider
    /// or the gateway refused it), so the machine stops with `message`.
    pub async fn refuse(&self, id: &str, message: String) {
        let refused = self
            .change(id, move |login| {
                matches!(login.stage, Stage::AtProvider | Stage::Waiting).then(|| {
                    login.stage = Stage::Denied {
                        message: message.clone(),
                    };
                })
            })
            .await;
        if let Err(e) = refused {
            // The machine sees the code expire instead.
            tracing::warn!(error = %e, "a refused device sign-in could not be recorded");
        }
    }

    /// The decision `token` belongs to, if it is still open.
    pub async fn confirming(&self, id: &str, token: &str) -> Result<Confirming, ConfirmError> {
        let store = self.store.clone();
        let (id, token_hash) = (id.to_owned(), hash(token));
        store::blocking(move || {
            let Some(record) = store.device_login(&id)? else {
                return Ok(Err(ConfirmError::Invalid));
            };
            let login = DeviceLogin::of(&record)?;
            Ok(match login.stage {
                // Hashes are compared, so timing says nothing about the token.
                Stage::Confirming {
                    identity,
                    token_hash: stored,
                } if stored == token_hash => Ok(Confirming {
                    identity: *identity,
                    csr_pem: login.csr_pem,
                    body: record.body,
                }),
                _ => Err(ConfirmError::Invalid),
            })
        })
        .await?
    }

    /// Records the decision on the sign-in `confirming` was read from;
    /// fails when another decision came first (a replayed token).
    pub async fn decide(
        &self,
        id: &str,
        confirming: Confirming,
        decision: Decision,
    ) -> Result<(), ConfirmError> {
        let mut login: DeviceLogin =
            serde_json::from_str(&confirming.body).map_err(StoreError::from)?;
        login.stage = match decision {
            Decision::Approved(response) => Stage::Approved {
                response: Box::new(response),
            },
            Decision::Denied(message) => Stage::Denied { message },
        };
        let new = login.body()?;
        let store = self.store.clone();
        let id = id.to_owned();
        let old = confirming.body;
        if store::blocking(move || store.replace_device_login(&id, &old, &new)).await? {
            Ok(())
        } else {
            Err(ConfirmError::Invalid)
        }
    }

    /// A poll with `device_code`: the certificate once approved (exactly
    /// once), else why not.
    pub async fn poll(&self, device_code: &str) -> Result<LoginResponse, PollError> {
        let id = hash(device_code);
        let now = now_ms();
        /// What a poll found, before the sign-in is taken.
        enum Found {
            Wait(PollError),
            Final,
        }
        let found = self
            .change(&id, move |login| {
                let due = login.last_poll_ms.map_or(i64::MIN, |last| {
                    last + 1000 * login.interval as i64 - POLL_SLACK_MS
                });
                login.last_poll_ms = Some(now);
                if now < due {
                    login.interval += SLOW_DOWN_STEP;
                    return Some(Found::Wait(PollError::SlowDown(login.interval)));
                }
                Some(match login.stage {
                    Stage::Waiting | Stage::AtProvider | Stage::Confirming { .. } => {
                        Found::Wait(PollError::Pending)
                    }
                    Stage::Approved { .. } | Stage::Denied { .. } => Found::Final,
                })
            })
            .await;
        match found {
            Ok(Some(Found::Wait(why))) => return Err(why),
            Ok(Some(Found::Final)) => {}
            Ok(None) => return Err(PollError::Expired),
            Err(e) => {
                tracing::error!(error = %e, "a device sign-in could not be polled");
                return Err(PollError::Unavailable);
            }
        }
        // Of two polls that found it decided, one takes it.
        let store = self.store.clone();
        let taken = store::blocking(move || store.take_device_login(&id))
            .await
            .and_then(|r| r.map(|r| DeviceLogin::of(&r)).transpose());
        match taken {
            Ok(Some(DeviceLogin {
                stage: Stage::Approved { response },
                ..
            })) => Ok(*response),
            Ok(Some(DeviceLogin {
                stage: Stage::Denied { message },
                ..
            })) => Err(PollError::Denied(message)),
            Ok(_) => Err(PollError::Expired),
            Err(e) => {
                tracing::error!(error = %e, "a device sign-in could not be taken");
                Err(PollError::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn response() -> LoginResponse {
        LoginResponse {
            cert_pem: "CERT".into(),
            identity: identity(),
        }
    }

    fn identity() -> Identity {
        Identity {
            username: "dana".into(),
            roles: vec!["dba".into()],
            traits: Default::default(),
            expires_unix: 0,
        }
    }

    /// Two replicas' views of one store.
    fn replicas(
        dir: &tempfile::TempDir,
        ttl: Duration,
        interval: u64,
    ) -> (DeviceLogins, DeviceLogins) {
        let open = || {
            DeviceLogins::new(
                Arc::new(crate::store::SqliteStore::open(dir.path()).unwrap()),
                DeviceSettings {
                    ttl,
                    interval: Duration::from_secs(interval),
                    verification_uri: "https://gw.example.com:3080/v1/login/device".into(),
                },
            )
        };
        (open(), open())
    }

    async fn start(logins: &DeviceLogins) -> DeviceStartResponse {
        logins
            .start(
                Ipv4Addr::LOCALHOST.into(),
                "corp",
                "CSR".into(),
                "ab12 cd34".into(),
                "build-7".into(),
            )
            .await
            .unwrap()
    }

    #[test]
    fn user_codes_are_typed_loosely_but_only_from_the_alphabet() {
        let code = new_user_code();
        assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize_user_code("bcdf-ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code(" BCDF GHJK").as_deref(),
            Some("BCDFGHJK")
        );
        for bad in ["BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1", ""] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
        assert_eq!(shown_user_code("BCDFGHJK"), "BCDF-GHJK");
    }

    #[tokio::test]
    async fn an_approved_sign_in_is_polled_once_across_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(&dir, Duration::from_secs(60), 1);
        let started = start(&a).await;
        assert_eq!(started.interval, 1);
        assert_eq!(started.expires_in, 60);
        assert!(
            started
                .verification_uri_complete
                .ends_with(&format!("?user_code={}", started.user_code))
        );
        assert_eq!(
            a.poll("guessed").await.err(),
            Some(PollError::Expired),
            "a device code nobody was given finds nothing"
        );

        let (id, connector) = b.enter(&started.user_code.to_lowercase()).await.unwrap();
        assert_eq!(connector, "corp");
        assert!(matches!(
            a.enter(&started.user_code).await,
            Err(EnterError::Used)
        ));
        let (machine, token) = a.signed_in(&id, identity()).await.unwrap().unwrap();
        assert_eq!(machine.hostname, "build-7");
        assert_eq!(machine.fingerprint, "ab12 cd34");

        assert!(matches!(
            b.confirming(&id, "forged").await,
            Err(ConfirmError::Invalid)
        ));
        let confirming = b.confirming(&id, &token).await.unwrap();
        assert_eq!(confirming.identity.username, "dana");
        assert_eq!(confirming.csr_pem, "CSR");
        let replay = a.confirming(&id, &token).await.unwrap();
        b.decide(&id, confirming, Decision::Approved(response()))
            .await
            .unwrap();
        assert!(
            matches!(
                a.decide(&id, replay, Decision::Denied("no".into())).await,
                Err(ConfirmError::Invalid)
            ),
            "a token decides once"
        );
        assert!(matches!(
            a.confirming(&id, &token).await,
            Err(ConfirmError::Invalid)
        ));

        assert_eq!(a.poll(&started.device_code).await.unwrap().cert_pem, "CERT");
        assert_eq!(
            b.poll(&started.device_code).await.err(),
            Some(PollError::Expired),
            "the certificate is handed out once"
        );
    }

    #[tokio::test]
    async fn polling_sooner_than_the_interval_slows_the_device_down() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(&dir, Duration::from_secs(60), 1);
        let started = start(&a).await;
        assert_eq!(
            a.poll(&started.device_code).await.err(),
            Some(PollError::Pending)
        );
        assert_eq!(
            b.poll(&started.device_code).await.err(),
            Some(PollError::SlowDown(6)),
            "the interval grows by five seconds, on every replica"
        );
        assert_eq!(
            a.poll(&started.device_code).await.err(),
            Some(PollError::SlowDown(11))
        );
    }

    #[tokio::test]
    async fn a_denied_or_refused_sign_in_ends_the_poll_with_its_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(&dir, Duration::from_secs(60), 1);
        let started = start(&a).await;
        let (id, _) = a.enter(&started.user_code).await.unwrap();
        let (_, token) = b.signed_in(&id, identity()).await.unwrap().unwrap();
        let confirming = a.confirming(&id, &token).await.unwrap();
        a.decide(
            &id,
            confirming,
            Decision::Denied("denied in the browser".into()),
        )
        .await
        .unwrap();
        assert_eq!(
            b.poll(&started.device_code).await.err(),
            Some(PollError::Denied("denied in the browser".into()))
        );

        let second = start(&a).await;
        let (id, _) = a.enter(&second.user_code).await.unwrap();
        b.refuse(&id, "no role".into()).await;
        assert!(b.signed_in(&id, identity()).await.unwrap().is_none());
        assert_eq!(
            a.poll(&second.device_code).await.err(),
            Some(PollError::Denied("no role".into()))
        );
    }

    #[tokio::test]
    async fn codes_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = replicas(&dir, Duration::from_millis(300), 1);
        let started = start(&a).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            a.enter(&started.user_code).await,
            Err(EnterError::Unknown)
        ));
        assert_eq!(
            a.poll(&started.device_code).await.err(),
            Some(PollError::Expired)
        );
    }

    #[tokio::test]
    async fn sign_ins_in_progress_are_limited_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = replicas(&dir, Duration::from_secs(60), 1);
        for _ in 0..MAX_PENDING_PER_SOURCE {
            start(&a).await;
        }
        let busy = a
            .start(
                Ipv4Addr::LOCALHOST.into(),
                "corp",
                "CSR".into(),
                "fp".into(),
                "h".into(),
            )
            .await;
        assert!(matches!(busy, Err(StartError::Busy(_))), "the 21st waits");
    }
}
