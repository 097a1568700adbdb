//! The gateway program (`postern-gateway start`) beside a [`Stack`]: the
//! stack's configuration and store (so its users and CAs), its own port
//! (`listen: 127.0.0.1:0`), its log in a file, stopped with a signal.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use postern_gateway::cmd::ReadyFile;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::eventually;
use crate::stack::{Stack, bin};

/// A running `postern-gateway start`; killed on drop.
pub struct GatewayProcess {
    child: Child,
    ready: ReadyFile,
    log: PathBuf,
    _dir: TempDir,
}

impl GatewayProcess {
    /// Starts the program on `stack`'s configuration and waits until it
    /// listens (its ready file).
    pub async fn start(stack: &Stack) -> GatewayProcess {
        let dir = tempfile::Builder::new()
            .prefix("postern-gateway-process-")
            .tempdir()
            .expect("gateway process dir");
        let ready_path = dir.path().join("ready.json");
        let log = dir.path().join("gateway.log");
        let mut child = Command::new(bin("postern-gateway"))
            .arg("--config")
            .arg(stack.config_path())
            .args(["start", "--ready-file"])
            .arg(&ready_path)
            .env_remove("POSTERN_GATEWAY_CONFIG")
            .env_remove("POSTERN_LOG_FORMAT")
            .env("POSTERN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("gateway log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("run postern-gateway start");
        let ready = eventually(Duration::from_secs(30), async || {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(Err(status));
            }
            ReadyFile::read(&ready_path).map(Ok)
        })
        .await
        .unwrap_or_else(|e| panic!("no ready file: {e}"))
        .unwrap_or_else(|status| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("postern-gateway start exited ({status}): {log}")
        });
        GatewayProcess {
            child,
            ready,
            log,
            _dir: dir,
        }
    }

    /// `host:port` it listens on.
    pub fn address(&self) -> &str {
        &self.ready.address
    }

    /// Logs `who` in to this gateway with the CLI (its profile then points
    /// here); panics with the CLI's output on failure.
    pub async fn login(&self, stack: &Stack, who: &str, password: &str) {
        let login = [
            "login",
            self.ready.address.as_str(),
            "--user",
            who,
            "--password-stdin",
            "--ca-pin",
            self.ready.ca_pin.as_str(),
        ];
        let out = stack.run(who, &login, &format!("{password}\n")).await;
        assert!(
            out.status.success(),
            "postern login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the gateway has not been reaped");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a process id");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    }

    /// Waits at most `within` for it to exit; its exit status.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("the gateway did not exit within {within:?}: {}", self.log())
            })
            .expect("wait for the gateway")
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
