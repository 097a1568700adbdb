// Generated from crates/desktop-core (src/views.rs, src/error.rs, src/bindings.rs).
// Do not edit: run `UPDATE_BINDINGS=1 cargo test -p postern-desktop-core bindings`.

/**
 * What kind of failure, for the UI to react to.
 */
export type ErrorKind = "not_signed_in" | "session_expired" | "untrusted_ca" | "ca_mismatch" | "totp_required" | "unreachable" | "port_unavailable" | "refused" | "invalid" | "cancelled" | "pgadmin_missing" | "launch" | "local";

/**
 * A command's failure.
 */
export type CommandError = { 
/**
 * What kind.
 */
kind: ErrorKind, 
/**
 * A sentence for people.
 */
message: string, 
/**
 * With `untrusted_ca` and `ca_mismatch`: the CA the gateway presented.
 */
fingerprint: string | null, };

/**
 * A gateway profile, as the sign-in screen lists it.
 */
export type ProfileView = { 
/**
 * Profile name.
 */
name: string, 
/**
 * Gateway `host:port`.
 */
gateway: string, 
/**
 * The profile commands use by default.
 */
current: boolean, 
/**
 * Who is signed in there, if anyone.
 */
username: string | null, 
/**
 * When that session ends (seconds since the Unix epoch).
 */
expires_unix: number | null, };

/**
 * One trait of the signed-in identity.
 */
export type TraitView = { 
/**
 * `internal.db_users`, `external.groups`, ...
 */
name: string, 
/**
 * Its values.
 */
values: Array<string>, };

/**
 * How a profile last signed in, so "sign in again" repeats it.
 */
export type LoginMethod = { "method": "local", 
/**
 * Postern username.
 */
username: string, } | { "method": "sso", 
/**
 * Connector name, if one was chosen.
 */
connector: string | null, };

/**
 * The signed-in session.
 */
export type SessionView = { 
/**
 * Profile name.
 */
profile: string, 
/**
 * Gateway `host:port`.
 */
gateway: string, 
/**
 * Postern username.
 */
username: string, 
/**
 * Postern roles.
 */
roles: Array<string>, 
/**
 * Traits from the user record and the identity provider.
 */
traits: Array<TraitView>, 
/**
 * End of the session (seconds since the Unix epoch).
 */
expires_unix: number, 
/**
 * True once it has ended.
 */
expired: boolean, 
/**
 * How it was made, when this app knows.
 */
login: LoginMethod | null, };

/**
 * Everything the window needs when it opens.
 */
export type AppState = { 
/**
 * Known gateway profiles.
 */
profiles: Array<ProfileView>, 
/**
 * The current session, if signed in (possibly expired).
 */
session: SessionView | null, 
/**
 * Gateway to prefill on the sign-in screen.
 */
last_gateway: string | null, 
/**
 * Username to prefill on the sign-in screen.
 */
last_username: string | null, };

/**
 * A gateway address to look at before signing in.
 */
export type GatewayArgs = { 
/**
 * `host:port`.
 */
gateway: string, };

/**
 * What the sign-in screen shows about a gateway.
 */
export type GatewayInfo = { 
/**
 * `host:port`.
 */
gateway: string, 
/**
 * The CA it presents (`sha256:...`).
 */
fingerprint: string, 
/**
 * True when a profile already trusts that CA.
 */
trusted: boolean, 
/**
 * Its single sign-on connectors (empty: local users only).
 */
connectors: Array<string>, };

/**
 * Local-user sign-in.
 */
export type LoginLocalArgs = { 
/**
 * Gateway `host:port`.
 */
gateway: string, 
/**
 * Postern username.
 */
username: string, 
/**
 * Password (used for the request only).
 */
password: string, 
/**
 * One-time code, when the account has one.
 */
totp: string | null, 
/**
 * The CA fingerprint the user accepted on first contact.
 */
ca_pin: string | null, };

/**
 * Single sign-on in the browser.
 */
export type LoginSsoArgs = { 
/**
 * Gateway `host:port`.
 */
gateway: string, 
/**
 * Connector (None: the gateway's only one).
 */
connector: string | null, 
/**
 * The CA fingerprint the user accepted on first contact.
 */
ca_pin: string | null, };

/**
 * A profile to switch to.
 */
export type ProfileArgs = { 
/**
 * Profile name.
 */
name: string, };

/**
 * A set of allowed values.
 */
export type AllowedView = { 
/**
 * Values allowed by name.
 */
allowed: Array<string>, 
/**
 * Any value is allowed (except `denied`).
 */
wildcard: boolean, 
/**
 * Exceptions to the wildcard.
 */
denied: Array<string>, 
/**
 * `[*] except [postgres]`, `[a, b]`.
 */
summary: string, };

/**
 * A label of a database.
 */
export type LabelView = { 
/**
 * Key.
 */
key: string, 
/**
 * Value.
 */
value: string, };

/**
 * The choices made in the connect dialog, remembered per database.
 */
export type ConnectChoice = { 
/**
 * Database user.
 */
db_user: string | null, 
/**
 * Database name.
 */
db_name: string | null, 
/**
 * Database roles (empty: all allowed).
 */
db_roles: Array<string>, 
/**
 * A fixed port, if one was chosen.
 */
port: number | null, 
/**
 * The Unix socket directory, if the tunnel listened on a socket.
 */
socket_dir: string | null, };

/**
 * A database in the catalog.
 */
export type DatabaseView = { 
/**
 * Catalog name.
 */
name: string, 
/**
 * Description.
 */
description: string, 
/**
 * `postgres`.
 */
protocol: string, 
/**
 * `self-hosted`, `rds-postgres`, `redshift-serverless`.
 */
kind: string, 
/**
 * Labels, sorted by key.
 */
labels: Array<LabelView>, 
/**
 * Allowed database users.
 */
db_users: AllowedView, 
/**
 * Allowed database names.
 */
db_names: AllowedView, 
/**
 * Allowed database roles.
 */
db_roles: Array<string>, 
/**
 * `off`, `keep` or `best_effort_drop`.
 */
auto_user_mode: string, 
/**
 * The gateway creates the database user (it is then the Postern username).
 */
auto_provisioned: boolean, 
/**
 * The statement limits and session defaults of the user's roles here,
 * in one line (e.g. `statements up to 10m`); `None` when there are none.
 */
limits: string | null, 
/**
 * The db user to preselect.
 */
default_db_user: string | null, 
/**
 * The db name to preselect.
 */
default_db_name: string | null, 
/**
 * What was chosen last time, if anything.
 */
last_choice: ConnectChoice | null, };

/**
 * A target whose remembered port is asked for.
 */
export type PortArgs = { 
/**
 * Catalog database.
 */
database: string, 
/**
 * Database user.
 */
db_user: string | null, 
/**
 * Database name.
 */
db_name: string | null, };

/**
 * The port the connect dialog offers.
 */
export type PortSuggestion = { 
/**
 * The port remembered for this target, if any.
 */
remembered: number | null, 
/**
 * Whether the remembered port is free right now.
 */
remembered_free: boolean, 
/**
 * A port that is free right now.
 */
free: number, 
/**
 * A private directory for a Unix socket, if the user picks one.
 */
socket_dir: string, };

/**
 * Open a tunnel.
 */
export type StartTunnelArgs = { 
/**
 * Catalog database.
 */
database: string, 
/**
 * Database user (None: the catalog default).
 */
db_user: string | null, 
/**
 * Database name (None: the catalog default).
 */
db_name: string | null, 
/**
 * Database roles (empty: all allowed).
 */
db_roles: Array<string>, 
/**
 * A fixed port (None: remembered or new).
 */
port: number | null, 
/**
 * Listen on a Unix socket in this directory instead of 127.0.0.1.
 */
socket_dir: string | null, };

/**
 * A running tunnel with live counters.
 */
export type TunnelView = { 
/**
 * Id within this app run.
 */
id: number, 
/**
 * Profile it belongs to.
 */
profile: string, 
/**
 * Catalog database.
 */
database: string, 
/**
 * Database kind.
 */
kind: string, 
/**
 * Database user.
 */
db_user: string | null, 
/**
 * Database name.
 */
db_name: string | null, 
/**
 * Requested database roles.
 */
db_roles: Array<string>, 
/**
 * `127.0.0.1:PORT`, or the socket's path `DIR/.s.PGSQL.PORT`.
 */
address: string, 
/**
 * libpq's port (in the socket's name for a Unix socket).
 */
port: number, 
/**
 * The socket directory (libpq's `host`) of a Unix-socket tunnel.
 */
socket_dir: string | null, 
/**
 * Connection URI.
 */
uri: string, 
/**
 * psql command line.
 */
psql: string, 
/**
 * Started at (seconds since the Unix epoch).
 */
started_unix: number, 
/**
 * Open client connections.
 */
connections: number, 
/**
 * Client connections so far.
 */
total_connections: number, 
/**
 * Bytes from clients.
 */
bytes_in: number, 
/**
 * Bytes to clients.
 */
bytes_out: number, 
/**
 * Runaway guard: warn after this many seconds.
 */
warn_after_secs: number | null, 
/**
 * Runaway guard: cancel after this many seconds.
 */
cancel_after_secs: number | null, 
/**
 * Reopened when the app starts.
 */
favourite: boolean, 
/**
 * The remembered port was taken; this one was used instead.
 */
port_changed_from: number | null, 
/**
 * What to tell the user when that happened.
 */
port_notice: string | null, 
/**
 * Connections refused because another OS user made them.
 */
refused_connections: number, };

/**
 * A tunnel to act on.
 */
export type TunnelArgs = { 
/**
 * Tunnel id.
 */
id: number, };

/**
 * Mark or unmark a favourite.
 */
export type FavouriteArgs = { 
/**
 * Tunnel id.
 */
id: number, 
/**
 * Favourite or not.
 */
favourite: boolean, };

/**
 * Runaway-guard settings of a tunnel (both empty: off).
 */
export type GuardArgs = { 
/**
 * Tunnel id.
 */
id: number, 
/**
 * Notify about statements running longer than this.
 */
warn_after_secs: number | null, 
/**
 * Cancel statements running longer than this.
 */
cancel_after_secs: number | null, };

/**
 * A running statement.
 */
export type QueryView = { 
/**
 * Backend pid.
 */
pid: number, 
/**
 * Database user.
 */
user: string, 
/**
 * Database name.
 */
database: string, 
/**
 * Started at (seconds since the Unix epoch).
 */
started_unix: number, 
/**
 * Running for (milliseconds).
 */
duration_ms: number, 
/**
 * `active`, `idle in transaction`, ...
 */
state: string, 
/**
 * What it waits on.
 */
wait_event: string | null, 
/**
 * Statement text (trimmed).
 */
query: string, };

/**
 * Cancel or terminate one statement.
 */
export type CancelArgs = { 
/**
 * Tunnel id.
 */
id: number, 
/**
 * Backend pid.
 */
pid: number, 
/**
 * Terminate the session instead of cancelling the statement.
 */
terminate: boolean, };

/**
 * What a cancel did.
 */
export type CancelOutcomeView = "cancelled" | "terminated" | "still_running";

/**
 * The result of a cancel, with a sentence for people.
 */
export type CancelResult = { 
/**
 * What happened.
 */
outcome: CancelOutcomeView, 
/**
 * Said for people.
 */
message: string, };

/**
 * The result of a launcher, with a sentence for people.
 */
export type LaunchResult = { 
/**
 * Said for people.
 */
message: string, 
/**
 * A file written, if any.
 */
path: string | null, };

/**
 * Text for the clipboard.
 */
export type CopyArgs = { 
/**
 * The text.
 */
text: string, };

/**
 * Whether the app starts at login, in the tray.
 */
export type AutostartArgs = { 
/**
 * Start at login (an XDG autostart entry running `--tray`), or not.
 */
enabled: boolean, };

/**
 * What the runaway guard did.
 */
export type GuardAction = "warned" | "cancelled" | "failed";

/**
 * Something the UI (and the tray, and notifications) should know about.
 */
export type AppEvent = { "type": "tunnels_changed" } | { "type": "session_changed" } | { "type": "session_expiring", 
/**
 * When (seconds since the Unix epoch).
 */
expires_unix: number, } | { "type": "guard", 
/**
 * Tunnel id.
 */
tunnel: number, 
/**
 * What it did.
 */
action: GuardAction, 
/**
 * Statement's pid, if any.
 */
pid: number | null, 
/**
 * Statement text, if any.
 */
query: string | null, 
/**
 * Said for people.
 */
message: string, } | { "type": "restore_failed", 
/**
 * Catalog database.
 */
database: string, 
/**
 * Why.
 */
message: string, } | { "type": "sso_started", 
/**
 * The identity provider's address.
 */
url: string, };

/** Every command: its arguments (`null`: none) and its result. */
export interface Commands {
  app_state: { args: null; result: AppState };
  gateway_info: { args: GatewayArgs; result: GatewayInfo };
  login_local: { args: LoginLocalArgs; result: SessionView };
  login_sso: { args: LoginSsoArgs; result: SessionView };
  cancel_sso: { args: null; result: null };
  use_profile: { args: ProfileArgs; result: AppState };
  sign_out: { args: null; result: AppState };
  databases: { args: null; result: Array<DatabaseView> };
  suggest_port: { args: PortArgs; result: PortSuggestion };
  start_tunnel: { args: StartTunnelArgs; result: TunnelView };
  tunnels: { args: null; result: Array<TunnelView> };
  stop_tunnel: { args: TunnelArgs; result: null };
  set_favourite: { args: FavouriteArgs; result: TunnelView };
  queries: { args: TunnelArgs; result: Array<QueryView> };
  cancel_query: { args: CancelArgs; result: CancelResult };
  set_guard: { args: GuardArgs; result: TunnelView };
  open_pgadmin: { args: TunnelArgs; result: LaunchResult };
  open_psql: { args: TunnelArgs; result: LaunchResult };
  write_service: { args: TunnelArgs; result: LaunchResult };
  copy_text: { args: CopyArgs; result: null };
  autostart: { args: null; result: boolean };
  set_autostart: { args: AutostartArgs; result: boolean };
}

/** The Tauri event that carries `AppEvent`s. */
export const EVENT_NAME = "postern://event";
