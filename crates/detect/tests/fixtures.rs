//! Runs every case of tests/fixtures/classes.txt and reports all mismatches
//! at once (the file's header describes the format).

use std::collections::BTreeMap;

use veto_detect::{CustomClass, Detector, Findings};

fn detector() -> Detector {
    Detector::new(&[
        CustomClass::regex("employee-id", "EMP-[0-9]{6}"),
        CustomClass::regex("project", r"\bPRJ[0-9]{3}\b"),
        CustomClass::keywords("codename", ["Falcon", "blue harbor"]),
    ])
    .expect("fixture detector compiles")
}

/// Undoes the fixture escapes `\n \t \\ \xHH`.
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

struct Case {
    line: usize,
    section: String,
    expected: BTreeMap<String, usize>,
    input: Vec<u8>,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut section = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if let Some(h) = raw.strip_prefix("## ") {
            section = h.split([' ', ':']).next().unwrap_or_default().to_string();
            continue;
        }
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let (exp, input) = raw
            .split_once('|')
            .unwrap_or_else(|| panic!("line {line}: no `|`"));
        let input = input.strip_prefix(' ').unwrap_or(input);
        let mut expected = BTreeMap::new();
        for item in exp.split_whitespace().filter(|&t| t != "-") {
            let (class, count) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("line {line}: `{item}` is not class=count"));
            let count = count
                .parse()
                .unwrap_or_else(|_| panic!("line {line}: bad count in `{item}`"));
            expected.insert(class.to_string(), count);
        }
        let input = unescape(input).unwrap_or_else(|e| panic!("line {line}: {e}"));
        cases.push(Case {
            line,
            section: section.clone(),
            expected,
            input,
        });
    }
    cases
}

#[test]
fn fixtures() {
    let text = include_str!("fixtures/classes.txt");
    let cases = parse(text);
    let det = detector();
    let mut found = Findings::new();
    let mut failures = Vec::new();
    for case in &cases {
        found.clear();
        det.scan(&case.input, &mut found);
        let got: BTreeMap<String, usize> = found
            .counts()
            .into_iter()
            .map(|(c, n)| (det.class_name(c).to_string(), n))
            .collect();
        if got != case.expected {
            let ranges: Vec<String> = found
                .iter()
                .map(|f| {
                    let text = String::from_utf8_lossy(&case.input[f.start..f.end]);
                    format!("{}={text:?}", det.class_name(f.class))
                })
                .collect();
            failures.push(format!(
                "line {}: {:?}\n    expected {:?}\n    got      {:?} {:?}",
                case.line,
                String::from_utf8_lossy(&case.input),
                case.expected,
                got,
                ranges
            ));
        }
    }

    // The file must keep positives for every class and near-miss negatives
    // in every class's own section.
    let mut coverage = Vec::new();
    for (_, name) in det.classes() {
        if !cases.iter().any(|c| c.expected.contains_key(name)) {
            coverage.push(format!("no positive case for {name}"));
        }
        let builtin = Detector::builtin_names().contains(&name);
        if builtin
            && !cases
                .iter()
                .any(|c| c.section == name && c.expected.is_empty())
        {
            coverage.push(format!("no negative case in section {name}"));
        }
    }

    for f in &failures {
        eprintln!("{f}");
    }
    for c in &coverage {
        eprintln!("{c}");
    }
    assert!(
        failures.is_empty() && coverage.is_empty(),
        "{} of {} fixture cases failed, {} coverage problems (listed above)",
        failures.len(),
        cases.len(),
        coverage.len()
    );
    assert!(
        cases.len() > 100,
        "fixture file lost cases: {}",
        cases.len()
    );
}
