//! The shared store: a PostgreSQL database that every gateway replica uses.
//!
//! Works as an ordinary database owner (no superuser, no extensions). The
//! schema is migrated at start under an advisory lock; times (lease and lock
//! expiry, login-failure runs) are the database's clock, one clock for all
//! replicas.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, NoTls, Row};

use super::kek::Kek;
use super::{
    AuditLine, AuditPosition, CancelRecord, DeviceLoginRecord, FailureRun, Lock, PendingCounts,
    SsoLoginRecord, Store, StoreError, StoredAudit, UserRecord, millis, time_of,
};
use crate::ca::{CaKind, CaMaterial};
use crate::config::{PostgresStoreConfig, StoreTlsMode, TlsMode};
use crate::upstream::{Connector, DbStream, Dial, TcpTls};

/// Versioned schema changes, applied in order; a store holding a version
/// past the last one is refused.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("postgres/migrations/001_initial.sql")),
    (2, include_str!("postgres/migrations/002_shared_state.sql")),
    (3, include_str!("postgres/migrations/003_device_logins.sql")),
];

/// The schema version this binary migrates a store to.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The transaction-level advisory lock key under which replicas migrate
/// the schema one at a time (the bytes of "postern"); an application
/// sharing the database must not take it.
pub const MIGRATION_LOCK_KEY: i64 = 0x0070_6f73_7465_726e;

/// How long connecting (TCP, TLS, login) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one store call may take, waiting for a pooled connection
/// included; a hung store then fails calls instead of holding them forever.
/// Long enough for a replica to wait while another migrates.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Milliseconds since the epoch on the database's clock, fixed for the
/// statement.
const NOW_MS: &str = "(extract(epoch from statement_timestamp()) * 1000)::bigint";

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: Arc<Pool>,
    kek: Arc<Kek>,
    /// Runs the async client for the synchronous trait (see `store/mod.rs`);
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    config: tokio_postgres::Config,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// A fixed number of connections behind a semaphore. A handful of clients
/// needs no more than this: a permit bounds the connections, a closed
/// client is replaced on the next checkout, and no pool crate (with its own
/// configuration and runtime assumptions) is added for it.
struct Pool {
    target: Target,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            self.pool.idle().push(client);
        }
    }
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // The list stays consistent whatever panicked while it was held.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        let reused = std::iter::from_fn(|| self.idle().pop()).find(|c| !c.is_closed());
        let client = match reused {
            Some(client) => client,
            None => self.target.connect().await?,
        };
        Ok(Pooled {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }
}

impl Target {
    fn new(config: &PostgresStoreConfig) -> Result<Target, StoreError> {
        let mut pg = config.connection()?;
        let (host, port) = match (pg.get_hosts(), pg.get_ports()) {
            ([Host::Tcp(host)], ports) => (host.clone(), ports.first().copied().unwrap_or(5432)),
            _ => unreachable!("validated: one TCP host"),
        };
        pg.password(config.password()?)
            .application_name("postern-gateway store")
            // The migrations' IF NOT EXISTS would otherwise log a NOTICE
            // on every start.
            .options("-c client_min_messages=warning")
            // TLS is set up below, as for databases; tokio-postgres gets the
            // finished stream and must not negotiate again.
            .ssl_mode(SslMode::Disable);
        let tls = match config.tls.mode {
            StoreTlsMode::Disable => None,
            mode => {
                let ca_pem = match &config.tls.ca_cert_file {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                        StoreError::Unavailable(format!(
                            "cannot read store.postgres.tls.ca_cert_file {}: {e}",
                            path.display()
                        ))
                    })?),
                    None => None,
                };
                let mode = match mode {
                    StoreTlsMode::VerifyCa => TlsMode::VerifyCa,
                    _ => TlsMode::VerifyFull,
                };
                let tls = crate::tls::upstream_config(mode, ca_pem.as_deref(), None)
                    .map_err(|e| StoreError::Unavailable(format!("store TLS: {e}")))?;
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    StoreError::Unavailable(format!("store host {host:?} is not a valid TLS name"))
                })?;
                Some((tls, name))
            }
        };
        Ok(Target {
            host,
            port,
            config: pg,
            tls,
        })
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the store at {}:{} did not answer within {CONNECT_TIMEOUT:?}",
                    self.host, self.port
                ))
            })?
    }

    async fn connect_now(&self) -> Result<Client, StoreError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!(
                "cannot reach the store at {}:{}: {e}",
                self.host, self.port
            ))
        };
        let stream: DbStream = match &self.tls {
            Some((tls, server_name)) => TcpTls
                .connect(Dial {
                    database: "store",
                    host: &self.host,
                    port: self.port,
                    server_name,
                    tls: tls.clone(),
                })
                .await
                .map_err(|e| unreachable(&e))?,
            None => Box::new(
                tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| unreachable(&e))?,
            ),
        };
        let (client, connection) = self.config.connect_raw(stream, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "store connection ended");
            }
        });
        Ok(client)
    }
}

impl PostgresStore {
    /// Connects to the store, migrates its schema to this binary's version
    /// (under an advisory lock, so replicas starting together take turns),
    /// and refuses a store whose schema is newer than this binary knows.
    pub fn open(config: &PostgresStoreConfig) -> Result<Self, StoreError> {
        let kek = Kek::from_base64(&config.kek()?)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postern-store")
            .enable_all()
            .build()?;
        let pool = Arc::new(Pool {
            target: Target::new(config)?,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.pool_size),
        });
        let store = PostgresStore {
            pool,
            kek: Arc::new(kek),
            runtime: Some(runtime),
        };
        store.run(|pool| async move { migrate(&mut *pool.get().await?).await })?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it. Blocking the
    /// calling thread is what the synchronous trait promises; a std channel
    /// (not `block_on`) makes that safe on a tokio worker too.
    fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("present until dropped");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = work(self.pool.clone());
        runtime.spawn(async move {
            let result = tokio::time::timeout(CALL_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "the store did not answer within {CALL_TIMEOUT:?}"
                    )))
                });
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("the store's runtime stopped".into()))?
    }

    /// The device sign-in whose `column` (`id` or `user_code`) is `value`,
    /// unless expired.
    fn device_login_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<DeviceLoginRecord>, StoreError> {
        let value = value.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT {DEVICE_COLUMNS} FROM device_logins
                             WHERE {column} = $1 AND expires_ms > {NOW_MS}"
                        ),
                        &[&value],
                    )
                    .await?;
                Ok(row.as_ref().map(device_login))
            })
        })
    }

    /// Runs one statement-level closure on a pooled client.
    fn with_client<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut Client,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>,
            > + Send
            + 'static,
    {
        self.run(|pool| async move {
            let mut client = pool.get().await?;
            work(&mut client).await
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics on an async worker; the
        // store may be dropped there, so let its threads end on their own.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Taken before any DDL: concurrent CREATE TABLE IF NOT EXISTS can still
    // collide, so one replica migrates while the others wait, then find
    // nothing left to do. Released at commit.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    let known = SCHEMA_VERSION;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "store schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

fn lock_of(row: &Row) -> Lock {
    Lock {
        id: row.get(0),
        user: row.get(1),
        message: row.get(2),
        created_ms: row.get(3),
        expires_ms: row.get(4),
    }
}

fn cancel_record(row: &Row) -> CancelRecord {
    CancelRecord {
        client: postern_pgwire::CancelKey {
            pid: row.get(0),
            secret: row.get(1),
        },
        owner: row.get(2),
        replica: row.get(3),
        database: row.get(4),
        upstream_addr: row.get(5),
        real: postern_pgwire::CancelKey {
            pid: row.get(6),
            secret: row.get(7),
        },
    }
}

fn sso_login(row: &Row) -> SsoLoginRecord {
    SsoLoginRecord {
        id: row.get(0),
        state: row.get(1),
        source: row.get(2),
        created_ms: row.get(3),
        body: row.get(4),
    }
}

/// The columns [`sso_login`] reads.
const SSO_COLUMNS: &str = "id, state, source, created_ms, body";

fn device_login(row: &Row) -> DeviceLoginRecord {
    DeviceLoginRecord {
        id: row.get(0),
        user_code: row.get(1),
        source: row.get(2),
        created_ms: row.get(3),
        body: row.get(4),
    }
}

/// The columns [`device_login`] reads.
const DEVICE_COLUMNS: &str = "id, user_code, source, created_ms, body";

fn failure_run(row: &Row) -> FailureRun {
    FailureRun {
        count: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
        first: time_of(row.get(1)),
        last: time_of(row.get(2)),
    }
}

fn ca_context(kind: CaKind) -> String {
    format!("{} CA key", kind.as_str())
}

impl Store for PostgresStore {
    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        let record: Option<String> = self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt("SELECT record FROM users WHERE name = $1", &[&name])
                    .await?;
                Ok(row.map(|r| r.get(0)))
            })
        })?;
        Ok(record.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let (name, record) = (user.name.clone(), serde_json::to_string(user)?);
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO users (name, record) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                    &[&name, &record],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                Ok(c.execute("DELETE FROM users WHERE name = $1", &[&name])
                    .await?
                    > 0)
            })
        })
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let records: Vec<String> = self.with_client(|c| {
            Box::pin(async move {
                let rows = c
                    .query("SELECT record FROM users ORDER BY name", &[])
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })?;
        Ok(records
            .iter()
            .map(|r| serde_json::from_str(r))
            .collect::<Result<_, _>>()?)
    }

    fn ca_or_insert(&self, kind: CaKind, fresh: &CaMaterial) -> Result<CaMaterial, StoreError> {
        let context = ca_context(kind);
        let sealed = self.kek.seal(&context, &fresh.key_pem)?;
        let cert = fresh.cert_pem.clone();
        // Insert-if-absent, then read: concurrent first starts all read the
        // one row that won.
        let (cert_pem, key_sealed): (String, String) = self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO cas (kind, cert_pem, key_sealed) VALUES ($1, $2, $3)
                     ON CONFLICT (kind) DO NOTHING",
                    &[&kind.as_str(), &cert, &sealed],
                )
                .await?;
                let row = c
                    .query_one(
                        "SELECT cert_pem, key_sealed FROM cas WHERE kind = $1",
                        &[&kind.as_str()],
                    )
                    .await?;
                Ok((row.get(0), row.get(1)))
            })
        })?;
        Ok(CaMaterial {
            cert_pem,
            key_pem: self.kek.open(&context, &key_sealed)?,
        })
    }

    fn append_audit(&self, lines: &[AuditLine]) -> Result<(), StoreError> {
        let events: Vec<String> = lines.iter().map(|l| l.json.clone()).collect();
        let times: Vec<i64> = lines.iter().map(|l| l.time_ms).collect();
        self.with_client(move |c| {
            Box::pin(async move {
                // One statement for the batch: atomic, one round trip;
                // unnest keeps the arrays' order, so ids follow it.
                c.execute(
                    "INSERT INTO audit (event, time_ms)
                     SELECT * FROM unnest($1::text[], $2::bigint[])",
                    &[&events, &times],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn recent_audit(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let events: Vec<String> = self.with_client(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT event FROM (SELECT id, event FROM audit ORDER BY id DESC LIMIT $1) recent
                         ORDER BY id",
                        &[&limit],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })?;
        Ok(events
            .iter()
            .map(|e| serde_json::from_str(e))
            .collect::<Result<_, _>>()?)
    }

    fn add_lock(&self, lock: &Lock) -> Result<(), StoreError> {
        let lock = lock.clone();
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO locks (id, username, message, created_ms, expires_ms)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &lock.id,
                        &lock.user,
                        &lock.message,
                        &lock.created_ms,
                        &lock.expires_ms,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn locks(&self, user: Option<&str>) -> Result<Vec<Lock>, StoreError> {
        let user = user.map(str::to_owned);
        self.with_client(move |c| {
            Box::pin(async move {
                // Expired locks stay in the table until a removal sweeps them.
                let rows = c
                    .query(
                        &format!(
                            "SELECT id, username, message, created_ms, expires_ms FROM locks
                             WHERE ($1::text IS NULL OR username = $1)
                               AND (expires_ms IS NULL OR expires_ms > {NOW_MS})
                             ORDER BY created_ms, id"
                        ),
                        &[&user],
                    )
                    .await?;
                Ok(rows.iter().map(lock_of).collect())
            })
        })
    }

    fn remove_lock(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    &format!(
                        "DELETE FROM locks WHERE expires_ms IS NOT NULL AND expires_ms <= {NOW_MS}"
                    ),
                    &[],
                )
                .await?;
                Ok(c.execute("DELETE FROM locks WHERE id = $1", &[&id]).await? > 0)
            })
        })
    }

    fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (key, holder, ttl) = (key.to_owned(), holder.to_owned(), millis(ttl));
        self.with_client(move |c| {
            Box::pin(async move {
                // One statement, so concurrent takers on any replica cannot
                // both win: inserted, taken over when expired, or left alone.
                let changed = c
                    .execute(
                        &format!(
                            "INSERT INTO leases (key, holder, expires_ms) VALUES ($1, $2, {NOW_MS} + $3)
                             ON CONFLICT (key) DO UPDATE
                                 SET holder = excluded.holder, expires_ms = excluded.expires_ms
                                 WHERE leases.expires_ms <= {NOW_MS} OR leases.holder = excluded.holder"
                        ),
                        &[&key, &holder, &ttl],
                    )
                    .await?;
                Ok(changed == 1)
            })
        })
    }

    fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM leases WHERE key = $1 AND holder = $2",
                    &[&key, &holder],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn login_failures(&self, key: &str) -> Result<Option<FailureRun>, StoreError> {
        let key = key.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT count, first_ms, last_ms FROM login_failures WHERE key = $1",
                        &[&key],
                    )
                    .await?;
                Ok(row.as_ref().map(failure_run))
            })
        })
    }

    fn add_login_failure(
        &self,
        key: &str,
        run_length: Duration,
        forget_after: Duration,
    ) -> Result<FailureRun, StoreError> {
        let (key, run_length, forget_after) =
            (key.to_owned(), millis(run_length), millis(forget_after));
        self.with_client(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.execute(
                    &format!("DELETE FROM login_failures WHERE last_ms < {NOW_MS} - $1"),
                    &[&forget_after],
                )
                .await?;
                // One statement, so replicas counting the same key add up.
                let row = tx
                    .query_one(
                        &format!(
                            "INSERT INTO login_failures AS f (key, count, first_ms, last_ms)
                             VALUES ($1, 1, {NOW_MS}, {NOW_MS})
                             ON CONFLICT (key) DO UPDATE SET
                                 count = CASE WHEN f.first_ms < {NOW_MS} - $2 THEN 1 ELSE f.count + 1 END,
                                 first_ms = CASE WHEN f.first_ms < {NOW_MS} - $2 THEN excluded.first_ms ELSE f.first_ms END,
                                 last_ms = excluded.last_ms
                             RETURNING count, first_ms, last_ms"
                        ),
                        &[&key, &run_length],
                    )
                    .await?;
                tx.commit().await?;
                Ok(failure_run(&row))
            })
        })
    }

    fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM login_failures WHERE key = $1", &[&key])
                    .await?;
                Ok(())
            })
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_client(|c| {
            Box::pin(async move {
                c.simple_query("SELECT 1").await?;
                Ok(())
            })
        })
    }

    fn audit_since(
        &self,
        since_ms: i64,
        after: Option<AuditPosition>,
        limit: usize,
    ) -> Result<Vec<StoredAudit>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_time, after_id) = (after.map(|a| a.time_ms), after.map(|a| a.id));
        self.with_client(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT time_ms, id, event FROM audit
                         WHERE time_ms >= $1
                           AND ($2::bigint IS NULL OR (time_ms, id) > ($2, $3::bigint))
                         ORDER BY time_ms, id LIMIT $4",
                        &[&since_ms, &after_time, &after_id, &limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| StoredAudit {
                        position: AuditPosition {
                            time_ms: r.get(0),
                            id: r.get(1),
                        },
                        json: r.get(2),
                    })
                    .collect())
            })
        })
    }

    fn delete_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_client(move |c| {
            Box::pin(async move {
                Ok(
                    c.execute("DELETE FROM audit WHERE time_ms < $1", &[&before_ms])
                        .await?,
                )
            })
        })
    }

    fn put_cancel_key(&self, key: &CancelRecord) -> Result<bool, StoreError> {
        let key = key.clone();
        self.with_client(move |c| {
            Box::pin(async move {
                let changed = c
                    .execute(
                        &format!(
                            "INSERT INTO cancel_keys (pid, secret, owner, replica, database,
                                 upstream_addr, real_pid, real_secret, created_ms)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {NOW_MS})
                             ON CONFLICT (pid, secret) DO NOTHING"
                        ),
                        &[
                            &key.client.pid,
                            &key.client.secret,
                            &key.owner,
                            &key.replica,
                            &key.database,
                            &key.upstream_addr,
                            &key.real.pid,
                            &key.real.secret,
                        ],
                    )
                    .await?;
                Ok(changed == 1)
            })
        })
    }

    fn cancel_key(&self, pid: i32, secret: i32) -> Result<Option<CancelRecord>, StoreError> {
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT pid, secret, owner, replica, database, upstream_addr,
                                real_pid, real_secret
                         FROM cancel_keys WHERE pid = $1 AND secret = $2",
                        &[&pid, &secret],
                    )
                    .await?;
                Ok(row.as_ref().map(cancel_record))
            })
        })
    }

    fn remove_cancel_key(&self, pid: i32, secret: i32) -> Result<(), StoreError> {
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM cancel_keys WHERE pid = $1 AND secret = $2",
                    &[&pid, &secret],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn remove_replica_cancel_keys(&self, replica: &str) -> Result<u64, StoreError> {
        let replica = replica.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                Ok(
                    c.execute("DELETE FROM cancel_keys WHERE replica = $1", &[&replica])
                        .await?,
                )
            })
        })
    }

    fn accept_totp_step(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let (user, step) = (user.to_owned(), i64::try_from(step).unwrap_or(i64::MAX));
        self.with_client(move |c| {
            Box::pin(async move {
                // One statement: of two replicas given the same code, one
                // changes the row and the other finds the step used.
                let changed = c
                    .execute(
                        "INSERT INTO totp_steps (username, step) VALUES ($1, $2)
                         ON CONFLICT (username) DO UPDATE SET step = excluded.step
                             WHERE totp_steps.step < excluded.step",
                        &[&user, &step],
                    )
                    .await?;
                Ok(changed == 1)
            })
        })
    }

    fn sso_logins_pending(&self, source: &str) -> Result<PendingCounts, StoreError> {
        let source = source.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    &format!("DELETE FROM sso_logins WHERE expires_ms <= {NOW_MS}"),
                    &[],
                )
                .await?;
                let row = c
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE source = $1), min(created_ms),
                                min(created_ms) FILTER (WHERE source = $1)
                         FROM sso_logins",
                        &[&source],
                    )
                    .await?;
                let count = |i| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
                Ok(PendingCounts {
                    total: count(0),
                    from_source: count(1),
                    oldest_ms: row.get(2),
                    oldest_from_source_ms: row.get(3),
                })
            })
        })
    }

    fn put_sso_login(&self, login: &SsoLoginRecord, ttl: Duration) -> Result<(), StoreError> {
        let (login, ttl) = (login.clone(), millis(ttl));
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    &format!(
                        "INSERT INTO sso_logins (id, state, source, created_ms, expires_ms, body)
                         VALUES ($1, $2, $3, $4, {NOW_MS} + $5, $6)"
                    ),
                    &[
                        &login.id,
                        &login.state,
                        &login.source,
                        &login.created_ms,
                        &ttl,
                        &login.body,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn take_sso_state(&self, state: &str) -> Result<Option<SsoLoginRecord>, StoreError> {
        let state = state.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "UPDATE sso_logins SET state = NULL
                             WHERE state = $1 AND expires_ms > {NOW_MS}
                             RETURNING {SSO_COLUMNS}"
                        ),
                        &[&state],
                    )
                    .await?;
                Ok(row.as_ref().map(sso_login))
            })
        })
    }

    fn update_sso_login(&self, id: &str, body: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (id, body, ttl) = (id.to_owned(), body.to_owned(), millis(ttl));
        self.with_client(move |c| {
            Box::pin(async move {
                Ok(c.execute(
                    &format!(
                        "UPDATE sso_logins SET body = $2, expires_ms = {NOW_MS} + $3
                         WHERE id = $1 AND expires_ms > {NOW_MS}"
                    ),
                    &[&id, &body, &ttl],
                )
                .await?
                    == 1)
            })
        })
    }

    fn sso_login(&self, id: &str) -> Result<Option<SsoLoginRecord>, StoreError> {
        let id = id.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT {SSO_COLUMNS} FROM sso_logins
                             WHERE id = $1 AND expires_ms > {NOW_MS}"
                        ),
                        &[&id],
                    )
                    .await?;
                Ok(row.as_ref().map(sso_login))
            })
        })
    }

    fn fail_sso_login(&self, id: &str, max: u32) -> Result<(), StoreError> {
        let (id, max) = (id.to_owned(), i32::try_from(max).unwrap_or(i32::MAX));
        self.with_client(move |c| {
            Box::pin(async move {
                // The update locks the row until commit, so failures
                // counted on two replicas add up.
                let tx = c.transaction().await?;
                let failures: Option<i32> = tx
                    .query_opt(
                        "UPDATE sso_logins SET failures = failures + 1 WHERE id = $1
                         RETURNING failures",
                        &[&id],
                    )
                    .await?
                    .map(|r| r.get(0));
                if failures.is_some_and(|n| n >= max) {
                    tx.execute("DELETE FROM sso_logins WHERE id = $1", &[&id])
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn take_sso_login(&self, id: &str) -> Result<Option<SsoLoginRecord>, StoreError> {
        let id = id.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "DELETE FROM sso_logins WHERE id = $1 AND expires_ms > {NOW_MS}
                             RETURNING {SSO_COLUMNS}"
                        ),
                        &[&id],
                    )
                    .await?;
                Ok(row.as_ref().map(sso_login))
            })
        })
    }

    fn device_logins_pending(&self, source: &str) -> Result<PendingCounts, StoreError> {
        let source = source.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    &format!("DELETE FROM device_logins WHERE expires_ms <= {NOW_MS}"),
                    &[],
                )
                .await?;
                let row = c
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE source = $1), min(created_ms),
                                min(created_ms) FILTER (WHERE source = $1)
                         FROM device_logins",
                        &[&source],
                    )
                    .await?;
                let count = |i| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
                Ok(PendingCounts {
                    total: count(0),
                    from_source: count(1),
                    oldest_ms: row.get(2),
                    oldest_from_source_ms: row.get(3),
                })
            })
        })
    }

    fn put_device_login(
        &self,
        login: &DeviceLoginRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (login, ttl) = (login.clone(), millis(ttl));
        self.with_client(move |c| {
            Box::pin(async move {
                Ok(c.execute(
                    &format!(
                        "INSERT INTO device_logins
                             (id, user_code, source, created_ms, expires_ms, body)
                         VALUES ($1, $2, $3, $4, {NOW_MS} + $5, $6) ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &login.id,
                        &login.user_code,
                        &login.source,
                        &login.created_ms,
                        &ttl,
                        &login.body,
                    ],
                )
                .await?
                    == 1)
            })
        })
    }

    fn device_login(&self, id: &str) -> Result<Option<DeviceLoginRecord>, StoreError> {
        self.device_login_where("id", id)
    }

    fn device_login_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceLoginRecord>, StoreError> {
        self.device_login_where("user_code", user_code)
    }

    fn replace_device_login(&self, id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let (id, old, new) = (id.to_owned(), old.to_owned(), new.to_owned());
        self.with_client(move |c| {
            Box::pin(async move {
                Ok(c.execute(
                    &format!(
                        "UPDATE device_logins SET body = $3
                         WHERE id = $1 AND body = $2 AND expires_ms > {NOW_MS}"
                    ),
                    &[&id, &old, &new],
                )
                .await?
                    == 1)
            })
        })
    }

    fn take_device_login(&self, id: &str) -> Result<Option<DeviceLoginRecord>, StoreError> {
        let id = id.to_owned();
        self.with_client(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "DELETE FROM device_logins WHERE id = $1 AND expires_ms > {NOW_MS}
                             RETURNING {DEVICE_COLUMNS}"
                        ),
                        &[&id],
                    )
                    .await?;
                Ok(row.as_ref().map(device_login))
            })
        })
    }
}
