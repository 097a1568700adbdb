//! What the demo tells once everything runs: the connection steps on stdout
//! and, with `--env FILE`, the same facts as shell variables.

use std::path::{Path, PathBuf};

use postern_gateway::cmd::ReadyFile;

use crate::write_private;

/// Everything a person (or scripts/bench) needs to use the running demo.
pub struct Facts<'a> {
    /// The gateway's address and CA pin, from its ready file.
    pub gateway: &'a ReadyFile,
    pub user: &'a str,
    pub password: &'a str,
    pub password_file: &'a Path,
    pub database: &'a str,
    pub db_users: &'a [&'a str],
    pub db_names: &'a [&'a str],
    pub pg_port: u16,
    pub pg_socket_dir: &'a Path,
    /// Also the OS user that runs PostgreSQL.
    pub pg_superuser: &'a str,
    /// PostgreSQL's programs (psql, pgbench, ...).
    pub pg_bindir: &'a Path,
    /// CA of PostgreSQL's server certificate.
    pub pg_ca: &'a Path,
    pub pg_log: &'a Path,
    pub writer_password: &'a str,
    /// Suggested tunnel ports.
    pub reader_port: u16,
    pub writer_port: u16,
    pub bin_dir: &'a Path,
    /// The gateway's log, or each replica's.
    pub gateway_logs: &'a [PathBuf],
    /// With `--replicas`: each replica's name and address (HAProxy is
    /// [`Facts::gateway`]); empty for one gateway.
    pub replicas: &'a [(String, String)],
    /// With `--sso`: the identity provider and its sample person.
    pub sso: Option<&'a SsoFacts>,
}

/// The single sign-on part of the demo.
pub struct SsoFacts {
    /// The connector's name at the gateway.
    pub connector: &'static str,
    /// The sample person's login at the provider.
    pub person: &'static str,
    pub password: String,
    pub password_file: PathBuf,
    /// The provider's issuer URL.
    pub issuer: String,
    /// The CA of the gateway's certificate (PEM), for the browser.
    pub gateway_ca: PathBuf,
}

impl Facts<'_> {
    /// The text printed once the demo is ready.
    pub fn connection_steps(&self) -> String {
        let Facts {
            gateway,
            user,
            password,
            database,
            pg_port,
            reader_port,
            writer_port,
            ..
        } = self;
        let (addr, pin) = (&gateway.address, &gateway.ca_pin);
        let pw_file = self.password_file.display();
        let bin_dir = self.bin_dir.display();
        let db_names = self.db_names.join(" ");
        let gateway_logs = self
            .gateway_logs
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let pg_log = self.pg_log.display();
        let replicas = self.replicas_text();
        let sso = self.sso_text();
        format!(
            r#"
Postern demo is running.

  gateway    {addr}{replicas}
  CA pin     {pin}
  user       {user}
  password   {password}   (also in {pw_file})
  database   {database}: PostgreSQL on 127.0.0.1:{pg_port} with databases {db_names}
             db users: demo_reader (client certificate, read-only),
                       demo_writer (password held by the gateway, read-write)

Connect from another terminal (the binaries are in {bin_dir}):

  export PATH="{bin_dir}:$PATH"
  postern login {addr} --user {user} --password-stdin --ca-pin {pin} --key-store file < {pw_file}
  postern db ls -v
  postern proxy db {database} --db-user demo_reader --db-name shop --port {reader_port}

and, while the tunnel runs, in a third terminal (no password needed):

  psql "host=127.0.0.1 port={reader_port} user=demo_reader dbname=shop" -c 'select name, city from customers limit 5'

For writes, tunnel as demo_writer instead:

  postern proxy db {database} --db-user demo_writer --db-name shop --port {writer_port}
  psql "host=127.0.0.1 port={writer_port} user=demo_writer dbname=shop"

In psql, Ctrl+C cancels a running query through the tunnel; try
  select pg_sleep(30);
and press Ctrl+C: "canceling statement due to user request".

{sso}Logs: {gateway_logs}, {pg_log}
Press Ctrl+C to stop the demo.
"#
        )
    }

    /// With `--sso`, how to sign in with it.
    fn sso_text(&self) -> String {
        let Some(sso) = self.sso else {
            return String::new();
        };
        let (addr, pin) = (&self.gateway.address, &self.gateway.ca_pin);
        let port = addr.rsplit(':').next().unwrap_or_default();
        format!(
            r#"Single sign-on: the identity provider {issuer} (oidc-provider) knows
{person} (password {password}, also in {pw_file}), whose group maps to
the demo role. Sign in with it instead of a password:

  postern login {addr} --sso --ca-pin {pin}

Your browser opens the provider's page; sign in as {person} and allow
access. Its last step goes to https://localhost:{port}, whose certificate
the demo's own CA signed: import {ca} into the browser as a trusted
authority first, or accept the browser's warning for that address once.
The desktop app offers "{connector}" on its sign-in page.

On a machine without a browser (a server over ssh), sign in from another
device instead:

  postern login {addr} --sso --device --ca-pin {pin}

It prints a short code and https://localhost:{port}/v1/login/device: open
that address in a browser, enter the code, sign in as {person}, and approve
the machine the page names (the same host name and key fingerprint as the
terminal shows).

"#,
            issuer = sso.issuer,
            person = sso.person,
            password = sso.password,
            pw_file = sso.password_file.display(),
            ca = sso.gateway_ca.display(),
            connector = sso.connector,
        )
    }

    /// With replicas, what is behind the gateway address.
    fn replicas_text(&self) -> String {
        if self.replicas.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .replicas
            .iter()
            .map(|(name, address)| format!("{name} {address}"))
            .collect();
        format!(
            " (HAProxy, TCP mode)\n  replicas   {} on one PostgreSQL store (database postern_store)",
            list.join(", ")
        )
    }

    /// Writes the POSTERN_DEMO_* variables for a shell to source, whole or
    /// not at all (a reader waits for the file to appear).
    pub fn write_env_file(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let vars = [
            ("POSTERN_DEMO_GATEWAY", self.gateway.address.clone()),
            ("POSTERN_DEMO_CA_PIN", self.gateway.ca_pin.clone()),
            ("POSTERN_DEMO_USER", self.user.to_owned()),
            ("POSTERN_DEMO_PASSWORD", self.password.to_owned()),
            ("POSTERN_DEMO_DATABASE", self.database.to_owned()),
            ("POSTERN_DEMO_DB_USERS", self.db_users.join(" ")),
            ("POSTERN_DEMO_DB_NAMES", self.db_names.join(" ")),
            ("POSTERN_DEMO_PG_PORT", self.pg_port.to_string()),
            (
                "POSTERN_DEMO_PG_SOCKET_DIR",
                self.pg_socket_dir.display().to_string(),
            ),
            ("POSTERN_DEMO_PG_SUPERUSER", self.pg_superuser.to_owned()),
            (
                "POSTERN_DEMO_PG_BINDIR",
                self.pg_bindir.display().to_string(),
            ),
            (
                "POSTERN_DEMO_WRITER_PASSWORD",
                self.writer_password.to_owned(),
            ),
            ("POSTERN_DEMO_BIN_DIR", self.bin_dir.display().to_string()),
            ("POSTERN_DEMO_PG_CA", self.pg_ca.display().to_string()),
            (
                "POSTERN_DEMO_REPLICAS",
                self.replicas
                    .iter()
                    .map(|(name, address)| format!("{name}={address}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        let mut text = format!(
            "# Written by scripts/demo (pid {}); removed when the demo stops.\n",
            std::process::id()
        );
        for (name, value) in vars {
            text.push_str(&env_line(name, &value));
        }
        write_private(path, &text)
    }
}

/// `NAME=VALUE` for a shell to source: bare when the value needs no quoting
/// (so simple readers work too), else in single quotes.
fn env_line(name: &str, value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./:@%+,=-".contains(c));
    if plain {
        format!("{name}={value}\n")
    } else {
        format!("{name}='{}'\n", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::env_line;

    #[test]
    fn env_values_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(env_line("A", "127.0.0.1:3080"), "A=127.0.0.1:3080\n");
        assert_eq!(env_line("A", "shop analytics"), "A='shop analytics'\n");
        assert_eq!(env_line("A", "it's"), "A='it'\\''s'\n");
    }
}
