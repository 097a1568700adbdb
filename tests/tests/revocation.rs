//! Access ends when it should: at the certificate's expiry (even over a
//! resumed TLS session), when an administrator locks a person, and — with
//! `disconnect_expired_cert` — for sessions that are already running.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_client::home::Home;
use postern_tests::raw::RawClient;
use postern_tests::stack::{PASSWORD, Stack};
use serde_json::json;

/// `brief` sessions last 3 s; `strict` ones too, and end at expiry.
const ROLES: &str = r#"
kind: role
version: v7
metadata: { name: dev }
spec:
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
---
kind: role
version: v7
metadata: { name: brief }
spec:
  options: { max_session_ttl: 3s }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
---
kind: role
version: v7
metadata: { name: strict }
spec:
  options: { max_session_ttl: 3s, disconnect_expired_cert: true }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
"#;

const EXPIRED: &str = "your Postern session expired; log in again";

fn frame() -> serde_json::Value {
    RawClient::session_frame("pg", "certuser", "app", json!({}))
}

async fn stack_with(users: &[(&str, &str)]) -> Stack {
    let stack = Stack::start(ROLES).await;
    for (user, role) in users {
        stack.add_user(user, PASSWORD, &[role]);
        stack.login(user, PASSWORD).await;
    }
    stack
}

/// Sleeps until `who`'s certificate has expired: the expiry is the event.
async fn until_expired(stack: &Stack, who: &str) {
    let profile = Home::at(stack.home(who)).resolve(None).unwrap();
    let expires = UNIX_EPOCH + Duration::from_secs(profile.identity.unwrap().expires_unix as u64);
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_tls_session_does_not_outlive_its_certificate() {
    let stack = stack_with(&[("eve", "brief")]).await;
    let raw = RawClient::of(&stack, "eve");
    // Full handshakes while the certificate is valid; the client keeps the
    // session tickets, as the real tunnel does.
    let mut before = raw.open(frame()).await.session();
    let (status, _, _) = raw.get("/v1/session").await;
    assert_eq!(status, 200);

    until_expired(&stack, "eve").await;

    let opened = raw.open(frame()).await;
    assert!(opened.resumed, "the exploit needs a resumed TLS session");
    let refusal = opened.refusal();
    assert!(refusal.message.contains(EXPIRED), "{}", refusal.message);
    assert_eq!(refusal.code, "28000");

    let (status, body, resumed) = raw.get("/v1/databases").await;
    assert!(resumed, "the exploit needs a resumed TLS session");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("session_expired"), "{body}");

    // Without disconnect_expired_cert (the default), a session that began
    // in time runs on.
    assert_eq!(before.query("select 1").await.unwrap(), ["1"]);
    stack
        .wait_audit("session_rejected", |e| {
            e["user"] == "eve" && e["reason"].as_str().unwrap_or("").contains(EXPIRED)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_expired_cert_ends_a_running_session_at_expiry() {
    let stack = stack_with(&[("sam", "strict")]).await;
    let mut session = RawClient::of(&stack, "sam").open(frame()).await.session();
    session.send_query("select pg_sleep(60) /* sam */").await;
    stack
        .pg
        .wait_activity("select pg_sleep(60) /* sam */%", true)
        .await;

    let (error, _) = session.ended(Duration::from_secs(10)).await;
    assert_eq!(error.severity, "FATAL");
    assert!(error.message.contains(EXPIRED), "{}", error.message);
    // The statement stopped on the server too.
    stack
        .pg
        .wait_activity("select pg_sleep(60) /* sam */%", false)
        .await;
    stack
        .wait_audit("session_end", |e| {
            e["user"] == "sam" && e["reason"].as_str().unwrap_or("").contains("expired")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_ends_live_sessions_at_once_and_refuses_new_ones_until_removed() {
    let stack = stack_with(&[("alice", "dev"), ("bob", "dev")]).await;
    let alice = RawClient::of(&stack, "alice");
    let mut running = alice.open(frame()).await.session();
    running.send_query("select pg_sleep(60) /* alice */").await;
    let mut bobs = RawClient::of(&stack, "bob").open(frame()).await.session();
    stack
        .pg
        .wait_activity("select pg_sleep(60) /* alice */%", true)
        .await;

    let (ok, out, err) = stack
        .gateway_cli(&[
            "locks",
            "add",
            "--user",
            "alice",
            "--message",
            "incident 42",
        ])
        .await;
    assert!(ok, "{err}");
    let lock_id = out
        .split_whitespace()
        .find(|w| w.starts_with("lock-"))
        .unwrap_or_else(|| panic!("no lock id in {out:?}"))
        .trim_end_matches(':')
        .to_owned();

    // The running statement ends within seconds, with the reason.
    let (error, took) = running.ended(Duration::from_secs(5)).await;
    assert_eq!(
        (error.severity.as_str(), error.code.as_str()),
        ("FATAL", "57P01")
    );
    assert!(
        error
            .message
            .contains("access was locked by an administrator")
            && error.message.contains("incident 42"),
        "{}",
        error.message
    );
    assert!(took < Duration::from_secs(5));
    stack
        .pg
        .wait_activity("select pg_sleep(60) /* alice */%", false)
        .await;

    // New connections and API calls are refused; the CLI says why.
    let refusal = alice.open(frame()).await.refusal();
    assert!(
        refusal.message.contains("incident 42"),
        "{}",
        refusal.message
    );
    let (status, body, _) = alice.get("/v1/databases").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("locked"), "{body}");
    let out = stack.run("alice", &["db", "ls"], "").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by an administrator"), "{stderr}");

    // Nobody else is affected.
    assert_eq!(bobs.query("select 1").await.unwrap(), ["1"]);

    let (ok, listed, _) = stack.gateway_cli(&["locks", "ls"]).await;
    assert!(ok);
    assert!(
        listed.contains(&lock_id) && listed.contains("alice") && listed.contains("incident 42"),
        "{listed}"
    );
    stack
        .wait_audit("lock_added", |e| e["user"] == "alice")
        .await;
    stack
        .wait_audit("session_end", |e| {
            e["user"] == "alice" && e["reason"].as_str().unwrap_or("").contains("locked")
        })
        .await;

    let (ok, _, err) = stack.gateway_cli(&["locks", "rm", &lock_id]).await;
    assert!(ok, "{err}");
    let mut again = alice.open(frame()).await.session();
    assert_eq!(again.query("select 1").await.unwrap(), ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_ends_their_sessions_and_certificates() {
    let stack = stack_with(&[("bob", "dev")]).await;
    let bob = RawClient::of(&stack, "bob");
    let mut session = bob.open(frame()).await.session();
    assert_eq!(session.query("select 1").await.unwrap(), ["1"]);

    let (ok, _, err) = stack.gateway_cli(&["users", "rm", "bob"]).await;
    assert!(ok, "{err}");
    let (error, _) = session.ended(Duration::from_secs(5)).await;
    assert!(
        error.message.contains("locked by an administrator"),
        "{}",
        error.message
    );
    let refusal = bob.open(frame()).await.refusal();
    assert!(refusal.message.contains("locked"), "{}", refusal.message);
}
