//! The admin API over curl, for the dashboard tests: any method, extra
//! headers (tokens, cookies, the CSRF header), the status and head kept.

#![allow(dead_code)]

use super::common::Veto;
use std::process::Command;

/// A call to the admin API: (status, head, body).
pub fn admin(
    veto: &Veto,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "5", "-X", method]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://{}{path}", veto.admin))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

pub fn viewer_token(veto: &Veto) -> String {
    std::fs::read_to_string(veto.data().join("viewer.token"))
        .unwrap()
        .trim()
        .to_string()
}
