//! What crosses the boundary between the UI and Rust: command arguments,
//! results and events. TypeScript types for `ui/` are generated from these
//! (see `bindings.rs`); change them here, never by hand in `ui/`.

use postern_api::wire::{AllowedValues, CatalogEntry, SessionLimits};
use postern_client::manager::TunnelInfo;
use postern_client::profile::ProfileEntry;
use postern_client::queries::RunningQuery;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A gateway profile, as the sign-in screen lists it.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct ProfileView {
    /// Profile name.
    pub name: String,
    /// Gateway `host:port`.
    pub gateway: String,
    /// The profile commands use by default.
    pub current: bool,
    /// Who is signed in there, if anyone.
    pub username: Option<String>,
    /// When that session ends (seconds since the Unix epoch).
    pub expires_unix: Option<f64>,
}

impl From<&ProfileEntry> for ProfileView {
    fn from(e: &ProfileEntry) -> Self {
        ProfileView {
            name: e.profile.name.clone(),
            gateway: e.profile.gateway.clone(),
            current: e.current,
            username: e.profile.identity.as_ref().map(|i| i.username.clone()),
            expires_unix: e.profile.identity.as_ref().map(|i| i.expires_unix as f64),
        }
    }
}

/// One trait of the signed-in identity.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct TraitView {
    /// `internal.db_users`, `external.groups`, ...
    pub name: String,
    /// Its values.
    pub values: Vec<String>,
}

/// How a profile last signed in, so "sign in again" repeats it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum LoginMethod {
    /// Local user and password.
    Local {
        /// Postern username.
        username: String,
    },
    /// Single sign-on in the browser.
    Sso {
        /// Connector name, if one was chosen.
        connector: Option<String>,
    },
}

/// The signed-in session.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct SessionView {
    /// Profile name.
    pub profile: String,
    /// Gateway `host:port`.
    pub gateway: String,
    /// Postern username.
    pub username: String,
    /// Postern roles.
    pub roles: Vec<String>,
    /// Traits from the user record and the identity provider.
    pub traits: Vec<TraitView>,
    /// End of the session (seconds since the Unix epoch).
    pub expires_unix: f64,
    /// True once it has ended.
    pub expired: bool,
    /// How it was made, when this app knows.
    pub login: Option<LoginMethod>,
}

/// Everything the window needs when it opens.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct AppState {
    /// Known gateway profiles.
    pub profiles: Vec<ProfileView>,
    /// The current session, if signed in (possibly expired).
    pub session: Option<SessionView>,
    /// Gateway to prefill on the sign-in screen.
    pub last_gateway: Option<String>,
    /// Username to prefill on the sign-in screen.
    pub last_username: Option<String>,
}

/// A gateway address to look at before signing in.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct GatewayArgs {
    /// `host:port`.
    pub gateway: String,
}

/// What the sign-in screen shows about a gateway.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct GatewayInfo {
    /// `host:port`.
    pub gateway: String,
    /// The CA it presents (`sha256:...`).
    pub fingerprint: String,
    /// True when a profile already trusts that CA.
    pub trusted: bool,
    /// Its single sign-on connectors (empty: local users only).
    pub connectors: Vec<String>,
}

/// Local-user sign-in.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct LoginLocalArgs {
    /// Gateway `host:port`.
    pub gateway: String,
    /// Postern username.
    pub username: String,
    /// Password (used for the request only).
    pub password: String,
    /// One-time code, when the account has one.
    pub totp: Option<String>,
    /// The CA fingerprint the user accepted on first contact.
    pub ca_pin: Option<String>,
}

/// Single sign-on in the browser.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct LoginSsoArgs {
    /// Gateway `host:port`.
    pub gateway: String,
    /// Connector (None: the gateway's only one).
    pub connector: Option<String>,
    /// The CA fingerprint the user accepted on first contact.
    pub ca_pin: Option<String>,
}

/// A profile to switch to.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct ProfileArgs {
    /// Profile name.
    pub name: String,
}

/// A set of allowed values.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct AllowedView {
    /// Values allowed by name.
    pub allowed: Vec<String>,
    /// Any value is allowed (except `denied`).
    pub wildcard: bool,
    /// Exceptions to the wildcard.
    pub denied: Vec<String>,
    /// `[*] except [postgres]`, `[a, b]`.
    pub summary: String,
}

impl From<&AllowedValues> for AllowedView {
    fn from(v: &AllowedValues) -> Self {
        AllowedView {
            allowed: v.allowed.clone(),
            wildcard: v.wildcard,
            denied: v.denied.clone(),
            summary: v.describe(),
        }
    }
}

/// A label of a database.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct LabelView {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// The choices made in the connect dialog, remembered per database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ConnectChoice {
    /// Database user.
    pub db_user: Option<String>,
    /// Database name.
    pub db_name: Option<String>,
    /// Database roles (empty: all allowed).
    pub db_roles: Vec<String>,
    /// A fixed port, if one was chosen.
    pub port: Option<u16>,
    /// The Unix socket directory, if the tunnel listened on a socket.
    #[serde(default)]
    pub socket_dir: Option<String>,
}

/// A database in the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct DatabaseView {
    /// Catalog name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `postgres`.
    pub protocol: String,
    /// `self-hosted`, `rds-postgres`, `redshift-serverless`.
    pub kind: String,
    /// Labels, sorted by key.
    pub labels: Vec<LabelView>,
    /// Allowed database users.
    pub db_users: AllowedView,
    /// Allowed database names.
    pub db_names: AllowedView,
    /// Allowed database roles.
    pub db_roles: Vec<String>,
    /// `off`, `keep` or `best_effort_drop`.
    pub auto_user_mode: String,
    /// The gateway creates the database user (it is then the Postern username).
    pub auto_provisioned: bool,
    /// The statement limits and session defaults of the user's roles here,
    /// in one line (e.g. `statements up to 10m`); `None` when there are none.
    pub limits: Option<String>,
    /// The db user to preselect.
    pub default_db_user: Option<String>,
    /// The db name to preselect.
    pub default_db_name: Option<String>,
    /// What was chosen last time, if anything.
    pub last_choice: Option<ConnectChoice>,
}

impl DatabaseView {
    /// The view of a catalog entry for `username`.
    pub fn new(entry: &CatalogEntry, username: &str, last_choice: Option<ConnectChoice>) -> Self {
        let auto = entry.auto_user_mode != "off";
        DatabaseView {
            name: entry.name.clone(),
            description: entry.description.clone(),
            protocol: entry.protocol.clone(),
            kind: entry.kind.clone(),
            labels: entry
                .labels
                .iter()
                .map(|(k, v)| LabelView {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            db_users: (&entry.db_users).into(),
            db_names: (&entry.db_names).into(),
            db_roles: entry.db_roles.clone(),
            auto_user_mode: entry.auto_user_mode.clone(),
            auto_provisioned: auto,
            limits: (entry.limits != SessionLimits::default()).then(|| entry.limits.describe()),
            default_db_user: if auto {
                Some(username.to_owned())
            } else {
                entry
                    .db_users
                    .only_value()
                    .map(str::to_owned)
                    .or_else(|| entry.db_users.allowed.first().cloned())
            },
            default_db_name: entry
                .db_names
                .only_value()
                .map(str::to_owned)
                .or_else(|| entry.db_names.allowed.first().cloned()),
            last_choice,
        }
    }
}

/// A target whose remembered port is asked for.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct PortArgs {
    /// Catalog database.
    pub database: String,
    /// Database user.
    pub db_user: Option<String>,
    /// Database name.
    pub db_name: Option<String>,
}

/// The port the connect dialog offers.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct PortSuggestion {
    /// The port remembered for this target, if any.
    pub remembered: Option<u16>,
    /// Whether the remembered port is free right now.
    pub remembered_free: bool,
    /// A port that is free right now.
    pub free: u16,
    /// A private directory for a Unix socket, if the user picks one.
    pub socket_dir: String,
}

/// Open a tunnel.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct StartTunnelArgs {
    /// Catalog database.
    pub database: String,
    /// Database user (None: the catalog default).
    pub db_user: Option<String>,
    /// Database name (None: the catalog default).
    pub db_name: Option<String>,
    /// Database roles (empty: all allowed).
    pub db_roles: Vec<String>,
    /// A fixed port (None: remembered or new).
    pub port: Option<u16>,
    /// Listen on a Unix socket in this directory instead of 127.0.0.1.
    #[serde(default)]
    pub socket_dir: Option<String>,
}

/// A running tunnel with live counters.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct TunnelView {
    /// Id within this app run.
    pub id: u32,
    /// Profile it belongs to.
    pub profile: String,
    /// Catalog database.
    pub database: String,
    /// Database kind.
    pub kind: String,
    /// Database user.
    pub db_user: Option<String>,
    /// Database name.
    pub db_name: Option<String>,
    /// Requested database roles.
    pub db_roles: Vec<String>,
    /// `127.0.0.1:PORT`, or the socket's path `DIR/.s.PGSQL.PORT`.
    pub address: String,
    /// libpq's port (in the socket's name for a Unix socket).
    pub port: u16,
    /// The socket directory (libpq's `host`) of a Unix-socket tunnel.
    pub socket_dir: Option<String>,
    /// Connection URI.
    pub uri: String,
    /// psql command line.
    pub psql: String,
    /// Started at (seconds since the Unix epoch).
    pub started_unix: f64,
    /// Open client connections.
    pub connections: u32,
    /// Client connections so far.
    pub total_connections: u32,
    /// Bytes from clients.
    pub bytes_in: f64,
    /// Bytes to clients.
    pub bytes_out: f64,
    /// Runaway guard: warn after this many seconds.
    pub warn_after_secs: Option<u32>,
    /// Runaway guard: cancel after this many seconds.
    pub cancel_after_secs: Option<u32>,
    /// Reopened when the app starts.
    pub favourite: bool,
    /// The remembered port was taken; this one was used instead.
    pub port_changed_from: Option<u16>,
    /// What to tell the user when that happened.
    pub port_notice: Option<String>,
    /// Connections refused because another OS user made them.
    pub refused_connections: u32,
}

impl From<&TunnelInfo> for TunnelView {
    fn from(t: &TunnelInfo) -> Self {
        let endpoint = t.endpoint();
        let small = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        TunnelView {
            id: small(t.id),
            profile: t.request.profile.clone(),
            database: t.request.database.clone(),
            kind: t.kind.clone(),
            db_user: t.db_user.clone(),
            db_name: t.db_name.clone(),
            db_roles: t.request.db_roles.clone(),
            address: t.address.clone(),
            port: t.port,
            socket_dir: t.request.socket_dir.as_ref().map(|_| t.host.clone()),
            uri: endpoint.uri(),
            psql: endpoint.psql_command(),
            started_unix: t.started_unix as f64,
            connections: small(t.connections),
            total_connections: small(t.total_connections),
            bytes_in: t.bytes_in as f64,
            bytes_out: t.bytes_out as f64,
            warn_after_secs: t.warn_after_secs.map(small),
            cancel_after_secs: t.cancel_after_secs.map(small),
            favourite: t.favourite,
            port_changed_from: t.port_changed_from,
            port_notice: t.port_notice.clone(),
            refused_connections: small(t.refused_connections),
        }
    }
}

/// A tunnel to act on.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct TunnelArgs {
    /// Tunnel id.
    pub id: u32,
}

/// Mark or unmark a favourite.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct FavouriteArgs {
    /// Tunnel id.
    pub id: u32,
    /// Favourite or not.
    pub favourite: bool,
}

/// Runaway-guard settings of a tunnel (both empty: off).
#[derive(Clone, Debug, Deserialize, TS)]
pub struct GuardArgs {
    /// Tunnel id.
    pub id: u32,
    /// Notify about statements running longer than this.
    pub warn_after_secs: Option<u32>,
    /// Cancel statements running longer than this.
    pub cancel_after_secs: Option<u32>,
}

/// A running statement.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct QueryView {
    /// Backend pid.
    pub pid: i32,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Started at (seconds since the Unix epoch).
    pub started_unix: f64,
    /// Running for (milliseconds).
    pub duration_ms: f64,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// What it waits on.
    pub wait_event: Option<String>,
    /// Statement text (trimmed).
    pub query: String,
}

impl From<&RunningQuery> for QueryView {
    fn from(q: &RunningQuery) -> Self {
        QueryView {
            pid: q.pid,
            user: q.user.clone(),
            database: q.database.clone(),
            started_unix: q.started_unix,
            duration_ms: q.duration_ms,
            state: q.state.clone(),
            wait_event: q.wait_event.clone(),
            query: q.query.clone(),
        }
    }
}

/// Cancel or terminate one statement.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct CancelArgs {
    /// Tunnel id.
    pub id: u32,
    /// Backend pid.
    pub pid: i32,
    /// Terminate the session instead of cancelling the statement.
    pub terminate: bool,
}

/// What a cancel did.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcomeView {
    /// The statement stopped.
    Cancelled,
    /// The session ended.
    Terminated,
    /// Still running after waiting.
    StillRunning,
}

/// The result of a cancel, with a sentence for people.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct CancelResult {
    /// What happened.
    pub outcome: CancelOutcomeView,
    /// Said for people.
    pub message: String,
}

/// The result of a launcher, with a sentence for people.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct LaunchResult {
    /// Said for people.
    pub message: String,
    /// A file written, if any.
    pub path: Option<String>,
}

/// Text for the clipboard.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct CopyArgs {
    /// The text.
    pub text: String,
}

/// Whether the app starts at login, in the tray.
#[derive(Clone, Debug, Deserialize, TS)]
pub struct AutostartArgs {
    /// Start at login (an XDG autostart entry running `--tray`), or not.
    pub enabled: bool,
}

/// What the runaway guard did.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// A statement passed the warning threshold.
    Warned,
    /// A statement was cancelled.
    Cancelled,
    /// The guard could not look.
    Failed,
}

/// Something the UI (and the tray, and notifications) should know about.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppEvent {
    /// Tunnels were started, stopped or changed outside the window (tray).
    TunnelsChanged,
    /// The session changed (sign-in, sign-out, a CLI login).
    SessionChanged,
    /// The session ends soon.
    SessionExpiring {
        /// When (seconds since the Unix epoch).
        expires_unix: f64,
    },
    /// The runaway guard acted.
    Guard {
        /// Tunnel id.
        tunnel: u32,
        /// What it did.
        action: GuardAction,
        /// Statement's pid, if any.
        pid: Option<i32>,
        /// Statement text, if any.
        query: Option<String>,
        /// Said for people.
        message: String,
    },
    /// A favourite tunnel did not come back at start.
    RestoreFailed {
        /// Catalog database.
        database: String,
        /// Why.
        message: String,
    },
    /// The browser sign-in started; where to sign in if the browser did not open.
    SsoStarted {
        /// The identity provider's address.
        url: String,
    },
}
