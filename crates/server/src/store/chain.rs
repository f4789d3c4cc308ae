//! Agents' shipped audit chains, held to what `veto audit verify` holds a
//! local trail to: every entry hashes to its hash and follows the one
//! before it, and the chain's end is anchored by the agent's signed head,
//! sent with every batch. The head's key is pinned on first sight, and a
//! head never moves back: an agent whose trail was cut (and its head with
//! it) is refused, not quietly taken at its word.

use super::{Entry, StoreError};
use serde::Serialize;
use veto_audit::head::SignedHead;
use veto_audit::{GENESIS, Kind, chain_hash};

/// The latest signed head of each agent.
pub(crate) const MIGRATION: &str = "CREATE TABLE audit_heads (
    agent     TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    time_ms   BIGINT NOT NULL,
    key       TEXT NOT NULL,
    signature TEXT NOT NULL
);";

fn conflict(msg: String) -> StoreError {
    StoreError::Conflict(msg)
}

/// A batch, in order, with `anchor` the stored hash of the entry just
/// before its first (if stored): each entry hashes to its hash and follows
/// the one before it. The first entry of a trail follows the genesis.
pub(crate) fn links(anchor: Option<&str>, entries: &[Entry]) -> Result<(), StoreError> {
    let mut before: Option<(i64, &str)> = None;
    for e in entries {
        let Some(kind) = Kind::from_i64(e.kind) else {
            return Err(conflict(format!(
                "entry {} has an unknown kind {}",
                e.seq, e.kind
            )));
        };
        if chain_hash(&e.prev, kind, &e.body) != e.hash {
            return Err(conflict(format!(
                "entry {} does not hash to its hash: it was edited after it was chained",
                e.seq
            )));
        }
        let expect = match before {
            Some((seq, _)) if e.seq != seq + 1 => {
                return Err(conflict(format!(
                    "entry {} follows entry {seq} in the batch: entries are missing or out of order",
                    e.seq
                )));
            }
            Some((_, hash)) => Some(hash),
            None if e.seq == 1 => Some(GENESIS),
            None => anchor,
        };
        if expect.is_some_and(|h| h != e.prev) {
            return Err(conflict(format!(
                "entry {} does not follow the entry before it: entries were deleted or reordered",
                e.seq
            )));
        }
        before = Some((e.seq, &e.hash));
    }
    Ok(())
}

/// A head an agent sent, against the one stored for it and the stored
/// entry at the head's seq (`at`, when stored).
pub(crate) fn head_ok(
    stored: Option<&SignedHead>,
    head: &SignedHead,
    at: Option<&str>,
) -> Result<(), StoreError> {
    head.check(None)
        .map_err(|why| conflict(format!("the agent's signed audit head is not valid: {why}")))?;
    if let Some(s) = stored {
        if s.key != head.key {
            return Err(conflict(
                "the agent's audit head is signed by another key than before (was its data directory replaced? enroll it anew)".into(),
            ));
        }
        if head.seq < s.seq {
            return Err(conflict(format!(
                "the agent's audit trail was cut: its signed head went back from entry {} ({}) to entry {}",
                s.seq,
                s.time(),
                head.seq
            )));
        }
        if head.seq == s.seq && head.hash != s.hash {
            return Err(conflict(format!(
                "the agent's audit trail was cut and written anew: entry {} is not the one signed before",
                head.seq
            )));
        }
    }
    if at.is_some_and(|h| h != head.hash) {
        return Err(conflict(format!(
            "entry {} stored here is not the one the agent's head was signed at",
            head.seq
        )));
    }
    Ok(())
}

/// What the server holds of an agent's chain, checked.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ChainCheck {
    pub agent: String,
    /// Entries stored, and the range they cover.
    pub entries: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// The agent's latest signed head.
    pub head: Option<SignedHead>,
    /// Entries the head vouches for that are not shipped yet.
    pub unshipped: i64,
    /// The first break, in words.
    pub broken: Option<String>,
}

/// Walks an agent's stored entries page by page (`page(after)`), as
/// `veto audit verify` walks a local store.
pub(crate) async fn walk<F, Fut>(
    agent: String,
    head: Option<SignedHead>,
    mut page: F,
) -> Result<ChainCheck, StoreError>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Entry>, StoreError>>,
{
    let mut c = ChainCheck {
        agent,
        head,
        ..ChainCheck::default()
    };
    let mut prev: Option<Entry> = None;
    let mut after = 0;
    'pages: loop {
        let batch = page(after).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in batch {
            let anchor = prev.as_ref().map(|p| p.hash.as_str());
            let first = prev.is_none() && e.seq != 1;
            if let Some(p) = &prev
                && e.seq != p.seq + 1
            {
                c.broken = Some(format!(
                    "entries {} to {} are missing: they were deleted",
                    p.seq + 1,
                    e.seq - 1
                ));
                break 'pages;
            }
            // The oldest stored entry's predecessor may be gone by design
            // (the agent pruned before shipping): its link is not checked.
            let checked = if first { None } else { anchor };
            if let Err(StoreError::Conflict(why)) = links(checked, std::slice::from_ref(&e)) {
                c.broken = Some(why);
                break 'pages;
            }
            if let Some(why) = cut_reported(&e) {
                c.broken = Some(format!("entry {}: {why}", e.seq));
                break 'pages;
            }
            if let Some(h) = &c.head
                && h.seq == e.seq
                && h.hash != e.hash
            {
                c.broken = Some(format!(
                    "entry {} is not the one the agent's head was signed at",
                    e.seq
                ));
                break 'pages;
            }
            c.first.get_or_insert(e.seq);
            c.last = Some(e.seq);
            c.entries += 1;
            prev = Some(e);
        }
    }
    if let Some(h) = &c.head {
        c.unshipped = (h.seq - c.last.unwrap_or(0)).max(0);
    }
    Ok(c)
}

/// An event in which the agent's own writer said its trail was cut.
fn cut_reported(e: &Entry) -> Option<String> {
    if Kind::from_i64(e.kind) != Some(Kind::Event) {
        return None;
    }
    let ev: veto_audit::Event = serde_json::from_str(&e.body).ok()?;
    veto_audit::cut_reported(&ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let body = format!("{{\"n\":{seq}}}");
                let hash = chain_hash(&prev, Kind::Completion, &body);
                Entry {
                    seq,
                    kind: Kind::Completion as i64,
                    body,
                    prev: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect()
    }

    #[test]
    fn links_catch_edits_gaps_and_reorders() {
        let c = chain(6);
        assert!(links(None, &c).is_ok());
        assert!(links(Some(&c[2].hash), &c[3..]).is_ok());
        assert!(links(Some(&c[1].hash), &c[3..]).is_err(), "wrong anchor");
        let mut edited = c.clone();
        edited[4].body = "{\"n\":99}".into();
        assert!(links(None, &edited).is_err());
        let gap = [c[0].clone(), c[2].clone()];
        assert!(links(None, &gap).is_err());
        let mut forged = c.clone();
        forged[0].prev = "1".repeat(64);
        forged[0].hash = chain_hash(&forged[0].prev, Kind::Completion, &forged[0].body);
        assert!(links(None, &forged[..1]).is_err(), "seq 1 follows genesis");
    }

    #[test]
    fn heads_are_pinned_and_never_move_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = veto_audit::signing::load_or_create(dir.path()).unwrap();
        let h5 = SignedHead::sign(&key, 5, "aa", 1);
        let h7 = SignedHead::sign(&key, 7, "bb", 2);
        assert!(head_ok(None, &h5, Some("aa")).is_ok());
        assert!(head_ok(Some(&h5), &h7, None).is_ok());
        assert!(head_ok(Some(&h7), &h5, Some("aa")).is_err(), "moved back");
        assert!(head_ok(Some(&h5), &h5, Some("zz")).is_err(), "other entry");
        let other = tempfile::tempdir().unwrap();
        let stranger = veto_audit::signing::load_or_create(other.path()).unwrap();
        let foreign = SignedHead::sign(&stranger, 9, "cc", 3);
        assert!(head_ok(Some(&h7), &foreign, None).is_err(), "other key");
        let mut forged = h7.clone();
        forged.seq = 8;
        assert!(head_ok(Some(&h5), &forged, None).is_err(), "bad signature");
    }
}
