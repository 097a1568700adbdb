//! Teleport-style role documents (`kind: role`) and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::RbacError;
use super::limits::{SessionDefaults, check_limit};
use super::matcher::check_label_value;
use super::template::check_syntax;

/// Role versions whose database fields mean what this module implements.
const SUPPORTED_VERSIONS: [&str; 3] = ["v5", "v6", "v7"];

/// A named set of options, allow rules and deny rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Role name (`metadata.name`), as carried in session certificates.
    pub name: String,
    /// Session and provisioning options.
    pub options: RoleOptions,
    /// What the role grants.
    pub allow: RoleConditions,
    /// What the role takes away; deny wins over any allow.
    pub deny: RoleConditions,
}

/// `spec.options` of a role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleOptions {
    /// Automatic database-user provisioning for databases the role allows.
    pub create_db_user_mode: AutoUserMode,
    /// Cap on the session certificate's lifetime (e.g. `8h`).
    #[serde(with = "humantime_serde")]
    pub max_session_ttl: Option<Duration>,
    /// End live sessions when their certificate expires (Teleport's
    /// option; by default a session that began in time runs on).
    pub disconnect_expired_cert: bool,
    /// The gateway cancels a statement running longer (e.g. `10m`).
    #[serde(with = "humantime_serde")]
    pub max_statement_duration: Option<Duration>,
    /// The gateway ends a session idle inside a transaction this long.
    #[serde(with = "humantime_serde")]
    pub max_idle_in_transaction: Option<Duration>,
    /// PostgreSQL settings sessions start with (only defaults: `SET`
    /// changes them).
    pub db_session_defaults: SessionDefaults,
}

/// Automatic database-user provisioning, weakest first (the strongest mode
/// among the roles that allow a database wins).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AutoUserMode {
    /// Users log in as existing database users.
    #[default]
    Off,
    /// Create the user; at session end revoke its roles and disable login.
    Keep,
    /// Create the user; at session end drop it (or fall back to `Keep`).
    BestEffortDrop,
}

impl AutoUserMode {
    /// The name used in role files and the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Keep => "keep",
            Self::BestEffortDrop => "best_effort_drop",
        }
    }
}

impl fmt::Display for AutoUserMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The database matchers of one side (`allow` or `deny`) of a role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleConditions {
    /// Label key → allowed values (`*`, glob, `^regex$` or template).
    #[serde(deserialize_with = "label_map")]
    pub db_labels: BTreeMap<String, Vec<String>>,
    /// Database names (exact, `*` or template).
    #[serde(deserialize_with = "string_or_list")]
    pub db_names: Vec<String>,
    /// Database users (exact, `*`, IAM role name or ARN, or template).
    #[serde(deserialize_with = "string_or_list")]
    pub db_users: Vec<String>,
    /// Database roles granted to auto-provisioned users.
    #[serde(deserialize_with = "string_or_list")]
    pub db_roles: Vec<String>,
    /// Object privileges granted to auto-provisioned users.
    pub db_permissions: Vec<DbPermission>,
}

/// Object privileges for auto-provisioned users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbPermission {
    /// Which objects the privileges apply to.
    #[serde(rename = "match")]
    pub match_: PermissionMatch,
    /// Privileges such as `SELECT`, `INSERT`.
    #[serde(deserialize_with = "string_or_list")]
    pub permissions: Vec<String>,
}

/// Selects database objects; an absent field matches any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionMatch {
    /// Object kind, e.g. `table`.
    pub object_kind: Option<String>,
    /// Schema name.
    pub schema: Option<String>,
    /// Object name.
    pub name: Option<String>,
}

/// The YAML shape of a role; every level refuses unknown fields so a typo
/// (`db_user:`) cannot silently change what a role grants or denies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleDocument {
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(rename = "version")]
    _version: String,
    metadata: Metadata,
    #[serde(default)]
    spec: RoleSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default, rename = "labels")]
    _labels: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RoleSpec {
    options: RoleOptions,
    allow: RoleConditions,
    deny: RoleConditions,
}

impl Role {
    /// Parses every role of a YAML stream (documents separated by `---`;
    /// empty documents are skipped).
    pub(crate) fn parse_documents(text: &str) -> Result<Vec<Role>, RbacError> {
        Self::parse_each_document(text)?.into_iter().collect()
    }

    /// Like [`Role::parse_documents`], but each document's role or error,
    /// so one bad role does not hide the others; the error is the whole
    /// stream's when it is not YAML at all.
    pub(crate) fn parse_each_document(
        text: &str,
    ) -> Result<Vec<Result<Role, RbacError>>, RbacError> {
        // First pass into untyped values: finds empty documents and the
        // role's name and kind, so errors can name the role. The second,
        // typed pass reports field paths and line numbers.
        let mut headers = Vec::new();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(document).map_err(|e| RbacError::Yaml {
                document: index + 1,
                message: e.to_string(),
            })?;
            headers.push(value);
        }
        let documents = serde_yaml_ng::Deserializer::from_str(text);
        Ok(documents
            .enumerate()
            .zip(headers)
            .filter(|(_, header)| !header.is_null())
            .map(|((index, document), header)| {
                let name = check_header(&header, index + 1)?;
                let parsed =
                    RoleDocument::deserialize(document).map_err(|e| RbacError::InvalidRole {
                        role: name,
                        message: e.to_string(),
                    })?;
                let role = Role {
                    name: parsed.metadata.name,
                    options: parsed.spec.options,
                    allow: parsed.spec.allow,
                    deny: parsed.spec.deny,
                };
                role.validate()?;
                Ok(role)
            })
            .collect())
    }

    /// Refuses what would silently grant more or deny less than written.
    pub(crate) fn validate(&self) -> Result<(), RbacError> {
        let invalid = |message: String| RbacError::InvalidRole {
            role: self.name.clone(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("the role name is empty".into()));
        }
        let options = &self.options;
        check_limit("max_statement_duration", options.max_statement_duration).map_err(invalid)?;
        check_limit("max_idle_in_transaction", options.max_idle_in_transaction).map_err(invalid)?;
        options.db_session_defaults.check().map_err(invalid)?;
        for (side, conditions) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (key, values) in &conditions.db_labels {
                if key.contains("{{") {
                    return Err(invalid(format!(
                        "spec.{side}.db_labels: templates are not supported in label keys ({key:?})"
                    )));
                }
                for value in values.iter().filter(|v| !v.contains("{{")) {
                    check_label_value(value)
                        .map_err(|e| invalid(format!("spec.{side}.db_labels.{key}: {e}")))?;
                }
            }
        }
        // A deny rule applies only where its labels select the database:
        // without db_labels it would deny nothing while looking strict.
        let deny = &self.deny;
        let denies_something =
            !deny.db_users.is_empty() || !deny.db_names.is_empty() || !deny.db_roles.is_empty();
        if denies_something && deny.db_labels.is_empty() {
            return Err(invalid(
                r#"spec.deny has no db_labels, so it would deny nothing; write db_labels: {"*": "*"} to deny on every database, or the labels of the databases it is meant for"#
                    .into(),
            ));
        }
        if let Some((key, _)) = deny.db_labels.iter().find(|(_, values)| values.is_empty()) {
            return Err(invalid(format!(
                r#"spec.deny.db_labels.{key} lists no values, so the rule would deny nothing; give the values, or "*" for any"#
            )));
        }
        // A malformed deny template would be dropped at check time and so
        // deny less than the administrator wrote: refuse it up front.
        let deny_values = [
            ("db_names", &deny.db_names),
            ("db_users", &deny.db_users),
            ("db_roles", &deny.db_roles),
        ]
        .into_iter()
        .chain(deny.db_labels.values().map(|values| ("db_labels", values)));
        for (field, values) in deny_values {
            for value in values {
                check_syntax(value).map_err(|e| invalid(format!("spec.deny.{field}: {e}")))?;
            }
        }
        // Subtracting privileges needs the database's objects, which RBAC
        // does not see; ignoring the field would grant what it meant to deny.
        if !deny.db_permissions.is_empty() {
            return Err(invalid(
                "spec.deny.db_permissions is not supported; narrow spec.allow.db_permissions instead"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Checks `kind`, `version` and `metadata.name` and returns the name.
fn check_header(header: &Value, document: usize) -> Result<String, RbacError> {
    let field = |name: &str| header.get(name).and_then(Value::as_str);
    let Some(name) = header
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
    else {
        return Err(RbacError::Yaml {
            document,
            message: "metadata.name is missing or not a string".into(),
        });
    };
    let invalid = |message: String| RbacError::InvalidRole {
        role: name.to_owned(),
        message,
    };
    match field("kind") {
        Some("role") => {}
        Some(kind) => return Err(invalid(format!("kind is {kind:?}, expected \"role\""))),
        None => return Err(invalid("kind is missing, expected \"role\"".into())),
    }
    match field("version") {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => {}
        other => {
            return Err(invalid(format!(
                "version {} is not supported, expected one of {}",
                other.map_or("(missing)".to_owned(), |v| format!("{v:?}")),
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
    }
    Ok(name.to_owned())
}

/// A YAML string or list of strings, as Teleport role files allow
/// (`db_users: reader` or `db_users: [reader, writer]`).
struct StringOrList(Vec<String>);

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringOrListVisitor;

        impl<'de> Visitor<'de> for StringOrListVisitor {
            type Value = StringOrList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<StringOrList, E> {
                Ok(StringOrList(vec![value.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrList, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(StringOrList(values))
            }
        }

        deserializer.deserialize_any(StringOrListVisitor)
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    StringOrList::deserialize(deserializer).map(|list| list.0)
}

fn label_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let map = BTreeMap::<String, StringOrList>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, values)| (key, values.0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    /// The example role of DESIGN.md §3.
    const DESIGN_EXAMPLE: &str = r#"
kind: role
version: v7
metadata: { name: analysts }
spec:
  options:
    create_db_user_mode: keep          # off | keep | best_effort_drop
    max_session_ttl: 8h
  allow:
    db_labels: { env: ["staging", "^prod-.*$"] }
    db_names: [analytics, "{{internal.db_names}}"]
    db_users: [reader, "teleport-redshift-serverless-access"]
    db_roles: [reader, "{{external.db_roles}}"]
    db_permissions:
      - match: { object_kind: table, schema: public }
        permissions: [SELECT]
  deny:
    db_labels: { "*": "*" }
    db_users: [postgres]
"#;

    #[test]
    fn parses_the_design_example() {
        let roles = Role::parse_documents(DESIGN_EXAMPLE).unwrap();
        let want = Role {
            name: "analysts".into(),
            options: RoleOptions {
                create_db_user_mode: AutoUserMode::Keep,
                max_session_ttl: Some(Duration::from_secs(8 * 3600)),
                ..RoleOptions::default()
            },
            allow: RoleConditions {
                db_labels: [("env".to_string(), strings(&["staging", "^prod-.*$"]))].into(),
                db_names: strings(&["analytics", "{{internal.db_names}}"]),
                db_users: strings(&["reader", "teleport-redshift-serverless-access"]),
                db_roles: strings(&["reader", "{{external.db_roles}}"]),
                db_permissions: vec![DbPermission {
                    match_: PermissionMatch {
                        object_kind: Some("table".into()),
                        schema: Some("public".into()),
                        name: None,
                    },
                    permissions: strings(&["SELECT"]),
                }],
            },
            deny: RoleConditions {
                db_labels: [("*".to_string(), strings(&["*"]))].into(),
                db_users: strings(&["postgres"]),
                ..RoleConditions::default()
            },
        };
        assert_eq!(roles, [want]);
    }

    #[test]
    fn parses_several_documents_and_skips_empty_ones() {
        let text = "---\nkind: role\nversion: v5\nmetadata: {name: a}\n---\n---\nkind: role\nversion: v6\nmetadata: {name: b}\nspec:\n  options: {create_db_user_mode: off}\n---\n";
        let roles = Role::parse_documents(text).unwrap();
        let names: Vec<_> = roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(roles[1].options.create_db_user_mode, AutoUserMode::Off);
        assert_eq!(
            roles[0],
            Role {
                name: "a".into(),
                options: RoleOptions::default(),
                allow: RoleConditions::default(),
                deny: RoleConditions::default()
            }
        );
        assert!(Role::parse_documents("").unwrap().is_empty());
    }

    #[test]
    fn values_may_be_a_string_or_a_list() {
        let text = r#"
kind: role
version: v7
metadata: {name: short}
spec:
  options: {create_db_user_mode: best_effort_drop}
  allow:
    db_labels: {'*': '*', env: [a, b], team: data}
    db_users: reader
    db_names: [app]
    db_roles: viewer
    db_permissions:
      - match: {name: events}
        permissions: INSERT
"#;
        let role = &Role::parse_documents(text).unwrap()[0];
        assert_eq!(
            role.options.create_db_user_mode,
            AutoUserMode::BestEffortDrop
        );
        let labels: BTreeMap<String, Vec<String>> = [
            ("*".to_string(), strings(&["*"])),
            ("env".to_string(), strings(&["a", "b"])),
            ("team".to_string(), strings(&["data"])),
        ]
        .into();
        assert_eq!(role.allow.db_labels, labels);
        assert_eq!(role.allow.db_users, ["reader"]);
        assert_eq!(role.allow.db_names, ["app"]);
        assert_eq!(role.allow.db_roles, ["viewer"]);
        assert_eq!(role.allow.db_permissions[0].permissions, ["INSERT"]);
    }

    /// Wraps `spec` (indented by two spaces) in a role named `r`.
    fn role_with_spec(spec: &str) -> String {
        format!("kind: role\nversion: v7\nmetadata: {{name: r}}\nspec:\n{spec}")
    }

    #[test]
    fn invalid_roles_are_refused_with_the_role_and_field_named() {
        #[rustfmt::skip]
        let cases: &[(String, &str)] = &[
            (role_with_spec("  allow:\n    db_user: [reader]\n"),
                r#"role "r": spec.allow: unknown field `db_user`"#),
            (role_with_spec("  deny:\n    db_users: [postgres]\n"),
                r#"role "r": spec.deny has no db_labels, so it would deny nothing; write db_labels: {"*": "*"} to deny on every database"#),
            (role_with_spec("  deny:\n    db_roles: [admin]\n"),
                r#"role "r": spec.deny has no db_labels"#),
            (role_with_spec("  deny:\n    db_labels: {env: []}\n    db_names: [x]\n"),
                r#"role "r": spec.deny.db_labels.env lists no values, so the rule would deny nothing"#),
            (role_with_spec("  deny:\n    db_name: [x]\n"),
                r#"role "r": spec.deny: unknown field `db_name`"#),
            (role_with_spec("  alow: {}\n"),
                r#"role "r": spec: unknown field `alow`"#),
            (role_with_spec("  options: {create_db_user: true}\n"),
                r#"role "r": spec.options: unknown field `create_db_user`"#),
            (role_with_spec("  options: {create_db_user_mode: on}\n"),
                r#"role "r": spec.options.create_db_user_mode: unknown variant `on`"#),
            (role_with_spec("  options: {max_session_ttl: forever}\n"),
                r#"role "r": spec.options.max_session_ttl: "#),
            (role_with_spec("  options: {max_statement_duration: soon}\n"),
                r#"role "r": spec.options.max_statement_duration: "#),
            (role_with_spec("  options: {max_statement_duration: 0s}\n"),
                r#"role "r": spec.options.max_statement_duration must be longer than zero; leave it out for no limit"#),
            (role_with_spec("  options: {max_idle_in_transaction: 0m}\n"),
                r#"role "r": spec.options.max_idle_in_transaction must be longer than zero"#),
            (role_with_spec("  options: {db_session_defaults: {statement_timeout: 5 minutes}}\n"),
                r#"role "r": spec.options.db_session_defaults.statement_timeout: "5 minutes" is not a PostgreSQL duration (e.g. 5min, 30s, 500ms; 0 for none)"#),
            (role_with_spec("  options: {db_session_defaults: {default_transaction_read_only: maybe}}\n"),
                r#"role "r": spec.options.db_session_defaults.default_transaction_read_only: "maybe" is not on or off"#),
            (role_with_spec("  options: {db_session_defaults: {'search path': x}}\n"),
                r#"role "r": spec.options.db_session_defaults."search path": not a PostgreSQL setting name"#),
            (role_with_spec("  options: {db_session_defaults: {options: '-c x=y'}}\n"),
                r#"role "r": spec.options.db_session_defaults.options: a startup-packet field, not a setting a role can give"#),
            (role_with_spec("  options: {db_session_defaults: {statement_timeout: [1]}}\n"),
                r#"role "r": spec.options.db_session_defaults: "#),
            (role_with_spec("  allow:\n    db_permissions:\n      - match: {table: x}\n        permissions: [SELECT]\n"),
                r#"role "r": spec.allow.db_permissions[0].match: unknown field `table`"#),
            (role_with_spec("  allow:\n    db_users: {a: b}\n"),
                r#"role "r": spec.allow.db_users: invalid type: map, expected a string or a list of strings"#),
            (role_with_spec("  allow:\n    db_labels: {env: '^prod-($'}\n"),
                r#"role "r": spec.allow.db_labels.env: invalid regular expression "^prod-($""#),
            (role_with_spec("  deny:\n    db_labels: {env: 'prod-['}\n"),
                r#"role "r": spec.deny.db_labels.env: invalid glob "prod-[""#),
            (role_with_spec("  allow:\n    db_labels: {'{{external.k}}': v}\n"),
                r#"role "r": spec.allow.db_labels: templates are not supported in label keys"#),
            (role_with_spec("  deny:\n    db_labels: {env: '{{internal.env'}\n"),
                r#"role "r": spec.deny.db_labels: malformed template"#),
            (role_with_spec("  deny:\n    db_labels: {'*': '*'}\n    db_roles: ['{{intenral.roles}}']\n"),
                r#"role "r": spec.deny.db_roles: malformed template"#),
            (role_with_spec("  deny:\n    db_permissions:\n      - match: {schema: public}\n        permissions: [DELETE]\n"),
                r#"role "r": spec.deny.db_permissions is not supported"#),
            ("kind: role\nversion: v7\nmetadata: {name: r}\nspce: {}\n".into(),
                r#"role "r": unknown field `spce`"#),
            ("kind: role\nversion: v7\nmetadata: {name: r, namespace: x}\n".into(),
                r#"role "r": metadata: unknown field `namespace`"#),
            ("kind: user\nversion: v7\nmetadata: {name: r}\n".into(),
                r#"role "r": kind is "user", expected "role""#),
            ("version: v7\nmetadata: {name: r}\n".into(),
                r#"role "r": kind is missing"#),
            ("kind: role\nversion: v4\nmetadata: {name: r}\n".into(),
                r#"role "r": version "v4" is not supported, expected one of v5, v6, v7"#),
            ("kind: role\nmetadata: {name: r}\n".into(),
                r#"role "r": version (missing) is not supported"#),
            ("kind: role\nversion: v7\nmetadata: {name: ' '}\n".into(),
                r#"role " ": the role name is empty"#),
            ("kind: role\nversion: v7\nmetadata: {}\n".into(),
                "YAML document 1: metadata.name is missing or not a string"),
            ("kind: role\nversion: v7\nmetadata: {name: ok}\n---\nkind: [role\n".into(),
                "YAML document 2: "),
        ];
        for (text, want) in cases {
            let err = Role::parse_documents(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "got {err:?}, want prefix {want:?}");
        }
    }

    #[test]
    fn parses_statement_limits_and_session_defaults() {
        let text = role_with_spec(
            "  options:\n    max_statement_duration: 10m\n    max_idle_in_transaction: 15m\n    db_session_defaults:\n      statement_timeout: 5min\n      default_transaction_read_only: true\n      lock_timeout: 2000\n      search_path: app\n",
        );
        let options = &Role::parse_documents(&text).unwrap()[0].options;
        assert_eq!(
            options.max_statement_duration,
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            options.max_idle_in_transaction,
            Some(Duration::from_secs(900))
        );
        let want: SessionDefaults = [
            ("default_transaction_read_only", "on"),
            ("lock_timeout", "2000"),
            ("search_path", "app"),
            ("statement_timeout", "5min"),
        ]
        .into();
        assert_eq!(options.db_session_defaults, want);
    }

    #[test]
    fn malformed_allow_templates_load_and_are_dropped_later() {
        let text = role_with_spec("  allow:\n    db_users: ['{{internal.users', reader]\n");
        let role = &Role::parse_documents(&text).unwrap()[0];
        assert_eq!(role.allow.db_users, ["{{internal.users", "reader"]);
    }
}
