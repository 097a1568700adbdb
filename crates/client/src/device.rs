//! Device sign-in (RFC 8628), for a machine without a browser.
//!
//! The client makes its key pair and asks the gateway for a device code
//! (`POST /v1/login/device/start` with its certificate request and host
//! name). A person opens the address it shows on any device, enters the
//! short code, signs in at the identity provider and approves this machine,
//! recognised by its host name and key fingerprint. Meanwhile the client
//! polls (`POST /v1/login/device/token`) at the interval the gateway set,
//! slower whenever told `slow_down`, until the certificate for its key
//! arrives, the sign-in is denied or the code expires. The private key
//! never leaves the machine; nothing is written until the certificate is
//! in hand.

use std::time::Duration;

use postern_api::wire::{DeviceStartRequest, DeviceTokenRequest, key_fingerprint};
use rcgen::PublicKeyData;

use crate::api::DevicePoll;
use crate::error::ClientError;
use crate::home::Home;
use crate::keystore::KeyStoreKind;
use crate::login::{begin, new_key_and_csr, save_session};
use crate::profile::Profile;
use crate::sso::{check_sign_in_url, only_connector};

/// What RFC 8628 §3.5 adds to the interval at each `slow_down` when the
/// gateway names no new one.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// A device sign-in.
pub struct DeviceLogin {
    /// Gateway `host:port`.
    pub gateway: String,
    /// Connector name; `None` when the gateway has exactly one.
    pub connector: Option<String>,
    /// Explicit CA pin (`sha256:...`); overrides a stored one.
    pub ca_pin: Option<String>,
    /// Where to keep the private key.
    pub key_store: KeyStoreKind,
    /// Profile name (default: from the gateway address).
    pub profile: Option<String>,
}

/// What the person must be shown to approve this machine.
#[derive(Clone, Debug)]
pub struct DevicePrompt {
    /// The code to enter, e.g. `BCDF-GHJK`.
    pub user_code: String,
    /// The page where it is entered.
    pub verification_uri: String,
    /// The same page with the code filled in (for a QR code).
    pub verification_uri_complete: String,
    /// This machine's name, as the approval page shows it.
    pub hostname: String,
    /// This machine's key fingerprint, as the approval page shows it.
    pub fingerprint: String,
    /// How long the code lives.
    pub expires_in: Duration,
}

/// This machine's host name, as sent to the gateway.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Signs in through another device and saves the session as the current
/// profile. `trust` decides about a gateway CA seen for the first time;
/// `show` gets what to tell the person once the sign-in has started.
pub async fn login_device(
    home: &Home,
    req: DeviceLogin,
    trust: impl FnOnce(&str) -> bool,
    show: impl FnOnce(&DevicePrompt),
) -> Result<Profile, ClientError> {
    let (name, pin, client) = begin(
        home,
        &req.gateway,
        req.profile.as_deref(),
        req.ca_pin.as_deref(),
        trust,
    )
    .await?;
    let connector = match req.connector {
        Some(c) => c,
        None => only_connector(&client).await?,
    };
    let (key, csr_pem) = new_key_and_csr()?;
    let fingerprint = key_fingerprint(&key.subject_public_key_info());
    let hostname = hostname();
    let started = client
        .device_start(&DeviceStartRequest {
            connector,
            csr_pem,
            hostname: hostname.clone(),
        })
        .await?;
    check_sign_in_url(&started.verification_uri)?;
    check_sign_in_url(&started.verification_uri_complete)?;
    let expires_in = Duration::from_secs(started.expires_in);
    show(&DevicePrompt {
        user_code: started.user_code,
        verification_uri: started.verification_uri,
        verification_uri_complete: started.verification_uri_complete,
        hostname,
        fingerprint,
        expires_in,
    });

    let poll = DeviceTokenRequest {
        device_code: started.device_code,
    };
    let mut interval = Duration::from_secs(started.interval.max(1));
    // The gateway says when the code expired; should it never answer so,
    // the client stops on its own a little later, never hanging.
    let give_up = expires_in + interval * 2;
    let polling = async {
        loop {
            // RFC 8628 §3.5: wait the interval before every poll.
            tokio::time::sleep(interval).await;
            match client.device_token(&poll).await? {
                DevicePoll::Approved(response) => return Ok(response),
                DevicePoll::Pending => {}
                DevicePoll::SlowDown(Some(secs)) => interval = Duration::from_secs(secs.max(1)),
                DevicePoll::SlowDown(None) => interval += SLOW_DOWN_STEP,
                DevicePoll::Denied(message) => return Err(ClientError::LoginRefused(message)),
                DevicePoll::Expired => return Err(ClientError::DeviceCodeExpired),
            }
        }
    };
    let response = tokio::time::timeout(give_up, polling)
        .await
        .map_err(|_| ClientError::DeviceCodeExpired)??;
    save_session(home, &name, &req.gateway, pin, req.key_store, key, response)
}
