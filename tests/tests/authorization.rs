//! Nothing reaches more than the roles allow, whatever a client with a
//! valid certificate sends: hand-written route frames against the real
//! gateway and PostgreSQL 15.

use postern_tests::raw::RawClient;
use postern_tests::stack::Stack;
use serde_json::json;

/// A person with role `dev` (db users certuser/scramuser/md5user, db names
/// app and analytics on the `env: dev` database `pg`) and their raw client.
async fn alice() -> (Stack, RawClient) {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let raw = RawClient::of(&stack, "alice");
    (stack, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_startup_parameters_are_refused_and_audited() {
    let (stack, raw) = alice().await;
    let frame = |params| RawClient::session_frame("pg", "certuser", "app", params);

    // The honest request works, and lands where the roles allow.
    let mut session = raw
        .open(frame(json!({"application_name": "psql"})))
        .await
        .session();
    assert_eq!(
        session.query("select current_database()").await.unwrap(),
        ["app"]
    );

    // A NUL in a parameter name used to become a second `database`,
    // `user` or `replication` parameter upstream; other spellings of the
    // reserved names and protocol extensions must not pass either.
    for (key, value) in [
        ("database\u{0}", "postgres"),
        ("user\u{0}", "postgres"),
        ("replication\u{0}", "database"),
        ("database", "postgres"),
        ("Database", "postgres"),
        ("_pq_.smuggled", "1"),
        ("application_name", "psql\u{0}database\u{0}postgres"),
        ("options", "-c search_path=x\n"),
    ] {
        let refusal = raw.open(frame(json!({ key: value }))).await.refusal();
        assert_eq!(refusal.code, "08P01", "{key:?}: {}", refusal.message);
        assert_eq!(refusal.severity, "FATAL", "{key:?}");
        assert!(
            refusal.message.contains("control character")
                || refusal
                    .message
                    .contains("cannot be passed through the tunnel"),
            "{key:?}: {}",
            refusal.message
        );
    }

    // The same holds for the names the roles decide on.
    for (db_user, db_name) in [("certuser", "app\u{0}postgres"), ("certuser\u{0}x", "app")] {
        let refusal = raw
            .open(RawClient::session_frame("pg", db_user, db_name, json!({})))
            .await
            .refusal();
        assert_eq!(refusal.code, "08P01", "{db_user:?}/{db_name:?}");
        assert!(
            refusal.message.contains("control character"),
            "{}",
            refusal.message
        );
    }

    // Every refusal is audited with its reason.
    let rejected = stack
        .wait_audit("session_rejected", |e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("startup parameter \"database\\0\""))
        })
        .await;
    assert_eq!(rejected["user"], "alice");
    assert_eq!(rejected["database"], "pg");

    // The honest session was not disturbed.
    assert_eq!(session.query("select 42").await.unwrap(), ["42"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_and_unknown_databases_get_the_same_answer() {
    let (_stack, raw) = alice().await;
    let answer = |database: &'static str, db_user: &'static str| {
        let raw = &raw;
        async move {
            let refusal = raw
                .open(RawClient::session_frame(
                    database,
                    db_user,
                    "app",
                    json!({}),
                ))
                .await
                .refusal();
            (
                refusal.code,
                refusal.message.replace(database, "NAME"),
                refusal.hint,
            )
        }
    };
    // `pg-prod` exists on the same server; no role of alice's selects it.
    let unknown = answer("no-such-database", "certuser").await;
    assert_eq!(answer("pg-prod", "certuser").await, unknown);
    assert_eq!(answer("pg-prod", "postgres").await, unknown);
    assert!(
        unknown
            .1
            .contains("database \"NAME\" does not exist or your roles do not allow it"),
        "{unknown:?}"
    );

    // On a database alice may see, a denial names what was denied.
    let denied = answer("pg", "postgres").await;
    assert!(denied.1.contains("\"postgres\""), "{denied:?}");
}
