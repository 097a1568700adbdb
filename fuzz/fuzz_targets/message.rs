//! `parse_message` with a small limit over a stream of arbitrary bytes, decoding every
//! complete message as a backend message: never panics, framing stays consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_pgwire::{BackendMessage, parse_message};

const MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, consumed))) = parse_message(rest, MAX) {
        assert_eq!(consumed, 5 + msg.body.len());
        assert!(consumed <= rest.len() && msg.body.len() <= MAX);
        let _ = BackendMessage::decode(&msg);
        rest = &rest[consumed..];
    }
});
