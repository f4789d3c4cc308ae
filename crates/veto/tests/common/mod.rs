//! Real processes on loopback for the proxy tests: `veto run` itself, real
//! upstream servers (HTTP and raw TCP), and curl.

#![allow(dead_code)]

pub mod netlab;
pub mod tls;

/// Everything on loopback allowed, nothing else: the upstreams the tests
/// start are private addresses, opened by a `cidrs` allow.
pub const ALLOW_LOOPBACK: &str = "version: 1
defaults: { decision: deny }
rules:
  - id: lab
    effect: allow
    to: { cidrs: [127.0.0.0/8] }
";

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `veto run`, killed when dropped.
pub struct Veto {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// `--listen-tls`, when given.
    pub tls: Option<SocketAddr>,
    /// The first `--transparent` listener, when given.
    pub transparent: Option<SocketAddr>,
    /// The first `--dns` listener, when given.
    pub dns: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub policy: PathBuf,
    pub stderr: Arc<Mutex<String>>,
}

impl Veto {
    /// Starts `veto run` on a free port with this policy text.
    pub fn start(policy: &str, extra: &[&str]) -> Veto {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("veto.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        Veto::start_in(dir, policy_path, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, policy: PathBuf, extra: &[&str]) -> Veto {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
        cmd.arg("run")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin")
            .arg("127.0.0.1:0")
            .arg("--policy")
            .arg(&policy)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(extra)
            .current_dir(dir.path());
        Veto::spawn(cmd, dir, policy)
    }

    /// Runs a prepared command that ends in `veto run` and waits for it to
    /// say where it listens.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir, policy: PathBuf) -> Veto {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut admin = None;
        let mut tls = None;
        let mut transparent = None;
        let mut dns = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("veto: DNS listener on ") {
                let at = rest.split(' ').next().unwrap();
                dns = dns.or(Some(at.parse().unwrap()));
            }
            if let Some(rest) = line.strip_prefix("veto: transparent listener on ") {
                let at = rest.split([' ', ',']).next().unwrap();
                transparent = transparent.or(Some(at.parse().unwrap()));
            }
            if let Some(rest) = line.strip_prefix("veto: proxy TLS listener on https://") {
                tls = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
            if let Some(rest) = line.strip_prefix("veto: proxy listening on http://") {
                addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
            if let Some(rest) = line.strip_prefix("veto: admin API on http://") {
                admin = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
                break;
            }
        }
        if addr.is_none() || admin.is_none() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("veto run did not start: {err}");
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Veto {
            child,
            addr: addr.expect("veto run did not say where it listens"),
            admin: admin.expect("veto run did not say where its admin API listens"),
            tls,
            transparent,
            dns,
            dir,
            policy,
            stderr,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs another `veto` subcommand against this instance's data.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_at(&self.data(), args)
    }

    /// Runs another `veto` subcommand against the data under `data`.
    pub fn cli_at(&self, data: &Path, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_veto"))
            .args(args)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Audit records as JSON values.
    pub fn records(&self, filters: &[&str]) -> Vec<serde_json::Value> {
        self.records_at(&self.data(), filters)
    }

    /// Audit records of the store under `data`.
    pub fn records_at(&self, data: &Path, filters: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["audit", "query"];
        args.extend_from_slice(filters);
        let (code, out, err) = self.cli_at(data, &args);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Veto {
    /// SIGTERM, and waits for the clean stop. Returns the data directory
    /// for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        self.signal("TERM");
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.policy.clone())
    }

    /// SIGKILL: no drain, no flush. Returns the data directory for a restart.
    pub fn kill9(mut self) -> (tempfile::TempDir, PathBuf) {
        self.signal("KILL");
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.policy.clone())
    }
}

impl Drop for Veto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 upstream on loopback that answers every request with
/// what it saw, as JSON: method, target, headers. `delay` slows answers.
pub fn http_upstream(delay: Duration) -> SocketAddr {
    http_upstream_on("127.0.0.1:0", delay)
}

/// [`http_upstream`] on another address (one the test made, such as its
/// own veth's).
pub fn http_upstream_on(bind: &str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || serve_http(stream, delay));
        }
    });
    addr
}

pub fn serve_http<S: Read + Write>(stream: S, delay: Duration) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = serde_json::Map::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.insert(k, v.trim().into());
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        std::thread::sleep(delay);
        let mut parts = request_line.split_whitespace();
        let seen = serde_json::json!({
            "method": parts.next().unwrap_or(""),
            "target": parts.next().unwrap_or(""),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{seen}",
            seen.len()
        );
        let out = reader.get_mut();
        if out.write_all(resp.as_bytes()).is_err() || out.flush().is_err() {
            return;
        }
    }
}

/// A TCP echo server; with `banner`, it speaks first.
pub fn echo_upstream(banner: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                if let Some(b) = banner {
                    let _ = s.write_all(b.as_bytes());
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// curl through the proxy: (status, headers, body).
pub fn curl(proxy: &str, args: &[&str]) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-x", proxy]).args(args);
    curl_run(cmd)
}

/// Runs a prepared curl command (its URL and options given, `-s -S -i`
/// added here): (status, headers, body) of the last answer.
pub fn curl_run(mut cmd: Command) -> (u16, String, String) {
    let out = cmd
        .args(["-s", "-S", "-i", "--max-time", "10"])
        .output()
        .expect("curl is installed (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // With a CONNECT, curl prints the proxy's answer first; keep the last.
    let mut head_body = text.as_str();
    while let Some(pos) = head_body.find("\r\n\r\n") {
        let (head, rest) = head_body.split_at(pos);
        if rest.len() > 4
            && rest[4..].starts_with("HTTP/")
            && head.split_whitespace().nth(1) == Some("200")
        {
            head_body = &rest[4..];
            continue;
        }
        break;
    }
    let (head, body) = head_body.split_once("\r\n\r\n").unwrap_or((head_body, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A header's value in an answer head, by name in any case.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Opens a raw connection to the proxy and sends bytes as they are.
pub fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a CONNECT tunnel; returns the stream and the proxy's answer head.
pub fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// Waits until `f` holds, up to 10 s.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Sends `n` requests (`method url`) through the proxy on one kept-alive
/// connection, one after the other, and returns how many got each status.
/// Fast enough for the thousands a live view must keep up with.
pub fn burst(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    n: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    let host = url.split('/').nth(2).unwrap_or("");
    // One write per request: pieces would wait on Nagle and delayed ACKs.
    let request = format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        writer.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        *seen.entry(status).or_default() += 1;
    }
    seen
}

/// The `rule` of a refusal's JSON body (empty when it is not one).
pub fn rule_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .map(|v| v["rule"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}
