//! Proves the PostgreSQL fixture: admin access over the socket, and psql
//! logins over verify-full TLS with each authentication method.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use postern_tests::certs::{IssuedCert, TestCa};
use postern_tests::pg::{self, PgServer};

const PSQL_TIMEOUT: Duration = Duration::from_secs(30);

/// Files psql needs for one login, in a directory of their own.
struct ClientFiles {
    dir: tempfile::TempDir,
}

impl ClientFiles {
    fn new(pg: &PgServer, cert: Option<&IssuedCert>) -> ClientFiles {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.crt"), pg.server_ca_pem()).unwrap();
        if let Some(cert) = cert {
            std::fs::write(dir.path().join("client.crt"), &cert.cert_pem).unwrap();
            let key = dir.path().join("client.key");
            std::fs::write(&key, &cert.key_pem).unwrap();
            // libpq refuses a key readable by others.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        ClientFiles { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Connection string for `user` to `app` on the fixture, verify-full.
    fn conninfo(&self, pg: &PgServer, user: &str) -> String {
        let mut conninfo = format!(
            "host={} port={} user={user} dbname={} sslmode=verify-full sslrootcert={}",
            pg::TLS_HOST,
            pg.port(),
            pg::APP_DB,
            self.path("root.crt"),
        );
        if Path::new(&self.path("client.crt")).exists() {
            conninfo += &format!(
                " sslcert={} sslkey={}",
                self.path("client.crt"),
                self.path("client.key")
            );
        }
        conninfo
    }
}

/// Runs `psql -c 'select current_user'` and returns its output.
async fn psql(conninfo: &str, password: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(pg::bindir().join("psql"));
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo])
        .args(["-c", "select current_user"])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    tokio::time::timeout(PSQL_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("psql did not finish within {PSQL_TIMEOUT:?}"))
        .expect("run psql")
}

/// Asserts that psql logged in as `user`.
fn assert_logged_in(out: &Output, user: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == user,
        "expected psql to log in as {user}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that psql was refused with a message containing `needle`.
fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(needle),
        "expected psql to be refused with {needle:?}: {}\nstderr: {stderr}",
        out.status
    );
}

#[tokio::test]
async fn admin_socket_sees_the_seeded_databases() {
    let client_ca = TestCa::new("test database CA");
    let pg = PgServer::start(client_ca.cert_pem()).await;

    let app = pg.admin(pg::APP_DB).await;
    let count: i64 = app
        .query_one("select count(*) from items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, pg::APP_ITEMS);
    let me: String = app
        .query_one("select current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, pg.superuser());

    let analytics = pg.admin(pg::ANALYTICS_DB).await;
    let count: i64 = analytics
        .query_one("select count(*) from public.items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, pg::ANALYTICS_ITEMS);

    // Each password method has a verifier of its own kind.
    let admin = pg.admin("postgres").await;
    for (role, prefix) in [(pg::SCRAM_USER, "SCRAM-SHA-256$"), (pg::MD5_USER, "md5")] {
        let verifier: String = admin
            .query_one(
                "select rolpassword from pg_authid where rolname = $1",
                &[&role],
            )
            .await
            .unwrap()
            .get(0);
        assert!(verifier.starts_with(prefix), "{role}: {verifier}");
    }
}

#[tokio::test]
async fn psql_logs_in_over_verify_full_tls_with_each_method() {
    let client_ca = TestCa::new("test database CA");
    let pg = PgServer::start(client_ca.cert_pem()).await;

    let cert = client_ca.issue_client(pg::CERT_USER);
    let files = ClientFiles::new(&pg, Some(&cert));
    assert_logged_in(
        &psql(&files.conninfo(&pg, pg::CERT_USER), None).await,
        pg::CERT_USER,
    );

    let files = ClientFiles::new(&pg, None);
    assert_logged_in(
        &psql(
            &files.conninfo(&pg, pg::SCRAM_USER),
            Some(pg.scram_password()),
        )
        .await,
        pg::SCRAM_USER,
    );
    assert_logged_in(
        &psql(&files.conninfo(&pg, pg::MD5_USER), Some(pg.md5_password())).await,
        pg::MD5_USER,
    );
    assert_refused(
        &psql(&files.conninfo(&pg, pg::SCRAM_USER), Some("wrong")).await,
        "password authentication failed",
    );

    // Any other role logs in with a client certificate for its name.
    pg.admin("postgres")
        .await
        .batch_execute("CREATE ROLE alice LOGIN IN ROLE reader")
        .await
        .unwrap();
    let files = ClientFiles::new(&pg, Some(&client_ca.issue_client("alice")));
    assert_logged_in(&psql(&files.conninfo(&pg, "alice"), None).await, "alice");
    // ...and only for its own name.
    assert_refused(
        &psql(&files.conninfo(&pg, pg::CERT_USER), None).await,
        "certificate authentication failed",
    );

    // Plaintext TCP is rejected.
    let plain = format!(
        "host={} port={} user={} dbname={} sslmode=disable",
        pg.host(),
        pg.port(),
        pg::SCRAM_USER,
        pg::APP_DB
    );
    assert_refused(
        &psql(&plain, Some(pg.scram_password())).await,
        "pg_hba.conf rejects connection",
    );
}

#[tokio::test]
async fn servers_are_independent_and_drop_cleans_up() {
    let client_ca = TestCa::new("test database CA");
    let (a, b) = tokio::join!(
        PgServer::start(client_ca.cert_pem()),
        PgServer::start(client_ca.cert_pem())
    );
    assert_ne!(a.port(), b.port());
    a.admin(pg::APP_DB)
        .await
        .batch_execute("DELETE FROM items")
        .await
        .unwrap();
    let count: i64 = b
        .admin(pg::APP_DB)
        .await
        .query_one("select count(*) from items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        count,
        pg::APP_ITEMS,
        "a write to one server showed in another"
    );

    let (port, data_dir) = (a.port(), a.data_dir().to_owned());
    drop(a);
    assert!(
        !data_dir.exists(),
        "data directory left behind: {data_dir:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the dropped server's port {port}"
    );
}
