//! Measures the tunnel's owner check: how long tracing one accepted
//! loopback connection to its OS user takes, with a realistic number of
//! other sockets open (the lookup reads the kernel's socket table).
//!
//! `cargo run --release -p postern-client --example owner_check [SOCKETS]`
//! prints microseconds per check; `scripts/bench` reports the figure.

use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use postern_client::owner::Owner;

fn main() -> std::io::Result<()> {
    let others: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Other open connections (a desktop has browsers, agents, ...), each
    // listed twice in the table: client and server end.
    let mut keep = Vec::with_capacity(others * 2);
    for _ in 0..others {
        keep.push(TcpStream::connect(addr)?);
        keep.push(listener.accept()?.0);
    }
    // The connection checked is the newest, so it is listed last: the worst case.
    let _client = TcpStream::connect(addr)?;
    let (server, peer) = listener.accept()?;
    let local = server.local_addr()?;
    let owner = Owner::current();
    owner
        .check_tcp(local, peer)
        .map_err(std::io::Error::other)?;
    let rounds = 2_000;
    let start = Instant::now();
    for _ in 0..rounds {
        owner
            .check_tcp(local, peer)
            .map_err(std::io::Error::other)?;
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!(
        "{micros:.1} µs per owner check ({} other loopback sockets open)",
        others * 2
    );
    Ok(())
}
