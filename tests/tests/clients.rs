//! Honest clients through the tunnel: the real drivers people use connect
//! with their usual settings (any user name, no password, TLS off on the
//! local hop), run a query, and cancel a running statement with their own
//! cancel API. psycopg 3 is pgAdmin 4's driver, so it stands for pgAdmin.
//!
//! Each driver runs a small program from `tests/clients/` (installed by
//! `scripts/install-test-deps`) that prints one JSON line per step: `query`
//! (what `select current_user, count(*) from items` returned), `sleeping`
//! (`select pg_sleep(30)` is on its way), then, after the test has seen the
//! statement running in `pg_stat_activity` and written a line to the
//! program's stdin, `cancelled` (what the driver reported) and `after` (the
//! same session still answers).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use postern_tests::stack::{Proxy, Stack};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// The statement every program cancels, as `pg_stat_activity` shows it.
const SLEEP: &str = "select pg_sleep(30)";
/// Long enough for a driver to connect or to see its statement end after a
/// cancel, well short of the 30 s the statement would otherwise run.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// `tests/clients/<rel>`.
fn client_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(rel)
}

/// Python of the venv holding psycopg and asyncpg.
fn python() -> PathBuf {
    let python =
        postern_tests::cached_venv("POSTERN_CLIENTS_VENV", "clients-venv").join("bin/python");
    assert!(
        python.exists(),
        "{python:?} is missing: run scripts/install-test-deps (or set POSTERN_CLIENTS_VENV)"
    );
    python
}

/// A tunnel for alice to `pg` as `certuser`, database `app`.
async fn tunnel() -> (Stack, Proxy) {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    (stack, proxy)
}

/// A client program's stdout, one JSON object per line.
struct Steps {
    lines: Lines<BufReader<ChildStdout>>,
    program: String,
}

impl Steps {
    /// The next line, which must be step `step`; `Err` says why there is none.
    async fn expect(&mut self, step: &str) -> Result<Value, String> {
        let line = tokio::time::timeout(STEP_TIMEOUT, self.lines.next_line())
            .await
            .map_err(|_| format!("no {step:?} step in time"))?
            .map_err(|e| format!("reading its stdout: {e}"))?
            .ok_or_else(|| format!("it ended before the {step:?} step"))?;
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.program));
        assert_eq!(value["step"], step, "{}: {value}", self.program);
        Ok(value)
    }
}

/// Runs one client program against the tunnel: checks its query, lets it
/// start the long statement, has it cancelled, and checks that the server
/// ended the statement because of the cancel and that the session goes on.
/// Returns the `cancelled` step for the driver-specific checks.
async fn connect_query_cancel(stack: &Stack, mut cmd: Command) -> Value {
    let program = format!("{:?}", cmd.as_std());
    let cancels_before = cancelled_sleeps(stack);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut steps = Steps {
        lines: BufReader::new(child.stdout.take().unwrap()).lines(),
        program: program.clone(),
    };

    let outcome = async {
        let query = steps.expect("query").await?;
        assert_eq!(query["user"], "certuser", "{program}: {query}");
        assert_eq!(query["count"], 3, "{program}: {query}");

        steps.expect("sleeping").await?;
        stack.pg.wait_activity(&format!("{SLEEP}%"), true).await;
        stdin
            .write_all(b"cancel\n")
            .await
            .expect("write client stdin");
        let cancelled = steps.expect("cancelled").await?;
        let after = steps.expect("after").await?;
        assert_eq!(after["value"], 1, "{program}: {after}");
        Ok::<_, String>(cancelled)
    }
    .await;
    let cancelled = match outcome {
        Ok(cancelled) => cancelled,
        Err(why) => {
            let _ = child.start_kill();
            panic!("{program}: {why}; its stderr:\n{}", stderr.await.unwrap());
        }
    };
    let status = tokio::time::timeout(STEP_TIMEOUT, child.wait())
        .await
        .expect("client exits")
        .expect("client status");
    let stderr = stderr.await.unwrap();
    assert!(status.success(), "{program} failed ({status}): {stderr}");

    stack.pg.wait_activity(&format!("{SLEEP}%"), false).await;
    assert_eq!(
        cancelled_sleeps(stack),
        cancels_before + 1,
        "{program}: PostgreSQL's log does not show the statement cancelled by a user request"
    );
    cancelled
}

/// How often PostgreSQL's log says it ended [`SLEEP`] on a cancel request
/// (or `pg_cancel_backend`): the server's side of SQLSTATE 57014, which
/// proves the cancel reached it whatever the driver makes of the answer.
fn cancelled_sleeps(stack: &Stack) -> usize {
    let log = std::fs::read_to_string(stack.pg.log_path()).expect("read PostgreSQL log");
    let lines: Vec<&str> = log.lines().collect();
    lines
        .windows(2)
        .filter(|pair| {
            pair[0].ends_with("ERROR:  canceling statement due to user request")
                && pair[1].ends_with(&format!("STATEMENT:  {SLEEP}"))
        })
        .count()
}

/// The driver reported PostgreSQL's answer to a cancel: SQLSTATE 57014.
fn assert_query_canceled(program: &str, cancelled: &Value) {
    assert_eq!(cancelled["sqlstate"], "57014", "{program}: {cancelled}");
    assert_eq!(
        cancelled["message"]
            .as_str()
            .map(|m| m.contains("canceling statement due to user request")),
        Some(true),
        "{program}: {cancelled}"
    );
}

/// psycopg_client.py against `proxy`, cancelling with `method` (see there).
fn psycopg(proxy: &Proxy, method: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(client_file("python/psycopg_client.py"))
        .args([&proxy.port.to_string(), method])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_connects_queries_and_cancels_through_the_tunnel() {
    let (stack, proxy) = tunnel().await;
    // Connection.cancel() is libpq's PQcancel; cancel_safe() is libpq 17's
    // cancel connection, which honours the connection's settings (sslmode).
    for method in ["cancel", "cancel_safe"] {
        let cancelled = connect_query_cancel(&stack, psycopg(&proxy, method)).await;
        assert_query_canceled(&format!("psycopg {method}"), &cancelled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgadmin_cancel_button_cancels_through_the_tunnel() {
    // pgAdmin 4's Cancel (cancel_transaction in its psycopg3 driver) runs
    // `SELECT pg_cancel_backend(pid)` on a second connection, with the pid
    // libpq got in BackendKeyData (conn.info.backend_pid).
    let (stack, proxy) = tunnel().await;
    let cancelled = connect_query_cancel(&stack, psycopg(&proxy, "pgadmin")).await;
    assert_query_canceled("pgAdmin's cancel", &cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_connects_queries_and_cancels_through_the_tunnel() {
    let (stack, proxy) = tunnel().await;
    let mut cmd = Command::new(python());
    cmd.arg(client_file("python/asyncpg_client.py"))
        .arg(proxy.port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let cancelled = connect_query_cancel(&stack, cmd).await;
    // asyncpg ends the task as cancelled and keeps the server's 57014 to
    // itself; connect_query_cancel has checked the server's side.
    assert_eq!(cancelled["task"], "cancelled", "asyncpg: {cancelled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_connects_queries_and_cancels_through_the_tunnel() {
    let dir = client_file("node");
    assert!(
        dir.join("node_modules/pg").exists(),
        "{} has no node_modules: run scripts/install-test-deps",
        dir.display()
    );
    let (stack, proxy) = tunnel().await;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("client.js"))
        .arg(proxy.port.to_string())
        .current_dir(&dir);
    let cancelled = connect_query_cancel(&stack, cmd).await;
    assert_query_canceled("node-postgres", &cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_connects_queries_and_cancels_through_the_tunnel() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    assert!(
        jar.exists(),
        "{jar:?} is missing: run scripts/install-test-deps (Debian's libpostgresql-jdbc-java)"
    );
    let (stack, proxy) = tunnel().await;
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(jar)
        .arg(client_file("java/Client.java"))
        .arg(proxy.port.to_string());
    let cancelled = connect_query_cancel(&stack, cmd).await;
    assert_query_canceled("pgjdbc", &cancelled);
}
