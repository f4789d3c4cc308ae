//! Request scanning (URL, headers, decoded JSON and form bodies), custom
//! class overlaps, and encoding-aware redaction.

use serde_json::Value;
use veto_detect::{
    BodyKind, ClassId, CustomClass, Detector, Finding, Findings, Part, RequestParts, redact,
    redact_body, redact_form, redact_json, redact_url,
};

fn det() -> Detector {
    Detector::new(&[]).unwrap()
}

const JSON: &[(&[u8], &[u8])] = &[(b"Content-Type", b"application/json")];
const FORM: &[(&[u8], &[u8])] = &[(b"content-type", b"application/x-www-form-urlencoded")];

fn scan(d: &Detector, parts: RequestParts<'_>) -> Findings {
    let mut f = Findings::new();
    d.scan_request(parts, &mut f);
    f
}

fn body(d: &Detector, headers: &[(&[u8], &[u8])], body: &[u8]) -> Findings {
    scan(
        d,
        RequestParts {
            url: b"/",
            headers,
            body,
        },
    )
}

fn texts<'a>(f: &Findings, input: &'a [u8]) -> Vec<(ClassId, &'a str)> {
    f.iter()
        .map(|x| {
            (
                x.class,
                std::str::from_utf8(&input[x.start..x.end]).unwrap(),
            )
        })
        .collect()
}

#[test]
fn json_unicode_escape_reveals_email() {
    let d = det();
    let b = br#"{"e":"a\u0040b.com"}"#;
    let f = body(&d, JSON, b);
    assert_eq!(texts(&f, b), vec![(ClassId::EMAIL, r"a\u0040b.com")]);
    assert!(f.as_slice()[0].decoded);
    assert_eq!(f.as_slice()[0].part, Part::Body);
}

#[test]
fn json_escapes_hide_nothing() {
    let d = det();
    // "4" written as \u0034: raw bytes show no card.
    let b = br#"{"cc":"\u0034111111111111111","k":"AKIA\u0049OSFODNN7EXAMPLE"}"#;
    let f = body(&d, JSON, b);
    assert_eq!(f.count(ClassId::CREDIT_CARD), 1);
    assert_eq!(f.count(ClassId::AWS_ACCESS_KEY), 1);
    // Without a JSON content type, a body that looks like JSON is still
    // decoded; one that does not is scanned as sent only.
    assert_eq!(body(&d, &[], b).count(ClassId::CREDIT_CARD), 1);
    let plain: &[(&[u8], &[u8])] = &[(b"content-type", b"text/plain")];
    assert_eq!(body(&d, plain, &b[1..]).count(ClassId::CREDIT_CARD), 0);
}

#[test]
fn json_raw_and_decoded_views_count_once() {
    let d = det();
    // Raw sees `nfoo@bar.com`, decoded sees `foo@bar.com`: one e-mail.
    let b = br#"{"m":"hi\nfoo@bar.com","n":"x@y.io\t"}"#;
    let f = body(&d, JSON, b);
    assert_eq!(f.counts(), vec![(ClassId::EMAIL, 2)]);
}

#[test]
fn form_values_are_decoded() {
    let d = det();
    let b = b"email=a%40b.com&cc=4111+1111+1111+1111&%41KIAIOSFODNN7EXAMPLE=1&x=%2";
    let f = body(&d, FORM, b);
    assert_eq!(
        texts(&f, b),
        vec![
            (ClassId::EMAIL, "a%40b.com"),
            (ClassId::CREDIT_CARD, "4111+1111+1111+1111"),
            (ClassId::AWS_ACCESS_KEY, "%41KIAIOSFODNN7EXAMPLE"),
        ]
    );
    // The same bytes without a form type are decoded as a form too: a
    // server may well read them as one.
    assert_eq!(texts(&body(&d, &[], b), b), texts(&f, b));
    let plain: &[(&[u8], &[u8])] = &[(b"content-type", b"text/plain")];
    assert_eq!(texts(&body(&d, plain, b), b), texts(&f, b));
}

#[test]
fn url_is_percent_decoded_and_authority_skipped() {
    let d = det();
    let url = b"http://me@host.example.com/u/a%40b.com?q=4111+1111+1111+1111&s=123%2045%206789";
    let f = scan(
        &d,
        RequestParts {
            url,
            ..Default::default()
        },
    );
    assert!(f.iter().all(|x| x.part == Part::Url));
    assert_eq!(
        texts(&f, url),
        vec![
            (ClassId::EMAIL, "a%40b.com"),
            (ClassId::CREDIT_CARD, "4111+1111+1111+1111"),
            (ClassId::US_SSN, "123%2045%206789"),
        ]
    );
    // `+` in the path is a plus, not a space.
    let f = scan(
        &d,
        RequestParts {
            url: b"/4111+1111+1111+1111",
            ..Default::default()
        },
    );
    assert!(f.is_empty());
}

#[test]
fn headers_are_scanned_by_index() {
    let d = det();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
    let auth = format!("Bearer {jwt}");
    let headers: &[(&[u8], &[u8])] = &[
        (b"Host", b"example.com"),
        (b"Authorization", auth.as_bytes()),
    ];
    let f = scan(
        &d,
        RequestParts {
            url: b"/",
            headers,
            body: b"",
        },
    );
    assert_eq!(
        f.as_slice(),
        &[Finding {
            class: ClassId::JWT,
            start: 7,
            end: auth.len(),
            part: Part::Header(1),
            decoded: false,
            opaque: None,
        }]
    );
}

#[test]
fn overlapping_custom_classes_are_all_found() {
    let d = Detector::new(&[
        CustomClass::regex("employee-id", "EMP-[0-9]{6}"),
        CustomClass::regex("six-digits", "[0-9]{6}"),
        CustomClass::keywords("secret", ["secret"]),
        CustomClass::keywords("top-secret", ["top secret", "SECRET"]),
    ])
    .unwrap();
    let mut f = Findings::new();
    d.scan(b"EMP-123456 is Top Secret", &mut f);
    let names: Vec<&str> = f.iter().map(|x| d.class_name(x.class)).collect();
    assert_eq!(
        names,
        [
            "employee-id",
            "six-digits",
            "top-secret",
            "secret",
            "top-secret"
        ]
    );
}

#[test]
fn redact_json_keeps_json_valid() {
    let d = det();
    let b = br#"{"cc":"4111 1111 1111 1111","n":4111111111111111,"e":"x\u0040y.com","m":"hi\nfoo@bar.com!","ok":[1,"a@b.io"]}"#;
    let f = body(&d, JSON, b);
    assert_eq!(f.len(), 5);
    let out = redact_json(b, f.iter(), &d);
    let v: Value = serde_json::from_slice(&out).expect("redacted body is JSON");
    assert_eq!(v["cc"], "[REDACTED:credit_card]");
    assert_eq!(v["n"], "[REDACTED:credit_card]");
    assert_eq!(v["e"], "[REDACTED:email]");
    assert_eq!(v["m"], "hi[REDACTED:email]!");
    assert_eq!(v["ok"][1], "[REDACTED:email]");
    assert_eq!(v["ok"][0], 1);
    assert!(body(&d, JSON, &out).is_empty());
    // redact_body picks the same treatment from the kind.
    assert_eq!(redact_body(BodyKind::Json, b, f.iter(), &d), out);
}

#[test]
fn redact_json_never_cuts_an_escape() {
    let d = Detector::new(&[CustomClass::regex("tail", "0040b")]).unwrap();
    // The custom regex matches raw bytes in the middle of `\u0040`.
    let b = br#"{"e":"a\u0040b"}"#;
    let f = body(&d, JSON, b);
    assert_eq!(f.len(), 1);
    let out = redact_json(b, f.iter(), &d);
    assert_eq!(out, br#"{"e":"a[REDACTED:tail]"}"#);
}

#[test]
fn redact_form_and_url_stay_encoded() {
    let d = det();
    let b = b"a=1&email=a%40b.com&cc=4111+1111+1111+1111";
    let f = body(&d, FORM, b);
    let out = redact_form(b, f.iter(), &d);
    assert_eq!(
        out,
        b"a=1&email=%5BREDACTED:email%5D&cc=%5BREDACTED:credit_card%5D"
    );
    assert!(body(&d, FORM, &out).is_empty());

    let url = b"/p/%34111111111111111?x=1";
    let mut f = Findings::new();
    d.scan_url(url, &mut f);
    assert_eq!(f.count(ClassId::CREDIT_CARD), 1);
    assert_eq!(
        redact_url(url, f.iter(), &d),
        b"/p/%5BREDACTED:credit_card%5D?x=1"
    );
}

#[test]
fn redact_merges_overlaps_and_keeps_the_rest() {
    let d = Detector::new(&[CustomClass::regex("mail-domain", "b\\.com and")]).unwrap();
    let b = b"from a@b.com and 123-45-6789.";
    let mut f = Findings::new();
    d.scan(b, &mut f);
    assert_eq!(f.len(), 3);
    assert_eq!(
        redact(b, f.iter(), &d),
        b"from [REDACTED:email] [REDACTED:us_ssn]."
    );
    // Only the classes a rule names: filter first.
    let only_ssn = f.iter().filter(|x| x.class == ClassId::US_SSN);
    assert_eq!(
        redact(b, only_ssn, &d),
        b"from a@b.com and [REDACTED:us_ssn]."
    );
    // Findings out of range are ignored rather than trusted.
    let bogus = Finding {
        class: ClassId::EMAIL,
        start: 10,
        end: 999,
        part: Part::Body,
        decoded: false,
        opaque: None,
    };
    assert_eq!(redact(b"short", [&bogus], &d), b"short");
}

/// Found by the redaction property test: a key whose body runs straight
/// into a second BEGIN line. Both keys are found, so redacting leaves no key
/// for a rescan to find.
#[test]
fn back_to_back_keys_are_both_redacted() {
    let d = det();
    let input = b"-----BEGIN PRIVATE KEY-----%u-----BEGIN PRIVATE KEY-----\\ 2000000000008 ";
    let mut f = Findings::new();
    d.scan(input, &mut f);
    let keys = f.iter().filter(|x| x.class == ClassId::PRIVATE_KEY).count();
    assert_eq!(keys, 2, "{:?}", f.as_slice());
    let out = veto_detect::redact(input, f.iter(), &d);
    let mut again = Findings::new();
    d.scan(&out, &mut again);
    assert!(
        again.is_empty(),
        "{} still has {:?}",
        String::from_utf8_lossy(&out),
        again.as_slice()
    );
}
