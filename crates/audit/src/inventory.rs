//! `veto inventory`: every destination seen, from the store itself (not a
//! second copy kept by hand), which is how shadow integrations are found.

use crate::AuditError;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// One (machine, host, port) seen in the trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Destination {
    pub machine: String,
    pub host: String,
    pub port: u16,
    pub first_seen: String,
    pub last_seen: String,
    /// Requests per decision (`allow`, `deny`, `redact`).
    pub decisions: BTreeMap<String, u64>,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

pub fn inventory(conn: &Connection) -> Result<Vec<Destination>, AuditError> {
    let mut st = conn.prepare(
        "SELECT d.machine, d.host, d.port, d.decision, MIN(d.time_ms), MAX(d.time_ms), COUNT(*),
                COALESCE(SUM(json_extract(c.body, '$.bytes_out')), 0),
                COALESCE(SUM(json_extract(c.body, '$.bytes_in')), 0)
         FROM chain d LEFT JOIN chain c ON c.rid = d.rid AND c.kind = 1
         WHERE d.kind = 0
         GROUP BY d.machine, d.host, d.port, d.decision
         ORDER BY d.machine, d.host, d.port",
    )?;
    let mut rows = st.query([])?;
    let mut out: Vec<Destination> = Vec::new();
    while let Some(r) = rows.next()? {
        let machine: String = r.get(0)?;
        let host: String = r.get(1)?;
        let port: i64 = r.get(2)?;
        let decision: String = r.get(3)?;
        let (first, last, count): (i64, i64, i64) = (r.get(4)?, r.get(5)?, r.get(6)?);
        let (bytes_out, bytes_in): (i64, i64) = (r.get(7)?, r.get(8)?);
        let port = u16::try_from(port).unwrap_or(0);
        let fmt = |ms: i64| crate::format_time(u64::try_from(ms).unwrap_or(0));
        match out.last_mut() {
            Some(d) if d.machine == machine && d.host == host && d.port == port => {
                if fmt(first) < d.first_seen {
                    d.first_seen = fmt(first);
                }
                if fmt(last) > d.last_seen {
                    d.last_seen = fmt(last);
                }
                *d.decisions.entry(decision).or_default() += count as u64;
                d.bytes_out += bytes_out as u64;
                d.bytes_in += bytes_in as u64;
            }
            _ => out.push(Destination {
                machine,
                host,
                port,
                first_seen: fmt(first),
                last_seen: fmt(last),
                decisions: BTreeMap::from([(decision, count as u64)]),
                bytes_out: bytes_out as u64,
                bytes_in: bytes_in as u64,
            }),
        }
    }
    Ok(out)
}
