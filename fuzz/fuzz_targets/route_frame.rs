//! The route frame as the gateway reads it: a length prefix, then a JSON body.
//! Never panics, refuses every length over the limit before the body is read,
//! and a frame it accepts means the same after the client encodes it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_api::{ROUTE_FRAME_MAX, RouteFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&prefix, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = RouteFrame::check_len(prefix) else {
        assert!(u32::from_be_bytes(prefix) as usize > ROUTE_FRAME_MAX);
        return;
    };
    let Ok(frame) = RouteFrame::decode(&body[..len.min(body.len())]) else {
        return;
    };

    let encoded = frame.encode();
    let (prefix, body) = encoded.split_first_chunk::<4>().expect("a length prefix");
    // Omitted fields come back written out (`"db_user":null`), so a frame
    // just under the limit may grow past it: only one still under it must
    // come back.
    if body.len() <= ROUTE_FRAME_MAX {
        assert_eq!(RouteFrame::check_len(*prefix).ok(), Some(body.len()));
        assert_eq!(RouteFrame::decode(body).ok(), Some(frame));
    }
});
