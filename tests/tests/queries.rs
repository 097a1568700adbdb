//! The query cancel helper on real PostgreSQL through a real tunnel:
//! `postern db queries`, `postern db cancel`, and the runaway guard.

use std::process::Stdio;
use std::time::{Duration, Instant};

use postern_tests::eventually;
use postern_tests::stack::{Proxy, Stack};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// Starts `sql` through the proxy in the background, as psql would for a user.
fn start_statement(proxy: &Proxy, sql: &str) -> Child {
    let mut cmd = proxy.psql("");
    cmd.args(["-c", sql])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

async fn finished(child: Child) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("statement ends")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn queries(stack: &Stack, who: &str, db_user: &str) -> Vec<serde_json::Value> {
    let out = stack
        .run(
            who,
            &[
                "db",
                "queries",
                "pg",
                "--db-user",
                db_user,
                "--db-name",
                "app",
                "--format",
                "json",
            ],
            "",
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json list")
}

async fn wait_listed(stack: &Stack, who: &str, db_user: &str, marker: &str) -> serde_json::Value {
    eventually(Duration::from_secs(20), async || {
        let list = queries(stack, who, db_user).await;
        let found = list
            .iter()
            .find(|q| q["query"].as_str().unwrap().contains(marker));
        found.cloned().ok_or_else(|| format!("{list:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{marker} never listed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_statement_is_listed_and_cancelled() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let child = start_statement(&proxy, "select pg_sleep(60) /* runaway */");

    // Listed as soon as it is active; its wait event shows once the
    // backend is inside pg_sleep.
    let first = eventually(Duration::from_secs(20), async || {
        let first = wait_listed(&stack, "alice", "certuser", "runaway").await;
        if first["wait_event"] == "PgSleep" {
            Ok(first)
        } else {
            Err(format!("{first}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the statement is listed sleeping: {e}"));
    assert_eq!(first["user"], "certuser");
    assert_eq!(first["database"], "app");
    assert_eq!(first["state"], "active");
    assert_eq!(first["wait_event"], "PgSleep");
    // The listed duration grows as the statement runs on.
    let later = eventually(Duration::from_secs(20), async || {
        let later = wait_listed(&stack, "alice", "certuser", "runaway").await;
        let grown = later["duration_ms"].as_f64().unwrap()
            > first["duration_ms"].as_f64().unwrap() + 1000.0;
        if grown { Ok(later) } else { Err(later) }
    })
    .await
    .unwrap_or_else(|e| panic!("duration grows: {first} then {e}"));
    assert_eq!(later["pid"], first["pid"]);

    let pid = first["pid"].to_string();
    let out = stack
        .run(
            "alice",
            &[
                "db",
                "cancel",
                "pg",
                &pid,
                "--db-user",
                "certuser",
                "--db-name",
                "app",
            ],
            "",
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Cancelled the statement"));
    let (ok, err) = finished(child).await;
    assert!(!ok);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );

    // Cancelling again: it is no longer running, and the user is told so.
    let out = stack
        .run(
            "alice",
            &[
                "db",
                "cancel",
                "pg",
                &pid,
                "--db-user",
                "certuser",
                "--db-name",
                "app",
            ],
            "",
        )
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of your running statements"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_ends_the_backend() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let child = start_statement(&proxy, "select pg_sleep(60) /* stuck */");
    let q = wait_listed(&stack, "alice", "certuser", "stuck").await;
    let pid = q["pid"].to_string();
    let out = stack
        .run(
            "alice",
            &[
                "db",
                "cancel",
                "pg",
                &pid,
                "--terminate",
                "--db-user",
                "certuser",
                "--db-name",
                "app",
            ],
            "",
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Terminated process"));
    let (ok, err) = finished(child).await;
    assert!(!ok);
    assert!(
        err.contains("terminating connection due to administrator command"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_statement_cannot_be_cancelled() {
    let stack = Stack::with_dev_users(&["alice", "bob"]).await;
    let bob = stack
        .proxy("bob", &["pg", "--db-user", "scramuser", "--db-name", "app"])
        .await;
    let child = start_statement(&bob, "select pg_sleep(30) /* bob's */");
    let q = wait_listed(&stack, "bob", "scramuser", "bob's").await;

    // Alice, as her own db user, sees none of bob's statements...
    let alices = queries(&stack, "alice", "certuser").await;
    assert!(alices.is_empty(), "{alices:?}");
    // ...and cannot cancel his by pid.
    let pid = q["pid"].to_string();
    let out = stack
        .run(
            "alice",
            &[
                "db",
                "cancel",
                "pg",
                &pid,
                "--db-user",
                "certuser",
                "--db-name",
                "app",
            ],
            "",
        )
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of your running statements"));
    let still = wait_listed(&stack, "bob", "scramuser", "bob's").await;
    assert_eq!(still["pid"], q["pid"]);
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runaway_guard_cancels_long_statements_and_spares_short_ones() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let mut proxy = stack
        .proxy(
            "alice",
            &[
                "pg",
                "--db-user",
                "certuser",
                "--db-name",
                "app",
                "--warn-after",
                "1s",
                "--cancel-after",
                "3s",
            ],
        )
        .await;
    let mut guard_log = BufReader::new(proxy.child.stderr.take().unwrap()).lines();

    let short = start_statement(&proxy, "select pg_sleep(2) /* short */");
    let long = start_statement(&proxy, "select pg_sleep(60) /* long */");
    let (ok, err) = finished(short).await;
    assert!(ok, "a statement under the limit is left alone: {err}");
    let started = Instant::now();
    let (ok, err) = finished(long).await;
    assert!(!ok);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // The guard said what it did.
    let mut lines = Vec::new();
    let cancelled = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(line)) = guard_log.next_line().await {
            let done = line.contains("cancelled process") && line.contains("/* long */");
            lines.push(line);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(cancelled.is_ok(), "guard log: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("has been running for")),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("cancelled") && l.contains("short")),
        "{lines:?}"
    );
}
