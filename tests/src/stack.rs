//! The whole path on loopback: a real PostgreSQL, an in-process gateway that
//! trusts it, and the real `postern` CLI with its own `$POSTERN_HOME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_client::home::Home;

use postern_gateway::auth::local::hash_password;
use postern_gateway::aws::AwsIdentity;
use postern_gateway::ca::CaKind;
use postern_gateway::config::GatewayConfig;
use postern_gateway::server::{self, Running, StartOptions, load_ca};
use postern_gateway::store::{SqliteStore, Store, UserRecord};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::eventually;
use crate::pg::PgServer;

/// The password of every test user.
pub const PASSWORD: &str = "correct horse battery";

/// Roles most tests use: `dev` reaches the `env: dev` database as any of the
/// three test users, never as `postgres`.
pub const DEFAULT_ROLES: &str = r#"
kind: role
version: v7
metadata: { name: dev }
spec:
  allow:
    db_labels: { env: dev }
    db_users: [certuser, scramuser, md5user]
    db_names: [app, analytics]
  deny:
    db_labels: { "*": "*" }
    db_users: [postgres]
---
kind: role
version: v7
metadata: { name: short }
spec:
  options: { max_session_ttl: 10s }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
"#;

/// A running PostgreSQL + gateway pair and a directory for clients.
pub struct Stack {
    /// The gateway (in this process).
    pub gateway: Running,
    /// The database behind it.
    pub pg: PgServer,
    dir: TempDir,
}

/// What `postern login --sso --device` showed the person.
#[derive(Clone, Debug)]
pub struct DevicePrompt {
    /// The page to open.
    pub verification_uri: String,
    /// The code to enter there.
    pub user_code: String,
    /// The machine's name it said the page shows.
    pub hostname: String,
    /// Its key fingerprint, likewise.
    pub fingerprint: String,
}

/// Additions to the gateway configuration of a [`Stack`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StackConfig<'a> {
    /// More keys for the `pg` database entry, as YAML lines without
    /// indentation, e.g. `admin_user: { name: postern_admin }`.
    pub pg_extra: &'a str,
    /// More entries for the `databases:` list, as YAML list items without
    /// indentation; `{port}` stands for the PostgreSQL port and `pg-ca.pem`
    /// is the server's CA file.
    pub extra_databases: &'a str,
    /// More top-level keys of `gateway.yaml` (e.g. `connectors:`), as YAML
    /// lines without indentation.
    pub gateway_extra: &'a str,
    /// The gateway's own AWS credentials; default: none at all, so no test
    /// ever reaches for instance metadata.
    pub aws_identity: Option<&'a AwsIdentity>,
}

impl Stack {
    /// Starts PostgreSQL and a gateway with `roles` (YAML) and two databases:
    /// `pg` (labels `env: dev`) and `pg-prod` (`env: prod`, same server).
    pub async fn start(roles: &str) -> Stack {
        Self::start_with(roles, StackConfig::default()).await
    }

    /// Like [`Stack::start`], with additions to the gateway configuration.
    pub async fn start_with(roles: &str, extra: StackConfig<'_>) -> Stack {
        Self::prepare().await.start(roles, extra).await
    }

    /// Starts PostgreSQL only, so a test can start what the gateway's
    /// configuration must name (e.g. a stand-in AWS endpoint) in between.
    pub async fn prepare() -> PreparedStack {
        let dir = tempfile::Builder::new()
            .prefix("postern-stack-")
            .tempdir()
            .expect("stack dir");
        let data_dir = dir.path().join("gateway-data");
        // The gateway's database CA is made on first use; PostgreSQL must
        // trust it for `cert` logins, exactly as an operator would set up
        // with `postern-gateway ca db`.
        let db_ca_pem = {
            let store = SqliteStore::open(&data_dir).expect("open gateway store");
            load_ca(&store, CaKind::Database, "postern")
                .expect("database CA")
                .cert_pem()
                .to_owned()
        };
        let pg = PgServer::start(&db_ca_pem).await;
        PreparedStack { pg, dir }
    }
}

/// PostgreSQL started, the gateway not yet: see [`Stack::prepare`].
pub struct PreparedStack {
    /// The database.
    pub pg: PgServer,
    dir: TempDir,
}

impl PreparedStack {
    /// Starts the gateway, as [`Stack::start_with`] does.
    pub async fn start(self, roles: &str, extra: StackConfig<'_>) -> Stack {
        let PreparedStack { pg, dir } = self;
        write_gateway_files(dir.path(), &pg, roles);
        let config_path = dir.path().join("gateway.yaml");
        write(&config_path, &gateway_yaml(&pg, "gateway-data", extra));
        let config = GatewayConfig::load(&config_path).expect("gateway config");
        let options = StartOptions {
            aws_identity: extra.aws_identity.cloned().unwrap_or(AwsIdentity::Nothing),
        };
        let gateway = server::start_with(config, options)
            .await
            .expect("gateway starts");
        Stack { gateway, pg, dir }
    }
}

impl Stack {
    /// A stack with [`DEFAULT_ROLES`] where each of `users` has role `dev`,
    /// [`PASSWORD`], and is logged in with the CLI.
    pub async fn with_dev_users(users: &[&str]) -> Stack {
        let stack = Stack::start(DEFAULT_ROLES).await;
        for u in users {
            stack.add_user(u, PASSWORD, &["dev"]);
            stack.login(u, PASSWORD).await;
        }
        stack
    }

    /// Creates a local user directly in the gateway's store.
    pub fn add_user(&self, name: &str, password: &str, roles: &[&str]) {
        put_user(self.gateway.store.as_ref(), name, password, roles);
    }

    /// Creates a local user who also needs one-time codes (TOTP); returns
    /// the secret, base32, as an authenticator app would hold it.
    pub fn add_user_with_totp(&self, name: &str, password: &str, roles: &[&str]) -> String {
        self.add_user(name, password, roles);
        let mut user = self
            .gateway
            .store
            .user(name)
            .expect("read user")
            .expect("user exists");
        let secret = postern_gateway::auth::totp::generate_secret();
        user.totp = Some(postern_gateway::store::TotpSecret(secret.clone()));
        self.gateway.store.put_user(&user).expect("store user");
        secret
    }

    /// Waits for an audit event of `kind` matching `matches` in the store
    /// and returns it as JSON.
    pub async fn wait_audit(
        &self,
        kind: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_audit(self.gateway.store.as_ref(), kind, matches).await
    }

    /// Sleeps until `who`'s session certificate has expired: the expiry is
    /// the event tests of expiry wait for.
    pub async fn until_expired(&self, who: &str) {
        let profile = Home::at(self.home(who)).resolve(None).unwrap();
        let expires =
            UNIX_EPOCH + Duration::from_secs(profile.identity.unwrap().expires_unix as u64);
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }

    /// Runs `postern-gateway --config <this stack's config> ARGS...` to its end.
    pub async fn gateway_cli(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(bin("postern-gateway"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("POSTERN_GATEWAY_CONFIG")
            .kill_on_drop(true);
        output(cmd).await
    }

    /// The gateway's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// The CA of the gateway's TLS certificate (PEM), for HTTP clients that
    /// play the browser (which, unlike the CLI, does not pin).
    pub fn gateway_ca_pem(&self) -> String {
        load_ca(self.gateway.store.as_ref(), CaKind::Host, "postern")
            .expect("host CA")
            .cert_pem()
            .to_owned()
    }

    /// The redirect URI the gateway gives identity providers (its default
    /// public URL names the first public address, `localhost`).
    pub fn sso_callback_url(&self) -> String {
        format!(
            "https://localhost:{}/v1/login/sso/callback",
            self.gateway.addr.port()
        )
    }

    /// Starts another gateway in front of the same database: the same
    /// configuration, but its own store, CAs and port.
    pub async fn start_second_gateway(&self) -> Running {
        let text = std::fs::read_to_string(self.config_path()).expect("read gateway.yaml");
        let path = self.dir.path().join("gateway-2.yaml");
        write(
            &path,
            &text.replace("data_dir: gateway-data", "data_dir: gateway-data-2"),
        );
        let config = GatewayConfig::load(&path).expect("second gateway config");
        let options = StartOptions {
            aws_identity: AwsIdentity::Nothing,
        };
        server::start_with(config, options)
            .await
            .expect("second gateway starts")
    }

    /// `host:port` of the gateway.
    pub fn gateway_addr(&self) -> String {
        format!("127.0.0.1:{}", self.gateway.addr.port())
    }

    /// The people's side of this stack: their homes and the `postern` CLI
    /// pointed at this gateway.
    pub fn clients(&self) -> Clients {
        Clients {
            homes: self.dir.path().join("homes"),
            gateway: self.gateway_addr(),
            ca_pin: self.gateway.ca_pin.clone(),
            cli: bin("postern"),
        }
    }

    /// See [`Clients::home`].
    pub fn home(&self, who: &str) -> PathBuf {
        self.clients().home(who)
    }

    /// See [`Clients::postern`].
    pub fn postern(&self, who: &str) -> Command {
        self.clients().postern(who)
    }

    /// See [`Clients::run`].
    pub async fn run(&self, who: &str, args: &[&str], stdin: &str) -> std::process::Output {
        self.clients().run(who, args, stdin).await
    }

    /// See [`Clients::try_login`].
    pub async fn try_login(&self, who: &str, password: &str) -> std::process::Output {
        self.clients().try_login(who, password).await
    }

    /// See [`Clients::login`].
    pub async fn login(&self, who: &str, password: &str) {
        self.clients().login(who, password).await
    }

    /// See [`Clients::proxy`].
    pub async fn proxy(&self, who: &str, args: &[&str]) -> Proxy {
        self.clients().proxy(who, args).await
    }
}

/// People using one gateway address: a `$POSTERN_HOME` each under `homes`,
/// and the `postern` CLI with the file key store.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Where each person's home is made.
    pub homes: PathBuf,
    /// The gateway's `host:port` as `postern login` takes it.
    pub gateway: String,
    /// The CA pin for `postern login --ca-pin`.
    pub ca_pin: String,
    /// The `postern` program: this build's, or an installed one.
    pub cli: PathBuf,
}

impl Clients {
    /// A `$POSTERN_HOME` for one person (created on first use).
    pub fn home(&self, who: &str) -> PathBuf {
        let home = self.homes.join(who);
        std::fs::create_dir_all(&home).expect("home dir");
        home
    }

    /// The `postern` CLI for `who`, with the file key store.
    pub fn postern(&self, who: &str) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.env("POSTERN_HOME", self.home(who))
            .env("POSTERN_KEY_STORE", "file")
            .env_remove("POSTERN_PROFILE")
            .kill_on_drop(true);
        cmd
    }

    /// Runs the CLI for `who` with `stdin` as input and returns its output.
    pub async fn run(&self, who: &str, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = self
            .postern(who)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run postern");
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
        drop(input);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("postern finished in time")
            .expect("postern output")
    }

    /// Runs `postern login` for `who` with the gateway's CA pin and
    /// `password`, whatever the outcome.
    pub async fn try_login(&self, who: &str, password: &str) -> std::process::Output {
        let (addr, pin) = (&self.gateway, &self.ca_pin);
        self.run(
            who,
            &[
                "login",
                addr,
                "--user",
                who,
                "--password-stdin",
                "--ca-pin",
                pin,
            ],
            &format!("{password}\n"),
        )
        .await
    }

    /// Starts `postern login GATEWAY --sso EXTRA... --browser none` for
    /// `who` and returns it once it printed the identity provider's address,
    /// with that address.
    pub async fn start_sso_login(&self, who: &str, extra: &[&str]) -> (Child, String) {
        let mut child = self
            .postern(who)
            .args(["login", &self.gateway, "--ca-pin", &self.ca_pin])
            .args(["--browser", "none", "--sso"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run postern login --sso");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("http") {
                    return Some(line);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = url else {
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "postern login --sso printed no address: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Keep draining stdout so the CLI never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, url)
    }

    /// `postern login GATEWAY --sso --device ...` for `who`, until it
    /// prints that it waits for the approval; returns what it told the
    /// person.
    pub async fn start_device_login(&self, who: &str, extra: &[&str]) -> (Child, DevicePrompt) {
        let mut child = self
            .postern(who)
            .args(["login", &self.gateway, "--ca-pin", &self.ca_pin])
            .args(["--sso", "--device"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run postern login --sso --device");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let printed = tokio::time::timeout(Duration::from_secs(30), async {
            let mut printed = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let done = line.starts_with("Waiting for the approval");
                printed.push(line);
                if done {
                    return Some(printed);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(printed) = printed else {
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "postern login --sso --device did not wait for an approval: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        println!(
            "postern login --sso --device printed:\n{}",
            printed.join("\n")
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let after = |intro: &str| {
            let at = printed
                .iter()
                .position(|l| l.starts_with(intro))
                .unwrap_or_else(|| panic!("no {intro:?} in {printed:?}"));
            printed[at + 1].trim().to_owned()
        };
        let labelled = |label: &str| {
            printed
                .iter()
                .find_map(|l| l.trim().strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label:?} in {printed:?}"))
                .trim()
                .to_owned()
        };
        let prompt = DevicePrompt {
            verification_uri: after("To sign in, open this address"),
            user_code: after("and enter the code"),
            hostname: labelled("machine:"),
            fingerprint: labelled("key fingerprint:"),
        };
        (child, prompt)
    }

    /// Logs `who` in with the gateway's CA pin; panics with the CLI's output on failure.
    pub async fn login(&self, who: &str, password: &str) {
        let out = self.try_login(who, password).await;
        assert!(
            out.status.success(),
            "postern login failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `postern proxy db ARGS...` for `who` and waits until it listens.
    pub async fn proxy(&self, who: &str, args: &[&str]) -> Proxy {
        let mut child = self
            .postern(who)
            .args(["proxy", "db"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run postern proxy db");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("proxy stdout") {
                // `127.0.0.1:PORT` or a socket `DIR/.s.PGSQL.PORT`.
                if let Some(addr) = line.split("listening on ").nth(1) {
                    return addr
                        .trim()
                        .rsplit([':', '.'])
                        .next()
                        .unwrap()
                        .parse::<u16>()
                        .ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(port) = port else {
            let out = child.wait_with_output().await.expect("proxy output");
            panic!(
                "postern proxy db {args:?} did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // Keep draining stdout so the proxy never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proxy { child, port }
    }
}

/// Creates (or replaces) a local user with `password` and `roles` in `store`.
pub fn put_user(store: &dyn Store, name: &str, password: &str, roles: &[&str]) {
    store
        .put_user(&UserRecord {
            name: name.into(),
            password_hash: hash_password(password).expect("hash"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            traits: BTreeMap::new(),
            totp: None,
        })
        .expect("store user");
}

/// Waits for an audit event of `kind` matching `matches` in `store` and
/// returns it as JSON.
pub async fn wait_audit(
    store: &dyn Store,
    kind: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(Duration::from_secs(20), async || {
        let events = store.recent_audit(1000).unwrap();
        events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .find(|e| e["event"] == kind && matches(e))
            .ok_or_else(|| format!("{events:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("no {kind} audit event: {e}"))
}

/// A running `postern proxy db`; killed on drop.
pub struct Proxy {
    /// The CLI process.
    pub child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl Proxy {
    /// Runs one statement through the tunnel with psql (`conninfo` as for
    /// [`Proxy::psql`]) and returns success, stdout and stderr, trimmed.
    pub async fn query(&self, conninfo: &str, sql: &str) -> (bool, String, String) {
        let mut cmd = self.psql(conninfo);
        cmd.args(["-c", sql]);
        output(cmd).await
    }

    /// psql against the tunnel, with `conninfo` appended (e.g. `user=x dbname=y`).
    pub fn psql(&self, conninfo: &str) -> Command {
        psql(self.port, conninfo)
    }
}

/// A tokio-postgres session as `user` on database `db` through a tunnel's
/// loopback `port` (no password, TLS off: the tunnel's side), open until
/// the client is dropped.
pub async fn connect(port: u16, user: &str, db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname(db)
        .connect_timeout(Duration::from_secs(20))
        .connect(tokio_postgres::NoTls)
        .await
        .expect("session through the tunnel");
    tokio::spawn(connection);
    client
}

/// Runs a command to completion (at most a minute) and returns success,
/// stdout and stderr, trimmed.
pub async fn output(mut cmd: Command) -> (bool, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// psql against a loopback port: no password, no psqlrc, unaligned output.
pub fn psql(port: u16, conninfo: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host=127.0.0.1 port={port} connect_timeout=10 {conninfo}"
    ))
    .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
    .env_remove("PGPASSWORD")
    .env_remove("PGSERVICE")
    .env("PGAPPNAME", "postern-tests")
    .kill_on_drop(true);
    cmd
}

/// Path of a workspace binary, built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{path:?} is missing: build the workspace first (`cargo build --workspace` or `scripts/test`)"
    );
    path
}

/// Writes what [`gateway_yaml`] names into `dir`: the roles and the
/// database server's CA and passwords.
pub(crate) fn write_gateway_files(dir: &Path, pg: &PgServer, roles: &str) {
    write(&dir.join("roles.yaml"), roles);
    write(&dir.join("pg-ca.pem"), pg.server_ca_pem());
    write(&dir.join("scram.pw"), pg.scram_password());
    write(&dir.join("md5.pw"), pg.md5_password());
}

/// A gateway.yaml listening on a free loopback port, with its state in
/// `data_dir` and two databases on `pg`: `pg` (labels `env: dev`) and
/// `pg-prod` (`env: prod`), plus `extra`.
pub(crate) fn gateway_yaml(pg: &PgServer, data_dir: &str, extra: StackConfig<'_>) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
data_dir: {data_dir}
roles: [roles.yaml]
{gateway_extra}
databases:
  - name: pg
    description: Test PostgreSQL
    labels: {{ env: dev }}
    uri: localhost:{port}
    tls: {{ mode: verify-full, ca_cert_file: pg-ca.pem }}
    passwords:
      - {{ db_user: scramuser, password_file: scram.pw }}
      - {{ db_user: md5user, password_file: md5.pw }}
{pg_extra}
  - name: pg-prod
    labels: {{ env: prod }}
    uri: localhost:{port}
    tls: {{ mode: verify-full, ca_cert_file: pg-ca.pem }}
{extra_databases}
"#,
        port = pg.port(),
        gateway_extra = extra.gateway_extra,
        pg_extra = indent(extra.pg_extra, "    "),
        extra_databases = indent(
            &extra
                .extra_databases
                .replace("{port}", &pg.port().to_string()),
            "  "
        ),
    )
}

fn indent(yaml: &str, by: &str) -> String {
    yaml.lines().map(|line| format!("{by}{line}\n")).collect()
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
}
