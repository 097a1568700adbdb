//! The shared PostgreSQL store on a real PostgreSQL 15: the conformance
//! suite every store passes, migrations that replicas race, a schema newer
//! than the gateway, leases across replicas, and an ordinary (non-superuser)
//! owner reached over verify-full TLS.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use postern_gateway::config::{GatewayConfig, PostgresStoreConfig};
use postern_gateway::server;
use postern_gateway::store::{
    MIGRATION_LOCK_KEY, PostgresStore, SCHEMA_VERSION, Store, StoreError, conformance,
};
use postern_tests::certs::TestCa;
use postern_tests::eventually;
use postern_tests::pg::{PgServer, TLS_HOST};
use postern_tests::shared_store::{OWNER, SharedStore};
use postern_tests::stack::bin;

/// Another valid key-encryption key.
const OTHER_KEK: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// A PostgreSQL 15 whose ordinary role `postern_store` may own store
/// databases.
async fn fixture() -> SharedStore {
    SharedStore::start(PgServer::start(TestCa::new("test database CA").cert_pem()).await).await
}

async fn query_one_i64(fx: &SharedStore, db: &str, sql: &str) -> i64 {
    fx.pg
        .admin(db)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

fn open(config: &PostgresStoreConfig) -> Arc<dyn Store> {
    Arc::new(PostgresStore::open(config).unwrap())
}

#[tokio::test]
async fn postgres_passes_the_store_conformance_suite_as_an_ordinary_owner() {
    let fx = fixture().await;
    let config = fx.database("conformance").await;
    tokio::task::spawn_blocking(move || conformance::run_all(&|| open(&config)))
        .await
        .unwrap();
    // Nothing but the store's own tables: no extension was needed.
    assert_eq!(
        query_one_i64(
            &fx,
            "conformance",
            "SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn replicas_migrating_at_once_take_turns_and_apply_the_schema_once() {
    let fx = fixture().await;
    let db = "race";
    fx.pg
        .admin("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {OWNER}"))
        .await
        .unwrap();
    // Hold the migration lock, so both replicas reach it before either
    // migrates: without it they would create the same tables at once.
    let holder = fx.pg.admin(db).await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
        ))
        .await
        .unwrap();
    let config = fx.config(db);
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let config = config.clone();
            tokio::task::spawn_blocking(move || PostgresStore::open(&config).map(drop))
        })
        .collect();
    let watcher = fx.pg.admin("postgres").await;
    eventually(Duration::from_secs(20), async || {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 2 {
            Ok(())
        } else {
            Err(format!("{waiting} replicas waiting"))
        }
    })
    .await
    .expect("both replicas wait for the migration lock");
    holder.batch_execute("COMMIT").await.unwrap();
    for replica in replicas {
        if let Err(e) = replica.await.unwrap() {
            panic!("a replica failed to start: {e}");
        }
    }
    assert_eq!(
        query_one_i64(&fx, db, "SELECT count(*) FROM schema_version").await,
        i64::from(SCHEMA_VERSION),
        "each version applied once"
    );
}

#[tokio::test]
async fn a_schema_newer_than_the_gateway_is_refused_with_both_versions() {
    let fx = fixture().await;
    let config = fx.database("newer").await;
    fx.pg
        .admin("newer")
        .await
        .batch_execute("INSERT INTO schema_version (version) VALUES (99)")
        .await
        .unwrap();
    let err = tokio::task::spawn_blocking(move || PostgresStore::open(&config).map(drop))
        .await
        .unwrap()
        .unwrap_err();
    println!("{err}");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: SCHEMA_VERSION
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 99") && text.contains(&format!("version {SCHEMA_VERSION} ")),
        "{text}"
    );

    // The gateway itself refuses to start with that sentence.
    let yaml = gateway_yaml(&fx, "newer");
    let started = server::start(GatewayConfig::load(&yaml).unwrap()).await;
    let Err(err) = started else {
        panic!("a gateway started on a newer schema");
    };
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// A gateway.yaml in the fixture's directory whose store is database `db`.
fn gateway_yaml(fx: &SharedStore, db: &str) -> std::path::PathBuf {
    let path = fx.dir.path().join(format!("gateway-{db}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"
listen: 127.0.0.1:0
data_dir: data-{db}
store:
  postgres:
    url: postgres://{OWNER}@{TLS_HOST}:{port}/{db}
    password_file: store.pw
    tls: {{ mode: verify-full, ca_cert_file: pg-ca.pem }}
    kek_file: kek
"#,
            port = fx.pg.port()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn replicas_share_one_ca_whose_keys_are_sealed_in_the_database() {
    let fx = fixture().await;
    fx.database("shared").await;
    let yaml = gateway_yaml(&fx, "shared");
    let (a, b) = tokio::join!(
        server::start(GatewayConfig::load(&yaml).unwrap()),
        server::start(GatewayConfig::load(&yaml).unwrap()),
    );
    let (a, b) = (a.expect("first replica"), b.expect("second replica"));
    assert_eq!(a.ca_pin, b.ca_pin, "both replicas serve one user CA");
    let admin = fx.pg.admin("shared").await;
    let rows = admin
        .query("SELECT kind, key_sealed FROM cas ORDER BY kind", &[])
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let (kind, sealed): (String, String) = (row.get(0), row.get(1));
        assert!(
            !sealed.contains("PRIVATE KEY"),
            "{kind} CA key in plaintext"
        );
    }
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;

    // Another key-encryption key cannot open them: the replica refuses.
    std::fs::write(fx.dir.path().join("kek"), OTHER_KEK).unwrap();
    let wrong = server::start(GatewayConfig::load(&yaml).unwrap()).await;
    let Err(err) = wrong else {
        panic!("a gateway opened CA keys with another key-encryption key");
    };
    println!("{err}");
    assert!(err.to_string().contains("key-encryption key"), "{err}");
}

#[tokio::test]
async fn leases_serialize_across_replicas() {
    let fx = fixture().await;
    let config = fx.database("leases").await;
    let winners = tokio::task::spawn_blocking(move || {
        let stores = [open(&config), open(&config)];
        let start = Barrier::new(8);
        std::thread::scope(|s| {
            let takers: Vec<_> = (0..8)
                .map(|i| {
                    let (store, start) = (&stores[i % 2], &start);
                    s.spawn(move || {
                        start.wait();
                        store
                            .try_lease("db/alice", &format!("replica-{i}"), Duration::from_secs(60))
                            .unwrap()
                    })
                })
                .collect();
            takers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|won| *won)
                .count()
        })
    })
    .await
    .unwrap();
    assert_eq!(winners, 1, "exactly one replica holds the lease");
}

#[tokio::test]
async fn a_store_whose_certificate_is_not_trusted_is_refused() {
    let fx = fixture().await;
    let mut config = fx.database("tls").await;
    let other_ca = fx.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::new("someone else").cert_pem()).unwrap();
    config.tls.ca_cert_file = Some(other_ca);
    let err = tokio::task::spawn_blocking(move || PostgresStore::open(&config).map(drop))
        .await
        .unwrap()
        .unwrap_err();
    println!("{err}");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn the_operators_cli_works_on_the_shared_store() {
    let fx = fixture().await;
    let config = fx.database("cli").await;
    let yaml = gateway_yaml(&fx, "cli");
    let run = |args: &[&str]| {
        std::process::Command::new(bin("postern-gateway"))
            .arg("--config")
            .arg(&yaml)
            .args(args)
            .env_remove("POSTERN_GATEWAY_CONFIG")
            .output()
            .unwrap()
    };
    let added = run(&[
        "locks",
        "add",
        "--user",
        "alice",
        "--ttl",
        "1h",
        "--message",
        "incident 7",
    ]);
    assert!(added.status.success(), "{added:?}");
    let listed = run(&["locks", "ls"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("user=alice") && listed.contains("incident 7"),
        "{listed}"
    );
    // A replica reading the store sees the lock the CLI added.
    let locks = tokio::task::spawn_blocking(move || open(&config).locks(Some("alice")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].message.as_deref(), Some("incident 7"));
}

#[tokio::test]
async fn a_store_of_the_first_schema_is_migrated_with_its_audit_kept_and_dated() {
    let fx = fixture().await;
    let config = fx.database("first").await;
    let admin = fx.pg.admin("first").await;
    // As a gateway of the first schema left it: its tables, owned by the
    // store's role.
    admin
        .batch_execute(&format!(
            "SET ROLE {OWNER};
             DROP TABLE schema_version, users, cas, audit, locks, leases, login_failures,
                 cancel_keys, totp_steps, sso_logins, device_logins;"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(include_str!(
            "../../crates/gateway/src/store/postgres/migrations/001_initial.sql"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(
            r#"CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
               INSERT INTO schema_version (version) VALUES (1);
               INSERT INTO audit (event) VALUES ('{"time_ms":1700000000000,"event":"login"}');"#,
        )
        .await
        .unwrap();
    let events = tokio::task::spawn_blocking(move || {
        let store = PostgresStore::open(&config).unwrap();
        store.audit_since(1_700_000_000_000, None, 10).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].position.time_ms, 1_700_000_000_000);
    assert_eq!(
        query_one_i64(
            &fx,
            "first",
            "SELECT max(version)::bigint FROM schema_version"
        )
        .await,
        i64::from(SCHEMA_VERSION)
    );
}
