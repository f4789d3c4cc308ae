//! The README's first steps, as a new user takes them: `veto run` in a
//! directory holding `veto.yaml` (no `--policy`), and curl with nothing but
//! the proxy environment variables the README exports, for plain HTTP and
//! HTTPS through a CONNECT tunnel.

mod common;

use common::*;
use std::process::Command;

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: never-cloud-metadata
    effect: deny
    to: { cidrs: [169.254.169.254/32] }
    reason: Workloads never talk to the cloud metadata service.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

/// curl as the README sets it up: no `-x`, only the environment.
fn curl_env(proxy: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "10"])
        .args(args)
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("http_proxy", proxy)
        .env("https_proxy", proxy)
        .env("HTTP_PROXY", proxy)
        .env("HTTPS_PROXY", proxy)
        .output()
        .expect("curl is installed (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // With a CONNECT, curl prints the proxy's `200` first; keep the last head.
    let last = text
        .rmatch_indices("HTTP/")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || text[..i].ends_with("\r\n\r\n"))
        .unwrap_or(0);
    let (head, body) = text[last..].split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn curl_with_the_readme_environment_goes_through_veto_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("veto.yaml"), POLICY).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
    cmd.args(["run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--resolve", "api.test=127.0.0.1"])
        .current_dir(dir.path());
    let policy = dir.path().join("veto.yaml");
    let veto = Veto::spawn(cmd, dir, policy);
    let proxy = veto.proxy_url();

    // Plain HTTP: curl reads only the lowercase http_proxy for it.
    let upstream = http_upstream(std::time::Duration::ZERO);
    let (status, head, body) = curl_env(&proxy, &[&format!("http://{upstream}/hello")]);
    assert_eq!(status, 200, "{head}\n{body}");
    let id = header(&head, "veto-request-id").expect("every answer names its record");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["target"], "/hello",
        "the upstream got the request: {seen}"
    );

    // A refusal, with its reason, through the environment alone.
    let (status, head, body) = curl_env(&proxy, &["http://169.254.169.254/latest/"]);
    assert_eq!(status, 403, "{head}\n{body}");
    assert_eq!(header(&head, "veto-rule"), Some("never-cloud-metadata"));
    let refusal: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["decision"], "deny");

    // HTTPS: a CONNECT tunnel from https_proxy, TLS end to end.
    let https = common::tls::https_upstream(&["api.test"]);
    let url = format!("https://api.test:{}/secure", https.addr.port());
    let ca = https.ca.to_str().unwrap();
    let (status, head, body) = curl_env(&proxy, &["--cacert", ca, &url]);
    assert_eq!(status, 200, "{head}\n{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["target"], "/secure");

    // `./veto.yaml` was the policy in force, and every exchange is in the
    // trail under `./.veto`, the default data directory.
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["audit", "query"])
        .current_dir(veto.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout);
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{out}");
    assert_eq!(records[0]["id"], id);
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(records[1]["rule"], "never-cloud-metadata");
    assert_eq!(records[2]["protocol"], "tls");
    assert_eq!(records[2]["host"], "api.test");
    assert_eq!(records[2]["decision"], "allow");
}
