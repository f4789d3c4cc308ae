//! The forwarded request target: no input panics, and what is forwarded
//! is in normal form (accepted by `normalize: refuse`, unchanged by a
//! second pass) and decided exactly as the original would be.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veto_policy::{EscapedSlashes, Normalize, PathRules, forward_target, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = std::str::from_utf8(data) else { return };
    for slashes in [EscapedSlashes::Refuse, EscapedSlashes::Keep, EscapedSlashes::Decode] {
        let rules = PathRules { normalize: Normalize::Forward, escaped_slashes: slashes };
        let Ok(f) = forward_target(t, &rules) else { continue };
        assert_eq!(forward_target(&f, &rules).unwrap(), f);
        let strict = PathRules { normalize: Normalize::Refuse, ..rules };
        assert!(forward_target(&f, &strict).is_ok());
        if slashes != EscapedSlashes::Decode {
            assert_eq!(normalize_path(&f), normalize_path(t));
        }
    }
});
