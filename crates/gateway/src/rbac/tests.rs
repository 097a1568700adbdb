//! Access decisions end to end: roles written as YAML, an identity, a
//! database, and the outcome a user relies on.

use std::collections::BTreeMap;
use std::time::Duration;

use postern_api::Identity;
use postern_api::identity::Traits;
use postern_api::wire::{AllowedValues, CatalogEntry};

use super::*;

fn role_set(yaml: &str) -> RoleSet {
    RoleSet::from_roles(RoleSet::from_yaml_documents(yaml).unwrap()).unwrap()
}

type TraitList<'a> = &'a [(&'a str, &'a [&'a str])];

fn trait_map(pairs: TraitList) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

fn identity(roles: &[&str], internal: TraitList, external: TraitList) -> Identity {
    Identity {
        username: "alice".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        traits: Traits {
            internal: trait_map(internal),
            external: trait_map(external),
        },
        expires_unix: 1_900_000_000,
    }
}

fn checker(set: &RoleSet, roles: &[&str]) -> AccessChecker {
    set.checker(&identity(roles, &[], &[])).unwrap()
}

/// A database as the gateway configuration describes it.
struct Db {
    name: &'static str,
    labels: BTreeMap<String, String>,
    aws_account_id: Option<&'static str>,
}

impl Db {
    fn new(name: &'static str, labels: &[(&str, &str)]) -> Self {
        Self {
            name,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            aws_account_id: None,
        }
    }

    fn aws(mut self, account: &'static str) -> Self {
        self.aws_account_id = Some(account);
        self
    }

    fn target(&self) -> Target<'_> {
        Target {
            name: self.name,
            labels: &self.labels,
            aws_account_id: self.aws_account_id,
        }
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// Expected outcome of `check`: allowed, or the user-facing denial text.
type Outcome = Result<(), &'static str>;

/// Database, db user, db name, expected outcome.
type Case<'a> = (&'a Db, &'a str, Option<&'a str>, Outcome);

fn assert_checks(checker: &AccessChecker, cases: &[Case], context: &str) {
    for (db, user, name, want) in cases {
        let got = checker
            .check(&db.target(), user, *name)
            .map(drop)
            .map_err(|e| e.to_string());
        let want = want.map_err(str::to_owned);
        assert_eq!(got, want, "{context}: {} as {user:?} / {name:?}", db.name);
    }
}

const ROLES: &str = r#"
kind: role
version: v7
metadata: {name: dev}
spec:
  allow:
    db_labels: {env: [staging, "dev-*"]}
    db_users: [reader, writer]
    db_names: [app, reader]
---
kind: role
version: v7
metadata: {name: all-reader}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users: reader
    db_names: analytics
---
kind: role
version: v7
metadata: {name: prod-admin}
spec:
  allow:
    db_labels: {env: "^prod(-.*)?$"}
    db_users: ['*']
    db_names: ['*']
  deny:
    db_labels: {env: prod}
    db_users: [postgres]
    db_names: [secrets]
---
kind: role
version: v7
metadata: {name: contractors}
spec:
  deny:
    db_labels: {tier: restricted}
    db_names: ['*']
---
kind: role
version: v7
metadata: {name: empty-deny}
spec:
  deny:
    db_labels: {'*': '*'}
---
kind: role
version: v7
metadata: {name: no-labels}
spec:
  allow:
    db_users: ['*']
    db_names: ['*']
"#;

#[test]
fn allow_and_deny_rules() {
    let set = role_set(ROLES);
    let staging = Db::new("staging", &[("env", "staging")]);
    let dev = Db::new("dev", &[("env", "dev-eu")]);
    let prod = Db::new("prod", &[("env", "prod")]);
    let prod_eu = Db::new("prod-eu", &[("env", "prod-eu")]);
    let production = Db::new("production", &[("env", "production")]);
    let restricted = Db::new("vault", &[("env", "prod"), ("tier", "restricted")]);
    let unlabelled = Db::new("bare", &[]);

    #[rustfmt::skip]
    let table: &[(&[&str], &[Case])] = &[
        (&["dev"], &[
            (&staging, "reader", Some("app"), Ok(())),
            (&dev, "writer", Some("app"), Ok(())),                      // label glob
            (&prod, "reader", Some("app"),
                Err(r#"access to database "prod" denied: none of your roles allows this database"#)),
            (&staging, "postgres", Some("app"),
                Err(r#"access to database "staging" denied: no role allows db user "postgres""#)),
            (&staging, "reader", Some("x"),
                Err(r#"access to database "staging" denied: no role allows db name "x""#)),
            (&staging, "reader", None, Ok(())),                         // name defaults to user
            (&staging, "writer", None,
                Err(r#"access to database "staging" denied: no role allows db name "writer""#)),
        ]),
        // User from one role, name from another: not a grant.
        (&["dev", "all-reader"], &[
            (&staging, "reader", Some("analytics"), Ok(())),
            (&staging, "writer", Some("app"), Ok(())),
            (&staging, "writer", Some("analytics"),
                Err(r#"access to database "staging" denied: no role allows db user "writer" together with db name "analytics""#)),
            (&unlabelled, "reader", Some("analytics"), Ok(())),         // '*': '*' matches no labels
            (&unlabelled, "writer", Some("app"),
                Err(r#"access to database "bare" denied: no role allows db user "writer""#)),
        ]),
        (&["prod-admin"], &[
            (&prod, "anyone", Some("anything"), Ok(())),
            (&prod, "postgres", Some("app"),
                Err(r#"access to database "prod" is denied by role "prod-admin" for db user "postgres""#)),
            (&prod, "reader", Some("secrets"),
                Err(r#"access to database "prod" is denied by role "prod-admin" for db name "secrets""#)),
            (&prod, "secrets", None,                                    // defaulted name is checked too
                Err(r#"access to database "prod" is denied by role "prod-admin" for db name "secrets""#)),
            (&prod_eu, "postgres", Some("secrets"), Ok(())),            // regex allow; deny labels differ
            (&production, "reader", Some("app"),                        // regex is anchored
                Err(r#"access to database "production" denied: none of your roles allows this database"#)),
        ]),
        // Deny first: another role's allow-everything does not help.
        (&["prod-admin", "contractors"], &[
            (&restricted, "reader", Some("app"),
                Err(r#"access to database "vault" is denied by role "contractors" for db name "app""#)),
            (&prod, "reader", Some("app"), Ok(())),
        ]),
        // A deny with matching labels but no users or names denies nothing.
        (&["all-reader", "empty-deny"], &[
            (&staging, "reader", Some("analytics"), Ok(())),
        ]),
        // No db_labels: the role selects no database at all.
        (&["no-labels"], &[
            (&staging, "reader", Some("app"),
                Err(r#"access to database "staging" denied: none of your roles allows this database"#)),
            (&unlabelled, "reader", Some("app"),
                Err(r#"access to database "bare" denied: none of your roles allows this database"#)),
        ]),
        (&[], &[
            (&staging, "reader", Some("app"),
                Err(r#"access to database "staging" denied: none of your roles allows this database"#)),
        ]),
    ];
    for (roles, cases) in table {
        assert_checks(&checker(&set, roles), cases, &format!("{roles:?}"));
    }
}

const TEMPLATED: &str = r#"
kind: role
version: v7
metadata: {name: templated}
spec:
  allow:
    db_labels:
      team: "{{external.team}}"
      env: "{{internal.envs}}"
    db_users: ["{{internal.db_users}}", "svc-{{ external.team }}-rw"]
    db_names: ["{{internal.db_names}}", shared, "{{internal.db_names"]
  deny:
    db_labels: {'*': '*'}
    db_users: ["{{internal.blocked_users}}", postgres]
    db_names: ["{{external.blocked_dbs}}"]
"#;

#[test]
fn templates_expand_from_traits() {
    let set = role_set(TEMPLATED);
    let blue = Db::new("blue", &[("team", "blue"), ("env", "staging")]);
    let red = Db::new("red", &[("team", "red"), ("env", "staging")]);
    let blue_prod = Db::new("blue-prod", &[("team", "blue"), ("env", "prod-1")]);

    let full = identity(
        &["templated"],
        &[
            ("db_users", &["alice", "bob"]),
            ("db_names", &["sales"]),
            ("envs", &["staging", "^prod-.*$"]),
            ("blocked_users", &["bob"]),
        ],
        &[("team", &["blue"]), ("blocked_dbs", &["payroll"])],
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&blue, "alice", Some("sales"), Ok(())),
        (&blue, "svc-blue-rw", Some("shared"), Ok(())),             // prefix/suffix
        (&blue_prod, "alice", Some("shared"),                       // a trait is no regex
            Err(r#"access to database "blue-prod" denied: none of your roles allows this database"#)),
        (&red, "alice", Some("sales"),
            Err(r#"access to database "red" denied: none of your roles allows this database"#)),
        (&blue, "bob", Some("sales"),                               // deny from internal trait
            Err(r#"access to database "blue" is denied by role "templated" for db user "bob""#)),
        (&blue, "alice", Some("payroll"),                           // deny from external trait
            Err(r#"access to database "blue" is denied by role "templated" for db name "payroll""#)),
        (&blue, "alice", Some("{{internal.db_names"),               // malformed allow value dropped
            Err(r#"access to database "blue" denied: no role allows db name "{{internal.db_names""#)),
    ];
    assert_checks(&set.checker(&full).unwrap(), cases, "all traits");

    // Without the allow traits the values are dropped, never widened: the
    // `team` label matcher keeps its key and so selects no database.
    let bare = identity(&["templated"], &[], &[]);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&blue, "alice", Some("shared"),
            Err(r#"access to database "blue" denied: none of your roles allows this database"#)),
    ];
    assert_checks(&set.checker(&bare).unwrap(), cases, "no traits");

    // Missing deny traits deny nothing of their own, but the rest of the
    // deny rule stays in force and nothing becomes allowed by it.
    let no_deny_traits = identity(
        &["templated"],
        &[("envs", &["staging"])],
        &[("team", &["blue"])],
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&blue, "svc-blue-rw", Some("shared"), Ok(())),
        (&blue, "postgres", Some("shared"),
            Err(r#"access to database "blue" is denied by role "templated" for db user "postgres""#)),
        (&blue, "bob", Some("shared"),
            Err(r#"access to database "blue" denied: no role allows db user "bob""#)),
        (&blue, "{{internal.db_users}}", Some("shared"),
            Err(r#"access to database "blue" denied: no role allows db user "{{internal.db_users}}""#)),
        (&blue, "svc-blue-rw", Some("{{external.blocked_dbs}}"),
            Err(r#"access to database "blue" denied: no role allows db name "{{external.blocked_dbs}}""#)),
    ];
    assert_checks(
        &set.checker(&no_deny_traits).unwrap(),
        cases,
        "no deny traits",
    );
}

#[test]
fn malformed_deny_template_is_refused_at_load() {
    let yaml = r#"
kind: role
version: v7
metadata: {name: guard}
spec:
  deny:
    db_labels: {'*': '*'}
    db_users: ["{{internal.blocked}"]
"#;
    let err = RoleSet::from_yaml_documents(yaml).unwrap_err().to_string();
    assert!(
        err.starts_with(r#"role "guard": spec.deny.db_users: malformed template"#),
        "{err}"
    );
}

const REDSHIFT: &str = r#"
kind: role
version: v7
metadata: {name: redshift}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users:
      - analyst
      - arn:aws:iam::111111111111:role/etl/loader
    db_names: [dev]
  deny:
    db_labels: {'*': '*'}
    db_users: ["arn:aws:iam::111111111111:role/admin"]
"#;

#[test]
fn iam_role_names_and_arns() {
    let set = role_set(REDSHIFT);
    let checker = checker(&set, &["redshift"]);
    let aws = Db::new("warehouse", &[]).aws("111111111111");
    let plain = Db::new("plain", &[]);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&aws, "analyst", Some("dev"), Ok(())),
        (&aws, "arn:aws:iam::111111111111:role/analyst", Some("dev"), Ok(())),
        (&aws, "arn:aws:iam::111111111111:role/team/analyst", Some("dev"), Ok(())),
        (&aws, "loader", Some("dev"), Ok(())),
        (&aws, "arn:aws:iam::111111111111:role/etl/loader", Some("dev"), Ok(())),
        (&aws, "arn:aws:iam::222222222222:role/analyst", Some("dev"),
            Err(r#"access to database "warehouse" denied: no role allows db user "arn:aws:iam::222222222222:role/analyst""#)),
        (&aws, "admin", Some("dev"),                                 // deny by ARN hits the name
            Err(r#"access to database "warehouse" is denied by role "redshift" for db user "admin""#)),
        (&plain, "arn:aws:iam::111111111111:role/analyst", Some("dev"),
            Err(r#"access to database "plain" denied: no role allows db user "arn:aws:iam::111111111111:role/analyst""#)),
        (&plain, "loader", Some("dev"),
            Err(r#"access to database "plain" denied: no role allows db user "loader""#)),
    ];
    assert_checks(&checker, cases, "redshift");
}

const AUTO: &str = r#"
kind: role
version: v7
metadata: {name: auto-keep}
spec:
  options: {create_db_user_mode: keep}
  allow:
    db_labels: {'*': '*'}
    db_users: [someone]
    db_names: [app]
    db_roles: [reader, "{{internal.db_roles}}"]
    db_permissions:
      - match: {object_kind: table, schema: public}
        permissions: [SELECT]
---
kind: role
version: v7
metadata: {name: auto-drop}
spec:
  options: {create_db_user_mode: best_effort_drop}
  allow:
    db_labels: {env: prod}
    db_names: [app]
    db_roles: [writer, admin, '*']
    db_permissions:
      - match: {object_kind: table, schema: public}
        permissions: [SELECT]
      - match: {object_kind: table, schema: audit, name: events}
        permissions: [INSERT]
---
kind: role
version: v7
metadata: {name: no-admin}
spec:
  deny:
    db_labels: {env: prod}
    db_roles: [admin]
---
kind: role
version: v7
metadata: {name: no-roles}
spec:
  deny:
    db_labels: {'*': '*'}
    db_roles: ['*']
---
kind: role
version: v7
metadata: {name: manual}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users: [reader]
    db_names: [app]
---
kind: role
version: v7
metadata: {name: not-alice}
spec:
  deny:
    db_labels: {'*': '*'}
    db_users: [alice]
"#;

fn auto_checker(roles: &[&str]) -> AccessChecker {
    role_set(AUTO)
        .checker(&identity(roles, &[("db_roles", &["analyst"])], &[]))
        .unwrap()
}

#[test]
fn auto_user_mode_is_the_strongest_of_the_selecting_roles() {
    let dev = Db::new("dev", &[("env", "dev")]);
    let prod = Db::new("prod", &[("env", "prod")]);
    #[rustfmt::skip]
    let cases: &[(&[&str], &Db, AutoUserMode)] = &[
        (&["manual"], &prod, AutoUserMode::Off),
        (&["auto-keep", "manual"], &dev, AutoUserMode::Keep),
        (&["auto-keep", "auto-drop"], &dev, AutoUserMode::Keep),   // auto-drop does not select dev
        (&["auto-keep", "auto-drop"], &prod, AutoUserMode::BestEffortDrop),
        (&["auto-drop", "auto-keep"], &prod, AutoUserMode::BestEffortDrop),
        (&[], &prod, AutoUserMode::Off),
    ];
    for (roles, db, want) in cases {
        assert_eq!(
            auto_checker(roles).auto_user_mode(&db.target()),
            *want,
            "{roles:?} on {}",
            db.name
        );
    }
    assert!(AutoUserMode::Off < AutoUserMode::Keep);
    assert!(AutoUserMode::Keep < AutoUserMode::BestEffortDrop);
    let names = [
        AutoUserMode::Off,
        AutoUserMode::Keep,
        AutoUserMode::BestEffortDrop,
    ]
    .map(AutoUserMode::as_str);
    assert_eq!(names, ["off", "keep", "best_effort_drop"]);
}

#[test]
fn auto_provisioning_forces_the_username() {
    let dev = Db::new("dev", &[("env", "dev")]);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&dev, "alice", Some("app"), Ok(())),                        // db_users does not list alice
        (&dev, "someone", Some("app"),                               // ... and its entries don't count
            Err(r#"access to database "dev" denied: database users are created automatically there; connect as "alice", not "someone""#)),
        (&dev, "reader", Some("app"),                                // nor another role's
            Err(r#"access to database "dev" denied: database users are created automatically there; connect as "alice", not "reader""#)),
        (&dev, "alice", None,
            Err(r#"access to database "dev" denied: no role allows db name "alice""#)),
        (&dev, "alice", Some("other"),
            Err(r#"access to database "dev" denied: no role allows db name "other""#)),
    ];
    assert_checks(&auto_checker(&["auto-keep", "manual"]), cases, "auto");
    // Without auto-provisioning the manual role's users apply again.
    assert_checks(
        &auto_checker(&["manual"]),
        &[(&dev, "reader", Some("app"), Ok(()))],
        "manual",
    );
    // Deny db_users still applies to the username.
    assert_checks(
        &auto_checker(&["auto-keep", "not-alice"]),
        &[(
            &dev,
            "alice",
            Some("app"),
            Err(r#"access to database "dev" is denied by role "not-alice" for db user "alice""#),
        )],
        "denied username",
    );
}

#[test]
fn db_roles_are_the_union_minus_denied() {
    let dev = Db::new("dev", &[("env", "dev")]);
    let prod = Db::new("prod", &[("env", "prod")]);
    #[rustfmt::skip]
    let cases: &[(&[&str], &Db, &str, &[&str])] = &[
        (&["auto-keep"], &dev, "alice", &["analyst", "reader"]),     // template from internal trait
        (&["auto-keep", "auto-drop"], &dev, "alice", &["analyst", "reader"]),
        (&["auto-keep", "auto-drop"], &prod, "alice", &["admin", "analyst", "reader", "writer"]),
        (&["auto-keep", "auto-drop", "no-admin"], &prod, "alice", &["analyst", "reader", "writer"]),
        (&["auto-keep", "auto-drop", "no-admin"], &dev, "alice", &["analyst", "reader"]),
        (&["auto-keep", "no-roles"], &dev, "alice", &[]),
        (&["manual"], &dev, "reader", &[]),
    ];
    for (roles, db, user, want) in cases {
        let checker = auto_checker(roles);
        let target = db.target();
        let allowed = checker.check(&target, user, Some("app")).unwrap();
        assert_eq!(
            allowed.db_roles(),
            strings(want),
            "{roles:?} on {}",
            db.name
        );
    }
}

/// Selected roles, or the user-facing refusal.
type SelectOutcome = Result<&'static [&'static str], &'static str>;

#[test]
fn select_db_roles_takes_a_subset() {
    let prod = Db::new("prod", &[("env", "prod")]);
    let checker = auto_checker(&["auto-keep", "auto-drop", "no-admin"]);
    let target = prod.target();
    let allowed = checker.check(&target, "alice", Some("app")).unwrap();
    #[rustfmt::skip]
    let cases: &[(&[&str], SelectOutcome)] = &[
        (&[], Ok(&["analyst", "reader", "writer"])),
        (&["reader"], Ok(&["reader"])),
        (&["writer", "reader", "writer"], Ok(&["reader", "writer"])),
        (&["reader", "admin"], Err(r#"db role "admin" is not allowed; allowed: [analyst, reader, writer]"#)),
        (&["dba"], Err(r#"db role "dba" is not allowed; allowed: [analyst, reader, writer]"#)),
    ];
    for (requested, want) in cases {
        let got = allowed
            .select_db_roles(&strings(requested))
            .map_err(|e| e.to_string());
        let want = want.map(strings).map_err(str::to_owned);
        assert_eq!(got, want, "{requested:?}");
    }
    let none = auto_checker(&["manual"]);
    let err = none
        .check(&target, "reader", Some("app"))
        .unwrap()
        .select_db_roles(&strings(&["reader"]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"db role "reader" is not allowed; allowed: []"#
    );
}

#[test]
fn db_permissions_of_allowing_roles() {
    let permission =
        |kind: &str, schema: &str, name: Option<&str>, privileges: &[&str]| DbPermission {
            match_: PermissionMatch {
                object_kind: Some(kind.into()),
                schema: Some(schema.into()),
                name: name.map(Into::into),
            },
            permissions: strings(privileges),
        };
    let select = permission("table", "public", None, &["SELECT"]);
    let insert = permission("table", "audit", Some("events"), &["INSERT"]);
    let permissions = |roles: &[&str], db: &Db, user: &str| {
        auto_checker(roles)
            .check(&db.target(), user, Some("app"))
            .unwrap()
            .db_permissions()
    };
    let dev = Db::new("dev", &[("env", "dev")]);
    let prod = Db::new("prod", &[("env", "prod")]);
    let both = &["auto-keep", "auto-drop"];
    assert_eq!(permissions(both, &dev, "alice"), vec![select.clone()]);
    assert_eq!(permissions(both, &prod, "alice"), [select, insert]);
    assert_eq!(permissions(&["manual"], &prod, "reader"), []);
}

const CATALOG: &str = r#"
kind: role
version: v7
metadata: {name: wide}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users: ['*', reader]
    db_names: ['*']
---
kind: role
version: v7
metadata: {name: narrow}
spec:
  allow:
    db_labels: {env: prod}
    db_users: [analyst, postgres, reader]
    db_names: [sales]
    db_roles: [viewer]
---
kind: role
version: v7
metadata: {name: guard}
spec:
  deny:
    db_labels: {env: prod}
    db_users: [postgres, dba]
    db_names: [secrets]
---
kind: role
version: v7
metadata: {name: lockout}
spec:
  deny:
    db_labels: {env: prod}
    db_users: ['*']
---
kind: role
version: v7
metadata: {name: no-names}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users: [reader]
---
kind: role
version: v7
metadata: {name: auto}
spec:
  options: {create_db_user_mode: best_effort_drop}
  allow:
    db_labels: {env: prod}
    db_users: [ignored]
    db_names: [sales]
    db_roles: [viewer, editor]
"#;

fn values(allowed: &[&str], wildcard: bool, denied: &[&str]) -> AllowedValues {
    AllowedValues {
        allowed: strings(allowed),
        wildcard,
        denied: strings(denied),
    }
}

#[test]
fn catalog_spells_out_users_and_names() {
    let set = role_set(CATALOG);
    let prod = Db::new("prod", &[("env", "prod")]);
    let staging = Db::new("staging", &[("env", "staging")]);
    type Spelled = Option<(
        AllowedValues,
        AllowedValues,
        &'static [&'static str],
        &'static str,
    )>;
    #[rustfmt::skip]
    let cases: Vec<(&[&str], &Db, Spelled)> = vec![
        (&["narrow", "guard"], &prod, Some((
            values(&["analyst", "reader"], false, &["dba", "postgres"]),
            values(&["sales"], false, &["secrets"]),
            &["viewer"], "off"))),
        (&["wide", "narrow", "guard"], &prod, Some((
            values(&["analyst", "reader"], true, &["dba", "postgres"]),
            values(&["sales"], true, &["secrets"]),
            &["viewer"], "off"))),
        (&["wide", "guard"], &staging, Some((
            values(&["reader"], true, &[]),
            values(&[], true, &[]),
            &[], "off"))),
        (&["auto", "guard"], &prod, Some((
            values(&["alice"], false, &[]),
            values(&["sales"], false, &["secrets"]),
            &["editor", "viewer"], "best_effort_drop"))),
        (&["narrow"], &staging, None),                               // labels don't select it
        (&["wide", "lockout"], &prod, None),                         // every user denied
        (&["auto", "lockout"], &prod, None),                         // ... the username too
        (&["no-names"], &staging, None),                             // no db name allowed
        (&[], &prod, None),
    ];
    for (roles, db, want) in cases {
        let got = checker(&set, roles)
            .catalog_entry(&db.target(), "desc", "postgres", "self-hosted")
            .map(|e| (e.db_users, e.db_names, e.db_roles, e.auto_user_mode));
        let want =
            want.map(|(users, names, roles, mode)| (users, names, strings(roles), mode.to_owned()));
        assert_eq!(got, want, "{roles:?} on {}", db.name);
    }
}

#[test]
fn catalog_entry_describes_the_database() {
    let set = role_set(CATALOG);
    let prod = Db::new("prod", &[("env", "prod")]);
    let entry = checker(&set, &["narrow"])
        .catalog_entry(&prod.target(), "Production", "postgres", "rds-postgres")
        .unwrap();
    assert_eq!(
        entry,
        CatalogEntry {
            name: "prod".into(),
            description: "Production".into(),
            protocol: "postgres".into(),
            kind: "rds-postgres".into(),
            labels: prod.labels.clone(),
            db_users: values(&["analyst", "postgres", "reader"], false, &[]),
            db_names: values(&["sales"], false, &[]),
            db_roles: strings(&["viewer"]),
            auto_user_mode: "off".into(),
            limits: Default::default(),
        }
    );
}

#[test]
fn catalog_exceptions_understand_iam_arns() {
    let set = role_set(REDSHIFT);
    let aws = Db::new("warehouse", &[]).aws("111111111111");
    let yaml = r#"
kind: role
version: v7
metadata: {name: admins-too}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users: [admin, analyst]
    db_names: [dev]
"#;
    let mut roles = RoleSet::from_yaml_documents(REDSHIFT).unwrap();
    roles.extend(RoleSet::from_yaml_documents(yaml).unwrap());
    let set_with_admin = RoleSet::from_roles(roles).unwrap();
    let entry = checker(&set_with_admin, &["redshift", "admins-too"])
        .catalog_entry(&aws.target(), "", "postgres", "redshift-serverless")
        .unwrap();
    assert_eq!(
        entry.db_users,
        values(
            &["analyst", "arn:aws:iam::111111111111:role/etl/loader"],
            false,
            &["arn:aws:iam::111111111111:role/admin"]
        )
    );
    assert!(
        checker(&set, &["redshift"])
            .catalog_entry(&aws.target(), "", "postgres", "redshift-serverless")
            .is_some()
    );
}

#[test]
fn unknown_role_in_identity_is_an_error() {
    let set = role_set(ROLES);
    let err = set
        .checker(&identity(&["dev", "retired"], &[], &[]))
        .unwrap_err();
    assert!(
        matches!(&err, RbacError::UnknownRole { role } if role == "retired"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"role "retired" of the session is not defined on the gateway; log in again"#
    );
}

#[test]
fn max_session_ttl_is_the_shortest() {
    let yaml = r#"
kind: role
version: v7
metadata: {name: short}
spec: {options: {max_session_ttl: 1h30m}}
---
kind: role
version: v7
metadata: {name: long}
spec: {options: {max_session_ttl: 12h}}
---
kind: role
version: v7
metadata: {name: unset}
"#;
    let set = role_set(yaml);
    let ttl = |roles: &[&str]| checker(&set, roles).max_session_ttl();
    assert_eq!(
        ttl(&["long", "short", "unset"]),
        Some(Duration::from_secs(90 * 60))
    );
    assert_eq!(ttl(&["long"]), Some(Duration::from_secs(12 * 3600)));
    assert_eq!(ttl(&["unset"]), None);
}

/// Roles whose every value comes from an identity-provider claim.
const FROM_CLAIMS: &str = r#"
kind: role
version: v7
metadata: {name: from-claims}
spec:
  allow:
    db_labels: {env: "{{external.env}}"}
    db_users: ["{{external.db_user}}"]
    db_names: ["{{external.db_name}}"]
---
kind: role
version: v7
metadata: {name: prefixed}
spec:
  allow:
    db_labels: {env: "prod-{{external.region}}"}
    db_users: [reader]
    db_names: [app]
---
kind: role
version: v7
metadata: {name: blocked-by-claim}
spec:
  allow:
    db_labels: {'*': '*'}
    db_users: ['*']
    db_names: ['*']
  deny:
    db_labels: {'*': '*'}
    db_users: ["{{external.blocked}}"]
"#;

#[test]
fn trait_values_are_literals_not_patterns() {
    let set = role_set(FROM_CLAIMS);
    let prod = Db::new("prod", &[("env", "prod")]);
    let prod_eu = Db::new("prod-eu", &[("env", "prod-eu")]);
    let as_claims =
        |roles: &[&str], claims: TraitList| set.checker(&identity(roles, &[], claims)).unwrap();

    // `*`, a regex and a glob sent as claim values match only themselves.
    let wild = as_claims(
        &["from-claims"],
        &[
            ("env", &["^.*$", "*"]),
            ("db_user", &["*"]),
            ("db_name", &["*"]),
        ],
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&prod, "postgres", Some("app"),
            Err(r#"access to database "prod" denied: none of your roles allows this database"#)),
        (&Db::new("odd", &[("env", "^.*$")]), "postgres", Some("app"),
            Err(r#"access to database "odd" denied: no role allows db user "postgres""#)),
        (&Db::new("odd", &[("env", "^.*$")]), "*", Some("*"), Ok(())),   // the literal itself
    ];
    assert_checks(&wild, cases, "wildcard claims");

    let glob = as_claims(
        &["from-claims"],
        &[
            ("env", &["prod*"]),
            ("db_user", &["reader"]),
            ("db_name", &["app"]),
        ],
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&prod_eu, "reader", Some("app"),
            Err(r#"access to database "prod-eu" denied: none of your roles allows this database"#)),
    ];
    assert_checks(&glob, cases, "glob claim");

    // Text around the template makes the whole value a literal.
    let prefixed = as_claims(&["prefixed"], &[("region", &["*"])]);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&prod_eu, "reader", Some("app"),
            Err(r#"access to database "prod-eu" denied: none of your roles allows this database"#)),
        (&Db::new("star", &[("env", "prod-*")]), "reader", Some("app"), Ok(())),
    ];
    assert_checks(&prefixed, cases, "prefixed claim");
    let honest = as_claims(&["prefixed"], &[("region", &["eu"])]);
    assert_checks(
        &honest,
        &[(&prod_eu, "reader", Some("app"), Ok(()))],
        "honest region",
    );

    // A deny expanded from a claim denies exactly its literal.
    let blocked = as_claims(&["blocked-by-claim"], &[("blocked", &["*"])]);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&prod, "alice", Some("app"), Ok(())),
        (&prod, "*", Some("app"),
            Err(r#"access to database "prod" is denied by role "blocked-by-claim" for db user "*""#)),
    ];
    assert_checks(&blocked, cases, "deny from claim");
    let bob = as_claims(&["blocked-by-claim"], &[("blocked", &["bob"])]);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (&prod, "bob", Some("app"),
            Err(r#"access to database "prod" is denied by role "blocked-by-claim" for db user "bob""#)),
        (&prod, "bobby", Some("app"), Ok(())),
    ];
    assert_checks(&bob, cases, "deny bob");
}

#[test]
fn a_deny_rule_without_db_labels_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.yaml");
    std::fs::write(
        &file,
        "kind: role\nversion: v7\nmetadata: {name: guard}\nspec:\n  deny:\n    db_users: [postgres]\n",
    )
    .unwrap();
    let err = RoleSet::load_paths(std::slice::from_ref(&file))
        .map(|set| set.names().map(str::to_owned).collect::<Vec<_>>())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            r#"{}: role "guard": spec.deny has no db_labels, so it would deny nothing; write db_labels: {{"*": "*"}} to deny on every database, or the labels of the databases it is meant for"#,
            file.display()
        )
    );
}

/// Two auto-provisioning roles on the same database for different db names.
const PER_NAME: &str = r#"
kind: role
version: v7
metadata: {name: app-reader}
spec:
  options: {create_db_user_mode: keep}
  allow:
    db_labels: {'*': '*'}
    db_names: [app]
    db_roles: [app_reader]
---
kind: role
version: v7
metadata: {name: payroll-admin}
spec:
  options: {create_db_user_mode: keep}
  allow:
    db_labels: {'*': '*'}
    db_names: [payroll]
    db_roles: [payroll_admin]
---
kind: role
version: v7
metadata: {name: payroll-tables}
spec:
  options: {create_db_user_mode: keep}
  allow:
    db_labels: {'*': '*'}
    db_names: [payroll]
    db_permissions:
      - match: {object_kind: table, schema: public}
        permissions: [DELETE]
"#;

#[test]
fn only_roles_that_allow_the_session_contribute_db_roles() {
    let set = role_set(PER_NAME);
    let db = Db::new("pg", &[]);
    let alice = set
        .checker(&identity(
            &["app-reader", "payroll-admin", "payroll-tables"],
            &[],
            &[],
        ))
        .unwrap();
    let target = db.target();
    let app = alice.check(&target, "alice", Some("app")).unwrap();
    assert_eq!(app.db_roles(), strings(&["app_reader"]));
    assert_eq!(app.db_permissions(), []);
    let payroll = alice.check(&target, "alice", Some("payroll")).unwrap();
    assert_eq!(payroll.db_roles(), strings(&["payroll_admin"]));
    assert_eq!(payroll.db_permissions().len(), 1);
    // The catalog describes the database for every db name: the union.
    let entry = alice
        .catalog_entry(&target, "", "postgres", "self-hosted")
        .unwrap();
    assert_eq!(entry.db_roles, strings(&["app_reader", "payroll_admin"]));
}

#[test]
fn limits_come_from_the_roles_that_select_the_database_strictest_first() {
    let yaml = r#"
kind: role
version: v7
metadata: { name: everywhere }
spec:
  options: { max_statement_duration: 5s }
  allow: { db_labels: { "*": "*" }, db_users: [reader], db_names: [app] }
---
kind: role
version: v7
metadata: { name: prod-guard }
spec:
  options:
    max_statement_duration: 2s
    max_idle_in_transaction: 15m
    db_session_defaults: { default_transaction_read_only: on }
  allow: { db_labels: { env: prod }, db_users: [reader], db_names: [app] }
"#;
    let set = role_set(yaml);
    let checker = checker(&set, &["everywhere", "prod-guard"]);
    let prod = Db::new("prod", &[("env", "prod")]);
    let dev = Db::new("dev", &[("env", "dev")]);

    let on_prod = checker.session_limits(&prod.target());
    assert_eq!(on_prod.max_statement_duration, Some(Duration::from_secs(2)));
    assert_eq!(
        on_prod.max_idle_in_transaction,
        Some(Duration::from_secs(900))
    );
    let entry = checker
        .catalog_entry(&prod.target(), "", "postgres", "self-hosted")
        .unwrap();
    assert_eq!(
        entry.limits.describe(),
        "statements up to 2s; idle in transaction up to 15m; defaults (SET may change them) default_transaction_read_only=on"
    );

    let on_dev = checker.session_limits(&dev.target());
    assert_eq!(on_dev.max_statement_duration, Some(Duration::from_secs(5)));
    assert_eq!(on_dev.max_idle_in_transaction, None);
    assert!(on_dev.db_session_defaults.is_empty());
}
