//! Reloading the roles and databases (SIGHUP) of a running gateway
//! program: live sessions keep theirs, new ones get the new policy, and a
//! file with a mistake changes nothing.

use std::time::Duration;

use postern_tests::eventually;
use postern_tests::gateway_process::GatewayProcess;
use postern_tests::stack::{PASSWORD as PW, Stack, connect};

/// `ann` may use the `env: dev` database `pg`.
const DEV: &str = r#"
kind: role
version: v7
metadata: { name: team }
spec:
  allow:
    db_labels: { env: dev }
    db_names: [app]
    db_users: [certuser]
"#;

/// The same role, moved to the `env: prod` database `pg-prod`.
const PROD: &str = r#"
kind: role
version: v7
metadata: { name: team }
spec:
  allow:
    db_labels: { env: prod }
    db_names: [app]
    db_users: [certuser]
"#;

/// Sends SIGHUP and waits for the gateway to log the outcome (`what`) one
/// more time than before.
async fn reload(gateway: &GatewayProcess, what: &str) {
    let before = gateway.log().matches(what).count();
    gateway.reload();
    eventually(Duration::from_secs(20), async || {
        if gateway.log().matches(what).count() > before {
            Ok(())
        } else {
            Err(format!("no new {what:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gateway.log()));
}

/// The databases `postern db ls` shows `who`.
async fn databases(stack: &Stack, gateway: &GatewayProcess, who: &str) -> String {
    let out = gateway.clients_of(stack).run(who, &["db", "ls"], "").await;
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_new_roles_in_force_for_new_sessions_and_keeps_live_ones() {
    let stack = Stack::start(DEV).await;
    let gateway = GatewayProcess::of_stack(&stack).await;
    stack.add_user("ann", PW, &["team"]);
    gateway.clients_of(&stack).login("ann", PW).await;
    let proxy = stack.proxy("ann", &["pg", "--db-user", "certuser"]).await;
    let live = connect(proxy.port, "certuser", "app").await;
    let before = databases(&stack, &gateway, "ann").await;
    assert!(
        before.contains("pg ") && !before.contains("pg-prod"),
        "{before}"
    );

    let roles = stack.config_path().with_file_name("roles.yaml");
    std::fs::write(&roles, PROD).unwrap();
    reload(&gateway, "roles and databases reloaded").await;

    // The live session keeps the policy it was authorized under.
    let row = live.query_one("select current_user::text", &[]).await;
    assert_eq!(row.unwrap().get::<_, String>(0), "certuser");
    // New ones get the new policy: pg is gone from ann's list and refused.
    let after = databases(&stack, &gateway, "ann").await;
    println!("db ls before the reload:\n{before}\nafter:\n{after}");
    assert!(
        after.contains("pg-prod") && !after.contains("pg "),
        "{after}"
    );
    let refused = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(proxy.port)
        .user("certuser")
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a new session on pg is refused");
    let refused = refused.as_db_error().expect("an ErrorResponse").message();
    println!("a new session after the reload: {refused}");
    assert!(refused.contains("\"pg\""), "{refused}");

    // A file with a mistake changes nothing, and says why.
    std::fs::write(
        &roles,
        "kind: role\nversion: v7\nmetadata: {name: team}\nspec: {allow: {db_labels: [oops]}}\n",
    )
    .unwrap();
    reload(&gateway, "reload refused").await;
    let log = gateway.log();
    let refusal = log.lines().rfind(|l| l.contains("reload refused")).unwrap();
    println!("a reload with a mistake: {refusal}");
    assert!(refusal.contains("roles.yaml"), "{refusal}");
    assert_eq!(databases(&stack, &gateway, "ann").await, after);
    let row = live.query_one("select 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    // The audit, written in batches, says who changed what.
    let reloaded = eventually(Duration::from_secs(10), async || {
        let audit: Vec<serde_json::Value> = stack.gateway.store.recent_audit(100).unwrap();
        audit
            .into_iter()
            .find(|e| e["event"] == "policy_reloaded")
            .ok_or("no policy_reloaded event")
    })
    .await
    .unwrap();
    assert_eq!(reloaded["roles"], 1);
    assert_eq!(reloaded["databases"], 2);
}
