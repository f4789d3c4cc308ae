//! Connections veto closes before any request are in the audit trail too:
//! over the per-client limit, or silent past the head timeout. A client
//! that connects and hangs up refused nothing and leaves no record.

mod common;

use common::{ALLOW_LOOPBACK, Veto, http_upstream};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Whether veto closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 1];
    !matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn connections_refused_before_any_request_are_recorded() {
    let up = http_upstream(Duration::ZERO);
    let veto = Veto::start(
        ALLOW_LOOPBACK,
        &["--max-per-client", "2", "--header-timeout", "1s"],
    );
    // A client that connects and leaves at once refused nothing.
    drop(TcpStream::connect(veto.addr).unwrap());
    // (Its slot is given back by its own task: let that run first.)
    std::thread::sleep(Duration::from_millis(300));

    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(veto.addr).unwrap())
        .collect();
    let mut third = TcpStream::connect(veto.addr).unwrap();
    assert!(
        closed_within(&mut third, Duration::from_millis(900)),
        "a connection over the per-client limit is closed at once: {}",
        veto.stderr.lock().unwrap()
    );
    let limited = until(Duration::from_secs(5), || {
        let r = veto.records(&["--rule", "connection-limit"]);
        (!r.is_empty()).then_some(r)
    })
    .expect("the refused connection is recorded");
    assert_eq!(limited.len(), 1, "{limited:?}");
    let r = &limited[0];
    assert_eq!(r["decision"], "deny");
    assert!(r["status"].is_null(), "nothing was answered: {r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("127.0.0.1 already has 2 connections open (--max-per-client)"),
        "{reason}"
    );

    // The two held connections said nothing: closed at the head timeout,
    // each recorded.
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(5)));
    }
    let silent = until(Duration::from_secs(5), || {
        let r: Vec<_> = veto
            .records(&["--rule", "malformed-request"])
            .into_iter()
            .filter(|r| {
                r["reason"]
                    .as_str()
                    .unwrap()
                    .contains("sent nothing within 1s")
            })
            .collect();
        (r.len() >= 2).then_some(r)
    })
    .expect("both silent connections are recorded");
    assert_eq!(silent.len(), 2, "{silent:?}");
    assert!(silent.iter().all(|r| r["protocol"] == "tcp"));

    // Slots are free again, and every answer still has its record.
    let (code, _, _) = common::curl(&veto.proxy_url(), &[&format!("http://{up}/")]);
    assert_eq!(code, 200);
    let all = veto.records(&[]);
    assert_eq!(
        all.len(),
        4,
        "one refusal, two silent connections, one request; none for the client that left: {all:?}"
    );
    let (code, out, err) = veto.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
