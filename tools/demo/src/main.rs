//! `scripts/demo`: runs Postern's main job on this machine with embedded
//! defaults — a local PostgreSQL 15 with TLS and sample data, a gateway in
//! front of it, and a local Postern user — then prints the exact steps to
//! connect through a tunnel. Stays in the foreground until Ctrl+C or
//! SIGTERM, then stops everything it started.
//!
//! PostgreSQL is set up with the tests' fixture (`postern_tests::pg`), so
//! the demo and the tests share one bootstrap; the gateway says where it
//! listens in its ready file (`postern-gateway start --ready-file`).
//! Idempotent: a second run reuses the state directory (PostgreSQL data,
//! gateway CAs and users, generated passwords).

mod postgres;
mod replicas;
mod report;
mod sso;

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use postern_gateway::cmd::ReadyFile;
use postern_tests::idp::Idp;
use postern_tests::pg::{self, Postmaster};
use postern_tests::replicas::HaProxy;
use postern_tests::{eventually, random_hex};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The Postern user the demo creates.
const DEMO_USER: &str = "demo";
/// The database entry in the gateway's catalog.
const DEMO_DATABASE: &str = "demo-pg";
/// The database users the demo role may use.
const DB_USERS: [&str; 2] = ["demo_reader", "demo_writer"];
/// The databases with sample data.
const DB_NAMES: [&str; 2] = ["shop", "analytics"];
/// How long the gateway may take to write its ready file.
const GATEWAY_START: Duration = Duration::from_secs(60);

const STATE_LAYOUT: &str = "\
State in DIR, kept between runs:
  gateway.yaml, roles.yaml   gateway configuration (rewritten on every run)
  gateway-data/              gateway store: CAs, users
  gateway.ready              the running gateway's address and CA pin (JSON)
  demo.pw, demo_writer.pw    generated passwords (0600)
  pg-tls/ca.crt              CA of PostgreSQL's server certificate (new on every run)
  pg/                        PostgreSQL data directory, unix socket and log
  gateway.log                gateway log of the current run
With --replicas N, also:
  gateway-b.yaml, ...        the other replicas' configuration (gateway.yaml is replica a)
  store.pw, store.kek        the shared store's password and key-encryption key (0600)
  db-ca.pem, db-ca.key       the replicas' database CA (0600)
  gateway-b.log, ...         the other replicas' logs
  haproxy.cfg, haproxy.log   the load balancer in front of them";

/// Starts a local PostgreSQL (databases shop and analytics) and a Postern
/// gateway that serves it as "demo-pg", creates the Postern user "demo", and
/// prints how to log in and connect. Ctrl+C (or SIGTERM) stops both.
#[derive(Parser)]
#[command(name = "scripts/demo", bin_name = "scripts/demo", after_help = STATE_LAYOUT)]
struct Args {
    /// Print the connection steps only; without it the desktop app is built,
    /// signed in as the demo user and started.
    #[arg(long)]
    headless: bool,
    /// Once everything is ready, write POSTERN_DEMO_* shell variables to FILE.
    #[arg(long, value_name = "FILE")]
    env: Option<PathBuf>,
    /// State directory (default ${POSTERN_DEMO_DIR:-${XDG_DATA_HOME:-~/.local/share}/postern-demo}).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Gateway port (default 3080, or the next free one).
    #[arg(long, value_name = "GATEWAY_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Use the release binaries already built instead of running cargo build.
    #[arg(long)]
    no_build: bool,
    /// Run N gateway replicas on a shared PostgreSQL store (in the demo's
    /// PostgreSQL) behind HAProxy on the gateway port; 1 is one gateway on
    /// its embedded SQLite store.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=9))]
    replicas: u8,
    /// Also start an identity provider (the tests' oidc-provider) with a
    /// sample person, registered as the gateway's single sign-on connector.
    #[arg(long)]
    sso: bool,
}

/// A message to stderr; stdout stays for what the demo prints on purpose.
fn log(message: impl std::fmt::Display) {
    eprintln!("demo: {message}");
}

fn warn(message: impl std::fmt::Display) {
    eprintln!("demo: warning: {message}");
}

/// The last `lines` lines of `file`, indented, on stderr.
fn log_tail(file: &Path, lines: usize) {
    match fs::read(file) {
        Ok(text) if !text.is_empty() => {
            let text = String::from_utf8_lossy(&text);
            let all: Vec<&str> = text.lines().collect();
            eprintln!("--- last {lines} lines of {} ---", file.display());
            for line in &all[all.len().saturating_sub(lines)..] {
                eprintln!("    {line}");
            }
            eprintln!("---");
        }
        _ => eprintln!("(no log at {})", file.display()),
    }
}

/// What the demo started, for the cleanup whichever way it ends.
#[derive(Default)]
struct Demo {
    env_file: Option<PathBuf>,
    env_written: bool,
    ready: bool,
    /// The log to show if startup fails at the current step.
    stage_log: Option<PathBuf>,
    /// The gateway, or each replica.
    gateways: Vec<Child>,
    /// Their logs, in the same order.
    gateway_logs: Vec<PathBuf>,
    /// The load balancer in front of the replicas.
    haproxy: Option<HaProxy>,
    /// The identity provider of `--sso`.
    idp: Option<Idp>,
    gateway_pid_file: Option<PathBuf>,
    desktop: Option<Child>,
    postgres: Option<(Postmaster, PathBuf)>,
    /// Held while the demo runs: one demo per state directory.
    lock: Option<File>,
}

/// How a run ended.
enum End {
    /// A signal before everything was ready.
    Interrupted,
    /// A signal once everything ran: a normal end.
    Stopped,
    /// Startup failed.
    Failed(anyhow::Error),
    /// A gateway exited on its own once everything ran.
    GatewayDied,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut demo = Demo::default();
    let end = tokio::select! {
        started = start(&args, &mut demo) => match started {
            Ok(()) => None,
            Err(e) => Some(End::Failed(e)),
        },
        () = signals.next() => Some(End::Interrupted),
    };
    let end = match end {
        Some(end) => end,
        None => run_until_stopped(&mut demo, &mut signals).await,
    };
    let code = match &end {
        End::Stopped => 0,
        End::Interrupted => 130,
        End::Failed(_) | End::GatewayDied => 1,
    };
    if let End::Failed(e) = &end {
        eprintln!("demo: error: {e:#}");
    }
    cleanup(&mut demo, &end).await;
    std::process::ExitCode::from(code)
}

/// SIGINT and SIGTERM, caught from the start so that the cleanup always runs.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("catch SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        eprintln!();
    }
}

/// Foreground until a signal or until a gateway dies.
async fn run_until_stopped(demo: &mut Demo, signals: &mut Signals) -> End {
    tokio::select! {
        () = signals.next() => {
            log("stopping (signal received)");
            End::Stopped
        }
        died = first_exit(&mut demo.gateways, &demo.gateway_logs) => {
            demo.ready = false;
            log("a gateway exited unexpectedly");
            log_tail(&died, 40);
            End::GatewayDied
        }
    }
}

/// Completes when one of `gateways` exits, with its log. The demo checks
/// every half second: a demo-sized stand-in for waiting on all at once.
async fn first_exit(gateways: &mut [Child], logs: &[PathBuf]) -> PathBuf {
    loop {
        for (gateway, log) in gateways.iter_mut().zip(logs) {
            if let Ok(Some(_)) = gateway.try_wait() {
                return log.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn cleanup(demo: &mut Demo, end: &End) {
    if !demo.ready && !matches!(end, End::Stopped) {
        if matches!(end, End::Interrupted) {
            log("interrupted during startup; stopping what was started");
        } else {
            log("startup failed; stopping what was started");
        }
        if let Some(stage_log) = &demo.stage_log {
            log_tail(stage_log, 40);
        }
    }
    if let (true, Some(env_file)) = (demo.env_written, &demo.env_file) {
        let _ = fs::remove_file(env_file);
    }
    if let Some(mut desktop) = demo.desktop.take() {
        stop_child(&mut desktop, Duration::from_secs(10)).await;
    }
    if let Some(haproxy) = demo.haproxy.take() {
        log("stopping HAProxy");
        drop(haproxy);
    }
    // All at once: each gateway drains its sessions in its own time.
    let mut stopping = tokio::task::JoinSet::new();
    for mut gateway in demo.gateways.drain(..) {
        if let Some(pid) = gateway.id() {
            log(format!("stopping the gateway (pid {pid})"));
        }
        stopping.spawn(async move { stop_child(&mut gateway, Duration::from_secs(15)).await });
    }
    stopping.join_all().await;
    if let Some(pid_file) = &demo.gateway_pid_file {
        let _ = fs::remove_file(pid_file);
    }
    if demo.idp.take().is_some() {
        log("stopping the identity provider");
    }
    if let Some((mut postmaster, log_path)) = demo.postgres.take() {
        log("stopping PostgreSQL");
        if !postmaster.shut_down() {
            warn(format!(
                "PostgreSQL did not stop in time; see {}",
                log_path.display()
            ));
        }
    }
    demo.lock = None;
}

/// SIGTERM, then SIGKILL after `timeout`.
async fn stop_child(child: &mut Child, timeout: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    stop_pid(pid, timeout, child.wait()).await;
}

/// Sends SIGTERM to `pid` and waits for `exited` up to `timeout`, then kills.
async fn stop_pid<T>(pid: u32, timeout: Duration, exited: impl Future<Output = T>) {
    let Some(target) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    if rustix::process::kill_process(target, rustix::process::Signal::TERM).is_err() {
        return; // gone already
    }
    if tokio::time::timeout(timeout, exited).await.is_err() {
        warn(format!(
            "process {pid} did not stop within {}s; killing it",
            timeout.as_secs()
        ));
        let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
    }
}

/// Where things are: the checkout, the binaries, the state directory.
struct Paths {
    root: PathBuf,
    bin_dir: PathBuf,
    dir: PathBuf,
}

impl Paths {
    fn gateway_bin(&self) -> PathBuf {
        self.bin_dir.join("postern-gateway")
    }

    fn gateway_config(&self) -> PathBuf {
        self.dir.join("gateway.yaml")
    }

    /// `postern-gateway --config DIR/gateway.yaml ARGS...`.
    fn gateway(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.gateway_bin());
        cmd.arg("--config")
            .arg(self.gateway_config())
            .args(args)
            .env_remove("POSTERN_GATEWAY_CONFIG")
            .kill_on_drop(true);
        cmd
    }
}

async fn start(args: &Args, demo: &mut Demo) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("current directory")?;
    demo.env_file = args.env.as_ref().map(|f| cwd.join(f));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    // This program is TARGET/debug/postern-demo; the others are built in
    // TARGET/release.
    let exe = std::env::current_exe().context("path of this program")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory")?;
    let paths = Paths {
        bin_dir: target.join("release"),
        dir: cwd.join(args.dir.clone().unwrap_or_else(default_dir)),
        root,
    };

    let mut bins = vec!["postern", "postern-gateway"];
    if !args.headless {
        bins.push("postern-desktop");
    }
    if !args.no_build {
        build(&paths.root, &bins, args.headless).await?;
    }
    for bin in &bins {
        let path = paths.bin_dir.join(bin);
        if !path.is_file() {
            bail!("{} is missing (run without --no-build)", path.display());
        }
    }

    fs::create_dir_all(&paths.dir).with_context(|| format!("create {}", paths.dir.display()))?;
    let dir = paths.dir.canonicalize()?;
    let paths = Paths { dir, ..paths };
    let dir = &paths.dir;
    let mode = fs::metadata(dir)?.permissions().mode();
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o077));
    demo.lock = Some(lock(dir)?);

    let cluster = postgres::Cluster::locate(dir).await?;
    stop_leftover_gateway(&paths).await;
    cluster.stop_leftover();
    if let Some(env_file) = &demo.env_file {
        let _ = fs::remove_file(env_file); // never leave a stale "ready" file
    }

    // Secrets, generated once. A regenerated demo.pw must reach the
    // gateway's store too (users reset below).
    let demo_pw_file = dir.join("demo.pw");
    let demo_pw_new = !has_content(&demo_pw_file);
    if demo_pw_new {
        write_private(&demo_pw_file, &format!("{}\n", random_hex(16)))?;
    }
    let writer_pw_file = dir.join("demo_writer.pw");
    if !has_content(&writer_pw_file) {
        write_private(&writer_pw_file, &format!("{}\n", random_hex(16)))?;
    }
    let demo_password = read_secret(&demo_pw_file)?;
    let writer_password = read_secret(&writer_pw_file)?;

    // Ports: PostgreSQL 15432, gateway 3080, or the next free ones; two more
    // are suggested for the tunnels in the printed steps.
    let pg_port = free_port_from(15432, &[])?;
    let gateway_port = match args.port {
        Some(port) if port_in_use(port) => {
            bail!("port {port} is already in use; choose another --port")
        }
        Some(port) => port,
        None => free_port_from(3080, &[pg_port])?,
    };
    let reader_port = free_port_from(pg_port + 1, &[pg_port, gateway_port])?;
    let writer_port = free_port_from(reader_port + 1, &[pg_port, gateway_port, reader_port])?;
    // With replicas, HAProxy takes the gateway port and the replicas the
    // ports after the tunnels'.
    let names = replicas::names(usize::from(args.replicas));
    let shared = args.replicas > 1;
    let mut taken = vec![pg_port, gateway_port, reader_port, writer_port];
    let listen_ports = if shared {
        let mut ports = Vec::new();
        for _ in &names {
            let port = free_port_from(taken.iter().max().map_or(3081, |p| p + 1), &taken)?;
            taken.push(port);
            ports.push(port);
        }
        ports
    } else {
        vec![gateway_port]
    };

    write_roles(&paths)?;
    let shared_yaml = shared.then(|| replicas::shared_yaml(pg_port, gateway_port));
    let sso = args.sso.then(|| sso::Sso::plan(dir)).transpose()?;
    let connectors = sso
        .as_ref()
        .map(sso::Sso::connector_yaml)
        .unwrap_or_default();
    let mut configs = Vec::new();
    for (i, (name, port)) in names.iter().zip(&listen_ports).enumerate() {
        let config = replicas::config_file(dir, i, name);
        let data_dir = match i {
            0 => "gateway-data".to_owned(),
            _ => format!("gateway-data-{name}"),
        };
        let shared = shared_yaml
            .as_ref()
            .map(|yaml| format!("replica: {name}\n{yaml}"))
            .unwrap_or_default();
        fs::write(
            &config,
            gateway_yaml(*port, pg_port, &data_dir, &format!("{shared}{connectors}")),
        )?;
        configs.push(config);
    }

    // PostgreSQL trusts the CA that signs the gateway's client certificates
    // for `cert` logins. One gateway creates it in its data dir on first
    // use; replicas share one given as files (it must exist before the
    // store, which lives in this PostgreSQL).
    let secrets = match shared {
        true => Some(replicas::Secrets::ensure(dir)?),
        false => None,
    };
    let client_ca = match &secrets {
        Some(secrets) => secrets.db_ca_pem.clone(),
        None => output(paths.gateway(&["ca", "db"])).await?,
    };
    let pg_tls = dir.join("pg-tls");
    fs::create_dir_all(&pg_tls)?;
    fs::set_permissions(&pg_tls, fs::Permissions::from_mode(0o700))?;
    let server_ca_file = pg_tls.join("ca.crt");
    demo.stage_log = Some(cluster.log_path());
    let (postmaster, server_ca_pem) = cluster.start(&client_ca, pg_port).await?;
    demo.postgres = Some((postmaster, cluster.log_path()));
    fs::write(&server_ca_file, server_ca_pem)?;
    cluster.load_sample_data(pg_port, &writer_password).await?;
    if let Some(secrets) = &secrets {
        cluster
            .create_store(pg_port, replicas::STORE, &secrets.store_password)
            .await?;
    }
    demo.stage_log = None;

    ensure_demo_user(&paths, &demo_pw_file, demo_pw_new).await?;

    // The gateways check their connector when they start: the provider
    // goes first.
    let sso_facts = match sso {
        Some(sso) => {
            let facts = report::SsoFacts {
                connector: sso::CONNECTOR,
                person: sso::PERSON,
                password: sso.password.clone(),
                password_file: sso.password_file.clone(),
                issuer: sso.issuer(),
                gateway_ca: dir.join("gateway-ca.pem"),
            };
            let gateway_ca = output(paths.gateway(&["ca", "host"])).await?;
            fs::write(&facts.gateway_ca, gateway_ca)?;
            demo.idp = Some(sso.start(&paths.root, gateway_port).await?);
            Some(facts)
        }
        None => None,
    };

    let pid_file = dir.join("gateway.pid");
    demo.gateway_pid_file = Some(pid_file.clone());
    let mut started = Vec::new();
    for (i, (name, config)) in names.iter().zip(&configs).enumerate() {
        let replica = shared.then_some(name.as_str());
        started.push(start_gateway(&paths, config, i, replica, demo).await?);
        let pids: String = demo
            .gateways
            .iter()
            .filter_map(Child::id)
            .map(|pid| format!("{pid}\n"))
            .collect();
        fs::write(&pid_file, pids)?;
    }
    let ready = if shared {
        let servers: Vec<_> = names
            .iter()
            .cloned()
            .zip(started.iter().map(|r| r.address.clone()))
            .collect();
        log(format!(
            "starting HAProxy on 127.0.0.1:{gateway_port} in front of {} (log {})",
            servers
                .iter()
                .map(|(name, address)| format!("{name} {address}"))
                .collect::<Vec<_>>()
                .join(", "),
            dir.join("haproxy.log").display()
        ));
        // HAProxy checks each replica's readiness over TLS, verified
        // against the gateways' CA.
        let gateway_ca = output(paths.gateway(&["ca", "host"])).await?;
        demo.haproxy = Some(HaProxy::start(dir, gateway_port, &servers, &gateway_ca).await);
        ReadyFile {
            address: format!("127.0.0.1:{gateway_port}"),
            ca_pin: started[0].ca_pin.clone(),
        }
    } else {
        started[0].clone()
    };
    let replicas: Vec<(String, String)> = match shared {
        true => names
            .iter()
            .cloned()
            .zip(started.iter().map(|r| r.address.clone()))
            .collect(),
        false => Vec::new(),
    };

    let facts = report::Facts {
        gateway: &ready,
        user: DEMO_USER,
        password: &demo_password,
        password_file: &demo_pw_file,
        database: DEMO_DATABASE,
        db_users: &DB_USERS,
        db_names: &DB_NAMES,
        pg_port,
        pg_socket_dir: &cluster.socket_dir(),
        pg_superuser: pg::server_user(),
        pg_bindir: pg::bindir(),
        pg_ca: &server_ca_file,
        pg_log: &cluster.log_path(),
        writer_password: &writer_password,
        reader_port,
        writer_port,
        bin_dir: &paths.bin_dir,
        gateway_logs: &demo.gateway_logs,
        replicas: &replicas,
        sso: sso_facts.as_ref(),
    };
    print!("{}", facts.connection_steps());
    std::io::stdout().flush()?;
    if let Some(env_file) = &demo.env_file {
        facts.write_env_file(env_file)?;
        demo.env_written = true;
    }
    demo.ready = true;

    if !args.headless {
        start_desktop(&paths, &ready, &demo_pw_file, demo).await?;
    }
    Ok(())
}

/// Starts the gateway with `config` (the `index`th, and its name when it is
/// one of several replicas) and returns what it wrote once it listened.
async fn start_gateway(
    paths: &Paths,
    config: &Path,
    index: usize,
    replica: Option<&str>,
    demo: &mut Demo,
) -> anyhow::Result<ReadyFile> {
    let (gateway_log, ready_file, what) = match (index, replica) {
        (_, None) => (
            "gateway.log".into(),
            "gateway.ready".into(),
            "the gateway".into(),
        ),
        (0, Some(name)) => (
            "gateway.log".into(),
            "gateway.ready".into(),
            format!("gateway replica {name}"),
        ),
        (_, Some(name)) => (
            format!("gateway-{name}.log"),
            format!("gateway-{name}.ready"),
            format!("gateway replica {name}"),
        ),
    };
    let (gateway_log, ready_file) = (paths.dir.join(gateway_log), paths.dir.join(ready_file));
    demo.stage_log = Some(gateway_log.clone());
    log(format!("starting {what} (log {})", gateway_log.display()));
    let _ = fs::remove_file(&ready_file);
    let log_file = File::create(&gateway_log)?;
    let mut gateway = Command::new(paths.gateway_bin());
    gateway
        .arg("--config")
        .arg(config)
        .args(["start", "--ready-file"])
        .arg(&ready_file)
        .env_remove("POSTERN_GATEWAY_CONFIG")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: a Ctrl+C in the terminal reaches the demo,
        // which stops the gateway itself.
        .process_group(0);
    let gateway = gateway.spawn().context("start the gateway")?;
    demo.gateways.push(gateway);
    demo.gateway_logs.push(gateway_log);
    let gateway = demo.gateways.last_mut().expect("just pushed");
    let ready = eventually(GATEWAY_START, async || {
        if let Ok(Some(_)) = gateway.try_wait() {
            return Ok(None);
        }
        ReadyFile::read(&ready_file).map(Some)
    })
    .await;
    let Ok(Some(ready)) = ready else {
        bail!("the gateway did not start");
    };
    demo.stage_log = None;
    Ok(ready)
}

/// `${POSTERN_DEMO_DIR:-${XDG_DATA_HOME:-~/.local/share}/postern-demo}`.
fn default_dir() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("POSTERN_DEMO_DIR") {
        return dir.into();
    }
    let data = set("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
    });
    data.join("postern-demo")
}

/// Builds the desktop UI (unless headless) and the release binaries `bins`.
async fn build(root: &Path, bins: &[&str], headless: bool) -> anyhow::Result<()> {
    if !headless {
        // The desktop app embeds its UI at compile time.
        log("building the desktop UI (ui/)");
        let ui = root.join("ui");
        if !ui.join("node_modules").is_dir() {
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&ui))
            .await?;
        }
        run(Command::new("npx")
            .args(["vite", "build", "--logLevel", "warn"])
            .current_dir(&ui))
        .await?;
    }
    log(format!("building release binaries: {}", bins.join(" ")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release"]).current_dir(root);
    for bin in bins {
        cmd.arg(format!("-p{bin}"));
    }
    run(&mut cmd).await
}

/// Runs a command to its end, its output going where the demo's goes.
async fn run(cmd: &mut Command) -> anyhow::Result<()> {
    succeed(cmd.stdin(Stdio::null())).await
}

/// Waits for a command set up by the caller and fails unless it succeeds.
async fn succeed(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().await.with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command to its end and returns its standard output.
async fn output(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command to its end with `input` on standard input, its output
/// thrown away (errors still reach stderr).
async fn run_with_input(mut cmd: Command, input: &Path) -> anyhow::Result<()> {
    let input = File::open(input).with_context(|| format!("open {}", input.display()))?;
    succeed(cmd.stdin(input).stdout(Stdio::null())).await
}

/// Only one demo per state directory.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            anyhow::anyhow!(
                "another scripts/demo is running with {}; stop it first (Ctrl+C there)",
                dir.display()
            )
        },
    )?;
    Ok(file)
}

/// Stops the gateways of a run that was killed (SIGKILL, a closed shell,
/// ...): the lock proves no demo owns them any more. HAProxy, a child that
/// dies with the demo, needs no such care.
async fn stop_leftover_gateway(paths: &Paths) {
    let pid_file = paths.dir.join("gateway.pid");
    let pids: Vec<u32> = fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    // gateway.yaml, gateway-b.yaml, ...
    let ours = format!(
        "postern-gateway --config {}",
        paths.dir.join("gateway").display()
    );
    for pid in pids {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if !cmdline.contains(&ours) {
            continue;
        }
        log(format!(
            "stopping a gateway left by an earlier run (pid {pid})"
        ));
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let gone = eventually(Duration::from_secs(15), async || {
            if proc_dir.exists() {
                Err("still running")
            } else {
                Ok(())
            }
        });
        stop_pid(pid, Duration::from_secs(15), gone).await;
    }
    let _ = fs::remove_file(&pid_file);
}

/// Writes roles.yaml: the demo role.
fn write_roles(paths: &Paths) -> anyhow::Result<()> {
    // Deny the bootstrap superuser (postgres, or the OS user when not root).
    let superuser = pg::server_user();
    let deny_users = if superuser == "postgres" {
        "postgres".to_owned()
    } else {
        format!("postgres, {superuser}")
    };
    fs::write(
        paths.dir.join("roles.yaml"),
        format!(
            "\
# Written by scripts/demo on every run.
kind: role
version: v7
metadata: {{ name: demo }}
spec:
  allow:
    db_labels: {{ env: demo }}
    db_users: [demo_reader, demo_writer]
    db_names: [shop, analytics]
  deny:
    # A deny rule applies where its labels match: every database.
    db_labels: {{ \"*\": \"*\" }}
    db_users: [{deny_users}]
"
        ),
    )?;
    Ok(())
}

/// A gateway.yaml listening on `listen_port`, with its own state in
/// `data_dir` and `extra` top-level lines (what replicas share, the
/// single sign-on connector).
fn gateway_yaml(listen_port: u16, pg_port: u16, data_dir: &str, extra: &str) -> String {
    format!(
        "\
# Written by scripts/demo on every run; paths are relative to this file.
listen: 127.0.0.1:{listen_port}
data_dir: {data_dir}
roles: [roles.yaml]
{extra}limits:
  # One connection thread: this gateway serves one person and shares the
  # machine with its PostgreSQL and the clients (a gateway of its own would
  # keep the default, one per core).
  workers: 1
databases:
  - name: {DEMO_DATABASE}
    description: Demo PostgreSQL (shop, analytics)
    labels: {{ env: demo, team: data }}
    uri: localhost:{pg_port}
    tls: {{ mode: verify-full, ca_cert_file: pg-tls/ca.crt }}
    passwords:
      # demo_reader logs in with a certificate from the gateway's database CA.
      - {{ db_user: demo_writer, password_file: demo_writer.pw }}
"
    )
}

/// Creates the Postern user, or gives it the password of a regenerated
/// `demo.pw`.
async fn ensure_demo_user(paths: &Paths, pw_file: &Path, pw_new: bool) -> anyhow::Result<()> {
    let users = output(paths.gateway(&["users", "ls"])).await?;
    let exists = users
        .lines()
        .any(|line| line.split('\t').next() == Some(DEMO_USER));
    if exists {
        if pw_new {
            log(format!(
                "setting a new password for Postern user {DEMO_USER} ({} was missing)",
                pw_file.display()
            ));
            let reset = paths.gateway(&["users", "reset", DEMO_USER, "--password-stdin"]);
            run_with_input(reset, pw_file).await?;
        }
    } else {
        log(format!("creating Postern user {DEMO_USER}"));
        let add = paths.gateway(&[
            "users",
            "add",
            DEMO_USER,
            "--roles",
            "demo",
            "--password-stdin",
        ]);
        run_with_input(add, pw_file).await?;
    }
    Ok(())
}

/// Signs in as the demo user in the default POSTERN_HOME, as `postern login`
/// would, and opens the desktop app on it.
async fn start_desktop(
    paths: &Paths,
    ready: &ReadyFile,
    pw_file: &Path,
    demo: &mut Demo,
) -> anyhow::Result<()> {
    log(format!(
        "signing in to the demo gateway as {DEMO_USER} and starting the desktop app"
    ));
    let mut login = Command::new(paths.bin_dir.join("postern"));
    login.args([
        "login",
        &ready.address,
        "--user",
        DEMO_USER,
        "--password-stdin",
        "--ca-pin",
        &ready.ca_pin,
        "--key-store",
        "file",
    ]);
    if run_with_input(login, pw_file).await.is_err() {
        warn("postern login failed; sign in from the app with the password above");
    }
    let desktop_log = paths.dir.join("desktop.log");
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&desktop_log)?;
    let desktop = Command::new(paths.bin_dir.join("postern-desktop"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("start the desktop app")?;
    log(format!(
        "desktop app started (pid {}, log {}); Ctrl+C here stops it too",
        desktop.id().unwrap_or_default(),
        desktop_log.display()
    ));
    demo.desktop = Some(desktop);
    Ok(())
}

/// Whether something listens on 127.0.0.1:`port`.
fn port_in_use(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err()
}

/// The first free loopback port from `from` that is not in `taken` (ports
/// already promised to something not yet listening).
fn free_port_from(from: u16, taken: &[u16]) -> anyhow::Result<u16> {
    (from..u16::MAX)
        .find(|p| !taken.contains(p) && !port_in_use(*p))
        .with_context(|| format!("no free TCP port above {from} on 127.0.0.1"))
}

fn has_content(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Writes a file only its owner can read, whole or not at all (a temporary
/// name, renamed), so a reader that waits for it never sees half of it.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
