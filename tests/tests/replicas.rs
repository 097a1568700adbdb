//! Two gateway replicas on one shared PostgreSQL store behind HAProxy
//! (tests/src/replicas.rs): what one replica does, the other sees, and
//! nothing is lost between them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use postern_tests::eventually;
use postern_tests::idp::{Account, Browser, Consent, IdpPlan, visit};
use postern_tests::replicas::Replicas;
use postern_tests::stack::{DEFAULT_ROLES, PASSWORD, StackConfig, connect, output};
use serde_json::json;
use tokio_postgres::NoTls;

/// The `dev` role of DEFAULT_ROLES, and a role whose database users are
/// made per person and dropped after their last session.
fn roles() -> String {
    format!(
        r#"{DEFAULT_ROLES}
---
kind: role
version: v7
metadata: {{ name: auto-drop }}
spec:
  options: {{ create_db_user_mode: best_effort_drop }}
  allow:
    db_labels: {{ env: dev }}
    db_names: [app]
    db_roles: [reader]
"#
    )
}

async fn replicas() -> Replicas {
    Replicas::start(
        &roles(),
        2,
        StackConfig {
            pg_extra: "admin_user: { name: postern_admin }",
            ..StackConfig::default()
        },
    )
    .await
}

/// The audit events of `kind` for `user` in the store.
fn audit_events(replicas: &Replicas, kind: &str, user: &str) -> Vec<serde_json::Value> {
    replicas
        .store
        .recent_audit(10_000)
        .expect("read the audit")
        .into_iter()
        .filter(|e| e["event"] == kind && e["user"] == user)
        .collect()
}

/// Waits until the store holds `count` audit events of `kind` for `user`
/// (the audit is written in batches), and returns them.
async fn wait_events(
    replicas: &Replicas,
    kind: &str,
    user: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(20), async || {
        let events = audit_events(replicas, kind, user);
        if events.len() == count {
            Ok(events)
        } else {
            Err(format!("{} {kind} events: {events:?}", events.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_added_through_one_replica_ends_a_session_on_the_other_within_5_seconds() {
    let replicas = replicas().await;
    replicas.add_user("alice", PASSWORD, &["dev"]);
    let on_b = replicas.clients_of(1);
    on_b.login("alice", PASSWORD).await;
    let proxy = on_b
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let mut psql = proxy.psql("user=certuser dbname=app");
    psql.args(["-c", "select pg_sleep(60) /* on b */"]);
    let running = tokio::spawn(output(psql));
    replicas
        .pg()
        .wait_activity("select pg_sleep(60) /* on b */%", true)
        .await;

    let (ok, _, err) = replicas
        .gateway_cli(
            0,
            &["locks", "add", "--user", "alice", "--message", "incident 9"],
        )
        .await;
    assert!(ok, "{err}");
    let locked = Instant::now();
    let (ok, _, err) = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the session on b ended within 5 s of the lock added through a")
        .unwrap();
    println!(
        "lock added through a; the session on b ended after {:?}: {err}",
        locked.elapsed()
    );
    assert!(!ok);
    assert!(
        err.contains("locked by an administrator") && err.contains("incident 9"),
        "{err}"
    );
    replicas
        .wait_audit("session_end", |e| {
            e["user"] == "alice" && e["reason"].as_str().unwrap_or("").contains("incident 9")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_provisioning_one_user_at_once_take_turns_and_drop_it_once() {
    let replicas = replicas().await;
    replicas.add_user("bob", PASSWORD, &["auto-drop"]);
    let (a, b) = (replicas.clients_of(0), replicas.clients_of(1));
    a.login("bob", PASSWORD).await;
    b.login("bob", PASSWORD).await;
    let via_a = a.proxy("bob", &["pg", "--db-name", "app"]).await;
    let via_b = b.proxy("bob", &["pg", "--db-name", "app"]).await;

    // Both replicas create the same database user at the same moment; the
    // lease in the store makes them take turns, so both sessions work.
    let (on_a, on_b) = tokio::join!(
        connect(via_a.port, "bob", "app"),
        connect(via_b.port, "bob", "app")
    );
    for client in [&on_a, &on_b] {
        let row = client.query_one("select count(*) from items", &[]).await;
        assert_eq!(row.expect("reader may read items").get::<_, i64>(0), 3);
    }
    wait_events(&replicas, "user_provisioned", "bob", 2).await;

    // The user outlives a's session while b's still runs ...
    drop(on_a);
    replicas
        .wait_audit("session_end", |e| e["user"] == "bob")
        .await;
    let row = on_b.query_one("select current_user", &[]).await;
    assert_eq!(row.expect("b's session goes on").get::<_, String>(0), "bob");

    // ... and is dropped once, after the last session on either replica.
    drop(on_b);
    let admin = replicas.pg().admin("postgres").await;
    eventually(Duration::from_secs(20), async || {
        let left: i64 = admin
            .query_one("select count(*) from pg_roles where rolname = 'bob'", &[])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            Ok(())
        } else {
            Err("bob still exists")
        }
    })
    .await
    .expect("the database user is dropped after its last session");
    let deactivated = wait_events(&replicas, "user_deactivated", "bob", 1).await;
    assert_eq!(deactivated[0]["action"], "dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_audit_has_every_sessions_start_and_end_across_replicas() {
    let replicas = replicas().await;
    replicas.add_user("carol", PASSWORD, &["dev"]);
    let people = replicas.clients();
    people.login("carol", PASSWORD).await;
    let proxy = people
        .proxy(
            "carol",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    const SESSIONS: usize = 6;
    for i in 0..SESSIONS {
        let (ok, out, err) = proxy
            .query("user=certuser dbname=app", &format!("select {i}"))
            .await;
        assert!(ok && out == i.to_string(), "{out} {err}");
    }
    let ends = wait_events(&replicas, "session_end", "carol", SESSIONS).await;
    let starts = audit_events(&replicas, "session_start", "carol");
    // A session is named by its replica and its number there.
    let key = |e: &serde_json::Value| (e["replica"].to_string(), e["session"].to_string());
    let started: BTreeSet<_> = starts.iter().map(key).collect();
    let ended: BTreeSet<_> = ends.iter().map(key).collect();
    assert_eq!(
        started.len(),
        SESSIONS,
        "each session has its own name: {starts:?}"
    );
    assert_eq!(started, ended, "each start has its end");
    let served_by: BTreeSet<_> = starts.iter().map(|e| e["replica"].to_string()).collect();
    assert_eq!(
        served_by.len(),
        2,
        "HAProxy spread the sessions: {served_by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sign_on_started_on_one_replica_is_finished_on_the_other() {
    let plan = IdpPlan::new();
    let connectors = plan.connector_yaml("corp", &["{ claim: groups, value: dba, roles: [dev] }"]);
    let replicas = Replicas::start(
        &roles(),
        2,
        StackConfig {
            gateway_extra: &connectors,
            ..StackConfig::default()
        },
    )
    .await;
    // The identity provider sends the browser back to the load balancer.
    let balancer = replicas.haproxy.port;
    let callback = format!("https://localhost:{balancer}/v1/login/sso/callback");
    let dana = Account {
        name: "dana",
        password: "dana's password",
        claims: json!({ "groups": ["dba"] }),
    };
    let idp = plan.start(&[callback], &[dana]).await;

    // The CLI starts (and later completes) its sign-in on a; the load
    // balancer sends the browser's return to b.
    let on_a = replicas.clients_of(0);
    let b_port = replicas.gateways[1].port();
    let browser = Browser::new(&idp, &replicas.gateway_ca_pem()).detouring(balancer, b_port);
    let (child, auth_url) = on_a.start_sso_login("dana", &[]).await;
    let landing = browser
        .sign_in(&auth_url, "dana", "dana's password", Consent::Allow)
        .await
        .expect("b finishes the sign-in that a started");
    let (status, page) = visit(&landing).await;
    assert_eq!(status, 200, "{page}");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("postern login finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = on_a.run("dana", &["status"], "").await;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("User:     dana"), "{status}");
    assert!(status.contains("Roles:    dev"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_sign_in_started_and_polled_on_one_replica_is_approved_on_the_other() {
    let plan = IdpPlan::new();
    let connectors = plan.connector_yaml("corp", &["{ claim: groups, value: dba, roles: [dev] }"]);
    let replicas = Replicas::start(
        &roles(),
        2,
        StackConfig {
            gateway_extra: &format!("{connectors}sso: {{ device_poll_interval: 1s }}\n"),
            ..StackConfig::default()
        },
    )
    .await;
    let balancer = replicas.haproxy.port;
    let callback = format!("https://localhost:{balancer}/v1/login/sso/callback");
    let dana = Account {
        name: "dana",
        password: "dana's password",
        claims: json!({ "groups": ["dba"] }),
    };
    let idp = plan.start(&[callback], &[dana]).await;

    // The machine starts and polls on a; the person's browser, sent to the
    // load balancer, enters the code and approves on b.
    let on_a = replicas.clients_of(0);
    let b_port = replicas.gateways[1].port();
    let browser = Browser::new(&idp, &replicas.gateway_ca_pem()).detouring(balancer, b_port);
    let (child, prompt) = on_a.start_device_login("dana", &[]).await;
    assert!(
        prompt.verification_uri.contains(&format!(":{balancer}/")),
        "people are sent to the load balancer: {prompt:?}"
    );
    let page = browser
        .enter_device_code(
            &prompt.verification_uri,
            &prompt.user_code,
            "dana",
            "dana's password",
            Consent::Allow,
        )
        .await
        .expect("b shows the approval page");
    assert_eq!(
        page.element("hostname"),
        Some(prompt.hostname.clone()),
        "{}",
        page.body
    );
    let approved = browser.press(&page, "approve").await.unwrap();
    assert_eq!(approved.status, 200, "{}", approved.body);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("postern login --sso --device finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = on_a.run("dana", &["status"], "").await;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("User:     dana"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_sigterm_drains_while_new_connections_land_on_the_other() {
    let mut replicas = Replicas::start(
        &roles(),
        2,
        StackConfig {
            pg_extra: "admin_user: { name: postern_admin }",
            gateway_extra: "limits: { drain_grace: 2s }",
            ..StackConfig::default()
        },
    )
    .await;
    replicas.add_user("erin", PASSWORD, &["auto-drop"]);
    let people = replicas.clients();
    people.login("erin", PASSWORD).await;
    let proxy = people.proxy("erin", &["pg", "--db-name", "app"]).await;
    let mut psql = proxy.psql("user=erin dbname=app");
    psql.args(["-c", "select pg_sleep(60) /* draining */"]);
    let running = tokio::spawn(output(psql));
    replicas
        .pg()
        .wait_activity("select pg_sleep(60) /* draining */%", true)
        .await;
    let start = replicas
        .wait_audit("session_start", |e| e["user"] == "erin")
        .await;
    let serving = replicas
        .gateways
        .iter()
        .position(|g| start["replica"] == g.name.as_str())
        .unwrap_or_else(|| panic!("no replica named in {start}"));

    let sigterm = Instant::now();
    replicas.gateways[serving].terminate();
    // While it drains, new connections through the same tunnel go to the
    // other replica and work.
    for i in 0..3 {
        let (ok, out, err) = proxy
            .query("user=erin dbname=app", &format!("select {i}"))
            .await;
        assert!(
            ok && out == i.to_string(),
            "a new connection during the drain: {out} {err}"
        );
    }
    let during_grace = sigterm.elapsed();
    let (ok, _, err) = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the drained session ends")
        .unwrap();
    let ended = sigterm.elapsed();
    assert!(!ok);
    assert!(
        err.contains("the gateway is restarting; reconnect"),
        "{err}"
    );
    let status = replicas.gateways[serving]
        .exited(Duration::from_secs(30))
        .await;
    let exited = sigterm.elapsed();
    assert!(status.success(), "{status:?}");

    // Its end is audited with the reason, and nobody is left able to log
    // in as erin once her last session on either replica is over.
    let end = replicas
        .wait_audit("session_end", |e| {
            e["user"] == "erin" && e["reason"].as_str().unwrap_or("").contains("restarting")
        })
        .await;
    assert_eq!(end["replica"], start["replica"]);
    let admin = replicas.pg().admin("postgres").await;
    eventually(Duration::from_secs(20), async || {
        let enabled: i64 = admin
            .query_one(
                "select count(*) from pg_roles where rolname = 'erin' and rolcanlogin",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if enabled == 0 {
            Ok(())
        } else {
            Err("erin can still log in")
        }
    })
    .await
    .expect("no provisioned user is left enabled after the drain");
    println!(
        "drain through HAProxy: SIGTERM at 0; 3 new connections served by the other replica by {during_grace:?}; \
         the drained session's psql ended at {ended:?} with: {err}; the replica exited 0 at {exited:?}"
    );
}

// The client is tokio-postgres, which closes its cancel connection as soon
// as the request is written: on a busy machine the tunnel's owner check
// runs after that close, and the cancel must still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_lands_on_the_other_replica_stops_the_statement() {
    let replicas = replicas().await;
    replicas.add_user("fay", PASSWORD, &["dev"]);
    let people = replicas.clients();
    people.login("fay", PASSWORD).await;
    let proxy = people
        .proxy("fay", &["pg", "--db-user", "certuser", "--db-name", "app"])
        .await;
    let client = connect(proxy.port, "certuser", "app").await;
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move {
        client
            .query("select pg_sleep(60) /* cancel me */", &[])
            .await
            .map(drop)
    });
    replicas
        .pg()
        .wait_activity("select pg_sleep(60) /* cancel me */%", true)
        .await;
    let start = replicas
        .wait_audit("session_start", |e| e["user"] == "fay")
        .await;

    // HAProxy hands the tunnel's next connection, the CancelRequest, to
    // the other replica (round-robin); the store tells it where to go.
    token.cancel_query(NoTls).await.expect("send the cancel");
    let error = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the statement did not end after the cancel:\n{}",
                replicas.logs()
            )
        })
        .unwrap()
        .expect_err("the statement was cancelled");
    assert_eq!(
        error.as_db_error().map(|e| e.code().code()),
        Some("57014"),
        "{error}"
    );
    let cancel = replicas.wait_audit("cancel", |e| e["user"] == "fay").await;
    assert_eq!(cancel["forwarded"], true, "{cancel}");
    assert_ne!(
        cancel["replica"], start["replica"],
        "the cancel reached the replica that does not serve the session: {cancel} {start}"
    );
}
