//! The session route frame, checked once at the edge.
//!
//! Every string of a route frame ends up in an authorization decision, in
//! the audit and in the StartupMessage sent to the database. A frame whose
//! strings hold NUL or other control characters, or whose startup
//! parameters name something only the gateway may set, is refused here, so
//! the rest of the gateway only ever sees a [`SessionRequest`] whose values
//! are exactly what will reach the database.

use std::collections::BTreeMap;

use crate::names::{DatabaseName, DbName, DbUser};

/// Startup parameters the protocol reserves: the gateway sets `user` and
/// `database` itself, never opens replication connections, and speaks no
/// protocol extensions (`_pq_.*`).
const RESERVED: [&str; 3] = ["user", "database", "replication"];
const PROTOCOL_EXTENSION_PREFIX: &str = "_pq_.";
/// How much of a refused value is quoted in messages and the audit.
const QUOTE_MAX: usize = 64;

/// Why a session route frame was refused. The text is shown to the client
/// and audited; values are quoted escaped and shortened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// A string holds NUL or another control character.
    #[error("the {field} of the request contains a control character, which is not allowed")]
    ControlCharacter {
        /// Which field, e.g. `db_name` or `startup parameter "application_name"`.
        field: String,
    },
    /// A startup parameter that only the gateway may set.
    #[error(
        "startup parameter {key} cannot be passed through the tunnel: the gateway sets the database user and name itself, and replication connections and protocol extensions are not supported"
    )]
    Reserved {
        /// The parameter's name, quoted.
        key: String,
    },
}

/// A session request whose every value may be used and sent upstream as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// Catalog name of the database.
    pub database: DatabaseName,
    /// Database user; `None` is refused later with a sentence.
    pub db_user: Option<DbUser>,
    /// Database name inside the server; `None` means the kind's default.
    pub db_name: Option<DbName>,
    /// Database roles requested for an auto-provisioned user.
    pub db_roles: Vec<String>,
    /// The client's other startup parameters.
    pub params: StartupParams,
}

/// Startup parameters that may be passed on to the database: no reserved
/// name, no control character in a name or value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartupParams(BTreeMap<String, String>);

impl StartupParams {
    /// Checks each parameter; the first bad one refuses them all.
    pub fn new(params: BTreeMap<String, String>) -> Result<Self, RouteRefusal> {
        for (key, value) in &params {
            let field = || format!("startup parameter {}", quote(key));
            plain(key, field)?;
            plain(value, field)?;
            if is_reserved(key) {
                return Err(RouteRefusal::Reserved { key: quote(key) });
            }
        }
        Ok(StartupParams(params))
    }

    /// Name and value of each parameter, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl SessionRequest {
    /// Checks the fields of a `RouteFrame::Session`.
    pub fn new(
        database: String,
        db_user: Option<String>,
        db_name: Option<String>,
        db_roles: Vec<String>,
        params: BTreeMap<String, String>,
    ) -> Result<Self, RouteRefusal> {
        plain(&database, || "database".into())?;
        if let Some(user) = &db_user {
            plain(user, || "db_user".into())?;
        }
        if let Some(name) = &db_name {
            plain(name, || "db_name".into())?;
        }
        for role in &db_roles {
            plain(role, || "db_roles".into())?;
        }
        Ok(SessionRequest {
            database: DatabaseName::new(database),
            db_user: db_user.map(DbUser::new),
            db_name: db_name.map(DbName::new),
            db_roles,
            params: StartupParams::new(params)?,
        })
    }
}

/// Whether PostgreSQL would treat `key` as one of the reserved parameters.
///
/// PostgreSQL compares these names exactly (`strcmp`), and a NUL ends a
/// name on the wire, which [`plain`] has already refused. The comparison
/// here ignores ASCII case as well, so no spelling of a reserved name can
/// pass even if a server or pooler in between compared more loosely.
fn is_reserved(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    RESERVED.contains(&key.as_str()) || key.starts_with(PROTOCOL_EXTENSION_PREFIX)
}

/// Refuses NUL and every other control character (C0, DEL, C1).
fn plain(value: &str, field: impl FnOnce() -> String) -> Result<(), RouteRefusal> {
    if value.chars().any(char::is_control) {
        return Err(RouteRefusal::ControlCharacter { field: field() });
    }
    Ok(())
}

/// `value` quoted with its control characters escaped, at most [`QUOTE_MAX`] characters of it.
fn quote(value: &str) -> String {
    let shown: String = value.chars().take(QUOTE_MAX).collect();
    let ellipsis = if shown.len() < value.len() { "…" } else { "" };
    format!("{shown:?}{ellipsis}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn request(
        db_user: &str,
        db_name: &str,
        pairs: &[(&str, &str)],
    ) -> Result<SessionRequest, RouteRefusal> {
        SessionRequest::new(
            "pg".into(),
            Some(db_user.into()),
            Some(db_name.into()),
            vec!["reader".into()],
            params(pairs),
        )
    }

    #[test]
    fn honest_requests_pass_unchanged() {
        let pairs = [
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("options", "-c search_path=ä,public"),
            ("extra_float_digits", "3"),
        ];
        let request = request("jürgen", "shop", &pairs).unwrap();
        assert_eq!(request.params.iter().count(), pairs.len());
        assert_eq!(request.db_user, Some(DbUser::new("jürgen")));
    }

    #[test]
    fn control_characters_are_refused_in_every_field() {
        let refused = |r: Result<SessionRequest, RouteRefusal>| match r {
            Err(RouteRefusal::ControlCharacter { field }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        for bad in ["a\0b", "a\nb", "a\tb", "a\u{7f}", "a\u{85}", "\0"] {
            assert_eq!(refused(request(bad, "shop", &[])), "db_user", "{bad:?}");
            assert_eq!(refused(request("u", bad, &[])), "db_name", "{bad:?}");
            let field = refused(request("u", "shop", &[("application_name", bad)]));
            assert_eq!(field, "startup parameter \"application_name\"");
        }
        let field = refused(request("u", "shop", &[("database\0", "postgres")]));
        assert_eq!(field, "startup parameter \"database\\0\"");
        let db_roles = SessionRequest::new(
            "pg".into(),
            None,
            None,
            vec!["ok".into(), "x\0".into()],
            BTreeMap::new(),
        );
        assert_eq!(refused(db_roles), "db_roles");
        let database = SessionRequest::new("p\0g".into(), None, None, vec![], BTreeMap::new());
        assert_eq!(refused(database), "database");
    }

    #[test]
    fn reserved_parameters_are_refused_in_any_spelling() {
        for key in [
            "user",
            "database",
            "replication",
            "Database",
            "USER",
            "_pq_.protocol_managed_params",
            "_PQ_.x",
        ] {
            assert_eq!(
                request("u", "shop", &[(key, "postgres")]),
                Err(RouteRefusal::Reserved {
                    key: format!("{key:?}")
                }),
                "{key}"
            );
        }
    }

    #[test]
    fn quoted_values_are_short_and_escaped() {
        let long = "k".repeat(1000);
        let Err(RouteRefusal::ControlCharacter { field }) =
            request("u", "shop", &[(&format!("{long}\n"), "v")])
        else {
            panic!("refused");
        };
        assert!(field.len() < 100, "{field}");
        assert!(field.ends_with('…'), "{field}");
    }
}
