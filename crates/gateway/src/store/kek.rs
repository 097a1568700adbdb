//! The key-encryption key that seals CA private keys in a shared store:
//! AES-256-GCM (aws-lc-rs, already the workspace's TLS crypto), a random
//! nonce per seal, and the CA kind as associated data so a sealed key cannot
//! be moved to another kind's row.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::StoreError;

/// Prefix of sealed values, so a later format can be told apart.
const SEALED_V1: &str = "kek1:";

/// A key-encryption key. Its bytes are never printed.
pub struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// A key from its configured text: base64 of 32 random bytes (e.g.
    /// `openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Kek, StoreError> {
        let bad = || {
            StoreError::Kek("the key-encryption key must be base64 of 32 random bytes (openssl rand -base64 32)".into())
        };
        let bytes = STANDARD.decode(text.trim()).map_err(|_| bad())?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad())?;
        Ok(Kek(LessSafeKey::new(key)))
    }

    /// Seals `plaintext`, bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Kek("no random bytes for a nonce".into()))?;
        let mut sealed = plaintext.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| StoreError::Kek("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_V1}{}", STANDARD.encode(out)))
    }

    /// Opens what [`seal`](Self::seal) made with the same key and `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, StoreError> {
        let wrong = || {
            StoreError::Kek(format!(
                "the stored {context} does not open with this key-encryption key (another key sealed it, or the row was altered)"
            ))
        };
        let bytes = sealed
            .strip_prefix(SEALED_V1)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(wrong)?;
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut rest = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut rest)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn sealed_keys_open_only_with_the_same_key_and_kind() {
        let kek = Kek::from_base64(KEY).unwrap();
        let sealed = kek
            .seal("user CA key", "-----BEGIN PRIVATE KEY-----")
            .unwrap();
        assert!(!sealed.contains("PRIVATE"), "{sealed}");
        assert_eq!(
            kek.open("user CA key", &sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert!(kek.open("host CA key", &sealed).is_err());
        let other = Kek::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(other.open("user CA key", &sealed).is_err());
        assert!(Kek::from_base64("c2hvcnQ=").is_err());
    }
}
