//! The command line: what `postern` accepts, as clap types.

use clap::{Args, Parser, Subcommand, ValueEnum};
use postern_client::keystore::KeyStoreKind;

/// Password-less access to PostgreSQL through a Postern gateway.
#[derive(Parser)]
#[command(name = "postern", version)]
pub(crate) struct Cli {
    /// Profile to use instead of the current one.
    #[arg(long, global = true, env = "POSTERN_PROFILE")]
    pub(crate) profile: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// List profiles (one per gateway), or choose the current one.
    Profiles {
        #[command(subcommand)]
        command: Option<ProfilesCommand>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Databases.
    #[command(subcommand)]
    Db(DbCommand),
    /// Local tunnels.
    #[command(subcommand)]
    Proxy(ProxyCommand),
}

#[derive(Subcommand)]
pub(crate) enum ProfilesCommand {
    /// Make a profile the current one.
    Use {
        /// Profile name, as `postern profiles` shows it.
        name: String,
    },
}

#[derive(Args)]
pub(crate) struct LoginArgs {
    /// Gateway address, HOST:PORT.
    pub(crate) gateway: String,
    /// Sign in with single sign-on in the browser; name the connector when
    /// the gateway has several.
    #[arg(long, value_name = "CONNECTOR", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["user", "password_stdin", "totp"])]
    pub(crate) sso: Option<String>,
    /// With --sso: sign in from another device (a phone, a laptop) by
    /// entering a short code there, for machines without a browser.
    #[arg(long, requires = "sso", conflicts_with_all = ["browser", "timeout"])]
    pub(crate) device: bool,
    /// With --sso: `system` (default) opens the system browser, `none` only
    /// prints the address (headless machines, another computer's browser).
    #[arg(long, value_enum)]
    pub(crate) browser: Option<Browser>,
    /// With --sso: how long to wait for the browser sign-in [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// Local username (required unless --sso).
    #[arg(long, required_unless_present = "sso")]
    pub(crate) user: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// One-time code from your authenticator app (asked for on a terminal
    /// when the account needs one).
    #[arg(long, value_name = "CODE")]
    pub(crate) totp: Option<String>,
    /// Trust the gateway CA with this fingerprint (sha256:...).
    #[arg(long)]
    pub(crate) ca_pin: Option<String>,
    /// Where to keep the private key.
    #[arg(long, env = "POSTERN_KEY_STORE", default_value = "keyring")]
    pub(crate) key_store: KeyStoreKind,
}

#[derive(Subcommand)]
pub(crate) enum DbCommand {
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
pub(crate) struct TargetArgs {
    /// Database name in the catalog.
    pub(crate) database: String,
    /// Database user.
    #[arg(long)]
    pub(crate) db_user: Option<String>,
    /// Database name inside the server.
    #[arg(long)]
    pub(crate) db_name: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ProxyCommand {
    /// Run a local tunnel to a database in the foreground.
    Db(TunnelArgs),
}

#[derive(Args, Clone)]
pub(crate) struct TunnelArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Database roles to request (auto-provisioned users), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) db_roles: Vec<String>,
    /// Local port (default: the one used last time for this target).
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Listen on a Unix socket DIR/.s.PGSQL.PORT (mode 0600, in a directory
    /// only you can enter, created with mode 0700) instead of 127.0.0.1;
    /// connect with `psql "host=DIR port=PORT"`.
    #[arg(long, value_name = "DIR")]
    pub(crate) socket: Option<std::path::PathBuf>,
    /// Runaway guard: warn about statements running longer than this (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) warn_after: Option<std::time::Duration>,
    /// Runaway guard: cancel statements running longer than this (e.g. 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) cancel_after: Option<std::time::Duration>,
}

/// Where the single sign-on page opens.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Browser {
    /// The system's default browser.
    System,
    /// Print the address only.
    None,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}
