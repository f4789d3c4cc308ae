//! `veto server` and `veto agent` processes for the fleet tests, and the
//! CLI pointed at the server.
#![allow(dead_code)]

use crate::common::curl;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a veto process and waits for the line naming its address.
pub fn spawn(args: &[&str], prefix: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
        if line.contains("control plane on") || line.contains("agent mode") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        addr: addr.unwrap_or_else(|| panic!("no `{prefix}` line")),
    }
}

pub fn server(store: &str, data: &Path, listen: &str) -> Proc {
    let d = data.display().to_string();
    spawn(
        &["server", "--listen", listen, "--store", store, "--data", &d],
        "veto: control plane on http://",
    )
}

pub fn agent(server: SocketAddr, token: &str, data: &Path) -> Proc {
    let d = data.display().to_string();
    spawn(
        &[
            "agent",
            "--server",
            &format!("http://{server}"),
            "--token",
            token,
            "--listen",
            "127.0.0.1:0",
            "--data",
            &d,
            "--resolve",
            "api.test=127.0.0.1",
        ],
        "veto: proxy listening on http://",
    )
}

pub fn cli(server: SocketAddr, data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(args)
        .args(["--server", &format!("http://{server}"), "--data"])
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Polls until `f` holds; returns how long that took.
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn status(agent: &Proc, url: &str) -> u16 {
    curl(&format!("http://{}", agent.addr), &[url]).0
}

pub fn http_get(addr: SocketAddr, path: &str, token: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{addr}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

pub fn token(data: &Path, role: &str) -> String {
    std::fs::read_to_string(data.join(format!("{role}.token")))
        .unwrap()
        .trim()
        .to_string()
}
