//! Connecting and logging in to a database on a user's behalf.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use postern_pgwire::auth::{ScramClient, md5_password};
use postern_pgwire::{AuthRequest, BackendMessage, frontend, parse_message};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::TunnelError;
use crate::ca::Authority;
use crate::config::{ConfigError, DatabaseConfig, TlsMode};
use crate::tls::{ClientCertForCa, subject_der, upstream_config};

/// A TLS connection to a database.
pub type DbStream = TlsStream<TcpStream>;

/// How long a database login certificate lives, and how long before its end
/// a new one is made.
const DB_CERT_TTL: Duration = Duration::from_secs(3600);
const DB_CERT_RENEW: Duration = Duration::from_secs(600);
/// Largest message accepted from a database during login.
const LOGIN_MESSAGE_MAX: usize = 1 << 20;

/// One database the gateway can reach, with what it needs to log in.
pub struct Upstream {
    /// Catalog name.
    pub name: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    mode: TlsMode,
    ca_pem: Option<String>,
    passwords: HashMap<String, String>,
    db_ca: Arc<Authority>,
    db_ca_subject: Vec<u8>,
    configs: Mutex<HashMap<String, (Arc<ClientConfig>, SystemTime)>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("addr", &format_args!("{}:{}", self.host, self.port))
            .finish_non_exhaustive()
    }
}

/// A logged-in database connection, paused before the first query.
pub struct Established {
    /// The connection.
    pub stream: DbStream,
    /// Messages to forward to the client (AuthenticationOk, ParameterStatus,
    /// notices, ReadyForQuery) with the real BackendKeyData removed.
    pub reply: BytesMut,
    /// Index in `reply` where the gateway's own BackendKeyData goes.
    pub key_at: usize,
    /// The database's real cancel key.
    pub key: (i32, i32),
}

impl Upstream {
    /// Prepares a database from its configuration. Secrets are read now so a
    /// missing one is a start-up error, not a surprise for the first user.
    pub fn new(config: &DatabaseConfig, db_ca: Arc<Authority>) -> Result<Self, ConfigError> {
        let (host, port) = config.host_port()?;
        let name_for_tls = config
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name_for_tls).map_err(|_| {
            ConfigError::Invalid(format!(
                "database {:?}: invalid TLS server name",
                config.name
            ))
        })?;
        let ca_pem = match &config.tls.ca_cert_file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut passwords = HashMap::new();
        for pw in &config.passwords {
            passwords.insert(pw.db_user.clone(), pw.read()?);
        }
        let db_ca_subject = subject_der(db_ca.cert_der())
            .ok_or_else(|| ConfigError::Invalid("database CA certificate is unreadable".into()))?;
        let upstream = Upstream {
            name: config.name.clone(),
            host,
            port,
            server_name,
            mode: config.tls.mode,
            ca_pem,
            passwords,
            db_ca,
            db_ca_subject,
            configs: Mutex::new(HashMap::new()),
        };
        // Build one config now so a bad CA file fails at start-up.
        upstream
            .tls_config(None)
            .map_err(|e| ConfigError::Invalid(format!("database {:?}: {e}", config.name)))?;
        Ok(upstream)
    }

    /// TLS config presenting a certificate for `db_user` (none for cancels).
    fn tls_config(&self, db_user: Option<&str>) -> Result<Arc<ClientConfig>, TunnelError> {
        let key = db_user.unwrap_or("");
        let now = SystemTime::now();
        if let Some((config, renew_at)) = self.configs.lock().unwrap().get(key)
            && now < *renew_at
        {
            return Ok(config.clone());
        }
        let cert = match db_user {
            Some(user) => {
                let leaf = self
                    .db_ca
                    .issue_leaf(user, &[], DB_CERT_TTL)
                    .map_err(|e| TunnelError::Internal(e.to_string()))?;
                Some(
                    ClientCertForCa::new(leaf, self.db_ca_subject.clone())
                        .map_err(|e| TunnelError::Internal(e.to_string()))?,
                )
            }
            None => None,
        };
        let config = upstream_config(self.mode, self.ca_pem.as_deref(), cert)
            .map_err(|e| TunnelError::Internal(e.to_string()))?;
        let renew_at = now + DB_CERT_TTL - DB_CERT_RENEW;
        self.configs
            .lock()
            .unwrap()
            .insert(key.to_owned(), (config.clone(), renew_at));
        Ok(config)
    }

    async fn connect_tls(&self, db_user: Option<&str>) -> Result<DbStream, TunnelError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| TunnelError::Unreachable {
                database: self.name.clone(),
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let mut tcp = tcp;
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        tcp.write_all(&buf).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(TunnelError::NoTls(self.name.clone()));
        }
        TlsConnector::from(self.tls_config(db_user)?)
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| TunnelError::UpstreamTls {
                database: self.name.clone(),
                source,
            })
    }

    /// Connects and logs in as `db_user` to `db_name`, passing the client's
    /// other startup parameters through.
    pub async fn login(
        &self,
        db_user: &str,
        db_name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Established, TunnelError> {
        let mut stream = self.connect_tls(Some(db_user)).await?;
        let mut out = BytesMut::with_capacity(256);
        let passthrough = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "replication"))
            .map(|(k, v)| (k.as_str(), v.as_str()));
        frontend::startup_message(
            [("user", db_user), ("database", db_name)]
                .into_iter()
                .chain(passthrough),
            &mut out,
        );
        send(&mut stream, &mut out).await?;

        let mut inbuf = BytesMut::with_capacity(8192);
        let mut reply = BytesMut::with_capacity(512);
        let mut key_at = None;
        let mut key = None;
        let mut scram: Option<ScramClient> = None;
        loop {
            let (len, action) = loop {
                let parsed = parse_message(&inbuf, LOGIN_MESSAGE_MAX)
                    .map_err(|e| TunnelError::UpstreamProtocol(e.to_string()))?;
                if let Some((msg, len)) = parsed {
                    let decoded = BackendMessage::decode(&msg)
                        .map_err(|e| TunnelError::UpstreamProtocol(e.to_string()))?;
                    break (len, self.step(decoded, db_user, &mut scram, &mut out)?);
                }
                if stream.read_buf(&mut inbuf).await? == 0 {
                    return Err(TunnelError::UpstreamProtocol(
                        "connection closed during login".into(),
                    ));
                }
            };
            let raw = inbuf.split_to(len);
            match action {
                Step::Reply => send(&mut stream, &mut out).await?,
                Step::Forward => reply.extend_from_slice(&raw),
                Step::Key(pid, secret) => {
                    key = Some((pid, secret));
                    key_at = Some(reply.len());
                }
                Step::Ready => {
                    reply.extend_from_slice(&raw);
                    let (Some(key), Some(key_at)) = (key, key_at) else {
                        return Err(TunnelError::UpstreamProtocol(
                            "no BackendKeyData before ReadyForQuery".into(),
                        ));
                    };
                    if !inbuf.is_empty() {
                        return Err(TunnelError::UpstreamProtocol(
                            "data after ReadyForQuery".into(),
                        ));
                    }
                    return Ok(Established {
                        stream,
                        reply,
                        key_at,
                        key,
                    });
                }
                Step::Ignore => {}
            }
        }
    }

    /// Decides what to do with one login message; authentication answers go
    /// into `out`.
    fn step(
        &self,
        msg: BackendMessage<'_>,
        db_user: &str,
        scram: &mut Option<ScramClient>,
        out: &mut BytesMut,
    ) -> Result<Step, TunnelError> {
        let password = || {
            self.passwords
                .get(db_user)
                .ok_or_else(|| TunnelError::NoCredentials {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                    why: "the database asked for a password".into(),
                })
        };
        let protocol = |what: &str| TunnelError::UpstreamProtocol(what.to_owned());
        Ok(match msg {
            BackendMessage::Authentication(AuthRequest::Ok) => Step::Forward,
            BackendMessage::Authentication(AuthRequest::CleartextPassword) => {
                // Only ever sent inside TLS to a verified server.
                frontend::password_message(password()?.as_bytes(), out);
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::Md5Password { salt }) => {
                frontend::password_message(
                    md5_password(db_user, password()?, salt).as_bytes(),
                    out,
                );
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::Sasl { mechanisms }) => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(TunnelError::NoCredentials {
                        database: self.name.clone(),
                        db_user: db_user.to_owned(),
                        why: format!("unsupported SASL mechanisms {mechanisms:?}"),
                    });
                }
                let client = ScramClient::new(password()?);
                frontend::sasl_initial_response(client.mechanism(), client.initial_message(), out);
                *scram = Some(client);
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::SaslContinue(data)) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| protocol("SASL continue without start"))?;
                client.update(data).map_err(|e| protocol(&e.to_string()))?;
                frontend::sasl_response(client.client_final(), out);
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::SaslFinal(data)) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| protocol("SASL final without start"))?;
                // Proves the server knew the password too.
                client.finish(data).map_err(|e| protocol(&e.to_string()))?;
                Step::Ignore
            }
            BackendMessage::Authentication(AuthRequest::Unsupported(code)) => {
                return Err(TunnelError::NoCredentials {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                    why: format!("unsupported authentication request {code}"),
                });
            }
            BackendMessage::ErrorResponse(fields) => {
                return Err(TunnelError::UpstreamRefused(fields));
            }
            BackendMessage::BackendKeyData { pid, secret } => Step::Key(pid, secret),
            BackendMessage::ReadyForQuery(_) => Step::Ready,
            BackendMessage::ParameterStatus { .. } | BackendMessage::NoticeResponse(_) => {
                Step::Forward
            }
            BackendMessage::NegotiateProtocolVersion { .. } => Step::Ignore,
            BackendMessage::Other { tag } => {
                return Err(protocol(&format!(
                    "unexpected message {:?} during login",
                    tag as char
                )));
            }
        })
    }

    /// Sends a CancelRequest for a real backend key. PostgreSQL never answers
    /// one, so success means "delivered".
    pub async fn cancel(&self, pid: i32, secret: i32) -> Result<(), TunnelError> {
        let mut stream = self.connect_tls(None).await?;
        let mut out = BytesMut::new();
        frontend::cancel_request(pid, secret, &mut out);
        send(&mut stream, &mut out).await?;
        // Wait for the server to close so the cancel is processed before we
        // report it delivered.
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }
}

enum Step {
    Reply,
    Forward,
    Key(i32, i32),
    Ready,
    Ignore,
}

async fn send(stream: &mut DbStream, out: &mut BytesMut) -> std::io::Result<()> {
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}
