//! `postern-gateway check-config` as a systemd unit's `ExecStartPre` runs
//! it: every problem of the configuration and its role files at once, as
//! `FILE:LINE:COLUMN: message`, and exit status 1; or one "ok" line and 0.
//! It needs no database, store or identity provider and creates nothing.

use std::path::Path;
use std::process::Command;

use postern_tests::stack::bin;

const ROLES: &str = "\
kind: role
version: v7
metadata: { name: dba }
---
kind: role
version: v7
metadata: { name: dev }
";

/// Runs `postern-gateway --config gateway.yaml check-config` in `dir`:
/// exit code and output lines.
fn check_config(dir: &Path) -> (Option<i32>, Vec<String>) {
    let out = Command::new(bin("postern-gateway"))
        .current_dir(dir)
        .args(["--config", "gateway.yaml", "check-config"])
        .env_remove("POSTERN_GATEWAY_CONFIG")
        .output()
        .expect("run postern-gateway check-config");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    (
        out.status.code(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a test file");
}

#[test]
fn a_valid_configuration_is_ok_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gateway.yaml",
        "\
listen: 127.0.0.1:0
data_dir: state
roles: [roles.yaml]
databases:
  - name: app
    uri: localhost:5432
    tls: { ca_cert_file: pg-ca.pem }
connectors:
  - name: corp
    type: oidc
    issuer_url: https://idp.example.com
    client_id: postern
    client_secret_file: corp.secret
    claims_to_roles:
      - { claim: groups, value: dba, roles: [dba] }
",
    );
    write(dir.path(), "roles.yaml", ROLES);
    write(dir.path(), "pg-ca.pem", "not checked beyond being readable");
    write(dir.path(), "corp.secret", "s3cret-never-printed\n");

    let (code, lines) = check_config(dir.path());
    assert_eq!(
        (code, lines),
        (
            Some(0),
            vec!["gateway.yaml: ok (1 database, 2 roles, 1 connector)".to_owned()]
        )
    );
    assert!(
        !dir.path().join("state").exists(),
        "check-config must not create the data directory"
    );
}

#[test]
fn every_problem_is_listed_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gateway.yaml",
        "\
listen: 127.0.0.1:0
data_dir: state
roles: [roles.yaml, extra-roles.yaml]
public_url: http://gw.example.com
databases:
  - name: app
    uri: localhost:5432
  - name: app
    uri: localhost:5433
connectors:
  - name: corp
    type: oidc
    issuer_url: https://idp.example.com
    client_id: postern
    client_secret_file: corp.secret
    claims_to_roles:
      - { claim: groups, value: dba, roles: [dba, dbas] }
",
    );
    write(dir.path(), "roles.yaml", ROLES);
    write(
        dir.path(),
        "extra-roles.yaml",
        "\
kind: role
version: v7
metadata: { name: typo }
spec:
  allow:
    db_user: [x]
---
kind: role
version: v7
metadata:
  name: wide
spec:
  allow:
    db_labels: { env: \"^(prod$\" }
",
    );

    let (code, lines) = check_config(dir.path());
    let output = lines.join("\n");
    assert_eq!(code, Some(1), "{output}");
    let expected = [
        "gateway.yaml:4:1: public_url \"http://gw.example.com\" must be https://HOST[:PORT]",
        "gateway.yaml:8:5: database \"app\" is defined twice",
        "gateway.yaml:15:5: cannot read corp.secret: No such file or directory",
        "gateway.yaml:17:51: connector \"corp\": claims_to_roles grants role \"dbas\", which no role file defines",
        "extra-roles.yaml:3:19: role \"typo\": spec.allow: unknown field `db_user`",
        "extra-roles.yaml:11:9: role \"wide\": spec.allow.db_labels.env:",
        "gateway.yaml: 6 problems",
    ];
    assert_eq!(lines.len(), expected.len(), "{output}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}\n{output}"
        );
    }
}

#[test]
fn a_yaml_error_is_shown_where_serde_found_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "gateway.yaml",
        "data_dir: state\ndatabases:\n  - name: app\n    uri: localhost:5432\nlisten_addr: 127.0.0.1:3080\n",
    );
    let (code, lines) = check_config(dir.path());
    let output = lines.join("\n");
    assert_eq!(code, Some(1), "{output}");
    assert_eq!(lines.len(), 2, "{output}");
    assert!(
        lines[0].starts_with("gateway.yaml:5:1: unknown field `listen_addr`, expected one of"),
        "{output}"
    );
    assert_eq!(lines[1], "gateway.yaml: 1 problem");
}
