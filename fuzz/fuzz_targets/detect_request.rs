//! The detectors' request decoding (URL, header and cookie values, JSON,
//! forms, multipart with base64 and quoted-printable parts, UTF-16/32):
//! no input panics, every finding lies inside the part it names, and
//! redaction either writes a body or says why it cannot, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use veto_detect::{
    BodyType, CustomClass, Detector, Findings, Part, RequestParts, redact_typed_body, redact_url,
};

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| {
        Detector::new(&[
            CustomClass::regex("employee-id", r"EMP-[0-9]{6}"),
            CustomClass::keywords("secret", ["secret", "top secret"]),
        ])
        .unwrap()
    })
}

const TYPES: [&[u8]; 8] = [
    b"application/json",
    b"application/x-www-form-urlencoded",
    b"text/plain",
    b"multipart/form-data; boundary=-",
    b"multipart/mixed; boundary=a",
    b"application/json; charset=utf-16",
    b"application/json; charset=utf-32le",
    b"",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let cut = rest.len() / 4;
    let (url, rest) = rest.split_at(cut);
    let (cookie, body) = rest.split_at(rest.len().min(cut));
    let ct = TYPES[usize::from(pick) % TYPES.len()];
    let headers: &[(&[u8], &[u8])] = &[(b"content-type", ct), (b"cookie", cookie)];
    let d = detector();
    let mut f = Findings::new();
    d.scan_request(RequestParts { url, headers, body }, &mut f);
    let len = |p: Part| match p {
        Part::Url => url.len(),
        Part::Header(0) => ct.len(),
        Part::Header(_) => cookie.len(),
        Part::Body => body.len(),
    };
    for x in &f {
        assert!(x.start < x.end && x.end <= len(x.part), "{x:?}");
    }
    let _ = redact_url(url, f.in_part(Part::Url), d);
    let ty = BodyType::of(headers, body);
    let _ = redact_typed_body(ty, body, f.in_part(Part::Body), d);
});
