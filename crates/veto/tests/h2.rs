//! HTTP/2 to the proxy: a hyper client speaking h2 with prior knowledge on
//! the plain listener (h2c), and h2 by ALPN on the TLS listener. Requests
//! are decided, forwarded and answered as over HTTP/1.1; CONNECT streams
//! carry tunnels; a silent connection is closed at the head timeout.

mod common;

use bytes::Bytes;
use common::{Veto, echo_upstream, eventually, http_upstream};
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::Read;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: no-deletes
    effect: deny
    protocols: [http, https]
    methods: [DELETE]
    reason: Nothing is deleted through veto.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An h2 connection over any stream.
async fn h2<S>(io: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("an h2 handshake with veto");
    tokio::spawn(conn);
    send
}

async fn get(
    send: &mut Sender,
    method: Method,
    url: &str,
) -> (StatusCode, hyper::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_decided_forwarded_and_multiplexed() {
    let up = http_upstream(Duration::ZERO);
    let echo = echo_upstream(None);
    let veto = Veto::start(POLICY, &[]);
    let mut send = h2(tokio::net::TcpStream::connect(veto.addr).await.unwrap()).await;

    let (status, head, body) = get(&mut send, Method::GET, &format!("http://{up}/h2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(head.contains_key("veto-request-id"));
    assert!(body.contains("/h2"), "{body}");

    let (status, head, body) = get(&mut send, Method::DELETE, &format!("http://{up}/x")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(head["veto-decision"], "deny");
    assert_eq!(head["veto-rule"], "no-deletes");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["reason"], "Nothing is deleted through veto.");
    assert_eq!(j["request_id"], head["veto-request-id"].to_str().unwrap());

    // Twenty at once on the one connection.
    let all = (0..20).map(|i| {
        let mut s = send.clone();
        let url = format!("http://{up}/many/{i}");
        tokio::spawn(async move { get(&mut s, Method::GET, &url).await.0 })
    });
    for r in all {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }

    // A CONNECT stream is a tunnel.
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(echo.to_string())
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut tunnel = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    tunnel.write_all(b"over h2\n").await.unwrap();
    let mut back = [0u8; 8];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"over h2\n");
    drop(tunnel);

    let v = &veto;
    assert!(eventually(|| {
        let recs = v.records(&[]);
        recs.iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/many/")))
            .count()
            == 20
            && recs
                .iter()
                .any(|r| r["method"] == "DELETE" && r["decision"] == "deny")
            && recs
                .iter()
                .any(|r| r["protocol"] == "tcp" && r["bytes_out"] == 8)
    }));
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_head_timeout() {
    let veto = Veto::start(POLICY, &["--header-timeout", "1s"]);
    let mut s = std::net::TcpStream::connect(veto.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "held for {took:?}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_on_the_tls_listener() {
    let up = http_upstream(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["ca", "init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let policy = dir.path().join("veto.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let veto = Veto::start_in(dir, policy, &["--listen-tls", "127.0.0.1:0"]);

    let cfg = common::tls::client_config(&veto.data().join("ca.pem"), b"h2");
    let tcp = tokio::net::TcpStream::connect(veto.tls.unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("veto's TLS listener with veto's CA");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(tls).await;
    let (status, head, body) = get(&mut send, Method::GET, &format!("http://{up}/tls-h2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(head.contains_key("veto-request-id"));
    assert!(body.contains("/tls-h2"), "{body}");
}

/// Over h2 the request names its host in `:authority`; a `host` header
/// naming another is malformed (RFC 9113 8.3.1), and an allowed request
/// reaches the upstream with the authority as its Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_and_authority_must_agree() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &[]);
    let mut send = h2(tokio::net::TcpStream::connect(veto.addr).await.unwrap()).await;
    let req = Request::builder()
        .uri(format!("http://{up}/h2"))
        .header("host", "other.test")
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().contains_key("veto-request-id"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(":authority"));

    let (status, _, body) = get(&mut send, Method::GET, &format!("http://{up}/h2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["host"], up.to_string(), "{seen}");
}

/// The same ways around a refusal, tried over HTTP/2: a path in another
/// spelling, an encoded slash, a method override. Each is decided as over
/// HTTP/1.1, on what is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_paths_and_overrides_are_decided_as_forwarded() {
    let up = http_upstream(Duration::ZERO);
    let policy = "version: 1
defaults: { decision: deny }
rules:
  - id: no-admin
    effect: deny
    to: { cidrs: [127.0.0.0/8] }
    paths: [\"/admin/**\"]
    reason: No admin area.
  - id: no-deletes
    effect: deny
    to: { cidrs: [127.0.0.0/8] }
    methods: [DELETE]
    reason: Nothing is deleted through veto.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";
    let veto = Veto::start(policy, &[]);
    let mut send = h2(tokio::net::TcpStream::connect(veto.addr).await.unwrap()).await;
    for path in ["//admin/users", "/x//../admin", "/.//admin", "/%61dmin"] {
        let (status, head, body) = get(&mut send, Method::GET, &format!("http://{up}{path}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(head["veto-rule"], "no-admin", "{path}");
    }
    let (status, head, body) = get(&mut send, Method::GET, &format!("http://{up}/a%2Fadmin")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("encoded slash"), "{body}");
    let id = head["veto-request-id"].to_str().unwrap().to_string();

    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{up}/items/1"))
        .header("x-http-method-override", "DELETE")
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["veto-rule"], "no-deletes");

    let v = &veto;
    assert!(eventually(|| v
        .records(&["--rule", "malformed-request"])
        .iter()
        .any(|r| r["id"] == id.as_str() && r["status"] == 400)));
}
