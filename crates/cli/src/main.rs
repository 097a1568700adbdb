//! `postern`: the command-line client. Argument parsing lives here; each
//! command is a short function over `postern-client` in `commands`.

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use postern_client::keystore::KeyStoreKind;

/// Password-less access to PostgreSQL through a Postern gateway.
#[derive(Parser)]
#[command(name = "postern", version)]
struct Cli {
    /// Profile to use instead of the current one.
    #[arg(long, global = true, env = "POSTERN_PROFILE")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to a gateway and make it the current profile.
    Login(LoginArgs),
    /// Show the current session: user, roles, traits, expiry.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Forget the session of the current (or --profile) profile.
    Logout,
    /// Databases.
    #[command(subcommand)]
    Db(DbCommand),
    /// Local tunnels.
    #[command(subcommand)]
    Proxy(ProxyCommand),
}

#[derive(Args)]
struct LoginArgs {
    /// Gateway address, HOST:PORT.
    gateway: String,
    /// Local username.
    #[arg(long)]
    user: String,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Trust the gateway CA with this fingerprint (sha256:...).
    #[arg(long)]
    ca_pin: Option<String>,
    /// Where to keep the private key.
    #[arg(long, env = "POSTERN_KEY_STORE", default_value = "keyring")]
    key_store: KeyStoreKind,
}

#[derive(Subcommand)]
enum DbCommand {
    /// List the databases you may use.
    Ls {
        /// Show allowed db users, names, roles and labels.
        #[arg(short, long)]
        verbose: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Open a tunnel and run psql through it.
    Connect(TunnelArgs),
    /// List your running statements on a database.
    Queries {
        #[command(flatten)]
        target: TargetArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Cancel (or terminate) one of your running statements.
    Cancel {
        #[command(flatten)]
        target: TargetArgs,
        /// Process id, as `postern db queries` shows it.
        pid: i32,
        /// End the whole session instead of only the statement.
        #[arg(long)]
        terminate: bool,
    },
}

/// Which database, and as whom.
#[derive(Args, Clone)]
struct TargetArgs {
    /// Database name in the catalog.
    database: String,
    /// Database user.
    #[arg(long)]
    db_user: Option<String>,
    /// Database name inside the server.
    #[arg(long)]
    db_name: Option<String>,
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Run a local tunnel to a database in the foreground.
    Db(TunnelArgs),
}

#[derive(Args, Clone)]
struct TunnelArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Database roles to request (auto-provisioned users), comma-separated.
    #[arg(long, value_delimiter = ',')]
    db_roles: Vec<String>,
    /// Local port (default: the one used last time for this target).
    #[arg(long)]
    port: Option<u16>,
    /// Runaway guard: warn about statements running longer than this (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    warn_after: Option<std::time::Duration>,
    /// Runaway guard: cancel statements running longer than this (e.g. 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    cancel_after: Option<std::time::Duration>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSTERN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::FAILURE
        }
    }
}
