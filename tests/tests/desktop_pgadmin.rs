//! "Open in pgAdmin" against the real pgAdmin 4 from PyPI (installed by
//! scripts/install-test-deps in a venv): the launcher finds it, adds the
//! tunnel to its server list, the entry is in pgAdmin's configuration
//! database, and its connection parameters connect through the tunnel.

use postern_client::home::Home;
use postern_client::launch::{Os, PgAdminAdded, PgAdminCli, PgAdminOptions, PgAdminSearch};
use postern_client::manager::{TunnelManager, TunnelRequest};
use postern_client::profile::profile_name_for;
use postern_tests::stack::{DEFAULT_ROLES, Stack, psql};

use postern_tests::stack::PASSWORD as PW;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_in_pgadmin_adds_a_server_that_connects_through_the_tunnel() {
    let venv = postern_tests::cached_venv("POSTERN_PGADMIN", "pgadmin4-venv");
    let pgadmin = PgAdminSearch {
        os: Os::Linux,
        explicit: Some(venv.clone()),
        desktop_roots: vec![],
        path: vec![],
    }
    .find()
    .unwrap_or_else(|| {
        panic!(
            "pgAdmin 4 is not installed in {}: run scripts/install-test-deps",
            venv.display()
        )
    });
    assert_eq!(
        pgadmin.cli,
        PgAdminCli::Script(venv.join("bin/pgadmin4-cli")),
        "the PyPI package's own CLI is used"
    );

    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    stack.login("alice", PW).await;
    let home = Home::at(stack.home("alice"));
    let (manager, _events) = TunnelManager::new(home.clone());
    let info = manager
        .start(TunnelRequest {
            profile: profile_name_for(&stack.gateway_addr()),
            database: "pg".into(),
            db_user: Some("scramuser".into()),
            db_name: Some("analytics".into()),
            db_roles: vec![],
            port: None,
            socket_dir: None,
        })
        .await
        .unwrap();
    let endpoint = info.endpoint();

    // A pgAdmin that has never run, in desktop mode (as the desktop installs
    // run), with its data in a scratch directory.
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("pgadmin-data");
    let config = scratch.path().join("config_distro.py");
    std::fs::write(
        &config,
        format!(
            "SERVER_MODE = False\nDATA_DIR = {:?}\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    let options = PgAdminOptions {
        user: None,
        sqlite_path: None,
        config_file: Some(config),
    };
    let work = home.dir().join("pgadmin");
    let (first, second) = tokio::task::spawn_blocking({
        let (pgadmin, endpoint, work, options) = (
            pgadmin.clone(),
            endpoint.clone(),
            work.clone(),
            options.clone(),
        );
        move || {
            let first = pgadmin.add_server(&endpoint, &work, &options);
            let second = pgadmin.add_server(&endpoint, &work, &options);
            (first, second)
        }
    })
    .await
    .unwrap();
    let name = "pg (scramuser@analytics)".to_string();
    assert_eq!(first.unwrap(), PgAdminAdded::Loaded(name.clone()));
    assert_eq!(
        second.unwrap(),
        PgAdminAdded::AlreadyThere(name.clone()),
        "a second Open in pgAdmin does not duplicate the server"
    );
    assert!(work.join("servers.json").is_file());

    // The server as pgAdmin stores it.
    let db = rusqlite::Connection::open(data_dir.join("pgadmin4.db")).unwrap();
    let (group, host, port, maintenance_db, username, params): (
        String,
        String,
        i64,
        String,
        String,
        String,
    ) = db
        .query_row(
            "SELECT g.name, s.host, s.port, s.maintenance_db, s.username, s.connection_params \
             FROM server s JOIN servergroup g ON g.id = s.servergroup_id WHERE s.name = ?1",
            [&name],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    let count: i64 = db
        .query_row("SELECT count(*) FROM server", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(group, "Postern");
    assert_eq!(host, "127.0.0.1");
    assert_eq!(port, i64::from(info.port));
    let params: serde_json::Value = serde_json::from_str(&params).unwrap();
    assert_eq!(params["sslmode"], "disable", "the tunnel carries TLS");

    // Connect exactly as pgAdmin would with those parameters.
    let mut q = psql(
        port as u16,
        &format!(
            "host={host} user={username} dbname={maintenance_db} sslmode={}",
            params["sslmode"].as_str().unwrap()
        ),
    );
    q.args(["-c", "select current_user, current_database()"]);
    let out = q.output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "scramuser|analytics",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
