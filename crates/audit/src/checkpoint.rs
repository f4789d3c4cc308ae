//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: it copies tens of megabytes from the log into the database
//! and fsyncs both, on the writer thread, while every request of the next
//! groups waits for its decision to be committed. That was the proxy's p99.
//! This thread, with a connection of its own, runs a passive checkpoint
//! (one that never blocks the writer) ten times a second while entries are
//! being written, so the log is mostly copied by the time the writer's own
//! automatic checkpoint comes due (store.rs): that one only finishes the
//! rest, in a few milliseconds, and as it runs between two commits it
//! copies the whole log, which lets the writer start the log over from its
//! beginning. A passive checkpoint alone never catches up with a writer
//! that never stops, and the log would grow without end; when the two fall
//! out of step for long, a restarting checkpoint bounds it (tested in
//! tests/chain.rs).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the log is checkpointed while entries are written.
const EVERY: Duration = Duration::from_millis(100);

/// Log frames (4 KiB pages) beyond which a round stops being passive. The
/// writer's own checkpoint comes due at 8,192 frames, but it gives up
/// when it finds this thread checkpointing, and a slow disk or a loaded
/// machine can keep the two out of step for long: past this many frames
/// the round waits for the writer's commit in progress, copies the whole
/// log while new commits wait, and the next commit starts the log over.
/// Commits pause for that copy, which is rare; the log's size is bounded.
const RESTART_FRAMES: i64 = 10_240;

/// The writer's side: marks that something was committed.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    dirty: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts the checkpoint thread for the store at `path`. It stops soon
    /// after this handle is dropped.
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Checkpointer> {
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = dirty.clone();
        std::thread::Builder::new()
            .name("veto-audit-ckpt".into())
            .spawn(move || run(&path, &flag))?;
        Ok(Checkpointer { dirty })
    }

    /// Something was committed: the next round checkpoints.
    pub(crate) fn committed(&self) {
        // A plain store: the writer commits thousands of times a second and
        // the flag only needs to be seen by the next round.
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

fn run(path: &std::path::Path, dirty: &Arc<AtomicBool>) {
    // The writer holds the other reference; when it is gone, so is the
    // reason to checkpoint (SQLite checkpoints on the last close anyway).
    while Arc::strong_count(dirty) > 1 {
        std::thread::sleep(EVERY);
        if !dirty.swap(false, Ordering::Relaxed) {
            continue;
        }
        // Opened each round, and never created: if the store was removed
        // or replaced, the writer handles it, and this follows the file
        // that is at the path now.
        let conn = match rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(c) => c,
            Err(_) => continue,
        };
        let _ = conn.pragma_update(None, "wal_autocheckpoint", 0);
        // A restart waits for the writer's commit in progress, as the
        // writer waits for it (store.rs sets the same timeout there).
        let _ = conn.busy_timeout(Duration::from_secs(5));
        let frames = |mode: &str| {
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(1)
            })
        };
        match frames("PASSIVE") {
            Ok(log) if log > RESTART_FRAMES => {
                if let Err(e) = frames("RESTART") {
                    tracing::warn!(error = %e, "audit store: WAL restart failed; the log grows until one succeeds");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "audit store: WAL checkpoint failed; the log grows until one succeeds")
            }
        }
    }
}
