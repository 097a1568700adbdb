//! The desktop app's command handlers: plain async functions over
//! `postern-client`, one per command the UI can call, with the view types
//! the UI sees (`views`) and the `{kind, message}` error (`error`). This
//! crate knows nothing of Tauri: `src-tauri` only forwards to it, and its
//! tests run without a desktop.

pub mod bindings;
pub mod error;
pub mod state;
pub mod tray;
pub mod views;

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_client::ClientError;
use postern_client::api::{GatewayClient, presented_ca};
use postern_client::home::Home;
use postern_client::keystore::KeyStoreKind;
use postern_client::launch::{self, PgAdminAdded};
use postern_client::login::{LocalLogin, login_local, logout};
use postern_client::manager::{TunnelInfo, TunnelManager, TunnelRequest};
use postern_client::ports::{port_key, remembered};
use postern_client::profile::{Profile, profile_name_for};
use postern_client::queries::{CancelOutcome, GuardEvent, GuardPolicy};
use postern_client::session::SessionSource;
use postern_client::sso::{self, SsoLogin, login_sso, open_browser};
use postern_client::tunnel::default_socket_dir;
use tokio_util::sync::CancellationToken;

pub use error::{CommandError, ErrorKind};
use state::DesktopState;
use tray::{TrayAction, TrayEffect, TrayMenu, TunnelAction, tray_menu};
use views::*;

/// A command's result.
pub type CommandResult<T> = Result<T, CommandError>;

/// Where events go: the shell sends them to the window, the tray and
/// notifications; tests collect them.
pub type EventSink = Arc<dyn Fn(AppEvent) + Send + Sync>;

/// How long before the session ends the user is warned.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(10 * 60);

/// Choices the environment makes for the app (tests set them directly).
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// Where new logins keep their key (`POSTERN_KEY_STORE`); default: where
    /// the profile kept it before, else the OS keychain.
    pub key_store: Option<KeyStoreKind>,
    /// The `pg_service.conf` to write (default: `$PGSERVICEFILE` or `~/.pg_service.conf`).
    pub service_file: Option<std::path::PathBuf>,
}

impl AppOptions {
    /// From `POSTERN_KEY_STORE`.
    pub fn from_env() -> Self {
        AppOptions {
            key_store: std::env::var("POSTERN_KEY_STORE")
                .ok()
                .and_then(|v| v.parse().ok()),
            service_file: None,
        }
    }
}

/// The app: the profile directory, the tunnels, and where events go.
pub struct App {
    home: Home,
    options: AppOptions,
    manager: Arc<TunnelManager>,
    events: EventSink,
    guard_events:
        Mutex<Option<tokio::sync::mpsc::Receiver<postern_client::manager::TunnelGuardEvent>>>,
    sources: Mutex<HashMap<String, Arc<SessionSource>>>,
    sso: Mutex<Option<CancellationToken>>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn session_view(profile: &Profile, home: &Home) -> Option<SessionView> {
    let identity = profile.identity.as_ref()?;
    profile.cert_pem.as_ref()?;
    let mut traits = Vec::new();
    for (scope, map) in [
        ("internal", &identity.traits.internal),
        ("external", &identity.traits.external),
    ] {
        for (name, values) in map {
            traits.push(TraitView {
                name: format!("{scope}.{name}"),
                values: values.clone(),
            });
        }
    }
    let expires = identity.expires_unix as f64;
    Some(SessionView {
        profile: profile.name.clone(),
        gateway: profile.gateway.clone(),
        username: identity.username.clone(),
        roles: identity.roles.clone(),
        traits,
        expires_unix: expires,
        expired: expires <= now_unix(),
        login: DesktopState::load(home).logins.get(&profile.name).cloned(),
    })
}

fn format_secs(ms: f64) -> String {
    let secs = (ms / 1000.0).round() as u64;
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

impl App {
    /// The app over `home`; events go to `events`. Call
    /// [`App::spawn_background`] from within a Tokio runtime to start the
    /// guard forwarder and the session watcher.
    pub fn new(home: Home, options: AppOptions, events: EventSink) -> Arc<Self> {
        let (manager, guard_events) = TunnelManager::new(home.clone());
        Arc::new(App {
            home,
            options,
            manager,
            events,
            guard_events: Mutex::new(Some(guard_events)),
            sources: Mutex::new(HashMap::new()),
            sso: Mutex::new(None),
        })
    }

    /// The profile directory.
    pub fn home(&self) -> &Home {
        &self.home
    }

    fn emit(&self, event: AppEvent) {
        (self.events)(event)
    }

    /// Starts the background work: guard events become [`AppEvent::Guard`],
    /// and the session is watched for changes and its coming end.
    pub fn spawn_background(self: &Arc<Self>, session_check: Duration) {
        if let Some(mut rx) = self.guard_events.lock().unwrap().take() {
            let app = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    let Some(app) = app.upgrade() else { return };
                    let event = app.guard_event(e.tunnel, e.event).await;
                    app.emit(event);
                }
            });
        }
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last: Option<(String, i64)> = None;
            let mut warned_for: Option<i64> = None;
            let mut tick = tokio::time::interval(session_check);
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else { return };
                let current = app
                    .home
                    .resolve(None)
                    .ok()
                    .and_then(|p| Some((p.name.clone(), p.identity.as_ref()?.expires_unix)));
                if last.is_some() && current != last {
                    app.emit(AppEvent::SessionChanged);
                }
                last = current.clone();
                if let Some((_, expires)) = current {
                    let left = expires as f64 - now_unix();
                    if left > 0.0
                        && left <= EXPIRY_WARNING.as_secs_f64()
                        && warned_for != Some(expires)
                    {
                        warned_for = Some(expires);
                        app.emit(AppEvent::SessionExpiring {
                            expires_unix: expires as f64,
                        });
                    }
                }
            }
        });
    }

    async fn guard_event(&self, tunnel: u64, event: GuardEvent) -> AppEvent {
        let database = self
            .manager
            .list()
            .await
            .into_iter()
            .find(|t| t.id == tunnel)
            .map(|t| t.request.database)
            .unwrap_or_else(|| "a database".into());
        let tunnel = u32::try_from(tunnel).unwrap_or(u32::MAX);
        match event {
            GuardEvent::Warned(q) => AppEvent::Guard {
                tunnel,
                action: GuardAction::Warned,
                pid: Some(q.pid),
                message: format!(
                    "A statement on {database} has run for {} (process {}).",
                    format_secs(q.duration_ms),
                    q.pid
                ),
                query: Some(q.query),
            },
            GuardEvent::Cancelled(q) => AppEvent::Guard {
                tunnel,
                action: GuardAction::Cancelled,
                pid: Some(q.pid),
                message: format!(
                    "Cancelled a statement on {database} after {} (process {}).",
                    format_secs(q.duration_ms),
                    q.pid
                ),
                query: Some(q.query),
            },
            GuardEvent::Failed(m) => AppEvent::Guard {
                tunnel,
                action: GuardAction::Failed,
                pid: None,
                query: None,
                message: format!("The runaway guard on {database} cannot look: {m}"),
            },
        }
    }

    fn current_profile(&self) -> CommandResult<Profile> {
        Ok(self.home.resolve(None)?)
    }

    fn source(&self, profile: &str) -> Arc<SessionSource> {
        self.sources
            .lock()
            .unwrap()
            .entry(profile.to_owned())
            .or_insert_with(|| Arc::new(SessionSource::new(self.home.clone(), profile.to_owned())))
            .clone()
    }

    /// Where a new login keeps its key: as configured, else where the
    /// profile kept it before, else the OS keychain.
    fn key_store(&self, gateway: &str) -> KeyStoreKind {
        if let Some(kind) = self.options.key_store {
            return kind;
        }
        self.home
            .load(&profile_name_for(gateway))
            .map(|p| p.key_store)
            .unwrap_or(KeyStoreKind::Keyring)
    }

    // ------------------------------------------------------------ session

    /// Profiles, the session, and what to prefill.
    pub async fn app_state(&self) -> CommandResult<AppState> {
        let entries = self.home.entries().unwrap_or_default();
        let current = entries.iter().find(|e| e.current).or(entries.first());
        let session = current.and_then(|e| {
            if e.current {
                session_view(&e.profile, &self.home)
            } else {
                None
            }
        });
        let last_username = current.and_then(|e| {
            match DesktopState::load(&self.home).logins.get(&e.profile.name) {
                Some(LoginMethod::Local { username }) => Some(username.clone()),
                _ => e.profile.identity.as_ref().map(|i| i.username.clone()),
            }
        });
        Ok(AppState {
            profiles: entries.iter().map(ProfileView::from).collect(),
            session,
            last_gateway: current.map(|e| e.profile.gateway.clone()),
            last_username,
        })
    }

    /// The session of the current profile, if any.
    pub async fn session(&self) -> CommandResult<Option<SessionView>> {
        Ok(self
            .home
            .resolve(None)
            .ok()
            .and_then(|p| session_view(&p, &self.home)))
    }

    /// What a gateway offers, and whether its CA is trusted yet.
    pub async fn gateway_info(&self, args: GatewayArgs) -> CommandResult<GatewayInfo> {
        let gateway = args.gateway.trim().to_owned();
        let known = self
            .home
            .load(&profile_name_for(&gateway))
            .ok()
            .filter(|p| p.gateway == gateway)
            .map(|p| p.ca_pin);
        let (fingerprint, trusted) = match known {
            Some(pin) => (pin, true),
            None => (presented_ca(&gateway).await?, false),
        };
        let client = GatewayClient::new(&gateway, &fingerprint, None)?;
        let connectors = match client.connectors().await {
            Ok(c) => c.connectors.into_iter().map(|c| c.name).collect(),
            Err(e @ ClientError::CaMismatch { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "no connector list");
                Vec::new()
            }
        };
        Ok(GatewayInfo {
            gateway,
            fingerprint,
            trusted,
            connectors,
        })
    }

    /// Signs in with a local user and password.
    pub async fn login_local(&self, args: LoginLocalArgs) -> CommandResult<SessionView> {
        let gateway = args.gateway.trim().to_owned();
        if args.username.trim().is_empty() {
            return Err(CommandError::invalid("Enter your username."));
        }
        let username = args.username.trim().to_owned();
        let profile = login_local(
            &self.home,
            LocalLogin {
                gateway: gateway.clone(),
                username: username.clone(),
                password: args.password,
                totp: args.totp.filter(|t| !t.trim().is_empty()),
                ca_pin: args.ca_pin,
                key_store: self.key_store(&gateway),
                profile: None,
            },
            |_| false,
        )
        .await?;
        DesktopState::remember_login(&self.home, &profile.name, LoginMethod::Local { username });
        self.emit(AppEvent::SessionChanged);
        session_view(&profile, &self.home)
            .ok_or_else(|| CommandError::invalid("The gateway returned no session."))
    }

    /// Signs in through the browser; [`App::cancel_sso`] stops waiting.
    pub async fn login_sso(&self, args: LoginSsoArgs) -> CommandResult<SessionView> {
        let gateway = args.gateway.trim().to_owned();
        let token = CancellationToken::new();
        if let Some(old) = self.sso.lock().unwrap().replace(token.clone()) {
            old.cancel();
        }
        let connector = args.connector.filter(|c| !c.is_empty());
        let login = login_sso(
            &self.home,
            SsoLogin {
                gateway: gateway.clone(),
                connector: connector.clone(),
                ca_pin: args.ca_pin,
                key_store: self.key_store(&gateway),
                profile: None,
                timeout: sso::DEFAULT_TIMEOUT,
            },
            |_| false,
            |url| {
                if let Err(e) = open_browser(url) {
                    tracing::warn!(error = %e, "could not open the browser");
                }
                self.emit(AppEvent::SsoStarted {
                    url: url.to_owned(),
                });
            },
        );
        let result = tokio::select! {
            r = login => r,
            _ = token.cancelled() => Err(ClientError::LoginCancelled),
        };
        self.sso.lock().unwrap().take();
        let profile = result?;
        DesktopState::remember_login(&self.home, &profile.name, LoginMethod::Sso { connector });
        self.emit(AppEvent::SessionChanged);
        session_view(&profile, &self.home)
            .ok_or_else(|| CommandError::invalid("The gateway returned no session."))
    }

    /// Stops waiting for a browser sign-in; nothing is saved.
    pub async fn cancel_sso(&self) -> CommandResult<()> {
        if let Some(token) = self.sso.lock().unwrap().take() {
            token.cancel();
        }
        Ok(())
    }

    /// Makes another profile current.
    pub async fn use_profile(&self, args: ProfileArgs) -> CommandResult<AppState> {
        self.home.use_profile(&args.name)?;
        self.emit(AppEvent::SessionChanged);
        self.app_state().await
    }

    /// Signs out of the current profile and stops its tunnels.
    pub async fn sign_out(&self) -> CommandResult<AppState> {
        let profile = self.current_profile()?;
        for t in self.manager.list().await {
            if t.request.profile == profile.name {
                let _ = self.manager.stop(t.id).await;
            }
        }
        logout(&self.home, Some(&profile.name))?;
        self.emit(AppEvent::TunnelsChanged);
        self.emit(AppEvent::SessionChanged);
        self.app_state().await
    }

    // ---------------------------------------------------------- databases

    /// The databases the session reaches, with what may be chosen.
    pub async fn databases(&self) -> CommandResult<Vec<DatabaseView>> {
        let profile = self.current_profile()?;
        let session = self.source(&profile.name).current().await?;
        let catalog = GatewayClient::for_session(&session)?.databases().await?;
        let state = DesktopState::load(&self.home);
        let mut list: Vec<DatabaseView> = catalog
            .databases
            .iter()
            .map(|e| {
                DatabaseView::new(
                    e,
                    &session.identity.username,
                    state.choice(&profile.name, &e.name),
                )
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// The port the connect dialog should offer for a target.
    pub async fn suggest_port(&self, args: PortArgs) -> CommandResult<PortSuggestion> {
        let profile = self.current_profile()?;
        let key = port_key(
            &profile.name,
            &args.database,
            args.db_user.as_deref(),
            args.db_name.as_deref(),
        );
        let remembered = remembered(&self.home, &key);
        let ours = self.manager.list().await;
        let remembered_free = remembered.is_some_and(|port| {
            ours.iter().any(|t| {
                t.port == port
                    && t.request.database == args.database
                    && t.db_user == args.db_user
                    && t.db_name == args.db_name
            }) || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| CommandError::new(ErrorKind::Local, format!("No free port: {e}.")))?;
        Ok(PortSuggestion {
            remembered,
            remembered_free,
            free,
            socket_dir: default_socket_dir(&self.home).display().to_string(),
        })
    }

    // ------------------------------------------------------------ tunnels

    /// Opens a tunnel (or returns the identical one already running).
    pub async fn start_tunnel(&self, args: StartTunnelArgs) -> CommandResult<TunnelView> {
        let profile = self.current_profile()?;
        let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let request = TunnelRequest {
            profile: profile.name.clone(),
            database: args.database.clone(),
            db_user: clean(args.db_user),
            db_name: clean(args.db_name),
            db_roles: args.db_roles,
            port: args.port.filter(|p| *p != 0),
            socket_dir: clean(args.socket_dir).map(PathBuf::from),
        };
        let info = self.manager.start(request.clone()).await?;
        DesktopState::remember_choice(
            &self.home,
            &profile.name,
            &args.database,
            ConnectChoice {
                db_user: request.db_user,
                db_name: request.db_name,
                db_roles: request.db_roles,
                port: request.port,
                socket_dir: request.socket_dir.as_ref().map(|d| d.display().to_string()),
            },
        );
        self.emit(AppEvent::TunnelsChanged);
        Ok((&info).into())
    }

    /// Running tunnels with live counters.
    pub async fn tunnels(&self) -> CommandResult<Vec<TunnelView>> {
        Ok(self.manager.list().await.iter().map(Into::into).collect())
    }

    async fn tunnel(&self, id: u32) -> CommandResult<TunnelInfo> {
        self.manager
            .list()
            .await
            .into_iter()
            .find(|t| t.id == u64::from(id))
            .ok_or_else(|| CommandError::invalid("That tunnel is no longer running."))
    }

    /// Stops a tunnel.
    pub async fn stop_tunnel(&self, args: TunnelArgs) -> CommandResult<()> {
        self.tunnel(args.id).await?;
        self.manager.stop(u64::from(args.id)).await?;
        self.emit(AppEvent::TunnelsChanged);
        Ok(())
    }

    /// Stops every tunnel (quit).
    pub async fn stop_all(&self) {
        self.manager.stop_all().await;
    }

    /// Marks a tunnel as a favourite (reopened at start) or not.
    pub async fn set_favourite(&self, args: FavouriteArgs) -> CommandResult<TunnelView> {
        self.manager
            .set_favourite(u64::from(args.id), args.favourite)
            .await?;
        self.emit(AppEvent::TunnelsChanged);
        Ok((&self.tunnel(args.id).await?).into())
    }

    /// Reopens the favourite tunnels; each failure becomes an event.
    pub async fn restore_favourites(&self) -> Vec<TunnelView> {
        let mut started = Vec::new();
        for (request, result) in self.manager.restore_favourites().await {
            match result {
                Ok(info) => started.push((&info).into()),
                Err(e) => self.emit(AppEvent::RestoreFailed {
                    database: request.database,
                    message: CommandError::from(e).message,
                }),
            }
        }
        if !started.is_empty() {
            self.emit(AppEvent::TunnelsChanged);
        }
        started
    }

    // ------------------------------------------------------------ queries

    /// The user's running statements on a tunnel's database.
    pub async fn queries(&self, args: TunnelArgs) -> CommandResult<Vec<QueryView>> {
        Ok(self
            .manager
            .queries(u64::from(args.id))
            .await?
            .iter()
            .map(Into::into)
            .collect())
    }

    /// Cancels or terminates one statement, and says whether it took effect.
    pub async fn cancel_query(&self, args: CancelArgs) -> CommandResult<CancelResult> {
        let outcome = self
            .manager
            .cancel(u64::from(args.id), args.pid, args.terminate)
            .await?;
        let pid = args.pid;
        Ok(match outcome {
            CancelOutcome::Cancelled => CancelResult {
                outcome: CancelOutcomeView::Cancelled,
                message: format!("Cancelled the statement of process {pid}."),
            },
            CancelOutcome::Terminated => CancelResult {
                outcome: CancelOutcomeView::Terminated,
                message: format!("Ended the session of process {pid}."),
            },
            CancelOutcome::StillRunning => CancelResult {
                outcome: CancelOutcomeView::StillRunning,
                message: format!(
                    "Process {pid} was asked to stop but is still running; try Terminate."
                ),
            },
        })
    }

    /// Sets a tunnel's runaway guard (both thresholds empty: off).
    pub async fn set_guard(&self, args: GuardArgs) -> CommandResult<TunnelView> {
        let secs = |v: Option<u32>| v.filter(|s| *s > 0).map(|s| Duration::from_secs(s.into()));
        let policy = GuardPolicy {
            warn_after: secs(args.warn_after_secs),
            cancel_after: secs(args.cancel_after_secs),
        };
        if let (Some(w), Some(c)) = (policy.warn_after, policy.cancel_after)
            && w >= c
        {
            return Err(CommandError::invalid(
                "Warn before cancelling: the warning time must be shorter than the cancel time.",
            ));
        }
        self.manager.set_guard(u64::from(args.id), policy).await?;
        self.emit(AppEvent::TunnelsChanged);
        Ok((&self.tunnel(args.id).await?).into())
    }

    // ---------------------------------------------------------- launchers

    /// Adds the tunnel to pgAdmin (group "Postern") and starts pgAdmin.
    pub async fn open_pgadmin(&self, args: TunnelArgs) -> CommandResult<LaunchResult> {
        let endpoint = self.tunnel(args.id).await?.endpoint();
        let work_dir = self.home.dir().join("pgadmin");
        let dir = work_dir.clone();
        let added = tokio::task::spawn_blocking(move || launch::open_in_pgadmin(&endpoint, &dir))
            .await
            .map_err(|e| CommandError::new(ErrorKind::Launch, e.to_string()))??;
        Ok(LaunchResult {
            message: match added {
                PgAdminAdded::Loaded(name) => {
                    format!("Added “{name}” to pgAdmin (group Postern) and started pgAdmin.")
                }
                PgAdminAdded::AlreadyThere(name) => {
                    format!("“{name}” is already in pgAdmin; started pgAdmin.")
                }
            },
            path: Some(work_dir.join("servers.json").display().to_string()),
        })
    }

    /// Opens psql on the tunnel in a new terminal window.
    pub async fn open_psql(&self, args: TunnelArgs) -> CommandResult<LaunchResult> {
        let endpoint = self.tunnel(args.id).await?.endpoint();
        let terminal =
            tokio::task::spawn_blocking(move || launch::open_psql_in_terminal(&endpoint))
                .await
                .map_err(|e| CommandError::new(ErrorKind::Launch, e.to_string()))??;
        Ok(LaunchResult {
            message: format!("Opened psql in {terminal}."),
            path: None,
        })
    }

    // --------------------------------------------------------------- tray

    /// The tray for the running tunnels and the session.
    pub async fn tray(&self) -> TrayMenu {
        let tunnels = self.tunnels().await.unwrap_or_default();
        let signed_in = matches!(self.session().await, Ok(Some(s)) if !s.expired);
        tray_menu(&tunnels, signed_in)
    }

    /// Carries out a click on a tray entry; says what is left for the shell.
    pub async fn tray_click(&self, action: TrayAction) -> TrayEffect {
        let notify = |title: &str, body: String| TrayEffect::Notify {
            title: title.to_owned(),
            body,
        };
        match action {
            TrayAction::Open => TrayEffect::OpenWindow,
            TrayAction::Quit => {
                self.stop_all().await;
                TrayEffect::Exit
            }
            TrayAction::SignOut => match self.sign_out().await {
                Ok(_) => TrayEffect::None,
                Err(e) => notify("Sign out failed", e.message),
            },
            TrayAction::Tunnel { id, action } => {
                let Ok(tunnel) = self.tunnel(id).await else {
                    return TrayEffect::None;
                };
                let view = TunnelView::from(&tunnel);
                let args = TunnelArgs { id };
                let done = match action {
                    TunnelAction::CopyUri => Ok(TrayEffect::Copy(view.uri)),
                    TunnelAction::CopyPsql => Ok(TrayEffect::Copy(view.psql)),
                    TunnelAction::OpenPgAdmin => self
                        .open_pgadmin(args)
                        .await
                        .map(|r| notify("pgAdmin", r.message)),
                    TunnelAction::Stop => self.stop_tunnel(args).await.map(|()| TrayEffect::None),
                };
                done.unwrap_or_else(|e| notify("Postern", e.message))
            }
        }
    }

    /// Writes (or replaces) the tunnel's entry in `pg_service.conf`.
    pub async fn write_service(&self, args: TunnelArgs) -> CommandResult<LaunchResult> {
        let endpoint = self.tunnel(args.id).await?.endpoint();
        let path = match &self.options.service_file {
            Some(p) => p.clone(),
            None => launch::service_file()?,
        };
        let name = launch::write_service(&path, &endpoint)?;
        Ok(LaunchResult {
            message: format!(
                "Wrote service “{name}” to {}; connect with psql service={name}.",
                path.display()
            ),
            path: Some(path.display().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_secs(4_200.0), "4 s");
        assert_eq!(format_secs(95_000.0), "1 min 35 s");
        assert_eq!(format_secs(7_260_000.0), "2 h 1 min");
    }

    #[tokio::test]
    async fn a_new_home_is_signed_out_with_nothing_to_prefill() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::new(
            Home::at(dir.path().to_owned()),
            AppOptions::default(),
            Arc::new(|_| {}),
        );
        let state = app.app_state().await.unwrap();
        assert!(state.profiles.is_empty());
        assert_eq!(state.session, None);
        assert_eq!(app.tunnels().await.unwrap(), vec![]);
        let err = app.databases().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotSignedIn);
        let err = app.stop_tunnel(TunnelArgs { id: 7 }).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
    }
}
