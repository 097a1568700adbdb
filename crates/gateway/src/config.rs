//! The gateway configuration file (`gateway.yaml`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::names::{DbName, DbUser};
use crate::rbac::RoleSet;

pub mod check;
pub mod locate;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is invalid.
    #[error("invalid configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation.
        source: serde_yaml_ng::Error,
    },
    /// A value is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Something wrong in `gateway.yaml` that serde cannot see, with the key
/// it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Key path from the top of the file (or of the part that reported it),
    /// e.g. `databases[2].tls.ca_cert_file`.
    pub key: String,
    /// The sentence for the operator.
    pub message: String,
}

/// Problems found so far.
#[derive(Debug, Default)]
struct Found(Vec<Problem>);

impl Found {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// The sentence of an error, without the "invalid configuration" prefix
/// a problem's position replaces.
fn sentence(error: ConfigError) -> String {
    match error {
        ConfigError::Invalid(message) => message,
        other => other.to_string(),
    }
}

/// Top-level gateway configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the single TLS port (HTTPS API and tunnels).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Cluster name, shown in CA subjects and status.
    #[serde(default = "default_cluster")]
    pub cluster_name: String,
    /// Host names and addresses clients use to reach the gateway (server certificate SANs).
    #[serde(default = "default_public_addrs")]
    pub public_addrs: Vec<String>,
    /// Directory for the SQLite store.
    pub data_dir: PathBuf,
    /// Where users, CA material, audit events, locks, leases and login
    /// failures live: SQLite in `data_dir` (default) or a shared PostgreSQL
    /// (`store: { postgres: {...} }`).
    #[serde(default, with = "serde_yaml_ng::with::singleton_map")]
    pub store: StoreConfig,
    /// A TLS certificate and key to serve instead of the generated one.
    #[serde(default)]
    pub tls: Option<KeyPairFiles>,
    /// A database CA to use instead of the generated one (databases must trust it).
    #[serde(default)]
    pub database_ca: Option<KeyPairFiles>,
    /// Role files or directories of role files.
    #[serde(default)]
    pub roles: Vec<PathBuf>,
    /// Default session certificate lifetime.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Databases users may reach.
    #[serde(default)]
    pub databases: Vec<DatabaseConfig>,
    /// Tunnel limits.
    #[serde(default)]
    pub limits: Limits,
    /// The gateway's address as browsers reach it, e.g. `https://postern.example.com:3080`
    /// (the single sign-on redirect URI is `<public_url>/v1/login/sso/callback`).
    /// Default: `https://<first public_addr>:<listen port>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Single sign-on connectors (identity providers).
    #[serde(default)]
    pub connectors: Vec<ConnectorConfig>,
    /// Settings of single sign-on itself (the device sign-in's codes).
    #[serde(default)]
    pub sso: SsoSettings,

    // Replicas sharing a store.
    /// This process's name among the replicas sharing the store, in its
    /// cancel keys and audit events. Default: the host name and a random
    /// suffix, new at every start (see [`GatewayConfig::replica_name`]).
    #[serde(default)]
    pub replica: Option<String>,
    /// How long the store keeps audit events.
    #[serde(default)]
    pub audit: AuditConfig,
    /// How the log is written.
    #[serde(default)]
    pub log: LogConfig,
}

/// `sso:` in `gateway.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    /// How long the codes of a device sign-in (`postern login --sso
    /// --device`) live: the person has this long to enter and approve.
    #[serde(default = "default_device_code_ttl", with = "humantime_serde")]
    pub device_code_ttl: Duration,
    /// How long a device waits between polls (RFC 8628 `interval`); one
    /// that polls sooner is told `slow_down`.
    #[serde(default = "default_device_poll_interval", with = "humantime_serde")]
    pub device_poll_interval: Duration,
}

impl Default for SsoSettings {
    fn default() -> Self {
        SsoSettings {
            device_code_ttl: default_device_code_ttl(),
            device_poll_interval: default_device_poll_interval(),
        }
    }
}

fn default_device_code_ttl() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_device_poll_interval() -> Duration {
    Duration::from_secs(5)
}

/// Longest `sso.device_code_ttl` accepted: a code is a short-lived secret.
const MAX_DEVICE_CODE_TTL: Duration = Duration::from_secs(60 * 60);

/// `log:` in `gateway.yaml`.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`; `POSTERN_LOG_FORMAT` overrides it.
    #[serde(default)]
    pub format: LogFormat,
}

/// How each log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when the log is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `audit:` in `gateway.yaml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Events older than this are deleted from the store (hourly, by one
    /// replica at a time), e.g. `90d`. Default: every event is kept.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
}

/// Longest replica name accepted.
const MAX_REPLICA_BYTES: usize = 63;

/// A single sign-on connector, told apart by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ConnectorConfig {
    /// OpenID Connect: the gateway is the relying party.
    Oidc(OidcConnectorConfig),
}

impl ConnectorConfig {
    /// The connector's name (`postern login --sso NAME`).
    pub fn name(&self) -> &str {
        match self {
            ConnectorConfig::Oidc(c) => &c.name,
        }
    }

    /// The protocol, as `GET /v1/connectors` reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorConfig::Oidc(_) => "oidc",
        }
    }
}

/// An OpenID Connect identity provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConnectorConfig {
    /// Connector name.
    pub name: String,
    /// Issuer; `<issuer_url>/.well-known/openid-configuration` must describe it.
    pub issuer_url: String,
    /// The client ID registered for the gateway at the provider.
    pub client_id: String,
    /// File holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Scopes to request; `openid` is always added.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Which claims grant which Postern roles.
    #[serde(default)]
    pub claims_to_roles: Vec<ClaimMapping>,
    /// Claim that becomes the Postern username (default: `preferred_username`,
    /// then `email` when `email_verified` is true, then `sub`). `email` is
    /// used only when verified, whichever way it is chosen.
    #[serde(default)]
    pub username_claim: Option<String>,
    /// CA bundle for the provider's TLS certificate (default: the public web roots).
    #[serde(default)]
    pub ca_cert_file: Option<PathBuf>,
}

/// Grants `roles` to identities whose `claim` has a value matching `value`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    /// Claim name (nested claims as `outer.inner`).
    pub claim: String,
    /// An exact value, or a regular expression wrapped in `^...$` that must
    /// match the whole claim value (`^a|b$` means exactly `a` or `b`).
    pub value: String,
    /// Postern roles to grant.
    pub roles: Vec<String>,
}

impl OidcConnectorConfig {
    /// The roles `claims_to_roles` grants that `roles` does not define, so
    /// a typo is found at start rather than at someone's login; keys are
    /// relative to the connector (`claims_to_roles[0].roles[1]`).
    pub fn unknown_roles(&self, roles: &RoleSet) -> Vec<Problem> {
        let mut found = Found::default();
        for (i, mapping) in self.claims_to_roles.iter().enumerate() {
            for (j, role) in mapping.roles.iter().enumerate() {
                if roles.get(role).is_none() {
                    found.add(
                        format!("claims_to_roles[{i}].roles[{j}]"),
                        format!(
                            "connector {:?}: claims_to_roles grants role {role:?}, which no role file defines",
                            self.name
                        ),
                    );
                }
            }
        }
        found.0
    }

    /// Reads the client secret, if one is configured. Errors never include it.
    pub fn client_secret(&self) -> Result<Option<String>, ConfigError> {
        match (&self.client_secret_file, &self.client_secret_env) {
            (None, None) => Ok(None),
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                ConfigError::Invalid(format!(
                    "connector {:?}: environment variable {var} is not set",
                    self.name
                ))
            }),
            (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
                "connector {:?}: give at most one of client_secret_file or client_secret_env",
                self.name
            ))),
        }
    }
}

/// A certificate and key pair on disk, PEM.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPairFiles {
    /// Certificate (chain), PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM.
    pub key_file: PathBuf,
}

/// Bounds that protect the gateway from misbehaving peers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most concurrent connections with a session certificate.
    pub max_connections: usize,
    /// Most concurrent connections without one yet (TLS handshakes, and
    /// HTTP logins, pings and single sign-on): a budget of their own, so
    /// strangers cannot crowd out signed-in people.
    pub max_unauthenticated: usize,
    /// Most of those from one source address.
    pub max_unauthenticated_per_source: usize,
    /// How long an HTTP connection lives before the gateway closes it
    /// (after the request in progress); clients open a new one.
    #[serde(with = "humantime_serde")]
    pub http_connection_lifetime: Duration,
    /// Time allowed for the TLS handshake and the route frame.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time allowed to connect and log in to a database.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Largest single PostgreSQL message accepted from a client.
    pub max_message_bytes: usize,
    /// CancelRequests one identity may send per second.
    pub cancels_per_second: u32,
    /// Threads that serve connections (default: one per core).
    pub workers: Option<usize>,
    /// How often live sessions look for new locks in the store: a lock
    /// ends its user's sessions within about this time. New connections
    /// and API calls read the locks themselves, at once.
    #[serde(with = "humantime_serde")]
    pub lock_poll: Duration,
    /// How long live sessions may go on after SIGTERM before the gateway
    /// ends them (FATAL `57P01`, "the gateway is restarting; reconnect").
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// Budgets of password logins, which strangers can attempt.
    pub login: LoginLimits,
}

/// Budgets of `/v1/login/local`: guessing a password or a one-time code
/// must be slow, and must not exhaust the gateway's memory (each check
/// runs argon2 with 19 MiB).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimits {
    /// Failed logins in a row after which a user is refused for `lockout`
    /// (Teleport's `max_login_attempts`).
    pub max_failures: u32,
    /// How long a user stays refused after `max_failures` failures.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Failed logins one source address (an IPv6 /64) may make per minute.
    pub per_source_per_minute: u32,
    /// Password checks (argon2) running at once; the rest wait.
    pub argon2_concurrency: usize,
    /// How long a login waits for a password check before it is refused
    /// as busy.
    #[serde(with = "humantime_serde")]
    pub argon2_wait: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            max_failures: 5,
            lockout: Duration::from_secs(30 * 60),
            per_source_per_minute: 30,
            argon2_concurrency: 2,
            argon2_wait: Duration::from_secs(2),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_unauthenticated: 512,
            max_unauthenticated_per_source: 64,
            http_connection_lifetime: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(15),
            max_message_bytes: 256 << 20,
            cancels_per_second: 10,
            workers: None,
            lock_poll: Duration::from_secs(1),
            drain_grace: Duration::from_secs(30),
            login: LoginLimits::default(),
        }
    }
}

/// A database in the catalog (Teleport `db` resource style). In
/// `gateway.yaml` it is one mapping whose `kind` (default `self-hosted`)
/// decides which other keys it may and must have; [`DatabaseKindConfig`]
/// holds those, so a Redshift database cannot carry passwords and an RDS
/// one cannot lack its `aws` block.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "serde_yaml_ng::Mapping")]
pub struct DatabaseConfig {
    /// Catalog name users refer to.
    pub name: String,
    /// Free text shown in listings.
    pub description: String,
    /// Labels matched by role `db_labels`.
    pub labels: BTreeMap<String, String>,
    /// Wire protocol; only `postgres` today.
    pub protocol: String,
    /// How the gateway verifies the database's TLS certificate.
    pub tls: DatabaseTls,
    /// Where the database runs, with that kind's settings.
    pub kind: DatabaseKindConfig,
}

/// The keys every kind of database has.
#[derive(Deserialize)]
struct Common {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default)]
    tls: DatabaseTls,
}

/// One database entry as written: the common keys and those of its kind,
/// nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<K> {
    #[serde(flatten)]
    common: Common,
    #[serde(flatten)]
    kind: K,
}

/// The entry, told apart by `kind`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum TaggedEntry {
    SelfHosted(Entry<SelfHostedConfig>),
    RdsPostgres(Entry<RdsPostgresConfig>),
    RedshiftServerless(Entry<RedshiftServerlessDbConfig>),
}

/// Where a database runs, which decides how the gateway logs in to it.
#[derive(Clone, Debug)]
pub enum DatabaseKindConfig {
    /// PostgreSQL the gateway reaches directly (`kind: self-hosted`, the default).
    SelfHosted(SelfHostedConfig),
    /// Amazon RDS for PostgreSQL (`kind: rds-postgres`).
    RdsPostgres(RdsPostgresConfig),
    /// Amazon Redshift Serverless (`kind: redshift-serverless`).
    RedshiftServerless(RedshiftServerlessDbConfig),
}

/// A self-hosted PostgreSQL: client certificate or a configured password.
#[derive(Clone, Debug, Deserialize)]
pub struct SelfHostedConfig {
    /// `host:port` of the database.
    pub uri: String,
    /// Passwords for db users that log in with SCRAM-SHA-256 or md5.
    #[serde(default)]
    pub passwords: Vec<DbPassword>,
    /// The database user that provisions users automatically; without it,
    /// roles with `create_db_user_mode` other than `off` cannot connect here.
    #[serde(default)]
    pub admin_user: Option<AdminUser>,
}

/// Amazon RDS for PostgreSQL: an IAM authentication token is the password
/// of every db user without a configured one.
#[derive(Clone, Debug, Deserialize)]
pub struct RdsPostgresConfig {
    /// `host:port` of the RDS endpoint.
    pub uri: String,
    /// AWS settings.
    pub aws: AwsConfig<RdsSettings>,
    /// Passwords for db users that do not log in with IAM (e.g. the master user).
    #[serde(default)]
    pub passwords: Vec<DbPassword>,
    /// The database user that provisions users automatically.
    #[serde(default)]
    pub admin_user: Option<AdminUser>,
}

/// Amazon Redshift Serverless: the db user is an IAM role whose temporary
/// database credentials the gateway fetches.
#[derive(Clone, Debug, Deserialize)]
pub struct RedshiftServerlessDbConfig {
    /// `host:port` of the workgroup; default: what `GetWorkgroup` tells.
    #[serde(default)]
    pub uri: Option<String>,
    /// AWS settings.
    pub aws: AwsConfig<RedshiftSettings>,
}

/// The `aws` block of a database; `S` is the kind's own part.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig<S> {
    /// AWS region, e.g. `eu-central-1` (default: taken from the uri's AWS host name).
    #[serde(default)]
    pub region: Option<String>,
    /// The database's AWS account, 12 digits (default: taken from a Redshift
    /// Serverless uri). IAM roles in `db_users` match by name or ARN within it.
    #[serde(default)]
    pub account_id: Option<String>,
    /// A role the gateway assumes first; every other AWS call runs as it.
    #[serde(default)]
    pub assume_role_arn: Option<String>,
    /// External ID sent when assuming `assume_role_arn` (the first hop only).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Endpoint URLs instead of the public AWS ones (private endpoints, tests).
    #[serde(default)]
    pub endpoints: AwsEndpoints,
    /// The kind's own settings.
    #[serde(flatten)]
    pub service: S,
}

/// The RDS part of an `aws` block.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RdsSettings {
    /// RDS settings.
    #[serde(default)]
    pub rds: RdsConfig,
}

/// The Redshift Serverless part of an `aws` block.
#[derive(Clone, Debug, Deserialize)]
pub struct RedshiftSettings {
    /// Redshift Serverless settings.
    pub redshift_serverless: RedshiftServerlessConfig,
}

/// Redshift Serverless settings of a database.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftServerlessConfig {
    /// The workgroup the gateway gets credentials for.
    pub workgroup_name: String,
}

/// RDS settings of a database.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsConfig {
    /// The DB instance identifier, named in error hints.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// AWS API endpoint overrides, e.g. `https://sts.eu-central-1.amazonaws.com`
/// or a VPC endpoint's URL.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsEndpoints {
    /// AWS STS.
    #[serde(default)]
    pub sts: Option<String>,
    /// The Redshift Serverless API.
    #[serde(default)]
    pub redshift_serverless: Option<String>,
}

/// The database user the gateway provisions users as (needs `CREATEROLE`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    /// Database user name; it logs in like any other user (certificate or a
    /// password from `passwords`).
    pub name: DbUser,
    /// Database the admin connects to; default: the session's database.
    #[serde(default)]
    pub default_database: Option<DbName>,
}

/// TLS towards a database. There is no plaintext mode.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTls {
    /// Verification mode.
    #[serde(default)]
    pub mode: TlsMode,
    /// CA bundle that signed the database's certificate (default: public web roots).
    #[serde(default)]
    pub ca_cert_file: Option<PathBuf>,
    /// Name expected in the certificate (default: the host of `uri`).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// How much of the database's certificate is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Chain and host name (default).
    #[default]
    VerifyFull,
    /// Chain only.
    VerifyCa,
    /// Encrypt without verifying; for labs only.
    Insecure,
}

/// The gateway's state store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file in `data_dir`, for a single gateway.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every gateway replica.
    Postgres(PostgresStoreConfig),
}

/// A shared PostgreSQL store. The URL names host, port, user and database;
/// the password comes from a file or the environment, never the URL.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresStoreConfig {
    /// `postgres://user@host:port/dbname`.
    pub url: String,
    /// File whose content (trailing newline trimmed) is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to the store.
    #[serde(default)]
    pub tls: StoreTls,
    /// Connections each gateway keeps open at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// File holding the key-encryption key (base64 of 32 random bytes) that
    /// seals CA private keys in the shared database.
    #[serde(default)]
    pub kek_file: Option<PathBuf>,
    /// Environment variable holding the key-encryption key.
    #[serde(default)]
    pub kek_env: Option<String>,
}

/// TLS settings of the PostgreSQL store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTls {
    /// How the store's certificate is checked.
    #[serde(default)]
    pub mode: StoreTlsMode,
    /// CA bundle for the store's certificate (default: the public web roots).
    #[serde(default)]
    pub ca_cert_file: Option<PathBuf>,
}

/// How the gateway checks the PostgreSQL store's certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreTlsMode {
    /// Chain and host name (default).
    #[default]
    VerifyFull,
    /// Chain only.
    VerifyCa,
    /// No TLS; allowed only when the store's host is a loopback address,
    /// where nothing crosses a network.
    Disable,
}

/// Reads a secret from exactly one of a file (trailing newline trimmed) or
/// an environment variable, each given as `[(config key, value)]`; `what`
/// names the secret in errors, which never include it.
pub fn read_secret(
    what: &str,
    [(file_key, file)]: [(&str, Option<&Path>); 1],
    [(env_key, env)]: [(&str, Option<&str>); 1],
) -> Result<String, ConfigError> {
    match (file, env) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            ConfigError::Invalid(format!("{what}: environment variable {var} is not set"))
        }),
        _ => Err(ConfigError::Invalid(format!(
            "{what}: give exactly one of {file_key} or {env_key}"
        ))),
    }
}

impl PostgresStoreConfig {
    /// The password for the store's user.
    pub fn password(&self) -> Result<String, ConfigError> {
        read_secret(
            "store.postgres password",
            [("password_file", self.password_file.as_deref())],
            [("password_env", self.password_env.as_deref())],
        )
    }

    /// The key-encryption key's text (base64).
    pub fn kek(&self) -> Result<String, ConfigError> {
        read_secret(
            "store.postgres key-encryption key",
            [("kek_file", self.kek_file.as_deref())],
            [("kek_env", self.kek_env.as_deref())],
        )
    }

    /// The parsed URL: host, port, user and database.
    pub fn connection(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid(format!("store.postgres.url: {why}"));
        let config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|_| invalid("not a PostgreSQL URL like postgres://user@host:5432/dbname"))?;
        if config.get_password().is_some() {
            return Err(invalid(
                "holds a password; give it with password_file or password_env instead",
            ));
        }
        if config.get_user().is_none() || config.get_dbname().is_none() {
            return Err(invalid(
                "name the user and the database: postgres://user@host:5432/dbname",
            ));
        }
        match config.get_hosts() {
            [tokio_postgres::config::Host::Tcp(_)] => Ok(config),
            _ => Err(invalid(
                "name exactly one host (a TCP host name or address)",
            )),
        }
    }

    /// Adds what is wrong with `store.postgres` to `found`.
    fn problems(&self, found: &mut Found) {
        let connection = self.connection().map_err(sentence);
        if let Err(why) = &connection {
            found.add("store.postgres.url", why.clone());
        }
        if self.pool_size == 0 {
            found.add(
                "store.postgres.pool_size",
                "store.postgres.pool_size must be at least 1",
            );
        }
        if let Ok(config) = &connection
            && self.tls.mode == StoreTlsMode::Disable
        {
            let host = match config.get_hosts() {
                [tokio_postgres::config::Host::Tcp(host)] => host.as_str(),
                _ => "",
            };
            if !is_loopback(host) {
                found.add(
                    "store.postgres.tls.mode",
                    format!(
                        "store.postgres.tls.mode: disable is allowed only for a loopback host, not {host:?}; the store holds password hashes and sealed CA keys"
                    ),
                );
            }
        }
        for (keys, file, env) in [
            (
                "password_file or password_env",
                self.password_file.is_some(),
                self.password_env.is_some(),
            ),
            (
                "kek_file or kek_env",
                self.kek_file.is_some(),
                self.kek_env.is_some(),
            ),
        ] {
            if file == env {
                found.add(
                    "store.postgres",
                    format!("store.postgres: give exactly one of {keys}"),
                );
            }
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_pool_size() -> usize {
    4
}

/// A secret for one database user, read from a file or the environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbPassword {
    /// The database user.
    pub db_user: String,
    /// File whose content (trailing newline trimmed) is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl DbPassword {
    /// Reads the secret. Errors never include it.
    pub fn read(&self) -> Result<String, ConfigError> {
        read_secret(
            &format!("password for db user {:?}", self.db_user),
            [("password_file", self.password_file.as_deref())],
            [("password_env", self.password_env.as_deref())],
        )
    }
}

/// Keys one kind needs or refuses, with the sentence that says so; serde's
/// own "missing field" would not tell a user what the key is for.
fn explain_keys(kind: &str, entry: &serde_yaml_ng::Mapping) -> Result<(), String> {
    let has = |key: &str| entry.contains_key(key);
    let aws_has = |key: &str| {
        entry
            .get("aws")
            .and_then(|aws| aws.as_mapping())
            .is_some_and(|aws| aws.contains_key(key))
    };
    let needs_aws = || format!("kind {kind} needs an aws block (region, account_id, ...)");
    match kind {
        "self-hosted" if has("aws") => Err(
            "the aws block needs kind: rds-postgres or redshift-serverless".into(),
        ),
        "self-hosted" if !has("uri") => Err("uri is required".into()),
        "rds-postgres" if !has("aws") => Err(needs_aws()),
        "rds-postgres" if !has("uri") => {
            Err("uri (the RDS endpoint host:port) is required".into())
        }
        "rds-postgres" if aws_has("redshift_serverless") => {
            Err("aws.redshift_serverless belongs to kind redshift-serverless".into())
        }
        "redshift-serverless" if !has("aws") => Err(needs_aws()),
        "redshift-serverless" if aws_has("rds") => {
            Err("aws.rds belongs to kind rds-postgres".into())
        }
        "redshift-serverless" if !aws_has("redshift_serverless") => {
            Err("aws.redshift_serverless.workgroup_name is required".into())
        }
        "redshift-serverless" if has("passwords") || has("admin_user") => Err(
            "kind redshift-serverless logs in with IAM credentials and cannot provision users: passwords and admin_user do not apply".into(),
        ),
        _ => Ok(()),
    }
}

impl TryFrom<serde_yaml_ng::Mapping> for DatabaseConfig {
    type Error = String;

    /// Reads one database entry: `kind` defaults to `self-hosted`, and the
    /// entry may hold only the keys of its kind.
    fn try_from(mut entry: serde_yaml_ng::Mapping) -> Result<Self, String> {
        let name = entry
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| "(no name)".to_owned(), |n| format!("{n:?}"));
        if !entry.contains_key("kind") {
            entry.insert("kind".into(), "self-hosted".into());
        }
        if let Some(kind) = entry.get("kind").and_then(|k| k.as_str()) {
            explain_keys(kind, &entry).map_err(|why| format!("database {name}: {why}"))?;
        }
        let tagged: TaggedEntry = serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(entry))
            .map_err(|e| format!("database {name}: {e}"))?;
        let (common, kind) = match tagged {
            TaggedEntry::SelfHosted(e) => (e.common, DatabaseKindConfig::SelfHosted(e.kind)),
            TaggedEntry::RdsPostgres(e) => (e.common, DatabaseKindConfig::RdsPostgres(e.kind)),
            TaggedEntry::RedshiftServerless(e) => {
                (e.common, DatabaseKindConfig::RedshiftServerless(e.kind))
            }
        };
        Ok(DatabaseConfig {
            name: common.name,
            description: common.description,
            labels: common.labels,
            protocol: common.protocol,
            tls: common.tls,
            kind,
        })
    }
}

impl DatabaseKindConfig {
    /// The name in `gateway.yaml` and in the catalog.
    pub fn as_str(&self) -> &'static str {
        match self {
            DatabaseKindConfig::SelfHosted(_) => "self-hosted",
            DatabaseKindConfig::RdsPostgres(_) => "rds-postgres",
            DatabaseKindConfig::RedshiftServerless(_) => "redshift-serverless",
        }
    }

    /// Passwords the gateway holds for db users (none on Redshift).
    pub fn passwords(&self) -> &[DbPassword] {
        match self {
            DatabaseKindConfig::SelfHosted(c) => &c.passwords,
            DatabaseKindConfig::RdsPostgres(c) => &c.passwords,
            DatabaseKindConfig::RedshiftServerless(_) => &[],
        }
    }

    /// The user that provisions users automatically (never on Redshift).
    pub fn admin_user(&self) -> Option<&AdminUser> {
        match self {
            DatabaseKindConfig::SelfHosted(c) => c.admin_user.as_ref(),
            DatabaseKindConfig::RdsPostgres(c) => c.admin_user.as_ref(),
            DatabaseKindConfig::RedshiftServerless(_) => None,
        }
    }

    /// `uri` as written, if any.
    fn uri(&self) -> Option<&str> {
        match self {
            DatabaseKindConfig::SelfHosted(c) => Some(&c.uri),
            DatabaseKindConfig::RdsPostgres(c) => Some(&c.uri),
            DatabaseKindConfig::RedshiftServerless(c) => c.uri.as_deref(),
        }
    }

    /// The `aws` keys both AWS kinds have: region, account, role chain,
    /// endpoints.
    fn aws_access(&self) -> Option<AwsAccess<'_>> {
        match self {
            DatabaseKindConfig::SelfHosted(_) => None,
            DatabaseKindConfig::RdsPostgres(c) => Some(AwsAccess::of(&c.aws)),
            DatabaseKindConfig::RedshiftServerless(c) => Some(AwsAccess::of(&c.aws)),
        }
    }
}

/// The kind-independent part of an `aws` block, borrowed.
pub struct AwsAccess<'a> {
    /// `aws.region` as written.
    pub region: Option<&'a str>,
    /// `aws.account_id` as written.
    pub account_id: Option<&'a str>,
    /// `aws.assume_role_arn`.
    pub assume_role_arn: Option<&'a str>,
    /// `aws.external_id`.
    pub external_id: Option<&'a str>,
    /// `aws.endpoints`.
    pub endpoints: &'a AwsEndpoints,
}

impl<'a> AwsAccess<'a> {
    fn of<S>(aws: &'a AwsConfig<S>) -> Self {
        AwsAccess {
            region: aws.region.as_deref(),
            account_id: aws.account_id.as_deref(),
            assume_role_arn: aws.assume_role_arn.as_deref(),
            external_id: aws.external_id.as_deref(),
            endpoints: &aws.endpoints,
        }
    }
}

impl DatabaseConfig {
    /// Host and port of `uri`; None when there is no uri.
    pub fn host_port(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let Some(uri) = self.kind.uri() else {
            return Ok(None);
        };
        let uri = uri
            .trim_start_matches("postgres://")
            .trim_start_matches("postgresql://");
        let (host, port) = match uri.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| {
                    ConfigError::Invalid(format!("database {:?}: bad port in uri", self.name))
                })?,
            ),
            None => (uri, 5432),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "database {:?}: uri has no host",
                self.name
            )));
        }
        Ok(Some((host.to_owned(), port)))
    }

    /// The `aws` keys of an AWS-hosted database.
    pub fn aws_access(&self) -> Option<AwsAccess<'_>> {
        self.kind.aws_access()
    }

    /// The AWS region: `aws.region`, else the one in an AWS host name of `uri`.
    pub fn aws_region(&self) -> Option<String> {
        let configured = self.aws_access()?.region.map(str::to_owned);
        configured.or_else(|| {
            let host = self.host_port().ok()??.0;
            aws_host_parts(&host).map(|(region, _)| region.to_owned())
        })
    }

    /// The AWS account: `aws.account_id`, else the one in a Redshift
    /// Serverless host name of `uri`.
    pub fn aws_account_id(&self) -> Option<String> {
        let configured = self.aws_access()?.account_id.map(str::to_owned);
        configured.or_else(|| {
            let host = self.host_port().ok()??.0;
            aws_host_parts(&host).and_then(|(_, account)| account.map(str::to_owned))
        })
    }

    /// Adds to `found` what serde cannot check (the kind's keys are there
    /// already); `key` is the entry's path, e.g. `databases[2]`.
    fn problems(&self, key: &str, found: &mut Found) {
        let at = |field: &str| format!("{key}.{field}");
        let invalid = |why: &str| format!("database {:?}: {why}", self.name);
        if self.protocol != "postgres" {
            found.add(
                at("protocol"),
                invalid(&format!(
                    "protocol {:?} is not supported (use postgres)",
                    self.protocol
                )),
            );
        }
        if let Err(e) = self.host_port() {
            found.add(at("uri"), sentence(e));
        }
        if let Some(admin) = self.kind.admin_user()
            && (admin.name.as_str().is_empty()
                || admin
                    .default_database
                    .as_ref()
                    .is_some_and(|d| d.as_str().is_empty()))
        {
            found.add(
                at("admin_user"),
                invalid("admin_user.name and admin_user.default_database must not be empty"),
            );
        }
        let Some(aws) = self.aws_access() else {
            return;
        };
        // Temporary passwords go to the server: it must be the real one.
        if self.tls.mode == TlsMode::Insecure {
            found.add(
                at("tls.mode"),
                invalid(&format!(
                    "tls mode insecure would send AWS credentials to an unverified server; kind {} needs verify-full or verify-ca",
                    self.kind.as_str()
                )),
            );
        }
        if self.aws_region().is_none() {
            found.add(at("aws.region"), invalid("aws.region is required"));
        }
        if let Some(account) = aws.account_id
            && (account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()))
        {
            found.add(
                at("aws.account_id"),
                invalid(&format!("aws.account_id {account:?} must be 12 digits")),
            );
        }
        if let Some(arn) = aws.assume_role_arn
            && !is_role_arn(arn)
        {
            found.add(
                at("aws.assume_role_arn"),
                invalid(&format!(
                    "aws.assume_role_arn {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                )),
            );
        }
        if aws.external_id.is_some() && aws.assume_role_arn.is_none() {
            found.add(
                at("aws.external_id"),
                invalid("aws.external_id is sent when assuming aws.assume_role_arn; set that too"),
            );
        }
        for (what, url) in [
            ("sts", &aws.endpoints.sts),
            ("redshift_serverless", &aws.endpoints.redshift_serverless),
        ] {
            let Some(url) = url else { continue };
            let why = match url::Url::parse(url) {
                Err(e) => format!("aws.endpoints.{what} {url:?} is not a URL: {e}"),
                Ok(parsed) if !matches!(parsed.scheme(), "https" | "http") => {
                    format!("aws.endpoints.{what} {url:?} must be an http(s) URL")
                }
                Ok(_) => continue,
            };
            found.add(at(&format!("aws.endpoints.{what}")), invalid(&why));
        }
        if let DatabaseKindConfig::RedshiftServerless(rs) = &self.kind {
            if rs.aws.service.redshift_serverless.workgroup_name.is_empty() {
                found.add(
                    at("aws.redshift_serverless.workgroup_name"),
                    invalid("aws.redshift_serverless.workgroup_name is empty"),
                );
            }
            if self.aws_account_id().is_none() {
                found.add(
                    at("aws.account_id"),
                    invalid("aws.account_id is required (IAM role names in db_users are resolved in it)"),
                );
            }
        }
    }
}

/// Region and (for Redshift Serverless) account in an AWS endpoint host name:
/// `NAME.ID.REGION.rds.amazonaws.com`,
/// `WORKGROUP.ACCOUNT.REGION.redshift-serverless.amazonaws.com`.
fn aws_host_parts(host: &str) -> Option<(&str, Option<&str>)> {
    let host = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [.., account, region, "redshift-serverless"] => Some((region, Some(account))),
        [.., region, "rds"] => Some((region, None)),
        _ => None,
    }
}

/// Whether `value` has the shape `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
pub fn is_role_arn(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|r| !r.is_empty() && !r.ends_with('/'))
    )
}

impl GatewayConfig {
    /// Reads and validates a configuration file; relative paths are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, _text) = Self::parse_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a configuration file without the checks serde cannot make,
    /// relative paths resolved; also returns the file's text.
    fn parse_file(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: GatewayConfig =
            serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok((config, text))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        self.roles.iter_mut().for_each(fix);
        for (_, file) in self.files_mut() {
            fix(file);
        }
    }

    /// Every file the gateway reads besides role files, with its key:
    /// certificates, keys and secrets.
    fn files_mut(&mut self) -> Vec<(String, &mut PathBuf)> {
        let mut files = Vec::new();
        if let StoreConfig::Postgres(store) = &mut self.store {
            for (key, file) in [
                ("password_file", &mut store.password_file),
                ("kek_file", &mut store.kek_file),
                ("tls.ca_cert_file", &mut store.tls.ca_cert_file),
            ] {
                if let Some(file) = file {
                    files.push((format!("store.postgres.{key}"), file));
                }
            }
        }
        for (section, pair) in [
            ("tls", &mut self.tls),
            ("database_ca", &mut self.database_ca),
        ] {
            if let Some(pair) = pair {
                files.push((format!("{section}.cert_file"), &mut pair.cert_file));
                files.push((format!("{section}.key_file"), &mut pair.key_file));
            }
        }
        for (i, ConnectorConfig::Oidc(c)) in self.connectors.iter_mut().enumerate() {
            for (key, file) in [
                ("client_secret_file", &mut c.client_secret_file),
                ("ca_cert_file", &mut c.ca_cert_file),
            ] {
                if let Some(file) = file {
                    files.push((format!("connectors[{i}].{key}"), file));
                }
            }
        }
        for (i, db) in self.databases.iter_mut().enumerate() {
            if let Some(ca) = &mut db.tls.ca_cert_file {
                files.push((format!("databases[{i}].tls.ca_cert_file"), ca));
            }
            let passwords = match &mut db.kind {
                DatabaseKindConfig::SelfHosted(c) => &mut c.passwords,
                DatabaseKindConfig::RdsPostgres(c) => &mut c.passwords,
                DatabaseKindConfig::RedshiftServerless(_) => continue,
            };
            for (j, pw) in passwords.iter_mut().enumerate() {
                if let Some(file) = &mut pw.password_file {
                    files.push((format!("databases[{i}].passwords[{j}].password_file"), file));
                }
            }
        }
        files
    }

    /// Every environment variable that holds a secret the gateway reads,
    /// with its key.
    fn secret_variables(&self) -> Vec<(String, &str)> {
        let mut variables = Vec::new();
        if let StoreConfig::Postgres(store) = &self.store {
            for (key, var) in [
                ("password_env", &store.password_env),
                ("kek_env", &store.kek_env),
            ] {
                if let Some(var) = var {
                    variables.push((format!("store.postgres.{key}"), var.as_str()));
                }
            }
        }
        for (i, ConnectorConfig::Oidc(c)) in self.connectors.iter().enumerate() {
            if let Some(var) = &c.client_secret_env {
                variables.push((format!("connectors[{i}].client_secret_env"), var.as_str()));
            }
        }
        for (i, db) in self.databases.iter().enumerate() {
            for (j, pw) in db.kind.passwords().iter().enumerate() {
                if let Some(var) = &pw.password_env {
                    variables.push((
                        format!("databases[{i}].passwords[{j}].password_env"),
                        var.as_str(),
                    ));
                }
            }
        }
        variables
    }

    /// Checks what serde cannot: unique names, known protocols, parseable
    /// URIs; the first problem of [`GatewayConfig::problems`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(ConfigError::Invalid(problem.message)),
            None => Ok(()),
        }
    }

    /// Every problem serde cannot see, in the order the gateway checks them.
    pub fn problems(&self) -> Vec<Problem> {
        let mut found = Found::default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let key = format!("databases[{i}]");
            if !seen.insert(db.name.as_str()) {
                found.add(
                    format!("{key}.name"),
                    format!("database {:?} is defined twice", db.name),
                );
            }
            db.problems(&key, &mut found);
        }
        let login = &self.limits.login;
        if login.max_failures == 0
            || login.per_source_per_minute == 0
            || login.argon2_concurrency == 0
        {
            found.add(
                "limits.login",
                "limits.login: max_failures, per_source_per_minute and argon2_concurrency must be at least 1",
            );
        }
        if let StoreConfig::Postgres(store) = &self.store {
            store.problems(&mut found);
        }
        if let Some(name) = &self.replica
            && (name.is_empty()
                || name.len() > MAX_REPLICA_BYTES
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            found.add(
                "replica",
                format!(
                    "replica {name:?} must be 1 to {MAX_REPLICA_BYTES} letters, digits, '-', '_' or '.'"
                ),
            );
        }
        if self.audit.retention.is_some_and(|r| r.is_zero()) {
            found.add(
                "audit.retention",
                "audit.retention must be longer than zero (leave it out to keep every event)",
            );
        }
        self.sso_problems(&mut found);
        found.0
    }

    /// The name this process goes by among replicas: `replica` when set,
    /// else the host name and a random suffix, so two processes on one host
    /// (or a restarted one) never share a name. Call it once per process.
    pub fn replica_name(&self) -> String {
        match &self.replica {
            Some(name) => name.clone(),
            None => {
                let host = gethostname::gethostname();
                let host: String = host
                    .to_string_lossy()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                    .take(MAX_REPLICA_BYTES - 7)
                    .collect();
                format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
            }
        }
    }

    fn sso_problems(&self, found: &mut Found) {
        let device = &self.sso;
        let whole_seconds = |d: Duration| d.subsec_nanos() == 0 && d.as_secs() >= 1;
        if !whole_seconds(device.device_code_ttl) || device.device_code_ttl > MAX_DEVICE_CODE_TTL {
            found.add(
                "sso.device_code_ttl",
                format!(
                    "sso.device_code_ttl must be whole seconds from 1s to {}",
                    humantime::format_duration(MAX_DEVICE_CODE_TTL)
                ),
            );
        }
        if !whole_seconds(device.device_poll_interval)
            || device.device_poll_interval >= device.device_code_ttl
        {
            found.add(
                "sso.device_poll_interval",
                "sso.device_poll_interval must be whole seconds, at least 1s and shorter than \
                 sso.device_code_ttl",
            );
        }
        if let Some(url) = &self.public_url {
            match url::Url::parse(url) {
                Err(e) => found.add("public_url", format!("public_url {url:?} is not a URL: {e}")),
                Ok(parsed) if parsed.scheme() != "https" || parsed.host().is_none() => found.add(
                    "public_url",
                    format!(
                        "public_url {url:?} must be https://HOST[:PORT] (the gateway port speaks TLS)"
                    ),
                ),
                Ok(_) => {}
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, connector) in self.connectors.iter().enumerate() {
            let at = |field: &str| format!("connectors[{i}].{field}");
            let name = connector.name();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                found.add(
                    at("name"),
                    format!("connector name {name:?} must be letters, digits, '-', '_' or '.'"),
                );
            } else if !names.insert(name) {
                found.add(at("name"), format!("connector {name:?} is defined twice"));
            }
            let ConnectorConfig::Oidc(oidc) = connector;
            match url::Url::parse(&oidc.issuer_url) {
                Err(e) => found.add(
                    at("issuer_url"),
                    format!(
                        "connector {name:?}: issuer_url {:?} is not a URL: {e}",
                        oidc.issuer_url
                    ),
                ),
                Ok(issuer) => {
                    // Plain HTTP only to a provider on this machine (development, tests).
                    let loopback = match issuer.host() {
                        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                        Some(url::Host::Domain(d)) => d == "localhost",
                        None => false,
                    };
                    if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
                        found.add(
                            at("issuer_url"),
                            format!(
                                "connector {name:?}: issuer_url {:?} must be https:// (http:// only on loopback)",
                                oidc.issuer_url
                            ),
                        );
                    }
                }
            }
            for (j, mapping) in oidc.claims_to_roles.iter().enumerate() {
                if let Some(Err(e)) = crate::rbac::whole_value_regex(&mapping.value) {
                    found.add(
                        at(&format!("claims_to_roles[{j}].value")),
                        format!(
                            "connector {name:?}: claims_to_roles value {:?} is not a valid regular expression: {e}",
                            mapping.value
                        ),
                    );
                }
            }
        }
    }

    /// The URL browsers use to reach this gateway, once it listens on `port`.
    pub fn public_url_for(&self, port: u16) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = self
                    .public_addrs
                    .first()
                    .map_or("localhost", String::as_str);
                // A bare IPv6 address needs brackets in a URL.
                if host.contains(':') && !host.starts_with('[') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3080))
}
fn default_cluster() -> String {
    "postern".into()
}
fn default_public_addrs() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_protocol() -> String {
    "postgres".into()
}
fn default_scopes() -> Vec<String> {
    // `groups` is not a standard scope and some providers refuse unknown
    // scopes outright; add it where the provider offers it.
    vec!["openid".into(), "profile".into(), "email".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(
            &path,
            r#"
listen: 127.0.0.1:0
data_dir: state
roles: [roles]
session_ttl: 2h
databases:
  - name: app
    labels: { env: dev }
    uri: localhost:5432
    tls: { mode: verify-full, ca_cert_file: pg-ca.pem }
    passwords:
      - { db_user: scramuser, password_env: APP_PW }
    admin_user: { name: postern_admin, default_database: postgres }
"#,
        )
        .unwrap();
        let config = GatewayConfig::load(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("state"));
        assert_eq!(config.session_ttl, Duration::from_secs(7200));
        let db = &config.databases[0];
        assert_eq!(
            db.host_port().unwrap(),
            Some(("localhost".to_string(), 5432u16))
        );
        assert_eq!(db.kind.as_str(), "self-hosted");
        assert_eq!(db.tls.ca_cert_file, Some(dir.path().join("pg-ca.pem")));
        let admin = db.kind.admin_user().unwrap();
        assert_eq!(admin.name.as_str(), "postern_admin");
        assert_eq!(
            admin.default_database.as_ref().map(DbName::as_str),
            Some("postgres")
        );
    }

    #[test]
    fn connectors_parse_and_public_url_defaults_to_the_listen_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(
            &path,
            r#"
listen: 127.0.0.1:0
data_dir: state
public_addrs: [gw.example.com]
connectors:
  - name: corp
    type: oidc
    issuer_url: https://idp.example.com
    client_id: postern
    client_secret_file: corp.secret
    claims_to_roles:
      - { claim: groups, value: dba, roles: [dba] }
      - { claim: groups, value: "^eng-.*$", roles: [dev] }
"#,
        )
        .unwrap();
        let config = GatewayConfig::load(&path).unwrap();
        let ConnectorConfig::Oidc(corp) = &config.connectors[0];
        assert_eq!(corp.name, "corp");
        assert_eq!(corp.scopes, vec!["openid", "profile", "email"]);
        assert_eq!(
            corp.client_secret_file,
            Some(dir.path().join("corp.secret"))
        );
        assert_eq!(config.public_url_for(3080), "https://gw.example.com:3080");

        let bad = |yaml: &str| {
            let config: GatewayConfig = serde_yaml_ng::from_str(yaml).unwrap();
            config.validate().unwrap_err().to_string()
        };
        let twice = "data_dir: x\nconnectors:\n  - { name: a, type: oidc, issuer_url: 'https://i', client_id: c }\n  - { name: a, type: oidc, issuer_url: 'https://i', client_id: c }\n";
        assert!(bad(twice).contains("defined twice"));
        let regex = "data_dir: x\nconnectors:\n  - { name: a, type: oidc, issuer_url: 'https://i', client_id: c, claims_to_roles: [{ claim: g, value: '^(a$', roles: [r] }] }\n";
        assert!(bad(regex).contains("regular expression"));
        assert!(bad("data_dir: x\npublic_url: http://gw:3080\n").contains("https"));
        let plain = "data_dir: x\nconnectors:\n  - { name: a, type: oidc, issuer_url: 'http://idp.example.com', client_id: c }\n";
        assert!(bad(plain).contains("https"));
        let unknown = "data_dir: x\nconnectors:\n  - { name: a, type: saml, issuer_url: 'https://i', client_id: c }\n";
        assert!(serde_yaml_ng::from_str::<GatewayConfig>(unknown).is_err());
    }

    #[test]
    fn device_code_settings_default_parse_and_are_checked() {
        let config: GatewayConfig = serde_yaml_ng::from_str("data_dir: x\n").unwrap();
        assert_eq!(config.sso.device_code_ttl, Duration::from_secs(600));
        assert_eq!(config.sso.device_poll_interval, Duration::from_secs(5));
        let parse = |yaml: &str| {
            let config: GatewayConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
            config
                .validate()
                .map_err(|e| e.to_string())
                .map(|()| config)
        };
        let config =
            parse("data_dir: x\nsso: { device_code_ttl: 2m, device_poll_interval: 1s }\n").unwrap();
        assert_eq!(config.sso.device_code_ttl, Duration::from_secs(120));
        assert_eq!(config.sso.device_poll_interval, Duration::from_secs(1));
        for bad in [
            "sso: { device_code_ttl: 0s }",
            "sso: { device_code_ttl: 2h }",
            "sso: { device_code_ttl: 1500ms }",
            "sso: { device_poll_interval: 0s }",
            "sso: { device_code_ttl: 5s, device_poll_interval: 5s }",
        ] {
            let error = parse(&format!("data_dir: x\n{bad}\n")).unwrap_err();
            assert!(error.contains("sso.device_"), "{bad}: {error}");
        }
        assert!(
            parse("data_dir: x\nsso: { device_ttl: 1m }\n").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn aws_kinds_parse_and_are_checked() {
        let parse = |yaml: &str| -> Result<GatewayConfig, String> {
            let config: GatewayConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
            config.validate().map_err(|e| e.to_string())?;
            Ok(config)
        };
        let config = parse(
            r#"
data_dir: x
databases:
  - name: warehouse
    kind: redshift-serverless
    aws:
      region: eu-central-1
      account_id: "123456789012"
      assume_role_arn: arn:aws:iam::123456789012:role/postern-gateway
      external_id: corp-7
      redshift_serverless: { workgroup_name: analytics }
      endpoints: { sts: "http://127.0.0.1:5000", redshift_serverless: "http://127.0.0.1:5001" }
  - name: orders
    kind: rds-postgres
    uri: orders.c9akciq32.eu-west-1.rds.amazonaws.com:5432
    aws: { rds: { instance_id: orders } }
  - name: found
    kind: redshift-serverless
    uri: wg.210987654321.us-east-1.redshift-serverless.amazonaws.com:5439
    aws: { redshift_serverless: { workgroup_name: wg } }
"#,
        )
        .unwrap();
        let [warehouse, orders, found] = &config.databases[..] else {
            panic!("three databases")
        };
        assert_eq!(warehouse.kind.as_str(), "redshift-serverless");
        assert_eq!(warehouse.host_port().unwrap(), None);
        assert_eq!(warehouse.aws_account_id().as_deref(), Some("123456789012"));
        assert_eq!(orders.kind.as_str(), "rds-postgres");
        assert_eq!(orders.aws_region().as_deref(), Some("eu-west-1"));
        assert_eq!(found.aws_region().as_deref(), Some("us-east-1"));
        assert_eq!(found.aws_account_id().as_deref(), Some("210987654321"));

        let bad = |db: &str| parse(&format!("data_dir: x\ndatabases:\n  - {db}\n")).unwrap_err();
        for (db, why) in [
            ("{ name: a }", "uri is required"),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1' }",
                "needs an aws block",
            ),
            ("{ name: a, uri: 'h:1', aws: { region: r } }", "needs kind"),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', aws: {} }",
                "aws.region is required",
            ),
            ("{ name: a, kind: rds-postgres, aws: { region: r } }", "uri"),
            (
                "{ name: a, kind: redshift-serverless, aws: { region: r, account_id: '123456789012' } }",
                "workgroup_name is required",
            ),
            (
                "{ name: a, kind: redshift-serverless, aws: { region: r, redshift_serverless: { workgroup_name: w } } }",
                "account_id is required",
            ),
            (
                "{ name: a, kind: redshift-serverless, aws: { region: r, account_id: '12', redshift_serverless: { workgroup_name: w } } }",
                "12 digits",
            ),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', aws: { region: r, external_id: x } }",
                "set that too",
            ),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', aws: { region: r, assume_role_arn: 'role/x' } }",
                "not an IAM role ARN",
            ),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', tls: { mode: insecure }, aws: { region: r } }",
                "unverified server",
            ),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', aws: { region: r, endpoints: { sts: 'ftp://x' } } }",
                "http(s) URL",
            ),
        ] {
            let error = bad(db);
            assert!(error.contains(why), "{db}: {error}");
        }
        assert!(is_role_arn("arn:aws:iam::123456789012:role/team/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
    }

    /// Every `databases:` example in the README, read from the README
    /// itself so the two cannot drift apart.
    #[test]
    fn the_readme_database_examples_parse_and_validate() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```yaml\n")
            .skip(1)
            .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
            .filter(|block| block.contains("databases:"))
            .collect();
        assert!(blocks.len() >= 2, "README examples not found");
        let mut kinds = std::collections::BTreeSet::new();
        for block in blocks {
            let mut document: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(block).unwrap();
            let databases = document.remove("databases").unwrap();
            let databases: Vec<DatabaseConfig> =
                serde_yaml_ng::from_value(databases).unwrap_or_else(|e| panic!("{e}\n{block}"));
            for (i, db) in databases.iter().enumerate() {
                let mut found = Found::default();
                db.problems(&format!("databases[{i}]"), &mut found);
                assert_eq!(found.0, [], "{block}");
                kinds.insert(db.kind.as_str());
            }
            // A whole gateway.yaml (not only its databases) has no problem
            // either, not even after the first.
            if block.contains("data_dir:") || block.contains("store:") {
                let config: GatewayConfig = serde_yaml_ng::from_str(block).unwrap();
                assert_eq!(config.problems(), [], "{block}");
            }
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["rds-postgres", "redshift-serverless", "self-hosted"]
        );
    }

    #[test]
    fn each_kind_holds_only_its_own_keys() {
        let error = |db: &str| {
            serde_yaml_ng::from_str::<GatewayConfig>(&format!(
                "data_dir: x\ndatabases:\n  - {db}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        for (db, why) in [
            (
                "{ name: a, kind: redshift-serverless, passwords: [], aws: { region: r, account_id: '123456789012', redshift_serverless: { workgroup_name: w } } }",
                "passwords and admin_user do not apply",
            ),
            (
                "{ name: a, kind: redshift-serverless, aws: { region: r, rds: {}, redshift_serverless: { workgroup_name: w } } }",
                "aws.rds belongs to kind rds-postgres",
            ),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', aws: { region: r, redshift_serverless: { workgroup_name: w } } }",
                "belongs to kind redshift-serverless",
            ),
            (
                "{ name: a, uri: 'h:1', aws_typo: 1 }",
                "unknown field `aws_typo`",
            ),
            (
                "{ name: a, kind: rds-postgres, uri: 'h:1', aws: { region: r, regoin: s } }",
                "unknown field `regoin`",
            ),
            (
                "{ name: a, kind: mysql, uri: 'h:1' }",
                "unknown variant `mysql`",
            ),
        ] {
            let error = error(db);
            assert!(error.contains(why), "{db}: {error}");
        }
    }

    #[test]
    fn every_problem_is_collected_with_its_key_and_the_first_refuses_a_start() {
        let config: GatewayConfig = serde_yaml_ng::from_str(
            "data_dir: x\nreplica: 'a b'\npublic_url: http://gw\ndatabases:\n  - { name: a, uri: 'h:x' }\n  - { name: a, uri: 'h:1', protocol: mysql }\n",
        )
        .unwrap();
        let problems = config.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "databases[0].uri",
                "databases[1].name",
                "databases[1].protocol",
                "replica",
                "public_url"
            ]
        );
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: database \"a\": bad port in uri"
        );
    }

    #[test]
    fn claims_to_roles_must_name_defined_roles() {
        let roles = RoleSet::from_roles(
            RoleSet::from_yaml_documents("kind: role\nversion: v7\nmetadata: { name: dba }\n")
                .unwrap(),
        )
        .unwrap();
        let config: GatewayConfig = serde_yaml_ng::from_str(
            "data_dir: x\nconnectors:\n  - { name: c, type: oidc, issuer_url: 'https://i', client_id: c, claims_to_roles: [{ claim: g, value: v, roles: [dba, dbas] }] }\n",
        )
        .unwrap();
        let ConnectorConfig::Oidc(oidc) = &config.connectors[0];
        assert_eq!(
            oidc.unknown_roles(&roles),
            [Problem {
                key: "claims_to_roles[0].roles[1]".into(),
                message: "connector \"c\": claims_to_roles grants role \"dbas\", which no role file defines".into(),
            }]
        );
    }

    #[test]
    fn typos_and_plaintext_wishes_are_errors() {
        let err = serde_yaml_ng::from_str::<GatewayConfig>("data_dir: x\nlisten_addr: 1\n");
        assert!(err.is_err(), "unknown keys must not be ignored");
        let err = serde_yaml_ng::from_str::<DatabaseTls>("mode: disable\n");
        assert!(err.is_err(), "there is no plaintext mode");
    }

    #[test]
    fn the_store_section_parses_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        let load = |store: &str| {
            std::fs::write(&path, format!("data_dir: state\nstore:\n{store}")).unwrap();
            GatewayConfig::load(&path)
        };
        let config = load(
            "  postgres:
    url: postgres://postern@db.example.com:5432/postern
    password_file: store.pw
    tls: { ca_cert_file: store-ca.pem }
    kek_env: POSTERN_KEK
",
        )
        .unwrap();
        let StoreConfig::Postgres(pg) = &config.store else {
            panic!("{:?}", config.store);
        };
        assert_eq!(pg.password_file, Some(dir.path().join("store.pw")));
        assert_eq!(pg.tls.ca_cert_file, Some(dir.path().join("store-ca.pem")));
        assert_eq!((pg.tls.mode, pg.pool_size), (StoreTlsMode::VerifyFull, 4));
        assert!(matches!(
            load("  sqlite\n").unwrap().store,
            StoreConfig::Sqlite
        ));

        let base = "    password_env: PW\n    kek_env: KEK\n";
        for (store, why) in [
            (
                format!("  postgres:\n    url: postgres://u:secret@h/db\n{base}"),
                "holds a password",
            ),
            (
                format!(
                    "  postgres:\n    url: postgres://u@db.example.com/db\n    tls: {{ mode: disable }}\n{base}"
                ),
                "disable is allowed only for a loopback host",
            ),
            (
                "  postgres:\n    url: postgres://u@h/db\n    password_env: PW\n".to_string(),
                "exactly one of kek_file or kek_env",
            ),
            (
                format!("  postgres:\n    url: postgres://u@h/db\n    pool_size: 0\n{base}"),
                "pool_size",
            ),
        ] {
            let err = load(&store).unwrap_err().to_string();
            assert!(err.contains(why), "{store}: {err}");
        }
        load(&format!(
            "  postgres:\n    url: postgres://u@127.0.0.1/db\n    tls: {{ mode: disable }}\n{base}"
        ))
        .unwrap();
    }
}
