//! A tunnel's loopback endpoint and the strings other programs take for it:
//! a connection URI, a libpq conninfo, a psql command line.

use std::ffi::OsString;

use super::LaunchError;

/// A tunnel's loopback endpoint, as other programs need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Catalog database the tunnel leads to (names entries).
    pub database: String,
    /// Loopback host, e.g. `127.0.0.1`.
    pub host: String,
    /// Loopback port.
    pub port: u16,
    /// Database user the tunnel logs in as (`None`: the client's choice).
    pub db_user: Option<String>,
    /// Database name (`None`: the tunnel's default).
    pub db_name: Option<String>,
}

/// Characters kept as they are in URI user and path parts (RFC 3986 unreserved).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A libpq conninfo value: bare when safe, else single-quoted with escapes.
fn conninfo_value(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._@:/+".contains(c))
    {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A POSIX shell word: bare when safe, else single-quoted.
pub(super) fn shell_word(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._@:/+=,".contains(c))
    {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

impl Endpoint {
    /// `postgresql://user@127.0.0.1:PORT/db?sslmode=disable`: the local leg is
    /// plain loopback (the tunnel itself carries TLS), so no client tries TLS.
    pub fn uri(&self) -> String {
        let user = self
            .db_user
            .as_deref()
            .map(|u| format!("{}@", percent_encode(u)))
            .unwrap_or_default();
        let db = self
            .db_name
            .as_deref()
            .map(percent_encode)
            .unwrap_or_default();
        // A socket directory is a path: libpq reads it percent-encoded.
        let host = if self.host.starts_with('/') {
            percent_encode(&self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgresql://{user}{host}:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The conninfo string psql takes as its one argument.
    pub fn conninfo(&self) -> String {
        let mut parts = vec![
            format!("host={}", conninfo_value(&self.host)),
            format!("port={}", self.port),
        ];
        if let Some(u) = &self.db_user {
            parts.push(format!("user={}", conninfo_value(u)));
        }
        if let Some(d) = &self.db_name {
            parts.push(format!("dbname={}", conninfo_value(d)));
        }
        parts.push("sslmode=disable".into());
        parts.join(" ")
    }

    /// The endpoint as libpq's environment variables (`PGHOST`, ...), for
    /// starting psql without putting the values on a command line.
    pub fn libpq_env(&self) -> Vec<(String, OsString)> {
        let mut env = vec![
            ("PGHOST".to_owned(), OsString::from(&self.host)),
            ("PGPORT".to_owned(), OsString::from(self.port.to_string())),
            ("PGSSLMODE".to_owned(), OsString::from("disable")),
        ];
        if let Some(u) = &self.db_user {
            env.push(("PGUSER".into(), u.into()));
        }
        if let Some(d) = &self.db_name {
            env.push(("PGDATABASE".into(), d.into()));
        }
        env
    }

    /// Refuses control characters in anything written to a configuration
    /// file: a line break would start a new entry of the attacker's making.
    pub(super) fn check_writable(&self) -> Result<(), LaunchError> {
        let fields = [
            ("database", Some(&self.database)),
            ("host", Some(&self.host)),
            ("database user", self.db_user.as_ref()),
            ("database name", self.db_name.as_ref()),
        ];
        match fields
            .into_iter()
            .find(|(_, v)| v.is_some_and(|v| v.chars().any(char::is_control)))
        {
            Some((field, _)) => Err(LaunchError::ControlCharacter(field)),
            None => Ok(()),
        }
    }

    /// A psql command line to paste into a POSIX shell.
    pub fn psql_command(&self) -> String {
        let conninfo = self.conninfo();
        // Double quotes read best and are safe unless the value has shell
        // metacharacters.
        if conninfo.chars().any(|c| "\"$`\\!".contains(c)) {
            format!("psql {}", shell_word(&conninfo))
        } else {
            format!("psql \"{conninfo}\"")
        }
    }

    /// A short, stable name for entries (`postern-DB-USER-NAME`), made only of
    /// characters every config format accepts.
    pub fn entry_name(&self) -> String {
        let mut name = format!("postern-{}", self.database);
        for part in [&self.db_user, &self.db_name].into_iter().flatten() {
            name.push('-');
            name.push_str(part);
        }
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The `pg_service.conf` section for this endpoint.
    pub fn service_section(&self, name: &str) -> String {
        let mut s = format!(
            "[{name}]\n# Postern tunnel to {}; written by Postern, replaced on the next write\nhost={}\nport={}\n",
            self.database, self.host, self.port
        );
        if let Some(u) = &self.db_user {
            s.push_str(&format!("user={u}\n"));
        }
        if let Some(d) = &self.db_name {
            s.push_str(&format!("dbname={d}\n"));
        }
        s.push_str("sslmode=disable\n");
        s
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The endpoint the launcher tests describe.
    pub(in crate::launch) fn endpoint() -> Endpoint {
        Endpoint {
            database: "demo-pg".into(),
            host: "127.0.0.1".into(),
            port: 40111,
            db_user: Some("demo_reader".into()),
            db_name: Some("shop".into()),
        }
    }

    #[test]
    fn uri_and_psql_command_name_user_and_database() {
        let e = endpoint();
        assert_eq!(
            e.uri(),
            "postgresql://demo_reader@127.0.0.1:40111/shop?sslmode=disable"
        );
        assert_eq!(
            e.psql_command(),
            "psql \"host=127.0.0.1 port=40111 user=demo_reader dbname=shop sslmode=disable\""
        );
        let bare = Endpoint {
            db_user: None,
            db_name: None,
            ..e.clone()
        };
        assert_eq!(bare.uri(), "postgresql://127.0.0.1:40111/?sslmode=disable");
        let socket = Endpoint {
            host: "/run/user/1000/postern".into(),
            ..e.clone()
        };
        assert_eq!(
            socket.uri(),
            "postgresql://demo_reader@%2Frun%2Fuser%2F1000%2Fpostern:40111/shop?sslmode=disable"
        );
        assert_eq!(
            bare.psql_command(),
            "psql \"host=127.0.0.1 port=40111 sslmode=disable\""
        );
    }

    #[test]
    fn odd_names_are_escaped_for_uri_conninfo_and_shell() {
        let e = Endpoint {
            db_user: Some("IAMR:team role".into()),
            db_name: Some("it's $db".into()),
            ..endpoint()
        };
        assert_eq!(
            e.uri(),
            "postgresql://IAMR%3Ateam%20role@127.0.0.1:40111/it%27s%20%24db?sslmode=disable"
        );
        assert_eq!(
            e.conninfo(),
            "host=127.0.0.1 port=40111 user='IAMR:team role' dbname='it\\'s $db' sslmode=disable"
        );
        // A shell must hand psql exactly the conninfo.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s {}",
                e.psql_command().strip_prefix("psql ").unwrap()
            ))
            .output();
        if let Ok(out) = out {
            assert_eq!(String::from_utf8_lossy(&out.stdout), e.conninfo());
        }
    }
}
