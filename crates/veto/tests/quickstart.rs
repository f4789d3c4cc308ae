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
    let mut cmd = Command::new("curl");
    cmd.args(args);
    for var in ["ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        cmd.env(var, proxy);
    }
    curl_run(cmd)
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
    // A tunnel's protocol is in its completion entry, written when the
    // tunnel closes, just after curl is done: wait for it.
    let data = veto.dir.path().join(".veto");
    common::eventually(|| {
        let r = veto.records_at(&data, &[]);
        r.len() == 3 && r[2]["protocol"] == "tls"
    });
    let records = veto.records_at(&data, &[]);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["id"], id);
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(records[1]["rule"], "never-cloud-metadata");
    assert_eq!(records[2]["protocol"], "tls");
    assert_eq!(records[2]["host"], "api.test");
    assert_eq!(records[2]["decision"], "allow");
}
