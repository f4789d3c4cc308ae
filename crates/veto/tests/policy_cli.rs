//! The `veto policy` commands as users run them: the real binary, real
//! files, exit codes and output checked.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn veto() -> Command {
    let mut c = Command::cargo_bin("veto").unwrap();
    c.current_dir(root());
    c
}

/// `N passed, N failed` as the last line, parsed.
fn tally(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().unwrap_or_default();
    let nums: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        last.ends_with(" failed") && nums.len() == 2,
        "last line: {last:?}"
    );
    (nums[0], nums[1])
}

#[test]
fn conformance_suite_passes() {
    let out = veto()
        .args(["policy", "test", "tests/conformance"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (passed, failed) = tally(&stdout);
    assert_eq!(failed, 0, "{stdout}");
    assert!(passed >= 200, "only {passed} conformance cases ran");
    assert!(out.status.success());
}

#[test]
fn examples_pass_their_tests() {
    let out = veto()
        .args(["policy", "test", "examples"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (passed, failed) = tally(&stdout);
    assert_eq!(failed, 0, "{stdout}");
    assert!(passed >= 30, "only {passed} example cases ran");
}

#[test]
fn examples_are_valid_policies() {
    for ex in ["starter", "payments", "agents"] {
        let f = format!("examples/{ex}/veto.yaml");
        let out = veto().args(["policy", "check", &f]).output().unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(": ok,") && stdout.contains("sha256:"),
            "{stdout}"
        );
    }
}

/// Every file in tests/invalid is refused with exactly the lines of its
/// `.err` file, exit 1.
#[test]
fn invalid_policies_are_refused_with_exact_errors() {
    let dir = root().join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "too few invalid fixtures");
    let mut mismatches = Vec::new();
    for f in files {
        let rel = format!("tests/invalid/{}", f.file_name().unwrap().to_str().unwrap());
        let out = veto().args(["policy", "check", &rel]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let expected = std::fs::read_to_string(f.with_extension("err")).unwrap_or_default();
        if out.status.code() != Some(1) || stderr != expected {
            mismatches.push(format!(
                "{rel}: exit {:?}\n--- expected\n{expected}--- got\n{stderr}",
                out.status.code()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn check_prints_warnings_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(
        &f,
        "version: 1\nrules:\n  - id: all\n    effect: deny\n    reason: no\n  - id: later\n    effect: deny\n    reason: never named\n    to: { hosts: [a.com] }\n  - id: pii\n    effect: deny\n    reason: no pii\n    data: [email]\n",
    )
    .unwrap();
    let out = veto().args(["policy", "check"]).arg(&f).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":6:9: rule `later` is shadowed: rule `all` (line 3)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rule `pii` checks methods, paths or data"),
        "{stderr}"
    );
}

#[test]
fn a_failing_case_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\ndefaults: { decision: allow }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.test.yaml"),
        "policy: p.yaml\ncases:\n  - name: right\n    request: { url: \"https://a.com/\" }\n    expect: { decision: allow, rule: default }\n  - name: wrong\n    request: { url: \"https://a.com/\" }\n    expect: { decision: deny }\n",
    )
    .unwrap();
    let out = veto()
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(tally(&stdout), (1, 1));
    assert!(
        stdout.contains(
            "p.test.yaml:6 wrong: expected decision deny; got decision allow, rule default"
        ),
        "{stdout}"
    );
}

#[test]
fn explain_prints_decision_reason_and_trace() {
    let out = veto()
        .args([
            "policy",
            "explain",
            "examples/payments/veto.yaml",
            "--machine",
            "web",
            "--method",
            "POST",
            "--url",
            "https://api.segment.io/v1/identify",
            "--header",
            "X-User: ada@example.org",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], "no-pii-to-third-parties");
    assert_eq!(
        v["reason"],
        "Personal data is never sent to analytics vendors."
    );
    assert_eq!(v["request"]["data"], serde_json::json!(["email"]));
    let trace = v["trace"].as_array().unwrap();
    assert_eq!(trace.len(), 8);
    let metadata = &trace[0];
    assert_eq!(metadata["rule"], "never-metadata");
    assert_eq!(metadata["matched"], false);
    assert!(metadata["why"].as_str().unwrap().starts_with("to:"));
    assert_eq!(trace[1]["matched"], true);
}

#[test]
fn explain_connect_and_usage_errors() {
    let out = veto()
        .args([
            "policy",
            "explain",
            "examples/agents/veto.yaml",
            "--machine",
            "coding-agent",
            "--connect",
            "github.com:443",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["request"]["protocol"], "tls");
    // Neither --url nor --connect: bad usage, exit 2.
    let out = veto()
        .args(["policy", "explain", "examples/agents/veto.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_reports_figures() {
    let out = veto()
        .args([
            "policy",
            "bench",
            "examples/payments/veto.yaml",
            "--iterations",
            "20000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in [
        "decisions/s",
        "p50 ns/op",
        "p99 ns/op",
        "samples",
        "compile",
    ] {
        assert!(stdout.contains(key), "{stdout}");
    }
    let samples: usize = stdout
        .lines()
        .find(|l| l.starts_with("samples"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(samples > 10, "{stdout}");
    let out = veto()
        .args([
            "policy",
            "bench",
            "examples/payments/veto.yaml",
            "--requests",
            "examples/payments/veto.test.yaml",
            "--iterations",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("samples         18"));
}
