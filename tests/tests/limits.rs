//! Statement limits the gateway enforces per role, through the real CLI
//! tunnel and psql on PostgreSQL 15: `max_statement_duration` cancels a
//! statement with a warning first, `max_idle_in_transaction` ends a
//! forgotten transaction, `db_session_defaults` are in effect (and only
//! defaults), and the strictest role wins.

use std::process::Stdio;

use postern_tests::stack::{PASSWORD, Proxy, Stack, output};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const ROLES: &str = r#"
kind: role
version: v7
metadata: { name: quick }
spec:
  options: { max_statement_duration: 2s }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
---
kind: role
version: v7
metadata: { name: patient }
spec:
  options: { max_statement_duration: 5s }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
---
kind: role
version: v7
metadata: { name: no-idle-transactions }
spec:
  options: { max_idle_in_transaction: 2s }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
---
kind: role
version: v7
metadata: { name: careful }
spec:
  options:
    db_session_defaults: { statement_timeout: 5min, default_transaction_read_only: on }
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
"#;

const CANCELLING: &str = "postern: cancelling this statement: your role allows 2s";
const IDLE_ENDED: &str = "postern: ending this session: it stayed idle inside a transaction for 2s";

async fn stack_with(users: &[(&str, &[&str])]) -> Stack {
    let stack = Stack::start(ROLES).await;
    for (user, roles) in users {
        stack.add_user(user, PASSWORD, roles);
        stack.login(user, PASSWORD).await;
    }
    stack
}

async fn proxy(stack: &Stack, who: &str) -> Proxy {
    stack
        .proxy(who, &["pg", "--db-user", "certuser", "--db-name", "app"])
        .await
}

/// An interactive psql through `proxy`: statements go in one line at a
/// time, results come out line by line.
struct Psql {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
}

impl Psql {
    fn start(proxy: &Proxy) -> Psql {
        let mut child = proxy
            .psql("dbname=app")
            // Quiet: no command tags (`BEGIN`) among the results.
            .args(["-q", "-v", "VERBOSITY=verbose"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Psql { child, out }
    }

    /// Sends `sql` and returns the next line psql prints.
    async fn line(&mut self, sql: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{sql}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        self.out
            .next_line()
            .await
            .unwrap()
            .expect("a line from psql")
    }

    /// Sends `sql`, ends the input and returns success, the rest of stdout
    /// and stderr.
    async fn finish(mut self, sql: &str) -> (bool, String, String) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin
            .write_all(format!("{sql}\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let mut rest = Vec::new();
        while let Some(line) = self.out.next_line().await.unwrap() {
            rest.push(line);
        }
        let out = self.child.wait_with_output().await.unwrap();
        (
            out.status.success(),
            rest.join("\n"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_strictest_limit_is_cancelled_with_a_warning_first() {
    // 5s and 2s: the strictest, 2s, applies.
    let stack = stack_with(&[("bob", &["patient", "quick"])]).await;

    let ls = stack.run("bob", &["db", "ls", "-v"], "").await;
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{listing}");
    assert!(listing.contains("statements up to 2s"), "{listing}");

    let proxy = proxy(&stack, "bob").await;
    let mut psql = proxy.psql("dbname=app");
    // Without ON_ERROR_STOP, psql goes on after the cancelled statement:
    // the session is still usable.
    psql.args(["-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose"])
        .args(["-c", "select pg_sleep(30)", "-c", "select 42"]);
    let (_, out, err) = output(psql).await;
    println!("psql stdout:\n{out}\npsql stderr:\n{err}");
    assert!(
        err.contains(&format!("WARNING:  01000: {CANCELLING}")),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  57014: canceling statement due to user request"),
        "{err}"
    );
    assert!(
        err.find(CANCELLING) < err.find("57014"),
        "the warning comes first: {err}"
    );
    assert_eq!(out, "42");

    let event = stack
        .wait_audit("statement_cancelled", |e| e["user"] == "bob")
        .await;
    assert_eq!(event["rule"], "max_statement_duration");
    assert_eq!(event["limit"], "2s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_idle_is_ended_and_an_idle_session_is_not() {
    let stack = stack_with(&[("carol", &["no-idle-transactions"])]).await;
    let proxy = proxy(&stack, "carol").await;

    let mut idle = Psql::start(&proxy);
    assert_eq!(idle.line("select 1;").await, "1");
    let mut forgotten = Psql::start(&proxy);
    assert_eq!(forgotten.line("begin; select 2;").await, "2");

    let ended = stack
        .wait_audit("session_end", |e| {
            e["user"] == "carol" && e["reason"].as_str().is_some_and(|r| r.contains(IDLE_ENDED))
        })
        .await;
    println!("audit: {ended}");
    let (ok, _, err) = forgotten.finish("select 3;").await;
    println!("psql stderr:\n{err}");
    assert!(!ok);
    assert!(
        err.contains(&format!("FATAL:  25P03: {IDLE_ENDED}")),
        "{err}"
    );

    // The other session has been idle (outside a transaction) longer than
    // the limit all along, and still works.
    let (ok, out, err) = idle.finish("select 4;").await;
    assert!(ok, "{err}");
    assert_eq!(out, "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_defaults_are_in_effect_and_only_defaults() {
    let stack = stack_with(&[("dave", &["careful"])]).await;

    let ls = stack.run("dave", &["db", "ls", "-v"], "").await;
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.contains(
            "defaults (SET may change them) default_transaction_read_only=on, statement_timeout=5min"
        ),
        "{listing}"
    );

    let proxy = proxy(&stack, "dave").await;
    let (ok, out, err) = proxy
        .query(
            "dbname=app",
            "select current_setting('statement_timeout'), current_setting('default_transaction_read_only')",
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(out, "5min|on");
    // A read-only default refuses writes...
    let (ok, _, err) = proxy
        .query("dbname=app", "create table dave_was_here (x int)")
        .await;
    assert!(!ok);
    assert!(err.contains("read-only transaction"), "{err}");
    // ...until the user changes it: these are defaults, not limits.
    let (ok, out, err) = proxy
        .query(
            "dbname=app",
            "set statement_timeout = '1s'; set default_transaction_read_only = off; select current_setting('statement_timeout'), current_setting('default_transaction_read_only')",
        )
        .await;
    assert!(ok, "{err}");
    assert!(out.ends_with("1s|off"), "{out}");
}
