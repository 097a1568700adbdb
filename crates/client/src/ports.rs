//! Tunnel ports are remembered per (profile, database, db user, db name), so
//! a saved connection in pgAdmin or a `pg_service.conf` keeps working.

use std::collections::BTreeMap;

use crate::error::ClientError;
use crate::home::{Home, write_private};

fn path(home: &Home) -> std::path::PathBuf {
    home.dir().join("ports.json")
}

/// The key a port is remembered under.
pub fn port_key(
    profile: &str,
    database: &str,
    db_user: Option<&str>,
    db_name: Option<&str>,
) -> String {
    format!(
        "{profile}/{database}/{}/{}",
        db_user.unwrap_or(""),
        db_name.unwrap_or("")
    )
}

/// The remembered port for a key.
pub fn remembered(home: &Home, key: &str) -> Option<u16> {
    load(home).get(key).copied()
}

/// Remembers a port.
pub fn remember(home: &Home, key: &str, port: u16) -> Result<(), ClientError> {
    let mut ports = load(home);
    if ports.get(key) == Some(&port) {
        return Ok(());
    }
    ports.insert(key.to_owned(), port);
    write_private(
        &path(home),
        serde_json::to_string_pretty(&ports)
            .expect("map serializes")
            .as_bytes(),
    )
}

fn load(home: &Home) -> BTreeMap<String, u16> {
    // A damaged file only costs remembered ports, never a failed tunnel.
    std::fs::read_to_string(path(home))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_remembered_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().to_owned());
        let a = port_key("p", "db", Some("alice"), None);
        let b = port_key("p", "db", Some("bob"), None);
        assert_eq!(remembered(&home, &a), None);
        remember(&home, &a, 15432).unwrap();
        remember(&home, &b, 15433).unwrap();
        assert_eq!(remembered(&home, &a), Some(15432));
        assert_eq!(remembered(&home, &b), Some(15433));
    }
}
