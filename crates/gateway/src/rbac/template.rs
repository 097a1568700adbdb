//! Role templates: `{{internal.X}}` and `{{external.X}}` expanded from an
//! identity's traits, optionally with text around the braces
//! (`pre-{{external.team}}-post`).

use postern_api::identity::Traits;

use super::matcher::RoleValue;

/// Why a role value could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// Not a template we understand: unbalanced braces, unknown namespace,
    /// functions such as `email.local(...)`, several templates in one value.
    #[error("malformed template {0:?}: expected {{{{internal.NAME}}}} or {{{{external.NAME}}}}")]
    Malformed(String),
    /// The identity has no value for the trait.
    #[error("trait {0} is not set")]
    Missing(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Namespace {
    Internal,
    External,
}

/// A parsed template value: `prefix{{namespace.name}}suffix`.
#[derive(Debug, PartialEq, Eq)]
struct Template<'a> {
    prefix: &'a str,
    namespace: Namespace,
    name: &'a str,
    suffix: &'a str,
}

/// Parses `value`; `Ok(None)` means it is a plain literal.
fn parse(value: &str) -> Result<Option<Template<'_>>, TemplateError> {
    let malformed = || TemplateError::Malformed(value.to_owned());
    let Some(open) = value.find("{{") else {
        return if value.contains("}}") {
            Err(malformed())
        } else {
            Ok(None)
        };
    };
    let (prefix, rest) = (&value[..open], &value[open + 2..]);
    let close = rest.find("}}").ok_or_else(malformed)?;
    let (inner, suffix) = (&rest[..close], &rest[close + 2..]);
    if [prefix, inner, suffix]
        .iter()
        .any(|part| part.contains("{{") || part.contains("}}"))
    {
        return Err(malformed());
    }
    let (namespace, name) = parse_variable(inner.trim()).ok_or_else(malformed)?;
    Ok(Some(Template {
        prefix,
        namespace,
        name,
        suffix,
    }))
}

/// `internal.NAME`, or `internal["NAME"]` for claim names with other
/// characters (SAML-style URIs).
fn parse_variable(text: &str) -> Option<(Namespace, &str)> {
    let (namespace, rest) = if let Some(rest) = text.strip_prefix("internal") {
        (Namespace::Internal, rest)
    } else {
        (Namespace::External, text.strip_prefix("external")?)
    };
    let name = if let Some(name) = rest.strip_prefix('.') {
        name.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            .then_some(name)?
    } else {
        let name = rest.strip_prefix("[\"")?.strip_suffix("\"]")?;
        (!name.contains('"')).then_some(name)?
    };
    (!name.is_empty()).then_some((namespace, name))
}

/// Checks a value's template syntax without expanding it.
pub(crate) fn check_syntax(value: &str) -> Result<(), TemplateError> {
    parse(value).map(|_| ())
}

/// Expands one value: a value without a template is the administrator's
/// own ([`RoleValue::Pattern`]); a template yields one [`RoleValue::Literal`]
/// per trait value, text around it included.
pub(crate) fn expand(value: &str, traits: &Traits) -> Result<Vec<RoleValue>, TemplateError> {
    let Some(template) = parse(value)? else {
        return Ok(vec![RoleValue::Pattern(value.to_owned())]);
    };
    let namespace = match template.namespace {
        Namespace::Internal => &traits.internal,
        Namespace::External => &traits.external,
    };
    let values = namespace
        .get(template.name)
        .filter(|values| !values.is_empty())
        .ok_or_else(|| TemplateError::Missing(template.name.to_owned()))?;
    Ok(values
        .iter()
        .map(|v| RoleValue::Literal(format!("{}{v}{}", template.prefix, template.suffix)))
        .collect())
}

/// Expands every value, dropping those that cannot be resolved (as Teleport
/// does): a role that mentions a trait the user lacks simply grants less.
///
/// On the deny side a dropped value denies nothing, which is what the
/// template means for a user without the trait; it never turns into a
/// wildcard or a literal `{{...}}`, and the rest of the rule stays in force.
/// Malformed deny templates, where dropping would silently undo what the
/// administrator meant, are refused when the role is loaded
/// (`Role::validate`).
pub(crate) fn expand_all(values: &[String], traits: &Traits) -> Vec<RoleValue> {
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        match expand(value, traits) {
            Ok(expanded) => out.extend(expanded),
            Err(error) => tracing::debug!(value, %error, "dropping role value"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits() -> Traits {
        let mut traits = Traits::default();
        traits
            .internal
            .insert("db_names".into(), vec!["analytics".into(), "sales".into()]);
        traits.internal.insert("empty".into(), vec![]);
        traits.external.insert("team".into(), vec!["blue".into()]);
        traits.external.insert("star".into(), vec!["*".into()]);
        traits
            .external
            .insert("http://schemas/role".into(), vec!["dba".into()]);
        traits
    }

    fn pattern(value: &str) -> RoleValue {
        RoleValue::Pattern(value.to_owned())
    }

    fn literal(value: &str) -> RoleValue {
        RoleValue::Literal(value.to_owned())
    }

    #[test]
    fn expands_values() {
        let cases: &[(&str, Result<Vec<RoleValue>, TemplateError>)] = &[
            ("reader", Ok(vec![pattern("reader")])),
            ("*", Ok(vec![pattern("*")])),
            ("prod-*", Ok(vec![pattern("prod-*")])),
            (
                "{{internal.db_names}}",
                Ok(vec![literal("analytics"), literal("sales")]),
            ),
            (
                "{{ internal.db_names }}",
                Ok(vec![literal("analytics"), literal("sales")]),
            ),
            ("{{external.team}}", Ok(vec![literal("blue")])),
            ("{{external.star}}", Ok(vec![literal("*")])),
            (
                "pre-{{external.team}}-post",
                Ok(vec![literal("pre-blue-post")]),
            ),
            ("env-{{external.star}}", Ok(vec![literal("env-*")])),
            (
                "db_{{internal.db_names}}",
                Ok(vec![literal("db_analytics"), literal("db_sales")]),
            ),
            (
                r#"{{external["http://schemas/role"]}}"#,
                Ok(vec![literal("dba")]),
            ),
            (
                "{{internal.nope}}",
                Err(TemplateError::Missing("nope".into())),
            ),
            (
                "{{internal.empty}}",
                Err(TemplateError::Missing("empty".into())),
            ),
            // Same name, other namespace: traits do not leak across.
            (
                "{{internal.team}}",
                Err(TemplateError::Missing("team".into())),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(&expand(value, &traits()), want, "{value}");
        }
    }

    #[test]
    fn rejects_malformed_templates() {
        for value in [
            "{{internal.db_names}",
            "internal.db_names}}",
            "{{internal}}",
            "{{internal.}}",
            "{{intenral.db_names}}",
            "{{internal.a.b}}",
            "{{email.local(external.email)}}",
            "{{internal.a}}{{internal.b}}",
            "{{internal.a}}}}",
            "{{}}",
        ] {
            assert!(
                matches!(expand(value, &traits()), Err(TemplateError::Malformed(_))),
                "{value}"
            );
            assert!(check_syntax(value).is_err(), "{value}");
        }
    }

    #[test]
    fn expand_all_drops_what_cannot_be_resolved() {
        let values: Vec<String> = ["a", "{{internal.nope}}", "{{bad", "{{external.team}}"]
            .map(String::from)
            .into();
        assert_eq!(
            expand_all(&values, &traits()),
            [pattern("a"), literal("blue")]
        );
    }
}
