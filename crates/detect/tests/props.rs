//! Property tests: generated cards are found with exact ranges, Luhn-invalid
//! ones never; redaction removes what it redacts and keeps JSON valid; no
//! input makes any entry point panic.

use proptest::prelude::*;
use veto_detect::{
    BodyKind, ClassId, CustomClass, Detector, Finding, Findings, Part, RequestParts, redact,
    redact_body, redact_json, redact_url,
};

fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Luhn-valid card digits: 13 to 19 digits, first digit 2 to 6.
fn card_digits() -> impl Strategy<Value = Vec<u8>> {
    (13usize..=19, 2u8..=6, prop::collection::vec(0u8..10, 18)).prop_map(|(len, first, rest)| {
        let mut d = vec![first];
        d.extend_from_slice(&rest[..len - 2]);
        let check = luhn_check_digit(&d);
        d.push(check);
        d
    })
}

/// Digits as text, ungrouped or in groups of four joined by `sep`.
fn format(digits: &[u8], sep: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, d) in digits.iter().enumerate() {
        if let Some(s) = sep.filter(|_| i > 0 && i % 4 == 0) {
            out.push(s);
        }
        out.push(b'0' + d);
    }
    out
}

fn separator() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![Just(None), Just(Some(b' ')), Just(Some(b'-'))]
}

/// Bytes that are never an ASCII letter or digit (so they cannot extend a
/// card or form another class around it).
fn filler() -> impl Strategy<Value = Vec<u8>> {
    // Map rather than filter: a filter rejects a quarter of all bytes and
    // long runs hit proptest's reject limit. Letters and digits with the top
    // bit set are non-ASCII bytes, which are never letters or digits here.
    prop::collection::vec(
        any::<u8>().prop_map(|b| {
            if b.is_ascii_alphanumeric() {
                b | 0x80
            } else {
                b
            }
        }),
        0..40,
    )
}

/// Text that exercises the parsers: escapes, quotes, separators, anchors.
fn tricky() -> impl Strategy<Value = Vec<u8>> {
    let atoms: Vec<&'static [u8]> = vec![
        b"\\",
        b"\"",
        b"%",
        b"%4",
        b"+",
        b"@",
        b"-",
        b" ",
        b".",
        b"u",
        b"\\u00",
        b"{",
        b"}",
        b"0",
        b"4",
        b"1",
        b"9",
        b"a",
        b"Z",
        b"DE89",
        b"AKIA",
        b"ghp_",
        b"eyJ",
        b"ewo",
        b"-----BEGIN ",
        b"PRIVATE KEY-----",
        b"github_pat_",
        b"\xc3\xa9",
        b"\xff",
        b"=",
        b"&",
        b"\n",
        b"EMP-",
        b"secret",
    ];
    prop::collection::vec(prop::sample::select(atoms), 0..60).prop_map(|v| v.concat())
}

fn detector() -> Detector {
    Detector::new(&[
        CustomClass::regex("employee-id", r"EMP-[0-9]{6}"),
        CustomClass::regex("word", r"\bse[a-z]+\b"),
        CustomClass::keywords("secret", ["secret", "top secret"]),
    ])
    .unwrap()
}

fn well_formed(f: &Findings, len_of: impl Fn(Part) -> usize) {
    for x in f {
        assert!(x.start < x.end, "empty finding {x:?}");
        assert!(x.end <= len_of(x.part), "finding out of range {x:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_cards_are_found_with_exact_ranges(
        digits in card_digits(), sep in separator(), pre in filler(), post in filler(),
    ) {
        let d = detector();
        let card = format(&digits, sep);
        let hs = [pre.as_slice(), &card, &post].concat();
        let mut f = Findings::new();
        d.scan(&hs, &mut f);
        let want = Finding {
            class: ClassId::CREDIT_CARD,
            start: pre.len(),
            end: pre.len() + card.len(),
            part: Part::Body,
            decoded: false,
        };
        prop_assert_eq!(f.as_slice(), &[want]);
    }

    #[test]
    fn luhn_invalid_cards_are_never_found(
        digits in card_digits(), wrong in 1u8..10, sep in separator(),
        pre in filler(), post in filler(),
    ) {
        let d = detector();
        let mut digits = digits;
        let last = digits.len() - 1;
        digits[last] = (digits[last] + wrong) % 10;
        let hs = [pre.as_slice(), &format(&digits, sep), &post].concat();
        let mut f = Findings::new();
        d.scan(&hs, &mut f);
        prop_assert!(!f.contains(ClassId::CREDIT_CARD), "{:?}", f.as_slice());
    }

    #[test]
    fn redaction_removes_the_value(
        digits in card_digits(), sep in separator(), pre in filler(), post in filler(),
    ) {
        let d = detector();
        let card = format(&digits, sep);
        let hs = [pre.as_slice(), &card, &post].concat();
        let mut f = Findings::new();
        d.scan(&hs, &mut f);
        let out = redact(&hs, f.iter(), &d);
        prop_assert!(!out.windows(card.len()).any(|w| w == card.as_slice()));
        f.clear();
        d.scan(&out, &mut f);
        prop_assert!(!f.contains(ClassId::CREDIT_CARD));
    }

    #[test]
    fn json_escaped_cards_are_found_and_redacted(
        digits in card_digits(), sep in separator(),
        escape in prop::collection::vec(any::<bool>(), 24),
    ) {
        // Write some characters of the card as \u00XX escapes.
        let d = detector();
        let card = format(&digits, sep);
        let mut lit = Vec::new();
        for (i, &c) in card.iter().enumerate() {
            if escape[i % escape.len()] {
                lit.extend_from_slice(format!("\\u{c:04x}").as_bytes());
            } else {
                lit.push(c);
            }
        }
        let body = [br#"{"note":"pay with "#.as_slice(), &lit, br#" today","n":1}"#].concat();
        let parts = RequestParts {
            url: b"/",
            headers: &[(b"content-type", b"application/json")],
            body: &body,
        };
        let mut f = Findings::new();
        d.scan_request(parts, &mut f);
        prop_assert_eq!(f.count(ClassId::CREDIT_CARD), 1, "{:?}", f.as_slice());
        let out = redact_json(&body, f.in_part(Part::Body), &d);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        prop_assert_eq!(&v["note"], "pay with [REDACTED:credit_card] today");
        prop_assert_eq!(&v["n"], 1);
    }

    #[test]
    fn redacted_json_stays_valid(
        values in prop::collection::vec(
            prop_oneof![
                tricky().prop_map(|b| serde_json::Value::from(String::from_utf8_lossy(&b).into_owned())),
                card_digits().prop_map(|d| serde_json::Value::from(String::from_utf8(format(&d, None)).unwrap().parse::<u64>().unwrap())),
                card_digits().prop_map(|d| serde_json::Value::from(String::from_utf8(format(&d, Some(b' '))).unwrap())),
            ],
            0..6,
        ),
    ) {
        let d = Detector::new(&[]).unwrap();
        let body = serde_json::to_vec(&serde_json::json!({ "v": values })).unwrap();
        let mut f = Findings::new();
        d.scan_body(&body, BodyKind::Json, &mut f);
        let out = redact_json(&body, f.iter(), &d);
        prop_assert!(
            serde_json::from_slice::<serde_json::Value>(&out).is_ok(),
            "{} -> {}", String::from_utf8_lossy(&body), String::from_utf8_lossy(&out)
        );
        f.clear();
        d.scan_body(&out, BodyKind::Json, &mut f);
        prop_assert!(f.iter().all(|x| x.class != ClassId::CREDIT_CARD), "{:?}", f.as_slice());
    }

    #[test]
    fn redacted_output_has_nothing_left(
        a in tricky(), digits in card_digits(), b in tricky(),
    ) {
        // Sensitive values mixed into parser-hostile text: after redacting
        // every finding, a rescan finds none of the built-in classes.
        let d = Detector::new(&[]).unwrap();
        let hs = [a.as_slice(), b" ", &format(&digits, None), b" ", &b].concat();
        let mut f = Findings::new();
        d.scan(&hs, &mut f);
        let out = redact(&hs, f.iter(), &d);
        f.clear();
        d.scan(&out, &mut f);
        prop_assert!(f.is_empty(), "{:?} -> {:?}: {:?}",
            String::from_utf8_lossy(&hs), String::from_utf8_lossy(&out), f.as_slice());
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes(
        a in prop::collection::vec(any::<u8>(), 0..300),
        b in tricky(),
        c in tricky(),
    ) {
        let d = detector();
        for (url, body) in [(&a, &b), (&b, &c), (&c, &a)] {
            for ct in [&b"application/json"[..], b"application/x-www-form-urlencoded", b"x"] {
                let headers: &[(&[u8], &[u8])] = &[(b"content-type", ct), (b"x", body)];
                let parts = RequestParts { url, headers, body };
                let mut f = Findings::new();
                d.scan_request(parts, &mut f);
                well_formed(&f, |p| match p {
                    Part::Url => url.len(),
                    Part::Header(0) => ct.len(),
                    Part::Header(_) | Part::Body => body.len(),
                });
                let kind = BodyKind::from_content_type(ct);
                let _ = redact_url(url, f.in_part(Part::Url), &d);
                let _ = redact(body, f.in_part(Part::Header(1)), &d);
                let _ = redact_body(kind, body, f.in_part(Part::Body), &d);
                for k in [BodyKind::Json, BodyKind::Form, BodyKind::Other] {
                    let _ = redact_body(k, body, f.iter(), &d);
                }
            }
        }
    }
}
