//! `veto audit verify|query|export` and `veto inventory`: reading the trail
//! under `--data`, while `veto run` may be writing it.

use std::io::Write;
use std::path::Path;
use veto_audit::{AuditError, Filter, db_path, inventory, open_ro, query};

/// Parses `--since` durations: `90s`, `15m`, `12h`, `7d`, combinations
/// (`1h30m`) as humantime reads them.
pub fn since_ms(since: &str, now_ms: i64) -> Result<i64, String> {
    let d =
        humantime::parse_duration(since).map_err(|e| format!("invalid --since `{since}`: {e}"))?;
    Ok(now_ms - d.as_millis() as i64)
}

/// `veto audit verify`: Ok(message) when intact, Err(message) naming the
/// first break. The chain's end is held to the signed head (`head`, else
/// `DATA/audit.head`), read before the store: the writer signs a head only
/// after its entries are committed.
pub fn verify_cmd(
    data: &Path,
    key: Option<&Path>,
    head: Option<&Path>,
) -> Result<Result<String, String>, AuditError> {
    let db = db_path(data);
    let head_path = head.map_or_else(|| veto_audit::head::head_path(&db), Path::to_path_buf);
    let signed = match veto_audit::head::read(&head_path) {
        Ok(h) => h,
        Err(e) => return Ok(Err(format!("audit chain cannot be shown complete: {e}"))),
    };
    if head.is_some() && signed.is_none() {
        return Ok(Err(format!("no signed head at {}", head_path.display())));
    }
    let conn = open_ro(&db)?;
    // Prune checkpoints and the head are held to the given public key,
    // else to the one beside the data (made by `veto run`).
    let beside = veto_audit::signing::public_path(data);
    let trusted = match key {
        Some(k) => Some(veto_audit::signing::read_public(k)?),
        None if beside.exists() => Some(veto_audit::signing::read_public(&beside)?),
        None => None,
    };
    Ok(
        match veto_audit::verify_anchored(&conn, signed.as_ref(), &head_path, trusted.as_ref())? {
            Ok(i) => {
                let anchor = match &i.anchor {
                    Some(h) => format!(
                        "; signed head at entry {} ({}){}",
                        h.seq,
                        h.time(),
                        match i.entries as i64 - h.seq {
                            n if n > 0 => format!(", {n} newer entries not signed yet"),
                            _ => String::new(),
                        }
                    ),
                    None => String::new(),
                };
                Ok(format!(
                    "audit chain intact: {} records, {} entries, head {}{anchor}",
                    i.records, i.entries, i.head
                ))
            }
            Err(b) => Err(format!("audit chain broken: {b}")),
        },
    )
}

/// `veto audit verify --agent`: the server's check of an agent's shipped
/// chain, in words; a chain the agent never signed a head for cannot be
/// shown complete.
pub fn agent_verdict(check: &serde_json::Value) -> Result<String, String> {
    let agent = check["agent"].as_str().unwrap_or("?");
    let n = |k: &str| check[k].as_i64().unwrap_or(0);
    if let Some(b) = check["broken"].as_str() {
        return Err(format!(
            "audit chain of agent {agent} at the server broken: {b}"
        ));
    }
    let head = &check["head"];
    let Some(seq) = head["seq"].as_i64() else {
        return Err(format!(
            "audit chain of agent {agent} at the server cannot be shown complete: the agent never sent a signed head ({} entries stored)",
            n("entries")
        ));
    };
    let time = veto_audit::format_time(head["time_ms"].as_u64().unwrap_or(0));
    let spooled = match n("unshipped") {
        0 => String::new(),
        u => format!(", {u} entries still spooled at the agent"),
    };
    Ok(format!(
        "audit chain of agent {agent} at the server intact: {} entries ({} to {}), signed head at entry {seq} ({time}){spooled}",
        n("entries"),
        n("first"),
        n("last"),
    ))
}

/// `s` as a URL query value: everything but unreserved characters
/// percent-encoded.
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes matching records as JSON lines. A closed pipe ends quietly.
pub fn query_cmd(data: &Path, filter: &Filter, out: &mut dyn Write) -> Result<u64, AuditError> {
    let conn = open_ro(&db_path(data))?;
    let mut n = 0u64;
    let result = query(&conn, filter, |r| {
        let line = serde_json::to_string(&r).map_err(|e| AuditError::Corrupt(e.to_string()))?;
        writeln!(out, "{line}")
            .map_err(|e| AuditError::Io("output".into(), std::sync::Arc::new(e)))?;
        n += 1;
        Ok(())
    });
    match result {
        Err(AuditError::Io(_, e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(n),
        other => other.map(|_| n),
    }
}

/// `veto inventory`: a table for people, or JSON lines.
pub fn inventory_cmd(data: &Path, json: bool, out: &mut dyn Write) -> Result<(), AuditError> {
    let conn = open_ro(&db_path(data))?;
    let rows = inventory(&conn)?;
    let io = |e: std::io::Error| AuditError::Io("output".into(), std::sync::Arc::new(e));
    if json {
        for r in &rows {
            let line = serde_json::to_string(r).map_err(|e| AuditError::Corrupt(e.to_string()))?;
            writeln!(out, "{line}").map_err(io)?;
        }
        return Ok(());
    }
    let header = [
        "MACHINE",
        "DESTINATION",
        "FIRST SEEN",
        "LAST SEEN",
        "ALLOW",
        "DENY",
        "REDACT",
        "BYTES OUT",
        "BYTES IN",
    ];
    let mut table: Vec<Vec<String>> = Vec::new();
    for r in &rows {
        let n = |k: &str| r.decisions.get(k).copied().unwrap_or(0).to_string();
        table.push(vec![
            r.machine.clone(),
            format!("{}:{}", r.host, r.port),
            r.first_seen.clone(),
            r.last_seen.clone(),
            n("allow"),
            n("deny"),
            n("redact"),
            r.bytes_out.to_string(),
            r.bytes_in.to_string(),
        ]);
    }
    crate::table::write(out, &header, &table).map_err(io)?;
    if rows.is_empty() {
        writeln!(out, "(no destinations seen yet)").map_err(io)?;
    }
    Ok(())
}
