//! The `postern` CLI's session and catalog commands against a real gateway.

use postern_tests::stack::{DEFAULT_ROLES, Stack};

const PW: &str = "correct horse battery";

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
        text(&out.stderr).contains("invalid username or password"),
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
