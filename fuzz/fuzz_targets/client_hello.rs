//! The ClientHello reader (tunnel classification, SNI): no input panics,
//! and a hello it reads names the same host whatever follows it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veto_proxy::parsers::{Hello, client_hello};

fuzz_target!(|data: &[u8]| {
    let got = client_hello(data);
    if let Hello::Tls(name) = &got {
        let mut more = data.to_vec();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(&client_hello(&more), &Hello::Tls(name.clone()));
    }
});
