//! Where the session's private key lives: the OS keychain, or — chosen
//! explicitly for machines without one — a 0600 file under `$POSTERN_HOME`.

use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::home::{Home, write_private};

const KEYRING_SERVICE: &str = "postern";

/// The two key stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStoreKind {
    /// The OS keychain (macOS Keychain, Windows Credential Manager, Secret Service).
    Keyring,
    /// A private file, for headless servers and CI.
    File,
}

impl std::str::FromStr for KeyStoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keyring" => Ok(KeyStoreKind::Keyring),
            "file" => Ok(KeyStoreKind::File),
            other => Err(format!("unknown key store {other:?}; use keyring or file")),
        }
    }
}

fn keyring_err(e: keyring::Error) -> ClientError {
    ClientError::Keychain(e.to_string())
}

/// Saves a profile's private key (PEM).
pub fn save_key(
    home: &Home,
    profile: &str,
    kind: KeyStoreKind,
    pem: &str,
) -> Result<(), ClientError> {
    match kind {
        KeyStoreKind::Keyring => keyring::Entry::new(KEYRING_SERVICE, profile)
            .and_then(|e| e.set_password(pem))
            .map_err(keyring_err),
        KeyStoreKind::File => write_private(&key_path(home, profile), pem.as_bytes()),
    }
}

/// Loads a profile's private key (PEM).
pub fn load_key(home: &Home, profile: &str, kind: KeyStoreKind) -> Result<String, ClientError> {
    match kind {
        KeyStoreKind::Keyring => {
            match keyring::Entry::new(KEYRING_SERVICE, profile).and_then(|e| e.get_password()) {
                Ok(pem) => Ok(pem),
                Err(keyring::Error::NoEntry) => Err(ClientError::NotLoggedIn),
                Err(e) => Err(keyring_err(e)),
            }
        }
        KeyStoreKind::File => match std::fs::read_to_string(key_path(home, profile)) {
            Ok(pem) => Ok(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ClientError::NotLoggedIn),
            Err(e) => Err(ClientError::io("reading the private key")(e)),
        },
    }
}

/// Deletes a profile's private key; a missing key is not an error.
pub fn delete_key(home: &Home, profile: &str, kind: KeyStoreKind) -> Result<(), ClientError> {
    match kind {
        KeyStoreKind::Keyring => match keyring::Entry::new(KEYRING_SERVICE, profile)
            .and_then(|e| e.delete_credential())
        {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keyring_err(e)),
        },
        KeyStoreKind::File => match std::fs::remove_file(key_path(home, profile)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClientError::io("deleting the private key")(e)),
        },
    }
}

fn key_path(home: &Home, profile: &str) -> std::path::PathBuf {
    home.dir().join("keys").join(format!("{profile}.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().to_owned());
        save_key(&home, "p", KeyStoreKind::File, "PEM").unwrap();
        assert_eq!(load_key(&home, "p", KeyStoreKind::File).unwrap(), "PEM");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_path(&home, "p"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        delete_key(&home, "p", KeyStoreKind::File).unwrap();
        assert!(matches!(
            load_key(&home, "p", KeyStoreKind::File),
            Err(ClientError::NotLoggedIn)
        ));
    }
}
