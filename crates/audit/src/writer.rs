//! The audit writer: one dedicated thread owns the store and commits in
//! groups.
//!
//! Producers (the proxy's request tasks) hand over a decision and wait for
//! its receipt; everything that arrived while the previous group was
//! committing goes into the next transaction together, so a burst of
//! concurrent requests costs one commit, not one each. Only this thread
//! touches the disk; nobody holds a lock across its I/O.

use crate::AuditError;
use crate::record::{Completed, Decided, Event, Kind, Record, chain_hash, format_time};
use crate::store::{self, Row, Sync};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc, oneshot};

/// At most this many entries per transaction: bounds a commit's latency.
const MAX_GROUP: usize = 4_096;
/// Producers wait (backpressure) once this many entries are queued.
const QUEUE: usize = 65_536;
/// How many records the live stream keeps for slow watchers before they
/// are told how many they skipped.
const LIVE: usize = 4_096;

/// Why [`Writer::try_complete`] did not queue its entry.
#[derive(Debug)]
pub enum Full {
    /// The queue is full: send it again with [`Writer::complete`].
    Later(Completed),
    /// The writer thread is gone.
    Gone,
}

/// Proof that a decision is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: i64,
    pub hash: String,
}

enum Job {
    Decide(
        Box<Decided>,
        i64,
        oneshot::Sender<Result<Receipt, AuditError>>,
    ),
    Complete(Box<Completed>, i64),
    Event(
        Box<Event>,
        i64,
        oneshot::Sender<Result<Receipt, AuditError>>,
    ),
    Flush(oneshot::Sender<Result<(), AuditError>>),
    Prune(
        Retention,
        oneshot::Sender<Result<Option<Pruned>, AuditError>>,
    ),
}

/// How much of the trail to keep. Older entries are pruned behind a
/// checkpoint entry in the chain, so what remains still verifies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep entries younger than this.
    pub max_age: Option<std::time::Duration>,
    /// Keep the store under this many bytes (the oldest quarter goes when
    /// it is over).
    pub max_bytes: Option<u64>,
}

/// What a prune removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    /// Entries up to and including this one are gone.
    pub through_seq: i64,
    pub entries: i64,
    pub records: i64,
}

/// What the writer has committed since it started, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Transactions committed (one per group).
    pub commits: u64,
    /// Chain entries in them.
    pub entries: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    entries: AtomicU64,
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    live: broadcast::Sender<Arc<Record>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Opens the store at `path` and starts the writer thread.
    pub fn start(path: &Path, sync: Sync) -> Result<Writer, AuditError> {
        Writer::start_signed(path, sync, None)
    }

    /// As [`Writer::start`], signing prune checkpoints with `key`.
    pub fn start_signed(
        path: &Path,
        sync: Sync,
        key: Option<crate::signing::Key>,
    ) -> Result<Writer, AuditError> {
        let lock = lock(path)?;
        let conn = store::open_rw(path, sync)?;
        // The chain's end is anchored by a signed head beside the store;
        // a store that falls short of it was cut while no writer held it.
        let problem = match &key {
            Some(k) => crate::head::check_on_open(&conn, path, &k.verifying_key())?,
            None => None,
        };
        let signer = match &key {
            Some(k) => Some(
                crate::head::Signer::start(crate::head::head_path(path), k.clone(), 0)
                    .map_err(|e| AuditError::io("audit head thread", e))?,
            ),
            None => None,
        };
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (live, _) = broadcast::channel(LIVE);
        let counters = Arc::new(Counters::default());
        let mut state = State {
            _lock: lock,
            counters: counters.clone(),
            path: path.to_path_buf(),
            sync,
            head: store::head(&conn)?,
            conn: Some(conn),
            live: live.clone(),
            key,
            signer,
            checkpoints: crate::checkpoint::Checkpointer::start(path.to_path_buf())
                .map_err(|e| AuditError::io("audit checkpoint thread", e))?,
        };
        if let Some((event, detail)) = problem {
            // Recorded in the chain itself, so the gap stays on record
            // (and `verify` names it) however the head moves on.
            tracing::error!(%event, %detail, "the audit trail does not reach its signed head");
            let (ms, time) = now();
            let e = Event {
                id: crate::record::new_id(ms),
                time,
                event: event.into(),
                detail,
            };
            let (tx, _) = oneshot::channel();
            state.write(&[Job::Event(Box::new(e), ms as i64, tx)])?;
        }
        std::thread::Builder::new()
            .name("veto-audit".into())
            .spawn(move || state.run(rx))
            .map_err(|e| AuditError::io("audit writer thread", e))?;
        Ok(Writer {
            jobs,
            live,
            counters,
        })
    }

    /// Records a decision; returns once it is committed. `unix_ms` is the
    /// decision's time (also in `d.time`), for the time index.
    pub async fn decide(&self, d: Decided, unix_ms: u64) -> Result<Receipt, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Decide(Box::new(d), unix_ms as i64, tx))
            .await
            .map_err(|_| AuditError::WriterGone)?;
        rx.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Records how an exchange ended. Does not wait for the commit: nothing
    /// is answered on it, and `flush` (at shutdown) waits for all of them.
    pub async fn complete(&self, c: Completed, unix_ms: u64) -> Result<(), AuditError> {
        self.jobs
            .send(Job::Complete(Box::new(c), unix_ms as i64))
            .await
            .map_err(|_| AuditError::WriterGone)
    }

    /// As [`Writer::complete`], without waiting even for room in the queue:
    /// a completion is queued on the spot, so the caller needs no task of
    /// its own. When the queue is full (the writer is behind) the entry is
    /// given back, and the caller waits with [`Writer::complete`].
    pub fn try_complete(&self, c: Completed, unix_ms: u64) -> Result<(), Full> {
        use mpsc::error::TrySendError;
        match self
            .jobs
            .try_send(Job::Complete(Box::new(c), unix_ms as i64))
        {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Complete(c, _))) => Err(Full::Later(*c)),
            Err(_) => Err(Full::Gone),
        }
    }

    /// Records something that happened to veto itself; returns once it is
    /// committed.
    pub async fn event(&self, e: Event, unix_ms: u64) -> Result<Receipt, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Event(Box::new(e), unix_ms as i64, tx))
            .await
            .map_err(|_| AuditError::WriterGone)?;
        rx.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Prunes what `retention` no longer keeps, recording a checkpoint entry
    /// first. `None`: nothing was old enough.
    pub async fn prune(&self, retention: Retention) -> Result<Option<Pruned>, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Prune(retention, tx))
            .await
            .map_err(|_| AuditError::WriterGone)?;
        rx.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Waits until everything sent before is committed.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Flush(tx))
            .await
            .map_err(|_| AuditError::WriterGone)?;
        rx.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Every committed decision, as it is committed. A watcher that falls
    /// more than a few thousand behind gets `Lagged(n)`: it is told how many
    /// it skipped, and the proxy never waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.live.subscribe()
    }

    /// Commits and entries so far: entries per commit is how well the
    /// writer groups (a commit's cost is mostly fixed).
    pub fn counts(&self) -> Counts {
        Counts {
            commits: self.counters.commits.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
        }
    }
}

struct State {
    /// The store's writer lock, held while this writer lives.
    _lock: std::fs::File,
    path: PathBuf,
    sync: Sync,
    conn: Option<Connection>,
    head: (i64, String),
    live: broadcast::Sender<Arc<Record>>,
    /// Signs prune checkpoints.
    key: Option<crate::signing::Key>,
    /// Signs the chain's head (when there is a key).
    signer: Option<crate::head::Signer>,
    /// Checkpoints the log on a thread of its own.
    checkpoints: crate::checkpoint::Checkpointer,
    counters: Arc<Counters>,
}

/// Takes the store's writer lock (`audit.lock` beside it): two writers
/// would each extend the chain from the same head and fork it. A writer
/// that is just ending (a restart in the same process) gets two seconds
/// to let go.
fn lock(path: &Path) -> Result<std::fs::File, AuditError> {
    let lock_path = path.with_extension("lock");
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir.display().to_string(), e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| AuditError::io(lock_path.display().to_string(), e))?;
    veto_fsutil::private_file(&lock_path);
    for _ in 0..40 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuditError::io(lock_path.display().to_string(), e));
            }
        }
    }
    Err(AuditError::InUse(path.display().to_string()))
}

impl State {
    fn run(&mut self, mut rx: mpsc::Receiver<Job>) {
        let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            crate::pace::gather(
                || {
                    take_queued(&mut rx, &mut group);
                    group.len()
                },
                crate::pace::sleep,
            );
            self.commit_group(&mut group);
        }
    }

    /// The store must be the file at `path`: if it was removed or replaced
    /// under us, SQLite would go on writing to a file nobody can read. The
    /// group in hand fails (its requests are refused); the next one writes
    /// to a new file that continues the chain from the last entry written,
    /// so `verify` reports the removed entries as deleted rather than
    /// showing a clean new chain.
    fn connection(&mut self) -> Result<&mut Connection, AuditError> {
        if self.conn.is_some() && !self.path.exists() {
            self.conn = None;
            return Err(AuditError::Removed(self.path.display().to_string()));
        }
        if self.conn.is_none() {
            let conn = store::open_rw(&self.path, self.sync)?;
            let on_disk = store::head(&conn)?;
            if on_disk.0 != 0 || self.head.0 == 0 {
                self.head = on_disk;
            }
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(AuditError::WriterGone)
    }

    fn commit_group(&mut self, group: &mut Vec<Job>) {
        let result = self.write(group);
        let mut seq_hashes = match result {
            Ok(v) => v.into_iter(),
            Err(e) => {
                // Fail closed: every waiting request is told, and the next
                // group tries again (recovery without a restart).
                self.conn = None;
                for job in group.drain(..) {
                    match job {
                        Job::Decide(_, _, tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Job::Flush(tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Job::Event(_, _, tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Job::Prune(_, tx) => {
                            let _ = tx.send(Err(e.clone()));
                        }
                        Job::Complete(..) => {}
                    }
                }
                return;
            }
        };
        for job in group.drain(..) {
            match job {
                Job::Decide(d, _, tx) => {
                    if let Some((seq, prev, hash)) = seq_hashes.next() {
                        // Built only for someone watching: most of the time
                        // nobody is, and it would be built to be dropped.
                        if self.live.receiver_count() > 0 {
                            let record = Record::merge(*d, None, prev, hash.clone());
                            let _ = self.live.send(Arc::new(record));
                        }
                        let _ = tx.send(Ok(Receipt { seq, hash }));
                    }
                }
                Job::Complete(..) => {
                    seq_hashes.next();
                }
                Job::Event(_, _, tx) => {
                    if let Some((seq, _, hash)) = seq_hashes.next() {
                        let _ = tx.send(Ok(Receipt { seq, hash }));
                    }
                }
                // A flush also waits for the signed head to reach what it
                // flushed: after it, a cut of these entries is detectable.
                Job::Flush(tx) => match &self.signer {
                    Some(s) => s.after(self.head.0, tx),
                    None => {
                        let _ = tx.send(Ok(()));
                    }
                },
                Job::Prune(r, tx) => {
                    let result = self.prune(&r);
                    if result.is_err() {
                        self.conn = None;
                    }
                    let _ = tx.send(result);
                }
            }
        }
    }

    /// Writes a group in one transaction. Returns (seq, prev, hash) per
    /// entry, in order. On error nothing is committed and the head stays.
    fn write(&mut self, group: &[Job]) -> Result<Vec<(i64, String, String)>, AuditError> {
        let (mut seq, mut prev) = self.head.clone();
        let mut out = Vec::with_capacity(group.len());
        let conn = self.connection()?;
        let tx = conn.transaction()?;
        for job in group {
            let (kind, rid, time_ms, decided, body) = match job {
                Job::Decide(d, ms, _) => (
                    Kind::Decision,
                    d.id.as_str(),
                    *ms,
                    Some(&**d),
                    serde_json::to_string(&**d),
                ),
                Job::Complete(c, ms) => (
                    Kind::Completion,
                    c.id.as_str(),
                    *ms,
                    None,
                    serde_json::to_string(&**c),
                ),
                Job::Event(e, ms, _) => (
                    Kind::Event,
                    e.id.as_str(),
                    *ms,
                    None,
                    serde_json::to_string(&**e),
                ),
                Job::Flush(_) | Job::Prune(..) => continue,
            };
            let body = body.map_err(|e| AuditError::Corrupt(e.to_string()))?;
            let hash = chain_hash(&prev, kind, &body);
            seq += 1;
            store::insert(
                &tx,
                &Row {
                    seq,
                    kind,
                    rid,
                    time_ms,
                    decided,
                    body: &body,
                    prev: &prev,
                    hash: &hash,
                },
            )?;
            out.push((seq, std::mem::replace(&mut prev, hash.clone()), hash));
        }
        tx.commit()?;
        self.checkpoints.committed();
        if !out.is_empty() {
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.counters
                .entries
                .fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        if let (Some(s), false) = (&self.signer, out.is_empty()) {
            s.committed(seq, &prev);
        }
        self.head = (seq, prev);
        Ok(out)
    }
}

/// Moves what is queued into the group, up to its bound.
fn take_queued(rx: &mut mpsc::Receiver<Job>, group: &mut Vec<Job>) {
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(j) => group.push(j),
            Err(_) => break,
        }
    }
}

impl State {
    /// Removes entries `retention` no longer keeps. A checkpoint event is
    /// appended first, in the same transaction, naming the last entry
    /// removed and its hash: `verify` starts the chain from it.
    fn prune(&mut self, r: &Retention) -> Result<Option<Pruned>, AuditError> {
        let (head_seq, head_hash) = self.head.clone();
        let key = self.key.clone();
        let conn = self.connection()?;
        let first: Option<i64> =
            conn.query_row("SELECT MIN(seq) FROM chain", [], |row| row.get(0))?;
        let Some(first) = first else { return Ok(None) };
        let mut through = first - 1;
        let mut why = Vec::new();
        if let Some(age) = r.max_age {
            let cutoff = now().0 as i64 - age.as_millis() as i64;
            let young: Option<i64> = conn.query_row(
                "SELECT MIN(seq) FROM chain WHERE kind = 0 AND time_ms >= ?1",
                [cutoff],
                |row| row.get(0),
            )?;
            let k = young.map_or(head_seq, |y| y - 1);
            if k > through {
                through = k;
                why.push(format!("older than {}", humantime::format_duration(age)));
            }
        }
        if let Some(max) = r.max_bytes {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
            let size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            if (pages * size) as u64 > max {
                let k = first + (head_seq - first) / 4;
                if k > through {
                    through = k;
                    why.push(format!("store over {max} bytes"));
                }
            }
        }
        if through < first {
            return Ok(None);
        }
        let tx = conn.transaction()?;
        let through_hash: String =
            tx.query_row("SELECT hash FROM chain WHERE seq = ?1", [through], |row| {
                row.get(0)
            })?;
        let (entries, records): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(kind = 0), 0) FROM chain WHERE seq <= ?1",
            [through],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let (ms, time) = now();
        let mut detail = serde_json::json!({
            "through_seq": through,
            "through_hash": through_hash,
            "entries": entries,
            "records": records,
            "reason": why.join(", "),
        });
        if let Some(key) = &key {
            let msg = crate::signing::message(through, &through_hash, entries, records);
            let (public, signature) = crate::signing::sign(key, &msg);
            detail["key"] = public.into();
            detail["signature"] = signature.into();
        }
        let event = Event {
            id: crate::record::new_id(ms),
            time,
            event: "prune".into(),
            detail,
        };
        let body = serde_json::to_string(&event).map_err(|e| AuditError::Corrupt(e.to_string()))?;
        let seq = head_seq + 1;
        let hash = chain_hash(&head_hash, Kind::Event, &body);
        store::insert(
            &tx,
            &Row {
                seq,
                kind: Kind::Event,
                rid: &event.id,
                time_ms: ms as i64,
                decided: None,
                body: &body,
                prev: &head_hash,
                hash: &hash,
            },
        )?;
        tx.execute("DELETE FROM chain WHERE seq <= ?1", [through])?;
        tx.commit()?;
        // Give the space back (effective on stores made with incremental
        // auto-vacuum, which `open_rw` sets up).
        let _ = conn.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);");
        if let Some(s) = &self.signer {
            s.committed(seq, &hash);
        }
        self.head = (seq, hash);
        Ok(Some(Pruned {
            through_seq: through,
            entries,
            records,
        }))
    }
}

/// The current time in Unix milliseconds, and as the record's `time`.
pub fn now() -> (u64, String) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (ms, format_time(ms))
}
