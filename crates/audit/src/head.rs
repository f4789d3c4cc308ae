//! The signed chain head: the chain's end, anchored outside the store.
//!
//! A hash chain shows an entry edited or deleted anywhere but at its end:
//! cut the newest entries off and what is left still links. So the writer
//! signs the head (the newest entry's number and hash, and when) with the
//! node's Ed25519 key and keeps it in `audit.head` beside the store. A
//! thread of its own signs and writes it, at most every [`INTERVAL`], so
//! neither the signature nor the file's fsync is ever inside a commit a
//! request waits for. `verify` holds the store to it: a store that ends
//! before the signed head, or holds another entry there, was cut.
//!
//! What it cannot show: entries written in the last [`INTERVAL`] before a
//! cut, and a cut that also puts back an older signed head (keep copies of
//! the head elsewhere, or ship the trail: agents send theirs to the server
//! with every batch).

use crate::AuditError;
use crate::signing::{Key, PublicKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often at most the head is signed and written while entries keep
/// coming: the window of newest entries a cut can take unnoticed.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// A chain head signed by the node that wrote it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// The newest entry's number.
    pub seq: i64,
    /// Its chain hash.
    pub hash: String,
    /// When it was signed (Unix milliseconds).
    pub time_ms: u64,
    /// The signer's public key (hex).
    pub key: String,
    /// Ed25519 over [`SignedHead::message`] (hex).
    pub signature: String,
}

impl SignedHead {
    fn message(seq: i64, hash: &str, time_ms: u64) -> String {
        format!("veto audit head\n{seq}\n{hash}\n{time_ms}\n")
    }

    pub fn sign(key: &Key, seq: i64, hash: &str, time_ms: u64) -> SignedHead {
        let (key, signature) = crate::signing::sign(key, &Self::message(seq, hash, time_ms));
        SignedHead {
            seq,
            hash: hash.to_string(),
            time_ms,
            key,
            signature,
        }
    }

    /// Whether the signature holds: under `trusted` when given, else under
    /// the key the head names (which catches an edited head, though not one
    /// signed afresh with another key).
    pub fn check(&self, trusted: Option<&PublicKey>) -> Result<(), String> {
        let key = match trusted {
            Some(k) => *k,
            None => crate::signing::public_from_hex(&self.key)
                .ok_or_else(|| "it names no valid key".to_string())?,
        };
        let msg = Self::message(self.seq, &self.hash, self.time_ms);
        if crate::signing::check(&key, &msg, &self.signature) {
            Ok(())
        } else if trusted.is_some() {
            Err("its signature does not verify under the trusted key".into())
        } else {
            Err("its signature does not verify".into())
        }
    }

    pub fn time(&self) -> String {
        crate::format_time(self.time_ms)
    }
}

/// Where the signed head of the store at `db` is kept.
pub fn head_path(db: &Path) -> PathBuf {
    db.with_file_name("audit.head")
}

/// The signed head in `path`; `None` when there is no file.
pub fn read(path: &Path) -> Result<Option<SignedHead>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            AuditError::Corrupt(format!("{} is not a signed head: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(path.display().to_string(), e)),
    }
}

/// Replaces the head file atomically: a crash leaves the old head or the
/// new one, never half of one (the old one is merely behind the store).
pub fn write(path: &Path, head: &SignedHead) -> std::io::Result<()> {
    let tmp = path.with_extension("head.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let line = serde_json::to_string(head).map_err(std::io::Error::other)?;
    writeln!(f, "{line}")?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

type Waiter = (i64, oneshot::Sender<Result<(), AuditError>>);

#[derive(Default)]
struct Pending {
    /// The newest committed entry.
    latest: Option<(i64, String)>,
    /// Flushes waiting for the head to reach an entry.
    waiters: Vec<Waiter>,
    stop: bool,
}

/// The thread that signs and writes the head; the writer tells it of each
/// commit. Dropping it writes the last head and waits for that.
pub(crate) struct Signer {
    pending: Arc<(Mutex<Pending>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Signer {
    pub(crate) fn start(path: PathBuf, key: Key, signed: i64) -> std::io::Result<Signer> {
        let pending = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("veto-audit-head".into())
            .spawn(move || run(&p, &path, &key, signed))?;
        Ok(Signer {
            pending,
            thread: Some(thread),
        })
    }

    /// Entries up to `seq` are committed; the newest has `hash`.
    pub(crate) fn committed(&self, seq: i64, hash: &str) {
        let (lock, cv) = &*self.pending;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if p.latest.as_ref().is_none_or(|(s, _)| *s < seq) {
            p.latest = Some((seq, hash.to_string()));
            cv.notify_one();
        }
    }

    /// Answers `tx` once the signed head has reached entry `seq`, without
    /// waiting for the interval.
    pub(crate) fn after(&self, seq: i64, tx: oneshot::Sender<Result<(), AuditError>>) {
        let (lock, cv) = &*self.pending;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        p.waiters.push((seq, tx));
        cv.notify_one();
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.pending;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(pending: &(Mutex<Pending>, Condvar), path: &Path, key: &Key, mut signed: i64) {
    let (lock, cv) = pending;
    let mut last_write: Option<Instant> = None;
    loop {
        let (latest, waiters, stop) = {
            let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let behind = p.latest.as_ref().is_some_and(|(s, _)| *s > signed);
                if p.stop || !p.waiters.is_empty() {
                    break;
                }
                if behind {
                    // Rate: at most one signature per interval while
                    // entries keep coming; the first after a pause at once.
                    let wait =
                        last_write.map_or(Duration::ZERO, |t| INTERVAL.saturating_sub(t.elapsed()));
                    if wait.is_zero() {
                        break;
                    }
                    p = cv
                        .wait_timeout(p, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                } else {
                    p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
                }
            }
            (p.latest.clone(), std::mem::take(&mut p.waiters), p.stop)
        };
        let mut result = Ok(());
        if let Some((seq, hash)) = latest.filter(|(s, _)| *s > signed) {
            let (ms, _) = crate::now();
            let head = SignedHead::sign(key, seq, &hash, ms);
            match write(path, &head) {
                Ok(()) => signed = seq,
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "cannot write the signed audit head");
                    result = Err(AuditError::io(path.display().to_string(), e));
                }
            }
            last_write = Some(Instant::now());
        }
        for (seq, tx) in waiters {
            let _ = tx.send(if seq <= signed {
                Ok(())
            } else {
                result.clone().and(Err(AuditError::WriterGone))
            });
        }
        if stop {
            return;
        }
    }
}

/// What the store says about a signed head, checked when a writer opens
/// it: `Some(event, detail)` is a problem to record in the chain.
pub(crate) fn check_on_open(
    conn: &rusqlite::Connection,
    db: &Path,
    key: &PublicKey,
) -> Result<Option<(&'static str, serde_json::Value)>, AuditError> {
    let (top, _) = crate::store::head(conn)?;
    let path = head_path(db);
    let head = match read(&path) {
        Ok(h) => h,
        Err(e) => {
            return Ok(Some((
                "head-invalid",
                serde_json::json!({ "found_seq": top, "why": e.to_string() }),
            )));
        }
    };
    let Some(head) = head else {
        return Ok((top > 0).then(|| {
            (
                "head-missing",
                serde_json::json!({
                    "found_seq": top,
                    "why": format!("{} is missing: the entries before this one cannot be shown complete", path.display()),
                }),
            )
        }));
    };
    if let Err(why) = head.check(Some(key)) {
        return Ok(Some((
            "head-invalid",
            serde_json::json!({ "found_seq": top, "why": format!("{}: {why}", path.display()) }),
        )));
    }
    Ok(cut(conn, &head)?.map(|c| ("chain-cut", c.detail(&head))))
}

/// How a store falls short of a signed head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The store's newest entry.
    pub found_seq: i64,
    /// Whether the entry the head names is there with another hash (the
    /// end was cut and written anew), rather than missing.
    pub rewritten: bool,
}

impl Cut {
    /// Entries at least missing.
    pub fn missing(&self, head: &SignedHead) -> i64 {
        (head.seq - self.found_seq).max(0)
    }

    fn detail(&self, head: &SignedHead) -> serde_json::Value {
        serde_json::json!({
            "signed_seq": head.seq,
            "signed_hash": head.hash,
            "signed_time": head.time(),
            "found_seq": self.found_seq,
            "missing": self.missing(head),
            "rewritten": self.rewritten,
        })
    }
}

/// Whether the store at `conn` reaches `head`. Entries pruned behind a
/// checkpoint still count as reached (the checkpoint vouches for them).
pub fn cut(conn: &rusqlite::Connection, head: &SignedHead) -> Result<Option<Cut>, AuditError> {
    use rusqlite::OptionalExtension;
    let (top, _) = crate::store::head(conn)?;
    let at: Option<String> = conn
        .query_row("SELECT hash FROM chain WHERE seq = ?1", [head.seq], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match at {
        Some(h) if h == head.hash => None,
        Some(_) => Some(Cut {
            found_seq: top,
            rewritten: true,
        }),
        None if top > head.seq => None,
        None => Some(Cut {
            found_seq: top,
            rewritten: false,
        }),
    })
}
