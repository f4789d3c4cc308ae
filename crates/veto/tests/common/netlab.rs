//! Network fixtures of the tests' own: a veth pair with an address the
//! upstreams listen on (an observer outside any namespace veto guards), and
//! a name server there that notes every query it gets. Needs root.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A veth pair of the test's own, with one /32 address on its first end:
/// where the upstreams listen. Removed when dropped.
pub struct Outside {
    pub link: String,
    pub ip: Ipv4Addr,
    /// An IPv6 address (unique local) on the same end, where IPv6 is on.
    pub ip6: Option<Ipv6Addr>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Outside {
    /// `None` when this kernel or user may not make links (then the test
    /// says so and skips).
    pub fn new() -> Option<Outside> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let link = format!("vwo{}x{n}", pid % 1_000_000);
        let ip = Ipv4Addr::new(10, 213, ((pid >> 4) & 0xff) as u8, 1 + (n as u8) * 2);
        let ip_cmd = |args: &[&str]| Command::new("ip").args(args).output();
        let _ = ip_cmd(&["link", "del", &format!("{link}a")]);
        let made = ip_cmd(&[
            "link",
            "add",
            &format!("{link}a"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{link}b"),
        ]);
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot make a veth pair (this test needs root and network namespaces): {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                return None;
            }
            Err(e) => panic!("iproute2's `ip` is needed (scripts/test installs it): {e}"),
        }
        let mut o = Outside {
            link,
            ip,
            ip6: None,
        };
        for args in [
            vec![
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                &format!("{}a", o.link),
            ],
            vec!["link", "set", &format!("{}a", o.link), "up"],
            vec!["link", "set", &format!("{}b", o.link), "up"],
        ] {
            let out = ip_cmd(&args).unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        let ip6 = Ipv6Addr::new(
            0xfd76,
            0x6574,
            0x6f00,
            (pid & 0xffff) as u16,
            0,
            0,
            0,
            n as u16 + 1,
        );
        let v6 = ip_cmd(&[
            "addr",
            "add",
            &format!("{ip6}/128"),
            "dev",
            &format!("{}a", o.link),
            "nodad",
        ]);
        if v6.is_ok_and(|out| out.status.success()) {
            o.ip6 = Some(ip6);
        }
        Some(o)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}a", self.link)])
            .output();
    }
}

/// The query names a name server was asked, lower-cased.
pub type Asked = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Reads a query's name and type; `None` if it is not one.
pub fn question(q: &[u8]) -> Option<(String, usize, u16)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let n = usize::from(*q.get(at)?);
        at += 1;
        if n == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + n)?).to_ascii_lowercase());
        at += n;
    }
    let ty = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    Some((labels.join("."), at + 4, ty))
}

/// The upstream name server veto is told to ask (`--dns-upstream`), on the
/// test's own veth address: `web2.test` is that address, every other name
/// does not exist; every query it gets is noted.
pub fn name_server(ip: Ipv4Addr) -> (SocketAddr, Asked) {
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    let at = sock.local_addr().unwrap();
    let asked = Asked::default();
    let noted = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let q = &buf[..n];
            let Some((name, end, ty)) = question(q) else {
                continue;
            };
            noted.lock().unwrap().push(name.clone());
            let known = name == "web2.test";
            let mut r = q[..end].to_vec();
            r[2] = 0x81 | (q[2] & 0x01);
            r[3] = if known { 0x80 } else { 0x83 };
            r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
            if known && ty == 1 {
                r[7] = 1;
                r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend(ip.octets());
            }
            let _ = sock.send_to(&r, from);
        }
    });
    (at, asked)
}
