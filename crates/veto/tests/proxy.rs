//! The edge proxy as clients meet it: `veto run` as a real process, curl and
//! a hyper client through it, real upstream servers on loopback.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// Loopback upstreams are private addresses: a `cidrs` allow opens them.
fn lab_policy(extra_rules: &str) -> String {
    format!(
        "version: 1
defaults: {{ decision: deny }}
detectors:
  employee-id: {{ regex: 'EMP-[0-9]{{6}}' }}
rules:
  - id: no-pii
    effect: deny
    protocols: [http]
    data: [email, employee-id]
    reason: Personal data never leaves.
  - id: no-delete
    effect: deny
    methods: [DELETE]
    protocols: [http]
    reason: Nothing is deleted through veto.
{extra_rules}
  - id: lab
    effect: allow
    to: {{ cidrs: [127.0.0.0/8] }}
"
    )
}

#[test]
fn allowed_and_refused_plain_http() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    let url = format!("http://{up}/v1/items?q=1");

    let (status, head, body) = curl(&veto.proxy_url(), &["-H", "X-Trace: 7", &url]);
    assert_eq!(status, 200, "{head}{body}");
    let allowed_id = header(&head, "veto-request-id")
        .expect("every answer carries Veto-Request-Id")
        .to_string();
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["target"], "/v1/items?q=1");
    assert_eq!(seen["headers"]["x-trace"], "7");
    assert_eq!(seen["headers"]["host"], up.to_string());
    assert!(seen["headers"].get("proxy-connection").is_none());

    // A data rule: an email in the body.
    let (status, head, body) = curl(
        &veto.proxy_url(),
        &["-d", "{\"user\":\"ada@example.org\"}", &url],
    );
    assert_eq!(status, 403, "{head}{body}");
    assert_eq!(header(&head, "veto-decision"), Some("deny"));
    assert_eq!(header(&head, "veto-rule"), Some("no-pii"));
    let id = header(&head, "veto-request-id").unwrap().to_string();
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["decision"], "deny");
    assert_eq!(j["rule"], "no-pii");
    assert_eq!(j["reason"], "Personal data never leaves.");
    assert_eq!(j["request_id"], id.as_str());

    // A method rule.
    let (status, head, _) = curl(&veto.proxy_url(), &["-X", "DELETE", &url]);
    assert_eq!(status, 403);
    assert_eq!(header(&head, "veto-rule"), Some("no-delete"));

    // Every decision is in the trail, with its reason and data classes.
    let records = veto.records(&[]);
    assert_eq!(records.len(), 3);
    let allowed = records
        .iter()
        .find(|r| r["id"] == allowed_id.as_str())
        .unwrap();
    assert_eq!(
        (allowed["decision"].as_str(), allowed["rule"].as_str()),
        (Some("allow"), Some("lab"))
    );
    assert!(eventually(
        || veto.records(&["--decision", "allow"])[0]["status"] == 200
    ));
    let refused = records.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(refused["data"]["email"], 1);
    assert_eq!(refused["status"], 403);
    assert!(
        !refused.to_string().contains("ada@example.org"),
        "values never reach the trail"
    );
    let (code, out, _) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn credentials_are_never_forwarded_and_bad_ones_get_407() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    let url = format!("http://{up}/");
    // Unknown machine: 407, never anonymous.
    let proxy = format!("http://ghost:secret@{}", veto.addr);
    let (status, head, body) = curl(&proxy, &[&url]);
    assert_eq!(status, 407, "{head}{body}");
    assert!(header(&head, "proxy-authenticate").is_some());
    assert!(!body.contains("secret"));

    // A registered machine passes, and its credentials stay at the proxy.
    let (code, token, err) = veto.cli(&["machine", "add", "web"]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    let proxy = format!("http://web:{token}@{}", veto.addr);
    assert!(
        eventually(|| curl(&proxy, &[&url]).0 == 200),
        "{}",
        veto.stderr.lock().unwrap()
    );
    let (_, _, body) = curl(&proxy, &[&url]);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        seen["headers"].get("proxy-authorization").is_none(),
        "{seen}"
    );
    let records = veto.records(&["--machine", "web"]);
    assert!(!records.is_empty());
    assert!(!serde_json::to_string(&records).unwrap().contains(&token));

    // A wrong token for a real machine: 407.
    let proxy = format!("http://web:veto_wrong@{}", veto.addr);
    assert_eq!(curl(&proxy, &[&url]).0, 407);
}

#[test]
fn report_mode_passes_traffic_and_records_would() {
    let up = http_upstream(Duration::ZERO);
    let policy = "version: 1
defaults: { decision: deny, mode: report, private_networks: allow }
";
    let veto = Veto::start(policy, &[]);
    let (status, head, _) = curl(&veto.proxy_url(), &[&format!("http://{up}/x")]);
    assert_eq!(status, 200, "{head}");
    let r = &veto.records(&[])[0];
    assert_eq!(
        (
            r["decision"].as_str(),
            r["would"].as_str(),
            r["rule"].as_str()
        ),
        (Some("allow"), Some("deny"), Some("default"))
    );
}

#[test]
fn private_network_guard_after_dns_and_in_every_ipv6_form() {
    // Allows every name, and no address: the guard is what stands.
    let policy = "version: 1
defaults: { decision: allow }
";
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(policy, &["--resolve", "innocent.example=127.0.0.1"]);
    let port = up.port();
    for url in [
        format!("http://innocent.example:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::127.0.0.1]:{port}/"),
        format!("http://[64:ff9b::7f00:1]:{port}/"),
        format!("http://[2002:7f00:1::1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://0x7f.1:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let (status, head, body) = curl(&veto.proxy_url(), &[&url]);
        assert_eq!(status, 403, "{url}: {head}{body}");
        assert_eq!(header(&head, "veto-rule"), Some("private-network"), "{url}");
        assert!(body.contains("private network"), "{url}: {body}");
    }
    // Its own address is refused even when private networks are allowed.
    let veto2 = Veto::start(
        "version: 1\ndefaults: { decision: allow, private_networks: allow }\n",
        &[],
    );
    let (status, _, body) = curl(&veto2.proxy_url(), &[&format!("http://{}/", veto2.addr)]);
    assert_eq!(status, 403);
    assert!(body.contains("own listening address"), "{body}");
}

#[test]
fn tcp_tunnels_both_ways_and_server_speaks_first() {
    let echo = echo_upstream(None);
    let banner = echo_upstream(Some("SSH-2.0-test\r\n"));
    let veto = Veto::start(&lab_policy(""), &[]);

    let (mut s, head) = connect(veto.addr, &echo.to_string());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    drop(s);

    // Bulk, both ways at once, then a half-close: every byte arrives in
    // order, the end is passed on, and the completion counts them exactly.
    let (mut s, head) = connect(veto.addr, &echo.to_string());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let n = data.len() as u64;
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "{} bytes came back, not the same", back.len());
    assert!(eventually(|| veto
        .records(&[])
        .iter()
        .any(|r| r["bytes_out"] == n && r["bytes_in"] == n)));

    // The server's banner arrives although the client has sent nothing.
    let (mut s, head) = connect(veto.addr, &banner.to_string());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = [0u8; 14];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"SSH-2.0-test\r\n");
    s.write_all(b"hi").unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).unwrap();
    drop(s);
    assert!(eventually(|| veto
        .records(&[])
        .iter()
        .all(|r| r["protocol"] == "tcp" && r["status"] == 200)));
}

#[test]
fn refused_connect_gets_403_json() {
    let policy = "version: 1
defaults: { decision: allow, private_networks: allow }
rules:
  - id: no-db
    effect: deny
    to: { ports: [5432] }
    reason: Databases are reached through the service mesh, not the proxy.
";
    let veto = Veto::start(policy, &[]);
    let (_, head) = connect(veto.addr, "127.0.0.1:5432");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("veto-rule: no-db"),
        "{head}"
    );
    let r = &veto.records(&[])[0];
    assert_eq!(r["rule"], "no-db");
}

#[test]
fn sni_that_differs_from_the_connect_host_is_refused() {
    let echo = echo_upstream(None);
    let policy = "version: 1\ndefaults: { decision: allow, private_networks: allow }\n";
    let veto = Veto::start(policy, &["--resolve", "good.test=127.0.0.1"]);
    let (mut s, head) = connect(veto.addr, &format!("good.test:{}", echo.port()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(&client_hello("evil.test")).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        buf.is_empty(),
        "the ClientHello must not reach the destination: got {} bytes back",
        buf.len()
    );
    assert!(eventually(|| veto
        .records(&["--rule", "sni-mismatch"])
        .len()
        == 1));
    let r = &veto.records(&["--rule", "sni-mismatch"])[0];
    assert!(r["reason"].as_str().unwrap().contains("evil.test"));

    // The right name goes through, and the tunnel is recorded as tls.
    let (mut s, _) = connect(veto.addr, &format!("good.test:{}", echo.port()));
    let hello = client_hello("good.test");
    s.write_all(&hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, hello);
    drop(s);
    assert!(eventually(|| veto
        .records(&["--rule", "default"])
        .iter()
        .any(|r| r["protocol"] == "tls")));
}

/// A minimal TLS ClientHello naming `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let n = sni.as_bytes();
    let mut list = vec![0u8];
    list.extend((n.len() as u16).to_be_bytes());
    list.extend(n);
    let mut sni_body = (list.len() as u16).to_be_bytes().to_vec();
    sni_body.extend(list);
    let mut ext = 0u16.to_be_bytes().to_vec();
    ext.extend((sni_body.len() as u16).to_be_bytes());
    ext.extend(sni_body);
    let mut ch = vec![3, 3];
    ch.extend([7u8; 32]);
    ch.push(0);
    ch.extend(2u16.to_be_bytes());
    ch.extend([0x13, 0x01, 1, 0]);
    ch.extend((ext.len() as u16).to_be_bytes());
    ch.extend(ext);
    let mut hs = vec![1];
    hs.extend(&(ch.len() as u32).to_be_bytes()[1..]);
    hs.extend(ch);
    let mut rec = vec![22, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[test]
fn hot_reload_keeps_the_last_valid_policy() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    let url = format!("http://{up}/");
    assert_eq!(curl(&veto.proxy_url(), &[&url]).0, 200);

    let closed = lab_policy(
        "  - id: closed
    effect: deny
    reason: Closed for maintenance.",
    );
    write(&veto.policy, &closed);
    assert!(
        eventually(|| curl(&veto.proxy_url(), &[&url]).0 == 403),
        "{}",
        veto.stderr.lock().unwrap()
    );

    write(&veto.policy, "version: 1\nrules: [ { id: broken ");
    std::thread::sleep(Duration::from_millis(1500));
    let (status, head, _) = curl(&veto.proxy_url(), &[&url]);
    assert_eq!(status, 403, "the last valid policy stays in force");
    assert_eq!(header(&head, "veto-rule"), Some("closed"));
    assert!(veto.stderr.lock().unwrap().contains("new policy refused"));

    // SIGHUP reloads too.
    write(&veto.policy, &lab_policy(""));
    veto.signal("HUP");
    assert!(eventually(|| curl(&veto.proxy_url(), &[&url]).0 == 200));

    // Every reload is in the chain: old hash, new hash, result.
    let (code, out, err) = veto.cli(&["audit", "events"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["result"].as_str().unwrap())
        .collect();
    assert!(
        results.starts_with(&["loaded", "refused"]) && results.last() == Some(&"loaded"),
        "{results:?}"
    );
    let refused = &events[1]["detail"];
    assert!(refused["new"].is_null() && refused["old"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        refused["errors"][0]
            .as_str()
            .unwrap()
            .contains("veto.yaml:"),
        "{refused}"
    );
    assert_eq!(events[0]["detail"]["new"], events[1]["detail"]["old"]);
    let (code, out, _) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn upstream_failures_are_502_and_504_with_reasons() {
    let policy = "version: 1\ndefaults: { decision: allow, private_networks: allow }\n";
    let veto = Veto::start(policy, &[]);
    // Nothing listens on this port.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, head, body) = curl(&veto.proxy_url(), &[&format!("http://{free}/")]);
    assert_eq!(status, 502, "{head}{body}");
    assert!(header(&head, "veto-request-id").is_some());
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        j["reason"].as_str().unwrap().contains("cannot reach"),
        "{j}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let slow = http_upstream(Duration::from_millis(1500));
    let veto = Veto::start(&lab_policy(""), &[]);
    let proxy = veto.proxy_url();
    let url = format!("http://{slow}/slow");
    let t = std::thread::spawn(move || curl(&proxy, &[&url]));
    std::thread::sleep(Duration::from_millis(500));
    veto.signal("TERM");
    let (status, _, _) = t.join().unwrap();
    assert_eq!(status, 200, "the request in flight finished");
    let mut veto = veto;
    let code = veto.child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    let (code, out, _) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn malformed_and_smuggling_requests_are_refused() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    // Content-Length with Transfer-Encoding: see
    // `content_length_with_transfer_encoding_is_refused` below.
    let cases: Vec<(String, &str)> = vec![
        (
            format!("GET http://{up}/ HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"),
            "400",
        ),
        (
            format!(
                "POST http://{up}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            ),
            "400",
        ),
        (
            format!(
                "GET http://{up}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
            ),
            "400",
        ),
        (
            format!(
                "GET http://{up}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(100_000)
            ),
            "431",
        ),
        (
            format!(
                "GET http://{up}/ HTTP/1.1\r\nHost: x\r\n{}\r\n",
                "X-H: 1\r\n".repeat(200)
            ),
            "431",
        ),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "400"),
        ("\u{1}\u{2}garbage\r\n\r\n".to_string(), "400"),
    ];
    for (req, want) in cases {
        let got = raw(veto.addr, req.as_bytes());
        let status = got.split_whitespace().nth(1).unwrap_or("(closed)");
        assert_eq!(
            status,
            want,
            "{:?} -> {:?}",
            &req[..req.len().min(80)],
            &got[..got.len().min(300)]
        );
    }
    // And the proxy still serves.
    assert_eq!(curl(&veto.proxy_url(), &[&format!("http://{up}/")]).0, 200);
}

#[test]
fn a_hyper_client_through_the_proxy() {
    use http_body_util::{BodyExt, Empty};
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(veto.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for (method, want) in [("GET", 200), ("DELETE", 403), ("GET", 200)] {
            let req = hyper::Request::builder()
                .method(method)
                .uri(format!("http://{up}/keep-alive"))
                .header("host", up.to_string())
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status().as_u16(), want);
            assert!(resp.headers().contains_key("veto-request-id"));
            let _ = resp.into_body().collect().await.unwrap();
        }
    });
}

/// Content-Length with Transfer-Encoding is refused with 400 before hyper
/// reads it (the head guard), the connection is closed, and the upstream
/// never sees the request hidden in the body.
#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    let smuggled = format!("GET http://{up}/hidden HTTP/1.1\r\nHost: x\r\n\r\n");
    let req = format!(
        "POST http://{up}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let got = raw(veto.addr, req.as_bytes());
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert_eq!(
        got.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {got}"
    );
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(got.contains("request smuggling"), "{got}");
    assert!(!got.contains("/hidden"));
    let records = veto.records(&[]);
    assert!(records.iter().all(|r| r["path"] != "/hidden"));
    assert!(
        records
            .iter()
            .any(|r| r["rule"] == "malformed-request" && r["status"] == 400),
        "{records:?}"
    );
}

#[test]
fn slow_heads_idle_tunnels_and_greedy_clients_are_bounded() {
    let echo = echo_upstream(None);
    let veto = Veto::start(
        &lab_policy(""),
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--max-per-client",
            "3",
        ],
    );
    // Slowloris: a head that never ends is cut off.
    let mut s = std::net::TcpStream::connect(veto.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a slow head held the connection for {:?}",
        started.elapsed()
    );

    // An idle tunnel is closed.
    let (mut t, head) = connect(veto.addr, &echo.to_string());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    t.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    t.read_exact(&mut one).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = t.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle tunnel lived {:?}",
        started.elapsed()
    );

    // A fourth connection from the same address is turned away.
    let held: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(veto.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = std::net::TcpStream::connect(veto.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = extra.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "the connection over the limit was served: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(held);
}

#[test]
fn a_grant_lapses_when_unused_and_use_keeps_it() {
    let up = http_upstream(Duration::ZERO);
    let policy = "version: 1
defaults: { decision: deny }
rules:
  - id: lab-grant
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
    expire_if_unused: 2s
";
    let veto = Veto::start(policy, &[]);
    let url = format!("http://{up}/g");
    assert_eq!(curl(&veto.proxy_url(), &[&url]).0, 200);
    // Used twice a second: stays alive well past its 2 s idle limit. The
    // engine counts whole seconds and errs toward expiring (a 1.1 s gap can
    // read as 2 s), so the cadence keeps every gap under one second.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(curl(&veto.proxy_url(), &[&url]).0, 200);
    }
    // Left unused for longer than 2 s: lapses, and the refusal says why.
    std::thread::sleep(Duration::from_millis(3100));
    let (status, _, body) = curl(&veto.proxy_url(), &[&url]);
    assert_eq!(status, 403, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("grant `lab-grant` expired") && reason.contains("last used"),
        "{reason}"
    );
}

#[test]
fn redaction_masks_cards_and_keeps_json_valid() {
    let up = http_upstream(Duration::ZERO);
    let policy = "version: 1
defaults: { decision: deny }
rules:
  - id: mask-cards
    effect: redact
    protocols: [http]
    data: [credit_card]
    reason: Card numbers are masked before they leave.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";
    let veto = Veto::start(policy, &[]);
    let body = r#"{"ticket":"card 4111 1111 1111 1111 declined","n":1}"#;
    let (status, head, resp) = curl(
        &veto.proxy_url(),
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &format!("http://{up}/tickets"),
        ],
    );
    assert_eq!(status, 200, "{head}{resp}");
    let seen: serde_json::Value = serde_json::from_str(&resp).unwrap();
    let sent = seen["body"].as_str().unwrap();
    assert!(!sent.contains("4111"), "{sent}");
    let json: serde_json::Value = serde_json::from_str(sent).expect("still valid JSON");
    assert_eq!(json["ticket"], "card [REDACTED:credit_card] declined");
    assert_eq!(
        seen["headers"]["content-length"],
        sent.len().to_string().as_str()
    );
    let r = &veto.records(&[])[0];
    assert_eq!(
        (r["decision"].as_str(), r["rule"].as_str()),
        (Some("redact"), Some("mask-cards"))
    );
    assert_eq!(r["data"]["credit_card"], 1);

    // In the query and a header value too: masked where they are, the URL
    // still well-formed, and the record holds the path without the query.
    let (status, _, resp) = curl(
        &veto.proxy_url(),
        &[
            "-H",
            "X-Note: card 5500 0000 0000 0004 on file",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"n":2}"#,
            &format!("http://{up}/tickets?cc=4111111111111111&keep=1"),
        ],
    );
    assert_eq!(status, 200, "{resp}");
    let seen: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(
        seen["target"],
        "/tickets?cc=%5BREDACTED:credit_card%5D&keep=1"
    );
    assert_eq!(
        seen["headers"]["x-note"],
        "card [REDACTED:credit_card] on file"
    );
    assert_eq!(seen["body"], r#"{"n":2}"#);
    let recs = veto.records(&[]);
    let r = recs.last().unwrap();
    assert_eq!(r["decision"], "redact");
    assert_eq!(r["path"], "/tickets");
    assert_eq!(r["data"]["credit_card"], 2);
    assert!(!r.to_string().contains("4111"), "{r}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Compressed bodies are read for data too; what veto cannot decode, or
/// what decodes past the inspection limit, is refused, never assumed clean.
#[test]
fn compressed_bodies_are_inspected_and_bombs_refused() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &["--inspect-limit", "1MiB"]);
    let url = format!("http://{up}/upload");
    let dir = tempfile::tempdir().unwrap();
    let send = |name: &str, body: &[u8], encoding: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, body).unwrap();
        curl(
            &veto.proxy_url(),
            &[
                "-H",
                &format!("Content-Encoding: {encoding}"),
                "--data-binary",
                &format!("@{}", f.display()),
                &url,
            ],
        )
    };
    let (status, _, body) = send("pii.gz", &gzip(b"{\"user\":\"ada@example.org\"}"), "gzip");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no-pii"));

    let (status, _, resp) = send("clean.gz", &gzip(b"{\"page\":\"/pricing\"}"), "gzip");
    assert_eq!(status, 200, "{resp}");
    let seen: serde_json::Value = serde_json::from_str(&resp).unwrap();
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&unhex(seen["body_hex"].as_str().unwrap())[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(
        plain, "{\"page\":\"/pricing\"}",
        "the body goes out as it came"
    );

    let (status, _, body) = send("bomb.gz", &gzip(&vec![b'a'; 8 << 20]), "gzip");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("inspection limit"), "{body}");

    let (status, _, body) = send("x.br", b"\x1b\x03\x00", "br");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`br`-encoded"), "{body}");
}

#[test]
fn a_rotated_token_works_for_its_overlap_then_gets_407() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    let url = format!("http://{up}/");
    let (_, old, _) = veto.cli(&["machine", "add", "web"]);
    let old_proxy = format!("http://web:{}@{}", old.trim(), veto.addr);
    assert!(eventually(|| curl(&old_proxy, &[&url]).0 == 200));

    let (code, new, err) = veto.cli(&["machine", "rotate", "web", "--overlap", "5s"]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(new.trim(), old.trim());
    let new_proxy = format!("http://web:{}@{}", new.trim(), veto.addr);
    assert!(eventually(|| curl(&new_proxy, &[&url]).0 == 200));
    assert_eq!(
        curl(&old_proxy, &[&url]).0,
        200,
        "the old token works during the overlap"
    );

    assert!(
        eventually(|| curl(&old_proxy, &[&url]).0 == 407),
        "the old token outlived its overlap"
    );
    let (_, _, body) = curl(&old_proxy, &[&url]);
    assert!(body.contains("rotated"), "{body}");
    assert_eq!(curl(&new_proxy, &[&url]).0, 200);
}

#[test]
fn idle_credentials_lapse_and_last_use_survives_a_clean_stop() {
    let up = http_upstream(Duration::ZERO);
    let mut veto = Veto::start(&lab_policy(""), &[]);
    let url = format!("http://{up}/");
    let (code, token, err) = veto.cli(&["machine", "add", "cron", "--idle-ttl", "3s"]);
    assert_eq!(code, 0, "{err}");
    let proxy = format!("http://cron:{}@{}", token.trim(), veto.addr);
    assert!(eventually(|| curl(&proxy, &[&url]).0 == 200));
    // Used twice a second: alive well past three seconds.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(curl(&proxy, &[&url]).0, 200);
    }
    // Unused for longer than its idle limit: 407, saying why.
    std::thread::sleep(Duration::from_millis(4100));
    let (status, _, body) = curl(&proxy, &[&url]);
    assert_eq!(status, 407, "{body}");
    assert!(
        body.contains("lapsed") && body.contains("idle limit 3s"),
        "{body}"
    );

    // A use just before a clean stop (uses are written every 5 s) is
    // written when veto stops.
    let (_, token, _) = veto.cli(&["machine", "add", "batch"]);
    let proxy = format!("http://batch:{}@{}", token.trim(), veto.addr);
    assert!(eventually(|| curl(&proxy, &[&url]).0 == 200));
    veto.signal("TERM");
    let _ = veto.child.wait();
    let (code, out, err) = veto.cli(&["machine", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(m["last_used"].is_string(), "{m}");
    }
}

/// The stores hold records, credential hashes and the change log: only
/// their owner reads them, SQLite's side files included.
#[test]
fn stores_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(&lab_policy(""), &[]);
    assert_eq!(curl(&veto.proxy_url(), &[&format!("http://{up}/")]).0, 200);
    let data = veto.data();
    let mut seen = 0;
    for name in ["audit.db", "audit.db-wal", "identity.db", "control.db"] {
        let p = data.join(name);
        if let Ok(m) = std::fs::metadata(&p) {
            seen += 1;
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
    }
    assert!(
        seen >= 3,
        "the stores were not where expected under {}",
        data.display()
    );
}

/// A name with a dead first address: the tunnel goes to the next checked
/// address (one dial loop for every tunnel), never elsewhere.
#[test]
fn a_tunnel_passes_over_a_dead_first_address() {
    let echo = echo_upstream(None);
    let veto = Veto::start(
        &lab_policy(""),
        &[
            "--resolve",
            "two.test=127.0.0.2",
            "--resolve",
            "two.test=127.0.0.1",
        ],
    );
    let (mut s, head) = connect(veto.addr, &format!("two.test:{}", echo.port()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
}
