//! The real desktop app under Xvfb, driven through tauri-driver and
//! WebKitWebDriver: sign in against a real gateway (trusting its CA on first
//! contact), connect a database, run a query through the tunnel with psql,
//! cancel a pg_sleep from the running-queries view, and stop the tunnel.
//!
//! Ignored by default (it needs the app built, Xvfb, tauri-driver and
//! WebKitWebDriver); `scripts/test` runs it. With `POSTERN_SCREENSHOTS=DIR`
//! it also saves a screenshot of each screen (`import -window root`), as in
//! the README.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use postern_tests::desktop::{By, Display, Driver, WebDriver};
use postern_tests::stack::{DEFAULT_ROLES, Stack, bin, psql};

use postern_tests::stack::PASSWORD as PW;
const WIDTH: u32 = 1040;
const HEIGHT: u32 = 700;
const WAIT: Duration = Duration::from_secs(30);

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
async fn the_app_signs_in_connects_cancels_a_query_and_stops_the_tunnel() {
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
            ("POSTERN_EXIT_ON_CLOSE", Path::new("1")),
            ("PGSERVICEFILE", service_file.as_path()),
            ("XDG_CONFIG_HOME", scratch.path()),
            ("XDG_DATA_HOME", scratch.path()),
        ],
    )
    .await;
    let wd = WebDriver::start_app(&driver, &app_bin).await;

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

    // Connect dialog: choose the db user and name.
    wd.click(
        &wd.wait(By::Css("li[data-database=pg] button[name=connect]"), WAIT)
            .await,
    )
    .await;
    let db_user = wd.wait(By::Css("select[name=db_user]"), WAIT).await;
    wd.select(&db_user, "certuser").await;
    let db_name = wd.wait(By::Css("select[name=db_name]"), WAIT).await;
    wd.select(&db_name, "app").await;
    shots.take(&display, "connect").await;
    wd.click(&wd.wait(By::Css("button[name=start]"), WAIT).await)
        .await;

    // Tunnels: the address is shown; psql works through it.
    let card = wd.wait(By::Css("li.tunnel"), WAIT).await;
    let port: u16 = wd
        .attr(&card, "data-port")
        .await
        .expect("data-port")
        .parse()
        .unwrap();
    let mut q = psql(port, "");
    q.args(["-c", "select current_user, current_database()"]);
    let out = q.output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "certuser|app",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A long statement, seen live and cancelled from the running-queries view.
    let mut sleeper = psql(port, "");
    sleeper
        .args(["-c", "select pg_sleep(120)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let sleeper = sleeper.spawn().unwrap();
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
    let out = tokio::time::timeout(WAIT, sleeper.wait_with_output())
        .await
        .expect("the statement ends once cancelled")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wd.wait(
        By::XPath("//*[contains(., 'Cancelled the statement of process')]"),
        WAIT,
    )
    .await;
    wd.wait_gone(By::XPath(row), WAIT).await;

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
    shots.take(&display, "session").await;

    // Stop the tunnel: the port is closed.
    wd.click(
        &wd.wait(By::XPath("//nav//button[contains(., 'Tunnels')]"), WAIT)
            .await,
    )
    .await;
    wd.click(&wd.wait(By::Css("button[name=stop]"), WAIT).await)
        .await;
    wd.wait_gone(By::Css("li.tunnel"), WAIT).await;
    let mut refused = psql(port, "");
    refused.args(["-c", "select 1"]).stderr(Stdio::null());
    assert!(!refused.output().await.unwrap().status.success());

    wd.quit().await;
}

fn element(e: &postern_tests::desktop::Element) -> serde_json::Value {
    e.to_json()
}
