//! Handing a tunnel to other programs: a connection URI, a psql command, a
//! `pg_service.conf` entry, psql in a terminal, and pgAdmin.
//!
//! Everything here describes a loopback endpoint; nothing needs the session.
//! The pure parts (strings, files, the choice of terminal, finding pgAdmin)
//! are separate from the parts that start processes, so they are tested
//! without a desktop.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::tunnel::{TunnelAddr, TunnelSpec};

/// What can go wrong when launching.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// psql is not on this machine.
    #[error("psql is not installed (or not on PATH); install the PostgreSQL client tools")]
    NoPsql,
    /// No terminal program was found.
    #[error("no terminal program was found; tried {0}")]
    NoTerminal(String),
    /// pgAdmin is not on this machine.
    #[error(
        "pgAdmin 4 is not installed: install it from pgadmin.org (or `pip install pgadmin4`), \
         or set POSTERN_PGADMIN to its install directory; the connection URI works in any other client"
    )]
    NoPgAdmin,
    /// pgAdmin refused the server entry.
    #[error("pgAdmin could not load the server: {0}")]
    PgAdmin(String),
    /// A value holds a control character and cannot be written to a file.
    #[error(
        "the {0} contains a control character (such as a line break), which pg_service.conf \
         and pgAdmin's server list cannot hold safely; nothing was written"
    )]
    ControlCharacter(&'static str),
    /// A program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

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
fn shell_word(v: &str) -> String {
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
    /// The endpoint of a tunnel listening at `addr` for `spec`.
    pub fn for_tunnel(addr: &TunnelAddr, spec: &TunnelSpec) -> Self {
        Endpoint {
            database: spec.database.clone(),
            host: addr.host(),
            port: addr.port(),
            db_user: spec.db_user.clone(),
            db_name: spec.db_name.clone(),
        }
    }

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
    fn check_writable(&self) -> Result<(), LaunchError> {
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

// ------------------------------------------------------------ pg_service.conf

/// The service file libpq reads: `$PGSERVICEFILE`, else `~/.pg_service.conf`
/// (`%APPDATA%\postgresql\.pg_service.conf` on Windows).
pub fn service_file() -> Result<PathBuf, LaunchError> {
    if let Some(p) = std::env::var_os("PGSERVICEFILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let no_home = || io("finding the home directory")(std::io::Error::other("no home directory"));
    if cfg!(windows) {
        let appdata = std::env::var_os("APPDATA").ok_or_else(no_home)?;
        return Ok(PathBuf::from(appdata)
            .join("postgresql")
            .join(".pg_service.conf"));
    }
    let home = directories::BaseDirs::new().ok_or_else(no_home)?;
    Ok(home.home_dir().join(".pg_service.conf"))
}

/// Replaces the `[name]` section of a service file's text with `section`, or
/// appends it; everything else is kept as it was.
pub fn replace_section(text: &str, name: &str, section: &str) -> String {
    let header = format!("[{name}]");
    let mut out = String::with_capacity(text.len() + section.len());
    let mut lines = text.split_inclusive('\n').peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.trim() == header && !replaced {
            // Skip the old section up to the next header.
            while lines
                .peek()
                .is_some_and(|next| !next.trim_start().starts_with('['))
            {
                lines.next();
            }
            out.push_str(section);
            if lines.peek().is_some() {
                out.push('\n');
            }
            replaced = true;
        } else {
            out.push_str(line);
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(section);
    }
    out
}

/// Writes (or replaces) the endpoint's section in the service file at `path`;
/// returns the service name, for `psql service=NAME`.
pub fn write_service(path: &Path, endpoint: &Endpoint) -> Result<String, LaunchError> {
    endpoint.check_writable()?;
    let name = endpoint.entry_name();
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    let new = replace_section(&old, &name, &endpoint.service_section(&name));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("postern-tmp");
    std::fs::write(&tmp, new).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))?;
    Ok(name)
}

// ------------------------------------------------------------------ programs

/// The operating systems launchers know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    /// Linux and other freedesktop systems.
    Linux,
    /// macOS.
    MacOs,
    /// Windows.
    Windows,
}

impl Os {
    /// The OS this was built for.
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Os::MacOs
        } else if cfg!(windows) {
            Os::Windows
        } else {
            Os::Linux
        }
    }
}

/// Looks a program up on `PATH` (with `.exe` on Windows).
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let names: Vec<String> = if cfg!(windows) {
        vec![format!("{program}.exe"), program.to_owned()]
    } else {
        vec![program.to_owned()]
    };
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Starts a program without waiting for it or tying it to this process's
/// terminal; its output is discarded.
fn spawn_detached(program: &Path, args: &[String]) -> Result<(), LaunchError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    detach(cmd, program)
}

/// Starts `cmd` (which runs `program`) as [`spawn_detached`] does.
fn detach(mut cmd: Command, program: &Path) -> Result<(), LaunchError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    // Reap it in the background so it never lingers as a zombie.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// Where psql is: on PATH, or in a usual install location.
pub fn find_psql() -> Result<PathBuf, LaunchError> {
    if let Some(p) = find_on_path("psql") {
        return Ok(p);
    }
    let extra: &[&str] = match Os::current() {
        Os::MacOs => &[
            "/opt/homebrew/bin/psql",
            "/usr/local/bin/psql",
            "/Applications/Postgres.app/Contents/Versions/latest/bin/psql",
        ],
        Os::Linux => &["/usr/bin/psql", "/usr/local/bin/psql"],
        Os::Windows => &[],
    };
    extra
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
        .ok_or(LaunchError::NoPsql)
}

/// Terminal programs tried on Linux, in order.
pub const LINUX_TERMINALS: [&str; 4] =
    ["x-terminal-emulator", "gnome-terminal", "konsole", "xterm"];

/// How to open psql on an endpoint in a new terminal window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalCommand {
    /// The program to start.
    pub program: PathBuf,
    /// Its arguments. On Windows they reach cmd.exe verbatim, because
    /// cmd.exe does not read quotes the way programs (and Rust) write them:
    /// there they are constants, and nothing from the endpoint is among them.
    pub args: Vec<String>,
    /// Environment for psql. On Windows the connection travels here
    /// (`PGHOST`, `PGDATABASE`, ...), never through cmd.exe's parser.
    pub env: Vec<(String, OsString)>,
}

/// The command that opens psql on `endpoint` in a new terminal window;
/// `find` locates a terminal program by name.
pub fn terminal_command(
    os: Os,
    psql: &Path,
    endpoint: &Endpoint,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<TerminalCommand, LaunchError> {
    let conninfo = endpoint.conninfo();
    let psql_text = psql.display().to_string();
    match os {
        Os::Linux => {
            // Arguments, no shell: the terminal runs psql with them as they are.
            for term in LINUX_TERMINALS {
                if let Some(path) = find(term) {
                    let flag = if term == "gnome-terminal" { "--" } else { "-e" };
                    return Ok(TerminalCommand {
                        program: path,
                        args: vec![flag.to_owned(), psql_text, conninfo],
                        env: Vec::new(),
                    });
                }
            }
            Err(LaunchError::NoTerminal(LINUX_TERMINALS.join(", ")))
        }
        Os::MacOs => {
            // Terminal.app runs a line in a new shell that does not inherit
            // our environment: quote for the shell, then for AppleScript.
            let applescript = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let line = format!("{} {}", shell_word(&psql_text), shell_word(&conninfo));
            Ok(TerminalCommand {
                program: PathBuf::from("osascript"),
                args: vec![
                    "-e".into(),
                    format!(
                        "tell application \"Terminal\" to do script \"{}\"",
                        applescript(&line)
                    ),
                    "-e".into(),
                    "tell application \"Terminal\" to activate".into(),
                ],
                env: Vec::new(),
            })
        }
        Os::Windows => {
            // `start` opens a console running `cmd /k psql`, which stays open
            // after psql ends so its last words can be read. psql is found
            // through PATH and the connection through libpq's variables.
            let mut env = endpoint.libpq_env();
            let dirs = psql.parent().map(Path::to_path_buf).into_iter();
            let inherited = std::env::var_os("PATH").unwrap_or_default();
            if let Ok(path) = std::env::join_paths(dirs.chain(std::env::split_paths(&inherited))) {
                env.push(("PATH".into(), path));
            }
            Ok(TerminalCommand {
                program: PathBuf::from("cmd"),
                args: ["/c", "start", "\"Postern psql\"", "cmd", "/k", "psql"]
                    .map(String::from)
                    .to_vec(),
                env,
            })
        }
    }
}

/// Opens psql on the endpoint in a new terminal window; returns the terminal used.
pub fn open_psql_in_terminal(endpoint: &Endpoint) -> Result<String, LaunchError> {
    let psql = find_psql()?;
    let terminal = terminal_command(Os::current(), &psql, endpoint, find_on_path)?;
    let mut cmd = Command::new(&terminal.program);
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        for arg in &terminal.args {
            cmd.raw_arg(arg);
        }
    }
    #[cfg(not(windows))]
    cmd.args(&terminal.args);
    cmd.envs(terminal.env.iter().map(|(k, v)| (k, v)));
    detach(cmd, &terminal.program)?;
    Ok(terminal
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

// -------------------------------------------------------------------- pgAdmin

/// pgAdmin's group for servers Postern adds.
pub const PGADMIN_GROUP: &str = "Postern";

/// One server in pgAdmin's `servers.json` format (`setup.py load-servers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgAdminServer {
    /// Display name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Server group.
    #[serde(rename = "Group")]
    pub group: String,
    /// Host.
    #[serde(rename = "Host")]
    pub host: String,
    /// Port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// Maintenance database.
    #[serde(rename = "MaintenanceDB")]
    pub maintenance_db: String,
    /// User name.
    #[serde(rename = "Username")]
    pub username: String,
    /// libpq parameters: `sslmode=disable`, since the tunnel carries TLS.
    #[serde(rename = "ConnectionParameters", default)]
    pub connection_parameters: serde_json::Map<String, serde_json::Value>,
}

impl PgAdminServer {
    /// The entry for a tunnel. pgAdmin insists on a user name: the tunnel's
    /// db user, or `postgres` when the tunnel takes the client's (it is then
    /// the client's choice anyway).
    pub fn for_endpoint(endpoint: &Endpoint) -> Self {
        let username = endpoint
            .db_user
            .clone()
            .unwrap_or_else(|| "postgres".into());
        let mut name = endpoint.database.clone();
        match (&endpoint.db_user, &endpoint.db_name) {
            (Some(u), Some(d)) => name.push_str(&format!(" ({u}@{d})")),
            (Some(u), None) => name.push_str(&format!(" ({u})")),
            (None, Some(d)) => name.push_str(&format!(" ({d})")),
            (None, None) => {}
        }
        let mut params = serde_json::Map::new();
        params.insert("sslmode".into(), "disable".into());
        params.insert("connect_timeout".into(), 10.into());
        PgAdminServer {
            name,
            group: PGADMIN_GROUP.into(),
            host: endpoint.host.clone(),
            port: endpoint.port,
            maintenance_db: endpoint
                .db_name
                .clone()
                .unwrap_or_else(|| "postgres".into()),
            username,
            connection_parameters: params,
        }
    }

    /// Same target (host, port, user, database), whatever the name.
    fn same_target(&self, other: &PgAdminServer) -> bool {
        self.host == other.host
            && self.port == other.port
            && self.username == other.username
            && self.maintenance_db == other.maintenance_db
    }
}

/// A `servers.json` document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServersJson {
    /// Servers keyed by a number as a string, as pgAdmin writes them.
    #[serde(rename = "Servers", default)]
    pub servers: std::collections::BTreeMap<String, PgAdminServer>,
}

impl ServersJson {
    /// A document with one server.
    pub fn single(server: PgAdminServer) -> Self {
        let mut servers = std::collections::BTreeMap::new();
        servers.insert("1".into(), server);
        ServersJson { servers }
    }
}

/// How to start pgAdmin's user interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgAdminUi {
    /// The desktop runtime (Linux, Windows): run it.
    Program(PathBuf),
    /// A macOS application bundle: `open -a`.
    MacApp(PathBuf),
    /// The PyPI package's `pgadmin4` web server: run it, then open the browser.
    WebServer(PathBuf),
}

/// How to run pgAdmin's command line (`setup.py` subcommands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgAdminCli {
    /// `pgadmin4-cli` (PyPI package).
    Script(PathBuf),
    /// `python setup.py` in pgAdmin's `web` directory.
    SetupPy {
        /// pgAdmin's Python.
        python: PathBuf,
        /// Its `setup.py`.
        setup_py: PathBuf,
    },
}

impl PgAdminCli {
    fn command(&self) -> Command {
        match self {
            PgAdminCli::Script(p) => Command::new(p),
            PgAdminCli::SetupPy { python, setup_py } => {
                let mut c = Command::new(python);
                c.arg(setup_py);
                if let Some(dir) = setup_py.parent() {
                    c.current_dir(dir);
                }
                c
            }
        }
    }
}

/// An installed pgAdmin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgAdmin {
    /// Its user interface.
    pub ui: PgAdminUi,
    /// Its command line.
    pub cli: PgAdminCli,
}

/// Where to look for pgAdmin (the real places, or a test's).
#[derive(Clone, Debug)]
pub struct PgAdminSearch {
    /// The OS whose install layout applies.
    pub os: Os,
    /// `POSTERN_PGADMIN`: an install directory or a Python environment.
    pub explicit: Option<PathBuf>,
    /// Desktop install roots (e.g. `/usr/pgadmin4`, `/Applications/pgAdmin 4.app`).
    pub desktop_roots: Vec<PathBuf>,
    /// Directories of `PATH`.
    pub path: Vec<PathBuf>,
}

impl PgAdminSearch {
    /// This machine's places.
    pub fn system() -> Self {
        let os = Os::current();
        let desktop_roots = match os {
            Os::Linux => vec![PathBuf::from("/usr/pgadmin4")],
            Os::MacOs => {
                let mut v = vec![PathBuf::from("/Applications/pgAdmin 4.app")];
                if let Some(home) = directories::BaseDirs::new() {
                    v.push(home.home_dir().join("Applications/pgAdmin 4.app"));
                }
                v
            }
            Os::Windows => {
                let mut v = Vec::new();
                for var in ["ProgramFiles", "LOCALAPPDATA"] {
                    if let Some(base) = std::env::var_os(var) {
                        let base = PathBuf::from(base);
                        v.push(base.join("pgAdmin 4"));
                        v.push(base.join("Programs").join("pgAdmin 4"));
                    }
                }
                v
            }
        };
        PgAdminSearch {
            os,
            explicit: std::env::var_os("POSTERN_PGADMIN")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            desktop_roots,
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// Finds pgAdmin: the explicit location, a desktop install, then
    /// `pgadmin4` on PATH (the PyPI package).
    pub fn find(&self) -> Option<PgAdmin> {
        if let Some(dir) = &self.explicit {
            return self
                .desktop_install(dir)
                .or_else(|| self.python_env(&dir.join(self.bin_dir_name())))
                .or_else(|| self.python_env(dir));
        }
        self.desktop_roots
            .iter()
            .find_map(|root| self.desktop_install(root))
            .or_else(|| self.path.iter().find_map(|dir| self.python_env(dir)))
    }

    fn bin_dir_name(&self) -> &'static str {
        if self.os == Os::Windows {
            "Scripts"
        } else {
            "bin"
        }
    }

    fn exe(&self, name: &str) -> String {
        if self.os == Os::Windows {
            format!("{name}.exe")
        } else {
            name.to_owned()
        }
    }

    /// A desktop install: runtime, bundled Python, `web/setup.py`.
    fn desktop_install(&self, root: &Path) -> Option<PgAdmin> {
        let (ui, web, pythons): (PgAdminUi, PathBuf, Vec<PathBuf>) = match self.os {
            Os::Linux => (
                PgAdminUi::Program(root.join("bin/pgadmin4")),
                root.join("web"),
                vec![root.join("venv/bin/python3")],
            ),
            Os::MacOs => (
                PgAdminUi::MacApp(root.to_owned()),
                root.join("Contents/Resources/web"),
                vec![
                    root.join("Contents/Frameworks/Python.framework/Versions/Current/bin/python3"),
                    root.join("Contents/Resources/venv/bin/python3"),
                ],
            ),
            Os::Windows => (
                PgAdminUi::Program(root.join("runtime").join("pgAdmin4.exe")),
                root.join("web"),
                vec![root.join("python").join("python.exe")],
            ),
        };
        let setup_py = web.join("setup.py");
        let ui_present = match &ui {
            PgAdminUi::Program(p) | PgAdminUi::WebServer(p) => p.is_file(),
            PgAdminUi::MacApp(p) => p.is_dir(),
        };
        if !ui_present || !setup_py.is_file() {
            return None;
        }
        let python = pythons.into_iter().find(|p| p.is_file())?;
        Some(PgAdmin {
            ui,
            cli: PgAdminCli::SetupPy { python, setup_py },
        })
    }

    /// The PyPI package in a Python environment's bin directory.
    fn python_env(&self, bin: &Path) -> Option<PgAdmin> {
        let server = bin.join(self.exe("pgadmin4"));
        if !server.is_file() {
            return None;
        }
        let cli = bin.join(self.exe("pgadmin4-cli"));
        let cli = if cli.is_file() {
            PgAdminCli::Script(cli)
        } else {
            // Older packages have no pgadmin4-cli: run setup.py with the
            // environment's Python.
            let python = [self.exe("python3"), self.exe("python")]
                .into_iter()
                .map(|n| bin.join(n))
                .find(|p| p.is_file())?;
            let setup_py = site_packages_setup_py(bin)?;
            PgAdminCli::SetupPy { python, setup_py }
        };
        Some(PgAdmin {
            ui: PgAdminUi::WebServer(server),
            cli,
        })
    }
}

/// `<env>/lib/pythonX.Y/site-packages/pgadmin4/setup.py` (or `Lib\site-packages` on Windows).
fn site_packages_setup_py(bin: &Path) -> Option<PathBuf> {
    let env = bin.parent()?;
    let direct = env.join("Lib/site-packages/pgadmin4/setup.py");
    if direct.is_file() {
        return Some(direct);
    }
    std::fs::read_dir(env.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/pgadmin4/setup.py"))
        .find(|p| p.is_file())
}

/// Options for adding a server to pgAdmin.
#[derive(Clone, Debug, Default)]
pub struct PgAdminOptions {
    /// pgAdmin user (server mode): the e-mail address; `None` for desktop mode.
    pub user: Option<String>,
    /// pgAdmin's configuration database (default: pgAdmin's own choice).
    pub sqlite_path: Option<PathBuf>,
    /// A pgAdmin config file read after its own (`CONFIG_DISTRO_FILE_PATH`),
    /// e.g. to choose `DATA_DIR` or `SERVER_MODE`.
    pub config_file: Option<PathBuf>,
}

impl PgAdminOptions {
    /// From `POSTERN_PGADMIN_USER` and `POSTERN_PGADMIN_SQLITE`.
    pub fn from_env() -> Self {
        PgAdminOptions {
            user: std::env::var("POSTERN_PGADMIN_USER")
                .ok()
                .filter(|u| !u.is_empty()),
            sqlite_path: std::env::var_os("POSTERN_PGADMIN_SQLITE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            config_file: std::env::var_os("POSTERN_PGADMIN_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(user) = &self.user {
            args.extend(["--user".into(), user.clone()]);
        }
        if let Some(p) = &self.sqlite_path {
            args.extend(["--sqlite-path".into(), p.display().to_string()]);
        }
        args
    }
}

/// What adding a server to pgAdmin did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgAdminAdded {
    /// A new server entry was loaded.
    Loaded(String),
    /// An entry for the same target was already there.
    AlreadyThere(String),
}

impl PgAdmin {
    fn run_cli(&self, args: &[String], options: &PgAdminOptions) -> Result<String, LaunchError> {
        let mut cmd = self.cli.command();
        cmd.args(args).stdin(Stdio::null());
        if let Some(config) = &options.config_file {
            cmd.env("CONFIG_DISTRO_FILE_PATH", config);
        }
        if args.first().is_some_and(|a| a == "setup-db")
            && let Some(p) = &options.sqlite_path
        {
            // setup-db has no --sqlite-path; pgAdmin's config reads SQLITE_PATH.
            cmd.env("SQLITE_PATH", p);
        }
        let out = cmd.output().map_err(|source| LaunchError::Spawn {
            program: "pgAdmin's setup.py".into(),
            source,
        })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // setup.py reports some failures on stdout with status 0.
        let failed = !out.status.success()
            || text.contains("Traceback")
            || text.to_lowercase().contains("error:");
        if failed {
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("it exited with an error")
                .trim()
                .to_owned();
            return Err(LaunchError::PgAdmin(last));
        }
        Ok(text)
    }

    /// The servers pgAdmin holds for the user (`setup.py dump-servers`).
    pub fn dump_servers(
        &self,
        work_dir: &Path,
        options: &PgAdminOptions,
    ) -> Result<ServersJson, LaunchError> {
        let out = work_dir.join("pgadmin-dump.json");
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["dump-servers".into(), out.display().to_string()];
        args.extend(options.args());
        let said = self.run_cli(&args, options)?;
        if said.contains("does not exist") {
            // A pgAdmin that never ran has no configuration database yet:
            // make it as pgAdmin's first start would; it holds no servers.
            self.run_cli(&["setup-db".to_owned()], options)?;
            return Ok(ServersJson::default());
        }
        let text = match std::fs::read_to_string(&out) {
            Ok(t) => t,
            // Nothing to dump: pgAdmin writes no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ServersJson::default()),
            Err(e) => return Err(io("reading pgAdmin's server list")(e)),
        };
        let _ = std::fs::remove_file(&out);
        serde_json::from_str(&text)
            .map_err(|e| LaunchError::PgAdmin(format!("unexpected dump-servers output: {e}")))
    }

    /// Adds the endpoint to pgAdmin's server list (group "Postern") unless an
    /// entry for the same target is there; the `servers.json` written for it
    /// is kept in `work_dir`.
    pub fn add_server(
        &self,
        endpoint: &Endpoint,
        work_dir: &Path,
        options: &PgAdminOptions,
    ) -> Result<PgAdminAdded, LaunchError> {
        endpoint.check_writable()?;
        std::fs::create_dir_all(work_dir)
            .map_err(io(format!("creating {}", work_dir.display())))?;
        let mut server = PgAdminServer::for_endpoint(endpoint);
        let existing = self.dump_servers(work_dir, options)?;
        if let Some(same) = existing
            .servers
            .values()
            .find(|s| s.group == PGADMIN_GROUP && s.same_target(&server))
        {
            return Ok(PgAdminAdded::AlreadyThere(same.name.clone()));
        }
        if existing.servers.values().any(|s| s.name == server.name) {
            // The name is taken by an entry for another port: say which.
            server.name = format!("{} :{}", server.name, server.port);
        }
        let name = server.name.clone();
        let file = work_dir.join("servers.json");
        let json = serde_json::to_string_pretty(&ServersJson::single(server))
            .expect("servers.json serializes");
        std::fs::write(&file, json).map_err(io(format!("writing {}", file.display())))?;
        let mut args = vec!["load-servers".into(), file.display().to_string()];
        args.extend(options.args());
        let out = self.run_cli(&args, options)?;
        // load-servers exits 0 even when it added nothing (an unknown
        // pgAdmin user, for one); it says "Added 0 Server Group(s) and 1 Server(s)."
        if added_servers(&out) == 0 {
            let user = options.user.as_deref().unwrap_or("the desktop user");
            return Err(LaunchError::PgAdmin(format!(
                "it added no server for {user}; in server mode set POSTERN_PGADMIN_USER to your pgAdmin e-mail"
            )));
        }
        Ok(PgAdminAdded::Loaded(name))
    }

    /// Starts pgAdmin's user interface without waiting for it.
    pub fn start_ui(&self) -> Result<(), LaunchError> {
        match &self.ui {
            PgAdminUi::Program(p) => spawn_detached(p, &[]),
            PgAdminUi::MacApp(app) => {
                spawn_detached(Path::new("open"), &["-a".into(), app.display().to_string()])
            }
            PgAdminUi::WebServer(p) => {
                spawn_detached(p, &[])?;
                // The web server needs a moment; open the browser once it answers.
                std::thread::spawn(|| {
                    for _ in 0..60 {
                        if std::net::TcpStream::connect(("127.0.0.1", 5050)).is_ok() {
                            let _ = open::that_detached("http://127.0.0.1:5050/");
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                });
                Ok(())
            }
        }
    }
}

/// The number of servers in load-servers' "Added G Server Group(s) and S Server(s)." line.
fn added_servers(output: &str) -> u32 {
    output
        .lines()
        .filter_map(|l| l.trim().strip_suffix(" Server(s)."))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or(0)
}

/// Open in pgAdmin: find it, add the server, start it. Returns the server's
/// name in pgAdmin.
pub fn open_in_pgadmin(endpoint: &Endpoint, work_dir: &Path) -> Result<String, LaunchError> {
    let pgadmin = PgAdminSearch::system()
        .find()
        .ok_or(LaunchError::NoPgAdmin)?;
    let name = match pgadmin.add_server(endpoint, work_dir, &PgAdminOptions::from_env())? {
        PgAdminAdded::Loaded(n) | PgAdminAdded::AlreadyThere(n) => n,
    };
    pgadmin.start_ui()?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
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

    #[test]
    fn service_sections_are_created_and_replaced_in_place() {
        let e = endpoint();
        let name = e.entry_name();
        assert_eq!(name, "postern-demo-pg-demo_reader-shop");
        let section = e.service_section(&name);
        assert!(section.contains("host=127.0.0.1\nport=40111\nuser=demo_reader\ndbname=shop\n"));

        let created = replace_section("", &name, &section);
        assert_eq!(created, section);

        let other = "# mine\n[prod]\nhost=db\n\n";
        let appended = replace_section(other, &name, &section);
        assert_eq!(appended, format!("{other}{section}"));

        let moved = Endpoint {
            port: 40999,
            ..e.clone()
        };
        let text = format!("[a]\nhost=x\n\n{section}\n[b]\nhost=y\n");
        let replaced = replace_section(&text, &name, &moved.service_section(&name));
        assert!(replaced.starts_with("[a]\nhost=x\n\n[postern-demo-pg"));
        assert!(replaced.contains("port=40999"));
        assert!(!replaced.contains("port=40111"));
        assert!(replaced.ends_with("\n[b]\nhost=y\n"), "{replaced}");
        assert_eq!(replaced.matches(&format!("[{name}]")).count(), 1);
    }

    #[test]
    fn write_service_creates_the_file_then_keeps_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/pg_service.conf");
        let e = endpoint();
        assert_eq!(
            write_service(&path, &e).unwrap(),
            "postern-demo-pg-demo_reader-shop"
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n[mine]\nhost=elsewhere\n");
        std::fs::write(&path, text).unwrap();
        write_service(
            &path,
            &Endpoint {
                port: 5,
                ..e.clone()
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("port=5\n") && !text.contains("port=40111"));
        assert!(text.contains("[mine]\nhost=elsewhere\n"));
    }

    #[test]
    fn terminals_are_chosen_in_order_per_os() {
        let psql = Path::new("/usr/bin/psql");
        let only = |names: &'static [&'static str]| {
            move |n: &str| {
                names
                    .contains(&n)
                    .then(|| PathBuf::from(format!("/usr/bin/{n}")))
            }
        };
        let e = Endpoint {
            db_user: None,
            db_name: None,
            ..endpoint()
        };
        let conninfo = e.conninfo();
        let t = terminal_command(Os::Linux, psql, &e, only(&["xterm", "konsole"])).unwrap();
        assert_eq!(t.program, PathBuf::from("/usr/bin/konsole"));
        assert_eq!(t.args, ["-e", "/usr/bin/psql", conninfo.as_str()]);
        let t = terminal_command(Os::Linux, psql, &e, only(&["gnome-terminal"])).unwrap();
        assert_eq!(t.program, PathBuf::from("/usr/bin/gnome-terminal"));
        assert_eq!(t.args, ["--", "/usr/bin/psql", conninfo.as_str()]);
        let err = terminal_command(Os::Linux, psql, &e, only(&[])).unwrap_err();
        assert!(err.to_string().contains("xterm"), "{err}");

        let t = terminal_command(Os::MacOs, psql, &e, only(&[])).unwrap();
        assert_eq!(t.program, PathBuf::from("osascript"));
        assert_eq!(
            t.args[1],
            r#"tell application "Terminal" to do script "/usr/bin/psql 'host=127.0.0.1 port=40111 sslmode=disable'""#
        );
    }

    /// Database names that cmd.exe would read as commands or variables,
    /// and a shell as quotes.
    const HOSTILE: [&str; 5] = [
        "x\" & calc & \"",
        "a&b",
        "caret^\" ^& whoami",
        "%COMSPEC%",
        "it's \"$(id)\" `id` \\",
    ];

    /// The first character cmd.exe would act on in `line`: an operator
    /// outside its quotes (cmd.exe knows no `\"`), or `%`, which it expands
    /// even inside quotes.
    fn cmd_exe_acts_on(line: &str) -> Option<char> {
        let mut quoted = false;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '%' => return Some(c),
                '^' if !quoted => {
                    chars.next();
                }
                '&' | '|' | '<' | '>' | '(' | ')' if !quoted => return Some(c),
                _ => {}
            }
        }
        None
    }

    fn hostile(name: &str) -> Endpoint {
        Endpoint {
            db_name: Some(name.into()),
            db_user: Some(format!("u{name}")),
            ..endpoint()
        }
    }

    #[test]
    fn windows_terminal_line_gives_cmd_exe_nothing_to_act_on() {
        let psql = Path::new(r"C:\Program Files\PostgreSQL\16\bin\psql.exe");
        for name in HOSTILE {
            let t = terminal_command(Os::Windows, psql, &hostile(name), |_| None).unwrap();
            assert_eq!(t.program, PathBuf::from("cmd"));
            // The arguments are passed verbatim: this is cmd.exe's line.
            let line = t.args.join(" ");
            assert_eq!(line, r#"/c start "Postern psql" cmd /k psql"#);
            assert_eq!(
                cmd_exe_acts_on(&line),
                None,
                "{name:?}: cmd.exe would act on {line}"
            );
            // psql gets the values exactly, through libpq's environment.
            let env = |k: &str| t.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(env("PGDATABASE"), Some(name.into()));
            assert_eq!(env("PGUSER"), Some(format!("u{name}").into()));
            assert_eq!(env("PGPORT"), Some("40111".into()));
            let path = env("PATH").unwrap();
            assert_eq!(
                std::env::split_paths(&path).next().unwrap(),
                psql.parent().unwrap()
            );
        }
    }

    #[test]
    fn macos_terminal_line_hands_psql_the_exact_conninfo() {
        let psql = Path::new("/usr/bin/psql");
        for name in HOSTILE {
            let e = hostile(name);
            let t = terminal_command(Os::MacOs, psql, &e, |_| None).unwrap();
            // Undo AppleScript's string quoting, then let a shell read the line.
            let script = t.args[1]
                .strip_prefix(r#"tell application "Terminal" to do script ""#)
                .and_then(|s| s.strip_suffix('"'))
                .unwrap();
            let line = script.replace("\\\"", "\"").replace("\\\\", "\\");
            let words = line.strip_prefix("/usr/bin/psql ").unwrap();
            let Ok(out) = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {words}"))
                .output()
            else {
                continue;
            };
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                e.conninfo(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn control_characters_never_reach_service_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg_service.conf");
        let e = Endpoint {
            db_name: Some("app\n[evil]\nhost=attacker.example".into()),
            ..endpoint()
        };
        let err = write_service(&path, &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the database name contains a control character (such as a line break), which \
             pg_service.conf and pgAdmin's server list cannot hold safely; nothing was written"
        );
        assert!(!path.exists(), "nothing is written");
        // pgAdmin's list: refused before pgAdmin is even asked.
        let pgadmin = PgAdmin {
            ui: PgAdminUi::WebServer(dir.path().join("none")),
            cli: PgAdminCli::Script(dir.path().join("none")),
        };
        let tab = Endpoint {
            db_user: Some("reader\tx".into()),
            ..endpoint()
        };
        let err = pgadmin
            .add_server(&tab, dir.path(), &PgAdminOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, LaunchError::ControlCharacter("database user")),
            "{err}"
        );
    }

    #[test]
    fn servers_json_has_what_pgadmin_needs() {
        let server = PgAdminServer::for_endpoint(&endpoint());
        let json = serde_json::to_value(ServersJson::single(server)).unwrap();
        let s = &json["Servers"]["1"];
        assert_eq!(s["Name"], "demo-pg (demo_reader@shop)");
        assert_eq!(s["Group"], "Postern");
        assert_eq!(s["Host"], "127.0.0.1");
        assert_eq!(s["Port"], 40111);
        assert_eq!(s["MaintenanceDB"], "shop");
        assert_eq!(s["Username"], "demo_reader");
        assert_eq!(s["ConnectionParameters"]["sslmode"], "disable");
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn pgadmin_is_found_as_desktop_install_or_pypi_package() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let search = |roots: Vec<PathBuf>, path: Vec<PathBuf>| PgAdminSearch {
            os: Os::Linux,
            explicit: None,
            desktop_roots: roots,
            path,
        };
        assert_eq!(search(vec![root.join("none")], vec![]).find(), None);

        // PyPI package with pgadmin4-cli.
        let venv = root.join("venv");
        touch(&venv.join("bin/pgadmin4"));
        touch(&venv.join("bin/pgadmin4-cli"));
        let found = search(vec![], vec![root.join("empty"), venv.join("bin")])
            .find()
            .unwrap();
        assert_eq!(found.ui, PgAdminUi::WebServer(venv.join("bin/pgadmin4")));
        assert_eq!(found.cli, PgAdminCli::Script(venv.join("bin/pgadmin4-cli")));

        // Older package without it: setup.py in site-packages.
        let old = root.join("old");
        touch(&old.join("bin/pgadmin4"));
        touch(&old.join("bin/python3"));
        touch(&old.join("lib/python3.11/site-packages/pgadmin4/setup.py"));
        let found = search(vec![], vec![old.join("bin")]).find().unwrap();
        assert_eq!(
            found.cli,
            PgAdminCli::SetupPy {
                python: old.join("bin/python3"),
                setup_py: old.join("lib/python3.11/site-packages/pgadmin4/setup.py"),
            }
        );

        // A desktop install wins over PATH.
        let desktop = root.join("usr-pgadmin4");
        touch(&desktop.join("bin/pgadmin4"));
        touch(&desktop.join("web/setup.py"));
        touch(&desktop.join("venv/bin/python3"));
        let found = search(vec![desktop.clone()], vec![venv.join("bin")])
            .find()
            .unwrap();
        assert_eq!(found.ui, PgAdminUi::Program(desktop.join("bin/pgadmin4")));

        // POSTERN_PGADMIN points at an environment.
        let explicit = PgAdminSearch {
            explicit: Some(venv.clone()),
            ..search(vec![desktop], vec![])
        };
        assert_eq!(
            explicit.find().unwrap().ui,
            PgAdminUi::WebServer(venv.join("bin/pgadmin4"))
        );
    }

    #[test]
    fn load_servers_output_is_read_for_the_count() {
        let out = "----------\nLoading servers with:\n----------\nAdded 1 Server Group(s) and 1 Server(s).\n";
        assert_eq!(added_servers(out), 1);
        assert_eq!(added_servers("Added 0 Server Group(s) and 0 Server(s)."), 0);
        assert_eq!(
            added_servers("The specified user ID (x) could not be found."),
            0
        );
    }

    #[test]
    fn missing_pgadmin_says_how_to_get_it() {
        let text = LaunchError::NoPgAdmin.to_string();
        assert!(text.contains("not installed") && text.contains("pgadmin.org"));
    }
}
