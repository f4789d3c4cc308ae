//! Runs every case of tests/fixtures/encodings.txt (the file's header
//! describes the format) and reports all mismatches at once.

use std::collections::BTreeMap;

use veto_detect::{BodyType, Detector, Findings, Part, redact, redact_typed_body};

/// Undoes the fixture escapes `\r \n \t \\ \xHH`.
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).ok_or("short \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 2;
            }
            _ => return Err(format!("unknown escape at byte {i}")),
        }
        i += 2;
    }
    Ok(out)
}

/// Encodes UTF-8 text as the WRAP column says.
fn wrap(how: &str, text: &[u8]) -> Result<Vec<u8>, String> {
    if how == "-" {
        return Ok(text.to_vec());
    }
    let s = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    let (enc, bom) = match how.strip_suffix("-bom") {
        Some(e) => (e, true),
        None => (how, false),
    };
    let mut out = Vec::new();
    match enc {
        "utf8bom" => {
            out.extend_from_slice(b"\xef\xbb\xbf");
            out.extend_from_slice(text);
        }
        "utf16le" | "utf16be" => {
            let units = (bom.then_some(0xFEFF_u16))
                .into_iter()
                .chain(s.encode_utf16());
            for u in units {
                let b = if enc == "utf16le" {
                    u.to_le_bytes()
                } else {
                    u.to_be_bytes()
                };
                out.extend_from_slice(&b);
            }
        }
        "utf32le" | "utf32be" => {
            let chars = (bom.then_some(0xFEFF_u32))
                .into_iter()
                .chain(s.chars().map(u32::from));
            for c in chars {
                let b = if enc == "utf32le" {
                    c.to_le_bytes()
                } else {
                    c.to_be_bytes()
                };
                out.extend_from_slice(&b);
            }
        }
        other => return Err(format!("unknown wrap {other}")),
    }
    Ok(out)
}

struct Case {
    line: usize,
    expected: BTreeMap<String, usize>,
    opaque: bool,
    unreadable: bool,
    ty: String,
    input: Vec<u8>,
    /// `None`: not checked; `Some(None)`: refused; `Some(Some(bytes))`.
    redacted: Option<Option<Vec<u8>>>,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        if let Some(out) = raw.strip_prefix("=> ") {
            let case = cases
                .last_mut()
                .unwrap_or_else(|| panic!("line {line}: `=>` before any case"));
            case.redacted = Some(if out == "refused" {
                None
            } else {
                let wrapped = unescape(out).and_then(|b| wrap(&case_wrap(text, case.line), &b));
                Some(wrapped.unwrap_or_else(|e| panic!("line {line}: {e}")))
            });
            continue;
        }
        let cols: Vec<&str> = raw.splitn(4, " | ").collect();
        let [exp, ty, how, input] = cols[..] else {
            panic!("line {line}: expected `EXPECTED | TYPE | WRAP | INPUT`");
        };
        let mut expected = BTreeMap::new();
        let (mut opaque, mut unreadable) = (false, false);
        for item in exp.split_whitespace() {
            match item {
                "-" => {}
                "opaque" => opaque = true,
                "unreadable" => unreadable = true,
                _ => {
                    let (class, count) = item
                        .split_once('=')
                        .unwrap_or_else(|| panic!("line {line}: `{item}` is not class=count"));
                    let count = count
                        .parse()
                        .unwrap_or_else(|_| panic!("line {line}: bad count in `{item}`"));
                    expected.insert(class.to_string(), count);
                }
            }
        }
        let input = unescape(input)
            .and_then(|b| wrap(how.trim(), &b))
            .unwrap_or_else(|e| panic!("line {line}: {e}"));
        cases.push(Case {
            line,
            expected,
            opaque,
            unreadable,
            ty: ty.trim().to_string(),
            input,
            redacted: None,
        });
    }
    cases
}

/// The WRAP column of the case at `line`.
fn case_wrap(text: &str, line: usize) -> String {
    let raw = text.lines().nth(line - 1).unwrap_or_default();
    raw.split(" | ").nth(2).unwrap_or("-").trim().to_string()
}

#[test]
fn encodings() {
    let text = include_str!("fixtures/encodings.txt");
    let cases = parse(text);
    let det = Detector::new(&[]).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let mut found = Findings::new();
        let header = case.ty.strip_prefix("header:");
        let ty = match (header, case.ty.as_str()) {
            (Some(_), _) => None,
            (None, "-") => Some(BodyType::from_content_type(None, &case.input)),
            (None, ct) => Some(BodyType::from_content_type(
                Some(ct.as_bytes()),
                &case.input,
            )),
        };
        match (header, ty) {
            (Some(name), _) => {
                det.scan_header(name.as_bytes(), &case.input, Part::Header(0), &mut found)
            }
            (None, Some(ty)) => det.scan_typed_body(&case.input, ty, &mut found),
            (None, None) => unreachable!(),
        }
        let got: BTreeMap<String, usize> = found
            .counts()
            .into_iter()
            .map(|(c, n)| (det.class_name(c).to_string(), n))
            .collect();
        let mut problems = Vec::new();
        if got != case.expected {
            problems.push(format!("expected {:?}, got {:?}", case.expected, got));
        }
        if case.opaque && found.iter().any(|f| f.opaque.is_none()) {
            problems.push("a finding is not marked opaque".to_string());
        }
        if !case.opaque && found.first_opaque().is_some() {
            problems.push(format!("opaque finding {:?}", found.first_opaque()));
        }
        if case.unreadable != found.unreadable().is_some() {
            problems.push(format!("unreadable: {:?}", found.unreadable()));
        }
        if let Some(want) = &case.redacted {
            let out = match (header, ty) {
                (Some(_), _) => Ok(redact(&case.input, found.iter(), &det)),
                (None, Some(ty)) => redact_typed_body(ty, &case.input, found.iter(), &det),
                (None, None) => unreachable!(),
            };
            match (want, &out) {
                (None, Err(_)) => {}
                (Some(w), Ok(o)) if w == o => {
                    // What was redacted is gone from every view.
                    let mut again = Findings::new();
                    match (header, ty) {
                        (Some(name), _) => {
                            det.scan_header(name.as_bytes(), o, Part::Header(0), &mut again)
                        }
                        _ => {
                            let ty = match case.ty.as_str() {
                                "-" => BodyType::from_content_type(None, o),
                                ct => BodyType::from_content_type(Some(ct.as_bytes()), o),
                            };
                            det.scan_typed_body(o, ty, &mut again);
                        }
                    }
                    if !again.is_empty() {
                        problems.push(format!("redacted output still has {:?}", again.as_slice()));
                    }
                }
                _ => problems.push(format!(
                    "redacted to {:?}, expected {:?}",
                    out.as_ref()
                        .map(|o| String::from_utf8_lossy(o).into_owned()),
                    want.as_ref()
                        .map(|w| String::from_utf8_lossy(w).into_owned())
                )),
            }
        }
        if !problems.is_empty() {
            let ranges: Vec<String> = found
                .iter()
                .map(|f| {
                    let text = String::from_utf8_lossy(&case.input[f.start..f.end]);
                    format!(
                        "{}={text:?}{}",
                        det.class_name(f.class),
                        if f.opaque.is_some() { " (opaque)" } else { "" }
                    )
                })
                .collect();
            failures.push(format!(
                "line {}: {:?}\n    {}\n    findings {:?}",
                case.line,
                String::from_utf8_lossy(&case.input),
                problems.join("\n    "),
                ranges
            ));
        }
    }
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} encoding cases failed (listed above)",
        failures.len(),
        cases.len()
    );
    assert!(cases.len() > 40, "fixture file lost cases: {}", cases.len());
}
