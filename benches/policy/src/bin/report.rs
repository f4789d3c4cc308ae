//! Prints the one markdown table of `scripts/bench-policy` from what the
//! run left behind: criterion's estimates, `veto policy bench` outputs
//! (`veto-bench-N.txt`) and the memory binary's output (`memory.txt`).
//!
//! Usage: `report CRITERION_DIR RESULTS_DIR`. A figure that is missing is
//! printed as `n/a` rather than failing the whole table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use veto_bench_policy::SIZES;

/// Criterion's mean and median for one benchmark, in ns.
fn estimates(dir: &Path, group: &str, n: usize) -> Option<(f64, f64)> {
    let path = dir
        .join(group)
        .join(n.to_string())
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let point = |k: &str| v.get(k)?.get("point_estimate")?.as_f64();
    Some((point("mean")?, point("median")?))
}

/// `key value` lines (the memory binary), or `key    value` lines whose key
/// has spaces (`veto policy bench`): the last word is the value.
fn key_values(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            // `compile  12.34 ms`: the value is the number before the unit.
            let words: Vec<&str> = l.split_whitespace().collect();
            let (key_words, value) = match words.as_slice() {
                [k @ .., v, "ms"] if !k.is_empty() => (k.to_vec(), *v),
                [k @ .., v] if !k.is_empty() => (k.to_vec(), *v),
                _ => return None,
            };
            Some((key_words.join(" "), value.to_string()))
        })
        .collect()
}

fn num(m: &HashMap<String, String>, k: &str) -> Option<f64> {
    m.get(k)?.parse().ok()
}

fn ns(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.0} ns"))
}

fn human_ns(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(x) if x >= 1e6 => format!("{:.2} ms", x / 1e6),
        Some(x) if x >= 1e3 => format!("{:.2} µs", x / 1e3),
        Some(x) => format!("{x:.0} ns"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            if r >= 100.0 {
                format!("{r:.0}x")
            } else {
                format!("{r:.1}x")
            }
        }
        _ => "n/a".into(),
    }
}

fn mib(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |b| format!("{:.1} MiB", b / 1_048_576.0))
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let [criterion, results] = args.as_slice() else {
        eprintln!("usage: report CRITERION_DIR RESULTS_DIR");
        return ExitCode::from(2);
    };
    println!(
        "| rules | veto mean (criterion) | veto median (criterion) | veto p50 / p99 (`veto policy bench`) | cedar mean | cedar per policy | regorus mean | cedar ÷ veto | regorus ÷ veto |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in SIZES {
        let veto = estimates(criterion, "veto_decide", n);
        let cedar = estimates(criterion, "cedar_decide", n).map(|e| e.0);
        let rego = estimates(criterion, "regorus_decide", n).map(|e| e.0);
        let vb = key_values(&results.join(format!("veto-bench-{n}.txt")));
        let veto_mean = veto.map(|e| e.0);
        println!(
            "| {n} | {} | {} | {} / {} | {} | {} | {} | {} | {} |",
            ns(veto_mean),
            ns(veto.map(|e| e.1)),
            ns(num(&vb, "p50 ns/op")),
            ns(num(&vb, "p99 ns/op")),
            human_ns(cedar),
            human_ns(cedar.map(|c| c / n as f64)),
            human_ns(rego),
            ratio(cedar, veto_mean),
            ratio(rego, veto_mean),
        );
    }
    let compile = estimates(criterion, "veto_compile", 10_000);
    let mem = key_values(&results.join("memory.txt"));
    let vb100k = key_values(&results.join("veto-bench-100000.txt"));
    println!();
    println!("| other figure | value |");
    println!("|---|---:|");
    println!(
        "| `Policy::compile`, 10k rules (criterion mean / median) | {} / {} |",
        human_ns(compile.map(|e| e.0)),
        human_ns(compile.map(|e| e.1))
    );
    println!(
        "| `Policy::compile`, 100k rules (one run, memory binary / `veto policy bench`) | {} ms / {} ms |",
        mem.get("compile_ms").map_or("n/a", String::as_str),
        vb100k.get("compile").map_or("n/a", String::as_str),
    );
    println!(
        "| `veto_policy::load` alone (parse and check), 100k rules, one run | {} ms |",
        mem.get("load_ms").map_or("n/a", String::as_str)
    );
    let live = num(&mem, "live_bytes");
    println!(
        "| memory held by the compiled 100k-rule policy | {} ({} bytes/rule) |",
        mib(live),
        live.map_or("n/a".into(), |b| format!("{:.0}", b / 100_000.0))
    );
    println!(
        "| peak allocation while compiling it (above baseline) | {} |",
        mib(num(&mem, "peak_bytes"))
    );
    println!("| its YAML text | {} |", mib(num(&mem, "yaml_bytes")));
    println!(
        "| warnings it produces (kept in the policy) | {} |",
        mem.get("warnings").map_or("n/a", String::as_str)
    );
    ExitCode::SUCCESS
}
