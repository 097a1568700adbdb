//! The `postern-gateway` command line; `main.rs` only calls [`run`].

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::auth::local::hash_password;
use crate::auth::totp;
use crate::ca::CaKind;
use crate::config::{GatewayConfig, LogConfig, LogFormat};
use crate::revocation::{add_lock, remove_lock};
use crate::server::{self, load_ca};
use crate::store::{TotpSecret, UserRecord};

/// Postern gateway: SSO and local login, session certificates, RBAC and database tunnels.
#[derive(Parser)]
#[command(name = "postern-gateway", version)]
struct Cli {
    /// Gateway configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "POSTERN_GATEWAY_CONFIG",
        default_value = "gateway.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Start {
        /// Once listening, write `{"address": ..., "ca_pin": ...}` to this
        /// file (0600, removed at shutdown), for scripts that wait for the gateway.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Manage local users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Lock users out: refuses new connections and API calls at once and ends live sessions.
    #[command(subcommand)]
    Locks(LocksCommand),
    /// Read the audit events in the store (of every replica sharing it).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check the configuration, its role files and the files it names, without
    /// starting anything or touching the store; prints each problem as
    /// FILE:LINE:COLUMN and exits 1 when there is any.
    CheckConfig,
    /// Print a CA certificate (PEM): `db` is what databases must trust for cert logins.
    Ca {
        /// Which CA: user, host or db.
        #[arg(value_parser = ["user", "host", "db"])]
        kind: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a local user (password read from the terminal or --password-stdin).
    Add {
        /// Username.
        name: String,
        /// Comma-separated Postern roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// A trait for role templates, e.g. `db_names=app,analytics` (repeatable).
        #[arg(long = "trait", value_name = "NAME=V1,V2")]
        traits: Vec<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Also require a one-time code (TOTP); prints the otpauth:// URI to
        /// add to an authenticator app.
        #[arg(long)]
        totp: bool,
    },
    /// Set a new password.
    Reset {
        /// Username.
        name: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Also issue a new one-time-code (TOTP) secret; prints its otpauth:// URI.
        #[arg(long)]
        totp: bool,
    },
    /// Remove a user.
    Rm {
        /// Username.
        name: String,
    },
    /// List users with their roles and traits.
    Ls,
}

#[derive(Subcommand)]
enum LocksCommand {
    /// Lock a user: their certificates open nothing and their live sessions end within seconds.
    Add {
        /// The Postern username to lock.
        #[arg(long)]
        user: String,
        /// How long the lock applies, e.g. `1h`, `30m` (default: until removed).
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Shown to the locked person, e.g. the reason or whom to ask.
        #[arg(long)]
        message: Option<String>,
    },
    /// List the locks that apply now.
    Ls,
    /// Remove a lock.
    Rm {
        /// The lock's id (`lock-...`, from `locks ls`).
        id: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Show events as a table, oldest first.
    Ls {
        /// From this time on: a duration back from now (`1h`, `7d`) or an
        /// RFC 3339 time (`2026-05-01T00:00:00Z`). Default: all events.
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Show the most recent N events that match.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only events of this Postern user.
        #[arg(long)]
        user: Option<String>,
        /// Only events of this kind (`login`, `session_start`, `query`, ...).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Print events as JSON lines, oldest first, for archives and log pipelines.
    Export {
        /// From this time on: a duration back from now (`1h`, `7d`) or an
        /// RFC 3339 time (`2026-05-01T00:00:00Z`).
        #[arg(long, value_parser = parse_since)]
        since: i64,
    },
}

/// Events read from the store at a time.
const AUDIT_PAGE: usize = 1000;

/// `--since`: a duration back from now, or an RFC 3339 time, as
/// milliseconds since the Unix epoch.
fn parse_since(raw: &str) -> Result<i64, String> {
    if let Ok(ago) = humantime_serde::re::humantime::parse_duration(raw) {
        let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
        return Ok((chrono::Utc::now() - ago).timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            format!("{raw:?} is neither a duration (`1h`, `7d`) nor an RFC 3339 time (`2026-05-01T00:00:00Z`)")
        })
}

/// What `postern-gateway start --ready-file PATH` writes once the gateway
/// listens: `{"address": "127.0.0.1:3080", "ca_pin": "sha256:..."}`. The
/// machine-readable counterpart of the two lines `start` prints.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadyFile {
    /// Where the gateway listens (`HOST:PORT`), as `postern login` takes it.
    pub address: String,
    /// Fingerprint of the gateway's CA, as `postern login --ca-pin` takes it.
    pub ca_pin: String,
}

/// A ready file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadyFileError {
    /// The file could not be read (it does not exist yet, most likely).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a ready file.
    #[error("{path} is not a gateway ready file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

impl ReadyFile {
    /// Writes the file whole or not at all (a temporary file in the same
    /// directory, renamed), readable by its owner only: a reader that waits
    /// for it never sees half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let written = (|| {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            serde_json::to_writer(&mut file, self)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Reads a file that [`ReadyFile::write`] wrote.
    pub fn read(path: &Path) -> Result<ReadyFile, ReadyFileError> {
        let text = fs::read(path).map_err(|source| ReadyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ReadyFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Parses arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CheckConfig = cli.command {
        return check_config(&cli.config);
    }
    // The configuration says how to log, so it is read first; its errors
    // are plain sentences on stderr.
    let result = GatewayConfig::load(&cli.config)
        .map_err(anyhow::Error::from)
        .and_then(|mut config| {
            config.log.format = log_format(config.log);
            // Keeps the log writer thread alive (and flushes it) until exit.
            let _log = init_logging(config.log.format);
            dispatch(cli.command, config, &cli.config)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: one line per problem, then a summary; exit status 1 when
/// there is a problem. Needs no log: everything it says is its output.
fn check_config(path: &Path) -> ExitCode {
    let report = crate::config::check::check(path);
    for problem in &report.problems {
        println!("{problem}");
    }
    println!("{}", report.summary());
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `log.format`, unless `POSTERN_LOG_FORMAT` is `json` or `text`.
fn log_format(config: LogConfig) -> LogFormat {
    match std::env::var("POSTERN_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ => config.format,
    }
}

/// Logs go to stderr through a writer thread: audit lines for every
/// statement must not put a write syscall on the relay's path.
/// Colour codes are written only when stderr is a terminal: a file or
/// journald gets plain text.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("POSTERN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = format == LogFormat::Json;
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // Block rather than drop lines when the log cannot keep up: audit
        // lines must not be lost.
        .lossy(false)
        // Lines queued together (a batch of audit events) leave in one
        // write: the worker flushes whenever its queue runs dry.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

fn dispatch(command: Command, config: GatewayConfig, path: &Path) -> anyhow::Result<()> {
    match command {
        Command::Start { ready_file } => start(config, path, ready_file.as_deref()),
        Command::Users(cmd) => users(&config, cmd),
        Command::Locks(cmd) => locks(&config, cmd),
        Command::Audit(cmd) => audit(&config, cmd),
        Command::CheckConfig => unreachable!("run() checks the configuration without loading it"),
        Command::Ca { kind } => {
            let kind = match kind.as_str() {
                "user" => CaKind::User,
                "host" => CaKind::Host,
                _ => CaKind::Database,
            };
            let store = crate::store::open(&config)?;
            let ca = load_ca(store.as_ref(), kind, &config.cluster_name)?;
            print!("{}", ca.cert_pem());
            Ok(())
        }
    }
}

fn start(config: GatewayConfig, path: &Path, ready_file: Option<&Path>) -> anyhow::Result<()> {
    // Connections run on the server's own worker threads; this thread only
    // accepts them and waits for a signal.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Installed first: a signal from now on drains, never kills.
        let mut signals = Signals::install().context("install the signal handlers")?;
        let human = config.log.format == LogFormat::Text;
        let running = server::start(config).await?;
        // For people; a JSON log's lines are all JSON (its "gateway
        // listening" line carries the same facts).
        if human {
            println!("postern gateway listening on {}", running.addr);
            println!("CA pin: {}", running.ca_pin);
        }
        if let Some(path) = ready_file {
            let ready = ReadyFile {
                address: running.addr.to_string(),
                ca_pin: running.ca_pin.clone(),
            };
            ready
                .write(path)
                .with_context(|| format!("write the ready file {}", path.display()))?;
        }
        let signal = loop {
            match signals.next().await {
                Signal::Reload => reload(&running, path).await,
                Signal::Stop(name) => break name,
            }
        };
        tracing::info!(
            signal,
            "draining before exit; another SIGTERM or SIGINT ends the sessions at once"
        );
        if let Some(path) = ready_file {
            // Whoever waits for the next start must not take this one's.
            let _ = fs::remove_file(path);
        }
        let hurry = async {
            // A reload asked for while draining has nothing left to change.
            let signal = loop {
                if let Signal::Stop(name) = signals.next().await {
                    break name;
                }
            };
            tracing::info!(signal, "asked again: ending the grace period now");
        };
        let drained = running.drain(hurry).await;
        tracing::info!(ended_sessions = drained.ended, "gateway stopped; exiting");
        Ok(())
    })
}

/// Reads the configuration file again and puts its roles and databases in
/// force; a file with a mistake changes nothing.
async fn reload(running: &server::Running, path: &Path) {
    let result = match GatewayConfig::load(path) {
        Ok(config) => running.reload(&config).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(reloaded) => tracing::info!(
            roles = reloaded.roles,
            databases = reloaded.databases,
            "roles and databases reloaded; live sessions keep theirs, other settings change at the next start"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "reload refused: the roles and databases in force are unchanged"
        ),
    }
}

/// What a signal asks of the gateway.
enum Signal {
    /// Reload the roles and databases (SIGHUP).
    Reload,
    /// Drain and stop; the signal's name.
    Stop(&'static str),
}

/// The signals the gateway answers: SIGHUP reloads, SIGTERM and SIGINT
/// (Ctrl+C) drain.
#[cfg(unix)]
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next one.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hangup.recv() => Signal::Reload,
            _ = self.terminate.recv() => Signal::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Signal::Stop("SIGINT"),
        }
    }
}

/// The signal that drains the gateway: Ctrl+C.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals)
    }

    /// Waits for the next one.
    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop("Ctrl+C")
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ")?;
        if rpassword::prompt_password("Repeat password: ")? != first {
            bail!("the passwords differ");
        }
        first
    };
    if password.len() < 8 {
        bail!("the password must have at least 8 characters");
    }
    Ok(password)
}

fn parse_traits(raw: &[String]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut traits = BTreeMap::new();
    for item in raw {
        let (name, values) = item
            .split_once('=')
            .with_context(|| format!("trait {item:?} must look like NAME=V1,V2"))?;
        traits.insert(
            name.to_owned(),
            values
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    Ok(traits)
}

/// Shows the one-time-code secret once, as the URI authenticator apps import.
fn print_totp_uri(secret: &TotpSecret, name: &str, issuer: &str) -> anyhow::Result<()> {
    let uri = totp::provisioning_uri(&secret.0, name, issuer)?;
    println!("one-time codes required; add this to an authenticator app (it is shown only once):");
    println!("{uri}");
    Ok(())
}

fn locks(config: &GatewayConfig, cmd: LocksCommand) -> anyhow::Result<()> {
    let store = crate::store::open(config)?;
    match cmd {
        LocksCommand::Add { user, ttl, message } => {
            let lock = add_lock(store.as_ref(), &user, ttl, message)?;
            println!(
                "{}: {user:?} is locked until {}; their live sessions end within seconds",
                lock.id,
                show_time(lock.expires_ms)
            );
        }
        LocksCommand::Ls => {
            let locks = store.locks(None)?;
            if locks.is_empty() {
                println!("no locks");
            }
            for lock in locks {
                println!(
                    "{}\tuser={}\tuntil={}\tcreated={}\tmessage={}",
                    lock.id,
                    lock.user,
                    show_time(lock.expires_ms),
                    show_time(Some(lock.created_ms)),
                    lock.message.as_deref().unwrap_or("")
                );
            }
        }
        LocksCommand::Rm { id } => {
            if !remove_lock(store.as_ref(), &id)? {
                bail!("no lock {id:?} applies; see `postern-gateway locks ls`");
            }
            println!("{id} removed");
        }
    }
    Ok(())
}

/// Calls `each` with every stored event from `since` on, oldest first,
/// reading the store a page at a time; stops early when `each` says so.
fn each_audit_event(
    store: &dyn crate::store::Store,
    since: i64,
    mut each: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let page = store.audit_since(since, after, AUDIT_PAGE)?;
        for event in &page {
            if !each(&event.json)? {
                return Ok(());
            }
        }
        match page.last() {
            Some(last) if page.len() == AUDIT_PAGE => after = Some(last.position),
            _ => return Ok(()),
        }
    }
}

fn audit(config: &GatewayConfig, cmd: AuditCommand) -> anyhow::Result<()> {
    let store = crate::store::open(config)?;
    match cmd {
        AuditCommand::Ls {
            since,
            limit,
            user,
            kind,
        } => {
            let mut shown = std::collections::VecDeque::with_capacity(limit.min(AUDIT_PAGE));
            each_audit_event(store.as_ref(), since.unwrap_or(0), |json| {
                let event: serde_json::Value = serde_json::from_str(json)?;
                let field = |name: &str| event[name].as_str().map(str::to_owned);
                if user
                    .as_ref()
                    .is_some_and(|u| field("user").as_ref() != Some(u))
                    || kind
                        .as_ref()
                        .is_some_and(|k| field("event").as_ref() != Some(k))
                {
                    return Ok(true);
                }
                if shown.len() == limit {
                    shown.pop_front();
                }
                if limit > 0 {
                    shown.push_back(event);
                }
                Ok(true)
            })?;
            if shown.is_empty() {
                println!("no audit events");
            }
            for event in shown {
                println!("{}", audit_row(event));
            }
        }
        AuditCommand::Export { since } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = each_audit_event(store.as_ref(), since, |json| {
                writeln!(out, "{json}")?;
                Ok(true)
            })
            .and_then(|()| Ok(out.flush()?));
            // A reader that has seen enough (`| head`) is no failure.
            if let Err(e) = written
                && e.downcast_ref::<std::io::Error>()
                    .is_none_or(|io| io.kind() != std::io::ErrorKind::BrokenPipe)
            {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One line of `audit ls`: time, replica, kind and user, then the other
/// fields as `name=value`.
fn audit_row(event: serde_json::Value) -> String {
    let serde_json::Value::Object(mut fields) = event else {
        return event.to_string();
    };
    let mut take = |name: &str| match fields.remove(name) {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => "-".into(),
    };
    let time = take("time_ms");
    let time = time
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(time, |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
    let (replica, kind, user) = (take("replica"), take("event"), take("user"));
    let rest: Vec<String> = fields
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(s) => format!("{name}={s:?}"),
            other => format!("{name}={other}"),
        })
        .collect();
    format!("{time}\t{replica}\t{kind}\t{user}\t{}", rest.join(" "))
}

/// A time in milliseconds since the epoch as RFC 3339 (UTC); `None` is "removed".
fn show_time(ms: Option<i64>) -> String {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => "removed".into(),
    }
}

fn users(config: &GatewayConfig, cmd: UsersCommand) -> anyhow::Result<()> {
    let store = crate::store::open(config)?;
    match cmd {
        UsersCommand::Add {
            name,
            roles,
            traits,
            password_stdin,
            totp,
        } => {
            if store.user(&name)?.is_some() {
                bail!("user {name:?} already exists; use `users reset` to change the password");
            }
            for lock in store.locks(Some(&name))? {
                println!(
                    "note: {} locks {name:?} until {}; remove it with `postern-gateway locks rm {}` to let the new user in",
                    lock.id,
                    show_time(lock.expires_ms),
                    lock.id
                );
            }
            let known = crate::rbac::RoleSet::load_paths(&config.roles)?;
            if let Some(missing) = roles.iter().find(|r| known.get(r).is_none()) {
                bail!("role {missing:?} is not defined in the gateway's role files");
            }
            let password_hash = hash_password(&read_password(password_stdin)?)
                .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))?;
            let totp = totp.then(|| TotpSecret(totp::generate_secret()));
            store.put_user(&UserRecord {
                name: name.clone(),
                password_hash,
                roles,
                traits: parse_traits(&traits)?,
                totp: totp.clone(),
            })?;
            println!("user {name:?} created");
            if let Some(secret) = totp {
                print_totp_uri(&secret, &name, &config.cluster_name)?;
            }
        }
        UsersCommand::Reset {
            name,
            password_stdin,
            totp,
        } => {
            let mut user = store
                .user(&name)?
                .with_context(|| format!("no user {name:?}"))?;
            user.password_hash = hash_password(&read_password(password_stdin)?)
                .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))?;
            if totp {
                user.totp = Some(TotpSecret(totp::generate_secret()));
            }
            store.put_user(&user)?;
            println!("password of {name:?} changed");
            println!(
                "certificates issued before stay valid until they expire; to end them now: postern-gateway locks add --user {name} --ttl {}",
                humantime_serde::re::humantime::format_duration(config.session_ttl)
            );
            if let (true, Some(secret)) = (totp, &user.totp) {
                print_totp_uri(secret, &name, &config.cluster_name)?;
            }
        }
        UsersCommand::Rm { name } => {
            if !store.delete_user(&name)? {
                bail!("no user {name:?}");
            }
            // Certificates already issued would work until they expire:
            // lock the name for as long as any of them can live.
            let lock = add_lock(
                store.as_ref(),
                &name,
                Some(config.session_ttl),
                Some("the user was removed".into()),
            )?;
            println!(
                "user {name:?} removed; {} ends their sessions and refuses their certificates until {}",
                lock.id,
                show_time(lock.expires_ms)
            );
        }
        UsersCommand::Ls => {
            for user in store.users()? {
                let traits: Vec<String> = user
                    .traits
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.join(",")))
                    .collect();
                println!(
                    "{}\troles={}\ttotp={}\t{}",
                    user.name,
                    user.roles.join(","),
                    if user.totp.is_some() { "on" } else { "off" },
                    traits.join(" ")
                );
            }
        }
    }
    Ok(())
}
