//! The audit record (contract.md, "The audit record") and the chain entries
//! it is stored as.
//!
//! A decision is known before the answer; its status, bytes and duration only
//! after (a forwarded request's upstream status, a tunnel's bytes when it
//! closes). So a record is two entries of one hash chain: the decision,
//! written before the client hears anything, and its completion, written
//! when it is over. Queries merge them into the one record users see; both
//! are chained, so neither can be edited or dropped unnoticed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `prev` of the first entry of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is known when the decision is made: everything the record holds
/// but the chain fields and what only the end of the exchange tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub machine: String,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub ips: Vec<String>,
    /// Whether veto asked DNS for the host (absent: it did not, e.g. the
    /// name alone was refused, or `--resolve` answered).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dns_lookup: bool,
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would: Option<String>,
    pub rule: String,
    pub reason: String,
    /// Data classes found, with counts. Never the values.
    pub data: BTreeMap<String, u32>,
    /// Known at decision time for answers veto gives itself (403, 407...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub policy: String,
}

/// What the end of an exchange tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub id: String,
    /// What the first bytes of a tunnel showed, when the decision was made
    /// before they arrived (`tls` or `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
}

/// One audit record as users see it: in the store, `veto audit query`, the
/// live stream and exports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub time: String,
    pub machine: String,
    pub protocol: String,
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dns_lookup: bool,
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would: Option<String>,
    pub rule: String,
    pub reason: String,
    pub data: BTreeMap<String, u32>,
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
    pub policy: String,
    pub prev: String,
    pub hash: String,
}

impl Record {
    /// The record of a decision, completed if its completion is known.
    pub fn merge(d: Decided, done: Option<Completed>, prev: String, hash: String) -> Record {
        let done = done.unwrap_or_default();
        Record {
            status: done.status.or(d.status),
            id: d.id,
            time: d.time,
            machine: d.machine,
            protocol: done.protocol.unwrap_or(d.protocol),
            method: d.method,
            host: d.host,
            port: d.port,
            path: d.path,
            ips: d.ips,
            dns_lookup: d.dns_lookup,
            decision: d.decision,
            would: d.would,
            rule: d.rule,
            reason: d.reason,
            data: d.data,
            bytes_out: done.bytes_out,
            bytes_in: done.bytes_in,
            duration_ms: done.duration_ms,
            policy: d.policy,
            prev,
            hash,
        }
    }
}

/// Something that happened to veto itself, in the same chain as the
/// decisions: a policy reload (old hash, new hash, result), and later
/// pruning checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub time: String,
    /// `policy-reload`.
    pub event: String,
    /// What the event says, as a JSON object (for a reload: `old`, `new`,
    /// `result`, `trigger`, `errors`).
    pub detail: serde_json::Value,
}

/// The kinds of chain entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Decision = 0,
    Completion = 1,
    Event = 2,
}

impl Kind {
    pub fn from_i64(v: i64) -> Option<Kind> {
        match v {
            0 => Some(Kind::Decision),
            1 => Some(Kind::Completion),
            2 => Some(Kind::Event),
            _ => None,
        }
    }
}

/// The chain hash: SHA-256 over the previous hash, the entry kind and the
/// entry's canonical JSON (serde_json of the structs above: fixed field
/// order, fixed escaping). Hex, lower case.
pub fn chain_hash(prev: &str, kind: Kind, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update([b'\n', b'0' + kind as u8, b'\n']);
    h.update(body.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new record id: a ULID (48 bits of milliseconds, 80 random bits,
/// Crockford base32), so ids sort by time and never collide across agents.
pub fn new_id(unix_ms: u64) -> String {
    let mut rand = [0u8; 10];
    // A failing OS RNG is not worth refusing traffic over: fall back to
    // the clock's sub-millisecond bits and a process counter.
    if getrandom::fill(&mut rand).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        rand[..8].copy_from_slice(&c.to_be_bytes());
        rand[8..].copy_from_slice(&nanos.to_be_bytes()[2..]);
    }
    let mut v: u128 = u128::from(unix_ms & 0xffff_ffff_ffff) << 80;
    for (i, b) in rand.iter().enumerate() {
        v |= u128::from(*b) << (72 - 8 * i);
    }
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as u32;
        *slot = CROCKFORD[((v >> shift) & 31) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn format_time(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_differ() {
        let a = new_id(1_700_000_000_000);
        let b = new_id(1_700_000_000_001);
        let c = new_id(1_700_000_000_001);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_ne!(b, c);
    }

    #[test]
    fn hash_covers_prev_kind_and_body() {
        let h = chain_hash(GENESIS, Kind::Decision, "{}");
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash(GENESIS, Kind::Completion, "{}"));
        assert_ne!(h, chain_hash(&h, Kind::Decision, "{}"));
        assert_ne!(h, chain_hash(GENESIS, Kind::Decision, "{ }"));
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    }
}
