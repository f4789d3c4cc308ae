//! `veto tail`: follows the live decision stream of a running veto, one
//! readable line per decision (refusals in red on a terminal), or JSON lines.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::io::{IsTerminal, Write};

pub struct TailArgs {
    /// `http://HOST:PORT` of the admin listener.
    pub admin: String,
    pub token: String,
    /// Query string of filters, already encoded (`decision=deny&...`).
    pub query: String,
    pub json: bool,
}

/// One line for people. Every field from the record is made printable:
/// no request can write its own colours or lines into it.
pub fn render(r: &serde_json::Value, color: bool) -> String {
    let s = |k: &str| crate::text::printable(r[k].as_str().unwrap_or("")).into_owned();
    let decision = s("decision");
    let mut what = format!("{}:{}", s("host"), r["port"]);
    if r["protocol"] == "dns" {
        // A lookup: its query type, then the name.
        what = format!("DNS {} {}", s("method"), s("host"));
    } else if let (Some(m), Some(p)) = (r["method"].as_str(), r["path"].as_str()) {
        let (m, p) = (crate::text::printable(m), crate::text::printable(p));
        what = format!("{m} {what}{p}");
    } else {
        what = format!("{} {what}", s("protocol").to_uppercase());
    }
    let data: Vec<String> = r["data"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{}={v}", crate::text::printable(k)))
                .collect()
        })
        .unwrap_or_default();
    let would = r["would"]
        .as_str()
        .map(|w| format!(" (would {})", crate::text::printable(w)))
        .unwrap_or_default();
    let tag = format!("{:<6}", decision.to_uppercase());
    let tag = match (color, decision.as_str()) {
        (true, "deny") => format!("\x1b[1;31m{tag}\x1b[0m"),
        (true, "redact") => format!("\x1b[33m{tag}\x1b[0m"),
        (true, _) if !would.is_empty() => format!("\x1b[35m{tag}\x1b[0m"),
        (true, _) => format!("\x1b[32m{tag}\x1b[0m"),
        _ => tag,
    };
    let mut line = format!(
        "{} {tag}{would} {} -> {what}  [{}] {}",
        s("time"),
        s("machine"),
        s("rule"),
        s("reason")
    );
    if !data.is_empty() {
        line.push_str(&format!("  data: {}", data.join(", ")));
    }
    line
}

/// Follows the stream until it ends or stdout closes.
pub async fn tail(a: TailArgs) -> Result<(), String> {
    let uri: hyper::Uri = format!(
        "{}/v1/decisions/stream?{}",
        a.admin.trim_end_matches('/'),
        a.query
    )
    .parse()
    .map_err(|e| format!("invalid --admin URL `{}`: {e}", a.admin))?;
    let host = uri.host().ok_or("the --admin URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| {
            format!(
                "cannot reach veto's admin API at {}: {e} (is `veto run` running?)",
                a.admin
            )
        })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", format!("{host}:{port}"))
        .header("authorization", format!("Bearer {}", a.token))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "the admin API answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let color = std::io::stdout().is_terminal();
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut event = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(chunk));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim();
                let out = match event.as_str() {
                    "skipped" => format!(
                        "... {} decisions skipped (this watcher fell behind)",
                        crate::text::printable(data)
                    ),
                    _ if a.json => data.to_string(),
                    _ => match serde_json::from_str::<serde_json::Value>(data) {
                        Ok(v) => render(&v, color),
                        Err(_) => continue,
                    },
                };
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{out}")
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return Ok(());
                }
            } else if line.is_empty() {
                event.clear();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lookup_reads_as_one() {
        let r = serde_json::json!({
            "time": "2026-12-08T01:00:00.000Z", "decision": "deny", "machine": "build",
            "protocol": "dns", "method": "TXT", "host": "x.evil.example", "port": 53,
            "path": null, "rule": "default", "reason": "not looked up", "data": {}
        });
        let line = super::render(&r, false);
        assert!(
            line.contains("build -> DNS TXT x.evil.example  [default]"),
            "{line}"
        );
    }
}
