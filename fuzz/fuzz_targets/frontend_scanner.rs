//! `FrontendScanner` over arbitrary bytes split at an arbitrary point: never panics,
//! the split changes neither the events nor the verdict (nor a cut text's
//! length and digest), and only a text longer than the cap is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_pgwire::{FrontendEvent, FrontendScanner};

const MAX_MESSAGE: usize = 1 << 16;
const QUERY_CAP: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the split point; the rest is the stream.
    let Some((&[hi, lo], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_be_bytes([hi, lo])) % (stream.len() + 1);

    let mut whole = Vec::new();
    let whole_result = FrontendScanner::new(MAX_MESSAGE, QUERY_CAP).feed(stream, &mut whole);

    let mut scanner = FrontendScanner::new(MAX_MESSAGE, QUERY_CAP);
    let mut split_events = Vec::new();
    let (a, b) = stream.split_at(split);
    let split_result = scanner
        .feed(a, &mut split_events)
        .and_then(|()| scanner.feed(b, &mut split_events));

    assert_eq!(whole_result, split_result);
    assert_eq!(whole, split_events);
    for event in &whole {
        if let FrontendEvent::Query(query) | FrontendEvent::Parse { query, .. } = event
            && let Some(cut) = &query.cut
        {
            assert!(cut.len > QUERY_CAP, "{event:?}");
        }
    }
});
