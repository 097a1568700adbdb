//! The gateway's HTTPS API, over TLS pinned to the gateway's CA.

use std::sync::Arc;

use postern_api::Identity;
use postern_api::wire::{
    ApiError, Catalog, Connectors, DeviceStartRequest, DeviceStartResponse, DeviceTokenError,
    DeviceTokenRequest, LocalLoginRequest, LoginResponse, Ping, SsoExchangeRequest,
    SsoStartRequest, SsoStartResponse, device_error, error_kind,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::session::ActiveSession;
use crate::tls::{Pinning, split_addr};

/// What one poll of a device sign-in found.
#[derive(Debug)]
pub enum DevicePoll {
    /// Approved: the certificate.
    Approved(LoginResponse),
    /// Not decided yet.
    Pending,
    /// Polled too soon; the new interval in seconds, when the gateway said.
    SlowDown(Option<u64>),
    /// Denied or refused, with the gateway's sentence.
    Denied(String),
    /// The codes expired (or were used).
    Expired,
}

/// A client for one gateway.
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    addr: String,
    pin: String,
    pinning: Arc<Pinning>,
}

impl GatewayClient {
    /// A client that trusts only `pin` and presents the session's certificate, if any.
    pub fn new(
        addr: &str,
        pin: &str,
        session: Option<&ActiveSession>,
    ) -> Result<Self, ClientError> {
        split_addr(addr)?;
        let pinning = Arc::new(Pinning::new(pin));
        let config =
            pinning.client_config(&[b"http/1.1"], session.map(|s| s.client_cert()), false)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*config).clone())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        Ok(GatewayClient {
            http,
            base: format!("https://{addr}"),
            addr: addr.to_owned(),
            pin: pin.to_owned(),
            pinning,
        })
    }

    /// For a logged-in profile.
    pub fn for_session(session: &ActiveSession) -> Result<Self, ClientError> {
        GatewayClient::new(
            &session.profile.gateway,
            &session.profile.ca_pin,
            Some(session),
        )
    }

    fn transport_error(&self, e: reqwest::Error) -> ClientError {
        match self.pinning.seen() {
            Some(got) if got != self.pin => ClientError::CaMismatch {
                addr: self.addr.clone(),
                pinned: self.pin.clone(),
                got,
            },
            _ => ClientError::Unreachable {
                addr: self.addr.clone(),
                reason: if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "connection failed (is the gateway running, and the address right?)".into()
                } else {
                    "the connection failed".into()
                },
            },
        }
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let resp = resp.map_err(|e| self.transport_error(e))?;
        if resp.status().is_success() {
            return resp.json::<T>().await.map_err(|e| {
                ClientError::Gateway(format!(
                    "the gateway sent an unexpected reply ({e}); is the client up to date?"
                ))
            });
        }
        let status = resp.status();
        match resp.json::<ApiError>().await {
            Ok(err) if err.kind == "no_session" => Err(ClientError::SessionExpired),
            Ok(err) if err.kind == error_kind::TOTP_REQUIRED => Err(ClientError::TotpRequired),
            Ok(err) if err.kind == error_kind::ACCESS_DENIED => {
                Err(ClientError::LoginRefused(err.message))
            }
            Ok(err) => Err(ClientError::Gateway(err.message)),
            Err(_) => Err(ClientError::Gateway(format!(
                "the gateway answered {status}"
            ))),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await;
        self.finish(resp).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await;
        self.finish(resp).await
    }

    /// Checks reachability and the pin.
    pub async fn ping(&self) -> Result<Ping, ClientError> {
        self.get("/v1/ping").await
    }

    /// Logs in with a local user's password.
    pub async fn login_local(&self, req: &LocalLoginRequest) -> Result<LoginResponse, ClientError> {
        self.post("/v1/login/local", req).await
    }

    /// The single sign-on connectors the gateway offers.
    pub async fn connectors(&self) -> Result<Connectors, ClientError> {
        self.get("/v1/connectors").await
    }

    /// Starts a brokered single sign-on login.
    pub async fn sso_start(&self, req: &SsoStartRequest) -> Result<SsoStartResponse, ClientError> {
        self.post("/v1/login/sso/start", req).await
    }

    /// Trades a single sign-on one-time code for the session certificate.
    pub async fn sso_exchange(
        &self,
        req: &SsoExchangeRequest,
    ) -> Result<LoginResponse, ClientError> {
        self.post("/v1/login/sso/exchange", req).await
    }

    /// Starts a device sign-in (RFC 8628).
    pub async fn device_start(
        &self,
        req: &DeviceStartRequest,
    ) -> Result<DeviceStartResponse, ClientError> {
        self.post("/v1/login/device/start", req).await
    }

    /// One poll of a device sign-in.
    pub async fn device_token(&self, req: &DeviceTokenRequest) -> Result<DevicePoll, ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/login/device/token", self.base))
            .json(req)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        if resp.status() != reqwest::StatusCode::BAD_REQUEST {
            return self.finish(Ok(resp)).await.map(DevicePoll::Approved);
        }
        let refusal: DeviceTokenError = resp.json().await.map_err(|e| {
            ClientError::Gateway(format!(
                "the gateway sent an unexpected reply ({e}); is the client up to date?"
            ))
        })?;
        Ok(match refusal.error.as_str() {
            device_error::AUTHORIZATION_PENDING => DevicePoll::Pending,
            device_error::SLOW_DOWN => DevicePoll::SlowDown(refusal.interval),
            device_error::EXPIRED_TOKEN => DevicePoll::Expired,
            _ => DevicePoll::Denied(refusal.error_description),
        })
    }

    /// The identity the gateway sees.
    pub async fn session(&self) -> Result<Identity, ClientError> {
        self.get("/v1/session").await
    }

    /// The databases the caller may reach.
    pub async fn databases(&self) -> Result<Catalog, ClientError> {
        self.get("/v1/databases").await
    }
}

/// Connects once without trusting anything, to learn which CA the gateway
/// presents (trust on first use).
pub async fn presented_ca(addr: &str) -> Result<String, ClientError> {
    let (name, dial) = split_addr(addr)?;
    let pinning = Pinning::new("");
    let config = pinning.client_config(&[b"http/1.1"], None, false)?;
    let unreachable = |reason: String| ClientError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TcpStream::connect(&dial),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    // The handshake fails by design (nothing is trusted); the verifier has
    // recorded what was presented by then.
    let _ = TlsConnector::from(config).connect(name, tcp).await;
    pinning
        .seen()
        .ok_or_else(|| unreachable("it did not present a TLS certificate".into()))
}
