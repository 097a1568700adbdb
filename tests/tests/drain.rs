//! Stopping a gateway (DESIGN.md §9, lifecycle): the real program gets
//! SIGTERM while psql runs statements through `postern proxy` on a real
//! PostgreSQL 15, with automatically created database users.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postern_tests::eventually;
use postern_tests::gateway_process::GatewayProcess;
use postern_tests::pg::PgServer;
use postern_tests::stack::{PASSWORD as PW, Stack, StackConfig};

/// `kim` gets a `keep` user, `dan` a `best_effort_drop` one.
const ROLES: &str = r#"
kind: role
version: v7
metadata: { name: auto-keep }
spec:
  options: { create_db_user_mode: keep }
  allow:
    db_labels: { env: dev }
    db_names: [app]
    db_roles: [reader]
---
kind: role
version: v7
metadata: { name: auto-drop }
spec:
  options: { create_db_user_mode: best_effort_drop }
  allow:
    db_labels: { env: dev }
    db_names: [app]
    db_roles: [reader]
"#;

const GRACE: Duration = Duration::from_secs(2);
const RESTARTING: &str = "FATAL:  postern: the gateway is restarting; reconnect";

/// Whether the database user `name` may log in; `None`: it does not exist.
async fn can_login(pg: &PgServer, name: &str) -> Option<bool> {
    pg.admin("postgres")
        .await
        .query_opt(
            "select rolcanlogin from pg_roles where rolname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// Waits until each of `users` runs `pg_sleep` on the database.
async fn sleeping(pg: &PgServer, users: &[&str]) {
    let admin = pg.admin("postgres").await;
    eventually(Duration::from_secs(20), async || {
        let rows = admin
            .query(
                "select usename::text from pg_stat_activity \
                 where state = 'active' and query like 'select pg_sleep%' order by 1",
                &[],
            )
            .await
            .unwrap();
        let now: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if now == users {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the statements never ran: {e}"));
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_with_57p01_audits_them_and_ends_their_database_users() {
    let stack = Stack::start_with(
        ROLES,
        StackConfig {
            pg_extra: "admin_user: { name: postern_admin }",
            gateway_extra: "limits: { drain_grace: 2s }",
            ..StackConfig::default()
        },
    )
    .await;
    let mut gateway = GatewayProcess::of_stack(&stack).await;
    let users = ["dan", "kim"];
    let mut sessions = Vec::new();
    for (who, role) in [("dan", "auto-drop"), ("kim", "auto-keep")] {
        stack.add_user(who, PW, &[role]);
        gateway.clients_of(&stack).login(who, PW).await;
        let proxy = stack.proxy(who, &["pg", "--db-name", "app"]).await;
        let mut psql = proxy.psql("dbname=app");
        psql.args(["-c", "select pg_sleep(60)"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let psql = psql.spawn().expect("run psql");
        sessions.push((proxy, psql));
    }
    sleeping(&stack.pg, &users).await;
    for who in users {
        assert_eq!(can_login(&stack.pg, who).await, Some(true), "{who}");
    }

    let sigterm = SystemTime::now();
    let started = Instant::now();
    gateway.terminate();
    let mut psql_ended = Vec::new();
    for (_proxy, psql) in sessions {
        let out = tokio::time::timeout(Duration::from_secs(30), psql.wait_with_output())
            .await
            .expect("psql ends")
            .unwrap();
        psql_ended.push((started.elapsed(), out));
    }
    let status = gateway.exited(GRACE + Duration::from_secs(15)).await;
    let exited = started.elapsed();
    let log = gateway.log();

    // Nobody is left able to log in: kim's user is locked, dan's dropped.
    let left = [
        can_login(&stack.pg, "dan").await,
        can_login(&stack.pg, "kim").await,
    ];
    assert_eq!(
        left,
        [None, Some(false)],
        "dan's and kim's database users after the drain (Some(true): left enabled)"
    );
    assert!(status.success(), "{status}: {log}");
    for (who, (ended, out)) in users.iter().zip(&psql_ended) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{who}");
        assert!(err.contains(RESTARTING), "{who}: {err}");
        assert!(
            *ended >= GRACE,
            "the sessions had their grace period: {ended:?}"
        );
    }

    // The exited gateway stored what it audited.
    let audit: Vec<serde_json::Value> = stack.gateway.store.recent_audit(1000).unwrap();
    let of = |event: &str, who: &str| {
        audit
            .iter()
            .find(|e| e["event"] == event && e["user"] == who)
            .unwrap_or_else(|| panic!("no {event} of {who}: {audit:?}"))
            .clone()
    };
    let since = |e: &serde_json::Value| e["time_ms"].as_i64().unwrap() - unix_ms(sigterm);
    eprintln!("drain timeline, ms after SIGTERM (grace {GRACE:?}):");
    for who in users {
        let start = of("session_start", who);
        let end = of("session_end", who);
        assert_eq!(end["session"], start["session"]);
        assert_eq!(
            end["reason"],
            "postern: the gateway is restarting; reconnect"
        );
        let deactivated = of("user_deactivated", who);
        eprintln!(
            "  {who}: session_end {}, user_deactivated ({}) {}",
            since(&end),
            deactivated["action"],
            since(&deactivated)
        );
    }
    let psql_ended: Vec<_> = psql_ended.iter().map(|(at, _)| at).collect();
    eprintln!("  psql saw 57P01 at {psql_ended:?}; gateway exited 0 at {exited:?}");
    eprintln!("gateway log:\n{log}");
    assert_eq!(of("user_deactivated", "kim")["action"], "locked");
    assert_eq!(of("user_deactivated", "dan")["action"], "dropped");
    assert!(log.contains("draining"), "{log}");
}
