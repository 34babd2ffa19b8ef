//! The event-stream parser on arbitrary chunks: never panics, and the events do not depend on
//! how the bytes were split.
#![no_main]

use grantfs::client::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, the rest is the stream.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let size = usize::from(split % 64) + 1;
    let mut chunked = SseParser::default();
    let mut a = Vec::new();
    for chunk in stream.chunks(size) {
        a.extend(chunked.push(chunk));
    }
    let mut whole = SseParser::default();
    let b = whole.push(stream);
    assert_eq!(a, b, "events depend on chunking (size {size})");
});
