//! `veto firewall` makes a running `veto run` the only way out:
//!
//! - for a network namespace (the test's own, behind a veth it makes): a
//!   client there with no proxy variables is allowed and refused by policy
//!   through the transparent listener, its DNS to any resolver is veto's,
//!   and UDP (QUIC on 443, DNS elsewhere) gets nothing to an observer on
//!   the test's own veth address;
//! - for a uid: a process of that user is redirected the same way.
//!
//! Before the rules are installed the same datagrams do arrive, so the
//! observer can see them: the test would fail if the rules let them out.
//! Needs root (namespaces, nftables).

mod common;

use common::rule_of;

use common::netlab::Outside;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

const POLICY: &str = "version: 1
defaults: { decision: deny, private_networks: allow }
rules:
  - id: web-ok
    effect: allow
    to: { hosts: [web.test] }
    paths: [\"/ok*\"]
    reason: the web upstream's /ok pages
  - id: addr-ok
    effect: allow
    to: { cidrs: [ADDR/32] }
    paths: [\"/ok*\"]
    reason: the web upstream by address, /ok pages only
  - id: tls-ok
    effect: allow
    to: { hosts: [tls.test] }
    reason: the TLS upstream
";

/// A network namespace behind a veth pair of the test's own.
struct Client {
    ns: String,
    link: String,
    host_ip: Ipv4Addr,
}

impl Client {
    fn new(tag: u8) -> Client {
        let pid = std::process::id();
        let ns = format!("veto-fw-{pid}-{tag}");
        let link = format!("vfw{}{tag}", pid % 100_000);
        let host_ip = Ipv4Addr::new(10, 214, (pid & 0x3f) as u8 * 4 + tag, 1);
        let peer = Ipv4Addr::new(10, 214, (pid & 0x3f) as u8 * 4 + tag, 2);
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{link}a")])
            .output();
        run(&["netns", "add", &ns]);
        let c = Client { ns, link, host_ip };
        let (a, b) = (format!("{}a", c.link), format!("{}b", c.link));
        run(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["link", "set", &b, "netns", &c.ns]);
        run(&["addr", "add", &format!("{host_ip}/30"), "dev", &a]);
        run(&["link", "set", &a, "up"]);
        run(&["-n", &c.ns, "addr", "add", &format!("{peer}/30"), "dev", &b]);
        run(&["-n", &c.ns, "link", "set", &b, "up"]);
        run(&["-n", &c.ns, "link", "set", "lo", "up"]);
        run(&[
            "-n",
            &c.ns,
            "route",
            "add",
            "default",
            "via",
            &host_ip.to_string(),
        ]);
        c
    }

    /// The namespace's own address.
    fn peer_ip(&self) -> Ipv4Addr {
        let o = self.host_ip.octets();
        Ipv4Addr::new(o[0], o[1], o[2], 2)
    }

    /// A UDP socket bound inside the namespace, on its own address: an
    /// observer beyond the host's interfaces.
    fn udp_sink(&self, port: u16) -> UdpSocket {
        let path = format!("/var/run/netns/{}", self.ns);
        let ip = self.peer_ip();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this short-lived thread only; the socket it
            // makes stays in the namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            UdpSocket::bind((ip, port)).unwrap()
        })
        .join()
        .unwrap()
    }

    fn iface(&self) -> String {
        format!("{}a", self.link)
    }

    /// A shell command in the namespace, with no proxy variables at all.
    fn sh(&self, script: &str) -> (i32, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "bash", "-c", script])
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}a", self.link)])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

fn veto_firewall(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .arg("firewall")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Whether a datagram arrives within a short wait.
fn got_one(s: &UdpSocket) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut buf = [0u8; 512];
    s.recv_from(&mut buf).is_ok()
}

#[test]
fn a_namespace_behind_the_firewall_has_only_veto() {
    let Some(out) = Outside::new() else { return };
    let client = Client::new(0);
    let ip = out.ip;
    let web = common::http_upstream_on(&format!("{ip}:0"), Duration::ZERO);
    let dns_sink = UdpSocket::bind((ip, 53)).unwrap();
    let quic_sink = UdpSocket::bind((ip, 443)).unwrap();
    let tcp_sink = TcpListener::bind((ip, 0)).unwrap();
    tcp_sink.set_nonblocking(true).unwrap();

    // The observer sees what gets out: without the rules, everything does.
    let send = format!("echo x > /dev/udp/{ip}/443; echo x > /dev/udp/{ip}/53");
    client.sh(&send);
    assert!(
        got_one(&quic_sink) && got_one(&dns_sink),
        "the observer sees nothing even without rules"
    );

    let host = client.host_ip.to_string();
    let veto = common::Veto::start(
        &POLICY.replace("ADDR", &ip.to_string()),
        &[
            "--transparent",
            &format!("{host}:0"),
            "--dns",
            &format!("{host}:0"),
            "--transparent-machine",
            "ns-client",
            "--resolve",
            &format!("web.test={ip}"),
            "--resolve",
            &format!("tls.test={ip}"),
        ],
    );
    let tport = veto.transparent.unwrap().port().to_string();
    let dport = veto.dns.unwrap().port().to_string();
    let iface = client.iface();
    let (code, said) = veto_firewall(&[
        "--interface",
        &iface,
        "--transparent-port",
        &tport,
        "--dns-port",
        &dport,
        "--apply",
    ]);
    assert_eq!(code, 0, "{said}");
    // Applying again replaces the table, never doubles it.
    assert_eq!(
        veto_firewall(&[
            "--interface",
            &iface,
            "--transparent-port",
            &tport,
            "--dns-port",
            &dport,
            "--apply"
        ])
        .0,
        0
    );
    let table = format!("veto_if_{}", iface);
    let listed = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.matches(table.as_str()).count(), 1, "{listed}");

    // HTTP with no proxy variables: decided by the policy, by address and
    // by name (the client's resolver is told another server: veto answers).
    std::fs::create_dir_all(format!("/etc/netns/{}", client.ns)).unwrap();
    std::fs::write(
        format!("/etc/netns/{}/resolv.conf", client.ns),
        format!("nameserver {ip}\n"),
    )
    .unwrap();
    let port = web.port();
    let (_, body) = client.sh(&format!("curl -s -m 10 http://{ip}:{port}/ok"));
    assert!(body.contains("\"target\":\"/ok\""), "{body}");
    let (_, body) = client.sh(&format!("curl -s -m 10 http://{ip}:{port}/no"));
    assert_eq!(rule_of(&body), "default", "{body}");
    let (_, body) = client.sh(&format!("curl -s -m 10 http://web.test:{port}/ok"));
    assert!(body.contains("\"target\":\"/ok\""), "{body}");
    // TLS with no proxy: decided by its server name, held to the address.
    let tls = common::tls::https_upstream_on(&["tls.test", "web.test"], &format!("{ip}:0"));
    let ca = tls.ca.display();
    let tp = tls.addr.port();
    let (_, body) = client.sh(&format!(
        "curl -s -m 10 -o /dev/null -w '%{{http_code}}' --cacert {ca} --resolve tls.test:{tp}:{ip} https://tls.test:{tp}/x"
    ));
    assert_eq!(body, "200", "TLS through the transparent listener");
    let (_, body) = client.sh(&format!(
        "curl -s -m 10 -o /dev/null -w '%{{http_code}}' --cacert {ca} --resolve web.test:{tp}:{ip} https://web.test:{tp}/ok"
    ));
    assert_eq!(
        body, "000",
        "a TLS name no rule allows without seeing inside"
    );
    let (_, body) = client.sh("getent hosts nowhere.example; echo rc=$?");
    assert!(body.contains("rc=2"), "{body}");

    // UDP and DNS to another resolver: nothing reaches the observer.
    client.sh(&send);
    assert!(!got_one(&quic_sink), "UDP 443 got out");
    assert!(!got_one(&dns_sink), "DNS to another resolver got out");
    // TCP to a port no rule allows is veto's to refuse; the sink never sees it.
    let (_, body) = client.sh(&format!(
        "curl -s -m 10 http://{ip}:{}/",
        tcp_sink.local_addr().unwrap().port()
    ));
    assert_eq!(rule_of(&body), "default", "{body}");
    assert!(tcp_sink.accept().is_err(), "a TCP connection got past veto");

    let records = veto.records(&[]);
    assert!(
        records.iter().any(|r| r["protocol"] == "dns"
            && r["host"] == "web.test"
            && r["decision"] == "allow"
            && r["machine"] == "ns-client"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["host"] == "nowhere.example" && r["decision"] == "deny"),
        "{records:?}"
    );
    let tls_records: Vec<_> = records.iter().filter(|r| r["protocol"] == "tls").collect();
    assert!(
        tls_records
            .iter()
            .any(|r| r["host"] == "tls.test" && r["rule"] == "tls-ok")
            && tls_records
                .iter()
                .any(|r| r["host"] == "web.test" && r["decision"] == "deny"),
        "{tls_records:?}"
    );

    // The metrics count them like the rest.
    let metrics = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {}", veto.admin_token()),
        ])
        .arg(format!("http://{}/metrics", veto.admin))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let count = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("veto_dns_lookups_total{decision=\"allow\"}") >= 1,
        "{metrics}"
    );
    assert!(
        count("veto_dns_lookups_total{decision=\"deny\"}") >= 1,
        "{metrics}"
    );
    assert!(
        count("veto_transparent_connections_total") >= 4,
        "{metrics}"
    );

    let (code, said) = veto_firewall(&["--interface", &iface, "--remove"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("removed"), "{said}");
    let listed = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(table.as_str()));
    client.sh(&send);
    assert!(got_one(&quic_sink), "after --remove the rules are gone");
}

/// A user's processes: every TCP connection redirected to veto, loopback
/// kept, UDP elsewhere dropped.
#[test]
fn a_user_behind_the_firewall_has_only_veto() {
    let Some(out) = Outside::new() else { return };
    let ip = out.ip;
    // A uid no account uses: nothing else on the machine is caught.
    let uid = 64_000 + std::process::id() % 1000;
    let web = common::http_upstream_on(&format!("{ip}:0"), Duration::ZERO);
    // The observer is beyond an interface: a namespace behind a veth.
    let observer = Client::new(1);
    let quic_sink = observer.udp_sink(443);
    let far = observer.peer_ip();
    let veto = common::Veto::start(
        &POLICY.replace("ADDR", &ip.to_string()),
        &[
            "--transparent",
            "127.0.0.1:0",
            "--transparent-machine",
            "batch-user",
        ],
    );
    let tport = veto.transparent.unwrap().port().to_string();
    let uid_s = uid.to_string();
    let udp = format!("echo x > /dev/udp/{far}/443");
    let as_user = |script: &str| {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "bash",
                "-c",
                script,
            ])
            .env_remove("http_proxy")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    as_user(&udp);
    assert!(
        got_one(&quic_sink),
        "the observer sees nothing even without rules"
    );
    let (code, said) = veto_firewall(&["--uid", &uid_s, "--transparent-port", &tport, "--apply"]);
    assert_eq!(code, 0, "{said}");
    let port = web.port();
    let body = as_user(&format!("curl -s -m 10 http://{ip}:{port}/ok"));
    assert!(body.contains("\"target\":\"/ok\""), "{body}");
    let body = as_user(&format!("curl -s -m 10 http://{ip}:{port}/no"));
    assert_eq!(rule_of(&body), "default", "{body}");
    as_user(&udp);
    assert!(!got_one(&quic_sink), "UDP 443 got out");
    let (code, said) = veto_firewall(&["--uid", &uid_s, "--remove"]);
    assert_eq!(code, 0, "{said}");
    as_user(&udp);
    assert!(
        got_one(&quic_sink),
        "after --remove the user's UDP goes out again"
    );
    assert!(
        veto.records(&[])
            .iter()
            .any(|r| r["machine"] == "batch-user" && r["rule"] == "addr-ok"),
    );
}
