//! veto's DNS listener on loopback, against bad input: garbage datagrams,
//! truncated and oversized messages, queries veto does not serve, and TCP
//! clients that stall or lie about lengths. veto answers what is a query,
//! drops what is not, never crashes, and keeps answering real lookups
//! (each decided and recorded).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

const POLICY: &str = "version: 1
defaults: { decision: deny, private_networks: allow }
rules:
  - id: ok
    effect: allow
    to: { hosts: [ok.test] }
    reason: the one name this test may look up
";

/// A query: id, flags (recursion desired), one question of `qtype` and
/// `class` for `name`.
fn query(id: u16, name: &str, qtype: u16, class: u16, opcode: u8) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([(opcode << 3) | 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(class.to_be_bytes());
    q
}

/// (id, rcode, answer count) of an answer.
fn head(a: &[u8]) -> (u16, u8, u16) {
    (
        u16::from_be_bytes([a[0], a[1]]),
        a[3] & 0x0f,
        u16::from_be_bytes([a[6], a[7]]),
    )
}

fn ask(sock: &UdpSocket, dns: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(q, dns).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

#[test]
fn bad_input_never_stops_the_dns_listener() {
    let veto = common::Veto::start(
        POLICY,
        &["--dns", "127.0.0.1:0", "--resolve", "ok.test=127.0.0.1"],
    );
    let dns = veto.dns.expect("veto run names its DNS listener");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();

    // Garbage: nothing, a byte, a bare header claiming five questions, a
    // response (never answered: no loops between resolvers), and a few
    // hundred pseudo-random datagrams. Answers, if any, are FORMERR.
    let mut garbage: Vec<Vec<u8>> =
        vec![vec![], vec![0x42], vec![0, 7, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0]];
    let mut response = query(9, "ok.test", 1, 1, 0);
    response[2] |= 0x80;
    garbage.push(response);
    let mut x: u32 = 0x1234_5678;
    for n in 0..300 {
        let mut d = Vec::with_capacity(n % 600);
        for _ in 0..(n * 7 % 600) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            d.push(x as u8);
        }
        garbage.push(d);
    }
    for g in &garbage {
        sock.send_to(g, dns).unwrap();
    }
    // Drain whatever came back: only FORMERR (1) for what had a header.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        assert!(n >= 12, "an answer shorter than a header");
        assert_ne!(head(&buf[..n]).1, 0, "garbage answered as a success");
    }
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // Queries veto does not serve: another class, another opcode.
    let a = ask(&sock, dns, &query(11, "ok.test", 1, 3, 0)).expect("an answer");
    assert_eq!(head(&a), (11, 5, 0), "class CH: REFUSED");
    let a = ask(&sock, dns, &query(12, "ok.test", 1, 1, 2)).expect("an answer");
    assert_eq!(head(&a), (12, 4, 0), "opcode STATUS: NOTIMP");

    // Real lookups still work, decided and recorded.
    let a = ask(&sock, dns, &query(13, "ok.test", 1, 1, 0)).expect("an answer");
    assert_eq!(head(&a), (13, 0, 1), "ok.test A");
    assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 1]);
    let a = ask(&sock, dns, &query(14, "no.test", 1, 1, 0)).expect("an answer");
    assert_eq!(head(&a), (14, 3, 0), "no.test: NXDOMAIN");

    // TCP: a client that claims 65535 bytes and sends three, one that
    // sends half a length, and one that stays silent; then a real one.
    let liar = {
        let mut s = TcpStream::connect(dns).unwrap();
        s.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
        s
    };
    let half = {
        let mut s = TcpStream::connect(dns).unwrap();
        s.write_all(&[0x00]).unwrap();
        s
    };
    let silent = TcpStream::connect(dns).unwrap();
    let mut s = TcpStream::connect(dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = query(15, "ok.test", 1, 1, 0);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(&q);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut a).unwrap();
    assert_eq!(head(&a), (15, 0, 1), "ok.test over TCP");
    drop((liar, half, silent));

    let r = veto.records(&[]);
    let dns_records: Vec<_> = r.iter().filter(|r| r["protocol"] == "dns").collect();
    assert!(
        dns_records
            .iter()
            .any(|r| r["host"] == "ok.test" && r["decision"] == "allow" && r["rule"] == "ok"),
        "{dns_records:?}"
    );
    assert!(
        dns_records
            .iter()
            .any(|r| r["host"] == "no.test" && r["decision"] == "deny"),
        "{dns_records:?}"
    );
}
