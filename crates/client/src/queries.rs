//! Running queries: list the caller's statements, cancel or terminate one,
//! and the opt-in runaway guard. Everything runs through a tunnel as the same
//! database user, so it can never touch what the user could not.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

use crate::error::ClientError;
use crate::tunnel::TunnelAddr;

/// One running statement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunningQuery {
    /// Backend process id (Redshift: session id).
    pub pid: i32,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Start of the statement, seconds since the Unix epoch.
    pub started_unix: f64,
    /// How long it has been running.
    pub duration_ms: f64,
    /// `active`, `idle in transaction`, ... (Redshift: `running`).
    pub state: String,
    /// What it waits on, if anything.
    pub wait_event: Option<String>,
    /// Statement text, trimmed to [`QUERY_TEXT_MAX`] characters.
    pub query: String,
}

/// `application_name` of helper connections.
const HELPER_APP: &str = "postern query helper";

/// Longest statement text shown.
pub const QUERY_TEXT_MAX: usize = 200;

/// Which system view tells what runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL and RDS: `pg_stat_activity`.
    Postgres,
    /// Redshift: `SYS_QUERY_HISTORY` where status is running.
    Redshift,
}

impl Dialect {
    /// The dialect of a catalog entry's kind.
    pub fn for_kind(kind: &str) -> Self {
        if kind.starts_with("redshift") {
            Dialect::Redshift
        } else {
            Dialect::Postgres
        }
    }

    fn list_sql(self) -> &'static str {
        match self {
            // Helper connections (this one, a guard's) are left out: they
            // are not the user's work.
            Dialect::Postgres => {
                "SELECT pid, usename::text, datname::text, \
                        extract(epoch FROM query_start)::float8, \
                        (extract(epoch FROM clock_timestamp() - query_start) * 1000)::float8, \
                        state, wait_event, query \
                 FROM pg_stat_activity \
                 WHERE usename = current_user AND pid <> pg_backend_pid() \
                   AND application_name IS DISTINCT FROM 'postern query helper' \
                   AND backend_type = 'client backend' \
                   AND state IS NOT NULL AND state <> 'idle' \
                 ORDER BY query_start"
            }
            Dialect::Redshift => {
                "SELECT session_id, trim(user_id::text), trim(database_name), \
                        extract(epoch FROM start_time)::float8, \
                        (datediff(microsecond, start_time, getdate()) / 1000.0)::float8, \
                        trim(status), NULL::text, trim(query_text) \
                 FROM sys_query_history \
                 WHERE status = 'running' AND session_id <> pg_backend_pid() \
                 ORDER BY start_time"
            }
        }
    }
}

/// A connection for the helper, made through a running tunnel.
pub struct QueryHelper {
    client: Client,
    dialect: Dialect,
}

/// What a cancel achieved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The statement stopped; the session lives on.
    Cancelled,
    /// The backend ended.
    Terminated,
    /// The request was sent but the statement was still running after waiting.
    StillRunning,
}

impl QueryHelper {
    /// Connects through the tunnel at `addr` (the tunnel supplies the db user
    /// and database; `db_name` overrides the database if given).
    pub async fn connect(
        addr: &TunnelAddr,
        db_name: Option<&str>,
        dialect: Dialect,
    ) -> Result<Self, ClientError> {
        let mut config = tokio_postgres::Config::new();
        match addr {
            TunnelAddr::Tcp(a) => config.host(a.ip().to_string()),
            #[cfg(unix)]
            TunnelAddr::Socket { dir, .. } => config.host_path(dir),
            #[cfg(not(unix))]
            TunnelAddr::Socket { .. } => return Err(ClientError::NoUnixSockets),
        };
        config
            .port(addr.port())
            .user("postern")
            .application_name(HELPER_APP)
            .connect_timeout(Duration::from_secs(20));
        if let Some(name) = db_name {
            config.dbname(name);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(db_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "query helper connection ended");
            }
        });
        Ok(QueryHelper { client, dialect })
    }

    /// The caller's running statements, oldest first.
    pub async fn list(&self) -> Result<Vec<RunningQuery>, ClientError> {
        let rows = self
            .client
            .query(self.dialect.list_sql(), &[])
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| RunningQuery {
                pid: r.get(0),
                user: r.get::<_, Option<String>>(1).unwrap_or_default(),
                database: r.get::<_, Option<String>>(2).unwrap_or_default(),
                started_unix: r.get::<_, Option<f64>>(3).unwrap_or_default(),
                duration_ms: r.get::<_, Option<f64>>(4).unwrap_or_default(),
                state: r.get::<_, Option<String>>(5).unwrap_or_default(),
                wait_event: r.get(6),
                query: trim_query(&r.get::<_, Option<String>>(7).unwrap_or_default()),
            })
            .collect())
    }

    /// Cancels (or terminates) one of the caller's statements and reports
    /// whether it took effect. A pid that is not the caller's, or no longer
    /// runs, is refused with a sentence that says so.
    pub async fn cancel(&self, pid: i32, terminate: bool) -> Result<CancelOutcome, ClientError> {
        let before = self.list().await?;
        let Some(target) = before.iter().find(|q| q.pid == pid) else {
            return Err(ClientError::NotYourStatement(pid));
        };
        let function = if terminate {
            "pg_terminate_backend"
        } else {
            "pg_cancel_backend"
        };
        let row = self
            .client
            .query_one(&format!("SELECT {function}($1)"), &[&pid])
            .await
            .map_err(db_error)?;
        if !row.get::<_, bool>(0) {
            return Err(ClientError::NotSignalled(pid));
        }
        // Wait until the statement is gone or replaced, so "done" means done.
        for _ in 0..50 {
            let now = self.list().await?;
            match now.iter().find(|q| q.pid == pid) {
                None if terminate => return Ok(CancelOutcome::Terminated),
                None => return Ok(CancelOutcome::Cancelled),
                Some(q)
                    if !terminate
                        && (q.state != target.state || q.started_unix != target.started_unix) =>
                {
                    return Ok(CancelOutcome::Cancelled);
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(CancelOutcome::StillRunning)
    }
}

fn trim_query(q: &str) -> String {
    let flat: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(QUERY_TEXT_MAX) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

fn db_error(e: tokio_postgres::Error) -> ClientError {
    // The tunnel and gateway phrase their own errors for people; pass them on.
    match e.as_db_error() {
        Some(db) => ClientError::Gateway(db.message().to_owned()),
        None => ClientError::Gateway(format!("the query helper lost its connection: {e}")),
    }
}

/// Runaway-guard thresholds (each optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Notify about statements running longer than this.
    pub warn_after: Option<Duration>,
    /// Cancel statements running longer than this.
    pub cancel_after: Option<Duration>,
}

impl GuardPolicy {
    /// True when the guard has something to do.
    pub fn is_active(&self) -> bool {
        self.warn_after.is_some() || self.cancel_after.is_some()
    }

    /// How often the guard looks: often enough to act within about a tenth
    /// of the shortest threshold, but at most once a second and at least
    /// every 10 seconds.
    pub fn interval(&self) -> Duration {
        let shortest = [self.warn_after, self.cancel_after]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(10));
        (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// What the guard did.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardEvent {
    /// A statement passed the warning threshold (reported once per statement).
    Warned(RunningQuery),
    /// A statement passed the cancel threshold and was cancelled.
    Cancelled(RunningQuery),
    /// The guard could not look (it keeps trying).
    Failed(String),
}

/// Watches one tunnel with one catalog query per interval, whatever the
/// number of connections. Runs until `events` is closed.
pub async fn run_guard(helper: QueryHelper, policy: GuardPolicy, events: mpsc::Sender<GuardEvent>) {
    let mut warned: HashSet<(i32, u64)> = HashSet::new();
    let mut tick = tokio::time::interval(policy.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let running = match helper.list().await {
            Ok(r) => r,
            Err(e) => {
                if events
                    .send(GuardEvent::Failed(e.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let mut seen = HashSet::new();
        for q in running
            .into_iter()
            .filter(|q| q.state == "active" || q.state == "running")
        {
            let key = (q.pid, q.started_unix.to_bits());
            seen.insert(key);
            let age = Duration::from_secs_f64(q.duration_ms.max(0.0) / 1000.0);
            let event = if policy.cancel_after.is_some_and(|limit| age >= limit) {
                match helper
                    .client
                    .query_one("SELECT pg_cancel_backend($1)", &[&q.pid])
                    .await
                {
                    Ok(_) => GuardEvent::Cancelled(q),
                    Err(e) => {
                        GuardEvent::Failed(format!("cancelling process {}: {}", q.pid, db_error(e)))
                    }
                }
            } else if policy.warn_after.is_some_and(|limit| age >= limit) && warned.insert(key) {
                GuardEvent::Warned(q)
            } else {
                continue;
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
        // Forget statements that ended so the set stays small.
        warned.retain(|k| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_statements_are_flattened_and_trimmed() {
        let long = format!("select\n  {}", "x, ".repeat(200));
        let t = trim_query(&long);
        assert!(t.starts_with("select x, x,"));
        assert_eq!(t.chars().count(), QUERY_TEXT_MAX + 1);
        assert!(t.ends_with('…'));
        assert_eq!(trim_query("select  1"), "select 1");
    }

    #[test]
    fn guard_interval_follows_the_shortest_threshold() {
        let p = GuardPolicy {
            warn_after: Some(Duration::from_secs(30)),
            cancel_after: Some(Duration::from_secs(300)),
        };
        assert_eq!(p.interval(), Duration::from_secs(3));
        let fast = GuardPolicy {
            warn_after: None,
            cancel_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(fast.interval(), Duration::from_secs(1));
        assert!(!GuardPolicy::default().is_active());
    }
}
