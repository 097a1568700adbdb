//! The active session: certificate, key and identity of a profile, reloaded
//! when the profile changes on disk (a re-login from the CLI or the app).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_api::{ALPN_TUNNEL, Identity};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;
use crate::home::Home;
use crate::keystore::load_key;
use crate::profile::Profile;
use crate::tls::Pinning;

/// A usable session.
pub struct ActiveSession {
    /// The profile it came from.
    pub profile: Profile,
    /// Who the gateway will see.
    pub identity: Identity,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    tunnel_tls: Arc<ClientConfig>,
}

impl ActiveSession {
    /// Loads the session of a profile (blocking: it may ask the OS keychain).
    pub fn load(home: &Home, profile: Profile) -> Result<Self, ClientError> {
        let (Some(cert_pem), Some(identity)) = (&profile.cert_pem, &profile.identity) else {
            return Err(ClientError::NotLoggedIn);
        };
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Corrupt {
                what: "the session certificate".into(),
                reason: e.to_string(),
            })?;
        let key_pem = load_key(home, &profile.name, profile.key_store)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| ClientError::Corrupt {
                what: "the stored private key".into(),
                reason: "no key found".into(),
            })?;
        let tunnel_tls = Pinning::new(&profile.ca_pin).client_config(
            &[ALPN_TUNNEL],
            Some((chain.clone(), key.clone_key())),
            true,
        )?;
        Ok(ActiveSession {
            identity: identity.clone(),
            profile,
            chain,
            key,
            tunnel_tls,
        })
    }

    /// When the certificate stops working.
    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.identity.expires_unix.max(0) as u64)
    }

    /// Errors with [`ClientError::SessionExpired`] once the certificate has expired.
    pub fn ensure_valid(&self) -> Result<(), ClientError> {
        if SystemTime::now() >= self.expires() {
            return Err(ClientError::SessionExpired);
        }
        Ok(())
    }

    /// Certificate chain and key for TLS client authentication.
    pub fn client_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }

    /// TLS config for tunnel connections (reused, so TLS resumption works).
    pub fn tunnel_tls(&self) -> Arc<ClientConfig> {
        self.tunnel_tls.clone()
    }
}

/// Gives the tunnel the current session of a profile, reloading it only when
/// the profile file changed.
pub struct SessionSource {
    home: Home,
    profile: String,
    cached: Mutex<Option<(SystemTime, Arc<ActiveSession>)>>,
}

impl SessionSource {
    /// Follows `profile` under `home`.
    pub fn new(home: Home, profile: String) -> Self {
        SessionSource {
            home,
            profile,
            cached: Mutex::new(None),
        }
    }

    /// Follows the profile named, or the current one: [`ClientError::UnknownProfile`]
    /// for a name that has no profile, [`ClientError::NotLoggedIn`] without one.
    pub fn resolve(home: Home, profile: Option<&str>) -> Result<Self, ClientError> {
        let name = home.resolve(profile)?.name;
        Ok(SessionSource::new(home, name))
    }

    /// The profile followed.
    pub fn profile_name(&self) -> &str {
        &self.profile
    }

    /// The current, unexpired session.
    pub async fn current(&self) -> Result<Arc<ActiveSession>, ClientError> {
        let path = self.home.profile_path(&self.profile);
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|_| ClientError::NotLoggedIn)?;
        let cached = self.cached.lock().unwrap().clone();
        let session = match cached {
            Some((at, session)) if at == modified => session,
            _ => {
                let home = self.home.clone();
                let name = self.profile.clone();
                let session = tokio::task::spawn_blocking(move || {
                    let profile = home.load(&name)?;
                    ActiveSession::load(&home, profile)
                })
                .await
                .map_err(|e| ClientError::Crypto(e.to_string()))??;
                let session = Arc::new(session);
                *self.cached.lock().unwrap() = Some((modified, session.clone()));
                session
            }
        };
        session.ensure_valid()?;
        Ok(session)
    }
}
