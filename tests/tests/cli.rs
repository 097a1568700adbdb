//! The `postern` CLI's session and catalog commands against a real gateway.

use postern_tests::stack::{DEFAULT_ROLES, Stack};
use tokio::io::AsyncWriteExt;

use postern_tests::stack::PASSWORD as PW;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_status_catalog_and_logout() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);

    let out = stack.run("alice", &["status"], "").await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("you are not logged in"),
        "{}",
        text(&out.stderr)
    );

    // A wrong password is a plain sentence, and leaves no session behind.
    let addr = stack.gateway_addr();
    let pin = stack.gateway.ca_pin.clone();
    let login = [
        "login",
        addr.as_str(),
        "--user",
        "alice",
        "--password-stdin",
        "--ca-pin",
        pin.as_str(),
    ];
    let out = stack.run("alice", &login, "wrong password\n").await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid username, password or one-time code"),
        "{}",
        text(&out.stderr)
    );

    stack.login("alice", PW).await;
    let out = stack.run("alice", &["status"], "").await;
    let status = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        status.contains("User:     alice") && status.contains("Roles:    dev"),
        "{status}"
    );
    assert!(status.contains(&pin), "{status}");

    let out = stack.run("alice", &["db", "ls", "-v"], "").await;
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        listing.contains("pg") && listing.contains("Test PostgreSQL"),
        "{listing}"
    );
    assert!(
        listing.contains("[certuser, md5user, scramuser]"),
        "{listing}"
    );
    assert!(listing.contains("[analytics, app]"), "{listing}");
    assert!(
        !listing.contains("pg-prod"),
        "dev may not see prod: {listing}"
    );

    let out = stack
        .run("alice", &["db", "ls", "--format", "json"], "")
        .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json catalog");
    assert_eq!(json[0]["name"], "pg");
    assert_eq!(json[0]["db_users"]["allowed"][0], "certuser");
    assert_eq!(json[0]["auto_user_mode"], "off");

    let out = stack.run("alice", &["logout"], "").await;
    assert!(out.status.success());
    let out = stack.run("alice", &["db", "ls"], "").await;
    assert!(
        text(&out.stderr).contains("you are not logged in"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_ca_is_pinned() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    let addr = stack.gateway_addr();

    // First contact without a pin and without a terminal to ask: refused,
    // with the fingerprint to check and pass.
    let out = stack
        .run(
            "alice",
            &["login", &addr, "--user", "alice", "--password-stdin"],
            &format!("{PW}\n"),
        )
        .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("--ca-pin {}", stack.gateway.ca_pin)),
        "{err}"
    );

    // A pin that does not match the gateway's CA: a loud warning.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = stack
        .run(
            "alice",
            &[
                "login",
                &addr,
                "--user",
                "alice",
                "--password-stdin",
                "--ca-pin",
                &wrong,
            ],
            &format!("{PW}\n"),
        )
        .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("WARNING") && err.contains(&stack.gateway.ca_pin),
        "{err}"
    );

    // Once pinned, later logins need no pin.
    stack.login("alice", PW).await;
    let out = stack
        .run(
            "alice",
            &["login", &addr, "--user", "alice", "--password-stdin"],
            &format!("{PW}\n"),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_with_one_time_codes() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    // The administrator's side: `users add --totp` prints the URI for the
    // authenticator app.
    let mut admin = tokio::process::Command::new(postern_tests::stack::bin("postern-gateway"))
        .arg("--config")
        .arg(stack.config_path())
        .args([
            "users",
            "add",
            "bob",
            "--roles",
            "dev",
            "--totp",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run postern-gateway users add");
    let mut stdin = admin.stdin.take().unwrap();
    stdin.write_all(format!("{PW}\n").as_bytes()).await.unwrap();
    drop(stdin);
    let out = admin.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let uri = printed
        .lines()
        .find(|l| l.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth URI: {printed}"));
    let app = totp_rs::Totp::from_url(uri).expect("an authenticator app reads the URI");

    let addr = stack.gateway_addr();
    let pin = stack.gateway.ca_pin.clone();
    let login = |code: Option<String>| {
        let mut args: Vec<String> = [
            "login",
            &addr,
            "--user",
            "bob",
            "--password-stdin",
            "--ca-pin",
            &pin,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(code) = code {
            args.extend(["--totp".into(), code]);
        }
        args
    };
    let stack = &stack;
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stack.run("bob", &args, &format!("{PW}\n")).await
    };

    // No code: refused like a wrong password, so a guesser cannot tell that
    // the password was right; the person gives the code up front.
    let out = run(login(None)).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid username, password or one-time code"),
        "{}",
        text(&out.stderr)
    );

    // A wrong code.
    let code = app.generate_current().to_string();
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    let out = run(login(Some(wrong))).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid username, password or one-time code"),
        "{}",
        text(&out.stderr)
    );

    // The right one, once.
    let out = run(login(Some(code.clone()))).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stack.run("bob", &["status"], "").await;
    assert!(
        text(&out.stdout).contains("User:     bob"),
        "{}",
        text(&out.stdout)
    );
    let out = run(login(Some(code))).await;
    assert!(!out.status.success(), "a code works once");

    // A wrong password with a right code reveals nothing about the code.
    let out = stack
        .run(
            "bob",
            &[
                "login",
                &addr,
                "--user",
                "bob",
                "--password-stdin",
                "--ca-pin",
                &pin,
                "--totp",
                "123456",
            ],
            "not the password\n",
        )
        .await;
    assert!(text(&out.stderr).contains("invalid username, password or one-time code"));

    // Users without a secret are not asked for codes.
    stack.add_user("carol", PW, &["dev"]);
    stack.login("carol", PW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_program_writes_a_ready_file_the_cli_logs_in_with() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    use postern_gateway::cmd::ReadyFile;
    use postern_tests::eventually;

    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    // A second gateway, the program this time, on the stack's configuration
    // (its own port: `listen: 127.0.0.1:0`; the same store and CAs).
    let dir = tempfile::tempdir().unwrap();
    let ready_path = dir.path().join("ready.json");
    let mut gateway = tokio::process::Command::new(postern_tests::stack::bin("postern-gateway"))
        .arg("--config")
        .arg(stack.config_path())
        .args(["start", "--ready-file"])
        .arg(&ready_path)
        .env_remove("POSTERN_GATEWAY_CONFIG")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run postern-gateway start");

    let ready = eventually(Duration::from_secs(30), async || {
        ReadyFile::read(&ready_path)
    })
    .await
    .unwrap_or_else(|e| panic!("no ready file: {e}"));
    assert_eq!(ready.ca_pin, stack.gateway.ca_pin, "the gateway's CA pin");
    assert_ne!(ready.address, stack.gateway_addr(), "its own port");
    let mode = std::fs::metadata(&ready_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");

    // What the file says is all `postern login` needs.
    let login = [
        "login",
        ready.address.as_str(),
        "--user",
        "alice",
        "--password-stdin",
        "--ca-pin",
        ready.ca_pin.as_str(),
    ];
    let out = stack.run("alice", &login, &format!("{PW}\n")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Stopped, it takes its ready file away: a stale one never passes for
    // the next start.
    let pid = rustix::process::Pid::from_raw(gateway.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), gateway.wait())
        .await
        .expect("the gateway stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!ready_path.exists(), "the ready file is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_listed_and_exported_from_the_store() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let (ok, _, err) = proxy.query("", "SELECT 'audited statement'").await;
    assert!(ok, "{err}");
    drop(proxy);
    stack
        .wait_audit("session_end", |e| e["user"] == "alice")
        .await;

    // The human table: oldest first, one event a line.
    let (ok, table, err) = stack
        .gateway_cli(&["audit", "ls", "--since", "1h", "--user", "alice"])
        .await;
    println!("audit ls --since 1h --user alice:\n{table}");
    assert!(ok, "{err}");
    let kinds: Vec<&str> = table
        .lines()
        .map(|l| l.split('\t').nth(2).unwrap_or_default())
        .collect();
    let at = |kind| kinds.iter().position(|k| *k == kind);
    assert!(
        at("login") < at("session_start") && at("session_start") < at("session_end"),
        "{kinds:?}"
    );
    assert!(table.contains("audited statement"), "{table}");
    let (ok, last, _) = stack
        .gateway_cli(&["audit", "ls", "--kind", "session_end", "--limit", "1"])
        .await;
    assert!(ok);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.contains("\tsession_end\talice\t"), "{last}");

    // The export: JSON lines, oldest first, the session's start and end
    // under one number, each naming the replica that recorded it.
    let (ok, lines, err) = stack
        .gateway_cli(&["audit", "export", "--since", "1h"])
        .await;
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["time_ms"].as_i64().unwrap())
        .collect();
    assert!(times.is_sorted(), "oldest first: {times:?}");
    let find = |kind: &str| {
        events
            .iter()
            .find(|e| e["event"] == kind && e["user"] == "alice")
            .unwrap_or_else(|| panic!("no {kind} in {lines}"))
    };
    let (start, end) = (find("session_start"), find("session_end"));
    assert_eq!(start["session"], end["session"]);
    assert!(
        start["replica"].as_str().is_some_and(|r| !r.is_empty()),
        "{start}"
    );
    assert_eq!(start["replica"], end["replica"]);

    // Nothing is newer than now; a bad time is explained.
    let (ok, none, _) = stack
        .gateway_cli(&["audit", "export", "--since", "2999-01-01T00:00:00Z"])
        .await;
    assert!(ok && none.is_empty(), "{none}");
    let (ok, _, err) = stack
        .gateway_cli(&["audit", "ls", "--since", "yesterday"])
        .await;
    assert!(!ok);
    assert!(err.contains("neither a duration"), "{err}");
}
