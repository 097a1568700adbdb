//! The gateway's own log as an operator's tools read it: written to a file
//! (or journald) it carries no colour codes, and `log: { format: json }`
//! gives one JSON object per line for log shippers.

use std::time::Duration;

use postern_tests::gateway_process::GatewayProcess;
use postern_tests::stack::{DEFAULT_ROLES, PASSWORD, Stack, StackConfig};

/// The log of a gateway process (configured with `log_yaml`) that served
/// one login and one statement through a tunnel, then stopped.
async fn log_of_a_session(log_yaml: &str) -> String {
    let stack = Stack::start_with(
        DEFAULT_ROLES,
        StackConfig {
            gateway_extra: log_yaml,
            ..StackConfig::default()
        },
    )
    .await;
    let mut gateway = GatewayProcess::of_stack(&stack).await;
    stack.add_user("lea", PASSWORD, &["dev"]);
    let people = gateway.clients_of(&stack);
    people.login("lea", PASSWORD).await;
    let proxy = people
        .proxy("lea", &["pg", "--db-user", "certuser", "--db-name", "app"])
        .await;
    let (ok, _, err) = proxy.query("user=certuser dbname=app", "select 1").await;
    assert!(ok, "{err}");
    drop(proxy);
    gateway.terminate();
    let status = gateway.exited(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    gateway.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let log = log_of_a_session("").await;
    assert!(log.contains("gateway listening"), "{log}");
    assert!(
        log.contains("session_start"),
        "audit lines are logged: {log}"
    );
    assert!(
        !log.contains('\x1b'),
        "terminal escape codes in a log file: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    let log = log_of_a_session("log: { format: json }").await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "gateway listening"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{log}"
    );
}
