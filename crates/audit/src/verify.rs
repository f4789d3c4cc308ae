//! `veto audit verify`: walks the chain and names the first entry that was
//! edited, deleted or reordered.

use crate::AuditError;
use crate::record::{Completed, Decided, Event, GENESIS, Kind, chain_hash};
use rusqlite::Connection;

/// The first break in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The entry's content no longer hashes to its stored hash.
    Edited { seq: i64, rid: String },
    /// The entry does not follow the one before it: an entry in between was
    /// deleted, or entries were reordered.
    Unlinked { seq: i64, rid: String },
    /// Entry numbers jump: entries were deleted.
    Missing { from: i64, to: i64 },
    /// A query column disagrees with the hashed content.
    Column {
        seq: i64,
        rid: String,
        column: &'static str,
    },
    /// An entry of a kind this veto does not know.
    UnknownKind { seq: i64, kind: i64 },
    /// A prune checkpoint whose signature does not hold: forged, or made by
    /// another key than the trusted one.
    Checkpoint { id: String, why: String },
    /// The store ends before its signed head, or holds another entry
    /// where the head points: its newest entries were cut off.
    Truncated {
        /// The store's newest entry.
        found: i64,
        /// The entry the signed head names, and when it was signed.
        signed: i64,
        signed_time: String,
        /// The entry at `signed` is there with another hash.
        rewritten: bool,
    },
    /// A writer found its store short of the signed head (or the head gone
    /// or forged) when it opened it, and said so in the chain.
    Cut { seq: i64, what: String },
    /// There is no signed head, so a cut end could not be seen.
    Unanchored { path: String },
    /// The signed head itself does not verify.
    Head { path: String, why: String },
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Edited { seq, rid } => write!(
                f,
                "record {rid} (entry {seq}) was edited: its content does not match its hash"
            ),
            Broken::Unlinked { seq, rid } => write!(
                f,
                "record {rid} (entry {seq}) does not follow the entry before it: entries were deleted or reordered"
            ),
            Broken::Missing { from, to } if from == to => {
                write!(f, "entry {from} is missing: it was deleted")
            }
            Broken::Missing { from, to } => {
                write!(f, "entries {from} to {to} are missing: they were deleted")
            }
            Broken::Column { seq, rid, column } => write!(
                f,
                "record {rid} (entry {seq}) was edited: its `{column}` column does not match its hashed content"
            ),
            Broken::UnknownKind { seq, kind } => {
                write!(f, "entry {seq} has an unknown kind {kind}")
            }
            Broken::Checkpoint { id, why } => {
                write!(f, "prune checkpoint {id} is not signed off: {why}")
            }
            Broken::Truncated {
                found,
                signed,
                signed_time,
                rewritten: false,
            } => write!(
                f,
                "the chain was cut: it ends at entry {found}, but its head was signed at entry {signed} ({signed_time}); {} entries are missing",
                signed - found
            ),
            Broken::Truncated {
                found,
                signed,
                signed_time,
                rewritten: true,
            } => write!(
                f,
                "the chain was cut and written anew: entry {signed} is not the one its head was signed at ({signed_time}); the store ends at entry {found}"
            ),
            Broken::Cut { seq, what } => write!(f, "entry {seq}: {what}"),
            Broken::Unanchored { path } => write!(
                f,
                "there is no signed head ({path}): a cut end of the chain cannot be seen (was the file deleted?)"
            ),
            Broken::Head { path, why } => write!(f, "the signed head {path} is not valid: {why}"),
        }
    }
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub entries: u64,
    pub records: u64,
    pub head: String,
    /// The signed head the store was held to, when it was.
    pub anchor: Option<crate::head::SignedHead>,
}

type Columns = (
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn check_columns(seq: i64, kind: Kind, body: &str, c: &Columns) -> Result<(), Broken> {
    let (rid, time_ms, machine, host, port, decision, rule) = c;
    let bad = |column| Broken::Column {
        seq,
        rid: rid.clone(),
        column,
    };
    match kind {
        Kind::Decision => {
            let d: Decided = serde_json::from_str(body).map_err(|_| Broken::Edited {
                seq,
                rid: rid.clone(),
            })?;
            let t = humantime::parse_rfc3339(&d.time)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64);
            if d.id != *rid {
                return Err(bad("rid"));
            }
            if t != Some(*time_ms) {
                return Err(bad("time_ms"));
            }
            if machine.as_deref() != Some(d.machine.as_str()) {
                return Err(bad("machine"));
            }
            if host.as_deref() != Some(d.host.as_str()) {
                return Err(bad("host"));
            }
            if *port != Some(i64::from(d.port)) {
                return Err(bad("port"));
            }
            if decision.as_deref() != Some(d.decision.as_str()) {
                return Err(bad("decision"));
            }
            if rule.as_deref() != Some(d.rule.as_str()) {
                return Err(bad("rule"));
            }
        }
        Kind::Completion => {
            let c: Completed = serde_json::from_str(body).map_err(|_| Broken::Edited {
                seq,
                rid: rid.clone(),
            })?;
            if c.id != *rid {
                return Err(bad("rid"));
            }
        }
        Kind::Event => {
            let e: Event = serde_json::from_str(body).map_err(|_| Broken::Edited {
                seq,
                rid: rid.clone(),
            })?;
            if e.id != *rid {
                return Err(bad("rid"));
            }
            if let Some(what) = cut_reported(&e) {
                return Err(Broken::Cut { seq, what });
            }
        }
    }
    Ok(())
}

/// What an event a writer appends on finding its store cut says (`None`
/// for every other event): a chain holding one never verifies clean.
pub fn cut_reported(e: &Event) -> Option<String> {
    let d = &e.detail;
    let n = |k: &str| d[k].as_i64().unwrap_or(-1);
    let s = |k: &str| d[k].as_str().unwrap_or("?").to_string();
    Some(match e.event.as_str() {
        "chain-cut" if d["rewritten"].as_bool() == Some(true) => format!(
            "when veto opened the trail ({}), entry {} was not the one its head was signed at ({}): the chain was cut and written anew",
            e.time,
            n("signed_seq"),
            s("signed_time")
        ),
        "chain-cut" => format!(
            "when veto opened the trail ({}), it ended at entry {} but its head was signed at entry {} ({}): {} entries were cut off",
            e.time,
            n("found_seq"),
            n("signed_seq"),
            s("signed_time"),
            n("missing")
        ),
        "head-missing" | "head-invalid" => format!(
            "when veto opened the trail ({}) at entry {}, its signed head could not vouch for it: {}",
            e.time,
            n("found_seq"),
            s("why")
        ),
        _ => return None,
    })
}

/// Walks the whole chain, oldest first.
pub fn verify(conn: &Connection) -> Result<Result<Intact, Broken>, AuditError> {
    verify_with(conn, None)
}

/// The signature of a prune checkpoint: against the trusted key when one is
/// given, else against the key the checkpoint names (which still catches an
/// edited checkpoint, though not one forged with another key).
fn check_checkpoint(
    e: &crate::record::Event,
    trusted: Option<&crate::signing::PublicKey>,
) -> Result<(), Broken> {
    let d = &e.detail;
    let bad = |why: &str| Broken::Checkpoint {
        id: e.id.clone(),
        why: why.to_string(),
    };
    let msg = crate::signing::message(
        d["through_seq"].as_i64().unwrap_or(-1),
        d["through_hash"].as_str().unwrap_or(""),
        d["entries"].as_i64().unwrap_or(-1),
        d["records"].as_i64().unwrap_or(-1),
    );
    let Some(sig) = d["signature"].as_str() else {
        return match trusted {
            Some(_) => Err(bad("it has no signature")),
            None => Ok(()),
        };
    };
    let named = d["key"].as_str().and_then(crate::signing::public_from_hex);
    let key = match (trusted, named) {
        (Some(t), _) => *t,
        (None, Some(k)) => k,
        (None, None) => return Err(bad("it names no key")),
    };
    if crate::signing::check(&key, &msg, sig) {
        Ok(())
    } else {
        Err(bad(if trusted.is_some() {
            "the signature does not verify under the trusted key"
        } else {
            "the signature does not verify"
        }))
    }
}

/// As [`verify`], holding prune checkpoints to a trusted public key.
pub fn verify_with(
    conn: &Connection,
    trusted: Option<&crate::signing::PublicKey>,
) -> Result<Result<Intact, Broken>, AuditError> {
    let mut st = conn.prepare(
        "SELECT seq, kind, rid, time_ms, machine, host, port, decision, rule, body, prev, hash FROM chain ORDER BY seq",
    )?;
    // Where pruning left off: checkpoint events name the last entry removed
    // and its hash, so the remaining chain starts from there.
    let mut checkpoints = std::collections::HashMap::new();
    let mut forged = None;
    crate::store::events(conn, |e| {
        if e.event == "prune" && forged.is_none() {
            forged = check_checkpoint(&e, trusted).err();
        }
        let seq = e.detail["through_seq"].as_i64();
        let hash = e.detail["through_hash"].as_str();
        if let (true, Some(seq), Some(hash)) = (e.event == "prune", seq, hash) {
            checkpoints.insert(seq, hash.to_string());
        }
        Ok(())
    })?;
    if let Some(b) = forged {
        return Ok(Err(b));
    }
    let first: Option<i64> = conn.query_row("SELECT MIN(seq) FROM chain", [], |r| r.get(0))?;
    let (mut expect_seq, mut prev) =
        match first.and_then(|f| checkpoints.get(&(f - 1)).map(|h| (f, h.clone()))) {
            Some(start) => start,
            None => (1, GENESIS.to_string()),
        };
    let mut rows = st.query([])?;
    let mut entries = 0u64;
    let mut records = 0u64;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let kind_raw: i64 = row.get(1)?;
        let cols: Columns = (
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        );
        let body: String = row.get(9)?;
        let row_prev: String = row.get(10)?;
        let hash: String = row.get(11)?;
        let rid = cols.0.clone();
        if seq != expect_seq {
            return Ok(Err(Broken::Missing {
                from: expect_seq,
                to: seq - 1,
            }));
        }
        let Some(kind) = Kind::from_i64(kind_raw) else {
            return Ok(Err(Broken::UnknownKind {
                seq,
                kind: kind_raw,
            }));
        };
        if chain_hash(&row_prev, kind, &body) != hash {
            return Ok(Err(Broken::Edited { seq, rid }));
        }
        if row_prev != prev {
            return Ok(Err(Broken::Unlinked { seq, rid }));
        }
        if let Err(b) = check_columns(seq, kind, &body, &cols) {
            return Ok(Err(b));
        }
        if kind == Kind::Decision {
            records += 1;
        }
        entries += 1;
        prev = hash;
        expect_seq += 1;
    }
    Ok(Ok(Intact {
        entries,
        records,
        head: prev,
        anchor: None,
    }))
}

/// As [`verify_with`], and the chain's end held to its signed head
/// (`head`, read from `head_path` *before* the store is read, since the
/// head follows the store): a missing head is a break, as is one that does
/// not verify or that the store falls short of.
pub fn verify_anchored(
    conn: &Connection,
    head: Option<&crate::head::SignedHead>,
    head_path: &std::path::Path,
    trusted: Option<&crate::signing::PublicKey>,
) -> Result<Result<Intact, Broken>, AuditError> {
    let path = head_path.display().to_string();
    if let Some(h) = head
        && let Err(why) = h.check(trusted)
    {
        return Ok(Err(Broken::Head { path, why }));
    }
    let mut intact = match verify_with(conn, trusted)? {
        Ok(i) => i,
        Err(b) => return Ok(Err(b)),
    };
    let Some(h) = head else {
        return Ok(if intact.entries == 0 {
            Ok(intact)
        } else {
            Err(Broken::Unanchored { path })
        });
    };
    if let Some(c) = crate::head::cut(conn, h)? {
        return Ok(Err(Broken::Truncated {
            found: c.found_seq,
            signed: h.seq,
            signed_time: h.time(),
            rewritten: c.rewritten,
        }));
    }
    intact.anchor = Some(h.clone());
    Ok(Ok(intact))
}
