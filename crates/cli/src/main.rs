//! Postern command-line client.
fn main() {}
