//! The error every command returns: `{kind, message}`, where `message` is a
//! sentence for people in the app's words (no CLI flags), and `kind` lets the
//! UI react (ask to trust a CA, ask for a one-time code, offer another port).

use postern_client::ClientError;
use postern_client::launch::LaunchError;
use serde::Serialize;
use ts_rs::TS;

/// What kind of failure, for the UI to react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Nobody is signed in.
    NotSignedIn,
    /// The session ended.
    SessionExpired,
    /// First contact: the gateway's CA must be trusted (see `fingerprint`).
    UntrustedCa,
    /// The gateway presented another CA than the pinned one.
    CaMismatch,
    /// The account needs a one-time code.
    TotpRequired,
    /// The gateway could not be reached.
    Unreachable,
    /// The chosen port is taken.
    PortUnavailable,
    /// The gateway refused (wrong password, not allowed, ...).
    Refused,
    /// The request itself was wrong (bad address, unknown tunnel, ...).
    Invalid,
    /// The sign-in was cancelled or timed out.
    Cancelled,
    /// pgAdmin is not installed.
    #[serde(rename = "pgadmin_missing")]
    PgAdminMissing,
    /// A launcher failed.
    Launch,
    /// Local files or the key store failed.
    Local,
}

/// A command's failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// What kind.
    pub kind: ErrorKind,
    /// A sentence for people.
    pub message: String,
    /// With `untrusted_ca` and `ca_mismatch`: the CA the gateway presented.
    pub fingerprint: Option<String>,
}

impl CommandError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CommandError {
            kind,
            message: message.into(),
            fingerprint: None,
        }
    }

    /// A request the UI should not have made.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        use ClientError as C;
        use ErrorKind as K;
        let (kind, message) = match &e {
            C::NotLoggedIn => (K::NotSignedIn, "You are not signed in.".to_owned()),
            C::SessionExpired => (
                K::SessionExpired,
                "Your Postern session has ended; sign in again. Tunnels keep their ports.".into(),
            ),
            C::UnknownProfile(name) => (K::Invalid, format!("There is no profile {name:?}.")),
            C::BadAddress(addr) => (
                K::Invalid,
                format!(
                    "{addr:?} is not a gateway address; use HOST:PORT, e.g. gateway.example.com:3080."
                ),
            ),
            C::Unreachable { .. } => (K::Unreachable, capitalise(&e.to_string())),
            C::CaMismatch { addr, pinned, got } => {
                return CommandError {
                    kind: K::CaMismatch,
                    message: format!(
                        "The gateway at {addr} presented CA {got}, but this computer trusts {pinned}. \
                         Someone may be intercepting the connection, or the gateway's CA was replaced; \
                         ask your administrator before trusting it."
                    ),
                    fingerprint: Some(got.clone()),
                };
            }
            C::UntrustedCa { addr, fingerprint } => {
                return CommandError {
                    kind: K::UntrustedCa,
                    message: format!(
                        "The gateway at {addr} presented a CA this computer has not seen before. \
                         Compare its fingerprint with the one your administrator gave you."
                    ),
                    fingerprint: Some(fingerprint.clone()),
                };
            }
            C::BadPin => (K::Invalid, "That CA fingerprint is not valid.".into()),
            C::Gateway(m) | C::LoginRefused(m) => (K::Refused, capitalise(m)),
            C::TotpRequired => (
                K::TotpRequired,
                "Enter the one-time code from your authenticator app.".into(),
            ),
            C::LoginTimedOut(within) => (
                K::Cancelled,
                format!("The browser sign-in was not completed within {within}; try again."),
            ),
            C::LoginCancelled => (K::Cancelled, "The sign-in was cancelled.".into()),
            C::DeviceCodeExpired => (
                K::Cancelled,
                "The sign-in code expired before it was approved; try again.".into(),
            ),
            C::NoSsoConnector => (
                K::Refused,
                "This gateway offers no single sign-on; sign in with your username and password."
                    .into(),
            ),
            C::SeveralSsoConnectors(names) => (
                K::Invalid,
                format!(
                    "This gateway has several single sign-on connectors ({}); choose one.",
                    names.join(", ")
                ),
            ),
            C::Keychain(reason) => (
                K::Local,
                format!(
                    "Cannot use the OS keychain: {reason}. On a computer without one, start \
                     Postern with POSTERN_KEY_STORE=file."
                ),
            ),
            C::PortUnavailable { port, .. } => (
                K::PortUnavailable,
                format!("Port {port} is already in use on this computer."),
            ),
            C::SocketTaken { dir, port } => (
                K::PortUnavailable,
                format!("Port {port} is already in use in {dir}."),
            ),
            C::SocketDir { .. } | C::NoUnixSockets => (K::Invalid, capitalise(&e.to_string())),
            C::UnsafeSignInUrl(_) => (K::Refused, capitalise(&e.to_string())),
            C::UnknownDatabase(db) => (
                K::Invalid,
                format!("Database {db:?} is not available to you (any more); refresh the list."),
            ),
            C::UnknownTunnel(_) => (K::Invalid, "That tunnel is no longer running.".into()),
            C::AutoDbUser { .. }
            | C::DbUserNotAllowed { .. }
            | C::NotYourStatement(_)
            | C::NotSignalled(_) => (K::Invalid, capitalise(&e.to_string())),
            C::Io { .. } | C::Corrupt { .. } | C::Crypto(_) => {
                (K::Local, capitalise(&e.to_string()))
            }
        };
        tracing::debug!(error = %e, ?kind, "command failed");
        CommandError::new(kind, message)
    }
}

impl From<LaunchError> for CommandError {
    fn from(e: LaunchError) -> Self {
        let kind = match e {
            LaunchError::NoPgAdmin => ErrorKind::PgAdminMissing,
            _ => ErrorKind::Launch,
        };
        CommandError::new(kind, capitalise(&e.to_string()))
    }
}

/// The client's sentences start in lower case (they follow "error: " on the
/// CLI); the app shows them on their own.
fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(chars.as_str());
            if !out.ends_with(['.', '!', '?']) {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_reads_as_an_app_sentence_without_cli_words() {
        for e in ClientError::examples() {
            let shown = format!("{e:?}");
            let message = CommandError::from(e).message;
            assert!(message.ends_with(['.', '!', '?']), "{shown}: {message}");
            assert!(
                !message.starts_with(char::is_lowercase),
                "{shown}: {message}"
            );
            for cli_word in ["--", "postern login", "postern db", "`"] {
                assert!(
                    !message.contains(cli_word),
                    "{shown} names {cli_word:?}: {message}"
                );
            }
        }
    }

    #[test]
    fn errors_read_as_sentences_without_cli_flags() {
        let e: CommandError = ClientError::TotpRequired.into();
        assert_eq!(e.kind, ErrorKind::TotpRequired);
        assert!(!e.message.contains("--"), "{}", e.message);
        let e: CommandError = ClientError::PortUnavailable {
            port: 5432,
            reason: "in use".into(),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::PortUnavailable);
        assert!(!e.message.contains("--port"));
        let e: CommandError = ClientError::UntrustedCa {
            addr: "gw:3080".into(),
            fingerprint: "sha256:ab".into(),
        }
        .into();
        assert_eq!(e.fingerprint.as_deref(), Some("sha256:ab"));
        let e: CommandError = ClientError::Gateway("invalid username or password".into()).into();
        assert_eq!(e.message, "Invalid username or password.");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "refused");
        assert_eq!(json["message"], "Invalid username or password.");
    }
}
