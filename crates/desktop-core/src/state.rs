//! What the app remembers between runs beyond the shared profile directory:
//! how each profile last signed in (so "sign in again" is one click) and the
//! connect dialog's last choices per database. Kept in
//! `$POSTERN_HOME/desktop.json`; a damaged file only costs these conveniences.

use std::collections::BTreeMap;
use std::path::PathBuf;

use postern_client::home::{Home, write_private};
use serde::{Deserialize, Serialize};

use crate::views::{ConnectChoice, LoginMethod};

/// The remembered state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DesktopState {
    /// How each profile last signed in.
    #[serde(default)]
    pub logins: BTreeMap<String, LoginMethod>,
    /// Connect dialog choices by `profile/database`.
    #[serde(default)]
    pub choices: BTreeMap<String, ConnectChoice>,
}

fn path(home: &Home) -> PathBuf {
    home.dir().join("desktop.json")
}

fn choice_key(profile: &str, database: &str) -> String {
    format!("{profile}/{database}")
}

impl DesktopState {
    /// Reads the state (empty when missing or damaged).
    pub fn load(home: &Home) -> Self {
        std::fs::read_to_string(path(home))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn save(&self, home: &Home) {
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        if let Err(e) = write_private(&path(home), text.as_bytes()) {
            tracing::warn!(error = %e, "could not save the desktop state");
        }
    }

    /// Remembers how `profile` signed in.
    pub fn remember_login(home: &Home, profile: &str, method: LoginMethod) {
        let mut s = Self::load(home);
        s.logins.insert(profile.to_owned(), method);
        s.save(home);
    }

    /// Remembers the connect dialog's choice for a database.
    pub fn remember_choice(home: &Home, profile: &str, database: &str, choice: ConnectChoice) {
        let mut s = Self::load(home);
        s.choices.insert(choice_key(profile, database), choice);
        s.save(home);
    }

    /// The last choice for a database.
    pub fn choice(&self, profile: &str, database: &str) -> Option<ConnectChoice> {
        self.choices.get(&choice_key(profile, database)).cloned()
    }
}
