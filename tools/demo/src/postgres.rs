//! The demo's PostgreSQL: a long-lived cluster in the state directory, made
//! and started with the tests' fixture steps (`postern_tests::pg`), with the
//! sample data of `sql/*.sql` loaded by psql.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use postern_tests::pg::{self, Postmaster, ServerSetup};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::log;

/// Who may log in how. First match wins.
const HBA: &str = "\
# Written by scripts/demo on every run. First match wins.
# Administration over the unix socket only.
local   all all                     trust
# demo_writer: SCRAM password, which the gateway holds.
hostssl all demo_writer 127.0.0.1/32 scram-sha-256
# The gateway replicas' shared store (scripts/demo --replicas N).
hostssl postern_store postern_store 127.0.0.1/32 scram-sha-256
# Everyone else over TCP: a client certificate whose CN is the role name,
# signed by the gateway's database CA (ssl_ca_file).
hostssl all all         127.0.0.1/32 cert
# Never plaintext over TCP.
host    all all         127.0.0.1/32 reject
";

/// The demo's settings on top of the fixture's (TLS on, loopback only).
const SETTINGS: &str = "\
shared_buffers = 128MB
log_connections = off
";

const ROLES_SQL: &str = include_str!("../sql/roles.sql");
const GRANTS_SQL: &str = include_str!("../sql/grants.sql");
const SHOP_SQL: &str = include_str!("../sql/shop.sql");
const ANALYTICS_SQL: &str = include_str!("../sql/analytics.sql");

/// Unix socket paths are limited to 107 bytes; leave room for the name.
const MAX_SOCKET_DIR: usize = 90;

/// Where the cluster's files live: normally DIR/pg.
pub struct Cluster {
    home: PathBuf,
}

impl Cluster {
    /// Finds (and creates) the cluster's home for state directory `dir`.
    ///
    /// Under root the server runs as `postgres`, which must be able to reach
    /// it: `dir` is made traversable (0711; its secrets stay 0600) when its
    /// parent already is, otherwise (e.g. `dir` under /root) the PostgreSQL
    /// part lives in the postgres user's home, linked as DIR/pg.
    pub async fn locate(dir: &Path) -> anyhow::Result<Cluster> {
        let version = Command::new(pg::bindir().join("postgres"))
            .arg("--version")
            .output()
            .await
            .context("run postgres --version")?;
        log(format!(
            "PostgreSQL: {} from {}, run as OS user {}",
            String::from_utf8_lossy(&version.stdout).trim(),
            pg::bindir().display(),
            pg::server_user()
        ));

        let link = dir.join("pg");
        let mut home = link.clone();
        if !pg::server_user_can_enter(dir) {
            if dir.parent().is_some_and(pg::server_user_can_enter) {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o711))?;
            } else {
                home = server_user_home()?.join(format!("postern-demo-{}", short_hash(dir)));
                log(format!(
                    "{} cannot reach {}: keeping PostgreSQL files in {} (linked as {})",
                    pg::server_user(),
                    dir.display(),
                    home.display(),
                    link.display()
                ));
                if link.exists() && !link.is_symlink() {
                    bail!(
                        "{} exists but is not the link to {}; remove it",
                        link.display(),
                        home.display()
                    );
                }
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(&home, &link)?;
            }
        }
        let cluster = Cluster { home };
        fs::create_dir_all(cluster.socket_dir())
            .with_context(|| format!("create {}", cluster.home.display()))?;
        fs::set_permissions(&cluster.home, fs::Permissions::from_mode(0o700))?;
        pg::give_to_server_user(&cluster.home);
        let socket = cluster.socket_dir();
        if socket.as_os_str().len() > MAX_SOCKET_DIR {
            bail!(
                "state directory path too long for a unix socket ({}); use a shorter --dir",
                socket.display()
            );
        }
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }

    /// Directory of the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.home.join("socket")
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.home.join("postgres.log")
    }

    /// Stops a server left by an earlier run that was killed.
    pub fn stop_leftover(&self) {
        if self.data_dir().join("PG_VERSION").is_file() && pg::stop_leftover(&self.data_dir()) {
            log("stopping a PostgreSQL left by an earlier run");
        }
    }

    /// Makes the cluster on first use, gives it fresh TLS files trusting
    /// `client_ca_pem` for client certificates, and starts it on `port`;
    /// returns the server and the PEM of its server certificate's CA.
    pub async fn start(
        &self,
        client_ca_pem: &str,
        port: u16,
    ) -> anyhow::Result<(Postmaster, String)> {
        let data_dir = self.data_dir();
        if !data_dir.join("PG_VERSION").is_file() {
            log(format!("initdb {}", data_dir.display()));
            // initdb into a scratch directory renamed when complete, so an
            // interrupted run never leaves a half-made cluster behind.
            let scratch = self.home.join("data.initdb");
            let _ = fs::remove_dir_all(&scratch);
            pg::initdb(&scratch)
                .await
                .map_err(|e| anyhow::anyhow!("initdb failed: {e}"))?;
            fs::rename(&scratch, &data_dir)?;
        }
        let server_ca_pem = pg::configure(
            &data_dir,
            &ServerSetup {
                socket_dir: &self.socket_dir(),
                client_ca_pem,
                hba: HBA,
                settings: SETTINGS,
            },
        );
        log(format!(
            "starting PostgreSQL on 127.0.0.1:{port} (log {})",
            self.log_path().display()
        ));
        let port_arg = port.to_string();
        let mut postmaster = Postmaster::spawn(&data_dir, &["-p", &port_arg], &self.log_path());
        if postmaster
            .wait_ready(&self.socket_dir(), port)
            .await
            .is_err()
        {
            bail!("PostgreSQL did not start");
        }
        Ok((postmaster, server_ca_pem))
    }

    /// Roles, databases and sample rows; every statement is idempotent, so
    /// a second run converges on the same state.
    pub async fn load_sample_data(&self, port: u16, writer_password: &str) -> anyhow::Result<()> {
        // A psql variable rather than an argument: no password in `ps`.
        let roles = format!("\\set writer_pw '{writer_password}'\n{ROLES_SQL}");
        self.psql(port, "postgres", false, &roles).await?;
        self.psql(port, "shop", true, &format!("{SHOP_SQL}\n{GRANTS_SQL}"))
            .await?;
        self.psql(
            port,
            "analytics",
            true,
            &format!("{ANALYTICS_SQL}\n{GRANTS_SQL}"),
        )
        .await
    }

    /// The shared store of gateway replicas: database `name` owned by the
    /// ordinary role `name` (LOGIN and `password`, nothing else).
    pub async fn create_store(&self, port: u16, name: &str, password: &str) -> anyhow::Result<()> {
        let sql = format!(
            "\\set store_pw '{password}'
SELECT 'CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') \\gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE {name} PASSWORD :'store_pw';
SELECT 'CREATE DATABASE {name} OWNER {name}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}') \\gexec
"
        );
        self.psql(port, "postgres", false, &sql).await
    }

    /// psql as the bootstrap superuser over the unix socket (trust), `sql`
    /// on its input, in one transaction when `single_transaction`.
    async fn psql(
        &self,
        port: u16,
        db: &str,
        single_transaction: bool,
        sql: &str,
    ) -> anyhow::Result<()> {
        let mut cmd = Command::new(pg::bindir().join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &port.to_string(), "-U", pg::server_user(), "-d", db])
            .env("PGAPPNAME", "postern-demo")
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if single_transaction {
            cmd.args(["-1", "-f", "-"]);
        }
        let mut child = cmd.spawn().context("run psql")?;
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(sql.as_bytes()).await?;
        drop(input);
        let status = child.wait().await?;
        if !status.success() {
            bail!("loading the sample data into {db} failed (psql: {status})");
        }
        Ok(())
    }
}

/// The home directory of the OS user that runs PostgreSQL.
fn server_user_home() -> anyhow::Result<PathBuf> {
    let passwd = fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&pg::server_user()))
        .and_then(|fields| fields.get(5).map(PathBuf::from))
        .with_context(|| format!("no home directory for {}", pg::server_user()))
}

/// The first 12 hex digits of the SHA-256 of `dir`'s path.
fn short_hash(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}
