//! Profiles: one per gateway, shared by the CLI and the desktop app.
//!
//! Layout of `$POSTERN_HOME` (default: the platform config dir):
//! `profiles/<name>.json` (gateway, pin, certificate, where the key lives),
//! `current` (the current profile's name), `keys/<name>.pem` (file key store
//! only, 0600) and `ports.json` (remembered tunnel ports).

use std::path::PathBuf;

use postern_api::Identity;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::home::{Home, write_private};
use crate::keystore::KeyStoreKind;

/// A gateway the user has logged in to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// Profile name (default: derived from the gateway address).
    pub name: String,
    /// Gateway `host:port`.
    pub gateway: String,
    /// Pinned CA fingerprint, `sha256:<hex>`.
    pub ca_pin: String,
    /// Where the private key is kept.
    pub key_store: KeyStoreKind,
    /// Session certificate, PEM (absent after logout).
    #[serde(default)]
    pub cert_pem: Option<String>,
    /// Identity in the certificate.
    #[serde(default)]
    pub identity: Option<Identity>,
}

/// Profiles are files under the home directory.
impl Home {
    /// Path of a profile file.
    pub fn profile_path(&self, name: &str) -> PathBuf {
        self.dir().join("profiles").join(format!("{name}.json"))
    }

    /// Reads a profile.
    pub fn load(&self, name: &str) -> Result<Profile, ClientError> {
        let path = self.profile_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::UnknownProfile(name.to_owned()));
            }
            Err(e) => return Err(ClientError::io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Corrupt {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Writes a profile atomically, private to the user.
    pub fn save(&self, profile: &Profile) -> Result<(), ClientError> {
        let text = serde_json::to_string_pretty(profile).expect("profile serializes");
        write_private(&self.profile_path(&profile.name), text.as_bytes())
    }

    /// Removes a profile file.
    pub fn remove(&self, name: &str) -> Result<(), ClientError> {
        match std::fs::remove_file(self.profile_path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClientError::io("removing the profile")(e)),
        }
    }

    /// The current profile's name.
    pub fn current_name(&self) -> Result<Option<String>, ClientError> {
        match std::fs::read_to_string(self.dir().join("current")) {
            Ok(name) => Ok(Some(name.trim().to_owned()).filter(|n| !n.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::io("reading the current profile")(e)),
        }
    }

    /// Makes a profile current.
    pub fn set_current(&self, name: &str) -> Result<(), ClientError> {
        write_private(&self.dir().join("current"), name.as_bytes())
    }

    /// The profile named, or the current one.
    pub fn resolve(&self, name: Option<&str>) -> Result<Profile, ClientError> {
        match name {
            Some(n) => self.load(n),
            None => {
                let current = self.current_name()?.ok_or(ClientError::NotLoggedIn)?;
                self.load(&current).map_err(|e| match e {
                    ClientError::UnknownProfile(_) => ClientError::NotLoggedIn,
                    other => other,
                })
            }
        }
    }

    /// Makes an existing profile current (`postern profiles use NAME`).
    pub fn use_profile(&self, name: &str) -> Result<Profile, ClientError> {
        let profile = self.load(name)?;
        self.set_current(name)?;
        Ok(profile)
    }

    /// Every profile, sorted by name, the current one marked.
    pub fn entries(&self) -> Result<Vec<ProfileEntry>, ClientError> {
        let current = self.current_name()?;
        self.list()?
            .into_iter()
            .map(|name| {
                Ok(ProfileEntry {
                    current: current.as_deref() == Some(name.as_str()),
                    profile: self.load(&name)?,
                })
            })
            .collect()
    }

    /// Names of all profiles, sorted.
    pub fn list(&self) -> Result<Vec<String>, ClientError> {
        let dir = self.dir().join("profiles");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ClientError::io("listing profiles")(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// A profile as `postern profiles` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileEntry {
    /// Whether commands without `--profile` use it.
    pub current: bool,
    /// The profile.
    #[serde(flatten)]
    pub profile: Profile,
}

/// Default profile name for a gateway address: safe as a file name.
pub fn profile_name_for(gateway: &str) -> String {
    gateway
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_current_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().to_owned());
        assert!(matches!(home.resolve(None), Err(ClientError::NotLoggedIn)));
        let profile = Profile {
            name: profile_name_for("gw.example.com:3080"),
            gateway: "gw.example.com:3080".into(),
            ca_pin: "sha256:00".into(),
            key_store: KeyStoreKind::File,
            cert_pem: None,
            identity: None,
        };
        assert_eq!(profile.name, "gw.example.com_3080");
        home.save(&profile).unwrap();
        home.set_current(&profile.name).unwrap();
        assert_eq!(home.resolve(None).unwrap().gateway, "gw.example.com:3080");
        assert_eq!(
            home.list().unwrap(),
            vec!["gw.example.com_3080".to_string()]
        );
        let other = Profile {
            name: "other".into(),
            gateway: "other:3080".into(),
            ..profile.clone()
        };
        home.save(&other).unwrap();
        let entries = home.entries().unwrap();
        let current: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.profile.name.as_str(), e.current))
            .collect();
        assert_eq!(
            current,
            vec![("gw.example.com_3080", true), ("other", false)]
        );
        assert_eq!(home.use_profile("other").unwrap().gateway, "other:3080");
        assert_eq!(home.resolve(None).unwrap().name, "other");
        assert!(matches!(
            home.use_profile("nope"),
            Err(ClientError::UnknownProfile(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.profile_path(&profile.name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "profile must be private");
        }
    }
}
