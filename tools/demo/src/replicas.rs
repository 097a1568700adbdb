//! `scripts/demo --replicas N`: the shape of the README's "Running several
//! gateways" on one machine. The gateways share a PostgreSQL store (the
//! database `postern_store` in the demo's own PostgreSQL, owned by an
//! ordinary role with a password), each runs as its own process on its own
//! port, and HAProxy in TCP mode listens on the gateway port in front of
//! them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use postern_gateway::ca::{CaKind, CaMaterial};

use crate::{has_content, read_secret, write_private};

/// The store's database and its owner.
pub const STORE: &str = "postern_store";

/// Replica names, in HAProxy's order.
pub fn names(count: usize) -> Vec<String> {
    (b'a'..)
        .take(count)
        .map(|c| char::from(c).to_string())
        .collect()
}

/// The shared secrets, made on the first run with replicas and kept.
pub struct Secrets {
    /// The store role's password (`store.pw`).
    pub store_password: String,
    /// The CA that signs the replicas' database client certificates
    /// (`db-ca.pem`, key in `db-ca.key`): given to every replica as files,
    /// because PostgreSQL must trust it before the store inside it exists.
    pub db_ca_pem: String,
}

impl Secrets {
    /// Reads the secrets in `dir`, making the missing ones.
    pub fn ensure(dir: &Path) -> anyhow::Result<Secrets> {
        let store_pw = dir.join("store.pw");
        if !has_content(&store_pw) {
            write_private(&store_pw, &format!("{}\n", postern_tests::random_hex(16)))?;
        }
        let kek = dir.join("store.kek");
        if !has_content(&kek) {
            let bytes: [u8; 32] = rand::random();
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            write_private(&kek, &format!("{text}\n"))?;
        }
        let (ca_cert, ca_key) = (dir.join("db-ca.pem"), dir.join("db-ca.key"));
        if !has_content(&ca_cert) || !has_content(&ca_key) {
            let ca = CaMaterial::generate(CaKind::Database, "postern")
                .context("make the database CA")?;
            write_private(&ca_key, &ca.key_pem)?;
            write_private(&ca_cert, &ca.cert_pem)?;
        }
        Ok(Secrets {
            store_password: read_secret(&store_pw)?,
            db_ca_pem: fs::read_to_string(&ca_cert)
                .with_context(|| format!("read {}", ca_cert.display()))?,
        })
    }
}

/// The gateway.yaml lines every replica shares: the store, the database
/// CA files and the public URL (HAProxy's address, which single sign-on
/// redirects to).
pub fn shared_yaml(pg_port: u16, balancer_port: u16) -> String {
    format!(
        "\
# Every replica keeps its state in one PostgreSQL store; CA keys in it are
# sealed with store.kek.
store:
  postgres:
    url: postgres://{STORE}@localhost:{pg_port}/{STORE}
    password_file: store.pw
    tls: {{ mode: verify-full, ca_cert_file: pg-tls/ca.crt }}
    kek_file: store.kek
database_ca: {{ cert_file: db-ca.pem, key_file: db-ca.key }}
public_url: https://localhost:{balancer_port}
"
    )
}

/// The configuration file of replica `name`: `gateway.yaml` for the first,
/// so the operator's CLI (`postern-gateway --config gateway.yaml users ...`)
/// works on the shared store the same way as without replicas.
pub fn config_file(dir: &Path, index: usize, name: &str) -> PathBuf {
    match index {
        0 => dir.join("gateway.yaml"),
        _ => dir.join(format!("gateway-{name}.yaml")),
    }
}
