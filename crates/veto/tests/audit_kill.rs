//! The kill test: concurrent clients, `veto run` killed with SIGKILL in the
//! middle, restarted on the same data. Every request that got an answer has
//! its record, and the chain verifies.

mod common;

use common::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLICY: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: no-delete
    effect: deny
    methods: [DELETE]
    reason: Nothing is deleted.
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

/// Sends keep-alive requests until the proxy goes away; returns the
/// `Veto-Request-Id` of every answer received in full.
fn client(proxy: std::net::SocketAddr, up: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(stream) = TcpStream::connect(proxy) else {
        return ids;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    for i in 0..n {
        let method = if i % 4 == 0 { "DELETE" } else { "GET" };
        if write!(
            w,
            "{method} http://{up}/k/{i} HTTP/1.1\r\nHost: {up}\r\n\r\n"
        )
        .is_err()
        {
            return ids;
        }
        let mut id = None;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return ids,
                Ok(_) => {}
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("veto-request-id: ") {
                id = Some(v.to_ascii_uppercase());
            }
            if let Some(v) = l.strip_prefix("content-length: ") {
                len = v.parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return ids;
        }
        // Only a complete answer counts as told.
        ids.extend(id);
    }
    ids
}

#[test]
fn sigkill_loses_no_answered_record() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(POLICY, &[]);
    let proxy = veto.addr;
    let told = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let told = told.clone();
            std::thread::spawn(move || {
                let ids = client(proxy, up, 100_000);
                told.lock().unwrap().extend(ids);
            })
        })
        .collect();
    // Let traffic flow, then kill in the middle of it.
    std::thread::sleep(Duration::from_millis(1500));
    let (dir, policy) = veto.kill9();
    for w in workers {
        w.join().unwrap();
    }
    let told = told.lock().unwrap().clone();
    assert!(
        told.len() > 50,
        "too little traffic before the kill: {} in {:?}",
        told.len(),
        start.elapsed()
    );

    let veto = Veto::start_in(dir, policy, &[]);
    let (code, out, err) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let recorded: HashSet<String> = veto
        .records(&[])
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = told.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no record: {:?}",
        lost.len(),
        told.len(),
        &lost[..lost.len().min(5)]
    );

    // The restarted proxy goes on writing the same chain.
    assert_eq!(
        curl(&veto.proxy_url(), &[&format!("http://{up}/after")]).0,
        200
    );
    let (code, out, _) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}
