//! The desktop app's command handlers (postern-desktop-core), without Tauri,
//! against a real gateway and PostgreSQL: sign in (trusting the CA on first
//! contact), list databases, connect, run a query through the tunnel, cancel
//! it from the running-queries handler, the guard's event, pg_service.conf,
//! favourites, stop and sign out.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_client::home::Home;
use postern_client::keystore::KeyStoreKind;
use postern_desktop_core::views::*;
use postern_desktop_core::{App, AppOptions, ErrorKind};
use postern_tests::eventually;
use postern_tests::stack::{DEFAULT_ROLES, Stack, psql};

use postern_tests::stack::PASSWORD as PW;

fn app(home: &Path, service_file: &Path) -> (Arc<App>, Arc<Mutex<Vec<AppEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let app = App::new(
        Home::at(home.to_owned()),
        AppOptions {
            key_store: Some(KeyStoreKind::File),
            service_file: Some(service_file.to_owned()),
        },
        Arc::new(move |e| sink.lock().unwrap().push(e)),
    );
    (app, events)
}

fn login(stack: &Stack, password: &str, ca_pin: Option<String>) -> LoginLocalArgs {
    LoginLocalArgs {
        gateway: stack.gateway_addr(),
        username: "alice".into(),
        password: password.into(),
        totp: None,
        ca_pin,
    }
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    eventually(Duration::from_secs(15), async || f().await.ok_or("not yet"))
        .await
        .unwrap_or_else(|e| panic!("timed out waiting for {what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_signs_in_connects_cancels_and_signs_out() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    let dir = tempfile::tempdir().unwrap();
    let service_file = dir.path().join("pg_service.conf");
    let (app, events) = app(&stack.home("alice"), &service_file);
    app.spawn_background(Duration::from_millis(200));

    // First contact: the CA must be trusted, and the UI is told which one.
    let info = app
        .gateway_info(GatewayArgs {
            gateway: stack.gateway_addr(),
        })
        .await
        .unwrap();
    assert!(!info.trusted);
    assert_eq!(info.fingerprint, stack.gateway.ca_pin);
    let err = app.login_local(login(&stack, PW, None)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::UntrustedCa);
    assert_eq!(err.fingerprint.as_deref(), Some(&*stack.gateway.ca_pin));

    let pin = Some(stack.gateway.ca_pin.clone());
    let err = app
        .login_local(login(&stack, "wrong", pin.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");

    let session = app.login_local(login(&stack, PW, pin)).await.unwrap();
    assert_eq!(session.username, "alice");
    assert_eq!(session.roles, ["dev"]);
    assert_eq!(
        session.login,
        Some(LoginMethod::Local {
            username: "alice".into()
        })
    );
    assert!(
        app.gateway_info(GatewayArgs {
            gateway: stack.gateway_addr()
        })
        .await
        .unwrap()
        .trusted
    );
    let state = app.app_state().await.unwrap();
    assert_eq!(state.session.as_ref().map(|s| &*s.username), Some("alice"));
    assert_eq!(state.last_username.as_deref(), Some("alice"));

    // Only what the role allows: pg (env dev), never pg-prod.
    let databases = app.databases().await.unwrap();
    let names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["pg"]);
    let pg = &databases[0];
    assert_eq!(pg.db_users.allowed, ["certuser", "md5user", "scramuser"]);
    assert_eq!(pg.db_names.allowed, ["analytics", "app"]);
    assert!(!pg.auto_provisioned);

    let tunnel = app
        .start_tunnel(StartTunnelArgs {
            database: "pg".into(),
            db_user: Some("certuser".into()),
            db_name: Some("app".into()),
            db_roles: vec![],
            port: None,
            socket_dir: None,
        })
        .await
        .unwrap();
    assert_eq!(tunnel.address, format!("127.0.0.1:{}", tunnel.port));
    assert_eq!(
        tunnel.uri,
        format!(
            "postgresql://certuser@127.0.0.1:{}/app?sslmode=disable",
            tunnel.port
        )
    );
    let mut q = psql(tunnel.port, "");
    q.args(["-c", "select current_user, current_database()"]);
    let out = q.output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "certuser|app");

    // The dialog offers the same port next time, and knows it is ours.
    let suggestion = app
        .suggest_port(PortArgs {
            database: "pg".into(),
            db_user: Some("certuser".into()),
            db_name: Some("app".into()),
        })
        .await
        .unwrap();
    assert_eq!(suggestion.remembered, Some(tunnel.port));
    assert!(suggestion.remembered_free);
    // The last choice comes back with the catalog.
    let choice = app.databases().await.unwrap()[0].last_choice.clone();
    assert_eq!(choice.and_then(|c| c.db_user), Some("certuser".to_string()));

    // Running queries: find a long statement and cancel it.
    let mut sleeper = psql(tunnel.port, "");
    sleeper
        .args(["-c", "select pg_sleep(60)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let sleeper = sleeper.spawn().unwrap();
    let pid = wait_for("the statement to show", async || {
        let rows = app.queries(TunnelArgs { id: tunnel.id }).await.unwrap();
        rows.iter()
            .find(|r| r.query.contains("pg_sleep(60)"))
            .map(|r| r.pid)
    })
    .await;
    let live = app.tunnels().await.unwrap();
    assert!(live[0].connections >= 1, "{live:?}");
    let result = app
        .cancel_query(CancelArgs {
            id: tunnel.id,
            pid,
            terminate: false,
        })
        .await
        .unwrap();
    assert_eq!(result.outcome, CancelOutcomeView::Cancelled);
    let out = sleeper.wait_with_output().await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request"),
        "{out:?}"
    );

    // The runaway guard cancels on its own and says so as an event.
    app.set_guard(GuardArgs {
        id: tunnel.id,
        warn_after_secs: None,
        cancel_after_secs: Some(2),
    })
    .await
    .unwrap();
    let mut runaway = psql(tunnel.port, "");
    runaway
        .args(["-c", "select pg_sleep(30)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _runaway = runaway.spawn().unwrap();
    let message = wait_for("the guard's event", async || {
        events.lock().unwrap().iter().find_map(|e| match e {
            AppEvent::Guard {
                action: GuardAction::Cancelled,
                message,
                query,
                ..
            } if query.as_deref().is_some_and(|q| q.contains("pg_sleep(30)")) => {
                Some(message.clone())
            }
            _ => None,
        })
    })
    .await;
    assert!(
        message.starts_with("Cancelled a statement on pg after"),
        "{message}"
    );

    // pg_service.conf: any libpq client says service=NAME.
    let written = app
        .write_service(TunnelArgs { id: tunnel.id })
        .await
        .unwrap();
    assert!(written.message.contains("service=postern-pg-certuser-app"));
    let out = tokio::process::Command::new("psql")
        .args([
            "service=postern-pg-certuser-app connect_timeout=10",
            "-XAtc",
            "select 1",
        ])
        .env("PGSERVICEFILE", &service_file)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");

    // A favourite comes back, on its port, in the next app.
    app.set_favourite(FavouriteArgs {
        id: tunnel.id,
        favourite: true,
    })
    .await
    .unwrap();
    app.stop_tunnel(TunnelArgs { id: tunnel.id }).await.unwrap();
    assert!(app.tunnels().await.unwrap().is_empty());
    let mut refused = psql(tunnel.port, "");
    refused.args(["-c", "select 1"]).stderr(Stdio::null());
    assert!(!refused.output().await.unwrap().status.success());

    let (next, _) = self::app(&stack.home("alice"), &service_file);
    let restored = next.restore_favourites().await;
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].port, tunnel.port);

    // Signing out stops that gateway's tunnels and forgets the session.
    let state = next.sign_out().await.unwrap();
    assert_eq!(state.session, None);
    assert!(next.tunnels().await.unwrap().is_empty());
    assert_eq!(
        next.databases().await.unwrap_err().kind,
        ErrorKind::NotSignedIn
    );
    assert!(events.lock().unwrap().contains(&AppEvent::TunnelsChanged));
}
