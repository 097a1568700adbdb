//! The local tunnel belongs to the OS user who started it: another local
//! account (`nobody`) is refused on the loopback port and cannot reach the
//! Unix socket, while the owner connects with psql over both as before.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use postern_client::launch::Endpoint;
use postern_tests::stack::{Stack, output, psql};
use tokio::process::Command;

const TARGET: [&str; 5] = ["pg", "--db-user", "certuser", "--db-name", "app"];
const SQL: &str = "select current_user";

/// psql run as OS user `nobody`, with `conninfo`.
fn psql_as_nobody(conninfo: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "nobody", "--", "psql"])
        .arg(format!("{conninfo} connect_timeout=10"))
        .args(["-X", "-A", "-t", "-c", SQL])
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .kill_on_drop(true);
    cmd
}

/// psql as this (the owner's) user on a Unix socket.
fn psql_on_socket(dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host={} port={port} connect_timeout=10",
        dir.display()
    ))
    .args(["-X", "-A", "-t", "-c", SQL])
    .kill_on_drop(true);
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_os_user_is_refused_on_the_loopback_port() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let proxy = stack.proxy("alice", &TARGET).await;

    let (ok, out, err) = output(psql_as_nobody(&format!(
        "host=127.0.0.1 port={}",
        proxy.port
    )))
    .await;
    println!("nobody on TCP: ok={ok} out={out:?} err={err:?}");
    assert!(!ok, "nobody must not use the tunnel; it got {out:?}");
    assert!(
        err.contains("this tunnel belongs to OS user root"),
        "psql said: {err}"
    );

    // The owner connects as before.
    let mut owner = psql(proxy.port, "");
    owner.args(["-c", SQL]);
    let (ok, out, err) = output(owner).await;
    assert!(ok, "{err}");
    assert_eq!(out, "certuser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_is_reachable_by_its_owner_only() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    // A parent every user may pass through, so only the socket's own
    // directory keeps `nobody` out.
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.path().join("sockets");
    let dir_arg = dir.display().to_string();
    let mut args = TARGET.to_vec();
    args.extend(["--socket", &dir_arg]);
    let proxy = stack.proxy("alice", &args).await;
    let socket = dir.join(format!(".s.PGSQL.{}", proxy.port));
    assert_eq!(mode(&dir), 0o700, "socket directory");
    assert_eq!(mode(&socket), 0o600, "socket");

    let (ok, out, err) = output(psql_on_socket(&dir, proxy.port)).await;
    assert!(ok, "{err}");
    assert_eq!(out, "certuser");
    // The connection URI the app offers names the socket too.
    let uri = Endpoint {
        database: "pg".into(),
        host: dir.display().to_string(),
        port: proxy.port,
        db_user: Some("certuser".into()),
        db_name: Some("app".into()),
    }
    .uri();
    let mut by_uri = Command::new("psql");
    by_uri.arg(&uri).args(["-X", "-A", "-t", "-c", SQL]);
    let (ok, out, err) = output(by_uri).await;
    assert!(ok, "{uri}: {err}");
    assert_eq!(out, "certuser");

    let (ok, out, err) = output(psql_as_nobody(&format!(
        "host={} port={}",
        dir.display(),
        proxy.port
    )))
    .await;
    println!("nobody on the socket: ok={ok} out={out:?} err={err:?}");
    assert!(!ok, "nobody must not reach the socket; it got {out:?}");
    assert!(err.contains("Permission denied"), "psql said: {err}");

    // Stopping the tunnel (Ctrl+C) removes its socket.
    let mut proxy = proxy;
    let pid = proxy.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::timeout(std::time::Duration::from_secs(20), proxy.child.wait())
        .await
        .expect("the tunnel stops on Ctrl+C")
        .unwrap();
    assert!(!socket.exists(), "{socket:?} is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_directory_others_can_enter_is_refused() {
    let stack = Stack::with_dev_users(&["alice"]).await;
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir_arg = open.path().display().to_string();
    let mut args = vec!["proxy", "db"];
    args.extend(TARGET);
    args.extend(["--socket", &dir_arg]);
    let out = stack.run("alice", &args, "").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("other users can enter it (mode 755)"),
        "postern said: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_port_held_by_another_program_is_never_passed_off_as_the_tunnel() {
    use tokio::io::AsyncBufReadExt;

    let stack = Stack::with_dev_users(&["alice"]).await;
    let mut first = stack.proxy("alice", &TARGET).await;
    let remembered = first.port;
    first.child.kill().await.unwrap();
    // Another program takes the port.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", remembered)).unwrap();
    let mut second = stack.proxy("alice", &TARGET).await;
    assert_ne!(second.port, remembered);
    let stderr = second.child.stderr.take().unwrap();
    let warning = tokio::io::BufReader::new(stderr)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        warning.starts_with(&format!(
            "postern: WARNING: Port {remembered}, used by this tunnel last time, is held by \
             another program (run by OS user root). Saved connections that use port {remembered} \
             reach that program, not Postern"
        )),
        "postern said: {warning}"
    );
    assert!(
        warning.contains(&format!("127.0.0.1:{}", second.port)),
        "{warning}"
    );
    drop(second);
    drop(squatter);
    // The old port is still the remembered one: the next tunnel gets it back.
    let third = stack.proxy("alice", &TARGET).await;
    assert_eq!(third.port, remembered);
}
