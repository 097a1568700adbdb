//! Gateway binary.
fn main() {}
