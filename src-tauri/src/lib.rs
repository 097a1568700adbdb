//! The Tauri shell: forwards each command to `postern-desktop-core`, sends
//! its events to the window, notifications and the tray (whose entries and
//! clicks are desktop-core's `tray` model, mapped here to Tauri's menu API),
//! and owns the window lifecycle. Closing the window destroys the webview (its WebKit processes
//! exit, so an idle app is only this process and the tray); tunnels keep
//! running until Quit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_client::home::Home;
use postern_desktop_core::bindings::EVENT_NAME;
use postern_desktop_core::tray::{self, TrayAction, TrayEffect, TrayItem, TrayMenu};
use postern_desktop_core::views::*;
use postern_desktop_core::{App, AppOptions, CommandError, ErrorKind};
use tauri::image::Image;
use tauri::menu::{IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Emitter, Manager, RunEvent, WebviewUrl, WebviewWindowBuilder};
use tauri_plugin_autostart::ManagerExt;
use tauri_plugin_clipboard_manager::ClipboardExt;
use tauri_plugin_notification::NotificationExt;

const WINDOW: &str = "main";
const TRAY: &str = "main";
const ICON_IDLE: &[u8] = include_bytes!("../../icons/tray.png");
const ICON_ACTIVE: &[u8] = include_bytes!("../../icons/tray-active.png");

type State<'a> = tauri::State<'a, Arc<App>>;

/// One Tauri command per core handler, same name, same types.
macro_rules! forward {
    ($($name:ident($($args:ty)?) -> $ret:ty;)*) => {
        $(
            #[tauri::command]
            async fn $name(app: State<'_>, $(args: $args)?) -> Result<$ret, CommandError> {
                app.$name($({ let a: $args = args; a })?).await
            }
        )*
    };
}

forward! {
    app_state() -> AppState;
    gateway_info(GatewayArgs) -> GatewayInfo;
    login_local(LoginLocalArgs) -> SessionView;
    login_sso(LoginSsoArgs) -> SessionView;
    cancel_sso() -> ();
    use_profile(ProfileArgs) -> AppState;
    sign_out() -> AppState;
    databases() -> Vec<DatabaseView>;
    suggest_port(PortArgs) -> PortSuggestion;
    start_tunnel(StartTunnelArgs) -> TunnelView;
    tunnels() -> Vec<TunnelView>;
    stop_tunnel(TunnelArgs) -> ();
    set_favourite(FavouriteArgs) -> TunnelView;
    queries(TunnelArgs) -> Vec<QueryView>;
    cancel_query(CancelArgs) -> CancelResult;
    set_guard(GuardArgs) -> TunnelView;
    open_pgadmin(TunnelArgs) -> LaunchResult;
    open_psql(TunnelArgs) -> LaunchResult;
    write_service(TunnelArgs) -> LaunchResult;
}

/// The clipboard belongs to the shell (the tray copies too).
#[tauri::command]
async fn copy_text(handle: AppHandle, args: CopyArgs) -> Result<(), CommandError> {
    handle.clipboard().write_text(args.text).map_err(|e| {
        CommandError::new(
            postern_desktop_core::ErrorKind::Local,
            format!("Cannot use the clipboard: {e}."),
        )
    })
}

/// Whether the app starts at login (the autostart plugin's entry exists).
#[tauri::command]
async fn autostart(handle: AppHandle) -> Result<bool, CommandError> {
    handle.autolaunch().is_enabled().map_err(autostart_error)
}

/// Writes or removes the XDG autostart entry that starts the app at login
/// in the tray; returns the setting now in force.
#[tauri::command]
async fn set_autostart(handle: AppHandle, args: AutostartArgs) -> Result<bool, CommandError> {
    let launcher = handle.autolaunch();
    if args.enabled {
        launcher.enable()
    } else {
        launcher.disable()
    }
    .map_err(autostart_error)?;
    launcher.is_enabled().map_err(autostart_error)
}

fn autostart_error(e: tauri_plugin_autostart::Error) -> CommandError {
    CommandError::new(
        ErrorKind::Local,
        format!("the start-at-login setting could not be changed: {e}"),
    )
}

/// Shows the window, creating it (and its webview) when it was closed.
fn open_window(handle: &AppHandle) {
    if let Some(w) = handle.get_webview_window(WINDOW) {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
        return;
    }
    let built = WebviewWindowBuilder::new(handle, WINDOW, WebviewUrl::App("index.html".into()))
        .title("Postern")
        .inner_size(1040.0, 700.0)
        .min_inner_size(760.0, 520.0)
        .build();
    if let Err(e) = built {
        tracing::error!(error = %e, "cannot open the window");
    }
}

fn notify(handle: &AppHandle, title: &str, body: &str) {
    if let Err(e) = handle
        .notification()
        .builder()
        .title(title)
        .body(body)
        .show()
    {
        tracing::debug!(error = %e, "notification not shown");
    }
}

/// Sends an event to the window and, where a person should know even with
/// the window closed, a notification; keeps the tray current.
fn on_event(handle: &AppHandle, event: AppEvent) {
    match &event {
        AppEvent::Guard {
            action, message, ..
        } => {
            let title = match action {
                GuardAction::Warned => "Long-running statement",
                GuardAction::Cancelled => "Statement cancelled",
                GuardAction::Failed => "Runaway guard",
            };
            notify(handle, title, message);
        }
        AppEvent::SessionExpiring { .. } => notify(
            handle,
            "Postern session ends soon",
            "Sign in again to keep your tunnels working; they stay on their ports.",
        ),
        AppEvent::RestoreFailed { database, message } => notify(
            handle,
            &format!("Tunnel to {database} did not reopen"),
            message,
        ),
        AppEvent::TunnelsChanged | AppEvent::SessionChanged => refresh_tray(handle.clone()),
        AppEvent::SsoStarted { .. } => {}
    }
    if let Err(e) = handle.emit(EVENT_NAME, &event) {
        tracing::debug!(error = %e, "event not delivered");
    }
}

/// What the tray last showed, so it is rebuilt only on a change.
#[derive(Default)]
struct TrayShown(Mutex<Option<TrayMenu>>);

/// Tauri's menu entries for the model's items.
fn menu_items(
    handle: &AppHandle,
    items: &[TrayItem],
) -> tauri::Result<Vec<Box<dyn IsMenuItem<tauri::Wry>>>> {
    items
        .iter()
        .map(|item| -> tauri::Result<Box<dyn IsMenuItem<tauri::Wry>>> {
            Ok(match item {
                TrayItem::Action {
                    action,
                    label,
                    enabled,
                } => Box::new(MenuItem::with_id(
                    handle,
                    action.id(),
                    label,
                    *enabled,
                    None::<&str>,
                )?),
                TrayItem::Info { id, label } => {
                    Box::new(MenuItem::with_id(handle, id, label, false, None::<&str>)?)
                }
                TrayItem::Separator => Box::new(PredefinedMenuItem::separator(handle)?),
                TrayItem::Submenu { label, items } => {
                    let children = menu_items(handle, items)?;
                    let refs: Vec<&dyn IsMenuItem<tauri::Wry>> =
                        children.iter().map(|c| c.as_ref()).collect();
                    Box::new(Submenu::with_items(handle, label, true, &refs)?)
                }
            })
        })
        .collect()
}

fn tray_menu(handle: &AppHandle, model: &TrayMenu) -> tauri::Result<Menu<tauri::Wry>> {
    let items = menu_items(handle, &model.items)?;
    let refs: Vec<&dyn IsMenuItem<tauri::Wry>> = items.iter().map(|i| i.as_ref()).collect();
    Menu::with_items(handle, &refs)
}

/// Rebuilds the tray menu and icon when tunnels or the session changed.
fn refresh_tray(handle: AppHandle) {
    tauri::async_runtime::spawn(async move {
        let app = handle.state::<Arc<App>>().inner().clone();
        let model = app.tray().await;
        {
            let state = handle.state::<TrayShown>();
            let mut last = state.0.lock().unwrap();
            if last.as_ref() == Some(&model) {
                return;
            }
            *last = Some(model.clone());
        }
        let Some(tray) = handle.tray_by_id(TRAY) else {
            return;
        };
        match tray_menu(&handle, &model) {
            Ok(menu) => {
                let _ = tray.set_menu(Some(menu));
            }
            Err(e) => tracing::warn!(error = %e, "tray menu"),
        }
        let icon = match model.icon {
            tray::Icon::Idle => ICON_IDLE,
            tray::Icon::Active => ICON_ACTIVE,
        };
        if let Ok(image) = Image::from_bytes(icon) {
            let _ = tray.set_icon(Some(image));
        }
        let _ = tray.set_tooltip(Some(model.tooltip));
    });
}

fn on_tray_menu(handle: &AppHandle, id: &str) {
    let Some(action) = TrayAction::parse(id) else {
        return;
    };
    let app = handle.state::<Arc<App>>().inner().clone();
    let handle = handle.clone();
    tauri::async_runtime::spawn(async move {
        match app.tray_click(action).await {
            TrayEffect::None => {}
            TrayEffect::OpenWindow => open_window(&handle),
            TrayEffect::Exit => handle.exit(0),
            TrayEffect::Copy(text) => {
                if let Err(e) = handle.clipboard().write_text(text) {
                    notify(&handle, "Postern", &e.to_string());
                }
            }
            TrayEffect::Notify { title, body } => notify(&handle, &title, &body),
        }
    });
}

fn build_tray(handle: &AppHandle) -> tauri::Result<TrayIcon> {
    let menu = tray_menu(handle, &tray::tray_menu(&[], false))?;
    TrayIconBuilder::with_id(TRAY)
        .icon(Image::from_bytes(ICON_IDLE)?)
        .tooltip("Postern")
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(|handle, event| on_tray_menu(handle, event.id().as_ref()))
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                open_window(tray.app_handle());
            }
        })
        .build(handle)
}

/// Runs the app. `--tray` starts with only the tray (no window).
pub fn run() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POSTERN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let start_hidden = std::env::args().any(|a| a == "--tray");

    // One worker thread carries one person's tunnels (the CLI runs them on a
    // single thread); Tauri's default runtime has a worker per core, each
    // with its own stack and malloc arena, which an idle tray app pays for.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the async runtime starts");
    tauri::async_runtime::set(runtime.handle().clone());

    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("postern-desktop: {e}");
            std::process::exit(1);
        }
    };

    let app = tauri::Builder::default()
        // First: a second start only shows the running app's window.
        .plugin(tauri_plugin_single_instance::init(|handle, _args, _cwd| {
            open_window(handle)
        }))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        // Starting at login means starting in the tray, without a window.
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--tray"]),
        ))
        .manage(TrayShown::default())
        .setup(move |tauri_app| {
            let handle = tauri_app.handle().clone();
            let sink_handle = handle.clone();
            let core = App::new(
                home,
                AppOptions::from_env(),
                Arc::new(move |event| on_event(&sink_handle, event)),
            );
            tauri_app.manage(core.clone());
            build_tray(&handle)?;
            tauri::async_runtime::spawn(async move {
                core.spawn_background(Duration::from_secs(30));
                core.restore_favourites().await;
                // Connection counts change without events: look now and then.
                loop {
                    refresh_tray(handle.clone());
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
            if !start_hidden {
                open_window(tauri_app.handle());
            }
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            app_state,
            gateway_info,
            login_local,
            login_sso,
            cancel_sso,
            use_profile,
            sign_out,
            databases,
            suggest_port,
            start_tunnel,
            tunnels,
            stop_tunnel,
            set_favourite,
            queries,
            cancel_query,
            set_guard,
            open_pgadmin,
            open_psql,
            write_service,
            copy_text,
            autostart,
            set_autostart,
        ])
        .build(tauri::generate_context!())
        .expect("the Tauri app builds");

    app.run(move |_handle, event| {
        // Closing the last window only destroys the webview; the tray and
        // the tunnels live on until Quit (which exits with a code).
        if let RunEvent::ExitRequested {
            code: None, api, ..
        } = event
        {
            api.prevent_exit();
        }
    });
}
