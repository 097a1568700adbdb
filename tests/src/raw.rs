//! A hostile client: a person's real session certificate and key, used to
//! send what no honest tunnel sends (hand-written route frames, resumed TLS
//! sessions after the certificate expired, raw HTTP requests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postern_api::ALPN_TUNNEL;
use postern_client::home::Home;
use postern_client::session::ActiveSession;
use postern_pgwire::{BackendMessage, ErrorFields, Message, parse_message};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::stack::Stack;

/// How long any single read in these helpers may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A TLS client holding someone's session certificate. Its configs keep
/// one resumption cache each, so a second connection resumes the first's
/// TLS session, as the real tunnel's does.
pub struct RawClient {
    tunnel: Arc<ClientConfig>,
    http: Arc<ClientConfig>,
    addr: std::net::SocketAddr,
}

/// What the gateway answered to a session route frame.
pub struct Opened {
    /// Whether the TLS handshake resumed an earlier TLS session.
    pub resumed: bool,
    /// The session once the startup completed (ReadyForQuery), or the
    /// ErrorResponse the gateway refused it with before closing.
    pub result: Result<RawSession, ErrorFields>,
}

impl Opened {
    /// The session, or a panic naming the refusal.
    pub fn session(self) -> RawSession {
        self.result
            .unwrap_or_else(|e| panic!("session refused: {} ({})", e.message, e.code))
    }

    /// The refusal, or a panic if the session opened.
    pub fn refusal(self) -> ErrorFields {
        match self.result {
            Ok(_) => panic!("the session opened; a refusal was expected"),
            Err(e) => e,
        }
    }
}

/// The messages these helpers tell apart.
#[derive(Debug)]
pub enum Msg {
    /// `BackendKeyData`.
    Key(i32, i32),
    /// `ReadyForQuery` with its transaction status.
    Ready(u8),
    /// `ErrorResponse`.
    Error(ErrorFields),
    /// `NoticeResponse`.
    Notice(ErrorFields),
    /// `DataRow`: its first column as text (None for NULL).
    Row(Option<String>),
    /// Anything else, by tag.
    Other(u8),
}

impl Msg {
    fn decode(msg: &Message<'_>) -> Msg {
        if msg.tag == b'D' {
            // Int16 column count, then Int32 length (-1: NULL) and bytes.
            let len = i32::from_be_bytes(msg.body[2..6].try_into().unwrap());
            let first = usize::try_from(len)
                .ok()
                .map(|len| String::from_utf8_lossy(&msg.body[6..6 + len]).into_owned());
            return Msg::Row(first);
        }
        match BackendMessage::decode(msg).expect("decodable message") {
            BackendMessage::BackendKeyData { pid, secret } => Msg::Key(pid, secret),
            BackendMessage::ReadyForQuery(status) => Msg::Ready(status),
            BackendMessage::ErrorResponse(e) => Msg::Error(e),
            BackendMessage::NoticeResponse(e) => Msg::Notice(e),
            _ => Msg::Other(msg.tag),
        }
    }
}

/// An open tunnel session spoken to in raw protocol messages.
pub struct RawSession {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
    /// The BackendKeyData the gateway handed out.
    pub key: (i32, i32),
}

impl RawClient {
    /// The current session of `who` (logged in with the CLI).
    pub fn of(stack: &Stack, who: &str) -> RawClient {
        let home = Home::at(stack.home(who));
        let profile = home.resolve(None).expect("a logged-in profile");
        let session = ActiveSession::load(&home, profile).expect("session loads");
        let mut http = (*session.tunnel_tls()).clone();
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        http.resumption = Resumption::in_memory_sessions(8);
        let mut tunnel = (*session.tunnel_tls()).clone();
        tunnel.alpn_protocols = vec![ALPN_TUNNEL.to_vec()];
        tunnel.resumption = Resumption::in_memory_sessions(8);
        RawClient {
            tunnel: Arc::new(tunnel),
            http: Arc::new(http),
            addr: stack.gateway.addr,
        }
    }

    async fn connect(&self, config: &Arc<ClientConfig>) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .expect("connect gateway");
        let name = ServerName::try_from("127.0.0.1").unwrap();
        TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the gateway")
    }

    /// Times one tunnel TLS handshake, resuming an earlier TLS session when
    /// `resume` and one is cached; returns the time and whether it resumed.
    /// Afterwards (untimed) the connection is read to its end, as a real
    /// client reads its answers, so the session tickets the gateway sends
    /// after the handshake are kept for the next call.
    pub async fn handshake(&self, resume: bool) -> (Duration, bool) {
        let config = if resume {
            self.tunnel.clone()
        } else {
            let mut fresh = (*self.tunnel).clone();
            fresh.resumption = Resumption::disabled();
            Arc::new(fresh)
        };
        let started = Instant::now();
        let mut stream = self.connect(&config).await;
        let took = started.elapsed();
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        // An oversized route frame: the gateway answers with an error and closes.
        stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(READ_TIMEOUT, stream.read_to_end(&mut sink)).await;
        (took, resumed)
    }

    /// Sends `frame` (the JSON body of a route frame) and reads the answer.
    pub async fn open(&self, frame: serde_json::Value) -> Opened {
        let body = serde_json::to_vec(&frame).unwrap();
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        self.open_bytes(&bytes).await
    }

    /// Sends raw bytes as the route frame and reads the answer.
    pub async fn open_bytes(&self, bytes: &[u8]) -> Opened {
        let mut stream = self.connect(&self.tunnel).await;
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        stream.write_all(bytes).await.unwrap();
        let mut session = RawSession {
            stream,
            buf: BytesMut::new(),
            key: (0, 0),
        };
        let result = loop {
            match session.next().await {
                Some(Msg::Key(pid, secret)) => session.key = (pid, secret),
                Some(Msg::Ready(_)) => break Ok(session),
                Some(Msg::Error(e)) => break Err(e),
                Some(_) => {}
                None => panic!("the gateway closed without an answer"),
            }
        };
        Opened { resumed, result }
    }

    /// A session frame for `database` as `db_user` in `db_name`, with `params`.
    pub fn session_frame(
        database: &str,
        db_user: &str,
        db_name: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "kind": "session",
            "database": database,
            "db_user": db_user,
            "db_name": db_name,
            "params": params,
        })
    }

    /// `GET path` over HTTP/1.1 on a fresh (possibly resumed) TLS
    /// connection: the status code, the body, and whether TLS resumed.
    pub async fn get(&self, path: &str) -> (u16, String, bool) {
        let mut stream = self.connect(&self.http).await;
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(READ_TIMEOUT, stream.read_to_end(&mut response))
            .await
            .expect("HTTP response in time")
            .ok();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body, resumed)
    }
}

impl RawSession {
    /// The next message from the gateway; None when it closed.
    pub async fn next(&mut self) -> Option<Msg> {
        loop {
            if let Some((msg, len)) = parse_message(&self.buf, 1 << 24).expect("valid framing") {
                let decoded = Msg::decode(&msg);
                let _ = self.buf.split_to(len);
                return Some(decoded);
            }
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the gateway answers in time");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Sends a simple Query.
    pub async fn send_query(&mut self, sql: &str) {
        let mut q = BytesMut::new();
        q.extend_from_slice(b"Q");
        q.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        q.extend_from_slice(sql.as_bytes());
        q.extend_from_slice(b"\0");
        self.stream.write_all(&q).await.unwrap();
    }

    /// Runs `sql` and returns the first column of each row, or the error.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<String>, ErrorFields> {
        self.send_query(sql).await;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next().await.expect("the session stays open") {
                Msg::Row(first) => rows.push(first.unwrap_or_default()),
                Msg::Error(e) => error = Some(e),
                Msg::Ready(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    /// Waits for the ErrorResponse that ends the session and for the close
    /// after it; returns the error and how long it took.
    pub async fn ended(&mut self, within: Duration) -> (ErrorFields, Duration) {
        let started = Instant::now();
        let error = tokio::time::timeout(within, async {
            loop {
                match self.next().await {
                    Some(Msg::Error(e)) => return e,
                    Some(_) => {}
                    None => panic!("the session closed without an ErrorResponse"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the session was not ended within {within:?}"));
        let closed = self.next().await;
        assert!(
            closed.is_none(),
            "nothing follows the final error: {closed:?}"
        );
        (error, started.elapsed())
    }
}
