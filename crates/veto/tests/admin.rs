//! The admin listener and `veto tail` against a live `veto run`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: no-delete
    effect: deny
    methods: [DELETE]
    reason: Nothing is deleted through veto.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

/// GET on the admin API with an optional bearer token: (status, body).
fn admin_get(veto: &Veto, path: &str, token: Option<&str>) -> (u16, String) {
    let mut args = vec!["-s".to_string(), "-w".into(), "\n%{http_code}".into()];
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {t}"));
    }
    args.push(format!("http://{}{path}", veto.admin));
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn tail_shows_a_refusal_within_a_second() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &[]);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args([
            "tail",
            "--admin",
            &format!("http://{}", veto.admin),
            "--data",
        ])
        .arg(veto.data())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    // Give the watcher a moment to subscribe before the traffic.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        curl(&veto.proxy_url(), &[&format!("http://{up}/ok")]).0,
        200
    );
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("ALLOW") && first.contains("[lab]"),
        "{first}"
    );
    let refused_at = Instant::now();
    assert_eq!(
        curl(
            &veto.proxy_url(),
            &["-X", "DELETE", &format!("http://{up}/x")]
        )
        .0,
        403
    );
    let line = lines.next().unwrap().unwrap();
    let took = refused_at.elapsed();
    assert!(
        line.contains("DENY")
            && line.contains("[no-delete]")
            && line.contains("Nothing is deleted"),
        "{line}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the refusal took {took:?} to show"
    );
    // A refused request cannot paint a fake ALLOW line: control bytes
    // decoded from its path are shown as escapes, on one line.
    assert_eq!(
        curl(
            &veto.proxy_url(),
            &[
                "-g",
                "-X",
                "DELETE",
                &format!("http://{up}/x%0a%1b[32mALLOW%1b[0m")
            ]
        )
        .0,
        403
    );
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("DENY"), "{line}");
    assert!(line.contains("/x\\x0a\\x1b[32mALLOW\\x1b[0m"), "{line}");
    assert!(!line.contains('\x1b'), "{line:?}");
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn tail_json_with_filters() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &[]);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args([
            "tail",
            "--json",
            "--decision",
            "deny",
            "--admin",
            &format!("http://{}", veto.admin),
        ])
        .env("VETO_ADMIN_TOKEN", veto.admin_token())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(500));
    curl(&veto.proxy_url(), &[&format!("http://{up}/a")]);
    curl(
        &veto.proxy_url(),
        &["-X", "DELETE", &format!("http://{up}/b")],
    );
    let r: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (
            r["decision"].as_str(),
            r["rule"].as_str(),
            r["path"].as_str()
        ),
        (Some("deny"), Some("no-delete"), Some("/b"))
    );
    assert_eq!(r["hash"].as_str().map(str::len), Some(64));
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn tail_without_a_token_is_a_clear_error() {
    let veto = Veto::start(POLICY, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args([
            "tail",
            "--admin",
            &format!("http://{}", veto.admin),
            "--token",
            "wrong",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn the_admin_api_is_authenticated() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &[]);
    let token = veto.admin_token();
    let mode = std::fs::metadata(veto.data().join("admin.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    curl(&veto.proxy_url(), &[&format!("http://{up}/a")]);
    curl(
        &veto.proxy_url(),
        &["-X", "DELETE", &format!("http://{up}/b")],
    );

    assert_eq!(admin_get(&veto, "/health", None).0, 200);
    for path in [
        "/metrics",
        "/v1/policy",
        "/v1/decisions",
        "/v1/inventory",
        "/v1/decisions/stream",
    ] {
        assert_eq!(admin_get(&veto, path, None).0, 401, "{path}");
        assert_eq!(
            admin_get(&veto, path, Some("vetoadm_wrong")).0,
            401,
            "{path}"
        );
    }
    let (code, metrics) = admin_get(&veto, "/metrics", Some(&token));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("veto_decisions_total{decision=\"allow\",rule=\"lab\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("veto_decisions_total{decision=\"deny\",rule=\"no-delete\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("veto_decision_seconds_count{kind=\"http\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("veto_tunnels_open 0"));
    // Both decisions are committed before their answers: at least two
    // entries, in at least one and at most as many commits.
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let (commits, entries) = (
        counter("veto_audit_commits_total"),
        counter("veto_audit_entries_total"),
    );
    assert!(
        entries >= 2 && commits >= 1 && commits <= entries,
        "{metrics}"
    );

    let (code, body) = admin_get(&veto, "/v1/decisions?decision=deny", Some(&token));
    assert_eq!(code, 200);
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rule"], "no-delete");
    let (_, body) = admin_get(&veto, "/v1/policy", Some(&token));
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(p["hash"].as_str().unwrap().starts_with("sha256:"));
    let (_, body) = admin_get(&veto, "/v1/inventory", Some(&token));
    let inv: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["decisions"]["deny"], 1);
}

/// A watcher that stops reading while decisions pour in is never waited
/// for: it misses some, and the stream says how many (`event: skipped`),
/// so that what it saw plus what it was told it skipped is everything.
#[test]
fn a_stream_reader_that_falls_behind_is_told_how_many_it_skipped() {
    use std::io::{Read, Write};
    let veto = Veto::start(POLICY, &[]);
    let token = veto.admin_token();
    // A small receive buffer, so that the kernel does not hold for the
    // reader what it does not read.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&veto.admin.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // HTTP/1.0: the stream comes unchunked, so events can be read as text.
    write!(
        s,
        "GET /v1/decisions/stream HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the stream closed");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    let sent = 16_000;
    let statuses = burst(veto.addr, "DELETE", "http://127.0.0.1:9/x", sent);
    assert_eq!(statuses.get(&403), Some(&sent), "{statuses:?}");

    let (mut decisions, mut skipped) = (0usize, 0usize);
    let mut text = String::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(30);
    while decisions + skipped < sent && Instant::now() < deadline {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        // Whole events only; a partial one waits for the next read.
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: decision") {
                decisions += 1;
            } else if event.contains("event: skipped") {
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                skipped += data.trim().parse::<usize>().unwrap();
            }
        }
    }
    assert!(
        skipped > 0,
        "a reader that fell {sent} behind skipped nothing"
    );
    assert!(decisions > 0, "nothing arrived after the skip");
    assert_eq!(
        decisions + skipped,
        sent,
        "seen {decisions}, told skipped {skipped}"
    );
}
