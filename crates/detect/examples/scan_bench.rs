//! Scan throughput on a 1 MiB JSON body (BENCHMARKS.md, "Data detectors"):
//! veto's detector with every built-in class, against the naive approach
//! (one regex per class, run in sequence over the whole body) and against
//! memchr's raw speed (looking for a byte that is not there) as a ceiling.
//!
//!   cargo run --release -p veto-detect --example scan_bench
//!
//! Bodies: clean (no hits), sparse (about 16 hits per MiB) and dense (a hit
//! about every 200 bytes); the clean and sparse ones again with a JSON
//! escape (`\n`) in every record, which makes veto decode and rescan each
//! string that holds one (most JSON has no escapes at all). Each figure is
//! the median of 101 timed scans after 5 warm-up scans, on one thread.

use regex_automata::meta::Regex;
use std::time::{Duration, Instant};
use veto_detect::{BodyKind, Detector, Findings};

const SIZE: usize = 1 << 20;

/// A plausible API payload: records with names, notes, amounts and ids, and
/// every `every` records one of the sensitive values (0: none).
fn body(every: usize, escaped: bool) -> Vec<u8> {
    let secrets = [
        r#""card":"4111 1111 1111 1111""#,
        r#""email":"jane.doe@example.com""#,
        r#""key":"AKIAIOSFODNN7EXAMPLE""#,
        r#""ssn":"123-45-6789""#,
        r#""iban":"DE89370400440532013000""#,
        r#""token":"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789""#,
    ];
    let mut out = b"[".to_vec();
    let mut i = 0usize;
    while out.len() < SIZE - 400 {
        if i > 0 {
            out.push(b',');
        }
        let secret = if every > 0 && i % every == every - 1 {
            format!(",{}", secrets[(i / every) % secrets.len()])
        } else {
            String::new()
        };
        out.extend_from_slice(
            format!(
                r#"{{"id":{i},"name":"Customer {i}","note":"Order shipped on time;{sep}the parcel was left with the neighbour at number {n}.","amount":{a}.{c:02},"tags":["priority","eu-west"],"status":"delivered"{secret}}}"#,
                n = i % 97,
                a = i % 1000,
                c = i % 100,
                sep = if escaped { r"\n" } else { " " },
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.push(b']');
    out
}

/// Median time of `f` over 101 runs, after 5 warm-up runs.
fn median(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut hits = 0;
    for _ in 0..5 {
        hits = f();
    }
    let mut times: Vec<Duration> = (0..101)
        .map(|_| {
            let t = Instant::now();
            hits = std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], hits)
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_nanos() as f64
}

/// The naive approach: one regex per built-in class, each a full pass.
fn naive() -> Vec<Regex> {
    [
        r"\b(?:\d[ -]?){12,18}\d\b",
        r"\b\d{3}-\d{2}-\d{4}\b",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b",
        r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        r"\bgh[pousr]_[A-Za-z0-9]{36}\b",
    ]
    .iter()
    .map(|p| Regex::new(&format!("(?-u){p}")).expect("valid pattern"))
    .collect()
}

fn main() {
    if std::env::var("SCAN_PROFILE").is_ok() {
        let d = Detector::new(&[]).unwrap();
        let b = body(0, false);
        let mut f = Findings::new();
        for _ in 0..2000 {
            f.clear();
            d.scan_body(&b, BodyKind::Json, &mut f);
        }
        return;
    }
    let detector = Detector::new(&[]).expect("the built-in classes build");
    let regexes = naive();
    println!(
        "| body | size | veto hits | veto median | veto GB/s | naive regex median | naive GB/s | memchr ceiling GB/s | veto ÷ naive |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut findings = Findings::new();
    for (label, every, escaped) in [
        ("clean", 0, false),
        ("sparse", 320, false),
        ("dense", 1, false),
        ("clean, `\\n` in every record", 0, true),
        ("sparse, `\\n` in every record", 320, true),
    ] {
        let b = body(every, escaped);
        let (veto_t, veto_hits) = median(|| {
            findings.clear();
            detector.scan_body(&b, BodyKind::Json, &mut findings);
            findings.len()
        });
        let (naive_t, _) = median(|| {
            regexes
                .iter()
                .map(|r| r.find_iter(b.as_slice()).count())
                .sum()
        });
        let (memchr_t, _) = median(|| memchr::memchr_iter(0x00, &b).count());
        println!(
            "| {label} | {} KiB | {veto_hits} | {:.0} µs | {:.2} | {:.0} µs | {:.2} | {:.1} | {:.1}x |",
            b.len() / 1024,
            veto_t.as_secs_f64() * 1e6,
            gbps(b.len(), veto_t),
            naive_t.as_secs_f64() * 1e6,
            gbps(b.len(), naive_t),
            gbps(b.len(), memchr_t),
            naive_t.as_secs_f64() / veto_t.as_secs_f64(),
        );
    }
}
