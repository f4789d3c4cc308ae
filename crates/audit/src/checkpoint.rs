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
//! that never stops, and the log would grow without end; when the log grows
//! past the writer's checkpoint anyway (the two kept colliding), this
//! thread stands aside for a few rounds so the writer's can finish (tested
//! in tests/chain.rs).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the log is checkpointed while entries are written.
const EVERY: Duration = Duration::from_millis(100);

/// Log frames (4 KiB pages) beyond which this thread stands aside. The
/// writer's own checkpoint comes due at 8,192 frames, but it gives up when
/// it finds this thread checkpointing, and a slow disk or a loaded machine
/// can keep the two colliding for long while the log grows. Past this many
/// frames this thread pauses for a few rounds: the writer's next commit
/// then copies the little this thread left and starts the log over. (A
/// restarting checkpoint here would bound the log too, but it blocks every
/// commit while it copies: a one-second stall in the benchmark.)
const BACK_OFF_FRAMES: i64 = 10_240;
/// Rounds skipped when backing off.
const BACK_OFF_ROUNDS: u32 = 5;

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
    let mut pause = 0u32;
    while Arc::strong_count(dirty) > 1 {
        std::thread::sleep(EVERY);
        if pause > 0 {
            pause -= 1;
            continue;
        }
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
        // (busy, frames in the log, frames copied)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(log) if log > BACK_OFF_FRAMES => pause = BACK_OFF_ROUNDS,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "audit store: WAL checkpoint failed; the log grows until one succeeds")
            }
        }
    }
}
