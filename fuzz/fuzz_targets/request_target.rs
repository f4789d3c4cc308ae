//! The forwarded request target: no input panics, and what is forwarded
//! is in normal form (accepted by `normalize: refuse`, unchanged by a
//! second pass) and, where encoded slashes are refused, decided exactly as
//! the original would be.
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
        // Without encoded slashes (refused), the forwarded target is read
        // by the rules exactly as the original would be. With `keep` or
        // `decode` the two readings may differ where a `..` follows an
        // encoded slash (`keep` makes it part of a segment the `..`
        // removes whole): what is decided is still what is forwarded (the
        // rules read `f`, the form that goes out), which is the guarantee.
        if slashes == EscapedSlashes::Refuse {
            assert_eq!(normalize_path(&f), normalize_path(t));
        }
    }
});
