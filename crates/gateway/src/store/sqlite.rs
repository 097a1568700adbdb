//! The embedded default store: one SQLite file in WAL mode.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AuditLine, AuditPosition, CancelRecord, DeviceLoginRecord, FailureRun, Lock, PendingCounts,
    SsoLoginRecord, Store, StoreError, StoredAudit, UserRecord, millis, time_of,
};
use crate::ca::{CaKind, CaMaterial};

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cas (
    kind TEXT PRIMARY KEY,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    time_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS locks (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    message TEXT,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER
);
CREATE INDEX IF NOT EXISTS locks_by_user ON locks (user);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_last ON login_failures (last_ms);
CREATE TABLE IF NOT EXISTS cancel_keys (
    pid INTEGER NOT NULL,
    secret INTEGER NOT NULL,
    owner TEXT NOT NULL,
    replica TEXT NOT NULL,
    database TEXT NOT NULL,
    upstream_addr TEXT NOT NULL,
    real_pid INTEGER NOT NULL,
    real_secret INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (pid, secret)
);
CREATE INDEX IF NOT EXISTS cancel_keys_by_replica ON cancel_keys (replica);
CREATE TABLE IF NOT EXISTS totp_steps (
    user TEXT PRIMARY KEY,
    step INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sso_logins (
    id TEXT PRIMARY KEY,
    state TEXT UNIQUE,
    source TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sso_logins_by_source ON sso_logins (source);
CREATE TABLE IF NOT EXISTS device_logins (
    id TEXT PRIMARY KEY,
    user_code TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_logins_by_source ON device_logins (source);
";

/// Changes to files made before a table or column existed, by the
/// `user_version` they bring a file to. `SCHEMA` already has them for new
/// files, so each must be harmless there.
const UPGRADES: &[(i32, &str)] = &[(
    2,
    // The audit's time column, for `audit ls --since` and retention.
    "UPDATE audit SET time_ms = coalesce(json_extract(event, '$.time_ms'), 0) WHERE time_ms = 0;",
)];

/// Indexes on columns an upgrade adds, created once the columns exist.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS audit_by_time ON audit (time_ms, id);";

impl SqliteStore {
    /// Opens (creating if needed) `postern.db` in `dir`. The directory and
    /// file are private to the gateway's user: they hold CA keys.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        restrict(dir, 0o700)?;
        let path = dir.join("postern.db");
        let conn = Connection::open(&path)?;
        restrict(&path, 0o600)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        upgrade(&conn)?;
        conn.execute_batch(INDEXES)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements
        // are atomic), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Brings a file made by an older gateway to the current schema.
fn upgrade(conn: &Connection) -> Result<(), StoreError> {
    let has_time: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('audit') WHERE name = 'time_ms'",
        [],
        |r| r.get(0),
    )?;
    if !has_time {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN time_ms INTEGER NOT NULL DEFAULT 0")?;
    }
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (to, sql) in UPGRADES.iter().filter(|(v, _)| *v > version) {
        conn.execute_batch(sql)?;
        conn.pragma_update(None, "user_version", to)?;
    }
    Ok(())
}

fn cancel_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<CancelRecord> {
    Ok(CancelRecord {
        client: postern_pgwire::CancelKey {
            pid: row.get(0)?,
            secret: row.get(1)?,
        },
        owner: row.get(2)?,
        replica: row.get(3)?,
        database: row.get(4)?,
        upstream_addr: row.get(5)?,
        real: postern_pgwire::CancelKey {
            pid: row.get(6)?,
            secret: row.get(7)?,
        },
    })
}

fn sso_login(row: &rusqlite::Row<'_>) -> rusqlite::Result<SsoLoginRecord> {
    Ok(SsoLoginRecord {
        id: row.get(0)?,
        state: row.get(1)?,
        source: row.get(2)?,
        created_ms: row.get(3)?,
        body: row.get(4)?,
    })
}

/// The columns [`sso_login`] reads.
const SSO_COLUMNS: &str = "id, state, source, created_ms, body";

fn device_login(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceLoginRecord> {
    Ok(DeviceLoginRecord {
        id: row.get(0)?,
        user_code: row.get(1)?,
        source: row.get(2)?,
        created_ms: row.get(3)?,
        body: row.get(4)?,
    })
}

/// The columns [`device_login`] reads.
const DEVICE_COLUMNS: &str = "id, user_code, source, created_ms, body";

fn failure_run(row: &rusqlite::Row<'_>) -> rusqlite::Result<FailureRun> {
    Ok(FailureRun {
        count: row.get(0)?,
        first: time_of(row.get(1)?),
        last: time_of(row.get(2)?),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

impl Store for SqliteStore {
    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let record: Option<String> = self
            .conn()
            .query_row("SELECT record FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(record.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO users (name, record) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![user.name, serde_json::to_string(user)?],
        )?;
        Ok(())
    }

    fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", [name])?
            > 0)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT record FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    fn ca_or_insert(&self, kind: CaKind, fresh: &CaMaterial) -> Result<CaMaterial, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO cas (kind, cert_pem, key_pem) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), fresh.cert_pem, fresh.key_pem],
        )?;
        Ok(conn.query_row(
            "SELECT cert_pem, key_pem FROM cas WHERE kind = ?1",
            [kind.as_str()],
            |r| {
                Ok(CaMaterial {
                    cert_pem: r.get(0)?,
                    key_pem: r.get(1)?,
                })
            },
        )?)
    }

    fn append_audit(&self, lines: &[AuditLine]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO audit (event, time_ms) VALUES (?1, ?2)")?;
            for line in lines {
                stmt.execute(params![line.json, line.time_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(millis(ttl));
        // One statement, so concurrent takers (other processes on the same
        // file) cannot both win: the row is inserted, or taken over when
        // expired, or left alone.
        let changed = self.conn().execute(
            "INSERT INTO leases (key, holder, expires_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms
             WHERE leases.expires_ms <= ?4 OR leases.holder = excluded.holder",
            params![key, holder, expires, now],
        )?;
        Ok(changed == 1)
    }

    fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM leases WHERE key = ?1 AND holder = ?2",
            params![key, holder],
        )?;
        Ok(())
    }

    fn login_failures(&self, key: &str) -> Result<Option<FailureRun>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT count, first_ms, last_ms FROM login_failures WHERE key = ?1",
                params![key],
                failure_run,
            )
            .optional()?)
    }

    fn add_login_failure(
        &self,
        key: &str,
        run_length: Duration,
        forget_after: Duration,
    ) -> Result<FailureRun, StoreError> {
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM login_failures WHERE last_ms < ?1",
            params![now.saturating_sub(millis(forget_after))],
        )?;
        // One statement, so replicas counting the same key add up.
        let run = tx.query_row(
            "INSERT INTO login_failures (key, count, first_ms, last_ms) VALUES (?1, 1, ?2, ?2)
             ON CONFLICT(key) DO UPDATE SET
                 count = CASE WHEN first_ms < ?3 THEN 1 ELSE count + 1 END,
                 first_ms = CASE WHEN first_ms < ?3 THEN ?2 ELSE first_ms END,
                 last_ms = ?2
             RETURNING count, first_ms, last_ms",
            params![key, now, now.saturating_sub(millis(run_length))],
            failure_run,
        )?;
        tx.commit()?;
        Ok(run)
    }

    fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM login_failures WHERE key = ?1", params![key])?;
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        // Reads the schema page, so a file gone bad is noticed.
        self.conn()
            .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(())
    }

    fn add_lock(&self, lock: &Lock) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO locks (id, user, message, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![lock.id, lock.user, lock.message, lock.created_ms, lock.expires_ms],
        )?;
        Ok(())
    }

    fn locks(&self, user: Option<&str>) -> Result<Vec<Lock>, StoreError> {
        let conn = self.conn();
        // Expired locks are left in the table (`locks ls` never shows them)
        // and swept when a lock is added.
        let mut stmt = conn.prepare_cached(
            "SELECT id, user, message, created_ms, expires_ms FROM locks
             WHERE (?1 IS NULL OR user = ?1) AND (expires_ms IS NULL OR expires_ms > ?2)
             ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map(params![user, now_ms()], |r| {
            Ok(Lock {
                id: r.get(0)?,
                user: r.get(1)?,
                message: r.get(2)?,
                created_ms: r.get(3)?,
                expires_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn remove_lock(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM locks WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
            [now_ms()],
        )?;
        Ok(conn.execute("DELETE FROM locks WHERE id = ?1", [id])? > 0)
    }

    fn recent_audit(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT event FROM audit ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        out.reverse();
        Ok(out)
    }

    fn audit_since(
        &self,
        since_ms: i64,
        after: Option<AuditPosition>,
        limit: usize,
    ) -> Result<Vec<StoredAudit>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT time_ms, id, event FROM audit
             WHERE time_ms >= ?1 AND (?2 IS NULL OR (time_ms, id) > (?2, ?3))
             ORDER BY time_ms, id LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                since_ms,
                after.map(|a| a.time_ms),
                after.map(|a| a.id),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(StoredAudit {
                    position: AuditPosition {
                        time_ms: r.get(0)?,
                        id: r.get(1)?,
                    },
                    json: r.get(2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM audit WHERE time_ms < ?1", [before_ms])? as u64)
    }

    fn put_cancel_key(&self, key: &CancelRecord) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "INSERT INTO cancel_keys
                 (pid, secret, owner, replica, database, upstream_addr, real_pid, real_secret, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (pid, secret) DO NOTHING",
            params![
                key.client.pid,
                key.client.secret,
                key.owner,
                key.replica,
                key.database,
                key.upstream_addr,
                key.real.pid,
                key.real.secret,
                now_ms()
            ],
        )?;
        Ok(changed == 1)
    }

    fn cancel_key(&self, pid: i32, secret: i32) -> Result<Option<CancelRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT pid, secret, owner, replica, database, upstream_addr, real_pid, real_secret
                 FROM cancel_keys WHERE pid = ?1 AND secret = ?2",
                params![pid, secret],
                cancel_record,
            )
            .optional()?)
    }

    fn remove_cancel_key(&self, pid: i32, secret: i32) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM cancel_keys WHERE pid = ?1 AND secret = ?2",
            params![pid, secret],
        )?;
        Ok(())
    }

    fn remove_replica_cancel_keys(&self, replica: &str) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM cancel_keys WHERE replica = ?1", [replica])? as u64)
    }

    fn accept_totp_step(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        // One statement: of two replicas given the same code, one changes
        // the row and the other finds the step used.
        let changed = self.conn().execute(
            "INSERT INTO totp_steps (user, step) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET step = excluded.step
             WHERE totp_steps.step < excluded.step",
            params![user, step],
        )?;
        Ok(changed == 1)
    }

    fn sso_logins_pending(&self, source: &str) -> Result<PendingCounts, StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM sso_logins WHERE expires_ms <= ?1", [now_ms()])?;
        Ok(conn.query_row(
            "SELECT count(*), coalesce(sum(source = ?1), 0), min(created_ms),
                    min(CASE WHEN source = ?1 THEN created_ms END)
             FROM sso_logins",
            [source],
            |r| {
                Ok(PendingCounts {
                    total: r.get::<_, i64>(0)? as usize,
                    from_source: r.get::<_, i64>(1)? as usize,
                    oldest_ms: r.get(2)?,
                    oldest_from_source_ms: r.get(3)?,
                })
            },
        )?)
    }

    fn put_sso_login(&self, login: &SsoLoginRecord, ttl: Duration) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO sso_logins (id, state, source, created_ms, expires_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                login.id,
                login.state,
                login.source,
                login.created_ms,
                now_ms().saturating_add(millis(ttl)),
                login.body
            ],
        )?;
        Ok(())
    }

    fn take_sso_state(&self, state: &str) -> Result<Option<SsoLoginRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "UPDATE sso_logins SET state = NULL WHERE state = ?1 AND expires_ms > ?2
                     RETURNING {SSO_COLUMNS}"
                ),
                params![state, now_ms()],
                sso_login,
            )
            .optional()?)
    }

    fn update_sso_login(&self, id: &str, body: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        Ok(self.conn().execute(
            "UPDATE sso_logins SET body = ?2, expires_ms = ?3 WHERE id = ?1 AND expires_ms > ?4",
            params![id, body, now.saturating_add(millis(ttl)), now],
        )? == 1)
    }

    fn sso_login(&self, id: &str) -> Result<Option<SsoLoginRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {SSO_COLUMNS} FROM sso_logins WHERE id = ?1 AND expires_ms > ?2"),
                params![id, now_ms()],
                sso_login,
            )
            .optional()?)
    }

    fn fail_sso_login(&self, id: &str, max: u32) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE sso_logins SET failures = failures + 1 WHERE id = ?1",
            [id],
        )?;
        conn.execute(
            "DELETE FROM sso_logins WHERE id = ?1 AND failures >= ?2",
            params![id, max],
        )?;
        Ok(())
    }

    fn take_sso_login(&self, id: &str) -> Result<Option<SsoLoginRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "DELETE FROM sso_logins WHERE id = ?1 AND expires_ms > ?2 RETURNING {SSO_COLUMNS}"
                ),
                params![id, now_ms()],
                sso_login,
            )
            .optional()?)
    }

    fn device_logins_pending(&self, source: &str) -> Result<PendingCounts, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM device_logins WHERE expires_ms <= ?1",
            [now_ms()],
        )?;
        Ok(conn.query_row(
            "SELECT count(*), coalesce(sum(source = ?1), 0), min(created_ms),
                    min(CASE WHEN source = ?1 THEN created_ms END)
             FROM device_logins",
            [source],
            |r| {
                Ok(PendingCounts {
                    total: r.get::<_, i64>(0)? as usize,
                    from_source: r.get::<_, i64>(1)? as usize,
                    oldest_ms: r.get(2)?,
                    oldest_from_source_ms: r.get(3)?,
                })
            },
        )?)
    }

    fn put_device_login(
        &self,
        login: &DeviceLoginRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "INSERT INTO device_logins (id, user_code, source, created_ms, expires_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![
                login.id,
                login.user_code,
                login.source,
                login.created_ms,
                now_ms().saturating_add(millis(ttl)),
                login.body
            ],
        )? == 1)
    }

    fn device_login(&self, id: &str) -> Result<Option<DeviceLoginRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM device_logins WHERE id = ?1 AND expires_ms > ?2"
                ),
                params![id, now_ms()],
                device_login,
            )
            .optional()?)
    }

    fn device_login_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceLoginRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM device_logins
                     WHERE user_code = ?1 AND expires_ms > ?2"
                ),
                params![user_code, now_ms()],
                device_login,
            )
            .optional()?)
    }

    fn replace_device_login(&self, id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE device_logins SET body = ?3 WHERE id = ?1 AND body = ?2 AND expires_ms > ?4",
            params![id, old, new, now_ms()],
        )? == 1)
    }

    fn take_device_login(&self, id: &str) -> Result<Option<DeviceLoginRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "DELETE FROM device_logins WHERE id = ?1 AND expires_ms > ?2
                     RETURNING {DEVICE_COLUMNS}"
                ),
                params![id, now_ms()],
                device_login,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_file_of_an_older_gateway_gets_dated_audit_events() {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join("postern.db"))
            .unwrap()
            .execute_batch(
                r#"CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL);
                   INSERT INTO audit (event) VALUES ('{"time_ms":1700000000000,"event":"login"}');"#,
            )
            .unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let events = store.audit_since(1_700_000_000_000, None, 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].position.time_ms, 1_700_000_000_000);
        drop(store);
        // Opening again changes nothing.
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.audit_since(0, None, 10).unwrap(), events);
    }

    #[test]
    fn sqlite_passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::conformance::run_all(&|| {
            Arc::new(SqliteStore::open(dir.path()).unwrap()) as Arc<dyn Store>
        });
    }
}
