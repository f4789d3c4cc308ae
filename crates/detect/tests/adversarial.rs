//! Crafted inputs that would make a careless scanner quadratic. Each must
//! scan (and redact) a quarter megabyte well within a generous time limit;
//! a quadratic path takes minutes here even in a release build.

use std::time::{Duration, Instant};

use veto_detect::{BodyKind, CustomClass, Detector, Findings, redact_body};

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
