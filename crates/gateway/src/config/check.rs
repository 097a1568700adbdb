//! `postern-gateway check-config`: everything the gateway checks at start
//! that needs no network, store, database or identity provider, with each
//! problem's file, line and column. It reads and never writes: no data
//! directory, no store, no CA.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::locate::{Located, Position};
use super::{ConfigError, ConnectorConfig, GatewayConfig};
use crate::rbac::{RbacError, RoleSet};

/// One problem, where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    /// The file at fault: the configuration or a role file.
    pub file: PathBuf,
    /// Where in it; `None` when the file itself cannot be read.
    pub position: Option<Position>,
    /// The sentence for the operator; never a secret's value.
    pub message: String,
}

impl fmt::Display for FileProblem {
    /// `FILE:LINE:COLUMN: message` on one line, as compilers write it (a
    /// message of several lines, such as a regex error, is joined).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message: Vec<&str> = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let message = message.join(" ");
        match self.position {
            Some(Position { line, column }) => {
                write!(f, "{}:{line}:{column}: {message}", self.file.display())
            }
            None => write!(f, "{}: {message}", self.file.display()),
        }
    }
}

/// What a check found.
#[derive(Debug)]
pub struct Report {
    /// The configuration file checked, as given.
    pub file: PathBuf,
    /// Every problem, the configuration's first, then the role files'.
    pub problems: Vec<FileProblem>,
    databases: usize,
    roles: usize,
    connectors: usize,
}

impl Report {
    /// The last line: how many problems, or "ok" with what the file defines.
    pub fn summary(&self) -> String {
        let file = self.file.display();
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        if self.problems.is_empty() {
            format!(
                "{file}: ok ({}, {}, {})",
                count(self.databases, "database"),
                count(self.roles, "role"),
                count(self.connectors, "connector")
            )
        } else {
            format!("{file}: {}", count(self.problems.len(), "problem"))
        }
    }
}

/// Checks the configuration at `path`, the role files it names and the
/// files and environment variables it takes secrets and certificates from.
pub fn check(path: &Path) -> Report {
    let mut report = Report {
        file: path.to_owned(),
        problems: Vec::new(),
        databases: 0,
        roles: 0,
        connectors: 0,
    };
    let (mut config, text) = match GatewayConfig::parse_file(path) {
        Ok(parsed) => parsed,
        Err(error) => {
            report.problems.push(unparsed(path, error));
            return report;
        }
    };
    let located = Located::new(&text);
    let at = |key: &str, message: String| FileProblem {
        file: path.to_owned(),
        position: Some(located.key(key)),
        message,
    };
    let mut problems: Vec<FileProblem> = config
        .problems()
        .into_iter()
        .map(|p| at(&p.key, p.message))
        .collect();
    for (key, file) in config.files_mut() {
        if let Err(e) = readable(file) {
            problems.push(at(&key, format!("cannot read {}: {e}", file.display())));
        }
    }
    for (key, var) in config.secret_variables() {
        if std::env::var_os(var).is_none() {
            problems.push(at(&key, format!("environment variable {var} is not set")));
        }
    }
    let (roles, errors) = RoleSet::load_paths_all(&config.roles);
    for (i, ConnectorConfig::Oidc(oidc)) in config.connectors.iter().enumerate() {
        for p in oidc.unknown_roles(&roles) {
            problems.push(at(&format!("connectors[{i}].{}", p.key), p.message));
        }
    }
    for error in errors {
        problems.push(match error {
            RbacError::InFile { path, source } => in_role_file(path, *source),
            // A role file or directory named in `roles:` cannot be read.
            other => {
                let i = match &other {
                    RbacError::Io { path, .. } => {
                        config.roles.iter().position(|r| path.starts_with(r))
                    }
                    _ => None,
                };
                at(
                    &format!("roles[{}]", i.unwrap_or_default()),
                    other.to_string(),
                )
            }
        });
    }
    // The configuration's problems first, then the role files', each in
    // the order of its lines.
    problems.sort_by(|a, b| {
        (a.file != path, &a.file, a.position).cmp(&(b.file != path, &b.file, b.position))
    });
    report.problems = problems;
    report.databases = config.databases.len();
    report.roles = roles.names().count();
    report.connectors = config.connectors.len();
    report
}

/// A configuration serde could not read: its one error, at serde's position.
fn unparsed(path: &Path, error: ConfigError) -> FileProblem {
    let (position, message) = match error {
        ConfigError::Parse { source, .. } => {
            let message = source.to_string();
            match source.location() {
                Some(location) => {
                    let suffix =
                        format!(" at line {} column {}", location.line(), location.column());
                    (
                        Some(Position {
                            line: location.line(),
                            column: location.column(),
                        }),
                        message
                            .strip_suffix(&suffix)
                            .map_or(message.clone(), str::to_owned),
                    )
                }
                None => (Some(Position::START), message),
            }
        }
        ConfigError::Read { source, .. } => (None, format!("cannot read: {source}")),
        other => (Some(Position::START), other.to_string()),
    };
    FileProblem {
        file: path.to_owned(),
        position,
        message,
    }
}

/// An error in a role file, at the document or role it concerns.
fn in_role_file(file: PathBuf, error: RbacError) -> FileProblem {
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let located = Located::new(&text);
    let position = match &error {
        RbacError::Yaml { document, .. } => located.document(*document),
        RbacError::InvalidRole { role, .. } | RbacError::DuplicateRole { role } => {
            located.named_document(role)
        }
        _ => Position::START,
    };
    FileProblem {
        file,
        position: Some(position),
        message: error.to_string(),
    }
}

/// Whether the gateway could read `file`: it opens it and reads a byte
/// (which a directory refuses); the content is not kept.
fn readable(file: &Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.read(&mut [0u8; 1]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &Path, line: usize, column: usize, message: &str) -> String {
        format!("{}:{line}:{column}: {message}", file.display())
    }

    #[test]
    fn secrets_roles_and_unreadable_files_are_placed() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            "\
data_dir: state
roles: [roles.yaml, no-such-dir]
tls: { cert_file: cert.pem, key_file: . }
connectors:
  - name: corp
    type: oidc
    issuer_url: https://idp.example.com
    client_id: postern
    client_secret_env: POSTERN_CHECK_CONFIG_TEST_UNSET
",
        )
        .unwrap();
        std::fs::write(dir.path().join("cert.pem"), "readable").unwrap();
        let roles = dir.path().join("roles.yaml");
        std::fs::write(
            &roles,
            "kind: role\nversion: v7\nmetadata: { name: a }\n---\nkind: role\nmetadata: {}\n---\nkind: role\nversion: v7\nmetadata: { name: a }\n",
        )
        .unwrap();
        let report = check(&config);
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        let missing_dir = dir.path().join("no-such-dir");
        assert_eq!(
            lines,
            [
                at(
                    &config,
                    2,
                    21,
                    &format!(
                        "cannot read {}: No such file or directory (os error 2)",
                        missing_dir.display()
                    )
                ),
                at(
                    &config,
                    3,
                    29,
                    &format!(
                        "cannot read {}: Is a directory (os error 21)",
                        dir.path().join(".").display()
                    )
                ),
                at(
                    &config,
                    9,
                    5,
                    "environment variable POSTERN_CHECK_CONFIG_TEST_UNSET is not set"
                ),
                at(
                    &roles,
                    5,
                    1,
                    "YAML document 2: metadata.name is missing or not a string"
                ),
                at(&roles, 10, 19, "role \"a\" is defined more than once"),
            ]
        );
        assert_eq!(
            report.summary(),
            format!("{}: 5 problems", config.display())
        );
        assert!(!dir.path().join("state").exists());
    }

    #[test]
    fn an_unreadable_configuration_has_no_position() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("absent.yaml");
        let report = check(&config);
        assert_eq!(
            report.problems[0].to_string(),
            format!(
                "{}: cannot read: No such file or directory (os error 2)",
                config.display()
            )
        );
    }
}
