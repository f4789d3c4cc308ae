//! Property tests: generated cards are found with exact ranges, Luhn-invalid
//! ones never; redaction removes what it redacts and keeps JSON valid; a
//! value hidden behind an encoding is found as the plain one; no input
//! makes any entry point panic.

use proptest::prelude::*;
use veto_detect::{
    BodyKind, BodyType, ClassId, CustomClass, Detector, Finding, Findings, Part, RequestParts,
    redact, redact_body, redact_json, redact_typed_body, redact_url,
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
            opaque: None,
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
            let types: [&[u8]; 6] = [
                b"application/json",
                b"application/x-www-form-urlencoded",
                b"x",
                b"multipart/form-data; boundary=-",
                b"multipart/mixed; boundary=a",
                b"application/json; charset=utf-16",
            ];
            for ct in types {
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
                let ty = BodyType::from_content_type(Some(ct), body);
                let _ = redact_typed_body(ty, body, f.in_part(Part::Body), &d);
                // Each part of a multipart body, and its base64 and
                // quoted-printable forms, through the same entry points.
                let wrapped = [
                    &b"--a\r\nContent-Transfer-Encoding: base64\r\n\r\n"[..], body,
                    b"\r\n--a\r\ncontent-transfer-encoding: quoted-printable\r\ncontent-type: application/json\r\n\r\n", body,
                    b"\r\n--a\r\n\r\n", url, b"\r\n--a--",
                ].concat();
                let ty = BodyType::from_content_type(Some(b"multipart/mixed; boundary=a"), &wrapped);
                let mut f = Findings::new();
                d.scan_typed_body(&wrapped, ty, &mut f);
                well_formed(&f, |_| wrapped.len());
                let _ = redact_typed_body(ty, &wrapped, f.iter(), &d);
            }
        }
    }
}

/// How a value is hidden in [`encoded_values_are_found_as_plain_ones`].
#[derive(Debug, Clone, Copy)]
enum Hiding {
    Utf16Le,
    Utf16Be,
    Utf32Le,
    Base64Part,
    QuotedPrintablePart,
    UntypedForm,
    HeaderValue,
    Cookie,
}

fn hiding() -> impl Strategy<Value = Hiding> {
    prop::sample::select(vec![
        Hiding::Utf16Le,
        Hiding::Utf16Be,
        Hiding::Utf32Le,
        Hiding::Base64Part,
        Hiding::QuotedPrintablePart,
        Hiding::UntypedForm,
        Hiding::HeaderValue,
        Hiding::Cookie,
    ])
}

fn base64(bytes: &[u8], line: usize) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    // Lines of `line` quads, as MIME writes them.
    let mut wrapped = Vec::new();
    for (i, c) in out.chunks(4 * line).enumerate() {
        if i > 0 {
            wrapped.extend_from_slice(b"\r\n");
        }
        wrapped.extend_from_slice(c);
    }
    wrapped
}

/// Every byte as `%XX` where `escape` says so (and always `%`, `&`, `=`,
/// `+`, `;` and non-ASCII).
fn percent(bytes: &[u8], escape: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        let must = !b.is_ascii_graphic() || matches!(b, b'%' | b'&' | b'=' | b'+' | b';');
        if must || escape[i % escape.len()] {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// Quoted-printable: `=XX` where `escape` says so (and for `=`), a soft
/// line break every `line` bytes.
fn quoted_printable(bytes: &[u8], escape: &[bool], line: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if i > 0 && i % line == 0 {
            out.extend_from_slice(b"=\r\n");
        }
        if b == b'=' || !b.is_ascii_graphic() && b != b' ' || escape[i % escape.len()] {
            out.extend_from_slice(format!("={b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A card and an email hidden behind an encoding the server decodes
    /// are found exactly as often as in plain text; where the encoding can
    /// be rewritten, redaction removes them, and where it cannot, every
    /// finding says so and redaction refuses.
    #[test]
    fn encoded_values_are_found_as_plain_ones(
        digits in card_digits(), sep in separator(),
        local in "[a-z][a-z0-9._-]{0,8}", pre in "[A-Za-z ,.:!?()]{0,16}",
        how in hiding(),
        escape in prop::collection::vec(any::<bool>(), 1..16),
        line in 3usize..30,
    ) {
        let d = Detector::new(&[]).unwrap();
        let plain = [
            pre.as_bytes(), b" ", &format(&digits, sep), b" to ", local.as_bytes(), b"@example.org.",
        ].concat();
        let mut want = Findings::new();
        d.scan_typed_body(&plain, BodyType::from_content_type(Some(b"text/plain"), &plain), &mut want);
        prop_assert!(want.contains(ClassId::CREDIT_CARD) && want.contains(ClassId::EMAIL));

        let text = std::str::from_utf8(&plain).unwrap();
        let mut got = Findings::new();
        let (input, ct): (Vec<u8>, &[u8]) = match how {
            Hiding::Utf16Le => (text.encode_utf16().flat_map(u16::to_le_bytes).collect(), b"application/json; charset=utf-16le"),
            Hiding::Utf16Be => ([&[0xFE, 0xFF][..], &text.encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<u8>>()].concat(), b"text/plain"),
            Hiding::Utf32Le => ([&[0xFF, 0xFE, 0, 0][..], &text.chars().flat_map(|c| u32::from(c).to_le_bytes()).collect::<Vec<u8>>()].concat(), b"text/plain"),
            Hiding::Base64Part => (
                [&b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"[..], &base64(&plain, line), b"\r\n--b--\r\n"].concat(),
                b"multipart/form-data; boundary=b",
            ),
            Hiding::QuotedPrintablePart => (
                [&b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"[..], &quoted_printable(&plain, &escape, line), b"\r\n--b--\r\n"].concat(),
                b"multipart/form-data; boundary=b",
            ),
            Hiding::UntypedForm => ([&b"v="[..], &percent(&plain, &escape)].concat(), b"text/plain"),
            Hiding::HeaderValue => (percent(&plain, &escape), b"x-user"),
            Hiding::Cookie => ([&b"v="[..], &percent(&plain, &escape)].concat(), b"cookie"),
        };
        let header = matches!(how, Hiding::HeaderValue | Hiding::Cookie);
        let ty = BodyType::from_content_type(Some(ct), &input);
        if header {
            d.scan_header(ct, &input, Part::Header(0), &mut got);
        } else {
            d.scan_typed_body(&input, ty, &mut got);
        }
        prop_assert_eq!(got.counts(), want.counts(), "{:?}", String::from_utf8_lossy(&input));
        prop_assert!(got.unreadable().is_none());

        let opaque = matches!(how, Hiding::Utf16Le | Hiding::Utf16Be | Hiding::Utf32Le | Hiding::Base64Part);
        prop_assert!(got.iter().all(|f| f.opaque.is_some() == opaque), "{:?}", got.as_slice());
        let out = if header {
            Ok(redact(&input, got.iter(), &d))
        } else {
            redact_typed_body(ty, &input, got.iter(), &d)
        };
        match out {
            Err(_) => prop_assert!(opaque),
            Ok(out) => {
                prop_assert!(!opaque);
                let mut again = Findings::new();
                if header {
                    d.scan_header(ct, &out, Part::Header(0), &mut again);
                } else {
                    d.scan_typed_body(&out, BodyType::from_content_type(Some(ct), &out), &mut again);
                }
                prop_assert!(again.is_empty(), "{:?} -> {:?}: {:?}",
                    String::from_utf8_lossy(&input), String::from_utf8_lossy(&out), again.as_slice());
            }
        }
    }
}
