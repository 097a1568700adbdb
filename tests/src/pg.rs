//! A real PostgreSQL server per test, with TLS and one login role per
//! authentication method (DESIGN.md §10).
//!
//! `initdb` and the role/database setup run once per machine into a template
//! data directory under [`std::env::temp_dir`] (guarded by a file lock and
//! published with an atomic rename, so concurrent test processes never see a
//! half-built one). Each [`PgServer::start`] copies the template into its own
//! temporary directory, writes fresh certificates and configuration, and
//! starts `postgres` on a free loopback port.
//!
//! PostgreSQL refuses to run as root: under root (CI) `initdb` and `postgres`
//! run as the `postgres` OS user, otherwise as the current user.
//!
//! The steps themselves ([`initdb`], [`configure`], [`Postmaster`]) are
//! public: the demo (`tools/demo`) builds its long-lived cluster with them,
//! so there is one PostgreSQL bootstrap.
//!
//! What every server has:
//!
//! | pg_hba line (first match wins)                | meaning                          |
//! |-----------------------------------------------|----------------------------------|
//! | `local all all trust`                         | admin access over the socket     |
//! | `hostssl all certuser 127.0.0.1/32 cert`      | [`CERT_USER`]: client cert CN    |
//! | `hostssl all scramuser 127.0.0.1/32 scram-sha-256` | [`SCRAM_USER`]              |
//! | `hostssl all md5user 127.0.0.1/32 md5`        | [`MD5_USER`]                     |
//! | `hostssl all +redshift_iam 127.0.0.1/32 scram-sha-256` | `IAMR:` users ([`IAM_GROUP`]) |
//! | `hostssl all all 127.0.0.1/32 cert`           | any role a test creates          |
//! | `host all all 127.0.0.1/32 reject`            | no plaintext TCP                 |
//!
//! Roles [`CERT_USER`], [`SCRAM_USER`] and [`MD5_USER`] can log in and are
//! members of the `NOLOGIN` group role [`READER_ROLE`], which may `SELECT`
//! from `public.items(id int primary key, name text)` in both [`APP_DB`]
//! ([`APP_ITEMS`] rows) and [`ANALYTICS_DB`] ([`ANALYTICS_ITEMS`] rows).
//! The `NOLOGIN` group role [`WRITER_ROLE`] may also change those rows.
//!
//! [`ADMIN_USER`] is the provisioning admin of automatic user provisioning:
//! `LOGIN CREATEROLE` with certificate login, and every privilege on the
//! `public` tables of both databases `WITH GRANT OPTION` (for
//! `db_permissions`). On PostgreSQL 15 `CREATEROLE` is all it needs to grant
//! [`READER_ROLE`] and [`WRITER_ROLE`].

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

use crate::certs::TestCa;
use crate::{eventually, random_hex};

/// Login role that authenticates with a client certificate (CN = role name).
pub const CERT_USER: &str = "certuser";
/// Login role that authenticates with SCRAM-SHA-256 over TLS.
pub const SCRAM_USER: &str = "scramuser";
/// Login role that authenticates with MD5 over TLS.
pub const MD5_USER: &str = "md5user";
/// `NOLOGIN` group role holding `SELECT` on `public.items`.
pub const READER_ROLE: &str = "reader";
/// `NOLOGIN` group role holding `SELECT, INSERT, UPDATE, DELETE` on `public.items`.
pub const WRITER_ROLE: &str = "writer";
/// Login role (certificate) with `CREATEROLE`: the provisioning admin.
pub const ADMIN_USER: &str = "postern_admin";
/// `NOLOGIN` group role of the `IAMR:<role>` users that the fake Redshift
/// Serverless creates (tests/src/aws.rs); its members log in with SCRAM.
pub const IAM_GROUP: &str = "redshift_iam";
/// Database with a few rows in `public.items`.
pub const APP_DB: &str = "app";
/// Second database, for tests that route or restrict by database name.
pub const ANALYTICS_DB: &str = "analytics";
/// Number of rows in `app.public.items`.
pub const APP_ITEMS: i64 = 3;
/// Number of rows in `analytics.public.items`.
pub const ANALYTICS_ITEMS: i64 = 2;

/// Host name that the server certificate is valid for (as is `127.0.0.1`).
pub const TLS_HOST: &str = "localhost";

// One statement per entry: a multi-statement string runs as one implicit
// transaction, which CREATE DATABASE refuses.
const SETUP_CLUSTER_SQL: &[&str] = &[
    "CREATE ROLE reader NOLOGIN",
    "CREATE ROLE certuser LOGIN IN ROLE reader",
    "CREATE ROLE scramuser LOGIN IN ROLE reader",
    "CREATE ROLE md5user LOGIN IN ROLE reader",
    "CREATE ROLE writer NOLOGIN",
    "CREATE ROLE postern_admin LOGIN CREATEROLE",
    "CREATE ROLE redshift_iam NOLOGIN",
    "CREATE DATABASE app",
    "CREATE DATABASE analytics",
];
const SETUP_APP_SQL: &[&str] = &[
    "CREATE TABLE public.items (id int PRIMARY KEY, name text)",
    "INSERT INTO public.items VALUES (1, 'apple'), (2, 'banana'), (3, 'cherry')",
    "GRANT SELECT ON public.items TO reader",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO writer",
    "GRANT ALL ON ALL TABLES IN SCHEMA public TO postern_admin WITH GRANT OPTION",
];
const SETUP_ANALYTICS_SQL: &[&str] = &[
    "CREATE TABLE public.items (id int PRIMARY KEY, name text)",
    "INSERT INTO public.items VALUES (1, 'daily'), (2, 'weekly')",
    "GRANT SELECT ON public.items TO reader",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO writer",
    "GRANT ALL ON ALL TABLES IN SCHEMA public TO postern_admin WITH GRANT OPTION",
];
const INITDB_ARGS: &[&str] = &[
    "--auth=trust",
    "--encoding=UTF8",
    "--no-locale",
    "--no-sync",
    // 1 MiB WAL segments keep the template, and so every copy of it, small.
    "--wal-segsize=1",
];

/// Settings of the throwaway test servers, on top of [`configure`]'s.
const TEST_SETTINGS: &str = "\
max_connections = 100
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
";

/// The settings file [`configure`] writes into a data directory, included
/// from `postgresql.conf`.
const SETTINGS_FILE: &str = "postern.conf";

const HBA_CONF: &str = "\
# Written by postern-tests (tests/src/pg.rs). First match wins.
local   all all                    trust
hostssl all certuser  127.0.0.1/32 cert
hostssl all scramuser 127.0.0.1/32 scram-sha-256
hostssl all md5user   127.0.0.1/32 md5
hostssl all +redshift_iam 127.0.0.1/32 scram-sha-256
hostssl all all       127.0.0.1/32 cert
host    all all       127.0.0.1/32 reject
";

const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TEMPLATE_LOCK_TIMEOUT: Duration = Duration::from_secs(300);
const PORT_ATTEMPTS: usize = 5;
/// Age after which a directory left by a killed test process is removed.
const STALE_AFTER: Duration = Duration::from_secs(3600);
const INSTANCE_PREFIX: &str = "postern-pg-";

/// A running PostgreSQL server in its own temporary directory.
///
/// Dropping it stops the server at once (immediate shutdown) and removes the
/// directory; if the test is panicking, the tail of the server log is
/// printed first.
pub struct PgServer {
    // Declared before `dir`: the server stops before its files are removed.
    postmaster: Postmaster,
    dir: TempDir,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    superuser: String,
    server_ca_pem: String,
    scram_password: String,
    md5_password: String,
}

impl PgServer {
    /// Starts a server whose `ssl_ca_file` is `client_ca_pem`: the CA that
    /// signs client certificates (the gateway's "database CA").
    ///
    /// Panics, with the server log, if PostgreSQL is missing or fails to
    /// start; tests never skip for lack of PostgreSQL (run
    /// `scripts/install-test-deps`).
    pub async fn start(client_ca_pem: &str) -> PgServer {
        let install = install();
        let template = ensure_template(install).await;
        sweep_stale_dirs();

        let dir = tempfile::Builder::new()
            .prefix(INSTANCE_PREFIX)
            .tempdir()
            .expect("create PostgreSQL instance directory");
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        {
            let (from, to) = (template.clone(), data_dir.clone());
            tokio::task::spawn_blocking(move || copy_tree(&from, &to))
                .await
                .expect("copy task")
                .unwrap_or_else(|e| panic!("copy PostgreSQL template {template:?}: {e}"));
        }
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(&socket_dir).unwrap();

        let server_ca_pem = configure(
            &data_dir,
            &ServerSetup {
                socket_dir: &socket_dir,
                client_ca_pem,
                hba: HBA_CONF,
                settings: TEST_SETTINGS,
            },
        );
        if let Some((uid, gid)) = install.user.switch_to {
            chown_tree(dir.path(), uid, gid).expect("chown PostgreSQL instance directory");
        }

        let log_path = dir.path().join("postgres.log");
        let mut attempt = 0;
        let (postmaster, port) = loop {
            attempt += 1;
            let port = crate::free_port();
            let port_arg = port.to_string();
            let mut postmaster = Postmaster::spawn(&data_dir, &["-p", &port_arg], &log_path);
            match postmaster.wait_ready(&socket_dir, port).await {
                Ok(()) => break (postmaster, port),
                Err(log) if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {
                    continue;
                }
                Err(log) => panic!(
                    "PostgreSQL exited during startup (data dir {data_dir:?}); log tail:\n{}",
                    tail(&log, 40)
                ),
            }
        };

        let server = PgServer {
            postmaster,
            dir,
            data_dir,
            socket_dir,
            port,
            superuser: install.user.name.clone(),
            server_ca_pem,
            scram_password: random_hex(16),
            md5_password: random_hex(16),
        };
        // Passwords differ per server; hex needs no quoting.
        server
            .admin("postgres")
            .await
            .batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256';
                 ALTER ROLE scramuser PASSWORD '{}';
                 SET password_encryption = 'md5';
                 ALTER ROLE md5user PASSWORD '{}';",
                server.scram_password, server.md5_password
            ))
            .await
            .unwrap_or_else(|e| panic!("set test role passwords: {}", pg_error(&e)));
        server
    }

    /// TCP port on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address the server listens on: `127.0.0.1`. Its certificate is valid
    /// for this address and for [`TLS_HOST`].
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// PEM of the CA that signed the server certificate: trust it to connect
    /// with `verify-full` to [`TLS_HOST`] or `127.0.0.1`.
    pub fn server_ca_pem(&self) -> &str {
        &self.server_ca_pem
    }

    /// Password of [`SCRAM_USER`].
    pub fn scram_password(&self) -> &str {
        &self.scram_password
    }

    /// Password of [`MD5_USER`].
    pub fn md5_password(&self) -> &str {
        &self.md5_password
    }

    /// Directory of the server's unix socket (trust authentication).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The bootstrap superuser: the OS user that ran `initdb`.
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// The server's log file (stdout and stderr of `postgres`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Connects to `db` as the superuser over the unix socket, with the
    /// connection driven by a spawned task. Panics if it cannot connect.
    pub async fn admin(&self, db: &str) -> Client {
        connect_socket(&self.socket_dir, self.port, &self.superuser, db)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "admin connection to database {db:?} failed: {e}; log tail:\n{}",
                    tail(&read_lossy(&self.log_path()), 40)
                )
            })
    }

    /// Polls `pg_stat_activity` until an active statement matching `like`
    /// runs (`present`) or no longer runs; returns its backend pid.
    pub async fn wait_activity(&self, like: &str, present: bool) -> Option<i32> {
        let admin = self.admin("postgres").await;
        eventually(Duration::from_secs(20), async || {
            let rows = admin
                .query(
                    "select pid from pg_stat_activity where state = 'active' and query like $1 and pid <> pg_backend_pid()",
                    &[&like],
                )
                .await
                .unwrap();
            let pid = rows.first().map(|r| r.get::<_, i32>(0));
            if pid.is_some() == present {
                Ok(pid)
            } else {
                Err(format!("pid {pid:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("statement {like:?} present={present} never observed: {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL log tail ({:?}) ---\n{}",
                self.log_path(),
                tail(&read_lossy(&self.log_path()), 40)
            );
        }
        self.postmaster.stop(Signal::QUIT);
    }
}

/// Directory holding `initdb`, `postgres` and `psql`: `$POSTERN_PG_BINDIR`,
/// else `pg_config --bindir`, else `/usr/lib/postgresql/15/bin`.
pub fn bindir() -> &'static Path {
    &install().bindir
}

/// The OS user that runs PostgreSQL, which also names the bootstrap
/// superuser: `postgres` under root, else the current user.
pub fn server_user() -> &'static str {
    &install().user.name
}

/// Where PostgreSQL is and which OS user runs it; found once per process.
struct Install {
    bindir: PathBuf,
    major: u32,
    user: OsUser,
}

struct OsUser {
    /// Role name of the bootstrap superuser (the OS user's name).
    name: String,
    /// Set when running as root: the `postgres` user's uid and gid.
    switch_to: Option<(u32, u32)>,
    /// The effective uid of this process, to keep templates apart per user.
    own_uid: u32,
}

fn install() -> &'static Install {
    static INSTALL: OnceLock<Install> = OnceLock::new();
    INSTALL.get_or_init(|| {
        let bindir = find_bindir();
        let major = server_major(&bindir);
        let own_uid = rustix::process::geteuid().as_raw();
        let user = if own_uid == 0 {
            let id = |flag: &str| -> u32 {
                command_stdout("id", &[flag, "postgres"])
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| {
                        panic!(
                            "running as root but there is no `postgres` OS user to run \
                             PostgreSQL as: run scripts/install-test-deps"
                        )
                    })
            };
            OsUser {
                name: "postgres".to_owned(),
                switch_to: Some((id("-u"), id("-g"))),
                own_uid,
            }
        } else {
            let name = command_stdout("id", &["-un"])
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .expect("`id -un` names the current user");
            OsUser {
                name,
                switch_to: None,
                own_uid,
            }
        };
        Install {
            bindir,
            major,
            user,
        }
    })
}

fn find_bindir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("POSTERN_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        assert!(
            has_server(&dir),
            "POSTERN_PG_BINDIR={dir:?} has no `postgres` and `initdb`"
        );
        return dir;
    }
    let candidates = command_stdout("pg_config", &["--bindir"])
        .map(|s| PathBuf::from(s.trim()))
        .into_iter()
        .chain([PathBuf::from("/usr/lib/postgresql/15/bin")]);
    for dir in candidates {
        if has_server(&dir) {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, postgres) not found via $POSTERN_PG_BINDIR, \
         `pg_config --bindir` or /usr/lib/postgresql/15/bin: run scripts/install-test-deps"
    )
}

/// Parses the major version out of `postgres (PostgreSQL) 15.18 (Debian ...)`.
fn server_major(bindir: &Path) -> u32 {
    let postgres = bindir.join("postgres");
    let out = command_stdout(postgres.to_str().unwrap(), &["--version"])
        .unwrap_or_else(|| panic!("`{} --version` failed", postgres.display()));
    out.split_whitespace()
        .skip_while(|w| *w != "(PostgreSQL)")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `postgres --version` output: {out:?}"))
}

fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Returns the template data directory, building it if no test process on
/// this machine has yet.
async fn ensure_template(install: &'static Install) -> PathBuf {
    let tmp = std::env::temp_dir();
    let key = fnv1a(
        [
            SETUP_CLUSTER_SQL,
            SETUP_APP_SQL,
            SETUP_ANALYTICS_SQL,
            INITDB_ARGS,
        ]
        .into_iter()
        .flatten()
        .copied()
        .chain([install.user.name.as_str()]),
    );
    let name = format!(
        "postern-test-pg-template-{}-u{}-{key:016x}",
        install.major, install.user.own_uid
    );
    let template = tmp.join(&name);
    // Published by rename only once complete, so existing means usable.
    if template.join("PG_VERSION").is_file() {
        return template;
    }

    let lock_path = tmp.join(format!("{name}.lock"));
    let lock = tokio::task::spawn_blocking(move || lock_exclusive(&lock_path))
        .await
        .expect("template lock task");
    if !template.join("PG_VERSION").is_file() {
        build_template(install, &tmp, &name, &template).await;
    }
    drop(lock);
    template
}

fn lock_exclusive(path: &Path) -> File {
    use rustix::fs::{FlockOperation, flock};
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open template lock {path:?}: {e}"));
    // Poll rather than block, so a wedged holder turns into a clear panic.
    let deadline = Instant::now() + TEMPLATE_LOCK_TIMEOUT;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return file,
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {TEMPLATE_LOCK_TIMEOUT:?} waiting for {path:?}: \
                     another test process has been building the PostgreSQL template too long"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("lock {path:?}: {e}"),
        }
    }
}

async fn build_template(install: &'static Install, tmp: &Path, name: &str, template: &Path) {
    let staging = tempfile::Builder::new()
        .prefix(&format!("{name}.staging-"))
        .tempdir_in(tmp)
        .expect("create template staging directory");
    let data_dir = staging.path().join("data");
    let socket_dir = staging.path().join("socket");
    fs::create_dir(&socket_dir).unwrap();
    if let Some((uid, gid)) = install.user.switch_to {
        chown_tree(staging.path(), uid, gid).expect("chown template staging directory");
    }

    if let Err(e) = initdb(&data_dir).await {
        panic!("{e}");
    }

    // Socket only: the template server needs no TCP port.
    let socket_arg = format!("unix_socket_directories={}", socket_dir.display());
    let log_path = staging.path().join("postgres.log");
    let mut postmaster = Postmaster::spawn(
        &data_dir,
        &[
            "-p",
            "5432",
            "-c",
            "listen_addresses=",
            "-c",
            &socket_arg,
            "-c",
            "fsync=off",
        ],
        &log_path,
    );
    if let Err(log) = postmaster.wait_ready(&socket_dir, 5432).await {
        panic!(
            "PostgreSQL exited while building the template; log tail:\n{}",
            tail(&log, 40)
        );
    }
    for (db, sql) in [
        ("postgres", SETUP_CLUSTER_SQL),
        (APP_DB, SETUP_APP_SQL),
        (ANALYTICS_DB, SETUP_ANALYTICS_SQL),
    ] {
        let client = connect_socket(&socket_dir, 5432, &install.user.name, db)
            .await
            .unwrap_or_else(|e| panic!("connect to template database {db}: {e}"));
        for statement in sql {
            if let Err(e) = client.batch_execute(statement).await {
                panic!(
                    "template setup in {db}: {statement}: {}; log tail:\n{}",
                    pg_error(&e),
                    tail(&read_lossy(&log_path), 40)
                );
            }
        }
    }
    // A fast (not immediate) shutdown leaves a clean checkpoint, so copies
    // start without crash recovery.
    assert!(
        postmaster.shut_down(),
        "template PostgreSQL did not stop within {STOP_TIMEOUT:?}; log tail:\n{}",
        tail(&read_lossy(&log_path), 40)
    );

    match fs::rename(&data_dir, template) {
        Ok(()) => {}
        // Someone without our lock (e.g. an older layout) got there first.
        Err(_) if template.join("PG_VERSION").is_file() => {}
        Err(e) => panic!("publish PostgreSQL template {template:?}: {e}"),
    }
}

/// Runs `initdb` for `data_dir` (which must not exist; its parent must be
/// writable by the PostgreSQL OS user) with the bootstrap superuser named
/// after that OS user and trust authentication; returns initdb's output if
/// it fails.
pub async fn initdb(data_dir: &Path) -> Result<(), String> {
    let install = install();
    let mut initdb = tokio::process::Command::new(install.bindir.join("initdb"));
    initdb
        .arg("--pgdata")
        .arg(data_dir)
        .arg("--username")
        .arg(&install.user.name)
        .args(INITDB_ARGS)
        .env("LC_ALL", "C")
        .current_dir(data_dir.parent().unwrap_or(Path::new("/")))
        .kill_on_drop(true);
    if let Some((uid, gid)) = install.user.switch_to {
        initdb.uid(uid).gid(gid);
    }
    let out = tokio::time::timeout(INITDB_TIMEOUT, initdb.output())
        .await
        .map_err(|_| format!("initdb did not finish within {INITDB_TIMEOUT:?}"))?
        .map_err(|e| format!("run initdb: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "initdb failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What [`configure`] writes into a data directory.
#[derive(Clone, Copy, Debug)]
pub struct ServerSetup<'a> {
    /// Where the server puts its unix socket (trust authentication for the
    /// superuser, in the `hba` of every caller).
    pub socket_dir: &'a Path,
    /// The CA that signs client certificates: the gateway's database CA.
    pub client_ca_pem: &'a str,
    /// The whole `pg_hba.conf`.
    pub hba: &'a str,
    /// More `postgresql.conf` lines (the port is a command-line argument of
    /// [`Postmaster::spawn`]).
    pub settings: &'a str,
}

/// Gives a data directory a fresh server certificate for [`TLS_HOST`] and
/// `127.0.0.1` from a new CA, the client CA, `pg_hba.conf`, and the settings
/// every Postern server has (TLS on, loopback only, SCRAM passwords) plus
/// `setup.settings`, in a file `postgresql.conf` includes. Run it before each
/// start; returns the PEM of the server certificate's CA.
pub fn configure(data_dir: &Path, setup: &ServerSetup<'_>) -> String {
    let server_ca = TestCa::new("Postern PostgreSQL server CA");
    let server_cert = server_ca.issue_server(&[TLS_HOST, "127.0.0.1"]);
    let settings = format!(
        "# Written by postern-tests (tests/src/pg.rs) before each start.\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{socket}'\n\
         ssl = on\n\
         ssl_cert_file = 'server.crt'\n\
         ssl_key_file = 'server.key'\n\
         ssl_ca_file = 'client-ca.crt'\n\
         password_encryption = 'scram-sha-256'\n\
         {extra}",
        socket = conf_quote(setup.socket_dir),
        extra = setup.settings,
    );
    for (name, contents, mode) in [
        ("server.crt", server_cert.cert_pem.as_str(), 0o644),
        ("server.key", &server_cert.key_pem, 0o600),
        ("client-ca.crt", setup.client_ca_pem, 0o644),
        ("pg_hba.conf", setup.hba, 0o600),
        (SETTINGS_FILE, &settings, 0o600),
    ] {
        let path = data_dir.join(name);
        write_file(&path, contents, mode);
        give_to_server_user(&path);
    }
    let main_conf = data_dir.join("postgresql.conf");
    let include = format!("include_if_exists = '{SETTINGS_FILE}'");
    let conf = fs::read_to_string(&main_conf).expect("read postgresql.conf");
    if !conf.lines().any(|line| line == include) {
        let mut conf = OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .expect("open postgresql.conf");
        writeln!(conf, "\n{include}").expect("append to postgresql.conf");
    }
    server_ca.cert_pem().to_owned()
}

/// Hands `path` (and, for a directory, everything in it) to the OS user that
/// runs PostgreSQL; a no-op unless this process runs as root.
pub fn give_to_server_user(path: &Path) {
    if let Some((uid, gid)) = install().user.switch_to {
        chown_tree(path, uid, gid).unwrap_or_else(|e| panic!("chown {path:?}: {e}"));
    }
}

/// Whether the OS user that runs PostgreSQL may enter `dir` (always, unless
/// this process runs as root and that user is `postgres`).
pub fn server_user_can_enter(dir: &Path) -> bool {
    let Some((uid, gid)) = install().user.switch_to else {
        return true;
    };
    std::process::Command::new("test")
        .arg("-x")
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops, with a fast shutdown, a server that still runs on `data_dir`
/// although no one owns it any more (its owner was killed); returns whether
/// there was one.
pub fn stop_leftover(data_dir: &Path) -> bool {
    let Some(pid) = postmaster_pid(data_dir) else {
        return false;
    };
    let Some(pid) = Pid::from_raw(pid) else {
        return false;
    };
    let _ = rustix::process::kill_process(pid, Signal::INT);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while postmaster_pid(data_dir).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A `postgres` child process that is stopped when dropped (immediate
/// shutdown).
pub struct Postmaster {
    child: Child,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Postmaster {
    /// Starts `postgres -D data_dir ARGS...` as the OS user that runs
    /// PostgreSQL, its output going to `log_path`.
    pub fn spawn(data_dir: &Path, args: &[&str], log_path: &Path) -> Postmaster {
        let install = install();
        let log = File::create(log_path)
            .unwrap_or_else(|e| panic!("create PostgreSQL log {log_path:?}: {e}"));
        let mut cmd = std::process::Command::new(install.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(data_dir)
            .args(args)
            .env("LC_ALL", "C")
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        if let Some((uid, gid)) = install.user.switch_to {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", install.bindir.join("postgres")));
        Postmaster {
            child,
            log_path: log_path.to_owned(),
            exited: None,
        }
    }

    /// Waits until the server accepts connections on its socket. Returns the
    /// server log if it exited instead; panics after [`READY_TIMEOUT`].
    pub async fn wait_ready(&mut self, socket_dir: &Path, port: u16) -> Result<(), String> {
        let user = &install().user.name;
        // `Ok(Err(log))`: it exited instead.
        let ready = eventually(READY_TIMEOUT, async || {
            if self.has_exited() {
                return Ok(Err(read_lossy(&self.log_path)));
            }
            connect_socket(socket_dir, port, user, "postgres")
                .await
                .map(|_client| Ok(()))
        })
        .await;
        ready.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL did not accept connections: {e}; log tail:\n{}",
                tail(&read_lossy(&self.log_path), 40)
            )
        })
    }

    /// Stops the server with a fast shutdown (sessions end, a clean
    /// checkpoint is written); returns whether it stopped on its own.
    pub fn shut_down(&mut self) -> bool {
        self.stop(Signal::INT)
    }

    /// Whether the server has exited.
    fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("wait for postgres");
        }
        self.exited.is_some()
    }

    /// Sends `signal` and waits for exit, then kills; returns whether the
    /// server exited on the signal within [`STOP_TIMEOUT`].
    fn stop(&mut self, signal: Signal) -> bool {
        if self.has_exited() {
            return true;
        }
        let pid = Pid::from_child(&self.child);
        // Fails only if it already exited; the waits below settle that.
        let _ = rustix::process::kill_process(pid, signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.has_exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("postgres (pid {pid:?}) ignored {signal:?} for {STOP_TIMEOUT:?}; killing it");
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        false
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        self.stop(Signal::QUIT);
    }
}

/// Removes instance and template-staging directories that test processes
/// left behind when they were killed (nextest ends a hung test with SIGKILL,
/// so no `Drop` ran): old ones whose server is not running.
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with(INSTANCE_PREFIX)
            || (name.starts_with("postern-test-pg-template-") && name.contains(".staging-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if ours && old && !postmaster_alive(&entry.path().join("data")) {
            // Another user's directory stays: removal fails, harmlessly.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether `postmaster.pid` in `data_dir` names a live process (a reused
/// pid errs on the side of keeping the directory).
fn postmaster_alive(data_dir: &Path) -> bool {
    postmaster_pid(data_dir).is_some()
}

/// The pid in `data_dir`'s `postmaster.pid`, if that process is alive.
fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|pidfile| pidfile.lines().next()?.trim().parse::<i32>().ok())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Connects over the unix socket in `socket_dir` (trust authentication).
async fn connect_socket(
    socket_dir: &Path,
    port: u16,
    user: &str,
    db: &str,
) -> Result<Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(user)
        .dbname(db)
        .application_name("postern-tests")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| pg_error(&e))?;
    tokio::spawn(async move {
        // Ends with an error when the server stops under it; that is normal.
        let _ = connection.await;
    });
    Ok(client)
}

/// Copies a data directory (regular files and directories only), keeping
/// permission bits.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            return Err(std::io::Error::other(format!(
                "unexpected non-regular file {src:?} in the template"
            )));
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    // `mode` applies only on creation; make it hold for overwritten files too.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Quotes a path as a postgresql.conf string value.
fn conf_quote(path: &Path) -> String {
    path.to_str()
        .expect("temporary paths are UTF-8")
        .replace('\'', "''")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {path:?}: {e})"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Describes a client error with the server's message, which `Display` of
/// `tokio_postgres::Error` leaves out ("db error").
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// FNV-1a over the parts: a stable key for the template's contents (std's
/// hasher may change between Rust releases).
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
