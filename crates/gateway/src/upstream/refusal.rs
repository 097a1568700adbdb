//! What a database's refusal of a login means.
//!
//! PostgreSQL and Redshift say why they refuse a login only through a
//! SQLSTATE and a message; this is the one place that reads them. Each
//! database kind then decides what a [`Refusal`] means for its users
//! (`kind.rs`), and provisioning what it means for its admin.

/// Why a database refused a login, as far as the gateway can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `28P01`: the password (or token, or temporary password) was wrong.
    BadPassword,
    /// `42501` "permission denied for database": no CONNECT privilege.
    NoConnect,
    /// Another `42501` "permission denied".
    PermissionDenied,
    /// `28000`: the user may not log in at all (e.g. no such user).
    NotAuthorized,
    /// Anything else; passed on as the database said it.
    Other,
}

impl Refusal {
    /// Classifies an `ErrorResponse` received during login.
    pub fn classify(code: &str, message: &str) -> Self {
        match code {
            "28P01" => Refusal::BadPassword,
            "28000" => Refusal::NotAuthorized,
            "42501" if message.contains("permission denied for database") => Refusal::NoConnect,
            "42501" if message.contains("permission denied") => Refusal::PermissionDenied,
            _ => Refusal::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_by_code_and_message() {
        let cases = [
            (
                "28P01",
                "password authentication failed",
                Refusal::BadPassword,
            ),
            ("28000", "role \"x\" does not exist", Refusal::NotAuthorized),
            (
                "42501",
                "permission denied for database \"app\"",
                Refusal::NoConnect,
            ),
            (
                "42501",
                "permission denied for schema s",
                Refusal::PermissionDenied,
            ),
            ("42501", "must be owner", Refusal::Other),
            ("53300", "too many connections", Refusal::Other),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                Refusal::classify(code, message),
                expected,
                "{code} {message}"
            );
        }
    }
}
