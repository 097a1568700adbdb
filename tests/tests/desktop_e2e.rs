//! The real desktop app under Xvfb, driven through tauri-driver and
//! WebKitWebDriver: sign in against a real gateway (trusting its CA on first
//! contact), connect a database, run a query through the tunnel with psql,
//! cancel a pg_sleep from the running-queries view, have the runaway guard
//! warn and cancel, and stop the tunnel. Then, as a person who closes the
//! window: the tunnel keeps working, and the tray (read and clicked over
//! D-Bus, as a panel does: `postern_tests::tray`) lists it, stops it and
//! quits the app.
//!
//! Ignored by default (it needs the app built, Xvfb, tauri-driver and
//! WebKitWebDriver); `scripts/test` runs it. With `POSTERN_SCREENSHOTS=DIR`
//! it also saves a screenshot of each screen (`import -window root`), as in
//! the README.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use postern_tests::desktop::{By, Display, Driver, WebDriver, descendants};
use postern_tests::eventually;
use postern_tests::stack::{DEFAULT_ROLES, Stack, bin, psql};
use postern_tests::tray::{DesktopShell, MenuEntry};

use postern_tests::stack::PASSWORD as PW;
const WIDTH: u32 = 1040;
const HEIGHT: u32 = 700;
const WAIT: Duration = Duration::from_secs(30);
/// WebKitWebProcess, as /proc shows it (`comm` is cut at 15 bytes).
const WEB_PROCESS: &str = "WebKitWebProces";

struct Shots {
    dir: Option<PathBuf>,
}

impl Shots {
    async fn take(&self, display: &Display, name: &str) {
        if let Some(dir) = &self.dir {
            // Let the last frame (and any transition) land.
            tokio::time::sleep(Duration::from_millis(600)).await;
            display
                .screenshot(&dir.join(format!("{name}.png")), WIDTH, HEIGHT)
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drives the real app under Xvfb; scripts/test runs it after scripts/install-test-deps"]
async fn the_app_signs_in_connects_cancels_queries_and_keeps_tunnels_in_the_tray() {
    let app_bin = bin("postern-desktop");
    let shots = Shots {
        dir: std::env::var_os("POSTERN_SCREENSHOTS").map(PathBuf::from),
    };
    if let Some(dir) = &shots.dir {
        std::fs::create_dir_all(dir).unwrap();
    }

    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    let home = stack.home("alice");
    let scratch = tempfile::tempdir().unwrap();
    let service_file = scratch.path().join("pg_service.conf");

    let display = Display::start(WIDTH, HEIGHT).await;
    let driver = Driver::start(
        &display,
        &[
            ("POSTERN_HOME", home.as_path()),
            ("POSTERN_KEY_STORE", Path::new("file")),
            ("PGSERVICEFILE", service_file.as_path()),
            // The autostart entry goes to $HOME/.config/autostart (the
            // autostart plugin does not read XDG_CONFIG_HOME).
            ("HOME", scratch.path()),
            ("XDG_CONFIG_HOME", scratch.path()),
            ("XDG_DATA_HOME", scratch.path()),
            // The tray icon's image file goes here, not in a shared /tmp.
            ("XDG_RUNTIME_DIR", scratch.path()),
        ],
    )
    .await;
    // The panel is there before the app, as on a desktop.
    let shell = DesktopShell::start(&driver.bus_address).await;
    let wd = WebDriver::start_app(&driver, &app_bin).await;
    let tray = shell.tray_item(WAIT).await;
    let app_pid = tray.pid().await;

    // Sign in: a new gateway's CA is shown and must be trusted first.
    let gateway = wd.wait(By::Css("input[name=gateway]"), WAIT).await;
    wd.type_text(&gateway, &stack.gateway_addr()).await;
    let user = wd.wait(By::Css("input[name=username]"), WAIT).await;
    wd.type_text(&user, "alice").await;
    let password = wd.wait(By::Css("input[name=password]"), WAIT).await;
    wd.type_text(&password, PW).await;
    let trust = wd.wait(By::Css("input[name=trust]"), WAIT).await;
    let fingerprint = wd.wait(By::Css(".fingerprint"), WAIT).await;
    let shown = wd
        .execute(
            "return arguments[0].textContent",
            vec![element(&fingerprint)],
        )
        .await;
    assert_eq!(shown.as_str(), Some(&*stack.gateway.ca_pin));
    shots.take(&display, "sign-in").await;
    wd.click(&trust).await;
    wd.click(&wd.wait(By::Css("button[name=signin]"), WAIT).await)
        .await;

    // Databases: only what the role allows.
    wd.wait(By::Css("li[data-database=pg]"), WAIT).await;
    assert!(
        wd.find(By::Css("li[data-database=pg-prod]"))
            .await
            .is_none()
    );
    shots.take(&display, "databases").await;
    // Signed in, no tunnel yet: the tray says so.
    tray.wait_menu("no tunnels, signed in", WAIT, |m| {
        m.find("No tunnels").is_some_and(|e| !e.enabled)
            && m.find("Sign out").is_some_and(|e| e.enabled)
    })
    .await;
    tray.wait_icon(&icon("tray.png"), WAIT).await;

    // Connect dialog: choose the db user and name; psql works through it.
    let port = connect(&wd, &display, &shots).await;
    assert_psql_works(port).await;

    // The tray lists the tunnel with its port, and what can be done with it;
    // its icon says tunnels are active.
    let menu = tray
        .wait_menu(&format!("a tunnel on :{port}"), WAIT, |m| {
            m.find(&format!(":{port}")).is_some()
        })
        .await;
    let entry = menu.find(&format!(":{port}")).unwrap();
    assert!(entry.label.contains("pg — certuser@app"), "{entry:#?}");
    let items = entry.labels();
    // (The connection count follows psql, polled every few seconds.)
    assert!(
        items[0].starts_with(&format!("Listening on 127.0.0.1:{port} · ")),
        "{items:?}"
    );
    assert_eq!(
        items[1..],
        [
            "Copy connection URI",
            "Copy psql command",
            "Open in pgAdmin",
            "Stop tunnel",
        ],
    );
    assert_eq!(
        menu.labels()[1..],
        ["Open Postern", "Sign out", "Quit Postern"],
        "{menu:#?}"
    );
    tray.wait_icon(&icon("tray-active.png"), WAIT).await;

    // A long statement, seen live and cancelled from the running-queries view.
    let sleeper = long_statement(port);
    wd.wait(
        By::XPath("//dd[@data-stat='connections'][normalize-space()='1']"),
        WAIT,
    )
    .await;
    shots.take(&display, "tunnels").await;
    wd.click(&wd.wait(By::Css("button[name=queries]"), WAIT).await)
        .await;
    let row = "//tr[td/code[contains(., 'pg_sleep(120)')]]";
    wd.wait(By::XPath(row), WAIT).await;
    shots.take(&display, "queries").await;
    wd.click(
        &wd.wait(By::XPath(&format!("{row}//button[@name='cancel']")), WAIT)
            .await,
    )
    .await;
    expect_cancelled(sleeper, "the statement ends once cancelled").await;
    wd.wait(
        By::XPath("//*[contains(., 'Cancelled the statement of process')]"),
        WAIT,
    )
    .await;
    wd.wait_gone(By::XPath(row), WAIT).await;

    // The runaway guard: a notification after 1 s, a cancel after 3 s.
    wd.type_text(&wd.wait(By::Css("input[name=warn_after]"), WAIT).await, "1")
        .await;
    wd.type_text(
        &wd.wait(By::Css("input[name=cancel_after]"), WAIT).await,
        "3",
    )
    .await;
    wd.click(&wd.wait(By::Css("button[name=save_guard]"), WAIT).await)
        .await;
    wd.wait(By::XPath("//*[contains(., 'Runaway guard saved.')]"), WAIT)
        .await;
    let runaway = long_statement(port);
    let warned = shell.notification("Long-running statement", WAIT).await;
    assert!(
        warned.body.contains("A statement on pg has run for"),
        "{warned:?}"
    );
    let cancelled = shell.notification("Statement cancelled", WAIT).await;
    assert!(
        cancelled.body.contains("Cancelled a statement on pg after"),
        "{cancelled:?}"
    );
    expect_cancelled(runaway, "the guard ends the statement").await;

    // Session screen.
    wd.click(
        &wd.wait(By::XPath("//nav//button[contains(., 'Session')]"), WAIT)
            .await,
    )
    .await;
    let who = wd.wait(By::Css("[data-fact=user]"), WAIT).await;
    let who = wd
        .execute("return arguments[0].textContent", vec![element(&who)])
        .await;
    assert_eq!(who.as_str(), Some("alice"));
    // "Start Postern at login (in the tray)" writes the XDG autostart entry
    // that runs this program with --tray, and removes it again.
    let entry = scratch.path().join(".config/autostart/Postern.desktop");
    let autostart = wd
        .wait(By::Css("input[name=autostart]:not([disabled])"), WAIT)
        .await;
    wd.click(&autostart).await;
    let written = eventually(WAIT, async || {
        std::fs::read_to_string(&entry).map_err(|e| format!("{}: {e}", entry.display()))
    })
    .await
    .expect("the autostart entry is written");
    assert!(written.contains("--tray"), "{written}");
    assert!(written.contains(&*app_bin.to_string_lossy()), "{written}");
    shots.take(&display, "session").await;
    wd.click(&autostart).await;
    eventually(WAIT, async || {
        if entry.exists() {
            Err("still there")
        } else {
            Ok(())
        }
    })
    .await
    .expect("the autostart entry is removed");

    // Stop the tunnel: the port is closed.
    wd.click(
        &wd.wait(By::XPath("//nav//button[contains(., 'Tunnels')]"), WAIT)
            .await,
    )
    .await;
    wd.click(&wd.wait(By::Css("button[name=stop]"), WAIT).await)
        .await;
    wd.wait_gone(By::Css("li.tunnel"), WAIT).await;
    assert_refused(port).await;
    // The tray follows.
    tray.wait_menu("no tunnels", WAIT, |m| m.find("No tunnels").is_some())
        .await;
    tray.wait_icon(&icon("tray.png"), WAIT).await;

    // Connect again, then close the window: the webview goes (its web
    // process exits), the app and the tunnel stay. (WebKit's network process
    // stays too: on Linux Tauri keeps the web context for the app's lifetime,
    // tauri-apps/tauri#14626.)
    wd.click(
        &wd.wait(By::XPath("//nav//button[contains(., 'Databases')]"), WAIT)
            .await,
    )
    .await;
    let port = connect(&wd, &display, &Shots { dir: None }).await;
    let web_process = || descendants(app_pid).iter().any(|p| p == WEB_PROCESS);
    assert!(web_process(), "{:?}", descendants(app_pid));
    assert_eq!(display.close_windows_of(app_pid), 1, "one window to close");
    wait_for("the webview's process to exit", || async { !web_process() }).await;
    assert!(tray.alive().await, "closing the window ended the app");
    assert_psql_works(port).await;
    // Each change rebuilds the menu with new ids: wait until psql's
    // connection is counted out, so the entry clicked is still there.
    let menu = tray
        .wait_menu(&format!("the tunnel on :{port}, idle"), WAIT, |m| {
            m.find(&format!("127.0.0.1:{port} · 0 connections"))
                .is_some()
        })
        .await;

    // Stop it from the tray.
    tray.click(stop_item(&menu, port)).await;
    tray.wait_menu("no tunnels", WAIT, |m| m.find("No tunnels").is_some())
        .await;
    assert_refused(port).await;
    tray.wait_icon(&icon("tray.png"), WAIT).await;

    // Quit from the tray ends the app.
    let menu = tray.menu().await;
    tray.click(menu.find("Quit Postern").unwrap()).await;
    wait_for("Quit to end the app", || async { !tray.alive().await }).await;
    wd.quit().await;
}

/// Connects `pg` as certuser to `app` from the Databases screen; returns the
/// tunnel's port.
async fn connect(wd: &WebDriver, display: &Display, shots: &Shots) -> u16 {
    wd.click(
        &wd.wait(By::Css("li[data-database=pg] button[name=connect]"), WAIT)
            .await,
    )
    .await;
    let db_user = wd.wait(By::Css("select[name=db_user]"), WAIT).await;
    wd.select(&db_user, "certuser").await;
    let db_name = wd.wait(By::Css("select[name=db_name]"), WAIT).await;
    wd.select(&db_name, "app").await;
    shots.take(display, "connect").await;
    wd.click(&wd.wait(By::Css("button[name=start]"), WAIT).await)
        .await;
    // Tunnels: the address is shown.
    let card = wd.wait(By::Css("li.tunnel"), WAIT).await;
    wd.attr(&card, "data-port")
        .await
        .expect("data-port")
        .parse()
        .unwrap()
}

/// psql running `select pg_sleep(120)` through the tunnel on `port`.
fn long_statement(port: u16) -> tokio::process::Child {
    let mut sleeper = psql(port, "");
    sleeper
        .args(["-c", "select pg_sleep(120)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sleeper.spawn().unwrap()
}

/// Waits for a [`long_statement`] to end, cancelled by the database.
async fn expect_cancelled(psql: tokio::process::Child, why: &str) {
    let out = tokio::time::timeout(WAIT, psql.wait_with_output())
        .await
        .expect(why)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn assert_psql_works(port: u16) {
    let mut q = psql(port, "");
    q.args(["-c", "select current_user, current_database()"]);
    let out = q.output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "certuser|app",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn assert_refused(port: u16) {
    let mut refused = psql(port, "");
    refused.args(["-c", "select 1"]).stderr(Stdio::null());
    assert!(!refused.output().await.unwrap().status.success());
}

/// "Stop tunnel" in the tray entry of the tunnel on `port`.
fn stop_item(menu: &MenuEntry, port: u16) -> &MenuEntry {
    menu.find(&format!(":{port}"))
        .and_then(|t| t.find("Stop tunnel"))
        .unwrap_or_else(|| panic!("no Stop for :{port} in {menu:#?}"))
}

/// One of the app's tray icons, as drawn in icons/.
fn icon(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../icons")
        .join(name)
}

async fn wait_for<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    eventually(
        WAIT,
        async || if done().await { Ok(()) } else { Err("not yet") },
    )
    .await
    .unwrap_or_else(|e| panic!("timed out waiting for {what}: {e}"));
}

fn element(e: &postern_tests::desktop::Element) -> serde_json::Value {
    e.to_json()
}
