//! Local users: argon2id password hashes in the store.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};

use crate::store::UserRecord;

/// Hashes a new password (argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// A hash of a password nobody knows, checked when the user does not exist so
/// that a wrong username costs as much time as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("postern-no-such-user").expect("argon2 hashes"));

/// Checks a login. `None` for an unknown user or a wrong password, without
/// telling the two apart.
pub fn verify<'a>(user: Option<&'a UserRecord>, password: &str) -> Option<&'a UserRecord> {
    let hash = user.map_or(DUMMY_HASH.as_str(), |u| u.password_hash.as_str());
    let parsed = PasswordHash::new(hash).ok()?;
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    user.filter(|_| ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_password_only() {
        let user = UserRecord {
            name: "alice".into(),
            password_hash: hash_password("correct horse").unwrap(),
            roles: vec![],
            traits: Default::default(),
            totp: None,
        };
        assert!(verify(Some(&user), "correct horse").is_some());
        assert!(verify(Some(&user), "wrong").is_none());
        assert!(verify(None, "correct horse").is_none());
        assert!(!user.password_hash.contains("correct"));
    }
}
