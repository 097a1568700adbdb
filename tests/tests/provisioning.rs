//! Automatic database-user provisioning (DESIGN.md §6) on a real PostgreSQL
//! 15 through the real tunnel, with psql and tokio-postgres as the clients.

use std::time::Duration;

use postern_tests::eventually;
use postern_tests::pg::PgServer;
use postern_tests::stack::{DEFAULT_ROLES, Proxy, Stack, StackConfig, connect};

use postern_tests::stack::PASSWORD as PW;

/// Roles for each mode, besides the `dev` role (mode off) of DEFAULT_ROLES.
const AUTO_ROLES: &str = r#"
kind: role
version: v7
metadata: { name: auto-keep }
spec:
  options: { create_db_user_mode: keep }
  allow:
    db_labels: { env: dev }
    db_names: [app, analytics]
    db_roles: [reader, writer]
---
kind: role
version: v7
metadata: { name: auto-drop }
spec:
  options: { create_db_user_mode: best_effort_drop }
  allow:
    db_labels: { env: dev }
    db_names: [app, analytics]
    db_roles: [reader, writer]
---
kind: role
version: v7
metadata: { name: auto-tables }
spec:
  options: { create_db_user_mode: keep }
  allow:
    db_labels: { env: dev }
    db_names: [app]
    db_permissions:
      - match: { object_kind: table, schema: public }
        permissions: [SELECT]
---
kind: role
version: v7
metadata: { name: auto-rds }
spec:
  options: { create_db_user_mode: keep }
  allow:
    db_labels: { env: dev }
    db_names: [app]
    db_roles: [reader, rds_iam]
"#;

const GROUP: &str = "postern-auto-user";

/// A stack whose `pg` database provisions users as `postern_admin`, and the
/// given (user, Postern role) pairs logged in.
async fn stack_with(users: &[(&str, &str)]) -> Stack {
    let roles = format!("{AUTO_ROLES}\n---\n{DEFAULT_ROLES}");
    let stack = Stack::start_with(
        &roles,
        StackConfig {
            pg_extra: "admin_user: { name: postern_admin }",
            ..StackConfig::default()
        },
    )
    .await;
    for (user, role) in users {
        stack.add_user(user, PW, &[role]);
        stack.login(user, PW).await;
    }
    stack
}

/// Runs one psql command through the tunnel: (success, stdout, stderr).
async fn psql(proxy: &Proxy, dbname: &str, sql: &str) -> (bool, String, String) {
    let mut cmd = proxy.psql(&format!("dbname={dbname}"));
    cmd.args(["-c", sql]);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("psql finished in time")
        .expect("psql ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// The roles of the session's user, itself included, comma-separated.
const MY_ROLES: &str = "select string_agg(rolname, ',' order by rolname) from pg_roles \
                        where pg_has_role(current_user, oid, 'member')";

/// A database user as the superuser sees it.
#[derive(Debug, PartialEq, Eq)]
struct DbUser {
    login: bool,
    /// Roles it is a direct member of, sorted.
    member_of: Vec<String>,
}

async fn db_user(pg: &PgServer, name: &str) -> Option<DbUser> {
    let admin = pg.admin("postgres").await;
    let row = admin
        .query_opt(
            "select r.rolcanlogin, array(select g.rolname::text from pg_auth_members m \
             join pg_roles g on g.oid = m.roleid where m.member = r.oid order by 1) \
             from pg_roles r where r.rolname = $1",
            &[&name],
        )
        .await
        .unwrap();
    row.map(|r| DbUser {
        login: r.get(0),
        member_of: r.get(1),
    })
}

/// Waits until the database user matches `expected` (None: absent).
async fn wait_db_user(pg: &PgServer, name: &str, expected: Option<DbUser>) {
    eventually(Duration::from_secs(20), async || {
        let now = db_user(pg, name).await;
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("database user {name:?}, expected {expected:?}: {e}"));
}

fn locked() -> Option<DbUser> {
    Some(DbUser {
        login: false,
        member_of: vec![GROUP.to_owned()],
    })
}

async fn audit_count(stack: &Stack, kind: &str) -> usize {
    let events = stack.gateway.store.recent_audit(1000).unwrap();
    events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["event"] == kind)
        .count()
}

/// Waits until exactly `n` audit events of `kind` are stored.
async fn wait_audit_count(stack: &Stack, kind: &str, n: usize) {
    eventually(Duration::from_secs(20), async || {
        let count = audit_count(stack, kind).await;
        if count == n { Ok(()) } else { Err(count) }
    })
    .await
    .unwrap_or_else(|e| panic!("{kind} audit events, expected {n}: {e}"));
}

async fn superuser_sql(pg: &PgServer, db: &str, sql: &str) {
    pg.admin(db)
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// A tokio-postgres session through the tunnel, kept open until dropped.
async fn open_session(proxy: &Proxy, user: &str, db: &'static str) -> tokio_postgres::Client {
    connect(proxy.port, user, db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_logs_in_as_existing_users_and_creates_nobody() {
    let stack = stack_with(&[("alice", "dev")]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let (ok, out, err) = psql(&proxy, "app", "select current_user").await;
    assert!(ok, "{err}");
    assert_eq!(out, "certuser");
    assert_eq!(db_user(&stack.pg, "alice").await, None);
    assert_eq!(db_user(&stack.pg, GROUP).await, None);

    // Choosing db roles means nothing where nobody is provisioned: say so.
    let proxy = stack
        .proxy(
            "alice",
            &[
                "pg",
                "--db-user",
                "certuser",
                "--db-name",
                "analytics",
                "--db-roles",
                "reader",
            ],
        )
        .await;
    let (ok, _, err) = psql(&proxy, "analytics", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("does not create database users automatically"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_creates_the_user_with_its_roles_and_locks_it_after_the_session() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;

    // The catalog says so, with the roles one may choose from.
    let out = stack.run("alice", &["db", "ls", "-v"], "").await;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(listing.contains("auto-provisioned (keep)"), "{listing}");
    assert!(listing.contains("[reader, writer]"), "{listing}");
    assert!(listing.contains("[alice]"), "{listing}");

    // No --db-user: it is always the Postern username. No --db-roles: all.
    let proxy = stack.proxy("alice", &["pg", "--db-name", "app"]).await;
    let (ok, out, err) = psql(
        &proxy,
        "app",
        &format!("select current_user, count(*) from items; {MY_ROLES}"),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("alice|3\nalice,{GROUP},reader,writer"));
    let provisioned = stack.wait_audit("user_provisioned", |_| true).await;
    assert_eq!(provisioned["user"], "alice");
    assert_eq!(provisioned["database"], "pg");
    assert_eq!(
        provisioned["roles"],
        serde_json::json!(["reader", "writer"])
    );

    // After the session: still there, but locked and without its roles.
    wait_db_user(&stack.pg, "alice", locked()).await;
    let deactivated = stack.wait_audit("user_deactivated", |_| true).await;
    assert_eq!(deactivated["action"], "locked");

    // Next time it is re-enabled, now with just the chosen subset.
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-name", "analytics", "--db-roles", "reader"],
        )
        .await;
    let (ok, out, err) = psql(&proxy, "analytics", MY_ROLES).await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("alice,{GROUP},reader"));
    let (ok, _, err) = psql(
        &proxy,
        "analytics",
        "insert into items values (9, 'not allowed')",
    )
    .await;
    assert!(!ok, "reader may not write");
    assert!(err.contains("permission denied for table items"), "{err}");
    wait_db_user(&stack.pg, "alice", locked()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_drop_removes_the_user_after_the_session() {
    let stack = stack_with(&[("bob", "auto-drop")]).await;
    let proxy = stack
        .proxy("bob", &["pg", "--db-name", "app", "--db-roles", "writer"])
        .await;
    let (ok, out, err) = psql(
        &proxy,
        "app",
        &format!("update items set name = name where id = 1; {MY_ROLES}"),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("UPDATE 1\nbob,{GROUP},writer"));
    wait_db_user(&stack.pg, "bob", None).await;
    let deactivated = stack.wait_audit("user_deactivated", |_| true).await;
    assert_eq!(deactivated["user"], "bob");
    assert_eq!(deactivated["action"], "dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_outside_the_allowed_ones_is_refused_with_the_list() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-name", "app", "--db-roles", "reader,postgres"],
        )
        .await;
    let (ok, _, err) = psql(&proxy, "app", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("db role \"postgres\" is not allowed; allowed: [reader, writer]"),
        "{err}"
    );
    assert_eq!(
        db_user(&stack.pg, "alice").await,
        None,
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_permissions_grant_table_privileges_for_the_session() {
    let stack = stack_with(&[("dave", "auto-tables")]).await;
    let proxy = stack.proxy("dave", &["pg", "--db-name", "app"]).await;
    let (ok, out, err) = psql(
        &proxy,
        "app",
        &format!(
            "select has_table_privilege('public.items', 'SELECT'), \
                    has_table_privilege('public.items', 'INSERT'), count(*) from items; {MY_ROLES}"
        ),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("t|f|3\ndave,{GROUP}"));
    let provisioned = stack.wait_audit("user_provisioned", |_| true).await;
    assert_eq!(
        provisioned["permissions"],
        serde_json::json!(["SELECT ON public.items"])
    );

    wait_db_user(&stack.pg, "dave", locked()).await;
    let row = stack
        .pg
        .admin("app")
        .await
        .query_one(
            "select has_table_privilege('dave', 'public.items', 'SELECT')",
            &[],
        )
        .await
        .unwrap();
    assert!(
        !row.get::<_, bool>(0),
        "the grant is revoked after the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_keep_the_user_until_the_last_one_ends() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;
    let proxy = stack.proxy("alice", &["pg", "--db-name", "app"]).await;
    // Both start at once: their provisioning is serialized, both work.
    let (first, second) = tokio::join!(
        open_session(&proxy, "alice", "app"),
        open_session(&proxy, "alice", "app")
    );
    for client in [&first, &second] {
        let row = client
            .query_one("select count(*) from items", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 3);
    }
    wait_audit_count(&stack, "user_provisioned", 2).await;

    drop(first);
    stack.wait_audit("session_end", |_| true).await;
    // The gateway decides right after the end; give it that moment, then
    // the other session must still have its user and roles.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let row = second
            .query_one("select count(*) from items", &[])
            .await
            .expect("the remaining session keeps its roles");
        assert_eq!(row.get::<_, i64>(0), 3);
        assert!(db_user(&stack.pg, "alice").await.unwrap().login);
    }
    assert_eq!(audit_count(&stack, "user_deactivated").await, 0);

    drop(second);
    wait_db_user(&stack.pg, "alice", locked()).await;
    wait_audit_count(&stack, "user_deactivated", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sessions_of_several_users_at_once_all_work() {
    let users = ["u1", "u2", "u3", "u4"];
    let pairs: Vec<(&str, &str)> = users.iter().map(|u| (*u, "auto-drop")).collect();
    let stack = stack_with(&pairs).await;
    let mut proxies = Vec::new();
    for user in users {
        proxies.push(stack.proxy(user, &["pg", "--db-name", "app"]).await);
    }
    // All of them race to create the group role on first use.
    let tasks: Vec<_> = users
        .iter()
        .zip(&proxies)
        .map(|(user, proxy)| {
            let (port, user) = (proxy.port, user.to_string());
            tokio::spawn(async move { connect(port, &user, "app").await })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    for (user, client) in users.iter().zip(&clients) {
        let row = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), *user);
    }
    drop(clients);
    for user in users {
        wait_db_user(&stack.pg, user, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_roles_while_a_session_is_live_are_refused() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;
    let reading = stack
        .proxy("alice", &["pg", "--db-name", "app", "--db-roles", "reader"])
        .await;
    let session = open_session(&reading, "alice", "app").await;
    session.simple_query("select 1").await.unwrap();

    // Roles belong to the server, so another database does not help.
    let writing = stack
        .proxy(
            "alice",
            &["pg", "--db-name", "analytics", "--db-roles", "writer"],
        )
        .await;
    let (ok, _, err) = psql(&writing, "analytics", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains(
            "you already have sessions with roles [reader]; close them to switch to [writer]"
        ),
        "{err}"
    );
    // The live session was not disturbed.
    let (ok, out, err) = psql(&reading, "app", MY_ROLES).await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("alice,{GROUP},reader"));

    drop(session);
    wait_db_user(&stack.pg, "alice", locked()).await;
    let (ok, out, err) = psql(&writing, "analytics", MY_ROLES).await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("alice,{GROUP},writer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_owning_objects_is_locked_instead_of_dropped() {
    let stack = stack_with(&[("bob", "auto-drop")]).await;
    superuser_sql(&stack.pg, "app", "grant create on schema public to writer").await;
    let proxy = stack.proxy("bob", &["pg", "--db-name", "app"]).await;
    let (ok, _, err) = psql(&proxy, "app", "create table bob_notes (note text)").await;
    assert!(ok, "{err}");

    wait_db_user(&stack.pg, "bob", locked()).await;
    let deactivated = stack.wait_audit("user_deactivated", |_| true).await;
    assert_eq!(deactivated["action"], "kept_with_dependents");
    // The table is intact, and bob comes back to it next time.
    let (ok, out, err) = psql(
        &proxy,
        "app",
        "select tableowner from pg_tables where tablename = 'bob_notes'",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_unmanaged_user_is_never_altered() {
    let stack = stack_with(&[("carol", "auto-drop")]).await;
    superuser_sql(
        &stack.pg,
        "postgres",
        "create role carol login in role reader",
    )
    .await;
    let before = db_user(&stack.pg, "carol").await;

    let proxy = stack.proxy("carol", &["pg", "--db-name", "app"]).await;
    let (ok, _, err) = psql(&proxy, "app", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains(
            "database user \"carol\" already exists and is not managed by Postern (not a member of \"postern-auto-user\")"
        ),
        "{err}"
    );
    assert_eq!(db_user(&stack.pg, "carol").await, before);
    assert_eq!(
        before,
        Some(DbUser {
            login: true,
            member_of: vec!["reader".into()]
        })
    );
}

/// Connects as `user` and returns the tunnel's error text.
async fn refused(stack: &Stack, user: &str, args: &[&str]) -> String {
    let mut all = vec!["pg", "--db-name", "app"];
    all.extend_from_slice(args);
    let proxy = stack.proxy(user, &all).await;
    let (ok, out, err) = psql(&proxy, "app", "select current_user").await;
    assert!(!ok, "expected a refusal, got {out}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_connect_names_the_grant_for_admin_and_roles() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;
    superuser_sql(
        &stack.pg,
        "postgres",
        "revoke connect on database app from public, postern_admin",
    )
    .await;
    let err = refused(&stack, "alice", &[]).await;
    assert!(
        err.contains(
            "the provisioning admin \"postern_admin\" may not connect to database \"app\""
        ) && err.contains("GRANT CONNECT ON DATABASE app TO postern_admin"),
        "{err}"
    );

    // The admin may now, the provisioned user (through its roles) not yet.
    superuser_sql(
        &stack.pg,
        "postgres",
        "grant connect on database app to postern_admin",
    )
    .await;
    let err = refused(&stack, "alice", &["--db-roles", "reader"]).await;
    assert!(
        err.contains("database user \"alice\" may not connect to database \"app\"")
            && err.contains("GRANT CONNECT ON DATABASE app TO reader"),
        "{err}"
    );
    // The failed session left the user locked again.
    wait_db_user(&stack.pg, "alice", locked()).await;

    superuser_sql(
        &stack.pg,
        "postgres",
        "grant connect on database app to reader",
    )
    .await;
    let proxy = stack
        .proxy("alice", &["pg", "--db-name", "app", "--db-roles", "reader"])
        .await;
    let (ok, out, err) = psql(&proxy, "app", "select current_user").await;
    assert!(ok, "{err}");
    assert_eq!(out, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_schema_usage_names_the_grant() {
    let stack = stack_with(&[("dave", "auto-tables")]).await;
    superuser_sql(
        &stack.pg,
        "app",
        "revoke usage on schema public from public",
    )
    .await;
    let err = refused(&stack, "dave", &[]).await;
    assert!(
        err.contains("has no USAGE on schema \"public\" in database \"app\"")
            && err.contains("GRANT USAGE ON SCHEMA public TO postern_admin"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_points_at_the_writer_endpoint() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;
    // What an admin sees on a reader endpoint: every transaction read-only.
    superuser_sql(
        &stack.pg,
        "postgres",
        "alter database app set default_transaction_read_only = on",
    )
    .await;
    let err = refused(&stack, "alice", &[]).await;
    assert!(
        err.contains("database \"pg\" is read-only, so users cannot be provisioned there")
            && err.contains("writer (primary) endpoint"),
        "{err}"
    );
    assert_eq!(db_user(&stack.pg, "alice").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_createrole_names_the_fix() {
    let stack = stack_with(&[("alice", "auto-keep")]).await;
    superuser_sql(
        &stack.pg,
        "postgres",
        "alter role postern_admin nocreaterole",
    )
    .await;
    let err = refused(&stack, "alice", &[]).await;
    assert!(
        err.contains("the provisioning admin \"postern_admin\" may not create or alter roles")
            && err.contains("ALTER ROLE postern_admin CREATEROLE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_that_may_not_grant_a_role_names_the_admin_option() {
    let stack = stack_with(&[("erin", "auto-rds")]).await;
    // A managed user from earlier sessions, still enabled: only the grant
    // is left to do, and without CREATEROLE (PostgreSQL 15) it needs the
    // ADMIN OPTION on the role.
    superuser_sql(
        &stack.pg,
        "postgres",
        "create role rds_iam nologin;
         create role \"postern-auto-user\" nologin;
         create role erin login in role \"postern-auto-user\";
         alter role postern_admin nocreaterole",
    )
    .await;
    let err = refused(&stack, "erin", &["--db-roles", "reader"]).await;
    assert!(
        err.contains("may not grant role \"reader\"")
            && err.contains("GRANT reader TO postern_admin WITH ADMIN OPTION"),
        "{err}"
    );
    let err = refused(&stack, "erin", &["--db-roles", "rds_iam"]).await;
    assert!(
        err.contains("may not grant role \"rds_iam\" to other users")
            && err.contains("GRANT rds_iam TO postern_admin WITH ADMIN OPTION"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_db_role_missing_in_the_database_is_named() {
    let stack = stack_with(&[("erin", "auto-rds")]).await;
    let err = refused(&stack, "erin", &["--db-roles", "rds_iam"]).await;
    assert!(
        err.contains("database role \"rds_iam\" does not exist in the database"),
        "{err}"
    );
    // The transaction was rolled back: nothing was created.
    assert_eq!(db_user(&stack.pg, "erin").await, None);
}
