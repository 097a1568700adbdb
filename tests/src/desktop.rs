//! Driving the real desktop app: an Xvfb display, a D-Bus session bus,
//! `tauri-driver` (which runs `WebKitWebDriver`), and a small WebDriver
//! client. The client speaks the W3C protocol over plain HTTP on loopback
//! with the reqwest the tests already build — a few commands are all the
//! end-to-end test needs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{eventually, free_port};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Asks the windows of process `pid` on X display `display` to close, as a
/// person clicking a window's close button does: the window manager sends
/// the window `WM_DELETE_WINDOW`. Xvfb has no window manager, so this sends
/// it to each visible top-level window of the process; returns how many
/// there were.
pub fn close_windows_of(display: &str, pid: u32) -> usize {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{
        AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask, MapState,
    };

    let (conn, screen) = x11rb::connect(Some(display)).expect("connect to Xvfb");
    let atom = |name: &str| {
        conn.intern_atom(false, name.as_bytes())
            .unwrap()
            .reply()
            .unwrap()
            .atom
    };
    let (protocols, delete, net_wm_pid) = (
        atom("WM_PROTOCOLS"),
        atom("WM_DELETE_WINDOW"),
        atom("_NET_WM_PID"),
    );
    let root = conn.setup().roots[screen].root;
    let mut closed = 0;
    // Without a window manager top-level windows are the root's children.
    for window in conn.query_tree(root).unwrap().reply().unwrap().children {
        let owner = conn
            .get_property(false, window, net_wm_pid, AtomEnum::CARDINAL, 0, 1)
            .unwrap()
            .reply()
            .ok()
            .and_then(|p| p.value32().and_then(|mut v| v.next()));
        // GTK's hidden client-leader window carries the pid too.
        let visible = conn
            .get_window_attributes(window)
            .unwrap()
            .reply()
            .is_ok_and(|a| a.map_state == MapState::VIEWABLE);
        if owner == Some(pid) && visible {
            let event = ClientMessageEvent::new(
                32,
                window,
                protocols,
                [delete, x11rb::CURRENT_TIME, 0, 0, 0],
            );
            conn.send_event(false, window, EventMask::NO_EVENT, event)
                .unwrap();
            closed += 1;
        }
    }
    conn.flush().unwrap();
    closed
}

/// The names (`comm`) of the processes below `pid`, at any depth.
pub fn descendants(pid: u32) -> Vec<String> {
    let mut parents = vec![pid];
    let mut names = Vec::new();
    // Parents before children is not guaranteed in /proc: repeat until no
    // new descendant turns up.
    loop {
        let before = parents.len();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if parents.contains(&child) {
                continue;
            }
            // `pid (comm) state ppid ...`; comm may hold spaces and ')'.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            if ppid.is_some_and(|p| parents.contains(&p)) {
                parents.push(child);
                names.push(head.split_once('(').map_or("", |(_, n)| n).to_owned());
            }
        }
        if parents.len() == before {
            return names;
        }
    }
}

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Guarded {
    child: Child,
    name: &'static str,
}

impl Guarded {
    fn new(child: Child, name: &'static str) -> Self {
        Guarded { child, name }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            for _ in 0..30 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.start_kill();
    }
}

/// A virtual X display.
pub struct Display {
    /// `:N`.
    pub name: String,
    _server: Guarded,
}

impl Display {
    /// Starts Xvfb on the first free display from :90, `width`x`height`.
    pub async fn start(width: u32, height: u32) -> Display {
        for n in 90..190 {
            if Path::new(&format!("/tmp/.X{n}-lock")).exists()
                || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            {
                continue;
            }
            let name = format!(":{n}");
            let child = Command::new("Xvfb")
                .args([
                    &name,
                    "-screen",
                    "0",
                    &format!("{width}x{height}x24"),
                    "-nolisten",
                    "tcp",
                    "-noreset",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start Xvfb (apt-get install xvfb; scripts/install-test-deps does)");
            let mut server = Guarded::new(child, "Xvfb");
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            // `false`: it exited, having lost a race for this display.
            let listening = eventually(Duration::from_secs(10), async || {
                if socket.exists() {
                    Ok(true)
                } else if let Ok(Some(_)) = server.child.try_wait() {
                    Ok(false)
                } else {
                    Err("no socket yet")
                }
            })
            .await;
            if let Ok(true) = listening {
                return Display {
                    name,
                    _server: server,
                };
            }
        }
        panic!("no X display could be started");
    }

    /// Asks the windows of process `pid` to close: see [`close_windows_of`].
    pub fn close_windows_of(&self, pid: u32) -> usize {
        close_windows_of(&self.name, pid)
    }

    /// A PNG of the whole screen, as `import -window root` takes it,
    /// cropped to `width`x`height` and reduced to keep the file small.
    pub async fn screenshot(&self, path: &Path, width: u32, height: u32) {
        let status = Command::new("import")
            .args(["-display", &self.name, "-window", "root"])
            .arg(path)
            .status()
            .await
            .expect("run import (imagemagick)");
        assert!(status.success(), "import -window root failed");
        // /usr/bin: some machines shadow `convert` on PATH with a stand-in.
        let convert = if Path::new("/usr/bin/convert").exists() {
            "/usr/bin/convert"
        } else {
            "convert"
        };
        let status = Command::new(convert)
            .arg(path)
            .args([
                "-crop",
                &format!("{width}x{height}+0+0"),
                "+repage",
                "-strip",
                "+dither",
                "-colors",
                "128",
                "-define",
                "png:compression-level=9",
            ])
            .arg(path)
            .status()
            .await
            .expect("run convert");
        assert!(status.success(), "convert failed");
    }
}

/// A session bus of its own (`dbus-daemon --session`), as a desktop
/// session has: the tray host and the app meet there.
pub struct SessionBus {
    /// Its address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    _daemon: Guarded,
}

impl SessionBus {
    /// Starts the daemon and returns once it printed its address.
    pub async fn start() -> SessionBus {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start dbus-daemon (apt-get install dbus)");
        let mut lines = BufReader::new(bus.stdout.take().unwrap()).lines();
        let address = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("dbus-daemon prints its address")
            .unwrap()
            .expect("dbus address");
        SessionBus {
            address: address.trim().to_owned(),
            _daemon: Guarded::new(bus, "dbus-daemon"),
        }
    }
}

/// `tauri-driver` with its own session bus, on a free port.
pub struct Driver {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The session bus the app is started on (see [`crate::tray`]).
    pub bus_address: String,
    _driver: Guarded,
    _bus: SessionBus,
}

impl Driver {
    /// Starts a [`SessionBus`] and `tauri-driver` on `display`, with `env`
    /// for the app (tauri-driver's children inherit it).
    pub async fn start(display: &Display, env: &[(&str, &Path)]) -> Driver {
        let bus = SessionBus::start().await;
        let port = free_port();
        let native = free_port();
        let mut cmd = Command::new(tauri_driver());
        cmd.args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native.to_string(),
        ])
        .env("DISPLAY", &display.name)
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env_remove("WAYLAND_DISPLAY")
        // Software rendering: Xvfb has no GPU.
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("NO_AT_BRIDGE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let driver = Guarded::new(cmd.spawn().expect("start tauri-driver"), "tauri-driver");
        let url = format!("http://127.0.0.1:{port}");
        let http = http_client();
        eventually(Duration::from_secs(20), async || {
            http.get(format!("{url}/status")).send().await.map(drop)
        })
        .await
        .unwrap_or_else(|e| panic!("tauri-driver did not start: {e}"));
        Driver {
            url,
            bus_address: bus.address.clone(),
            _driver: driver,
            _bus: bus,
        }
    }
}

/// `tauri-driver` from PATH or cargo's bin directory.
fn tauri_driver() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tauri-driver"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
            Some(home.join("bin/tauri-driver")).filter(|p| p.is_file())
        })
        .expect("tauri-driver is not installed: run scripts/install-test-deps")
}

/// Plain HTTP to the driver on loopback; reqwest is built without a TLS
/// crypto provider of its own, so one is installed (never used here).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A WebDriver session.
pub struct WebDriver {
    http: reqwest::Client,
    base: String,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Element {
    /// The reference as a script argument.
    pub fn to_json(&self) -> Value {
        json!({ ELEMENT: self.0 })
    }
}

/// How to find elements.
#[derive(Clone, Copy, Debug)]
pub enum By<'a> {
    /// A CSS selector.
    Css(&'a str),
    /// An XPath expression.
    XPath(&'a str),
}

impl By<'_> {
    fn body(self) -> Value {
        match self {
            By::Css(s) => json!({"using": "css selector", "value": s}),
            By::XPath(s) => json!({"using": "xpath", "value": s}),
        }
    }
}

impl WebDriver {
    /// Starts the app through the driver.
    pub async fn start_app(driver: &Driver, application: &Path) -> WebDriver {
        let http = http_client();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "wry",
            "tauri:options": {"application": application},
        }}});
        let resp: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {resp}"))
            .to_owned();
        WebDriver {
            http,
            base: format!("{}/session/{id}", driver.url),
        }
    }

    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp: Value = req
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match resp["value"].get("error") {
            Some(err) => Err(format!("{err}: {}", resp["value"]["message"])),
            None => Ok(resp["value"].clone()),
        }
    }

    /// The first element matching, if any.
    pub async fn find(&self, by: By<'_>) -> Option<Element> {
        let v = self
            .cmd(reqwest::Method::POST, "/element", Some(by.body()))
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|s| Element(s.to_owned()))
    }

    /// Waits for an element (the UI renders asynchronously).
    pub async fn wait(&self, by: By<'_>, timeout: Duration) -> Element {
        match eventually(timeout, async || self.find(by).await.ok_or("not there")).await {
            Ok(e) => e,
            Err(_) => {
                let text = self.page_text().await;
                panic!("timed out waiting for {by:?}; the page says:\n{text}");
            }
        }
    }

    /// Waits until nothing matches.
    pub async fn wait_gone(&self, by: By<'_>, timeout: Duration) {
        eventually(timeout, async || match self.find(by).await {
            Some(_) => Err("still there"),
            None => Ok(()),
        })
        .await
        .unwrap_or_else(|e| panic!("{by:?}: {e}"));
    }

    /// Clicks an element. While something covers it (the app's toasts stack
    /// over the bottom right for a few seconds) the click is tried again, as
    /// a person waits for the toast to go.
    pub async fn click(&self, e: &Element) {
        let clicked = eventually(Duration::from_secs(15), async || {
            match self
                .cmd(
                    reqwest::Method::POST,
                    &format!("/element/{}/click", e.0),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => Ok(Ok(())),
                Err(err) if err.contains("element click intercepted") => Err(err),
                Err(err) => Ok(Err(err)),
            }
        })
        .await;
        match clicked {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("click: {err}"),
            Err(e) => panic!("click: {e}"),
        }
    }

    /// Types into an element, as keystrokes.
    pub async fn type_text(&self, e: &Element, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await
        .expect("send keys");
    }

    /// An element's attribute.
    pub async fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", e.0),
            None,
        )
        .await
        .ok()?
        .as_str()
        .map(str::to_owned)
    }

    /// Runs a script in the page; `args` may hold elements.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .expect("execute script")
    }

    /// Chooses an option of a `<select>` the way a person's choice does.
    pub async fn select(&self, select: &Element, value: &str) {
        self.execute(
            "const [s, v] = arguments; s.value = v; s.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!({ELEMENT: select.0}), json!(value)],
        )
        .await;
    }

    /// The page's visible text (for failure messages).
    pub async fn page_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : ''",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Ends the session (the app exits).
    pub async fn quit(self) {
        let _ = self.cmd(reqwest::Method::DELETE, "", None).await;
    }
}
