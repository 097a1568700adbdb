//! Time-based one-time codes (RFC 6238) as a second factor for local users:
//! SHA-1, six digits, 30-second steps, one step of clock skew either way —
//! what every authenticator app understands.

use std::time::{SystemTime, UNIX_EPOCH};

use totp_rs::{Builder, Secret, Totp};

use crate::store::{Store, StoreError};

/// Why a one-time-code secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The stored secret is not valid base32, or too short.
    #[error("the stored one-time-code secret is invalid: {0}")]
    BadSecret(String),
    /// The used codes could not be checked or recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a new random secret (160 bits), base32 as it is stored.
pub fn generate_secret() -> String {
    Secret::generate().to_base32()
}

fn totp(secret_base32: &str, account: &str, issuer: &str) -> Result<Totp, TotpError> {
    let secret =
        Secret::try_from_base32(secret_base32).map_err(|e| TotpError::BadSecret(e.to_string()))?;
    // `:` separates issuer and account in otpauth URIs.
    Builder::new()
        .with_secret(secret)
        .with_account_name(account.replace(':', "_"))
        .with_issuer(Some(issuer.replace(':', "_")))
        .build()
        .map_err(|e| TotpError::BadSecret(e.to_string()))
}

/// The `otpauth://totp/...` URI an authenticator app imports (as text or QR code).
pub fn provisioning_uri(
    secret_base32: &str,
    account: &str,
    issuer: &str,
) -> Result<String, TotpError> {
    totp(secret_base32, account, issuer)?
        .to_url()
        .map_err(|e| TotpError::BadSecret(e.to_string()))
}

/// The time step a code belongs to, if it is valid at `unix` (±1 step).
pub fn check(secret_base32: &str, code: &str, unix: u64) -> Result<Option<u64>, TotpError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(totp(secret_base32, "user", "postern")?.check(&code, unix))
}

/// The current Unix time in seconds.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `code` is valid for `user` at `unix` and its time step was not
/// used before (RFC 6238 §5.2: a code is accepted once): the step is
/// recorded in the store, so a code used on one replica is refused on every
/// other. Blocks on the store.
pub fn accept_once(
    store: &dyn Store,
    user: &str,
    secret_base32: &str,
    code: &str,
    unix: u64,
) -> Result<bool, TotpError> {
    match check(secret_base32, code, unix)? {
        Some(step) => Ok(store.accept_totp_step(user, step)?),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked_with_one_step_of_skew() {
        let secret = generate_secret();
        let t = 1_700_000_000u64;
        let code = |at: u64| totp(&secret, "a", "b").unwrap().generate(at).to_string();
        assert_eq!(check(&secret, &code(t), t).unwrap(), Some(t / 30));
        assert_eq!(check(&secret, &code(t - 30), t).unwrap(), Some(t / 30 - 1));
        assert_eq!(check(&secret, &code(t + 30), t).unwrap(), Some(t / 30 + 1));
        assert_eq!(check(&secret, &code(t - 90), t).unwrap(), None);
        assert_eq!(check(&secret, "12345", t).unwrap(), None);
        assert_eq!(check(&secret, "", t).unwrap(), None);
        let spaced = format!("{} {}", &code(t)[..3], &code(t)[3..]);
        assert!(check(&secret, &spaced, t).unwrap().is_some());
        assert!(check("not base32!", "123456", t).is_err());
    }

    #[test]
    fn uri_names_issuer_and_account() {
        let secret = generate_secret();
        let uri = provisioning_uri(&secret, "alice", "postern").unwrap();
        assert!(uri.starts_with("otpauth://totp/postern:alice?"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    }

    #[test]
    fn a_code_is_accepted_once_by_any_replica() {
        let dir = tempfile::tempdir().unwrap();
        let open = || crate::store::SqliteStore::open(dir.path()).unwrap();
        let (a, b) = (open(), open());
        let secret = generate_secret();
        let t = 1_700_000_000u64;
        let code = totp(&secret, "a", "b").unwrap().generate(t).to_string();
        assert!(!accept_once(&a, "alice", &secret, "000000x", t).unwrap());
        assert!(accept_once(&a, "alice", &secret, &code, t).unwrap());
        assert!(
            !accept_once(&b, "alice", &secret, &code, t).unwrap(),
            "replayed"
        );
        assert!(accept_once(&b, "bob", &secret, &code, t).unwrap());
    }
}
