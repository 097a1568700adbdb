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
//! The state lives in memory: with several replicas a login must stay on one
//! (as the cancel map does today); it moves to the shared store with them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use postern_api::wire::{LoginResponse, sso_challenge};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use super::oidc::OidcPending;

/// How long a login may stay at the identity provider.
pub const PENDING_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a one-time code may wait for its exchange.
pub const CODE_TTL: Duration = Duration::from_secs(2 * 60);
/// Logins in progress at once; unauthenticated callers must not fill memory
/// (each holds at most about [`MAX_CSR_BYTES`] plus a redirect).
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
const MAX_FAILED_EXCHANGES: u8 = 5;

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
}

/// Too many logins in progress, in all or from one source; the oldest of
/// them expires after the given time.
#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are in progress; try again in a few minutes")]
pub struct Busy(pub Duration);

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

enum Stage {
    AtProvider(OidcPending),
    Verifying,
    Done {
        code_hash: [u8; 32],
        response: Box<LoginResponse>,
        at: Instant,
    },
}

struct Login {
    source: IpAddr,
    connector: String,
    client_redirect: Url,
    client_challenge: String,
    csr_pem: String,
    created: Instant,
    stage: Stage,
    failed_exchanges: u8,
}

impl Login {
    fn expired(&self, now: Instant) -> bool {
        match &self.stage {
            Stage::Done { at, .. } => now.duration_since(*at) > CODE_TTL,
            _ => now.duration_since(self.created) > PENDING_TTL,
        }
    }
}

#[derive(Default)]
struct Inner {
    logins: HashMap<String, Login>,
    /// `state` sent to the provider -> request id.
    by_state: HashMap<String, String>,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.logins.retain(|_, login| !login.expired(now));
        let logins = &self.logins;
        self.by_state.retain(|_, id| logins.contains_key(id));
    }
}

/// Logins in progress.
#[derive(Default)]
pub struct SsoLogins {
    inner: Mutex<Inner>,
}

/// A random, URL-safe token with 256 bits of entropy.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

impl SsoLogins {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a login that was just sent to the provider; returns its id.
    pub fn start(
        &self,
        source: IpAddr,
        connector: &str,
        client_redirect: Url,
        client_challenge: String,
        csr_pem: String,
        oidc: OidcPending,
    ) -> Result<String, Busy> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let from_source = || inner.logins.values().filter(|l| l.source == source);
        let full = if inner.logins.len() >= MAX_PENDING {
            inner.logins.values().map(|l| l.created).min()
        } else if from_source().count() >= MAX_PENDING_PER_SOURCE {
            from_source().map(|l| l.created).min()
        } else {
            None
        };
        if let Some(oldest) = full {
            return Err(Busy(PENDING_TTL.saturating_sub(now.duration_since(oldest))));
        }
        let request_id = random_token();
        inner
            .by_state
            .insert(oidc.state.clone(), request_id.clone());
        inner.logins.insert(
            request_id.clone(),
            Login {
                source,
                connector: connector.to_owned(),
                client_redirect,
                client_challenge,
                csr_pem,
                created: now,
                stage: Stage::AtProvider(oidc),
                failed_exchanges: 0,
            },
        );
        Ok(request_id)
    }

    /// The login the provider's redirect belongs to, by its `state`; `None`
    /// for an unknown, used or expired state. Each state works once.
    pub fn callback(&self, state: &str) -> Option<CallbackLogin> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let request_id = inner.by_state.remove(state)?;
        let login = inner.logins.get_mut(&request_id)?;
        let Stage::AtProvider(oidc) = std::mem::replace(&mut login.stage, Stage::Verifying) else {
            return None;
        };
        Some(CallbackLogin {
            request_id,
            connector: login.connector.clone(),
            client_redirect: login.client_redirect.clone(),
            csr_pem: login.csr_pem.clone(),
            oidc,
        })
    }

    /// Stores the signed certificate; returns the one-time code for it.
    pub fn complete(&self, request_id: &str, response: LoginResponse) -> Option<String> {
        let mut inner = self.lock();
        let login = inner.logins.get_mut(request_id)?;
        let code = random_token();
        login.stage = Stage::Done {
            code_hash: hash(&code),
            response: Box::new(response),
            at: Instant::now(),
        };
        Some(code)
    }

    /// Forgets a login that failed.
    pub fn abandon(&self, request_id: &str) {
        self.lock().logins.remove(request_id);
    }

    /// Trades a one-time code and the verifier for the certificate, once.
    pub fn exchange(
        &self,
        request_id: &str,
        code: &str,
        verifier: &str,
    ) -> Result<LoginResponse, ExchangeError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let login = inner
            .logins
            .get_mut(request_id)
            .ok_or(ExchangeError::Expired)?;
        // Hashes are compared, so timing says nothing about the secrets.
        let good = match &login.stage {
            Stage::Done { code_hash, .. } => {
                *code_hash == hash(code)
                    && hash(&login.client_challenge) == hash(&sso_challenge(verifier))
            }
            _ => false,
        };
        if !good {
            login.failed_exchanges += 1;
            if login.failed_exchanges >= MAX_FAILED_EXCHANGES {
                inner.logins.remove(request_id);
            }
            return Err(ExchangeError::Mismatch);
        }
        match inner.logins.remove(request_id).map(|l| l.stage) {
            Some(Stage::Done { response, .. }) => Ok(*response),
            _ => Err(ExchangeError::Expired),
        }
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

    fn started(logins: &SsoLogins, state: &str, verifier: &str) -> String {
        logins
            .start(
                Ipv4Addr::LOCALHOST.into(),
                "corp",
                loopback_redirect("http://127.0.0.1:4000/callback").unwrap(),
                sso_challenge(verifier),
                "CSR".into(),
                pending(state),
            )
            .unwrap()
    }

    #[test]
    fn a_code_is_exchanged_once_with_its_verifier() {
        let logins = SsoLogins::default();
        let id = started(&logins, "state-1", "verifier");
        assert_eq!(
            logins.exchange(&id, "guess", "verifier").unwrap_err(),
            ExchangeError::Mismatch,
            "no code before the provider answered"
        );
        let callback = logins.callback("state-1").expect("known state");
        assert_eq!(callback.request_id, id);
        assert!(logins.callback("state-1").is_none(), "a state works once");
        let code = logins.complete(&id, response()).unwrap();
        assert_eq!(
            logins.exchange(&id, "forged", "verifier").unwrap_err(),
            ExchangeError::Mismatch
        );
        assert_eq!(
            logins.exchange(&id, &code, "other verifier").unwrap_err(),
            ExchangeError::Mismatch
        );
        assert_eq!(
            logins.exchange(&id, &code, "verifier").unwrap().cert_pem,
            "CERT"
        );
        assert_eq!(
            logins.exchange(&id, &code, "verifier").unwrap_err(),
            ExchangeError::Expired,
            "a code works once"
        );
    }

    #[test]
    fn unknown_states_and_repeated_failures_end_a_login() {
        let logins = SsoLogins::default();
        assert!(logins.callback("never-issued").is_none());
        let id = started(&logins, "s", "v");
        logins.callback("s").unwrap();
        let code = logins.complete(&id, response()).unwrap();
        for _ in 0..MAX_FAILED_EXCHANGES {
            assert!(logins.exchange(&id, "forged", "v").is_err());
        }
        assert_eq!(
            logins.exchange(&id, &code, "v").unwrap_err(),
            ExchangeError::Expired,
            "too many wrong codes drop the login"
        );
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
