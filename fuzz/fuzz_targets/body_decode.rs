//! Content codings (gzip, deflate: zlib or raw): no input panics, nothing
//! decodes past the inspection limit, and what veto re-encodes after a
//! redaction decodes back to exactly what it encoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veto_proxy::parsers::{Coding, decode_body, encode_body};

const LIMIT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let coding = match pick % 3 {
        0 => Coding::Gzip,
        1 => Coding::Deflate,
        _ => Coding::Identity,
    };
    if let Ok(plain) = decode_body(&coding, raw, LIMIT) {
        assert!(plain.len() <= LIMIT);
    }
    let encoded = encode_body(&coding, raw).unwrap();
    assert_eq!(decode_body(&coding, &encoded, usize::MAX).unwrap(), raw);
});
