//! What TLS resumption saves on the gateway port: the time to open a TLS
//! connection with a session certificate, full handshakes against resumed
//! ones, measured in the same run against the same in-process gateway.
//! Prints figures; never fails on them.
//!
//! `cargo bench -p postern-tests --bench handshake` (needs PostgreSQL 15, as
//! the end-to-end tests do).

use std::time::Duration;

use postern_tests::raw::RawClient;
use postern_tests::stack::Stack;

const ROUNDS: usize = 300;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let stack = Stack::with_dev_users(&["alice"]).await;
        let raw = RawClient::of(&stack, "alice");
        let full = median(&raw, false).await;
        let resumed = median(&raw, true).await;
        println!("TLS connection to the gateway with a session certificate, median of {ROUNDS}:");
        println!("  full handshake     {:>8.0} µs", micros(full));
        println!("  resumed handshake  {:>8.0} µs", micros(resumed));
        println!(
            "  resumed / full     {:>8.2}",
            resumed.as_secs_f64() / full.as_secs_f64()
        );
    });
}

async fn median(raw: &RawClient, resume: bool) -> Duration {
    // The first resuming call makes the full handshake that gets a ticket.
    raw.handshake(resume).await;
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (took, resumed) = raw.handshake(resume).await;
        assert_eq!(resumed, resume, "the handshake kind is what is measured");
        times.push(took);
    }
    times.sort();
    times[ROUNDS / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
