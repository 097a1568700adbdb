//! Statement limits and session defaults (`spec.options` of a role), and
//! how those of several roles combine: the strictest value wins.
//!
//! `max_statement_duration` and `max_idle_in_transaction` are enforced by
//! the gateway's relay, so a user cannot lift them. `db_session_defaults`
//! are PostgreSQL settings sent as startup parameters: a user can still
//! change them with `SET`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::role::RoleOptions;

/// Settings whose values are PostgreSQL durations where `0` means "no
/// timeout": the smallest non-zero value is the strictest.
const TIMEOUT_SETTINGS: [&str; 5] = [
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
];

/// Boolean settings that restrict when on: `on` is the strictest.
const RESTRICTING_SWITCHES: [&str; 1] = ["default_transaction_read_only"];

/// Startup-packet fields that are not settings; the gateway sets `user`
/// and `database` itself, and `options` would smuggle in anything.
const NOT_SETTINGS: [&str; 4] = ["user", "database", "replication", "options"];

/// `db_session_defaults` of a role: PostgreSQL setting name → value, as
/// sent in the StartupMessage. Names and values are checked when the role
/// is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionDefaults(BTreeMap<String, String>);

impl SessionDefaults {
    /// Name and value of each setting, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
impl<const N: usize> From<[(&str, &str); N]> for SessionDefaults {
    fn from(settings: [(&str, &str); N]) -> Self {
        SessionDefaults(
            settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for SessionDefaults {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A YAML scalar as PostgreSQL would read it (`on`, `5min`, `100`).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Bool(bool),
            Int(i64),
            Float(f64),
            Text(String),
        }
        let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
        let mut settings = BTreeMap::new();
        for (name, value) in map {
            let value = match value {
                Scalar::Bool(on) => if on { "on" } else { "off" }.to_owned(),
                Scalar::Int(n) => n.to_string(),
                Scalar::Float(x) => x.to_string(),
                Scalar::Text(text) => text,
            };
            settings.insert(name, value);
        }
        Ok(SessionDefaults(settings))
    }
}

impl SessionDefaults {
    /// Refuses a setting PostgreSQL would not read at session start, or
    /// whose value the gateway could not compare between roles.
    pub(super) fn check(&self) -> Result<(), String> {
        self.iter().try_for_each(|(name, value)| {
            check_setting(name, value).map_err(|e| format!("spec.options.db_session_defaults.{e}"))
        })
    }
}

/// Checks one setting; the message starts with its name.
fn check_setting(name: &str, value: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !identifier {
        return Err(format!(
            "{name:?}: not a PostgreSQL setting name (letters, digits, _ and . only)"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if NOT_SETTINGS.contains(&lower.as_str()) || lower.starts_with("_pq_.") {
        return Err(format!(
            "{name}: a startup-packet field, not a setting a role can give"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{name}: the value contains a control character"));
    }
    if TIMEOUT_SETTINGS.contains(&lower.as_str()) && pg_duration(value).is_none() {
        return Err(format!(
            "{name}: {value:?} is not a PostgreSQL duration (e.g. 5min, 30s, 500ms; 0 for none)"
        ));
    }
    if RESTRICTING_SWITCHES.contains(&lower.as_str()) && pg_bool(value).is_none() {
        return Err(format!("{name}: {value:?} is not on or off"));
    }
    Ok(())
}

/// Reads a PostgreSQL time setting (a number, milliseconds unless a unit
/// `us`, `ms`, `s`, `min`, `h` or `d` follows).
fn pg_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "us" => 1e-6,
        "" | "ms" => 1e-3,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(number * seconds).ok()
}

/// Reads a PostgreSQL boolean as its parser does (prefixes included).
fn pg_bool(value: &str) -> Option<bool> {
    let value = value.trim().to_ascii_lowercase();
    let prefix_of = |word: &str| !value.is_empty() && word.starts_with(value.as_str());
    match value.as_str() {
        "1" | "on" => Some(true),
        "0" | "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// Checks that a limit is usable: zero would cancel every statement.
pub(super) fn check_limit(option: &str, limit: Option<Duration>) -> Result<(), String> {
    match limit {
        Some(limit) if limit.is_zero() => Err(format!(
            "spec.options.{option} must be longer than zero; leave it out for no limit"
        )),
        _ => Ok(()),
    }
}

/// What applies to a session once the roles selecting its database are
/// combined, strictest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// A statement running longer is cancelled by the gateway.
    pub max_statement_duration: Option<Duration>,
    /// A session idle inside a transaction this long is ended.
    pub max_idle_in_transaction: Option<Duration>,
    /// Settings the session starts with.
    pub db_session_defaults: SessionDefaults,
}

impl SessionLimits {
    /// Combines roles' options: the smallest limit; for a timeout setting
    /// the smallest non-zero value; for `default_transaction_read_only`
    /// `on`; for any other setting the value of the role whose name sorts
    /// first (there is no "stricter" there, so the choice is only made
    /// stable).
    pub(super) fn strictest<'r>(
        roles: impl IntoIterator<Item = (&'r str, &'r RoleOptions)>,
    ) -> Self {
        let mut roles: Vec<_> = roles.into_iter().collect();
        roles.sort_by_key(|(name, _)| *name);
        let mut merged = SessionLimits::default();
        for (_, options) in roles {
            merged.max_statement_duration = min_some(
                merged.max_statement_duration,
                options.max_statement_duration,
            );
            merged.max_idle_in_transaction = min_some(
                merged.max_idle_in_transaction,
                options.max_idle_in_transaction,
            );
            for (name, value) in options.db_session_defaults.iter() {
                let settings = &mut merged.db_session_defaults.0;
                match settings.get(name) {
                    Some(current) if !stricter(name, value, current) => {}
                    _ => {
                        settings.insert(name.to_owned(), value.to_owned());
                    }
                }
            }
        }
        merged
    }

    /// The catalog's description of these limits.
    pub fn to_wire(&self) -> postern_api::wire::SessionLimits {
        let text = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
        postern_api::wire::SessionLimits {
            max_statement_duration: text(self.max_statement_duration),
            max_idle_in_transaction: text(self.max_idle_in_transaction),
            db_session_defaults: self.db_session_defaults.0.clone(),
        }
    }
}

fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `value` of setting `name` is stricter than `current`; both were
/// checked at load.
fn stricter(name: &str, value: &str, current: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if TIMEOUT_SETTINGS.contains(&lower.as_str()) {
        let limit = |v| pg_duration(v).filter(|d| !d.is_zero());
        return match (limit(value), limit(current)) {
            (Some(new), Some(old)) => new < old,
            (new, old) => new.is_some() && old.is_none(),
        };
    }
    if RESTRICTING_SWITCHES.contains(&lower.as_str()) {
        return pg_bool(value) == Some(true) && pg_bool(current) != Some(true);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(statement: u64, idle: u64, defaults: &[(&str, &str)]) -> RoleOptions {
        let secs = |s| (s > 0).then(|| Duration::from_secs(s));
        RoleOptions {
            max_statement_duration: secs(statement),
            max_idle_in_transaction: secs(idle),
            db_session_defaults: SessionDefaults(
                defaults
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..RoleOptions::default()
        }
    }

    #[test]
    fn the_strictest_value_wins_for_each_option() {
        let a = options(
            5,
            0,
            &[
                ("statement_timeout", "5min"),
                ("default_transaction_read_only", "on"),
                ("search_path", "a"),
            ],
        );
        let b = options(
            2,
            900,
            &[
                ("statement_timeout", "30s"),
                ("lock_timeout", "0"),
                ("default_transaction_read_only", "off"),
                ("search_path", "b"),
            ],
        );
        let c = options(0, 0, &[("lock_timeout", "1s"), ("statement_timeout", "0")]);
        let merged = SessionLimits::strictest([("b", &b), ("c", &c), ("a", &a)]);
        assert_eq!(merged.max_statement_duration, Some(Duration::from_secs(2)));
        assert_eq!(
            merged.max_idle_in_transaction,
            Some(Duration::from_secs(900))
        );
        let want: SessionDefaults = [
            ("default_transaction_read_only", "on"),
            ("lock_timeout", "1s"),
            ("search_path", "a"),
            ("statement_timeout", "30s"),
        ]
        .into();
        assert_eq!(merged.db_session_defaults, want);
        assert_eq!(
            SessionLimits::strictest([("none", &RoleOptions::default())]),
            SessionLimits::default()
        );
    }

    #[test]
    fn reads_postgres_durations_and_booleans() {
        assert_eq!(pg_duration("5min"), Some(Duration::from_secs(300)));
        assert_eq!(pg_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(pg_duration(" 2 s"), Some(Duration::from_secs(2)));
        assert_eq!(pg_duration("0"), Some(Duration::ZERO));
        assert_eq!(pg_duration("5 minutes"), None);
        assert_eq!(pg_duration("-1"), None);
        assert_eq!(pg_bool("on"), Some(true));
        assert_eq!(pg_bool("y"), Some(true));
        assert_eq!(pg_bool("OFF"), Some(false));
        assert_eq!(pg_bool("o"), None);
    }
}
