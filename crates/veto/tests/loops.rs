//! Loops and chains (policy `loops:`): a request relayed back into veto is
//! refused at its second pass (`508`, rule `loop`, the chain in the
//! reason), a chain deeper than `max_depth` likewise, and everything veto
//! forwards carries its own id in `CDN-Loop` (RFC 8586).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

/// An upstream that relays every request it gets through `proxy` to `next`,
/// passing on the `CDN-Loop` it received, as an intermediary must; it
/// answers with the relayed request's status and body.
fn relay(proxy: String, next: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (proxy, next) = (proxy.clone(), next.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut loops = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("cdn-loop")
                    {
                        loops.push(v.trim().to_string());
                    }
                }
                let mut cmd = Command::new("curl");
                cmd.args(["-s", "-x", &proxy, "-w", "\n%{http_code}"]);
                for l in &loops {
                    cmd.args(["-H", &format!("CDN-Loop: {l}")]);
                }
                let out = cmd.arg(&next).output().unwrap();
                let body = String::from_utf8_lossy(&out.stdout).into_owned();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn a_request_relayed_back_into_veto_is_refused_as_a_loop() {
    let echo = http_upstream(Duration::ZERO);
    let veto = Veto::start(ALLOW_LOOPBACK, &[]);
    let proxy = veto.proxy_url();
    // The relay sends what it gets on through veto again: the second pass
    // is refused, and the relay hands the refusal back.
    let to_echo = relay(proxy.clone(), format!("http://{echo}/end"));
    let (status, _, body) = curl(&proxy, &[&format!("http://{to_echo}/start")]);
    assert_eq!(status, 200, "{body}");
    let (echoed, code) = body.rsplit_once('\n').unwrap();
    assert_eq!(
        code, "508",
        "the relayed request came back through veto: {echoed}"
    );
    let refusal: serde_json::Value = serde_json::from_str(echoed).unwrap();
    assert_eq!(refusal["rule"], "loop");
    let why = refusal["reason"].as_str().unwrap();
    assert!(
        why.contains("already passed this veto (veto-") && why.contains("CDN-Loop"),
        "{why}"
    );

    // What veto forwards carries its id.
    let (status, _, seen) = curl(&proxy, &[&format!("http://{echo}/first")]);
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    let cdn_loop = seen["headers"]["cdn-loop"].as_str().unwrap_or_default();
    assert!(cdn_loop.starts_with("veto-"), "{seen}");
    // The same id every time: it is the node's, not the request's.
    assert!(why.contains(cdn_loop), "{why} vs {cdn_loop}");

    let loops = veto.records(&["--rule", "loop"]);
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0]["decision"], "deny");
    assert_eq!(loops[0]["status"], 508);
}

#[test]
fn a_chain_deeper_than_max_depth_is_refused_and_other_cdns_pass() {
    let echo = http_upstream(Duration::ZERO);
    let policy = format!("{ALLOW_LOOPBACK}loops: {{ max_depth: 3 }}\n");
    let veto = Veto::start(&policy, &[]);
    let proxy = veto.proxy_url();
    let url = format!("http://{echo}/x");
    let chain = "veto-000000000001, veto-000000000002, veto-000000000003";
    let (status, _, body) = curl(&proxy, &["-H", &format!("CDN-Loop: {chain}"), &url]);
    assert_eq!(status, 200, "three vetos are within max_depth 3: {body}");
    let (status, _, body) = curl(
        &proxy,
        &[
            "-H",
            &format!("CDN-Loop: {chain}"),
            "-H",
            "CDN-Loop: veto-000000000004",
            &url,
        ],
    );
    assert_eq!(status, 508, "{body}");
    assert!(
        body.contains("4 vetos") && body.contains("max_depth"),
        "{body}"
    );
    let (status, _, body) = curl(&proxy, &["-H", "CDN-Loop: cloudflare, fastly", &url]);
    assert_eq!(status, 200, "other CDNs are not vetos: {body}");
}
