//! The HTTP/1 head guard and chunked framing: no input panics; a head it
//! passes is no longer than the input, and a chunked end lies inside it.
//! The request-line classifier for tunnels and the body's `_method` reader
//! never panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veto_proxy::parsers::{body_method, chunked_end, head_verdict, http_start};

fuzz_target!(|data: &[u8]| {
    if let Some(Ok(n)) = head_verdict(data, 100, 65536) {
        assert!(n <= data.len());
    }
    if let Ok(Some(n)) = chunked_end(data) {
        assert!(n <= data.len());
    }
    // A tunnel's first bytes and a body's `_method`: never a panic.
    let _ = http_start(data);
    let _ = body_method(data);
});
