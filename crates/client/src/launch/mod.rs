//! Handing a tunnel to other programs: a connection URI, a psql command, a
//! `pg_service.conf` entry, psql in a terminal, and pgAdmin.
//!
//! Everything here describes a loopback endpoint; nothing needs the session.
//! The pure parts (strings, files, the choice of terminal, finding pgAdmin)
//! are separate from the parts that start processes, so they are tested
//! without a desktop.

//!
//! - `endpoint.rs`: the endpoint and the strings other programs take (URI,
//!   conninfo, psql command line);
//! - `service_file.rs`: the `pg_service.conf` entry;
//! - `terminal.rs`: psql in a new terminal window;
//! - `pgadmin.rs`: finding pgAdmin, adding the server, starting it.
//!
//! This file holds what they share: the error and starting programs.

mod endpoint;
mod pgadmin;
mod service_file;
mod terminal;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use endpoint::Endpoint;
pub use pgadmin::{
    PGADMIN_GROUP, PgAdmin, PgAdminAdded, PgAdminCli, PgAdminOptions, PgAdminSearch, PgAdminServer,
    PgAdminUi, ServersJson, open_in_pgadmin,
};
pub use service_file::{replace_section, service_file, write_service};
pub use terminal::{
    LINUX_TERMINALS, TerminalCommand, find_psql, open_psql_in_terminal, terminal_command,
};

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

/// Wraps an I/O error with what was being done.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

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

/// Whether `p` is a file this user may run.
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
