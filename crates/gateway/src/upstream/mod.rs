//! Connecting and logging in to a database on a user's behalf.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use postern_pgwire::auth::{ScramClient, md5_password};
use postern_pgwire::{AuthRequest, BackendMessage, frontend, parse_message};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::TunnelError;
use super::route::StartupParams;
use crate::aws::{AwsDatabase, AwsError};
use crate::ca::Authority;
use crate::config::{ConfigError, DatabaseConfig, DatabaseKind, TlsMode};
use crate::tls::{ClientCertForCa, subject_der, upstream_config};

/// A TLS connection to a database. rustls reads at most 4 KiB per call; the
/// buffer underneath turns that into one syscall per 64 KiB of a bulk result.
pub type DbStream = TlsStream<BufReader<TcpStream>>;

/// Read buffer under TLS connections.
pub const READ_BUFFER: usize = 64 * 1024;

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
    /// Where the database runs.
    pub kind: DatabaseKind,
    /// Known from `uri`, or (Redshift Serverless) from `GetWorkgroup`.
    endpoint: RwLock<Option<Endpoint>>,
    configured_server_name: Option<String>,
    mode: TlsMode,
    ca_pem: Option<String>,
    passwords: HashMap<String, String>,
    db_ca: Arc<Authority>,
    db_ca_subject: Vec<u8>,
    configs: Mutex<HashMap<String, (Arc<ClientConfig>, SystemTime)>>,
    aws: Option<Arc<AwsDatabase>>,
    /// Bounds connecting and logging in (each attempt).
    login_timeout: Duration,
}

/// Where a database listens.
#[derive(Clone, Debug)]
struct Endpoint {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("addr", &self.server_addr())
            .finish_non_exhaustive()
    }
}

/// Who the gateway logs in as, resolved per connection by the database's
/// kind: the db user with a configured password or a client certificate
/// (self-hosted), an IAM authentication token (RDS), or `IAMR:<role>` with a
/// temporary password (Redshift Serverless).
pub struct LoginCredentials {
    /// The user of the StartupMessage.
    pub user: String,
    /// The answer to a cleartext, MD5 or SCRAM request. Never log it.
    pub password: Option<String>,
    /// Whether to present a database-CA certificate for `user`.
    pub client_certificate: bool,
    origin: Origin,
}

/// Where a password came from, to explain or retry a refusal.
#[derive(Clone, Debug)]
enum Origin {
    /// The configuration (or none: certificate login).
    Configured,
    /// An RDS IAM authentication token.
    RdsToken,
    /// Temporary Redshift credentials of a role for a database name, and
    /// whether they came from the cache.
    Redshift {
        role_arn: String,
        db_name: String,
        cached: bool,
    },
}

impl std::fmt::Debug for LoginCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCredentials")
            .field("user", &self.user)
            .field(
                "password",
                &self.password.as_ref().map(|_| "** redacted **"),
            )
            .field("client_certificate", &self.client_certificate)
            .finish()
    }
}

impl LoginCredentials {
    /// The user a database-CA certificate is presented for, if any.
    pub fn certificate_user(&self) -> Option<&str> {
        self.client_certificate.then_some(self.user.as_str())
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
    /// AWS databases log in through `aws`; each connection and login
    /// attempt is bounded by `login_timeout`.
    pub fn new(
        config: &DatabaseConfig,
        db_ca: Arc<Authority>,
        aws: Option<Arc<AwsDatabase>>,
        login_timeout: Duration,
    ) -> Result<Self, ConfigError> {
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
        if config.kind.is_aws() && aws.is_none() {
            return Err(ConfigError::Invalid(format!(
                "database {:?}: kind {} needs AWS settings",
                config.name,
                config.kind.as_str()
            )));
        }
        let upstream = Upstream {
            name: config.name.clone(),
            kind: config.kind,
            endpoint: RwLock::new(None),
            configured_server_name: config.tls.server_name.clone(),
            mode: config.tls.mode,
            ca_pem,
            passwords,
            db_ca,
            db_ca_subject,
            configs: Mutex::new(HashMap::new()),
            aws,
            login_timeout,
        };
        if let Some((host, port)) = config.host_port()? {
            upstream
                .set_endpoint(&host, port)
                .map_err(|e| ConfigError::Invalid(format!("database {:?}: {e}", config.name)))?;
        }
        // Build one config now so a bad CA file fails at start-up.
        upstream
            .tls_config(None)
            .map_err(|e| ConfigError::Invalid(format!("database {:?}: {e}", config.name)))?;
        Ok(upstream)
    }

    /// Sets where the database listens (from `uri`, or `GetWorkgroup`).
    pub(crate) fn set_endpoint(&self, host: &str, port: u16) -> Result<(), String> {
        let name_for_tls = self
            .configured_server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        let server_name =
            ServerName::try_from(name_for_tls).map_err(|_| "invalid TLS server name".to_owned())?;
        *self.endpoint.write().unwrap() = Some(Endpoint {
            host: host.to_owned(),
            port,
            server_name,
        });
        Ok(())
    }

    /// Whether the endpoint is known.
    pub(crate) fn has_endpoint(&self) -> bool {
        self.endpoint.read().unwrap().is_some()
    }

    fn endpoint(&self) -> Result<Endpoint, TunnelError> {
        self.endpoint.read().unwrap().clone().ok_or_else(|| {
            TunnelError::Internal(format!(
                "the endpoint of database {:?} is not known",
                self.name
            ))
        })
    }

    /// The AWS side of an AWS-hosted database.
    pub fn aws(&self) -> Option<&Arc<AwsDatabase>> {
        self.aws.as_ref()
    }

    fn aws_error(&self, error: AwsError) -> TunnelError {
        TunnelError::Aws {
            database: self.name.clone(),
            error,
        }
    }

    /// How to log in as `db_user` to `db_name`, by the database's kind.
    pub async fn credentials(
        &self,
        db_user: &str,
        db_name: &str,
    ) -> Result<LoginCredentials, TunnelError> {
        let configured = self.passwords.get(db_user).cloned();
        let Some(aws) = &self.aws else {
            return Ok(LoginCredentials {
                user: db_user.to_owned(),
                password: configured,
                client_certificate: true,
                origin: Origin::Configured,
            });
        };
        match self.kind {
            DatabaseKind::SelfHosted | DatabaseKind::RdsPostgres => {
                // A configured password wins (e.g. the master user that
                // provisions users); everyone else uses IAM.
                let (password, origin) = match configured {
                    Some(password) => (password, Origin::Configured),
                    None => {
                        let endpoint = self.endpoint()?;
                        let token = aws
                            .rds_token(&endpoint.host, endpoint.port, db_user)
                            .await
                            .map_err(|e| self.aws_error(e))?;
                        (token, Origin::RdsToken)
                    }
                };
                Ok(LoginCredentials {
                    user: db_user.to_owned(),
                    password: Some(password),
                    client_certificate: false,
                    origin,
                })
            }
            DatabaseKind::RedshiftServerless => {
                if !self.has_endpoint() {
                    let info = aws.workgroup_info().await.map_err(|e| self.aws_error(e))?;
                    self.set_endpoint(&info.address, info.port)
                        .map_err(TunnelError::Internal)?;
                    tracing::info!(database = %self.name, address = %info.address, port = info.port, "Redshift Serverless endpoint from GetWorkgroup");
                }
                let login = aws
                    .redshift_login(db_user, db_name)
                    .await
                    .map_err(|e| self.aws_error(e))?;
                Ok(LoginCredentials {
                    user: login.credentials.user,
                    password: Some(login.credentials.password),
                    client_certificate: false,
                    origin: Origin::Redshift {
                        role_arn: login.role_arn,
                        db_name: db_name.to_owned(),
                        cached: login.cached,
                    },
                })
            }
        }
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

    /// `host:port` of the server. PostgreSQL roles are cluster-wide, so
    /// provisioning serializes per server address, not per catalog entry.
    pub(crate) fn server_addr(&self) -> String {
        match &*self.endpoint.read().unwrap() {
            Some(e) => format!("{}:{}", e.host, e.port),
            None => format!("{} (endpoint not yet known)", self.name),
        }
    }

    /// A TLS connection (after SSLRequest and the handshake), ready for a
    /// StartupMessage, that presents a database-CA certificate for `db_user`
    /// (none for cancels). Provisioning uses it to log in as the admin user.
    pub(crate) async fn connect_tls(&self, db_user: Option<&str>) -> Result<DbStream, TunnelError> {
        let endpoint = self.endpoint()?;
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
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
            .connect(
                endpoint.server_name.clone(),
                BufReader::with_capacity(READ_BUFFER, tcp),
            )
            .await
            .map_err(|source| TunnelError::UpstreamTls {
                database: self.name.clone(),
                source,
            })
    }

    /// Connects and logs in as `db_user` to `db_name`, passing the client's
    /// other startup parameters through. The credentials come from
    /// [`Upstream::credentials`]; cached temporary Redshift credentials the
    /// database refuses are dropped and fetched once more.
    pub async fn login(
        &self,
        db_user: &str,
        db_name: &str,
        params: &StartupParams,
    ) -> Result<Established, TunnelError> {
        let mut credentials = self.credentials(db_user, db_name).await?;
        let mut retried = false;
        loop {
            let result = tokio::time::timeout(
                self.login_timeout,
                self.login_as(&credentials, db_name, params),
            )
            .await
            .unwrap_or_else(|_| {
                Err(TunnelError::UpstreamTimeout {
                    database: self.name.clone(),
                    addr: self.server_addr(),
                })
            });
            let Err(TunnelError::UpstreamRefused(fields)) = result else {
                return result;
            };
            match &credentials.origin {
                Origin::Configured => return Err(TunnelError::UpstreamRefused(fields)),
                Origin::RdsToken if fields.code == "28P01" => {
                    return Err(TunnelError::RdsIamRefused {
                        database: self.name.clone(),
                        db_user: db_user.to_owned(),
                        instance: self
                            .aws
                            .as_ref()
                            .and_then(|aws| aws.rds_instance())
                            .map(str::to_owned),
                    });
                }
                Origin::RdsToken => return Err(TunnelError::UpstreamRefused(fields)),
                Origin::Redshift {
                    role_arn,
                    db_name: for_db,
                    cached,
                } => {
                    if fields.code == "28P01" {
                        if let Some(aws) = &self.aws {
                            aws.forget(role_arn, for_db);
                        }
                        if *cached && !retried {
                            tracing::info!(database = %self.name, %role_arn, "cached Redshift credentials refused; fetching new ones");
                            retried = true;
                            credentials = self.credentials(db_user, db_name).await?;
                            continue;
                        }
                    }
                    return Err(redshift_refusal(fields, &credentials.user, db_name));
                }
            }
        }
    }

    /// Connects and logs in with `credentials` to `db_name`.
    pub async fn login_as(
        &self,
        credentials: &LoginCredentials,
        db_name: &str,
        params: &StartupParams,
    ) -> Result<Established, TunnelError> {
        let db_user = credentials.user.as_str();
        let mut stream = self.connect_tls(credentials.certificate_user()).await?;
        let mut out = BytesMut::with_capacity(256);
        // `params` holds no reserved name, so these two are the only ones.
        frontend::startup_message(
            [("user", db_user), ("database", db_name)]
                .into_iter()
                .chain(params.iter()),
            &mut out,
        )
        .map_err(|e| TunnelError::Internal(e.to_string()))?;
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
                    break (len, self.step(decoded, credentials, &mut scram, &mut out)?);
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
        credentials: &LoginCredentials,
        scram: &mut Option<ScramClient>,
        out: &mut BytesMut,
    ) -> Result<Step, TunnelError> {
        let db_user = credentials.user.as_str();
        let password = || {
            credentials
                .password
                .as_ref()
                .ok_or_else(|| TunnelError::NoCredentials {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                    why: "the database asked for a password".into(),
                })
        };
        let protocol = |what: &str| TunnelError::UpstreamProtocol(what.to_owned());
        Ok(match msg {
            BackendMessage::Authentication(AuthRequest::Ok) => Step::Forward,
            BackendMessage::Authentication(
                AuthRequest::CleartextPassword | AuthRequest::Md5Password { .. },
            ) if self.mode == TlsMode::Insecure => {
                // Without a verified certificate the server may be anyone:
                // a cleartext password is handed to it, and an MD5 answer
                // can be replayed or guessed offline. SCRAM proves the
                // password without revealing it.
                return Err(TunnelError::PasswordToUnverifiedServer {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                });
            }
            BackendMessage::Authentication(AuthRequest::CleartextPassword) => {
                // Only ever sent inside TLS to a verified server.
                frontend::password_message(password()?.as_bytes(), out).map_err(unsendable)?;
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::Md5Password { salt }) => {
                frontend::password_message(
                    md5_password(db_user, password()?, salt).as_bytes(),
                    out,
                )
                .map_err(unsendable)?;
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
                frontend::sasl_initial_response(client.mechanism(), client.initial_message(), out)
                    .map_err(unsendable)?;
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

/// What a refusal of `IAMR:<role>` by Redshift means: a role without
/// privileges inside the database says so at login (no CONNECT: 42501; no
/// usable user: 28000).
fn redshift_refusal(
    fields: postern_pgwire::ErrorFields,
    iam_user: &str,
    db_name: &str,
) -> TunnelError {
    let no_privileges = (fields.code == "42501" && fields.message.contains("permission denied"))
        || fields.code == "28000";
    if no_privileges {
        TunnelError::RedshiftNoPrivileges {
            iam_user: iam_user.to_owned(),
            db_name: db_name.to_owned(),
            message: fields.message,
        }
    } else {
        TunnelError::UpstreamRefused(fields)
    }
}

/// A login message that cannot be encoded (a configured password with a
/// NUL): a configuration problem, told without the secret.
fn unsendable(error: postern_pgwire::EncodeError) -> TunnelError {
    TunnelError::Internal(format!("a login message could not be sent: {error}"))
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
