//! Client errors. `Display` is a plain sentence for people: the CLI prints it,
//! the desktop app shows it, a database client receives it in an ErrorResponse.

/// What went wrong in a client flow.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No profile: the user never logged in (or logged out).
    #[error("you are not logged in; run `postern login GATEWAY`")]
    NotLoggedIn,
    /// The session certificate expired.
    #[error("your Postern session expired; run `postern login` again")]
    SessionExpired,
    /// A named profile does not exist.
    #[error("there is no profile {0:?}; `postern profiles` lists them")]
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
    /// The gateway's CA is not the pinned one.
    #[error(
        "WARNING: the gateway at {addr} presented CA {got}, but this profile trusts {pinned}. \
         Someone may be intercepting the connection, or the gateway's CA was replaced. \
         If an administrator confirms the new CA, log in again with --ca-pin {got}"
    )]
    CaMismatch {
        /// Gateway address.
        addr: String,
        /// Pinned fingerprint.
        pinned: String,
        /// Presented fingerprint.
        got: String,
    },
    /// The user declined (or could not be asked) to trust a new gateway CA.
    #[error(
        "the gateway at {addr} presented CA {fingerprint}; pass --ca-pin {fingerprint} if you trust it"
    )]
    UntrustedCa {
        /// Gateway address.
        addr: String,
        /// Presented fingerprint.
        fingerprint: String,
    },
    /// A `--ca-pin` value is malformed.
    #[error("--ca-pin must look like sha256:<64 hex digits>")]
    BadPin,
    /// The gateway answered with an error.
    #[error("{0}")]
    Gateway(String),
    /// The gateway refused a login's credentials. It gives the same answer
    /// for a wrong password and a missing or wrong one-time code.
    #[error("{0}")]
    LoginRefused(String),
    /// The account has one-time codes (TOTP) and none was given.
    #[error(
        "a one-time code is required: give the code from your authenticator app with --totp CODE"
    )]
    TotpRequired,
    /// The browser sign-in did not finish in time.
    #[error("the sign-in was not completed within {0}; run `postern login --sso` again")]
    LoginTimedOut(String),
    /// The user stopped the sign-in.
    #[error("the sign-in was cancelled; nothing was saved")]
    LoginCancelled,
    /// The key store failed.
    #[error("cannot use the {store} key store: {reason}")]
    KeyStore {
        /// Which store.
        store: &'static str,
        /// Why.
        reason: String,
    },
    /// A local port could not be used.
    #[error(
        "port {port} on 127.0.0.1 is not available ({reason}); pick another with --port, or omit --port"
    )]
    PortUnavailable {
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A Unix socket of the same name is in use.
    #[error(
        "port {port} in {dir} is in use by another program; pick another with --port, or omit --port"
    )]
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
    #[error("database {0:?} is not available to you; run `postern db ls`")]
    UnknownDatabase(String),
    /// A choice must be made explicitly.
    #[error("{0}")]
    Ambiguous(String),
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
}
