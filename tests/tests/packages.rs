//! The gateway's Debian package, for real (issue 16): `scripts/package`
//! builds it in a clean directory, apt installs it, and from the installed
//! files only the packaged configuration passes `check-config`, the unit
//! passes `systemd-analyze verify`, and the gateway, run as its system user
//! the way the unit runs it, serves the `postern` CLI's psql. `dpkg -r`
//! then removes the program and keeps the configuration and the store.
//!
//! It changes the machine (a package, the system user `postern`,
//! /etc/postern, /var/lib/postern), so it is ignored by default;
//! `scripts/test` runs it when CI=true.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use postern_tests::certs::TestCa;
use postern_tests::gateway_process::GatewayProcess;
use postern_tests::pg::PgServer;
use postern_tests::stack::{Clients, PASSWORD as PW};
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

/// Removes what an earlier, interrupted run left.
async fn purge() {
    let _ = run("dpkg", &["--purge", "postern-gateway"], "").await;
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
#[ignore = "installs a system package: scripts/test runs it when CI=true"]
async fn the_gateway_package_installs_serves_psql_and_is_removed_keeping_its_data() {
    assert!(
        rustix::process::geteuid().is_root(),
        "installing packages needs root"
    );
    let dist = tempfile::tempdir().unwrap();
    let dist_path = dist.path().to_str().unwrap();
    let script = repository().join("scripts/package");
    let built = ok(
        script.to_str().unwrap(),
        &["--profile", "dev", "--out", dist_path, "gateway"],
        "",
    )
    .await;
    let size = built
        .lines()
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_default();
    println!("scripts/package: {size}");
    let deb = std::fs::read_dir(dist.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in the output directory");

    purge().await;
    // apt resolves the package's declared dependencies.
    ok(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            deb.to_str().unwrap(),
        ],
        "",
    )
    .await;

    // The installed files: the program, the unit, the configuration
    // readable by the service's group only, its system user.
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

    // The installed gateway serves the CLI: login, tunnel, psql.
    let logs = tempfile::tempdir().unwrap();
    let config = Path::new("/etc/postern/gateway.yaml");
    let mut gateway = GatewayProcess::installed(config, logs.path(), uid, gid).await;
    let homes = tempfile::tempdir().unwrap();
    let clients = Clients {
        homes: homes.path().to_owned(),
        gateway: gateway.address().to_owned(),
        ca_pin: gateway.ready.ca_pin.clone(),
    };
    clients.login("ann", PW).await;
    let proxy = clients
        .proxy("ann", &["pg", "--db-user", "scramuser", "--db-name", "app"])
        .await;
    let (ok_psql, out, err) = proxy.query("dbname=app", "select current_user").await;
    println!("psql through the installed gateway: {out} {err}");
    assert!(ok_psql, "{err}");
    assert_eq!(out, "scramuser");
    drop(proxy);
    gateway.terminate();
    let status = gateway.exited(std::time::Duration::from_secs(60)).await;
    assert!(status.success(), "{status}: {}", gateway.log());
    let store = files_in(STATE);
    println!("the store in {STATE}: {store:?}");

    // Removing the package keeps the configuration and the store.
    ok("dpkg", &["-r", "postern-gateway"], "").await;
    assert!(!Path::new("/usr/bin/postern-gateway").exists());
    assert!(!Path::new(UNIT).exists());
    assert_eq!(
        std::fs::read_to_string("/etc/postern/gateway.yaml").unwrap(),
        edited
    );
    let kept = files_in(STATE);
    assert_eq!(kept, store, "the store is kept");
    purge().await;
}
