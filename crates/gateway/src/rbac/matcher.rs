//! Matching role values against a database: label selectors, db users
//! (with AWS IAM role names and ARNs) and db names.

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};
use regex::Regex;

/// The wildcard value: any user, any name, any label value.
pub(crate) const WILDCARD: &str = "*";

/// A role value after template expansion, typed by who wrote it, so that
/// no matcher can read a value from a trait as a pattern.
///
/// Trait values come from the identity provider's claims or the user
/// record: a person who can set their own claim (a profile field, a group
/// name) must not be able to send `*` or `^.*$` and be allowed everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RoleValue {
    /// Written in the role file by the administrator: `*`, and for label
    /// values a glob or a `^regex$`, mean what they say.
    Pattern(String),
    /// Filled in from a trait, including any text written around the
    /// template (`pre-{{external.x}}-post`): it matches only itself.
    Literal(String),
}

impl RoleValue {
    /// The value's text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Pattern(value) | Self::Literal(value) => value,
        }
    }

    /// Whether this is the administrator's `*`.
    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self, Self::Pattern(value) if value == WILDCARD)
    }
}

/// A regular expression written as `^...$`, compiled so that it matches
/// whole values only: the pattern is wrapped in a group, so `^a|b$` cannot
/// match a mere prefix (`a-plus`) or suffix. None when `value` is not
/// written as a regex.
pub(crate) fn whole_value_regex(value: &str) -> Option<Result<Regex, regex::Error>> {
    let inner = value.strip_prefix('^')?.strip_suffix('$')?;
    Some(Regex::new(&format!("^(?:{inner})$")))
}

/// One allowed label value: `*`, a glob, an anchored regex `^...$`, or an
/// exact value from a trait.
#[derive(Debug)]
enum ValuePattern {
    Any,
    Glob(GlobMatcher),
    Regex(Regex),
    Exact(String),
}

impl ValuePattern {
    fn compile(value: &RoleValue) -> Result<Self, String> {
        let value = match value {
            RoleValue::Literal(literal) => return Ok(Self::Exact(literal.clone())),
            RoleValue::Pattern(pattern) => pattern,
        };
        if value == WILDCARD {
            return Ok(Self::Any);
        }
        if let Some(regex) = whole_value_regex(value) {
            return regex
                .map(Self::Regex)
                .map_err(|e| format!("invalid regular expression {value:?}: {e}"));
        }
        Glob::new(value)
            .map(|glob| Self::Glob(glob.compile_matcher()))
            .map_err(|e| format!("invalid glob {value:?}: {e}"))
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Glob(glob) => glob.is_match(value),
            Self::Regex(regex) => regex.is_match(value),
            Self::Exact(exact) => exact == value,
        }
    }
}

/// Checks that a label value written in a role file (not a template)
/// compiles.
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    ValuePattern::compile(&RoleValue::Pattern(value.to_owned())).map(|_| ())
}

/// A compiled `db_labels` selector.
#[derive(Debug, Default)]
pub(crate) struct LabelMatcher {
    /// `'*': '*'` was given: every database matches, even one without labels.
    any_database: bool,
    keys: Vec<(String, Vec<ValuePattern>)>,
}

impl LabelMatcher {
    /// Compiles expanded label values. Patterns are checked when the role is
    /// loaded, and trait values are exact, so nothing should fail here; a
    /// value that does is dropped like an unresolvable template, which can
    /// only select less.
    pub(crate) fn new(labels: &BTreeMap<String, Vec<RoleValue>>) -> Self {
        let any_database = labels
            .get(WILDCARD)
            .is_some_and(|values| values.iter().any(RoleValue::is_wildcard));
        let keys = labels
            .iter()
            .map(|(key, values)| {
                let patterns = values
                    .iter()
                    .filter_map(|value| {
                        ValuePattern::compile(value)
                            .inspect_err(|error| tracing::debug!(%error, "dropping label value"))
                            .ok()
                    })
                    .collect();
                (key.clone(), patterns)
            })
            .collect();
        Self { any_database, keys }
    }

    /// Whether a database with these labels is selected. An empty selector
    /// selects nothing, so a role must say `'*': '*'` to mean "all".
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.any_database {
            return true;
        }
        !self.keys.is_empty()
            && self.keys.iter().all(|(key, patterns)| {
                labels
                    .get(key)
                    .is_some_and(|value| patterns.iter().any(|p| p.matches(value)))
            })
    }
}

/// Whether a `db_users` entry allows or denies `user`. On AWS-hosted
/// databases an IAM role may be written by name or by ARN on either side
/// (for a trait value too: both forms name the same role, no pattern).
pub(crate) fn user_matches(entry: &RoleValue, user: &str, aws_account_id: Option<&str>) -> bool {
    if entry.is_wildcard() || entry.as_str() == user {
        return true;
    }
    let entry = entry.as_str();
    let Some(account) = aws_account_id else {
        return false;
    };
    matches!(
        (iam_role_name(entry, account), iam_role_name(user, account)),
        (Some(a), Some(b)) if a == b
    )
}

/// Whether a `db_names` entry allows or denies `name`.
pub(crate) fn name_matches(entry: &RoleValue, name: &str) -> bool {
    entry.is_wildcard() || entry.as_str() == name
}

/// The IAM role name `value` stands for in `account`: a plain value is the
/// name itself; `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME` gives NAME when
/// ACCOUNT is `account`, and None otherwise (another account's role is a
/// different role even if the name is the same).
fn iam_role_name<'a>(value: &'a str, account: &str) -> Option<&'a str> {
    if !value.starts_with("arn:") {
        return Some(value);
    }
    let mut parts = value.splitn(6, ':');
    let (Some(_arn), Some(_partition), Some("iam"), Some(""), Some(arn_account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if arn_account != account {
        return None;
    }
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Selector<'a> = &'a [(&'a str, &'a [&'a str])];

    fn pattern(value: &str) -> RoleValue {
        RoleValue::Pattern(value.to_owned())
    }

    fn literal(value: &str) -> RoleValue {
        RoleValue::Literal(value.to_owned())
    }

    fn selector_of(pairs: Selector, typed: fn(&str) -> RoleValue) -> LabelMatcher {
        LabelMatcher::new(
            &pairs
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| typed(v)).collect()))
                .collect(),
        )
    }

    fn selector(pairs: Selector) -> LabelMatcher {
        selector_of(pairs, pattern)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let prod = labels(&[("env", "prod-eu"), ("team", "data")]);
        let staging = labels(&[("env", "staging")]);
        let none = labels(&[]);
        #[rustfmt::skip]
        let cases: &[(Selector, &BTreeMap<String, String>, bool)] = &[
            (&[], &prod, false),                                   // empty selects nothing
            (&[("*", &["*"])], &prod, true),
            (&[("*", &["*"])], &none, true),                       // even without labels
            (&[("env", &["*"])], &prod, true),
            (&[("env", &["*"])], &none, false),                    // key must exist
            (&[("env", &["staging"])], &staging, true),
            (&[("env", &["staging"])], &prod, false),
            (&[("env", &["prod-*"])], &prod, true),                // glob
            (&[("env", &["prod-?u"])], &prod, true),
            (&[("env", &["prod"])], &prod, false),                 // literal is whole-value
            (&[("env", &["^prod-.*$"])], &prod, true),             // regex
            (&[("env", &["^prod$"])], &prod, false),               // anchored: no prefix match
            (&[("env", &["^staging|prod-eu$"])], &prod, true),
            (&[("env", &["^x|prod$"])], &prod, false),             // alternation stays anchored
            (&[("env", &["staging", "^prod-.*$"])], &prod, true),  // any value of a key
            (&[("env", &["prod-*"]), ("team", &["data"])], &prod, true),
            (&[("env", &["prod-*"]), ("team", &["web"])], &prod, false), // every key
            (&[("env", &[])], &prod, false),                       // key without values
        ];
        for (i, (sel, db, want)) in cases.iter().enumerate() {
            assert_eq!(
                selector(sel).matches(db),
                *want,
                "case {i}: {sel:?} vs {db:?}"
            );
        }
    }

    #[test]
    fn label_values_from_traits_match_only_themselves() {
        let prod = labels(&[("env", "prod-eu")]);
        #[rustfmt::skip]
        let cases: &[(Selector, &BTreeMap<String, String>, bool)] = &[
            (&[("env", &["prod-eu"])], &prod, true),
            (&[("env", &["*"])], &prod, false),
            (&[("env", &["prod-*"])], &prod, false),
            (&[("env", &["prod-?u"])], &prod, false),
            (&[("env", &["^.*$"])], &prod, false),
            (&[("env", &["^prod-eu$"])], &prod, false),
            (&[("*", &["*"])], &prod, false),                      // not "every database"
            (&[("env", &["*"])], &labels(&[("env", "*")]), true),  // the literal itself
            (&[("env", &["^.*$"])], &labels(&[("env", "^.*$")]), true),
        ];
        for (i, (sel, db, want)) in cases.iter().enumerate() {
            assert_eq!(
                selector_of(sel, literal).matches(db),
                *want,
                "case {i}: {sel:?} vs {db:?}"
            );
        }
    }

    #[test]
    fn users_and_names_from_traits_match_only_themselves() {
        const ACCOUNT: &str = "123456789012";
        let arn = "arn:aws:iam::123456789012:role/analyst";
        assert!(!user_matches(&literal("*"), "postgres", None));
        assert!(user_matches(&literal("*"), "*", None));
        assert!(user_matches(&literal("reader"), "reader", None));
        assert!(!user_matches(&literal("read*"), "reader", None));
        // An IAM role is one role whichever way it is written.
        assert!(user_matches(&literal("analyst"), arn, Some(ACCOUNT)));
        assert!(user_matches(&literal(arn), "analyst", Some(ACCOUNT)));
        assert!(!name_matches(&literal("*"), "payroll"));
        assert!(name_matches(&literal("*"), "*"));
        assert!(name_matches(&literal("app"), "app"));
    }

    #[test]
    fn whole_value_regexes_are_anchored_around_alternatives() {
        let regex = whole_value_regex("^admins|dbas$").unwrap().unwrap();
        assert!(regex.is_match("admins"));
        assert!(regex.is_match("dbas"));
        assert!(!regex.is_match("admins-readonly"));
        assert!(!regex.is_match("all-dbas"));
        assert!(whole_value_regex("admins").is_none());
        assert!(whole_value_regex("^admins").is_none());
        assert!(whole_value_regex("^(a$").unwrap().is_err());
    }

    #[test]
    fn invalid_label_values_are_reported() {
        assert!(check_label_value("^prod-($").is_err());
        assert!(check_label_value("prod-[").is_err());
        assert!(check_label_value("prod-*").is_ok());
        // A bad value from a trait is dropped, leaving the others.
        assert!(selector(&[("env", &["^(", "staging"])]).matches(&labels(&[("env", "staging")])));
    }

    #[test]
    fn db_users_with_iam_roles() {
        const ACCOUNT: &str = "123456789012";
        let arn = "arn:aws:iam::123456789012:role/analyst";
        let arn_path = "arn:aws:iam::123456789012:role/teams/data/analyst";
        let other_account = "arn:aws:iam::999999999999:role/analyst";
        #[rustfmt::skip]
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            ("reader", "reader", None, true),
            ("reader", "writer", None, false),
            ("*", "anyone", None, true),
            ("analyst", arn, None, false),             // not AWS-hosted: exact only
            ("analyst", arn, Some(ACCOUNT), true),     // name allows ARN
            (arn, "analyst", Some(ACCOUNT), true),     // ARN allows name
            (arn, arn, Some(ACCOUNT), true),
            (arn_path, "analyst", Some(ACCOUNT), true),
            ("analyst", arn_path, Some(ACCOUNT), true),
            (arn_path, arn, Some(ACCOUNT), true),      // same role, path is not identity
            ("analyst", other_account, Some(ACCOUNT), false),
            (other_account, "analyst", Some(ACCOUNT), false),
            (other_account, arn, Some(ACCOUNT), false),
            ("analyst2", arn, Some(ACCOUNT), false),
            ("arn:aws:iam::123456789012:user/analyst", "analyst", Some(ACCOUNT), false),
            ("arn:aws:iam::123456789012:role/", "", Some(ACCOUNT), false),
        ];
        for (entry, user, account, want) in cases {
            assert_eq!(
                user_matches(&pattern(entry), user, *account),
                *want,
                "{entry} vs {user} in {account:?}"
            );
        }
    }

    #[test]
    fn db_names_are_exact_or_wildcard() {
        assert!(name_matches(&pattern("*"), "anything"));
        assert!(name_matches(&pattern("sales"), "sales"));
        assert!(!name_matches(&pattern("sales"), "sales2"));
        assert!(!name_matches(&pattern("sal*"), "sales"));
    }
}
