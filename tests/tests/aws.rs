//! IAM database users on Amazon Redshift Serverless, end to end: moto plays
//! AWS STS, a stand-in plays the Redshift Serverless API, the test
//! PostgreSQL plays the workgroup's database (tests/src/aws.rs), and psql
//! connects through the `postern` tunnel as `IAMR:<role>`.

use std::time::Duration;

use postern_gateway::aws::AwsIdentity;
use postern_tests::aws::{
    ACCOUNT, BLACKHOLED_WORKGROUP, Blackhole, FakeAws, FakeRds, Moto, REGION, WORKGROUP,
    create_iam_user, create_sys_query_history, role_arn,
};
use postern_tests::eventually;
use postern_tests::stack::{Proxy, Stack, StackConfig};

use postern_tests::stack::PASSWORD as PW;

/// Alice may use IAM roles by name and by ARN on databases tagged (in AWS)
/// `team: data`.
const ROLES: &str = r#"
kind: role
version: v7
metadata: { name: redshift }
spec:
  allow:
    db_labels: { team: data }
    db_users:
      - my-redshift-role
      - arn:aws:iam::123456789012:role/other-role
      - denied-role
      - no-get-credentials-role
      - unprivileged-role
      - app_user
    db_names: [app, analytics]
---
kind: role
version: v7
metadata: { name: redshift-quick }
spec:
  options: { max_statement_duration: 2s }
  allow:
    db_labels: { team: data }
    db_users: [my-redshift-role]
    db_names: [app]
---
kind: role
version: v7
metadata: { name: redshift-defaults }
spec:
  options: { db_session_defaults: { statement_timeout: 5min } }
  allow:
    db_labels: { team: data }
    db_users: [my-redshift-role]
    db_names: [app]
"#;

fn gateway_identity() -> AwsIdentity {
    AwsIdentity::Static {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
    }
}

/// A Redshift Serverless database entry; `extra` lines go into its `aws` block.
fn warehouse(name: &str, workgroup: &str, sts: &str, redshift: &str, extra: &str) -> String {
    format!(
        r#"- name: {name}
  kind: redshift-serverless
  labels: {{ env: configured }}
  tls: {{ mode: verify-full, ca_cert_file: pg-ca.pem }}
  aws:
    region: {REGION}
    account_id: "{ACCOUNT}"
    redshift_serverless: {{ workgroup_name: {workgroup} }}
    endpoints: {{ sts: "{sts}", redshift_serverless: "{redshift}" }}
{extra}
"#
    )
}

struct World {
    stack: Stack,
    fake: FakeAws,
    _moto: Moto,
}

/// moto, PostgreSQL, the stand-in and a gateway with `databases`
/// (YAML list items, `{fake}` is the stand-in's URL); Alice logged in.
async fn world(lifetime: Duration, databases: &str, identity: Option<AwsIdentity>) -> World {
    let moto = Moto::start().await;
    let prepared = Stack::prepare().await;
    let fake = FakeAws::start(&moto, &prepared.pg, lifetime).await;
    for (role, db) in [("my-redshift-role", "app"), ("other-role", "app")] {
        create_iam_user(&prepared.pg, role, db, &["GRANT SELECT ON items TO {user}"]).await;
    }
    let databases = databases.replace("{fake}", &fake.url);
    let stack = prepared
        .start(
            ROLES,
            StackConfig {
                extra_databases: &databases,
                gateway_extra: "limits: { upstream_timeout: 2s }",
                aws_identity: identity.as_ref(),
                ..Default::default()
            },
        )
        .await;
    stack.add_user("alice", PW, &["redshift"]);
    stack.login("alice", PW).await;
    World {
        stack,
        fake,
        _moto: moto,
    }
}

/// `select current_user, count(*) from items` through `proxy`.
async fn whoami(proxy: &Proxy) -> Result<String, String> {
    let (ok, out, err) = proxy
        .query("user=anything", "select current_user, count(*) from items")
        .await;
    if ok { Ok(out) } else { Err(err) }
}

async fn proxy(world: &World, database: &str, db_user: &str, db_name: &str) -> Proxy {
    world
        .stack
        .proxy(
            "alice",
            &[database, "--db-user", db_user, "--db-name", db_name],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_roles_by_name_and_by_arn_log_in_as_iamr_users_through_the_tunnel() {
    let db = warehouse("warehouse", WORKGROUP, "{fake}", "{fake}", "");
    let world = world(Duration::from_secs(900), &db, Some(gateway_identity())).await;

    // The catalog: the kind, the IAM roles as allowed users, and the
    // workgroup's AWS tags as labels under the configured ones.
    let ls = world.stack.run("alice", &["db", "ls", "-v"], "").await;
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{listing}");
    for expected in [
        "warehouse",
        "redshift-serverless",
        "my-redshift-role",
        "arn:aws:iam::123456789012:role/other-role",
        "team=data",
        "env=configured",
    ] {
        assert!(listing.contains(expected), "{expected:?} in:\n{listing}");
    }

    // By name: the gateway assumes the role, gets credentials for the
    // workgroup (whose endpoint GetWorkgroup told) and logs in over TLS.
    let by_name = proxy(&world, "warehouse", "my-redshift-role", "app").await;
    assert_eq!(whoami(&by_name).await.unwrap(), "IAMR:my-redshift-role|3");
    let (_, ssl, _) = by_name
        .query(
            "",
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        )
        .await;
    assert_eq!(ssl, "t", "the hop to the database is TLS");

    // By ARN, allowed by the name entry: the same role, so the same
    // (cached) credentials.
    let by_arn = proxy(&world, "warehouse", &role_arn("my-redshift-role"), "app").await;
    assert_eq!(whoami(&by_arn).await.unwrap(), "IAMR:my-redshift-role|3");

    // By name, allowed by an ARN entry.
    let other = proxy(&world, "warehouse", "other-role", "app").await;
    assert_eq!(whoami(&other).await.unwrap(), "IAMR:other-role|3");

    let calls = world.fake.get_credentials_calls();
    let roles: Vec<&str> = calls.iter().map(|c| c.role_arn.as_str()).collect();
    assert_eq!(
        roles,
        [role_arn("my-redshift-role"), role_arn("other-role")],
        "one GetCredentials per role, each signed with that role's assumed credentials"
    );
    assert!(calls.iter().all(|c| c.db_name == "app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_assume_role_sends_the_external_id_on_the_first_hop_only() {
    let gateway_role = role_arn("postern-gateway");
    let db = warehouse(
        "warehouse",
        WORKGROUP,
        "{fake}",
        "{fake}",
        &format!("    assume_role_arn: {gateway_role}\n    external_id: corp-7"),
    );
    let world = world(Duration::from_secs(900), &db, Some(gateway_identity())).await;
    let proxy = proxy(&world, "warehouse", "my-redshift-role", "app").await;
    assert_eq!(whoami(&proxy).await.unwrap(), "IAMR:my-redshift-role|3");

    let assumed: Vec<_> = world
        .fake
        .sts_calls()
        .into_iter()
        .filter(|c| c.action == "AssumeRole")
        .collect();
    assert_eq!(assumed.len(), 2, "{assumed:?}");
    let (first, second) = (&assumed[0], &assumed[1]);
    assert_eq!(first.role_arn.as_deref(), Some(gateway_role.as_str()));
    assert_eq!(first.external_id.as_deref(), Some("corp-7"));
    assert_eq!(first.access_key.as_deref(), Some("testing"));
    assert_eq!(
        second.role_arn.as_deref(),
        Some(role_arn("my-redshift-role").as_str())
    );
    assert_eq!(
        second.external_id, None,
        "the external ID is for the first hop"
    );
    assert_ne!(
        second.access_key.as_deref(),
        Some("testing"),
        "the second hop runs as the first hop's role"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_fetched_again() {
    let db = warehouse("warehouse", WORKGROUP, "{fake}", "{fake}", "");
    let world = world(Duration::from_secs(3), &db, Some(gateway_identity())).await;
    let proxy = proxy(&world, "warehouse", "my-redshift-role", "app").await;

    assert_eq!(whoami(&proxy).await.unwrap(), "IAMR:my-redshift-role|3");
    assert_eq!(whoami(&proxy).await.unwrap(), "IAMR:my-redshift-role|3");
    assert_eq!(
        world.fake.get_credentials_calls().len(),
        1,
        "still-valid credentials are reused"
    );
    // The password stops working when it expires (VALID UNTIL): a login
    // after that works only with fresh credentials. The expiry is the event.
    let expires = world.fake.get_credentials_calls()[0].expires;
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(500)).await;
    assert_eq!(whoami(&proxy).await.unwrap(), "IAMR:my-redshift-role|3");
    assert_eq!(world.fake.get_credentials_calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_failures_reach_the_client_as_sentences_with_the_fix() {
    let sts_hole = Blackhole::start().await;
    let db_hole = Blackhole::start().await;
    let hole_url = format!("http://{}", sts_hole.addr);
    let tagged = "  labels: { team: data }";
    let databases = [
        warehouse("warehouse", WORKGROUP, "{fake}", "{fake}", ""),
        warehouse("wh-unknown", "nope", "{fake}", "{fake}", "")
            .replace("  labels: { env: configured }", tagged),
        warehouse("wh-sts-timeout", WORKGROUP, &hole_url, "{fake}", ""),
        warehouse(
            "wh-db-timeout",
            BLACKHOLED_WORKGROUP,
            "{fake}",
            "{fake}",
            "",
        )
        .replace("  labels: { env: configured }", tagged),
    ]
    .concat();
    let moto = Moto::start().await;
    let prepared = Stack::prepare().await;
    let fake = FakeAws::start(&moto, &prepared.pg, Duration::from_secs(900)).await;
    fake.set_blackhole(db_hole.addr);
    fake.deny_assume_role(&role_arn("denied-role"));
    fake.deny_get_credentials(&role_arn("no-get-credentials-role"));
    // Nobody may use database analytics unless granted CONNECT; the
    // administrator has not granted anything to IAMR:unprivileged-role.
    prepared
        .pg
        .admin("postgres")
        .await
        .batch_execute("REVOKE CONNECT ON DATABASE analytics FROM PUBLIC")
        .await
        .unwrap();
    let identity = gateway_identity();
    let databases = databases.replace("{fake}", &fake.url);
    let stack = prepared
        .start(
            ROLES,
            StackConfig {
                extra_databases: &databases,
                gateway_extra: "limits: { upstream_timeout: 2s }",
                aws_identity: Some(&identity),
                ..Default::default()
            },
        )
        .await;
    stack.add_user("alice", PW, &["redshift"]);
    stack.login("alice", PW).await;
    let world = World {
        stack,
        fake,
        _moto: moto,
    };

    let cases = [
        (
            "warehouse",
            "denied-role",
            "app",
            vec![
                // GetCallerIdentity named the gateway's identity.
                "the gateway's identity arn:aws:",
                "cannot assume arn:aws:iam::123456789012:role/denied-role: check the role's trust policy, \
                 the gateway's permission policy for sts:AssumeRole, and any permission boundary",
                "aws sts assume-role --role-arn arn:aws:iam::123456789012:role/denied-role",
            ],
        ),
        (
            "warehouse",
            "no-get-credentials-role",
            "app",
            vec![
                "IAM role arn:aws:iam::123456789012:role/no-get-credentials-role may not get database credentials",
                "redshift-serverless:GetCredentials on arn:aws:redshift-serverless:eu-central-1:123456789012:workgroup/analytics-0000",
            ],
        ),
        (
            "warehouse",
            "unprivileged-role",
            "analytics",
            vec![
                "\"IAMR:unprivileged-role\" has no privileges in database \"analytics\"",
                "log in as an administrator and run: CREATE USER \"IAMR:unprivileged-role\" WITH PASSWORD DISABLE; GRANT",
            ],
        ),
        (
            "wh-unknown",
            "my-redshift-role",
            "app",
            vec![
                "workgroup \"nope\" of database \"wh-unknown\" does not exist in region eu-central-1",
            ],
        ),
        (
            "wh-sts-timeout",
            "my-redshift-role",
            "app",
            vec![
                "timed out reaching AWS STS in eu-central-1",
                "security group outbound rules",
            ],
        ),
        (
            "wh-db-timeout",
            "my-redshift-role",
            "app",
            vec![
                "got no answer from database \"wh-db-timeout\" in time",
                "security group",
            ],
        ),
    ];
    for (database, db_user, db_name, expected) in cases {
        let proxy = proxy(&world, database, db_user, db_name).await;
        let err = whoami(&proxy)
            .await
            .expect_err("the connection must be refused");
        for text in expected {
            assert!(
                err.contains(text),
                "{database} as {db_user}: {text:?} missing from:\n{err}"
            );
        }
        assert!(
            !err.contains("testing"),
            "no credentials in messages: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_aws_credentials_the_client_is_told_what_to_set_up() {
    let db = warehouse("warehouse", WORKGROUP, "{fake}", "{fake}", "")
        .replace("  labels: { env: configured }", "  labels: { team: data }");
    // No identity: the stack's default is a chain that finds nothing.
    let world = world(Duration::from_secs(900), &db, None).await;
    let proxy = proxy(&world, "warehouse", "my-redshift-role", "app").await;
    let err = whoami(&proxy).await.expect_err("no credentials, no login");
    assert!(
        err.contains(
            "the gateway found no AWS credentials, so it cannot log in to database \"warehouse\""
        ),
        "{err}"
    );
    assert!(err.contains("HttpPutResponseHopLimit"), "{err}");
    assert!(world.fake.sts_calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_statements_are_listed_and_cancelled_with_the_redshift_dialect() {
    let db = warehouse("warehouse", WORKGROUP, "{fake}", "{fake}", "");
    let world = world(Duration::from_secs(900), &db, Some(gateway_identity())).await;
    create_sys_query_history(&world.stack.pg, "app").await;
    let proxy = proxy(&world, "warehouse", "my-redshift-role", "app").await;
    let mut cmd = proxy.psql("");
    cmd.args(["-c", "select pg_sleep(60) /* redshift runaway */"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let target = [
        "warehouse",
        "--db-user",
        "my-redshift-role",
        "--db-name",
        "app",
    ];

    let listed = eventually(Duration::from_secs(20), async || {
        let mut args = vec!["db", "queries"];
        args.extend(target);
        args.extend(["--format", "json"]);
        let out = world.stack.run("alice", &args, "").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let found = list.iter().find(|q| {
            q["query"]
                .as_str()
                .unwrap_or_default()
                .contains("redshift runaway")
        });
        found.cloned().ok_or_else(|| format!("{list:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("never listed: {e}"));
    assert_eq!(listed["state"], "running");
    assert_eq!(listed["database"], "app");

    let pid = listed["pid"].to_string();
    let mut args = vec!["db", "cancel"];
    args.extend(target);
    args.push(&pid);
    let out = world.stack.run("alice", &args, "").await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Cancelled the statement"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the statement ends")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_gets_an_iam_token_signed_by_the_assumed_role_as_password() {
    let rds = FakeRds::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("rds-ca.pem");
    std::fs::write(&ca, rds.ca_pem()).unwrap();
    let db = format!(
        r#"- name: orders
  kind: rds-postgres
  uri: localhost:{port}
  labels: {{ team: data }}
  tls: {{ mode: verify-full, ca_cert_file: {ca} }}
  aws:
    region: {REGION}
    assume_role_arn: {role}
    rds: {{ instance_id: orders }}
    endpoints: {{ sts: "{{fake}}" }}
"#,
        port = rds.port,
        ca = ca.display(),
        role = role_arn("postern-gateway"),
    );
    let world = world(Duration::from_secs(900), &db, Some(gateway_identity())).await;
    let proxy = proxy(&world, "orders", "app_user", "app").await;
    let err = whoami(&proxy)
        .await
        .expect_err("the stand-in refuses every token");
    for text in [
        "RDS database \"orders\" refused the gateway's IAM authentication token for database user \"app_user\"",
        "IAM database authentication on instance \"orders\"",
        "GRANT rds_iam TO app_user",
    ] {
        assert!(err.contains(text), "{text:?} missing from:\n{err}");
    }

    let logins = rds.logins();
    let (user, token) = logins.first().expect("the gateway logged in");
    assert_eq!(user, "app_user");
    let prefix = format!(
        "localhost:{}/?Action=connect&DBUser=app_user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=",
        rds.port
    );
    assert!(token.starts_with(&prefix), "{token}");
    let query: Vec<(String, String)> = url::Url::parse(&format!("https://{token}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("X-Amz-Expires"), "900");
    assert_eq!(get("X-Amz-SignedHeaders"), "host");
    let credential = get("X-Amz-Credential");
    assert!(
        credential.ends_with("/eu-central-1/rds-db/aws4_request"),
        "{credential}"
    );
    // Signed as the role of assume_role_arn, not with the gateway's own key.
    let assumed = world.fake.sts_calls();
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!(assumed[0].external_id, None);
    assert!(!credential.starts_with("testing/"), "{credential}");
    assert!(!get("X-Amz-Security-Token").is_empty());
    assert_eq!(get("X-Amz-Signature").len(), 64);
}

/// Redshift has only some of PostgreSQL's settings, so session defaults are
/// refused there with a sentence; the limits the gateway enforces itself
/// work as on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_refuses_session_defaults_and_enforces_statement_limits() {
    let db = warehouse("warehouse", WORKGROUP, "{fake}", "{fake}", "");
    let world = world(Duration::from_secs(900), &db, Some(gateway_identity())).await;
    let target = [
        "warehouse",
        "--db-user",
        "my-redshift-role",
        "--db-name",
        "app",
    ];
    for (who, role) in [("rita", "redshift-defaults"), ("ron", "redshift-quick")] {
        world.stack.add_user(who, PW, &[role]);
        world.stack.login(who, PW).await;
    }

    let rita = world.stack.proxy("rita", &target).await;
    let (ok, _, err) = rita.query("", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("your roles start sessions with db_session_defaults (statement_timeout), which Redshift Serverless database \"warehouse\" does not accept"),
        "{err}"
    );

    let ron = world.stack.proxy("ron", &target).await;
    let mut psql = ron.psql("");
    psql.args([
        "-v",
        "ON_ERROR_STOP=0",
        "-c",
        "select pg_sleep(30)",
        "-c",
        "select 42",
    ]);
    let (_, out, err) = postern_tests::stack::output(psql).await;
    assert!(
        err.contains("postern: cancelling this statement: your role allows 2s"),
        "{err}"
    );
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert_eq!(out, "42");
}
