//! Host patterns and host normalisation: no panics, and a pattern that
//! parses always matches the host it names (after normalisation).
#![no_main]
use libfuzzer_sys::fuzz_target;
use veto_policy::{normalize_host, Host, HostPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, host) = text.split_once('\n').unwrap_or((text, text));
    let parsed = HostPattern::parse(pattern);
    let normal = normalize_host(host);
    if let (Ok(p), Ok(h)) = (&parsed, &normal) {
        let _ = p.matches(h.as_ref());
    }
    if let Ok(HostPattern::Exact(name)) = &parsed {
        let h = normalize_host(name).expect("an exact pattern is a valid host");
        assert!(matches!(&h, Host::Name(_)));
        assert!(HostPattern::parse(pattern).unwrap().matches(h.as_ref()));
    }
});
