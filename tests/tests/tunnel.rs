//! The spine end to end: real PostgreSQL, the gateway, the `postern` CLI's
//! tunnel, and psql/pgbench as the database clients.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postern_pgwire::{BackendMessage, frontend, parse_message};
use postern_tests::stack::{DEFAULT_ROLES, Stack, output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use postern_tests::stack::PASSWORD as PW;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_through_the_tunnel_with_every_upstream_auth_method() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    for user in ["certuser", "scramuser", "md5user"] {
        let proxy = stack
            .proxy("alice", &["pg", "--db-user", user, "--db-name", "app"])
            .await;
        // Any client user name and no password: the tunnel decides.
        let (ok, out, err) = proxy
            .query("user=whoever", "select current_user, count(*) from items")
            .await;
        assert!(ok, "{user}: {err}");
        assert_eq!(out, format!("{user}|3"), "{user} via tunnel");
        // The gateway encrypted the hop to PostgreSQL.
        let (_, ssl, err) = proxy
            .query(
                "",
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            )
            .await;
        assert_eq!(ssl, "t", "{user}: upstream must be TLS ({err})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_psql_cancels_the_query_through_the_tunnel() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let mut cmd = proxy.psql("");
    cmd.args(["-c", "select pg_sleep(60)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    stack.pg.wait_activity("select pg_sleep(60)%", true).await;
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("psql ends soon after Ctrl+C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql said: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    stack.pg.wait_activity("select pg_sleep(60)%", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_the_tunnel() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", "-h"])
        .arg(stack.pg.socket_dir())
        .args([
            "-p",
            &stack.pg.port().to_string(),
            "-U",
            stack.pg.superuser(),
            "app",
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    stack
        .pg
        .admin("app")
        .await
        .batch_execute("grant select on all tables in schema public to certuser")
        .await
        .unwrap();
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args([
        "-n",
        "-S",
        "-c",
        "4",
        "-j",
        "2",
        "-t",
        "200",
        "-h",
        "127.0.0.1",
    ])
    .args(["-p", &proxy.port.to_string(), "-U", "certuser", "app"]);
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "pgbench failed: {out}\n{err}");
    assert!(
        out.contains("number of transactions actually processed: 800/800"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_user_name_and_database_get_a_clear_error() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    // A tunnel without a fixed user takes the client's, so the gateway decides.
    let proxy = stack.proxy("alice", &["pg"]).await;
    let (ok, _, err) = proxy.query("user=postgres dbname=app", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("postern:") && err.contains("\"postgres\""),
        "{err}"
    );

    let (ok, _, err) = proxy
        .query("user=certuser dbname=postgres", "select 1")
        .await;
    assert!(!ok);
    assert!(
        err.contains("postern:") && err.contains("db name \"postgres\""),
        "{err}"
    );

    // The CLI refuses a database the roles do not reach before opening a port.
    let out = stack
        .run(
            "alice",
            &["proxy", "db", "pg-prod", "--db-user", "certuser"],
            "",
        )
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"pg-prod\" is not available to you"), "{err}");

    // And a valid request on the same tunnel still works.
    let (ok, out, err) = proxy
        .query(
            "user=scramuser dbname=analytics",
            "select current_database()",
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(out, "analytics");
}

/// Opens a session with raw protocol messages and returns the stream and the
/// BackendKeyData the gateway handed out.
async fn raw_session(port: u16) -> (TcpStream, (i32, i32)) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", "x"), ("database", "app")], &mut out).unwrap();
    tcp.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut key = None;
    loop {
        if let Some((msg, len)) = parse_message(&buf, 1 << 20).unwrap() {
            let decoded = BackendMessage::decode(&msg).unwrap();
            let done = match decoded {
                BackendMessage::BackendKeyData { pid, secret } => {
                    key = Some((pid, secret));
                    false
                }
                BackendMessage::ReadyForQuery(_) => true,
                BackendMessage::ErrorResponse(e) => panic!("login failed: {}", e.message),
                _ => false,
            };
            let _ = buf.split_to(len);
            if done {
                return (tcp, key.expect("BackendKeyData before ReadyForQuery"));
            }
            continue;
        }
        assert!(
            tcp.read_buf(&mut buf).await.unwrap() > 0,
            "closed during login"
        );
    }
}

async fn send_cancel(port: u16, key: (i32, i32)) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = BytesMut::new();
    frontend::cancel_request(key.0, key.1, &mut out);
    tcp.write_all(&out).await.unwrap();
    // No reply is ever sent; the tunnel closes once the cancel was delivered.
    let mut sink = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut sink)).await;
    assert!(
        matches!(n, Ok(Ok(0))),
        "a cancel gets no reply, only a close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_another_identitys_key_does_nothing() {
    let stack = Stack::with_dev_users(&["alice", "bob"]).await;
    let bob = stack
        .proxy("bob", &["pg", "--db-user", "certuser", "--db-name", "app"])
        .await;
    let alice = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let (mut session, key) = raw_session(bob.port).await;
    let mut q = BytesMut::new();
    q.extend_from_slice(b"Q");
    let sql = b"select pg_sleep(30) /* bob */\0";
    q.extend_from_slice(&((sql.len() + 4) as i32).to_be_bytes());
    q.extend_from_slice(sql);
    session.write_all(&q).await.unwrap();
    stack
        .pg
        .wait_activity("select pg_sleep(30) /* bob */%", true)
        .await;

    // Alice holds bob's key (say she read it off his screen): nothing happens.
    // The gateway's audit of the cancel says it has decided.
    send_cancel(alice.port, key).await;
    stack
        .wait_audit("cancel", |e| {
            e["user"] == "alice" && e["forwarded"] == false
        })
        .await;
    stack
        .pg
        .wait_activity("select pg_sleep(30) /* bob */%", true)
        .await;
    // Nor does a key nobody was given.
    send_cancel(bob.port, (key.0 ^ 1, key.1)).await;
    stack
        .wait_audit("cancel", |e| e["user"] == "bob" && e["forwarded"] == false)
        .await;
    stack
        .pg
        .wait_activity("select pg_sleep(30) /* bob */%", true)
        .await;

    // Bob's own cancel works.
    send_cancel(bob.port, key).await;
    let mut buf = BytesMut::new();
    let error = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some((msg, len)) = parse_message(&buf, 1 << 20).unwrap() {
                if let BackendMessage::ErrorResponse(e) = BackendMessage::decode(&msg).unwrap() {
                    return e;
                }
                let _ = buf.split_to(len);
                continue;
            }
            assert!(session.read_buf(&mut buf).await.unwrap() > 0);
        }
    })
    .await
    .expect("bob's query is cancelled");
    assert_eq!(error.code, "57014", "{}", error.message);
}

async fn expect_error_response(mut tcp: TcpStream, payload: &[u8]) -> String {
    tcp.write_all(payload).await.unwrap();
    let mut buf = BytesMut::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while tcp.read_buf(&mut buf).await.unwrap_or(0) > 0 {}
    })
    .await;
    assert!(read.is_ok(), "connection must be closed after bad input");
    let (msg, _) = parse_message(&buf, 1 << 20)
        .unwrap()
        .expect("an ErrorResponse before the close");
    match BackendMessage::decode(&msg).unwrap() {
        BackendMessage::ErrorResponse(e) => e.message,
        _ => panic!("expected an ErrorResponse"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversize_startup_packets_are_refused_while_others_carry_on() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let (mut live, _) = raw_session(proxy.port).await;

    let local = || TcpStream::connect(("127.0.0.1", proxy.port));
    let oversize = 10_001i32.to_be_bytes();
    let negative = (-8i32).to_be_bytes();
    for (what, payload) in [
        ("oversize", &oversize[..]),
        ("negative", &negative[..]),
        ("garbage", &b"\x00\x00\x00\x10GET / HTTP/1.1\r\n"[..]),
    ] {
        let message = expect_error_response(local().await.unwrap(), payload).await;
        assert!(
            message.contains("invalid startup packet"),
            "{what}: {message}"
        );
    }

    // Plaintext at the gateway's TLS port gets a PostgreSQL error too.
    let gw = TcpStream::connect(stack.gateway.addr).await.unwrap();
    let message = expect_error_response(gw, b"\x00\x00\x00\x08\x04\xd2\x16\x2f").await;
    assert!(message.contains("Postern gateway port"), "{message}");

    // The established session was not disturbed.
    let mut q = BytesMut::new();
    q.extend_from_slice(b"Q\0\0\0\x0eselect 42\0");
    live.write_all(&q).await.unwrap();
    let mut buf = BytesMut::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            live.read_buf(&mut buf).await.unwrap();
            if buf.windows(2).any(|w| w == b"42") {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the live session still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_gets_a_clear_message_not_a_disconnect() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("eve", PW, &["short"]);
    stack.login("eve", PW).await;
    let proxy = stack
        .proxy("eve", &["pg", "--db-user", "certuser", "--db-name", "app"])
        .await;
    stack.until_expired("eve").await;
    let (ok, _, err) = proxy.query("", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("postern: your Postern session expired"),
        "{err}"
    );

    // A fresh login is picked up by the running tunnel, on the same port.
    stack.login("eve", PW).await;
    let (ok, out, err) = proxy.query("", "select 1").await;
    assert!(ok, "{err}");
    assert_eq!(out, "1");
}
