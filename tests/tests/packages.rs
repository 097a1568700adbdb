//! The packages, for real (issue 16): `scripts/package` builds them in a
//! clean directory; the `.rpm`'s metadata and files are read with rpm; apt
//! installs both `.deb`s, and from the installed files only the packaged
//! configuration passes `check-config`, the unit passes `systemd-analyze
//! verify`, the gateway, run as its system user the way the unit runs it,
//! serves the installed `postern` CLI's psql, and the installed app starts
//! under Xvfb with `--tray` and registers its tray. `dpkg -r` then removes
//! the programs and keeps the configuration, the store and the user's data.
//!
//! It changes the machine (packages, the system user `postern`,
//! /etc/postern, /var/lib/postern), so it is ignored by default;
//! `scripts/test` runs it when CI=true.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use postern_tests::certs::TestCa;
use postern_tests::desktop::{Display, SessionBus};
use postern_tests::gateway_process::GatewayProcess;
use postern_tests::pg::PgServer;
use postern_tests::stack::{Clients, PASSWORD as PW};
use postern_tests::tray::DesktopShell;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const ETC: &str = "/etc/postern";
const STATE: &str = "/var/lib/postern";
const UNIT: &str = "/usr/lib/systemd/system/postern-gateway.service";

/// Runs `program args`, with `stdin` as input; its output.
async fn run(program: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// Like [`run`], and panics with its output unless it succeeded.
async fn ok(program: &str, args: &[&str], stdin: &str) -> String {
    let out = run(program, args, stdin).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{text}",
        out.status
    );
    text
}

/// The installed gateway as the system user `postern`, on the packaged
/// configuration.
async fn gateway_as_postern(args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["-u", "postern", "--", "/usr/bin/postern-gateway"];
    all.extend(["--config", "/etc/postern/gateway.yaml"]);
    all.extend(args);
    run("runuser", &all, stdin).await
}

/// The desktop package's name (Tauri names it after the app).
const DESKTOP: &str = "postern";
/// Each size of the hicolor icon theme the app's icon comes in.
const ICON_SIZES: [u32; 8] = [16, 24, 32, 48, 64, 128, 256, 512];

/// Removes what an earlier, interrupted run left.
async fn purge() {
    let _ = run("dpkg", &["--purge", "postern-gateway", DESKTOP], "").await;
    for dir in [ETC, STATE] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Writes `text` to `/etc/postern/NAME` as the package's files are:
/// root's, readable by the group `postern` only.
fn configure(name: &str, text: &str) {
    let path = Path::new(ETC).join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&path, None, Some(postern_ids().1)).unwrap();
}

/// The uid and gid of the system user `postern`.
fn postern_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, "postern"])
            .output()
            .unwrap();
        assert!(out.status.success(), "no system user postern");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &str) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs system packages: scripts/test runs it when CI=true"]
async fn the_packages_install_serve_psql_start_in_the_tray_and_are_removed_keeping_data() {
    assert!(
        rustix::process::geteuid().is_root(),
        "installing packages needs root"
    );
    let dist = tempfile::tempdir().unwrap();
    let dist_path = dist.path().to_str().unwrap();
    let script = repository().join("scripts/package");
    let built = ok(
        script.to_str().unwrap(),
        &["--profile", "dev", "--out", dist_path],
        "",
    )
    .await;
    for line in built
        .lines()
        .filter(|l| l.ends_with(".deb") || l.ends_with(".rpm"))
    {
        println!("scripts/package: {line}");
    }
    let package = |prefix: &str, extension: &str| {
        std::fs::read_dir(dist.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_lowercase();
                name.starts_with(prefix) && name.ends_with(extension)
            })
            .unwrap_or_else(|| panic!("no {prefix}*{extension} in {built}"))
    };
    let gateway_deb = package("postern-gateway_", ".deb");
    let desktop_deb = package("postern_", ".deb");
    let desktop_rpm = package("postern-", ".rpm");

    // The .rpm: its metadata, and the app and the CLI on PATH.
    let rpm = desktop_rpm.to_str().unwrap();
    let about = ok(
        "rpm",
        &[
            "-qp",
            "--queryformat",
            "%{NAME} %{VERSION} %{LICENSE} %{URL}",
            rpm,
        ],
        "",
    )
    .await;
    assert!(
        about.contains(&format!(
            "{DESKTOP} {} Apache-2.0 https://postern.dev",
            env!("CARGO_PKG_VERSION")
        )),
        "{about}"
    );
    let files = ok("rpm", &["-qlp", rpm], "").await;
    for file in [
        "/usr/bin/postern",
        "/usr/bin/postern-desktop",
        "/usr/share/applications/Postern.desktop",
    ] {
        assert!(
            files.lines().any(|l| l == file),
            "{file} not in the rpm:\n{files}"
        );
    }

    purge().await;
    // apt resolves the packages' declared dependencies.
    ok(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            gateway_deb.to_str().unwrap(),
            desktop_deb.to_str().unwrap(),
        ],
        "",
    )
    .await;

    // The gateway's installed files: the program, the unit, the
    // configuration readable by the service's group only, its system user.
    let (uid, gid) = postern_ids();
    let etc = std::fs::metadata(ETC).unwrap();
    assert_eq!((etc.mode() & 0o777, etc.uid(), etc.gid()), (0o750, 0, gid));
    let yaml = std::fs::metadata("/etc/postern/gateway.yaml").unwrap();
    assert_eq!(yaml.mode() & 0o777, 0o640);
    let state = std::fs::metadata(STATE).unwrap();
    assert_eq!((state.mode() & 0o777, state.uid()), (0o700, uid));
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains(
        "ExecStartPre=/usr/bin/postern-gateway --config /etc/postern/gateway.yaml check-config"
    ));
    let verified = run("systemd-analyze", &["verify", UNIT], "").await;
    let said = String::from_utf8_lossy(&verified.stderr);
    println!("systemd-analyze verify: {} {said}", verified.status);
    assert!(
        verified.status.success() && said.trim().is_empty(),
        "{said}"
    );

    // The app's: both programs on PATH, the desktop entry, every icon size,
    // the metadata.
    let version = ok("/usr/bin/postern", &["--version"], "").await;
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    assert!(Path::new("/usr/bin/postern-desktop").is_file());
    let entry = std::fs::read_to_string("/usr/share/applications/Postern.desktop").unwrap();
    println!("the desktop entry:\n{entry}");
    assert!(entry.contains("Exec=postern-desktop"), "{entry}");
    assert!(entry.contains("Name=Postern"), "{entry}");
    for size in ICON_SIZES {
        let icon = format!("/usr/share/icons/hicolor/{size}x{size}/apps/postern-desktop.png");
        assert!(Path::new(&icon).is_file(), "{icon}");
    }
    let fields = ok(
        "dpkg-query",
        &[
            "-W",
            "-f",
            "${Version} ${Homepage}\n${Description}",
            DESKTOP,
        ],
        "",
    )
    .await;
    println!("dpkg-query {DESKTOP}: {fields}");
    assert!(
        fields.starts_with(&format!(
            "{} https://postern.dev",
            env!("CARGO_PKG_VERSION")
        )),
        "{fields}"
    );
    assert!(
        fields.contains("Password-less access to PostgreSQL"),
        "{fields}"
    );

    // The packaged configuration passes the unit's check as is.
    let checked = gateway_as_postern(&["check-config"], "").await;
    let said = String::from_utf8_lossy(&checked.stdout);
    println!("check-config on the packaged file: {said}");
    assert!(
        checked.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // An operator adds a database, a role and a user.
    let pg = PgServer::start(TestCa::new("unused client CA").cert_pem()).await;
    configure("pg-ca.pem", pg.server_ca_pem());
    configure("scram.pw", pg.scram_password());
    let packaged = std::fs::read_to_string("/etc/postern/gateway.yaml").unwrap();
    let database = format!(
        "databases:\n  - name: pg\n    labels: {{ env: test }}\n    uri: localhost:{}\n    tls: {{ mode: verify-full, ca_cert_file: pg-ca.pem }}\n    passwords:\n      - {{ db_user: scramuser, password_file: scram.pw }}\n",
        pg.port()
    );
    let edited = packaged
        .replace("listen: 127.0.0.1:3080", "listen: 127.0.0.1:0")
        .replace("databases: []\n", &database);
    assert_ne!(edited, packaged);
    configure("gateway.yaml", &edited);
    configure(
        "roles.yaml",
        "kind: role\nversion: v7\nmetadata: { name: team }\nspec:\n  allow:\n    db_labels: { env: test }\n    db_names: [app]\n    db_users: [scramuser]\n",
    );
    let added = gateway_as_postern(
        &["users", "add", "ann", "--roles", "team", "--password-stdin"],
        &format!("{PW}\n"),
    )
    .await;
    assert!(added.status.success(), "{added:?}");

    // The installed gateway serves the installed CLI: login, tunnel, psql.
    let logs = tempfile::tempdir().unwrap();
    let config = Path::new("/etc/postern/gateway.yaml");
    let mut gateway = GatewayProcess::installed(config, logs.path(), uid, gid).await;
    let homes = tempfile::tempdir().unwrap();
    let clients = Clients {
        homes: homes.path().to_owned(),
        gateway: gateway.address().to_owned(),
        ca_pin: gateway.ready.ca_pin.clone(),
        cli: PathBuf::from("/usr/bin/postern"),
    };
    clients.login("ann", PW).await;
    let proxy = clients
        .proxy("ann", &["pg", "--db-user", "scramuser", "--db-name", "app"])
        .await;
    let (ok_psql, out, err) = proxy.query("dbname=app", "select current_user").await;
    println!("psql through the installed CLI and gateway: {out} {err}");
    assert!(ok_psql, "{err}");
    assert_eq!(out, "scramuser");
    drop(proxy);
    gateway.terminate();
    let status = gateway.exited(std::time::Duration::from_secs(60)).await;
    assert!(status.success(), "{status}: {}", gateway.log());
    let store = files_in(STATE);
    println!("the store in {STATE}: {store:?}");

    // The installed app starts in the tray on a desktop session, on ann's
    // profile.
    let home = clients.home("ann");
    let user_data = files_in(home.to_str().unwrap());
    let display = Display::start(800, 600).await;
    let bus = SessionBus::start().await;
    let shell = DesktopShell::start(&bus.address).await;
    let scratch = tempfile::tempdir().unwrap();
    let app = Command::new("/usr/bin/postern-desktop")
        .arg("--tray")
        .env("DISPLAY", &display.name)
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env_remove("WAYLAND_DISPLAY")
        .env("POSTERN_HOME", &home)
        .env("POSTERN_KEY_STORE", "file")
        .env("XDG_CONFIG_HOME", scratch.path())
        .env("XDG_DATA_HOME", scratch.path())
        .env("XDG_RUNTIME_DIR", scratch.path())
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("NO_AT_BRIDGE", "1")
        .kill_on_drop(true)
        .spawn()
        .expect("start the installed app");
    let tray = shell.tray_item(std::time::Duration::from_secs(60)).await;
    assert_eq!(tray.pid().await, app.id().unwrap());
    println!(
        "the installed app registered its tray (pid {})",
        app.id().unwrap()
    );
    drop(app);

    // Removing the packages keeps the configuration, the store and the
    // user's data.
    ok("dpkg", &["-r", "postern-gateway", DESKTOP], "").await;
    for gone in [
        "/usr/bin/postern-gateway",
        UNIT,
        "/usr/bin/postern",
        "/usr/bin/postern-desktop",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is still there");
    }
    assert_eq!(
        std::fs::read_to_string("/etc/postern/gateway.yaml").unwrap(),
        edited
    );
    assert_eq!(files_in(STATE), store, "the store is kept");
    assert_eq!(
        files_in(home.to_str().unwrap()),
        user_data,
        "ann's profile is kept"
    );
    purge().await;
}
