//! Enforcement no application can walk around: `veto exec` runs a command
//! in a network namespace whose only way out is veto. Clients that honour
//! proxy variables use veto's proxy; clients that ignore them are
//! redirected to the transparent listener and decided the same way; UDP
//! (QUIC, DNS to another resolver) gets nothing out.
//!
//! The upstreams listen on an address of a veth pair this test makes (an
//! observer outside the namespace): a packet that got out would reach it.
//! Nothing is sent anywhere else. Needs root (namespaces, nftables).

mod common;

use common::rule_of;

use common::netlab::{Outside, name_server};
use common::tls::https_upstream_on;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const POLICY: &str = "version: 1
defaults: { decision: deny, private_networks: allow }
rules:
  - id: web-ok
    effect: allow
    to: { hosts: [web.test] }
    paths: [\"/ok*\"]
    reason: the test's web upstream, its /ok pages only
  - id: addr-ok
    effect: allow
    to: { cidrs: [ADDR/32] }
    paths: [\"/ok*\"]
    reason: the web upstream by its address, /ok pages only
  - id: addr6-ok
    effect: allow
    to: { cidrs: [ADDR6/128] }
    paths: [\"/ok*\"]
    reason: the web upstream by its IPv6 address, /ok pages only
  - id: tls-ok
    effect: allow
    to: { hosts: [tls.test] }
    reason: the test's TLS upstream
  - id: upstream-names
    effect: allow
    to: { hosts: [web2.test, \"*.web2.test\"] }
    reason: names the test's own name server knows
DNS";

struct Lab {
    out: Outside,
    dir: tempfile::TempDir,
    web: SocketAddr,
}

impl Lab {
    fn new() -> Option<Lab> {
        Lab::with_dns("")
    }

    /// With the policy's `dns:` section set to `dns` (YAML).
    fn with_dns(dns: &str) -> Option<Lab> {
        let out = Outside::new()?;
        let dir = tempfile::tempdir().unwrap();
        let v6 = out.ip6.map_or("fd00::1".to_string(), |a| a.to_string());
        let policy = POLICY
            .replace("ADDR6", &v6)
            .replace("ADDR", &out.ip.to_string())
            .replace("DNS", dns);
        std::fs::write(dir.path().join("veto.yaml"), policy).unwrap();
        let web = common::http_upstream_on(&format!("{}:0", out.ip), Duration::ZERO);
        Some(Lab { out, dir, web })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `veto exec [veto_args] -- cmd…`: (exit code, stdout, stderr).
    fn exec(&self, veto_args: &[&str], cmd: &[&str]) -> (i32, String, String) {
        let ip = self.out.ip.to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_veto"))
            .arg("exec")
            .arg("--policy")
            .arg(self.dir.path().join("veto.yaml"))
            .arg("--data")
            .arg(self.data())
            .args(["--peek-timeout", "2s", "--connect-timeout", "3s"])
            .args(["--resolve", &format!("web.test={ip}")])
            .args(["--resolve", &format!("tls.test={ip}")])
            // A name that is elsewhere: never connected to.
            .args(["--resolve", "evil.test=10.213.255.254"])
            .args(veto_args)
            .arg("--")
            .args(cmd)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// curl inside `veto exec`, ignoring proxy variables: `-w` prints the
    /// status after the body.
    fn curl_direct(&self, args: &[&str]) -> (u16, String) {
        let mut cmd = vec![
            "curl",
            "--noproxy",
            "*",
            "-s",
            "-m",
            "10",
            "-w",
            "\n%{http_code}",
        ];
        cmd.extend_from_slice(args);
        let (code, out, err) = self.exec(&[], &cmd);
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        assert!(
            code == 0 || status == "000",
            "veto exec ended {code}: {err}"
        );
        (status.parse().unwrap_or(0), body.to_string())
    }

    fn records(&self) -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_veto"))
            .args(["audit", "query", "--data"])
            .arg(self.data())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn a_client_that_honours_proxy_variables_goes_through_the_proxy() {
    let Some(lab) = Lab::new() else { return };
    let url = format!("http://web.test:{}/ok", lab.web.port());
    let (code, out, err) = lab.exec(&[], &["curl", "-s", "-m", "10", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"target\":\"/ok\""), "{out}");
    let url = format!("http://web.test:{}/no", lab.web.port());
    let (_, out, _) = lab.exec(&["--machine", "builder"], &["curl", "-s", "-m", "10", &url]);
    assert_eq!(rule_of(&out), "default", "{out}");
    let r = lab.records();
    assert!(
        r.iter()
            .any(|r| r["machine"] == "curl" && r["rule"] == "web-ok" && r["path"] == "/ok"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|r| r["machine"] == "builder" && r["decision"] == "deny"),
        "{r:?}"
    );
}

#[test]
fn a_client_that_ignores_proxy_variables_is_decided_the_same_way() {
    let Some(lab) = Lab::new() else { return };
    let ip = lab.out.ip;
    let port = lab.web.port();
    // By address: allowed and refused by path, with the 403 JSON answer.
    let (status, body) = lab.curl_direct(&[&format!("http://{ip}:{port}/ok")]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"target\":\"/ok\""), "{body}");
    let (status, body) = lab.curl_direct(&[&format!("http://{ip}:{port}/no")]);
    assert_eq!(
        (status, rule_of(&body).as_str()),
        (403, "default"),
        "{body}"
    );
    // By name, resolved by the client itself: the name is what is decided.
    let resolve = format!("web.test:{port}:{ip}");
    let (status, body) =
        lab.curl_direct(&["--resolve", &resolve, &format!("http://web.test:{port}/ok")]);
    assert_eq!(status, 200, "{body}");
    // A name that is not the address the client connected to: fronting.
    let resolve = format!("evil.test:{port}:{ip}");
    let (status, body) = lab.curl_direct(&[
        "--resolve",
        &resolve,
        &format!("http://evil.test:{port}/ok"),
    ]);
    assert_eq!(
        (status, rule_of(&body).as_str()),
        (403, "address-mismatch"),
        "{body}"
    );
    let (status, body) =
        lab.curl_direct(&["-H", "Host: evil.test", &format!("http://{ip}:{port}/ok")]);
    assert_eq!(
        (status, rule_of(&body).as_str()),
        (403, "address-mismatch"),
        "{body}"
    );
    let r = lab.records();
    let http: Vec<_> = r.iter().filter(|r| r["protocol"] == "http").collect();
    assert_eq!(http.len(), 5, "{r:?}");
    assert!(
        http.iter()
            .all(|r| r["machine"] == "curl" && r["port"] == port)
    );
    assert!(
        http.iter()
            .any(|r| r["host"] == "web.test" && r["rule"] == "web-ok" && r["status"] == 200),
        "{http:?}"
    );
}

#[test]
fn tls_is_decided_by_its_server_name_held_to_the_address() {
    let Some(lab) = Lab::new() else { return };
    let ip = lab.out.ip;
    let up = https_upstream_on(&["tls.test", "web.test"], &format!("{ip}:0"));
    let port = up.addr.port();
    let ca = up.ca.to_string_lossy().into_owned();
    let get = |name: &str| {
        let resolve = format!("{name}:{port}:{ip}");
        lab.curl_direct(&[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &format!("https://{name}:{port}/x"),
        ])
    };
    let (status, body) = get("tls.test");
    assert_eq!(status, 200, "{body}");
    // web.test is allowed only for paths veto cannot see in TLS; evil.test
    // is not the address.
    assert_eq!(get("web.test").0, 0);
    assert_eq!(get("evil.test").0, 0);
    let r = lab.records();
    let tls: Vec<_> = r.iter().filter(|r| r["protocol"] == "tls").collect();
    let rules: Vec<&str> = tls.iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["tls-ok", "default", "address-mismatch"], "{tls:?}");
    assert!(tls.iter().all(|r| r["ips"][0] == ip.to_string()), "{tls:?}");
}

/// UDP to any address (QUIC on 443, DNS to another resolver) and TCP to a
/// port no rule allows: an observer outside sees nothing at all.
#[test]
fn nothing_else_gets_out() {
    let Some(lab) = Lab::new() else { return };
    let ip = lab.out.ip;
    let dns = UdpSocket::bind((ip, 53)).unwrap();
    let quic = UdpSocket::bind((ip, 443)).unwrap();
    let tcp = TcpListener::bind((ip, 0)).unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    tcp.set_nonblocking(true).unwrap();
    let script = format!(
        "for i in 1 2 3; do echo veto-test > /dev/udp/{ip}/53; echo veto-test > /dev/udp/{ip}/443; done; \
         curl --noproxy '*' -s -m 5 -o /dev/null -w '%{{http_code}}' http://{ip}:{tcp_port}/; \
         curl --noproxy '*' -s -m 5 -o /dev/null -w ' %{{http_code}}' telnet://{ip}:{tcp_port} </dev/null; true"
    );
    let (code, out, err) = lab.exec(&[], &["bash", "-c", &script]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("403"),
        "plain HTTP to a port no rule allows: {out}"
    );
    for s in [&dns, &quic] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(
            s.recv_from(&mut buf).is_err(),
            "a UDP datagram got out to {}",
            s.local_addr().unwrap()
        );
    }
    assert!(tcp.accept().is_err(), "a TCP connection got out");
    let r = lab.records();
    assert!(
        r.iter()
            .any(|r| r["port"] == tcp_port && r["decision"] == "deny"),
        "{r:?}"
    );
}

#[test]
fn the_command_s_exit_status_is_veto_exec_s() {
    let Some(lab) = Lab::new() else { return };
    let (code, _, err) = lab.exec(&[], &["sh", "-c", "exit 7"]);
    assert_eq!(code, 7, "{err}");
    let (code, out, _) = lab.exec(&[], &["sh", "-c", "echo $http_proxy; ip netns identify"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(code, 0, "{out}");
    assert_eq!(lines[0], "http://127.0.0.1:3128");
    let ns = lines[1];
    assert!(ns.starts_with("veto-exec-"), "{out}");
    // Under sudo the command runs as the user who ran sudo, not as root.
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["exec", "--data"])
        .arg(lab.data())
        .args(["--", "id", "-u"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "65534",
        "{out:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(["exec", "--as-root", "--data"])
        .arg(lab.data())
        .args(["--", "id", "-u"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    // The namespace is gone afterwards.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns)),
        "{list}"
    );
}

#[test]
fn without_root_veto_exec_says_what_to_do() {
    let Some(lab) = Lab::new() else { return };
    let exe = Path::new(env!("CARGO_BIN_EXE_veto"));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe)
        .args(["exec", "--data"])
        .arg(lab.dir.path().join("unused"))
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
}

/// A connection made to the transparent listener directly, not redirected
/// by the kernel, has no original destination: veto cannot know where it
/// was meant to go, so it refuses it (recorded) rather than guess.
#[test]
fn a_connection_not_redirected_is_refused_and_recorded() {
    use std::io::{Read, Write};
    let veto = common::Veto::start(
        common::ALLOW_LOOPBACK,
        &[
            "--transparent",
            "127.0.0.1:0",
            "--transparent-machine",
            "lab",
        ],
    );
    let at = veto
        .transparent
        .expect("veto run names its transparent listener");
    let mut s = std::net::TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(common::eventually(|| {
        veto.records(&["--rule", "not-redirected"])
            .iter()
            .any(|r| r["machine"] == "lab" && r["decision"] == "deny")
    }));
}

/// DNS inside `veto exec` is veto's: an allowed name is resolved by veto
/// (through the upstream it is given), a name no rule could allow gets
/// NXDOMAIN and is never asked upstream, and every lookup is recorded.
/// A connection that carries no name is named by the lookup that found
/// its address.
#[test]
fn dns_is_decided_and_refused_names_never_leave() {
    let Some(lab) = Lab::new() else { return };
    let (ns, asked) = name_server(lab.out.ip);
    let port = lab.web.port();
    let script = format!(
        "getent ahostsv4 web2.test | head -1; echo \"allowed=$?\"; \
         getent hosts secret-data.evil.test; echo \"refused=$?\"; \
         getent hosts aws.metadata.test; echo \"refused=$?\"; \
         exec 3<>/dev/tcp/web2.test/{port} && printf 'PING\\r\\n' >&3; exec 3<&-; echo sent"
    );
    let (code, out, err) = lab.exec(
        &["--dns-upstream", &ns.to_string()],
        &["bash", "-c", &script],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{} ", lab.out.ip)), "{out}");
    assert!(
        out.contains("allowed=0") && out.contains("refused=2"),
        "{out}"
    );
    let asked = asked.lock().unwrap().clone();
    assert!(asked.iter().any(|n| n == "web2.test"), "{asked:?}");
    assert!(
        !asked
            .iter()
            .any(|n| n.contains("evil") || n.contains("metadata")),
        "a refused name was asked upstream: {asked:?}"
    );
    let r = lab.records();
    let dns: Vec<_> = r.iter().filter(|r| r["protocol"] == "dns").collect();
    assert!(
        dns.iter().any(|r| r["host"] == "secret-data.evil.test"
            && r["decision"] == "deny"
            && r["rule"] == "default"
            && r["machine"] == "bash"),
        "{dns:?}"
    );
    assert!(
        dns.iter().any(|r| r["host"] == "web2.test"
            && r["decision"] == "allow"
            && r["method"] == "A"
            && r["ips"][0] == lab.out.ip.to_string()),
        "{dns:?}"
    );
    // The raw TCP connection sent no name; the lookup named it.
    assert!(
        r.iter().any(|r| r["protocol"] == "tcp"
            && r["host"] == "web2.test"
            && r["rule"] == "upstream-names"),
        "{r:?}"
    );
}

/// A burst of lookups shaped like DNS tunnelling (many names under one
/// domain, long encoded labels): flagged in report mode (recorded as
/// `would: deny`, still answered), refused when the policy enforces it.
#[test]
fn a_tunnelling_burst_is_flagged_then_refused() {
    let burst = "for i in $(seq 1 70); do getent hosts q$i.web2.test >/dev/null; done; \
                 getent hosts mzxw6ytboi4tqojzgaytcmrtgq2tmnzyhe3dmnrwmzxw6ytboi4tqoj.web2.test; true";
    let Some(lab) = Lab::new() else { return };
    let (ns, asked) = name_server(lab.out.ip);
    let (code, _, err) = lab.exec(&["--dns-upstream", &ns.to_string()], &["bash", "-c", burst]);
    assert_eq!(code, 0, "{err}");
    let r = lab.records();
    let flagged: Vec<_> = r
        .iter()
        .filter(|r| r["protocol"] == "dns" && r["would"] == "deny")
        .collect();
    assert!(!flagged.is_empty(), "report mode flagged nothing: {r:?}");
    assert!(flagged.iter().all(|r| r["decision"] == "allow"));
    assert!(
        flagged.iter().any(|r| r["reason"]
            .as_str()
            .unwrap()
            .contains("looks like DNS tunnelling")),
        "{flagged:?}"
    );
    let reported = asked.lock().unwrap().len();
    assert!(reported > 70, "report mode still answers: {reported}");

    let Some(lab) = Lab::with_dns("dns: { tunnel_guard: enforce }") else {
        return;
    };
    let (ns, asked) = name_server(lab.out.ip);
    let (code, _, err) = lab.exec(&["--dns-upstream", &ns.to_string()], &["bash", "-c", burst]);
    assert_eq!(code, 0, "{err}");
    let r = lab.records();
    let refused: Vec<_> = r.iter().filter(|r| r["rule"] == "dns-tunnel").collect();
    assert!(!refused.is_empty(), "{r:?}");
    assert!(refused.iter().all(|r| r["decision"] == "deny"));
    let asked = asked.lock().unwrap().clone();
    assert!(
        !asked.iter().any(|n| n.starts_with("mzxw6")),
        "an encoded label left: {asked:?}"
    );
    assert!(!asked.iter().any(|n| n == "q70.web2.test"), "{asked:?}");
}

/// IPv6: a client that ignores proxy variables and dials an IPv6 address
/// is redirected as well; veto recovers its original destination
/// (`IP6T_SO_ORIGINAL_DST`) and decides it like the IPv4 one.
#[test]
fn ipv6_connections_are_decided_too() {
    let Some(lab) = Lab::new() else { return };
    let Some(ip6) = lab.out.ip6 else {
        eprintln!("SKIPPED: IPv6 is off in this kernel");
        return;
    };
    let web6 = common::http_upstream_on(&format!("[{ip6}]:0"), Duration::ZERO);
    let port = web6.port();
    let (status, body) = lab.curl_direct(&["-g", &format!("http://[{ip6}]:{port}/ok")]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"target\":\"/ok\""), "{body}");
    let (status, body) = lab.curl_direct(&["-g", &format!("http://[{ip6}]:{port}/no")]);
    assert_eq!(
        (status, rule_of(&body).as_str()),
        (403, "default"),
        "{body}"
    );
    let r = lab.records();
    assert!(
        r.iter()
            .any(|r| r["host"] == ip6.to_string() && r["rule"] == "addr6-ok" && r["status"] == 200),
        "{r:?}"
    );
}
