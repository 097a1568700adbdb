//! Times each statement and each idle transaction of a session against the
//! role limits `max_statement_duration` and `max_idle_in_transaction`.
//!
//! A statement runs from the client's request (a `Query`, a `FunctionCall`
//! or the first message of an extended-protocol batch) until the database's
//! ReadyForQuery answers it; COPY and long result streams are part of it.
//! Between a ReadyForQuery whose status is `T` or `E` and the client's next
//! request, the session is idle inside a transaction. The relay feeds the
//! clock what it sees in both directions; one timer per session is reset on
//! each change, and [`StatementClock::overrun`] waits for it.

use std::sync::Mutex;
use std::time::Duration;

use postern_pgwire::{ErrorFields, Ready, Requests};
use tokio::sync::Notify;
use tokio::time::Instant;

/// SQLSTATE `warning`.
const WARNING: &str = "01000";
/// SQLSTATE `idle_in_transaction_session_timeout`, as PostgreSQL's own
/// limit reports it.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";

/// The two limits a session runs under; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatementLimits {
    /// Longest a statement may run before it is cancelled.
    pub statement: Option<Duration>,
    /// Longest a session may stay idle inside a transaction.
    pub idle_in_transaction: Option<Duration>,
}

/// A limit the session went past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overrun {
    /// The running statement passed `max_statement_duration`; it is not
    /// reported again.
    Statement(Duration),
    /// The session stayed idle in a transaction for `max_idle_in_transaction`.
    IdleInTransaction(Duration),
}

impl Overrun {
    /// The role option that set the limit, as the audit names it.
    pub fn rule(self) -> &'static str {
        match self {
            Overrun::Statement(_) => "max_statement_duration",
            Overrun::IdleInTransaction(_) => "max_idle_in_transaction",
        }
    }

    /// The limit, as role files write it (e.g. `10m`).
    pub fn limit(self) -> String {
        let (Overrun::Statement(limit) | Overrun::IdleInTransaction(limit)) = self;
        humantime::format_duration(limit).to_string()
    }

    /// What the client is told: a warning before the statement is
    /// cancelled, or the FATAL error that ends an idle transaction.
    pub fn fields(self) -> ErrorFields {
        let limit = self.limit();
        match self {
            Overrun::Statement(_) => ErrorFields::warning(
                WARNING,
                format!("postern: cancelling this statement: your role allows {limit}"),
            ),
            Overrun::IdleInTransaction(_) => ErrorFields::fatal(
                IDLE_IN_TRANSACTION_TIMEOUT,
                format!(
                    "postern: ending this session: it stayed idle inside a transaction for {limit}, the most your role allows; the transaction was rolled back"
                ),
            )
            .with_hint("Commit or roll back transactions promptly: an open transaction holds its locks."),
        }
    }
}

/// Follows one session's statements; shared by the relay's two directions.
#[derive(Debug)]
pub struct StatementClock {
    limits: StatementLimits,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests the database has not answered with ReadyForQuery yet.
    awaiting_ready: u32,
    /// An extended-protocol batch is open (its Sync is still to come).
    batch_open: bool,
    /// Transaction status of the last ReadyForQuery.
    status: u8,
    /// When the running statement began, or the session became idle.
    since: Instant,
    /// The running statement was reported as an overrun already.
    reported: bool,
}

impl State {
    fn running(&self) -> bool {
        self.awaiting_ready > 0 || self.batch_open
    }

    /// When the next limit is passed, and which.
    fn deadline(&self, limits: &StatementLimits) -> Option<(Instant, Overrun)> {
        if self.running() {
            let limit = limits.statement.filter(|_| !self.reported)?;
            Some((self.since + limit, Overrun::Statement(limit)))
        } else if matches!(self.status, b'T' | b'E') {
            let limit = limits.idle_in_transaction?;
            Some((self.since + limit, Overrun::IdleInTransaction(limit)))
        } else {
            None
        }
    }
}

impl StatementClock {
    /// A clock for a session that has just been greeted (idle, outside a
    /// transaction).
    pub fn new(limits: StatementLimits) -> Self {
        StatementClock {
            limits,
            state: Mutex::new(State {
                awaiting_ready: 0,
                batch_open: false,
                status: b'I',
                since: Instant::now(),
                reported: false,
            }),
            changed: Notify::new(),
        }
    }

    fn is_off(&self) -> bool {
        self.limits == StatementLimits::default()
    }

    /// Notes what the client sent in a chunk.
    pub fn client(&self, requests: Requests) {
        if self.is_off() {
            return;
        }
        let mut state = self.lock();
        let was_running = state.running();
        state.awaiting_ready += requests.awaiting_ready;
        state.batch_open = requests.batch_open;
        // Only the start of a statement moves the deadline.
        if !was_running && state.running() {
            state.since = Instant::now();
            state.reported = false;
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Notes the ReadyForQuery messages the database sent in a chunk: a
    /// statement ended (and the next pipelined one, if any, begins).
    pub fn server(&self, ready: Ready) {
        if self.is_off() {
            return;
        }
        let mut state = self.lock();
        state.awaiting_ready = state.awaiting_ready.saturating_sub(ready.count);
        state.status = ready.status;
        state.since = Instant::now();
        state.reported = false;
        drop(state);
        self.changed.notify_one();
    }

    /// Waits until the session passes one of its limits; never returns for
    /// a session without limits.
    pub async fn overrun(&self) -> Overrun {
        if self.is_off() {
            return std::future::pending().await;
        }
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            // Registered before the state is read, so no change is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = self.lock().deadline(&self.limits);
            let Some((at, _)) = deadline else {
                changed.await;
                continue;
            };
            sleep.as_mut().reset(at);
            tokio::select! {
                () = &mut changed => continue,
                () = &mut sleep => {}
            }
            let mut state = self.lock();
            match state.deadline(&self.limits) {
                Some((at, overrun)) if at <= Instant::now() => {
                    if let Overrun::Statement(_) = overrun {
                        state.reported = true;
                    }
                    return overrun;
                }
                _ => continue,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StatementLimits = StatementLimits {
        statement: Some(Duration::from_secs(10)),
        idle_in_transaction: Some(Duration::from_secs(60)),
    };

    fn query() -> Requests {
        Requests {
            awaiting_ready: 1,
            batch_open: false,
        }
    }

    fn ready(status: u8) -> Ready {
        Ready { count: 1, status }
    }

    /// Whether `overrun` reports within `wait`.
    async fn overrun_within(clock: &StatementClock, wait: Duration) -> Option<Overrun> {
        tokio::time::timeout(wait, clock.overrun()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_statement_is_reported_once() {
        let clock = StatementClock::new(LIMITS);
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(3600)).await,
            None
        );
        clock.client(query());
        let started = Instant::now();
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(11)).await,
            Some(Overrun::Statement(Duration::from_secs(10)))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(3600)).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_statement_has_its_own_time() {
        let clock = StatementClock::new(LIMITS);
        for _ in 0..5 {
            clock.client(query());
            assert_eq!(overrun_within(&clock, Duration::from_secs(6)).await, None);
            clock.server(ready(b'I'));
        }
        // Two pipelined queries: the second's time starts at the first's end.
        clock.client(Requests {
            awaiting_ready: 2,
            batch_open: false,
        });
        tokio::time::advance(Duration::from_secs(6)).await;
        clock.server(ready(b'I'));
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(11)).await,
            Some(Overrun::Statement(Duration::from_secs(10)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_batch_runs_until_its_ready_for_query() {
        let clock = StatementClock::new(LIMITS);
        clock.client(Requests {
            awaiting_ready: 0,
            batch_open: true,
        });
        assert!(
            overrun_within(&clock, Duration::from_secs(11))
                .await
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_idleness_inside_a_transaction_counts() {
        let clock = StatementClock::new(LIMITS);
        clock.client(query());
        clock.server(ready(b'I'));
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(3600)).await,
            None
        );
        clock.client(query());
        clock.server(ready(b'T'));
        tokio::time::advance(Duration::from_secs(50)).await;
        // A request in time resets it.
        clock.client(query());
        clock.server(ready(b'E'));
        assert_eq!(overrun_within(&clock, Duration::from_secs(59)).await, None);
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(2)).await,
            Some(Overrun::IdleInTransaction(Duration::from_secs(60)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_limits_nothing_is_reported() {
        let clock = StatementClock::new(StatementLimits::default());
        clock.client(query());
        assert_eq!(
            overrun_within(&clock, Duration::from_secs(3600)).await,
            None
        );
    }
}
