//! Upstream connections for plain HTTP, as upstreams see them: reused by a
//! client's kept-alive connection and across clients, in origin form, and
//! replaced without a failed request when the upstream closed them.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const POLICY: &str = ALLOW_LOOPBACK;

/// An upstream on loopback that counts the connections it accepts and
/// serves each with `serve` (given the connection's number, from 1).
fn counting(serve: fn(TcpStream, usize)) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::spawn(move || serve(stream, n));
        }
    });
    (addr, accepted)
}

/// `http_upstream`, counting the connections it accepts.
fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    counting(|s, _| serve_http(s, Duration::ZERO))
}

/// An upstream that answers one request per connection and then closes it,
/// without saying so (no `Connection: close`), as a server restarting or
/// timing out idle connections does.
fn one_shot_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    counting(|mut s, n| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let body = format!("connection {n}");
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = s.flush();
    })
}

/// Requests on one kept-alive client connection, in turn to each upstream.
fn interleaved(proxy: SocketAddr, ups: &[SocketAddr], rounds: usize) -> Vec<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut out = Vec::new();
        for i in 0..rounds {
            for up in ups {
                let req = hyper::Request::builder()
                    .uri(format!("http://{up}/r?i={i}"))
                    .header("host", up.to_string())
                    .body(Empty::<bytes::Bytes>::new())
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                out.push((status, String::from_utf8_lossy(&body).into_owned()));
            }
        }
        out
    })
}

#[test]
fn a_kept_alive_client_reuses_one_upstream_connection_per_upstream() {
    let (a, a_conns) = counting_upstream();
    let (b, b_conns) = counting_upstream();
    let veto = Veto::start(POLICY, &[]);
    let answers = interleaved(veto.addr, &[a, b], 10);
    assert_eq!(answers.len(), 20);
    for (n, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        let seen: serde_json::Value = serde_json::from_str(body).unwrap();
        // Origin form to the upstream, with the name in Host.
        assert_eq!(seen["target"], format!("/r?i={}", n / 2), "{seen}");
        let up = if n % 2 == 0 { a } else { b };
        assert_eq!(seen["headers"]["host"], up.to_string(), "{seen}");
    }
    assert_eq!(a_conns.load(Ordering::SeqCst), 1);
    assert_eq!(b_conns.load(Ordering::SeqCst), 1);
}

#[test]
fn clients_that_connect_once_per_request_share_pooled_upstream_connections() {
    let (up, conns) = counting_upstream();
    let veto = Veto::start(POLICY, &[]);
    for i in 0..12 {
        let (status, _, body) = curl(&veto.proxy_url(), &[&format!("http://{up}/one?i={i}")]);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("/one?i={i}")), "{body}");
    }
    // Each curl is a new client connection; the upstream connection it
    // used went back to the pool when it closed.
    let n = conns.load(Ordering::SeqCst);
    assert!(
        n <= 2,
        "12 one-shot clients opened {n} upstream connections"
    );
}

#[test]
fn an_upstream_that_closed_its_connection_costs_no_failed_request() {
    let (up, conns) = one_shot_upstream();
    let veto = Veto::start(POLICY, &[]);
    // New client connections: each finds the pooled connection closed.
    for i in 0..5 {
        let (status, _, body) = curl(&veto.proxy_url(), &[&format!("http://{up}/x?i={i}")]);
        assert_eq!(status, 200, "request {i}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One kept-alive client connection: its kept connection is closed
    // under it after every answer.
    let answers = interleaved(veto.addr, &[up], 5);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 10);
}
