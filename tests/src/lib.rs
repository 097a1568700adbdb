//! Shared fixtures for Postern's end-to-end tests (tier 3 of STYLE.md: real
//! peers on loopback, started by the tests themselves).
//!
//! - [`pg`]: a real PostgreSQL 15 server with TLS, one login role per
//!   authentication method, and the databases `app` and `analytics`.
//! - [`idp`]: a real OpenID Connect provider (`oidc-provider` on Node.js)
//!   and a scripted browser that signs in through its pages.
//! - [`aws`]: AWS STS (moto) and a stand-in Redshift Serverless API on
//!   loopback, whose database is the test PostgreSQL.
//! - [`certs`]: throwaway certificate authorities and leaf certificates made
//!   with `rcgen` at test time (no key is ever committed).
//! - [`desktop`], [`tray`]: the desktop app under Xvfb and WebDriver, and a
//!   stand-in desktop shell (tray host, notifications) on its session bus.
//! - [`gateway_process`]: the gateway program beside a stack, stopped with
//!   a signal.
//! - [`raw`]: a hostile client with a person's real session certificate:
//!   hand-written route frames, resumed TLS sessions, raw HTTP.
//! - [`free_port`]: a loopback port that was free a moment ago.
//! - [`eventually`]: waits until a condition holds (no sleep-then-assert).
//!
//! nextest runs every test in its own process, so nothing here shares state
//! through statics: what is shared between tests (PostgreSQL's template data
//! directory) lives on disk, guarded by a file lock.

pub mod aws;
pub mod certs;
pub mod desktop;
pub mod gateway_process;
pub mod idp;
pub mod pg;
pub mod raw;
pub mod replicas;
pub mod shared_store;
pub mod stack;
pub mod tray;
mod wait;

pub use wait::{TimedOut, eventually};

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

/// Returns a TCP port on 127.0.0.1 that was free when this function ran.
///
/// The port is released before returning, so another process may take it
/// in between: callers that bind it in a child process should retry with a
/// new port when the bind fails ([`pg::PgServer::start`] does).
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// `bytes` random bytes as lowercase hex: a secret that needs no quoting in
/// SQL, YAML or a shell.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read as _;
    let mut buf = vec![0; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where `scripts/install-test-deps` puts the venv `name`: `$override_var`
/// when set and not empty, else `postern/NAME` in the user's cache directory
/// (`$XDG_CACHE_HOME`, else `~/.cache`), as the script does.
pub fn cached_venv(override_var: &str, name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(override_var).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("postern").join(name)
}
