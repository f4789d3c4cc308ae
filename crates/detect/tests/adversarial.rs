//! Crafted inputs that would make a careless scanner quadratic. Each must
//! scan (and redact) a quarter megabyte well within a generous time limit;
//! a quadratic path takes minutes here even in a release build.

use std::time::{Duration, Instant};

use veto_detect::{
    BodyKind, BodyType, CustomClass, Detector, Findings, redact_body, redact_typed_body,
};

const SIZE: usize = 256 * 1024;
const LIMIT: Duration = Duration::from_secs(5);

fn repeat(unit: &str) -> Vec<u8> {
    unit.as_bytes().iter().copied().cycle().take(SIZE).collect()
}

fn check(name: &str, body: &[u8]) {
    let det = Detector::new(&[
        CustomClass::regex("emp", r"EMP-[0-9]{6}"),
        CustomClass::regex("digits", r"\b[0-9]{6}\b"),
        CustomClass::keywords("kw", ["a", "a a", "secret"]),
    ])
    .unwrap();
    for kind in [BodyKind::Other, BodyKind::Json, BodyKind::Form] {
        let t = Instant::now();
        let mut f = Findings::new();
        det.scan_body(body, kind, &mut f);
        let out = redact_body(kind, body, f.iter(), &det);
        let took = t.elapsed();
        assert!(
            took < LIMIT,
            "{name} as {kind:?}: {took:?} for {} bytes ({} findings, {} out)",
            body.len(),
            f.len(),
            out.len()
        );
    }
}

#[test]
fn jwt_anchor_runs() {
    check("eyJ-", &repeat("eyJ-"));
    let h = "eyJhbGciOiJIUzI1NiJ9";
    check("headers", &repeat(&format!("{h}-")));
    check("dotted", &repeat(&format!("{h}.{h}.")));
}

#[test]
fn pem_lines_without_end() {
    check("begin", &repeat("-----BEGIN PRIVATE KEY-----\n"));
    let mut b = repeat("-----BEGIN RSA PRIVATE KEY-----\n");
    b.extend_from_slice(b"-----END RSA PRIVATE KEY-----\n");
    check("begin..end", &b);
    check(
        "json lines",
        &repeat(r#""-----BEGIN PRIVATE KEY-----","MII=","#),
    );
}

#[test]
fn email_shapes() {
    check("a@", &repeat("a@"));
    check("a.b@c", &repeat("a.b@c."));
    let mut b = repeat("a");
    b.extend_from_slice(&repeat("@b.cd"));
    check("long local", &b);
}

#[test]
fn digit_shapes() {
    check("1 ", &repeat("1 "));
    check("123-45-", &repeat("123-45-"));
    check("DE89 ", &repeat("DE89 "));
    check("4111", &repeat("4111111111111111 "));
}

#[test]
fn escapes_and_fields() {
    check("json escapes", &repeat(r#""\u0040","#));
    let long = [&b"[\""[..], &repeat(r"\u0034111111111111111 "), b"\"]"].concat();
    check("one long escaped string", &long);
    check("form", &repeat("a=%40&"));
    check("keywords", &repeat("a "));
}

/// Like `check`, for a body of a given Content-Type (multipart, UTF-16).
fn check_typed(name: &str, body: &[u8], ct: &[u8]) {
    let det = Detector::new(&[CustomClass::regex("digits", r"\b[0-9]{6}\b")]).unwrap();
    let t = Instant::now();
    let ty = BodyType::from_content_type(Some(ct), body);
    let mut f = Findings::new();
    det.scan_typed_body(body, ty, &mut f);
    let out = redact_typed_body(ty, body, f.iter(), &det);
    let took = t.elapsed();
    assert!(
        took < LIMIT,
        "{name}: {took:?} for {} bytes ({} findings, redacted: {})",
        body.len(),
        f.len(),
        out.is_ok()
    );
}

#[test]
fn multipart_and_wide_shapes() {
    let mp = b"multipart/form-data; boundary=b".as_slice();
    check_typed("parts", &repeat("--b\r\n\r\na@b.cd 123456\r\n"), mp);
    check_typed(
        "base64 parts",
        &repeat("--b\r\nContent-Transfer-Encoding: base64\r\n\r\nYUBiLmNk\r\n"),
        mp,
    );
    check_typed(
        "qp parts",
        &repeat("--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=40b.cd=\r\n\r\n"),
        mp,
    );
    check_typed("near delimiters", &repeat("\n--bX"), mp);
    check_typed("header lines", &repeat("--b\r\nX: 1\r\n"), mp);
    check_typed(
        "nested",
        &repeat("--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"),
        mp,
    );
    let wide: Vec<u8> = repeat(r#"{"e":"a\u0040b.cd","n":123456},"#)
        .iter()
        .flat_map(|&b| [b, 0])
        .collect();
    check_typed("utf-16", &wide, b"application/json");
    check_typed("form sniffed", &repeat("a=%40+"), b"text/plain");
}
