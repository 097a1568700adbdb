//! Open in pgAdmin: find an installed pgAdmin 4, add the tunnel to its
//! server list (group "Postern") with its `load-servers` command, start it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::{Endpoint, LaunchError, Os, io, spawn_detached};

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

/// Open in pgAdmin: find it, add the server (its `servers.json` is kept in
/// `work_dir`), start it. Says whether the entry was new.
pub fn open_in_pgadmin(endpoint: &Endpoint, work_dir: &Path) -> Result<PgAdminAdded, LaunchError> {
    let pgadmin = PgAdminSearch::system()
        .find()
        .ok_or(LaunchError::NoPgAdmin)?;
    let added = pgadmin.add_server(endpoint, work_dir, &PgAdminOptions::from_env())?;
    pgadmin.start_ui()?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::endpoint::tests::endpoint;
    use crate::launch::write_service;

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
