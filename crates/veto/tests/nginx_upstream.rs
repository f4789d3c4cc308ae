//! The ways around a refusal where the upstream's own parsing decides what
//! is served, against a real nginx (Debian's, installed by scripts/test) on
//! loopback: it merges slashes and resolves dot segments itself, serves two
//! virtual hosts on one address, and reads `Host`. Each attack is first
//! shown to work against nginx directly (so the test proves something),
//! then shown to fail through veto.

mod common;

use common::Veto;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const ADMIN: &str = "ADMIN-AREA-SECRET";
const OTHER: &str = "OTHER-VHOST-CONTENT";
const PUBLIC: &str = "PUBLIC-CONTENT";

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("these tests need Debian's nginx: run scripts/test, which installs it");
}

/// nginx with `allowed.test` (a public file and an admin area) and
/// `other.test` on one loopback address.
fn nginx() -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (path, body) in [
        ("allowed/admin/users", ADMIN),
        ("allowed/public/x", PUBLIC),
        ("other/index.html", OTHER),
    ] {
        let p = d.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let conf = format!(
        "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fastcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
  server {{ listen 127.0.0.1:{port}; server_name allowed.test; root {d}/allowed; }}
  server {{ listen 127.0.0.1:{port}; server_name other.test; root {d}/other; }}
}}
",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    // Workers that drop root must read the files.
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(d).status();
    let child = Command::new(nginx_bin())
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Owned at once: dropping it (a failed start included) stops nginx.
    let ngx = Nginx {
        child,
        addr,
        _dir: dir,
    };
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            return ngx;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(ngx);
    panic!("nginx did not start");
}

/// Raw bytes to `to`; everything that comes back until it closes.
fn raw(to: SocketAddr, bytes: &str) -> String {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const POLICY: &str = "version: 1
defaults: { decision: allow, private_networks: allow }
rules:
  - id: no-admin
    effect: deny
    reason: The admin area is internal.
    to: { hosts: [allowed.test] }
    paths: [\"/admin/**\"]
  - id: no-other
    effect: deny
    reason: Not this host.
    to: { hosts: [other.test] }
";

#[test]
fn what_nginx_serves_through_veto_is_what_veto_decided() {
    let ngx = nginx();
    let port = ngx.addr.port();
    let direct = |path: &str, host: &str| {
        raw(
            ngx.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // nginx itself reads these paths as its admin area, and serves the
    // other virtual host to a Host that names it.
    let spellings = [
        "//admin/users",
        "/x//../admin/users",
        "/.//admin/users",
        "/%61dmin/users",
    ];
    for p in spellings {
        assert!(
            direct(p, "allowed.test").contains(ADMIN),
            "nginx serves {p}"
        );
    }
    assert!(direct("/", "other.test").contains(OTHER));

    let veto = Veto::start(
        POLICY,
        &[
            "--resolve",
            "allowed.test=127.0.0.1",
            "--resolve",
            "other.test=127.0.0.1",
        ],
    );
    let via = |head: String| raw(veto.addr, &head);
    let get = |path: &str, extra: &str| {
        via(format!(
            "GET http://allowed.test:{port}{path} HTTP/1.1\r\n{extra}Connection: close\r\n\r\n"
        ))
    };
    // The setup works: the public file comes through.
    assert!(get("/public/x", "").contains(PUBLIC));

    for p in spellings {
        let answer = get(p, "");
        assert!(answer.starts_with("HTTP/1.1 403"), "{p}: {answer}");
        assert!(!answer.contains(ADMIN), "{p} reached the admin area");
    }
    for p in [
        "/public/..%2Fadmin/users",
        "/public/..;/admin/users",
        "/admin/x/;/../users",
        "/public/%2e%2e/admin/users",
    ] {
        let answer = get(p, "");
        assert!(
            !answer.contains(ADMIN),
            "{p} reached the admin area: {answer}"
        );
        assert!(
            answer.starts_with("HTTP/1.1 403") || answer.starts_with("HTTP/1.1 400"),
            "{p}: {answer}"
        );
    }

    // Host confusion: the upstream's Host is the target's authority.
    let answer = get("/public/x", "Host: other.test\r\n");
    assert!(
        answer.contains(PUBLIC) && !answer.contains(OTHER),
        "{answer}"
    );

    // Request smuggling: nginx never sees a head veto would frame otherwise.
    let answer = via(format!(
        "POST http://allowed.test:{port}/public/x HTTP/1.1\r\nContent-Length: 54\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/users HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains(ADMIN), "{answer}");

    // A tunnel to a host with a paths rule is refused outright (veto
    // cannot see into tcp)...
    let answer = via(format!(
        "CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\nGET //admin/users HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(!answer.contains(ADMIN), "{answer}");

    // ...and where the host has none, plain HTTP through a CONNECT naming
    // the other virtual host is refused as fronting, never served by it.
    let hosts_only = "version: 1
defaults: { decision: deny, private_networks: allow }
rules:
  - id: allowed
    effect: allow
    to: { hosts: [allowed.test] }
";
    let veto = Veto::start(
        hosts_only,
        &[
            "--resolve",
            "allowed.test=127.0.0.1",
            "--resolve",
            "other.test=127.0.0.1",
        ],
    );
    let answer = raw(
        veto.addr,
        &format!(
            "CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(!answer.contains(OTHER), "{answer}");
    assert!(answer.contains("domain fronting"), "{answer}");
    let answer = raw(
        veto.addr,
        &format!(
            "CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\nGET /public/x HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(answer.contains(PUBLIC), "{answer}");
}
