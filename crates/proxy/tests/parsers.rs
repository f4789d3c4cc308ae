//! The parsers that face the network, as property tests: the same
//! properties the fuzz targets (`fuzz/fuzz_targets/`) check, so CI runs
//! them without a fuzzer. No input panics, and what they accept is read
//! the same however the bytes are cut up.

use proptest::prelude::*;
use veto_proxy::parsers::{
    Coding, Hello, Start, body_method, chunked_end, client_hello, decode_body, encode_body,
    head_verdict, http_start, sample_hello,
};

fn hello(sni: &str, size: usize, extra: &[u8]) -> Vec<u8> {
    sample_hello(Some(sni), size.max(1), extra)
}

proptest! {
    #[test]
    fn client_hello_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = client_hello(&b);
        let mut tls = vec![22, 3, 1];
        tls.extend(&b);
        let _ = client_hello(&tls);
    }

    #[test]
    fn a_hello_is_read_whole_however_it_is_split(
        sni in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,10}){0,3}",
        size in 1usize..300,
        extra in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let h = hello(&sni, size, &extra);
        prop_assert_eq!(client_hello(&h), Hello::Tls(Some(sni.clone())));
        for cut in [0, 1, 5, h.len() / 2, h.len() - 1] {
            prop_assert_eq!(client_hello(&h[..cut]), Hello::Partial);
        }
        // Bytes after the hello (the client's next flight) change nothing.
        let mut more = h.clone();
        more.extend([23, 3, 3, 0, 1, 0]);
        prop_assert_eq!(client_hello(&more), Hello::Tls(Some(sni)));
    }

    #[test]
    fn chunked_framing_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = chunked_end(&b);
    }

    #[test]
    fn a_chunked_body_ends_where_it_ends(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6),
        after in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut body = Vec::new();
        for c in &chunks {
            body.extend(format!("{:x}\r\n", c.len()).bytes());
            body.extend(c);
            body.extend(b"\r\n");
        }
        body.extend(b"0\r\n\r\n");
        let end = body.len();
        body.extend(&after);
        prop_assert_eq!(chunked_end(&body), Ok(Some(end)));
        prop_assert_eq!(chunked_end(&body[..end - 1]), Ok(None));
    }

    #[test]
    fn heads_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = head_verdict(&b, 100, 65536);
        let mut req = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        req.extend(&b);
        req.extend(b"\r\n\r\n");
        let _ = head_verdict(&req, 100, 65536);
    }

    #[test]
    fn a_head_with_both_framings_is_always_refused(
        cl in 0u32..100000,
        te in "(chunked|gzip, chunked|identity)",
        order in any::<bool>(),
    ) {
        let (a, b) = (format!("Content-Length: {cl}\r\n"), format!("Transfer-Encoding: {te}\r\n"));
        let fields = if order { a + &b } else { b + &a };
        let head = format!("POST http://a/ HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        prop_assert_eq!(head_verdict(head.as_bytes(), 100, 65536), Some(Err(400)));
    }

    #[test]
    fn a_forwarded_target_is_normal_and_stays_so(t in "/[a-zA-Z0-9%./\\\\;_~?=&-]{0,60}") {
        use veto_policy::{PathRules, forward_target, normalize_path, Normalize};
        if let Ok(f) = forward_target(&t, &PathRules::default()) {
            let path = f.split('?').next().unwrap_or("");
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.contains("//"), "{f}");
            prop_assert!(!path.split('/').any(|s| s == "." || s == ".."), "{f}");
            // Normal once, normal for good: the strict setting accepts it,
            // and deciding on it matches deciding on the original.
            let again = forward_target(&f, &PathRules::default()).unwrap();
            prop_assert_eq!(&again, &f);
            let strict = PathRules { normalize: Normalize::Refuse, ..PathRules::default() };
            prop_assert!(forward_target(&f, &strict).is_ok(), "{f}");
            prop_assert_eq!(normalize_path(&f), normalize_path(&t));
        }
    }

    #[test]
    fn body_codings_never_panic_and_round_trip(
        pick in 0u8..3,
        raw in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let coding = [Coding::Gzip, Coding::Deflate, Coding::Identity][pick as usize].clone();
        if let Ok(plain) = decode_body(&coding, &raw, 4096) {
            prop_assert!(plain.len() <= 4096);
        }
        let encoded = encode_body(&coding, &raw).unwrap();
        prop_assert_eq!(decode_body(&coding, &encoded, usize::MAX).unwrap(), raw);
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit(n in 1usize..64) {
        let plain = vec![b'a'; n * 100_000];
        let bomb = encode_body(&Coding::Gzip, &plain).unwrap();
        let err = decode_body(&Coding::Gzip, &bomb, 65_536).unwrap_err();
        prop_assert!(err.contains("inspection limit"), "{}", err);
    }

    #[test]
    fn body_overrides_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = body_method(&b);
        let _ = http_start(&b);
    }

    #[test]
    fn a_method_in_a_body_is_found_however_it_is_sent(
        m in "[A-Za-z]{1,10}",
        before in "[a-z]{0,8}=[a-z0-9]{0,8}",
        form in 0u8..3,
    ) {
        let body = match form {
            0 => format!("{before}&_method={m}&x=1"),
            1 => format!("--B\r\nContent-Disposition: form-data; name=\"{before}\"\r\n\r\nv\r\n--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n{m}\r\n--B--\r\n"),
            _ => format!("{{\"a\": 1, \"_method\": \"{m}\"}}"),
        };
        prop_assert_eq!(body_method(body.as_bytes()).unwrap(), Some(m.to_ascii_uppercase()));
    }

    #[test]
    fn a_request_line_is_http_however_it_is_cut(
        method in "[A-Z]{3,7}",
        path in "/[a-z0-9/]{0,20}",
        cut in 0usize..40,
    ) {
        let line = format!("{method} {path} HTTP/1.1\r\n");
        let b = line.as_bytes();
        prop_assert_eq!(http_start(b), Start::Yes);
        let cut = cut.min(b.len() - 2).max(1);
        prop_assert!(matches!(http_start(&b[..cut]), Start::Maybe | Start::Yes), "{}", &line[..cut]);
    }
}
