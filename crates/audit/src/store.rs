//! The embedded store: SQLite in WAL mode under `--data`.
//!
//! One table holds the chain. The columns a query filters on are copies of
//! fields in `body` (the hashed canonical JSON); `verify` checks them
//! against the body too, so editing a column to hide a record is caught
//! like editing the body.

use crate::AuditError;
use crate::record::{Completed, Decided, GENESIS, Kind, Record};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use std::path::{Path, PathBuf};

/// How hard a commit waits for the disk (documented in the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// WAL `synchronous=NORMAL`: a commit is in the OS before the answer, so
    /// a killed process loses nothing; power loss can lose the last commits.
    Normal,
    /// `synchronous=FULL`: each group commit is fsynced before the answer.
    Full,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chain (
    seq      INTEGER PRIMARY KEY,
    kind     INTEGER NOT NULL,
    rid      TEXT NOT NULL,
    time_ms  INTEGER NOT NULL,
    machine  TEXT,
    host     TEXT,
    port     INTEGER,
    decision TEXT,
    rule     TEXT,
    body     TEXT NOT NULL,
    prev     TEXT NOT NULL,
    hash     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chain_rid ON chain(rid);
CREATE INDEX IF NOT EXISTS chain_time ON chain(time_ms) WHERE kind = 0;
CREATE INDEX IF NOT EXISTS chain_dest ON chain(host, port) WHERE kind = 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '1');
";

/// The database file under a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.db")
}

/// Opens (creating if needed) the store for writing.
pub fn open_rw(path: &Path, sync: Sync) -> Result<Connection, AuditError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir.display().to_string(), e))?;
    }
    veto_fsutil::private_file(path);
    let conn = Connection::open(path)?;
    // Must precede the first table to take effect: lets pruning give
    // space back to the file system.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Sync::Normal => "NORMAL",
            Sync::Full => "FULL",
        },
    )?;
    // The log is copied into the database by a thread of its own
    // (checkpoint.rs); the commit that crosses this size only finishes what
    // that thread left, so the log can start over from its beginning.
    conn.pragma_update(None, "wal_autocheckpoint", 8_192)?;
    // A reader (query, verify, tail) must never make the writer fail.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Opens an existing store for reading.
pub fn open_ro(path: &Path) -> Result<Connection, AuditError> {
    if !path.exists() {
        return Err(AuditError::NoStore(path.display().to_string()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// The last entry's (seq, hash), or (0, genesis) for an empty chain.
pub fn head(conn: &Connection) -> Result<(i64, String), AuditError> {
    let row = conn
        .query_row(
            "SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    Ok(row.unwrap_or((0, GENESIS.to_string())))
}

/// A raw chain entry, as an agent ships it to its server: enough to
/// verify the chain there (`chain_hash(prev, kind, body) == hash`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: i64,
    pub kind: i64,
    pub body: String,
    pub prev: String,
    pub hash: String,
}

/// Entries after `seq`, in order, at most `limit`.
pub fn entries_after(conn: &Connection, seq: i64, limit: i64) -> Result<Vec<RawEntry>, AuditError> {
    let mut st = conn.prepare_cached(
        "SELECT seq, kind, body, prev, hash FROM chain WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = st.query_map(rusqlite::params![seq, limit], |r| {
        Ok(RawEntry {
            seq: r.get(0)?,
            kind: r.get(1)?,
            body: r.get(2)?,
            prev: r.get(3)?,
            hash: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One entry ready to insert.
pub(crate) struct Row<'a> {
    pub seq: i64,
    pub kind: Kind,
    pub rid: &'a str,
    pub time_ms: i64,
    pub decided: Option<&'a Decided>,
    pub body: &'a str,
    pub prev: &'a str,
    pub hash: &'a str,
}

pub(crate) fn insert(tx: &rusqlite::Transaction<'_>, r: &Row<'_>) -> Result<(), rusqlite::Error> {
    let mut st = tx.prepare_cached(
        "INSERT INTO chain(seq, kind, rid, time_ms, machine, host, port, decision, rule, body, prev, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let d = r.decided;
    st.execute(rusqlite::params![
        r.seq,
        r.kind as i64,
        r.rid,
        r.time_ms,
        d.map(|d| d.machine.as_str()),
        d.map(|d| d.host.as_str()),
        d.map(|d| d.port),
        d.map(|d| d.decision.as_str()),
        d.map(|d| d.rule.as_str()),
        r.body,
        r.prev,
        r.hash,
    ])?;
    Ok(())
}

/// Filters of `veto audit query`, `tail` and the live stream.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub decision: Option<String>,
    pub machine: Option<String>,
    pub host: Option<String>,
    pub rule: Option<String>,
    /// Only records at or after this time (Unix ms).
    pub since_ms: Option<i64>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.decision, &r.decision)
            && eq(&self.machine, &r.machine)
            && eq(&self.host, &r.host)
            && eq(&self.rule, &r.rule)
            && self.since_ms.is_none_or(|s| {
                humantime::parse_rfc3339(&r.time)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .is_some_and(|d| d.as_millis() as i64 >= s)
            })
    }
}

/// Records matching a filter, oldest first, passed to `each` one by one so
/// an export of millions of records needs no memory for them.
pub fn query(
    conn: &Connection,
    f: &Filter,
    mut each: impl FnMut(Record) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut sql = String::from(
        "SELECT d.body, d.prev, d.hash, c.body FROM chain d
         LEFT JOIN chain c ON c.rid = d.rid AND c.kind = 1
         WHERE d.kind = 0",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for (col, v) in [
        ("d.decision", &f.decision),
        ("d.machine", &f.machine),
        ("d.host", &f.host),
        ("d.rule", &f.rule),
    ] {
        if let Some(v) = v {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    }
    if let Some(s) = f.since_ms {
        args.push(s.into());
        sql.push_str(&format!(" AND d.time_ms >= ?{}", args.len()));
    }
    sql.push_str(" ORDER BY d.seq");
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query(params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        let body: String = row.get(0)?;
        let d: Decided =
            serde_json::from_str(&body).map_err(|e| AuditError::Corrupt(format!("{e}")))?;
        let done: Option<String> = row.get(3)?;
        let done = match done {
            Some(b) => Some(
                serde_json::from_str::<Completed>(&b)
                    .map_err(|e| AuditError::Corrupt(format!("{e}")))?,
            ),
            None => None,
        };
        each(Record::merge(d, done, row.get(1)?, row.get(2)?))?;
    }
    Ok(())
}

/// Events (policy reloads...), oldest first.
pub fn events(
    conn: &Connection,
    mut each: impl FnMut(crate::record::Event) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut st = conn.prepare("SELECT body FROM chain WHERE kind = 2 ORDER BY seq")?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let body: String = row.get(0)?;
        each(serde_json::from_str(&body).map_err(|e| AuditError::Corrupt(e.to_string()))?)?;
    }
    Ok(())
}
