//! TLS interception end to end: `veto ca init`, then curl through `veto
//! run` to a real HTTPS upstream on loopback. Tunnels a rule needs to see
//! inside are opened and each request inside is decided as `https`; the
//! others pass untouched; upstream certificates are verified.

mod common;

use common::{Veto, curl, eventually, tls};
use std::process::Command;

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: no-deletes
    effect: deny
    to: { hosts: [api.test] }
    methods: [DELETE]
    reason: Nothing is deleted through veto.
  - id: mask-cards
    effect: redact
    to: { hosts: [api.test] }
    data: [credit_card]
    reason: Card numbers are masked before they leave.
  - id: no-cloud-keys
    effect: deny
    to: { hosts: [api.test] }
    data: [aws_access_key]
    reason: Cloud keys never leave.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

/// `veto run` with a CA made by `veto ca init`, names resolved to loopback.
fn start(upstream: &tls::Https, trust_upstream: bool) -> Veto {
    start_with(POLICY, upstream, trust_upstream)
}

fn start_with(policy_text: &str, upstream: &tls::Https, trust_upstream: bool) -> Veto {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["ca", "init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ca.pem"), "{stdout}");
    let policy = dir.path().join("veto.yaml");
    std::fs::write(&policy, policy_text).unwrap();
    let ca = upstream.ca.display().to_string();
    let mut extra = vec![
        "--resolve",
        "api.test=127.0.0.1",
        "--resolve",
        "pinned.test=127.0.0.1",
    ];
    if trust_upstream {
        extra.extend(["--upstream-ca", &ca]);
    }
    Veto::start_in(dir, policy, &extra)
}

fn ca_of(veto: &Veto) -> String {
    veto.data().join("ca.pem").display().to_string()
}

#[test]
fn ca_init_makes_a_private_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_veto"))
            .args(["ca", "init", "--data"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let again = run();
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
}

#[test]
fn requests_inside_an_opened_tunnel_are_decided_one_by_one() {
    let up = tls::https_upstream(&["api.test", "pinned.test"]);
    let veto = start(&up, true);
    let ca = ca_of(&veto);
    let url = |path: &str| format!("https://api.test:{}{path}", up.addr.port());

    // Allowed inside: the upstream answers, and the answer carries the id
    // of its own record.
    let (status, head, body) = curl(&veto.proxy_url(), &["--cacert", &ca, &url("/ok?x=1")]);
    assert_eq!(status, 200, "{head}\n{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["target"], "/ok?x=1");
    assert_eq!(
        seen["headers"]["host"],
        format!("api.test:{}", up.addr.port())
    );
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("veto-request-id: "))
        .expect("the answer names its record")
        .trim()
        .to_string();
    let recs = veto.records(&[]);
    let inner = recs
        .iter()
        .find(|r| r["id"] == id)
        .expect("the request's record");
    assert_eq!(inner["protocol"], "https");
    assert_eq!(inner["path"], "/ok");
    assert_eq!(inner["decision"], "allow");
    assert_eq!(inner["rule"], "lab");
    let tunnel = recs
        .iter()
        .find(|r| r["protocol"] == "tls")
        .expect("the tunnel's record");
    assert_eq!(tunnel["rule"], "no-deletes");
    assert!(
        tunnel["reason"]
            .as_str()
            .unwrap()
            .contains("opened to decide each request"),
        "{tunnel}"
    );

    // Refused inside, by method: the contract's 403, from within the tunnel.
    let (status, head, body) = curl(
        &veto.proxy_url(),
        &["--cacert", &ca, "-X", "DELETE", &url("/items/1")],
    );
    assert_eq!(status, 403, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("veto-rule: no-deletes"),
        "{head}"
    );
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["reason"], "Nothing is deleted through veto.");

    // Redacted inside: the upstream never sees the card, and JSON stays JSON.
    let (status, _, body) = curl(
        &veto.proxy_url(),
        &[
            "--cacert",
            &ca,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"note":"card 4111 1111 1111 1111"}"#,
            &url("/tickets"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sent: serde_json::Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["note"], "card [REDACTED:credit_card]");

    // Refused inside, by data: a key in the body never reaches upstream.
    let (status, head, body) = curl(
        &veto.proxy_url(),
        &[
            "--cacert",
            &ca,
            "--data-binary",
            "key=AKIAIOSFODNN7EXAMPLE",
            &url("/upload"),
        ],
    );
    assert_eq!(status, 403, "{head}\n{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["rule"], "no-cloud-keys");
    let rec = veto
        .records(&["--rule", "no-cloud-keys"])
        .pop()
        .expect("the refusal's record");
    assert_eq!(rec["protocol"], "https");
    assert_eq!(rec["data"]["aws_access_key"], 1);
    assert!(!rec.to_string().contains("AKIA"), "{rec}");

    // HTTP/2 to the client, HTTP/1.1 to this upstream.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["--http2", "--cacert", &ca, "-x", &veto.proxy_url()])
        .arg(url("/h2"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    let (status, _, _) = curl(
        &veto.proxy_url(),
        &["--http2", "--cacert", &ca, "-X", "DELETE", &url("/h2")],
    );
    assert_eq!(status, 403);

    // A request inside naming another host is fronting: refused.
    let (status, _, body) = curl(
        &veto.proxy_url(),
        &["--cacert", &ca, "-H", "Host: pinned.test", &url("/")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("sni-mismatch"), "{body}");

    let (code, out, err) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn tunnels_no_rule_needs_to_see_are_never_opened() {
    let up = tls::https_upstream(&["api.test", "pinned.test"]);
    let veto = start(&up, true);
    // Trusting only the upstream's own CA (as a client that pins it would):
    // this works only if veto passes the tunnel through untouched.
    let ca = up.ca.display().to_string();
    let url = format!("https://pinned.test:{}/pinned", up.addr.port());
    let (status, _, body) = curl(&veto.proxy_url(), &["--cacert", &ca, &url]);
    assert_eq!(status, 200, "{body}");
    // Decided before any byte, the tunnel is recorded as `tcp` until its
    // completion (written once it closes, after the answer) says `tls`.
    assert!(eventually(|| {
        let recs = veto.records(&["--host", "pinned.test"]);
        recs.len() == 1 && recs[0]["protocol"] == "tls"
    }));
    let recs = veto.records(&["--host", "pinned.test"]);
    assert_eq!(recs[0]["rule"], "lab");
}

#[test]
fn untrusted_upstreams_are_502_and_refused_leaves_refuse_the_tunnel() {
    let up = tls::https_upstream(&["api.test"]);
    // No --upstream-ca: the system roots do not know the upstream's CA.
    let veto = start(&up, false);
    let ca = ca_of(&veto);
    let url = format!("https://api.test:{}/", up.addr.port());
    let (status, _, body) = curl(&veto.proxy_url(), &["--cacert", &ca, &url]);
    assert_eq!(status, 502, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        j["reason"].as_str().unwrap().contains("cannot be trusted"),
        "{body}"
    );

    // A client that does not trust veto's CA refuses the minted leaf: veto
    // cannot see inside, so the rule that needed to refuses the tunnel.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "-x",
            &veto.proxy_url(),
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(60), "curl: certificate problem");
    assert!(common::eventually(|| {
        veto.records(&["--decision", "deny"]).iter().any(|r| {
            r["rule"] == "no-deletes"
                && r["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("could not open the tunnel")
        })
    }));
}

#[test]
fn with_intercept_never_the_tunnel_is_decided_unseen_and_fails_closed() {
    let up = tls::https_upstream(&["api.test"]);
    let policy = POLICY.replace("rules:", "tls: { intercept: never }\nrules:");
    let veto = start_with(&policy, &up, true);
    let (_, head) = common::connect(veto.addr, &format!("api.test:{}", up.addr.port()));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("veto-rule: no-deletes"),
        "the rule veto could not check refuses: {head}"
    );
    let url = format!("https://api.test:{}/", up.addr.port());
    let (status, _, _) = curl(&veto.proxy_url(), &["--cacert", &ca_of(&veto), &url]);
    assert_eq!(status, 403);
}

#[test]
fn an_http2_upstream_is_spoken_to_in_http2() {
    let up = tls::h2_upstream(&["api.test"]);
    let veto = start(&up, true);
    let ca = ca_of(&veto);
    let url = format!("https://api.test:{}/v2/items?q=1", up.addr.port());
    let (status, _, body) = curl(&veto.proxy_url(), &["--http1.1", "--cacert", &ca, &url]);
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["target"], "/v2/items?q=1");
    assert_eq!(seen["authority"], format!("api.test:{}", up.addr.port()));
    assert!(seen["headers"].get("host").is_none(), "{seen}");
    let (status, _, _) = curl(
        &veto.proxy_url(),
        &["--http2", "--cacert", &ca, "-X", "DELETE", &url],
    );
    assert_eq!(status, 403);
}

/// Inside an opened tunnel every HTTP/1.1 head goes through the same guard
/// as on the listener: a head with both framings (request smuggling) is
/// refused with veto's 400 and recorded as `https` to the tunnel's host,
/// never passed to the upstream.
#[test]
fn a_smuggled_head_inside_an_opened_tunnel_is_refused_and_recorded() {
    use std::io::{Read, Write};
    let up = tls::https_upstream(&["api.test"]);
    let veto = start(&up, true);
    let (tcp, head) = common::connect(veto.addr, &format!("api.test:{}", up.addr.port()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let cfg = tls::client_config(&veto.data().join("ca.pem"), b"http/1.1");
    let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        b"POST /items HTTP/1.1\r\nHost: api.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let answer = String::from_utf8_lossy(&out).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Transfer-Encoding"), "{answer}");
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("veto-request-id: "))
        .unwrap_or_else(|| panic!("no Veto-Request-Id: {answer}"))
        .trim()
        .to_string();
    let records = veto.records(&["--rule", "malformed-request"]);
    let r = records
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no record {id}: {records:?}"));
    assert_eq!(r["protocol"], "https");
    assert_eq!(r["host"], "api.test");
    assert_eq!(r["port"], up.addr.port());
    assert_eq!(r["status"], 400);
}
