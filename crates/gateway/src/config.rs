//! The gateway configuration file (`gateway.yaml`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// Most concurrent connections on the gateway port.
    pub max_connections: usize,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(15),
            max_message_bytes: 256 << 20,
            cancels_per_second: 10,
        }
    }
}

/// A database in the catalog (Teleport `db` resource style).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Catalog name users refer to.
    pub name: String,
    /// Free text shown in listings.
    #[serde(default)]
    pub description: String,
    /// Labels matched by role `db_labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Wire protocol; only `postgres` today.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `host:port` of the database.
    pub uri: String,
    /// How the gateway verifies the database's TLS certificate.
    #[serde(default)]
    pub tls: DatabaseTls,
    /// Passwords for db users that log in with SCRAM-SHA-256 or md5.
    #[serde(default)]
    pub passwords: Vec<DbPassword>,
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
        match (&self.password_file, &self.password_env) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "password for db user {:?}: environment variable {var} is not set",
                    self.db_user
                ))
            }),
            _ => Err(ConfigError::Invalid(format!(
                "password for db user {:?}: give exactly one of password_file or password_env",
                self.db_user
            ))),
        }
    }
}

impl DatabaseConfig {
    /// Host and port of `uri`.
    pub fn host_port(&self) -> Result<(String, u16), ConfigError> {
        let uri = self.uri.trim_start_matches("postgres://");
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
        Ok((host.to_owned(), port))
    }
}

impl GatewayConfig {
    /// Reads and validates a configuration file; relative paths are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
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
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        self.roles.iter_mut().for_each(fix);
        for pair in [&mut self.tls, &mut self.database_ca].into_iter().flatten() {
            fix(&mut pair.cert_file);
            fix(&mut pair.key_file);
        }
        for db in &mut self.databases {
            if let Some(ca) = &mut db.tls.ca_cert_file {
                fix(ca);
            }
            for pw in &mut db.passwords {
                if let Some(f) = &mut pw.password_file {
                    fix(f);
                }
            }
        }
    }

    /// Checks what serde cannot: unique names, known protocols, parseable URIs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for db in &self.databases {
            if !seen.insert(db.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "database {:?} is defined twice",
                    db.name
                )));
            }
            if db.protocol != "postgres" {
                return Err(ConfigError::Invalid(format!(
                    "database {:?}: protocol {:?} is not supported (use postgres)",
                    db.name, db.protocol
                )));
            }
            db.host_port()?;
        }
        Ok(())
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
"#,
        )
        .unwrap();
        let config = GatewayConfig::load(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("state"));
        assert_eq!(config.session_ttl, Duration::from_secs(7200));
        let db = &config.databases[0];
        assert_eq!(db.host_port().unwrap(), ("localhost".to_string(), 5432u16));
        assert_eq!(db.tls.ca_cert_file, Some(dir.path().join("pg-ca.pem")));
    }

    #[test]
    fn typos_and_plaintext_wishes_are_errors() {
        let err = serde_yaml_ng::from_str::<GatewayConfig>("data_dir: x\nlisten_addr: 1\n");
        assert!(err.is_err(), "unknown keys must not be ignored");
        let err = serde_yaml_ng::from_str::<DatabaseTls>("mode: disable\n");
        assert!(err.is_err(), "there is no plaintext mode");
    }
}
