//! veto's audit trail.
//!
//! Every decision is recorded before the client hears the answer
//! ([`Writer::decide`] returns only once the record is committed). Records
//! are hash-chained ([`verify`]), queryable ([`query`]), and streamed live
//! ([`Writer::subscribe`]). The store is SQLite in WAL mode, written by one
//! thread in group commits.

mod checkpoint;
pub mod head;
mod inventory;
mod pace;
mod record;
pub mod signing;
mod store;
mod verify;
mod writer;

pub use inventory::{Destination, inventory};
pub use record::{
    Completed, Decided, Event, GENESIS, Kind, Record, chain_hash, format_time, new_id,
};
pub use store::{
    Filter, RawEntry, Sync, db_path, entries_after, events, head, open_ro, open_rw, query,
};
pub use verify::{Broken, Intact, cut_reported, verify, verify_anchored, verify_with};
pub use writer::{Counts, Full, Pruned, Receipt, Retention, Writer, now};

/// Why the audit trail could not do what was asked. Clone, so that one
/// failed group commit can be reported to every request waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit store failed: {0}")]
    Sqlite(String),
    #[error("{0}: {1}")]
    Io(String, std::sync::Arc<std::io::Error>),
    #[error("no audit store at {0} (has `veto run` run with this --data?)")]
    NoStore(String),
    #[error("an audit entry cannot be read: {0}")]
    Corrupt(String),
    #[error(
        "the audit store {0} was removed; its entries are lost and the chain continues in a new file"
    )]
    Removed(String),
    #[error("the audit writer has stopped")]
    WriterGone,
    #[error(
        "the audit store {0} is in use by another veto (each --data holds one chain, with one writer); stop it, or give this one another --data"
    )]
    InUse(String),
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> AuditError {
        AuditError::Sqlite(e.to_string())
    }
}

impl AuditError {
    pub(crate) fn io(what: impl Into<String>, e: std::io::Error) -> AuditError {
        AuditError::Io(what.into(), std::sync::Arc::new(e))
    }
}
