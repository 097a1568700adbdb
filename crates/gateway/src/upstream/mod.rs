//! Reaching and logging in to a database on a user's behalf: used by the
//! tunnel (sessions and cancels), provisioning (the admin's login) and the
//! catalog (endpoints), and knowing nothing of them.
//!
//! - [`kind`]: each database kind's rules (credentials, defaults, refusals).
//! - [`refusal`]: what a database's refusal of a login means.
//! - [`connector`]: how a connection is opened (TCP + TLS, or a test's pipe).
//! - `login`: the startup conversation.

pub mod connector;
pub mod error;
pub mod kind;
mod login;
pub mod refusal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use postern_pgwire::{CancelKey, frontend};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

pub use connector::{Connecting, Connector, DbIo, DbStream, Dial, READ_BUFFER, TcpTls};
pub use error::UpstreamError;
pub use kind::Kind;
pub use refusal::Refusal;

use crate::ca::Authority;
use crate::config::{ConfigError, DatabaseConfig, TlsMode};
use crate::names::{DbName, DbUser};
use crate::tls::{ClientCertForCa, subject_der, upstream_config};
use kind::AfterRefusal;

/// How long a database login certificate lives, and how long before its end
/// a new one is made.
const DB_CERT_TTL: Duration = Duration::from_secs(3600);
const DB_CERT_RENEW: Duration = Duration::from_secs(600);

/// One database the gateway can reach, with what it needs to log in.
pub struct Upstream {
    /// Catalog name.
    pub name: String,
    /// Where the database runs, which decides how the gateway logs in.
    pub kind: Kind,
    /// Known from `uri`, or (Redshift Serverless) from `GetWorkgroup`.
    endpoint: RwLock<Option<Endpoint>>,
    configured_server_name: Option<String>,
    mode: TlsMode,
    ca_pem: Option<String>,
    passwords: HashMap<String, String>,
    db_ca: Arc<Authority>,
    db_ca_subject: Vec<u8>,
    configs: Mutex<HashMap<String, (Arc<ClientConfig>, SystemTime)>>,
    connector: Arc<dyn Connector>,
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
/// [`Kind`]: the db user with a configured password or a client certificate
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
    pub key: CancelKey,
}

impl Upstream {
    /// Prepares a database from its configuration. Secrets are read now so a
    /// missing one is a start-up error, not a surprise for the first user.
    /// Connections are opened by `connector` (normally [`TcpTls`]); each
    /// connection and login attempt is bounded by `login_timeout`.
    pub fn new(
        config: &DatabaseConfig,
        kind: Kind,
        db_ca: Arc<Authority>,
        connector: Arc<dyn Connector>,
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
        for pw in config.kind.passwords() {
            passwords.insert(pw.db_user.clone(), pw.read()?);
        }
        let db_ca_subject = subject_der(db_ca.cert_der())
            .ok_or_else(|| ConfigError::Invalid("database CA certificate is unreadable".into()))?;
        let upstream = Upstream {
            name: config.name.clone(),
            kind,
            endpoint: RwLock::new(None),
            configured_server_name: config.tls.server_name.clone(),
            mode: config.tls.mode,
            ca_pem,
            passwords,
            db_ca,
            db_ca_subject,
            configs: Mutex::new(HashMap::new()),
            connector,
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

    /// Where the database listens (`host:port`), for diagnosis; `unknown`
    /// before it is known.
    pub fn address(&self) -> String {
        match &*self.endpoint.read().unwrap() {
            Some(e) => format!("{}:{}", e.host, e.port),
            None => "unknown".into(),
        }
    }

    fn endpoint(&self) -> Result<Endpoint, UpstreamError> {
        self.endpoint.read().unwrap().clone().ok_or_else(|| {
            UpstreamError::Internal(format!(
                "the endpoint of database {:?} is not known",
                self.name
            ))
        })
    }

    /// How to log in as `db_user` to `db_name`, by the database's kind.
    pub async fn credentials(
        &self,
        db_user: &DbUser,
        db_name: &DbName,
    ) -> Result<LoginCredentials, UpstreamError> {
        let configured = self.passwords.get(db_user.as_str()).cloned();
        self.kind
            .credentials(self, db_user, db_name, configured)
            .await
    }

    /// TLS config presenting a certificate for `db_user` (none for cancels).
    fn tls_config(&self, db_user: Option<&str>) -> Result<Arc<ClientConfig>, UpstreamError> {
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
                    .map_err(|e| UpstreamError::Internal(e.to_string()))?;
                Some(
                    ClientCertForCa::new(leaf, self.db_ca_subject.clone())
                        .map_err(|e| UpstreamError::Internal(e.to_string()))?,
                )
            }
            None => None,
        };
        let config = upstream_config(self.mode, self.ca_pem.as_deref(), cert)
            .map_err(|e| UpstreamError::Internal(e.to_string()))?;
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

    /// A connection (after TLS) through the connector, ready for a
    /// StartupMessage, that presents a database-CA certificate for
    /// `db_user` (none for cancels). Provisioning uses it to log in as the
    /// admin user.
    pub(crate) async fn connect(&self, db_user: Option<&str>) -> Result<DbStream, UpstreamError> {
        let endpoint = self.endpoint()?;
        let dial = Dial {
            database: &self.name,
            host: &endpoint.host,
            port: endpoint.port,
            server_name: &endpoint.server_name,
            tls: self.tls_config(db_user)?,
        };
        self.connector.connect(dial).await
    }

    /// Connects and logs in as `db_user` to `db_name`, passing the client's
    /// other startup parameters through. The credentials come from
    /// [`Upstream::credentials`]; what a refusal means is the kind's to say
    /// (cached temporary Redshift credentials it refuses are fetched once more).
    pub async fn login(
        &self,
        db_user: &DbUser,
        db_name: &DbName,
        params: &[(&str, &str)],
    ) -> Result<Established, UpstreamError> {
        let mut credentials = self.credentials(db_user, db_name).await?;
        let mut retried = false;
        loop {
            let result = tokio::time::timeout(
                self.login_timeout,
                self.login_as(&credentials, db_name, params),
            )
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Timeout {
                    database: self.name.clone(),
                    addr: self.server_addr(),
                })
            });
            let Err(UpstreamError::Refused(fields)) = result else {
                return result;
            };
            match self
                .kind
                .after_refusal(self, fields, &credentials, db_user, db_name, retried)
            {
                AfterRefusal::Retry => {
                    retried = true;
                    credentials = self.credentials(db_user, db_name).await?;
                }
                AfterRefusal::Fail(e) => return Err(e),
            }
        }
    }

    /// Sends a CancelRequest for a real backend key. PostgreSQL never answers
    /// one, so success means "delivered".
    pub async fn cancel(&self, key: CancelKey) -> Result<(), UpstreamError> {
        let mut stream = self.connect(None).await?;
        let mut out = BytesMut::new();
        frontend::cancel_request(key.pid, key.secret, &mut out);
        login::send(&mut stream, &mut out).await?;
        // Wait for the server to close so the cancel is processed before we
        // report it delivered.
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }
}
