//! Waiting for something to become true: [`eventually`], the one polling
//! loop of the tests (STYLE.md: wait on the event, never sleep then assert).

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`eventually`] rests between two looks.
const POLL: Duration = Duration::from_millis(50);

/// [`eventually`] gave up: what the last look saw, and how long it looked.
#[derive(Debug, thiserror::Error)]
#[error("not within {within:?}; last seen: {last}")]
pub struct TimedOut<E: Display> {
    /// The time allowed.
    pub within: Duration,
    /// What the last look found instead of the awaited state.
    pub last: E,
}

/// Looks with `probe` until it returns `Ok`, at most for `within`, and
/// returns that value; a probe returns `Err` with what it saw instead, which
/// the [`TimedOut`] of the last look carries.
///
/// A probe that must stop looking early (the process it waits for exited)
/// returns `Ok` with a value that says so.
pub async fn eventually<T, E: Display>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, TimedOut<E>> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(TimedOut { within, last }),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
