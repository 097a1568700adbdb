//! `parse_startup` on arbitrary bytes: never panics, never claims more than it was given,
//! and what it accepts survives a round trip through the encoders.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern_pgwire::{MAX_STARTUP_PACKET, StartupPacket, frontend, parse_startup};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((packet, consumed))) = parse_startup(data) else {
        return;
    };
    assert!(consumed <= data.len() && consumed <= MAX_STARTUP_PACKET);

    let mut buf = BytesMut::new();
    match &packet {
        // Parsed names and values never hold NUL, so they always encode.
        StartupPacket::Startup { params } => frontend::startup_message(
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut buf,
        )
        .expect("parsed parameters encode"),
        StartupPacket::Cancel { pid, secret } => frontend::cancel_request(*pid, *secret, &mut buf),
        StartupPacket::SslRequest => frontend::ssl_request(&mut buf),
        // No encoder: a proxy never sends GSSENCRequest.
        StartupPacket::GssEncRequest => return,
    }
    assert_eq!(parse_startup(&buf), Ok(Some((packet, buf.len()))));
});
