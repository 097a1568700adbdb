//! Single sign-on through the system browser, brokered by the gateway.
//!
//! The client makes its key pair and a secret verifier, listens on a
//! loopback port, and asks the gateway to start a login there
//! (`POST /v1/login/sso/start` with the verifier's hash). The browser signs
//! in at the identity provider, which sends it to the gateway, which sends
//! it on to the loopback listener with a one-time code. Only this process,
//! holding the verifier, can trade that code for the certificate
//! (`POST /v1/login/sso/exchange`).
//!
//! Nothing is written until the certificate is in hand: a timeout, a
//! refusal or dropping the future (Ctrl+C) leaves the profile as it was and
//! closes the listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use postern_api::wire::{SsoExchangeRequest, SsoStartRequest, sso_challenge};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::GatewayClient;
use crate::error::ClientError;
use crate::home::Home;
use crate::keystore::KeyStoreKind;
use crate::login::{begin, new_key_and_csr, save_session};
use crate::profile::Profile;

/// How long the user has to finish signing in (the gateway forgets a login
/// after as long).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A single sign-on login.
pub struct SsoLogin {
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
    /// How long to wait for the browser.
    pub timeout: Duration,
}

/// Accepts only a sign-in address the browser may be sent to: `https://`,
/// or `http://` on this machine (127.0.0.1, localhost, [::1]) for tests.
/// The address comes from the gateway; a `file:`, `javascript:` or
/// application-scheme address must never reach the system's opener.
pub fn check_sign_in_url(url: &str) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| ClientError::UnsafeSignInUrl("not an address".into()))?;
    let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        "http" => Err(ClientError::UnsafeSignInUrl(
            "plain http:// to another machine".into(),
        )),
        other => Err(ClientError::UnsafeSignInUrl(format!("{other}:"))),
    }
}

/// Opens `url` in the system browser.
pub fn open_browser(url: &str) -> Result<(), ClientError> {
    open::that_detached(url).map_err(ClientError::io("opening the browser"))
}

/// Signs in through the browser and saves the session as the current profile.
///
/// `trust` decides about a gateway CA seen for the first time; `show_url`
/// gets the identity provider's address once the login has started (open
/// it with [`open_browser`], or print it for a browser elsewhere).
pub async fn login_sso(
    home: &Home,
    req: SsoLogin,
    trust: impl FnOnce(&str) -> bool,
    show_url: impl FnOnce(&str),
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
    let mut loopback = Loopback::bind().await?;
    let verifier = random_secret();
    let started = client
        .sso_start(&SsoStartRequest {
            connector,
            client_redirect: loopback.redirect_uri(),
            client_challenge: sso_challenge(&verifier),
            csr_pem,
        })
        .await?;
    check_sign_in_url(&started.auth_url)?;
    show_url(&started.auth_url);

    let finish = async {
        let Some(arrival) = loopback.next().await else {
            return Err(ClientError::LoginCancelled);
        };
        let code = match arrival.callback {
            Callback::Code(code) => code,
            Callback::Failed(message) => {
                let _ = arrival.reply.send(Page::Failed(message.clone()));
                return Err(ClientError::Gateway(message));
            }
        };
        let result = match client
            .sso_exchange(&SsoExchangeRequest {
                request_id: started.request_id.clone(),
                code,
                verifier: verifier.clone(),
            })
            .await
        {
            Ok(response) => save_session(
                home,
                &name,
                &req.gateway,
                pin.clone(),
                req.key_store,
                key,
                response,
            ),
            Err(e) => Err(e),
        };
        let page = match &result {
            Ok(profile) => Page::SignedIn {
                gateway: profile.gateway.clone(),
                user: profile
                    .identity
                    .as_ref()
                    .map(|i| i.username.clone())
                    .unwrap_or_default(),
            },
            Err(e) => Page::Failed(e.to_string()),
        };
        let _ = arrival.reply.send(page);
        result
    };
    let result = match tokio::time::timeout(req.timeout, finish).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::LoginTimedOut(format_duration(req.timeout))),
    };
    // Let the browser receive its page before the listener goes away.
    loopback.close().await;
    result
}

/// The gateway's one connector, or why none can be chosen.
pub(crate) async fn only_connector(client: &GatewayClient) -> Result<String, ClientError> {
    let list = client.connectors().await?.connectors;
    match list.as_slice() {
        [] => Err(ClientError::NoSsoConnector),
        [one] => Ok(one.name.clone()),
        several => Err(ClientError::SeveralSsoConnectors(
            several.iter().map(|c| c.name.clone()).collect(),
        )),
    }
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} minute{}", secs / 60, if secs == 60 { "" } else { "s" })
    } else {
        format!("{secs} seconds")
    }
}

/// What the browser brought to the loopback listener.
enum Callback {
    Code(String),
    Failed(String),
}

/// The page the browser is shown.
enum Page {
    SignedIn { gateway: String, user: String },
    Failed(String),
}

impl Page {
    fn render(&self) -> Response {
        match self {
            Page::SignedIn { gateway, user } => page(
                StatusCode::OK,
                "Signed in — you can close this tab",
                &format!("Postern is logged in to {gateway} as {user}."),
            ),
            Page::Failed(message) => page(StatusCode::FORBIDDEN, "Sign-in failed", message),
        }
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = postern_api::html::page(title, message);
    // One request per connection: the listener is about to go away, and a
    // kept-alive connection closed by its shutdown can lose the page.
    (
        status,
        [(axum::http::header::CONNECTION, "close")],
        Html(body),
    )
        .into_response()
}

struct Arrival {
    callback: Callback,
    reply: oneshot::Sender<Page>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The loopback listener the browser finally lands on. Dropping it closes it.
struct Loopback {
    addr: SocketAddr,
    arrivals: mpsc::Receiver<Arrival>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Loopback {
    async fn bind() -> Result<Self, ClientError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(ClientError::io("listening on 127.0.0.1 for the browser"))?;
        let addr = listener
            .local_addr()
            .map_err(ClientError::io("listening on 127.0.0.1 for the browser"))?;
        // Room for one: the first callback wins, later ones are told so.
        let (tx, arrivals) = mpsc::channel(1);
        let router = axum::Router::new()
            .route("/callback", get(arrive))
            .with_state(tx);
        let stop = CancellationToken::new();
        let server =
            axum::serve(listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::debug!(error = %e, "sign-in listener stopped");
            }
        });
        Ok(Loopback {
            addr,
            arrivals,
            stop,
            task,
        })
    }

    fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.addr.port())
    }

    async fn next(&mut self) -> Option<Arrival> {
        self.arrivals.recv().await
    }

    /// Stops accepting and waits (briefly) for pages still being sent.
    async fn close(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn arrive(
    State(tx): State<mpsc::Sender<Arrival>>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let callback = match (query.code, query.error) {
        (Some(code), None) if !code.is_empty() => Callback::Code(code),
        (_, Some(_)) => Callback::Failed(
            query
                .error_description
                .map(|d| d.chars().filter(|c| !c.is_control()).take(500).collect())
                .filter(|d: &String| !d.is_empty())
                .unwrap_or_else(|| "the gateway refused the sign-in".into()),
        ),
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Postern is waiting for the sign-in",
                "This address is only for the end of a sign-in; start with `postern login --sso`.",
            );
        }
    };
    let (reply, answer) = oneshot::channel();
    if tx.try_send(Arrival { callback, reply }).is_err() {
        return page(
            StatusCode::CONFLICT,
            "This sign-in has already finished",
            "You can close this tab.",
        );
    }
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(page)) => page.render(),
        _ => page(
            StatusCode::GATEWAY_TIMEOUT,
            "Sign-in failed",
            "Postern stopped before the sign-in finished; run `postern login --sso` again.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_https_sign_in_pages_are_opened() {
        for ok in [
            "https://idp.example.com/authorize?client_id=postern&state=x",
            "http://127.0.0.1:5556/auth",
            "http://localhost:8080/auth",
            "http://[::1]:8080/auth",
        ] {
            check_sign_in_url(ok).unwrap();
        }
        for (bad, said) in [
            ("file:///etc/passwd", "(file:)"),
            ("javascript:alert(1)", "(javascript:)"),
            ("smb://attacker.example/share", "(smb:)"),
            ("ms-settings:privacy", "(ms-settings:)"),
            (
                "http://idp.example.com/authorize",
                "(plain http:// to another machine)",
            ),
            (
                "http://127.0.0.1.attacker.example/",
                "(plain http:// to another machine)",
            ),
            ("/relative", "(not an address)"),
        ] {
            let err = check_sign_in_url(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "the gateway sent a sign-in address that is not https:// {said}; \
                     Postern opens only https:// sign-in pages, so nothing was opened"
                ),
                "{bad}"
            );
        }
    }

    /// A browser's GET, by hand: status code and body.
    async fn get(port: u16, path_and_query: &str) -> (u16, String) {
        let mut tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        tcp.write_all(
            format!(
                "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.unwrap();
        let status = text.split(' ').nth(1).unwrap().parse().unwrap();
        (status, text)
    }

    #[tokio::test]
    async fn the_listener_hands_over_one_callback_and_shows_the_outcome() {
        let mut loopback = Loopback::bind().await.unwrap();
        let uri = loopback.redirect_uri();
        let port = loopback.addr.port();
        assert_eq!(uri, format!("http://127.0.0.1:{port}/callback"));

        let (status, _) = get(port, "/callback").await;
        assert_eq!(status, 400, "a visit without a code is not a sign-in");

        let browser = tokio::spawn(get(port, "/callback?code=abc"));
        let arrival = loopback.next().await.unwrap();
        assert!(matches!(&arrival.callback, Callback::Code(c) if c == "abc"));
        let page = Page::SignedIn {
            gateway: "gw:3080".into(),
            user: "dana".into(),
        };
        assert!(arrival.reply.send(page).is_ok());
        let (status, body) = browser.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("Signed in — you can close this tab"),
            "{body}"
        );

        let browser = tokio::spawn(get(
            port,
            "/callback?error=x&error_description=%3Cb%3Eno%3C/b%3E",
        ));
        let arrival = loopback.next().await.unwrap();
        assert!(matches!(&arrival.callback, Callback::Failed(m) if m == "<b>no</b>"));
        assert!(arrival.reply.send(Page::Failed("<b>no</b>".into())).is_ok());
        let (status, body) = browser.await.unwrap();
        assert_eq!(status, 403);
        assert!(body.contains("&lt;b&gt;no&lt;/b&gt;"), "escaped: {body}");

        // Closing right after the answer still delivers the page.
        let browser = tokio::spawn(get(port, "/callback?code=last"));
        let arrival = loopback.next().await.unwrap();
        assert!(arrival.reply.send(Page::Failed("late".into())).is_ok());
        loopback.close().await;
        let (status, body) = browser.await.unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("late"), "{body}");

        assert!(
            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err(),
            "the listener closes with its owner"
        );
    }
}
