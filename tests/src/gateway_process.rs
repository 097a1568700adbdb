//! The gateway program, `postern-gateway start`, as operators run it: its
//! own process with its log in a file, found through its ready file, and
//! stopped with a signal (so tests see the drain).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use postern_gateway::cmd::ReadyFile;
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

use crate::eventually;
use crate::stack::{Clients, Stack, bin};

/// A `postern-gateway start` process; killed on drop.
pub struct GatewayProcess {
    /// Its name among the replicas.
    pub name: String,
    /// What it wrote once it listened.
    pub ready: ReadyFile,
    config: PathBuf,
    log: PathBuf,
    child: Child,
}

impl GatewayProcess {
    /// Starts `postern-gateway --config CONFIG start` with its output in
    /// `DIR/NAME.log`, and returns once it listens.
    pub async fn start(name: &str, config: &Path, dir: &Path) -> GatewayProcess {
        let program = Command::new(bin("postern-gateway"));
        GatewayProcess::run(name, program, config, dir, dir).await
    }

    /// Starts the installed `/usr/bin/postern-gateway` as the system user
    /// `postern` (`uid`, `gid`), the way its systemd unit does (without the
    /// unit's sandbox): its own user and group and no other group, its
    /// ready file in its state directory, its log in `log_dir/installed.log`.
    pub async fn installed(config: &Path, log_dir: &Path, uid: u32, gid: u32) -> GatewayProcess {
        let mut program = Command::new("/usr/bin/postern-gateway");
        // As root, std drops the supplementary groups before setuid.
        program.uid(uid).gid(gid);
        let state = Path::new("/var/lib/postern");
        GatewayProcess::run("installed", program, config, state, log_dir).await
    }

    async fn run(
        name: &str,
        mut program: Command,
        config: &Path,
        ready_dir: &Path,
        log_dir: &Path,
    ) -> GatewayProcess {
        let ready_path = ready_dir.join(format!("{name}.ready"));
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("gateway log");
        let mut child = program
            .arg("--config")
            .arg(config)
            .arg("start")
            .arg("--ready-file")
            .arg(&ready_path)
            .env_remove("POSTERN_GATEWAY_CONFIG")
            .env_remove("POSTERN_LOG_FORMAT")
            .env("POSTERN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("gateway log"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start postern-gateway");
        let ready = tokio::select! {
            status = child.wait() => panic!(
                "gateway {name} exited before it listened ({status:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            ready = eventually(Duration::from_secs(60), async || ReadyFile::read(&ready_path)) => {
                ready.unwrap_or_else(|e| panic!("gateway {name} never listened: {e}"))
            }
        };
        GatewayProcess {
            name: name.to_owned(),
            ready,
            config: config.to_owned(),
            log,
            child,
        }
    }

    /// Starts the program on `stack`'s configuration (so its store, users
    /// and CAs) beside the stack's own gateway, on a port of its own.
    pub async fn of_stack(stack: &Stack) -> GatewayProcess {
        let config = stack.config_path();
        let dir = config.parent().expect("the stack's directory");
        GatewayProcess::start("gateway", &config, dir).await
    }

    /// `host:port` it listens on.
    pub fn address(&self) -> &str {
        &self.ready.address
    }

    /// People of `stack` (their homes, the CLI) who reach this gateway.
    pub fn clients_of(&self, stack: &Stack) -> Clients {
        Clients {
            gateway: self.ready.address.clone(),
            ca_pin: self.ready.ca_pin.clone(),
            ..stack.clients()
        }
    }

    /// Its configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.ready
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a HOST:PORT address")
    }

    /// Sends SIGTERM, as systemd or a container runtime stops a replica.
    pub fn terminate(&self) {
        self.signal(Signal::TERM);
    }

    /// Sends SIGHUP, as `systemctl reload` does.
    pub fn reload(&self) {
        self.signal(Signal::HUP);
    }

    fn signal(&self, signal: Signal) {
        let pid = self
            .child
            .id()
            .and_then(|id| Pid::from_raw(id as i32))
            .expect("gateway still running");
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("send {signal:?}: {e}"));
    }

    /// Waits up to `within` for the process to exit.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("gateway {} still running:\n{}", self.name, self.log()))
            .expect("wait for the gateway")
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
