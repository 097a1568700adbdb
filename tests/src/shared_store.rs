//! A shared PostgreSQL store for gateway replicas, as an operator sets one
//! up: an ordinary role (LOGIN and a password, nothing else) that owns its
//! databases and reaches them over verify-full TLS, and a key-encryption key
//! in a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_gateway::config::{PostgresStoreConfig, StoreTls, StoreTlsMode};
use postern_gateway::store::PostgresStore;
use tempfile::TempDir;

use crate::eventually;
use crate::pg::{PgServer, TLS_HOST};

/// The store's role.
pub const OWNER: &str = "postern_store";
/// base64 of 32 bytes; the tests' key-encryption key.
pub const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A PostgreSQL server with the store's role, and the files a gateway needs
/// to reach it (`pg-ca.pem`, `store.pw`, `kek`) in [`SharedStore::dir`].
pub struct SharedStore {
    /// The server holding the store's databases.
    pub pg: PgServer,
    /// Where the files are; a gateway.yaml written here names them relatively.
    pub dir: TempDir,
}

impl SharedStore {
    /// Adds the store's role to `pg` and lets it in with its password over TLS.
    pub async fn start(pg: PgServer) -> SharedStore {
        let dir = tempfile::Builder::new()
            .prefix("postern-store-")
            .tempdir()
            .expect("store dir");
        let password = crate::random_hex(16);
        let files = [
            ("pg-ca.pem", pg.server_ca_pem().to_owned()),
            ("store.pw", format!("{password}\n")),
            ("kek", KEK.to_owned()),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write store file");
        }
        pg.admin("postgres")
            .await
            .batch_execute(&format!(
                "CREATE ROLE {OWNER} LOGIN PASSWORD '{password}'
                     NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            ))
            .await
            .expect("create the store's role");
        // The fixture's rules let only named roles in with a password; this
        // one goes first, as an operator's would.
        let hba = pg.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("hostssl all {OWNER} 127.0.0.1/32 scram-sha-256\n{rules}"),
        )
        .expect("write pg_hba.conf");
        pg.admin("postgres")
            .await
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload pg_hba.conf");
        SharedStore { pg, dir }
    }

    /// A new empty database owned by the store's role, once the role can
    /// reach it.
    pub async fn database(&self, name: &str) -> PostgresStoreConfig {
        self.pg
            .admin("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {OWNER}"))
            .await
            .expect("create the store database");
        let config = self.config(name);
        // The reloaded rules apply soon after the reload; wait for them.
        let probe = config.clone();
        eventually(Duration::from_secs(10), async || {
            let probe = probe.clone();
            tokio::task::spawn_blocking(move || PostgresStore::open(&probe).map(drop))
                .await
                .expect("store probe task")
        })
        .await
        .expect("the store's role reaches its database");
        config
    }

    /// The store configuration of database `db`.
    pub fn config(&self, db: &str) -> PostgresStoreConfig {
        PostgresStoreConfig {
            url: self.url(db),
            password_file: Some(self.file("store.pw")),
            password_env: None,
            tls: StoreTls {
                mode: StoreTlsMode::VerifyFull,
                ca_cert_file: Some(self.file("pg-ca.pem")),
            },
            pool_size: 2,
            kek_file: Some(self.file("kek")),
            kek_env: None,
        }
    }

    /// The `store:` block of a gateway.yaml for database `db`, with the
    /// files named by absolute path so the YAML can live anywhere.
    pub fn yaml(&self, db: &str) -> String {
        format!(
            "store:\n  postgres:\n    url: {url}\n    password_file: {pw}\n    tls: {{ mode: verify-full, ca_cert_file: {ca} }}\n    kek_file: {kek}\n",
            url = self.url(db),
            pw = self.file("store.pw").display(),
            ca = self.file("pg-ca.pem").display(),
            kek = self.file("kek").display(),
        )
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://{OWNER}@{TLS_HOST}:{}/{db}", self.pg.port())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory of the store's files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
