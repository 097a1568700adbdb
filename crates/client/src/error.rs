//! Client errors: the facts of what went wrong, for each front end to put
//! in its own words. The CLI renders them with its commands and flags
//! (`postern`'s `output::error`), the desktop app with its screens and
//! buttons (`postern-desktop-core`'s `CommandError`), and a database client
//! sees them through the tunnel ([`crate::tunnel::client_error`]).
//!
//! `Display` is the neutral text: it names no flag, command or button, so
//! it is fit for logs and for a database client that knows nothing of
//! Postern's front ends.

/// What went wrong in a client flow.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No profile: the user never logged in (or logged out).
    #[error("you are not signed in to Postern")]
    NotLoggedIn,
    /// The session certificate expired.
    #[error("your Postern session expired")]
    SessionExpired,
    /// A named profile does not exist.
    #[error("there is no profile {0:?}")]
    UnknownProfile(String),
    /// The gateway address could not be parsed.
    #[error("{0:?} is not a gateway address; use HOST:PORT, e.g. gateway.example.com:3080")]
    BadAddress(String),
    /// The gateway could not be reached.
    #[error("cannot reach the gateway at {addr}: {reason}")]
    Unreachable {
        /// Address tried.
        addr: String,
        /// Short reason.
        reason: String,
    },
    /// The gateway's CA is not the pinned one: someone may be in between.
    #[error("the gateway at {addr} presented CA {got}, but this profile trusts {pinned}")]
    CaMismatch {
        /// Gateway address.
        addr: String,
        /// Pinned fingerprint.
        pinned: String,
        /// Presented fingerprint.
        got: String,
    },
    /// The user declined (or could not be asked) to trust a new gateway CA.
    #[error("the gateway at {addr} presented CA {fingerprint}, which is not trusted yet")]
    UntrustedCa {
        /// Gateway address.
        addr: String,
        /// Presented fingerprint.
        fingerprint: String,
    },
    /// A CA fingerprint given to trust is malformed.
    #[error("a CA fingerprint looks like sha256:<64 hex digits>")]
    BadPin,
    /// The gateway answered with an error; its own sentence.
    #[error("{0}")]
    Gateway(String),
    /// The gateway refused a login's credentials; its own sentence. It gives
    /// the same answer for a wrong password and a missing or wrong one-time code.
    #[error("{0}")]
    LoginRefused(String),
    /// The account has one-time codes (TOTP) and none was given.
    #[error("a one-time code from your authenticator app is required")]
    TotpRequired,
    /// The browser sign-in did not finish within this time.
    #[error("the sign-in was not completed within {0}")]
    LoginTimedOut(String),
    /// The user stopped the sign-in.
    #[error("the sign-in was cancelled; nothing was saved")]
    LoginCancelled,
    /// A device sign-in's code expired before anyone approved it.
    #[error("the sign-in code expired before the sign-in was approved; nothing was saved")]
    DeviceCodeExpired,
    /// The gateway offers no single sign-on.
    #[error("this gateway offers no single sign-on")]
    NoSsoConnector,
    /// The gateway has several single sign-on connectors and none was named.
    #[error("this gateway has several single sign-on connectors ({})", .0.join(", "))]
    SeveralSsoConnectors(Vec<String>),
    /// The OS keychain failed.
    #[error("cannot use the OS keychain: {0}")]
    Keychain(String),
    /// A chosen loopback port could not be used.
    #[error("port {port} on 127.0.0.1 is not available ({reason})")]
    PortUnavailable {
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A Unix socket of the same name is in use.
    #[error("port {port} in {dir} is in use by another program")]
    SocketTaken {
        /// The socket directory.
        dir: String,
        /// The port in the socket's name.
        port: u16,
    },
    /// The directory for a Unix socket is not private to the user.
    #[error(
        "cannot put the tunnel's socket in {dir}: {reason}; give a directory only you can use, \
         or a new path (Postern creates it with mode 0700)"
    )]
    SocketDir {
        /// The directory.
        dir: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Unix sockets were asked for where there are none.
    #[error("Unix socket tunnels are not available on this system; use the loopback port")]
    NoUnixSockets,
    /// The gateway sent a sign-in address the client will not open.
    #[error(
        "the gateway sent a sign-in address that is not https:// ({0}); \
         Postern opens only https:// sign-in pages, so nothing was opened"
    )]
    UnsafeSignInUrl(String),
    /// The database is not in the caller's catalog.
    #[error("database {0:?} is not available to you")]
    UnknownDatabase(String),
    /// A database user other than the Postern username was asked for on a
    /// database that creates the user automatically.
    #[error(
        "database {database:?} creates your database user automatically; it is always {username:?}"
    )]
    AutoDbUser {
        /// Catalog database.
        database: String,
        /// The Postern username, the only db user possible there.
        username: String,
    },
    /// The database user asked for is not among the allowed ones.
    #[error("db user {db_user:?} is not allowed on {database:?}; allowed: {allowed}")]
    DbUserNotAllowed {
        /// What was asked for.
        db_user: String,
        /// Catalog database.
        database: String,
        /// The allowed users as the catalog describes them.
        allowed: String,
    },
    /// No running tunnel has this id.
    #[error("there is no tunnel {0}")]
    UnknownTunnel(u64),
    /// The process is not one of the caller's running statements.
    #[error(
        "process {0} is not one of your running statements: it finished already, or belongs to someone else"
    )]
    NotYourStatement(i32),
    /// The database declined to signal the process.
    #[error("process {0} could not be signalled; it may have just finished")]
    NotSignalled(i32),
    /// Local files could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Stored data could not be decoded.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// Certificate or key material could not be created.
    #[error("cannot create a key pair: {0}")]
    Crypto(String),
}

impl ClientError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| ClientError::Io { what, source }
    }

    /// One value of every variant, for the renderers' table tests: each
    /// front end checks that its sentence for every fact is in its words.
    pub fn examples() -> Vec<ClientError> {
        let s = |v: &str| v.to_owned();
        vec![
            ClientError::NotLoggedIn,
            ClientError::SessionExpired,
            ClientError::UnknownProfile(s("work")),
            ClientError::BadAddress(s("gw")),
            ClientError::Unreachable {
                addr: s("gw:3080"),
                reason: s("connection refused"),
            },
            ClientError::CaMismatch {
                addr: s("gw:3080"),
                pinned: s("sha256:aa"),
                got: s("sha256:bb"),
            },
            ClientError::UntrustedCa {
                addr: s("gw:3080"),
                fingerprint: s("sha256:bb"),
            },
            ClientError::BadPin,
            ClientError::Gateway(s("database \"pg\" is locked")),
            ClientError::LoginRefused(s("invalid username or password")),
            ClientError::TotpRequired,
            ClientError::LoginTimedOut(s("5m")),
            ClientError::LoginCancelled,
            ClientError::NoSsoConnector,
            ClientError::SeveralSsoConnectors(vec![s("okta"), s("github")]),
            ClientError::Keychain(s("no secret service")),
            ClientError::PortUnavailable {
                port: 5432,
                reason: s("address in use"),
            },
            ClientError::SocketTaken {
                dir: s("/run/user/1000/postern"),
                port: 5432,
            },
            ClientError::SocketDir {
                dir: s("/tmp"),
                reason: s("other users can enter it (mode 1777)"),
            },
            ClientError::NoUnixSockets,
            ClientError::UnsafeSignInUrl(s("http:")),
            ClientError::UnknownDatabase(s("pg-prod")),
            ClientError::AutoDbUser {
                database: s("pg"),
                username: s("alice"),
            },
            ClientError::DbUserNotAllowed {
                db_user: s("postgres"),
                database: s("pg"),
                allowed: s("any except [postgres]"),
            },
            ClientError::UnknownTunnel(7),
            ClientError::NotYourStatement(4242),
            ClientError::NotSignalled(4242),
            ClientError::Io {
                what: s("reading the profile"),
                source: std::io::Error::other("disk full"),
            },
            ClientError::Corrupt {
                what: s("the session certificate"),
                reason: s("bad PEM"),
            },
            ClientError::Crypto(s("no randomness")),
            ClientError::DeviceCodeExpired,
        ]
    }

    /// The position of the variant in the enum; a new variant fails to
    /// compile here until [`ClientError::examples`] has one too.
    #[cfg(test)]
    fn variant_index(&self) -> usize {
        use ClientError as C;
        match self {
            C::NotLoggedIn => 0,
            C::SessionExpired => 1,
            C::UnknownProfile(_) => 2,
            C::BadAddress(_) => 3,
            C::Unreachable { .. } => 4,
            C::CaMismatch { .. } => 5,
            C::UntrustedCa { .. } => 6,
            C::BadPin => 7,
            C::Gateway(_) => 8,
            C::LoginRefused(_) => 9,
            C::TotpRequired => 10,
            C::LoginTimedOut(_) => 11,
            C::LoginCancelled => 12,
            C::NoSsoConnector => 13,
            C::SeveralSsoConnectors(_) => 14,
            C::Keychain(_) => 15,
            C::PortUnavailable { .. } => 16,
            C::SocketTaken { .. } => 17,
            C::SocketDir { .. } => 18,
            C::NoUnixSockets => 19,
            C::UnsafeSignInUrl(_) => 20,
            C::UnknownDatabase(_) => 21,
            C::AutoDbUser { .. } => 22,
            C::DbUserNotAllowed { .. } => 23,
            C::UnknownTunnel(_) => 24,
            C::NotYourStatement(_) => 25,
            C::NotSignalled(_) => 26,
            C::Io { .. } => 27,
            C::Corrupt { .. } => 28,
            C::Crypto(_) => 29,
            C::DeviceCodeExpired => 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_cover_every_variant_once() {
        let indices: Vec<usize> = ClientError::examples()
            .iter()
            .map(ClientError::variant_index)
            .collect();
        assert_eq!(indices, (0..31).collect::<Vec<_>>());
    }

    #[test]
    fn the_neutral_text_names_no_flag() {
        for e in ClientError::examples() {
            let text = e.to_string();
            assert!(!text.contains("--"), "{e:?}: {text}");
            assert!(!text.contains("postern login"), "{e:?}: {text}");
        }
    }
}
