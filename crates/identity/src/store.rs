//! The identity store: SQLite in WAL mode at `DATA/identity.db`.
//!
//! Its own file rather than a table in `audit.db`: the audit file is an
//! append-only chain that is verified and exported whole, while this one is
//! small, mutable state written by `veto machine` while the proxy runs.

use crate::creds::{Credential, Credentials, MAX_TIME};
use crate::{IdentityError, token, validate_machine_name, validate_name};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Bumped when the tables change shape; a store made by a newer veto is
/// refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

// Times are Unix seconds. Roles are joined with `,`, which a valid role
// name cannot contain. Rows are never deleted: revoking sets `revoked_at`,
// and adding the name again inserts a new row, so the history stays.
//
// `meta.version` is bumped by triggers, not by this code, so that any
// change (a future writer, or an operator with the sqlite3 shell) makes
// the proxy reload. `last_used` is left out of the update trigger: the
// proxy will write it on use, and that must not make every proxy reload.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS machines (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    created    INTEGER NOT NULL,
    expires    INTEGER,
    idle_ttl   INTEGER,
    last_used  INTEGER,
    revoked_at INTEGER,
    roles      TEXT NOT NULL,
    env        TEXT,
    old_hash   BLOB,
    old_until  INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS machines_live ON machines(name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', 1), ('version', 0);
CREATE TRIGGER IF NOT EXISTS machines_version_insert AFTER INSERT ON machines
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END;
CREATE TRIGGER IF NOT EXISTS machines_version_delete AFTER DELETE ON machines
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END;
CREATE TRIGGER IF NOT EXISTS machines_version_update
AFTER UPDATE OF name, token_hash, created, expires, idle_ttl, revoked_at, roles, env ON machines
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'version'; END;
";

/// The database file under a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("identity.db")
}

/// One machine as `veto machine list` shows it; never its token hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub env: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; from then on the token is refused.
    pub expires: Option<i64>,
    /// Seconds of disuse after which the credential is refused.
    pub idle_ttl: Option<i64>,
    /// Unix seconds; `None` until the proxy records a use.
    pub last_used: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
}

impl MachineInfo {
    /// `revoked`, `expired` or `active` at `now` (Unix seconds).
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires.is_some_and(|e| now >= e) {
            "expired"
        } else {
            "active"
        }
    }
}

/// The machines table. `Send + Sync`: one connection behind a mutex, since
/// every call is a short statement or two and the request path never comes
/// here (it uses a [`Credentials`] snapshot).
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) `DATA/identity.db`.
    pub fn open(data_dir: &Path) -> Result<Store, IdentityError> {
        std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        veto_fsutil::private_file(&db_path(data_dir));
        let mut conn = Connection::open(db_path(data_dir))?;
        // `veto machine add` may run while the proxy reads: wait, don't fail.
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable against a killed process in WAL mode; a power
        // loss may lose the last add/revoke, which the operator sees.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(crate::grants::SCHEMA)?;
        // Stores made before rotation existed get its two columns.
        let has_old: i64 = tx.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('machines') WHERE name = 'old_hash'",
            [],
            |r| r.get(0),
        )?;
        if has_old == 0 {
            tx.execute_batch(
                "ALTER TABLE machines ADD COLUMN old_hash BLOB; ALTER TABLE machines ADD COLUMN old_until INTEGER;",
            )?;
        }
        let schema: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })?;
        if schema != SCHEMA_VERSION {
            return Err(IdentityError::Corrupt(format!(
                "schema version {schema}, this veto reads {SCHEMA_VERSION}"
            )));
        }
        tx.commit()?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held can at worst have left a
        // transaction open, and dropping rusqlite's Transaction rolls it
        // back: the connection is still sound, so poisoning is ignored.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a machine and returns its token, which is not stored and
    /// cannot be shown again. Refused if a machine of that name exists and
    /// is not revoked (an expired one included: revoke it first).
    ///
    /// `ttl`: the token is refused from `now + ttl` on; `idle_ttl`: it is
    /// refused once unused that long.
    pub fn add(
        &self,
        name: &str,
        roles: &[String],
        env: Option<&str>,
        ttl: Option<Duration>,
        idle_ttl: Option<Duration>,
    ) -> Result<String, IdentityError> {
        validate_machine_name(name)?;
        let mut kept: Vec<&str> = Vec::with_capacity(roles.len());
        for r in roles {
            validate_name("role", r)?;
            if !kept.contains(&r.as_str()) {
                kept.push(r);
            }
        }
        if let Some(e) = env {
            validate_name("env", e)?;
        }
        let now = now();
        let expires = match ttl {
            Some(d) => Some(
                now.checked_add(seconds("ttl", d)?)
                    .filter(|&t| t <= MAX_TIME)
                    .ok_or_else(|| IdentityError::InvalidDuration {
                        what: "ttl",
                        why: "it would expire after the year 9999".into(),
                    })?,
            ),
            None => None,
        };
        let idle_ttl = idle_ttl.map(|d| seconds("idle ttl", d)).transpose()?;

        let tok = token::generate()?;
        let hash = token::hash(&tok);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let live: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM machines WHERE name = ?1 AND revoked_at IS NULL)",
            [name],
            |r| r.get(0),
        )?;
        if live {
            return Err(IdentityError::Exists(name.to_string()));
        }
        let inserted = tx.execute(
            "INSERT INTO machines(name, token_hash, created, expires, idle_ttl, roles, env)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![name, &hash[..], now, expires, idle_ttl, kept.join(","), env],
        );
        match inserted {
            // The unique index on live names, should another writer slip
            // past the check above.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                return Err(IdentityError::Exists(name.to_string()));
            }
            other => {
                other?;
            }
        }
        tx.commit()?;
        Ok(tok)
    }

    /// Revokes a machine's token from now on. Refused if no machine has that
    /// name, or if it is already revoked (so that a typo is not mistaken for
    /// success).
    pub fn revoke(&self, name: &str) -> Result<(), IdentityError> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE machines SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, now],
        )?;
        if n == 0 {
            let at: Option<i64> = tx.query_row(
                "SELECT max(revoked_at) FROM machines WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            return Err(match at {
                Some(at) => IdentityError::AlreadyRevoked {
                    name: name.to_string(),
                    at,
                },
                None => IdentityError::Unknown(name.to_string()),
            });
        }
        tx.commit()?;
        Ok(())
    }

    /// Every registration, revoked ones included, by name then age.
    pub fn list(&self) -> Result<Vec<MachineInfo>, IdentityError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT name, roles, env, created, expires, idle_ttl, last_used, revoked_at
             FROM machines ORDER BY name, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(MachineInfo {
                name: r.get(0)?,
                roles: split_roles(&r.get::<_, String>(1)?),
                env: r.get(2)?,
                created: r.get(3)?,
                expires: r.get(4)?,
                idle_ttl: r.get(5)?,
                last_used: r.get(6)?,
                revoked_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Issues a new token for a live machine and returns it (shown once).
    /// The old token keeps working for `overlap` (none: it stops at once),
    /// then is refused with a 407 saying it was rotated.
    pub fn rotate(&self, name: &str, overlap: Option<Duration>) -> Result<String, IdentityError> {
        let overlap = overlap
            .map(|d| seconds("--overlap", d))
            .transpose()?
            .unwrap_or(0);
        let token = token::generate()?;
        let hash = token::hash(&token);
        let now = now();
        let conn = self.conn();
        let changed = conn.execute(
            "UPDATE machines SET old_hash = token_hash, old_until = ?1, token_hash = ?2
             WHERE name = ?3 AND revoked_at IS NULL",
            rusqlite::params![now.saturating_add(overlap), &hash[..], name],
        )?;
        if changed == 0 {
            return Err(IdentityError::Unknown(name.to_string()));
        }
        Ok(token)
    }

    /// Reads every machine into memory for the request path. Per name, the
    /// live registration if there is one, else the latest revoked one (so a
    /// revoked token is told "revoked", not "unknown").
    pub fn snapshot(&self) -> Result<Credentials, IdentityError> {
        let mut conn = self.conn();
        // One read transaction: the version matches the rows read.
        let tx = conn.transaction()?;
        let version = read_version(&tx)?;
        let mut machines = HashMap::new();
        {
            let mut st = tx.prepare(
                "SELECT name, token_hash, roles, env, expires, idle_ttl, last_used, revoked_at, old_hash, old_until, created
                 FROM machines ORDER BY revoked_at IS NULL, revoked_at, id",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let name: String = r.get(0)?;
                let hash: Vec<u8> = r.get(1)?;
                let hash: [u8; 32] = hash.try_into().map_err(|_| {
                    IdentityError::Corrupt(format!("machine `{name}` has a malformed token hash"))
                })?;
                // Later rows win: live after revoked, newer after older.
                machines.insert(
                    name.clone(),
                    Credential {
                        name,
                        roles: split_roles(&r.get::<_, String>(2)?),
                        env: r.get(3)?,
                        created: r.get(10)?,
                        expires: r.get(4)?,
                        idle_ttl: r.get(5)?,
                        last_used: r.get(6)?,
                        revoked_at: r.get(7)?,
                        hash,
                        old: match (r.get::<_, Option<Vec<u8>>>(8)?, r.get::<_, Option<i64>>(9)?) {
                            (Some(h), Some(until)) => {
                                h.try_into().ok().map(|h: [u8; 32]| (h, until))
                            }
                            _ => None,
                        },
                    },
                );
            }
        }
        tx.commit()?;
        Ok(Credentials { machines, version })
    }

    /// Records uses the proxy saw (machine, Unix seconds), in one
    /// transaction. A use never moves `last_used` back, and does not change
    /// [`Store::version`] (no reload for every batch).
    pub fn record_uses(&self, uses: &[(String, i64)]) -> Result<(), IdentityError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE machines SET last_used = max(coalesce(last_used, 0), ?2)
                 WHERE name = ?1 AND revoked_at IS NULL",
            )?;
            for (name, at) in uses {
                st.execute(params![name, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Changes whenever the machines table changes (a counter kept by
    /// triggers, in the same transaction as the change), and not when only
    /// `last_used` does. Compare with [`Credentials::version`] to reload
    /// only when needed; a single indexed read, cheap to poll.
    pub fn version(&self) -> Result<i64, IdentityError> {
        read_version(&self.conn())
    }
}

fn read_version(conn: &Connection) -> Result<i64, IdentityError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
            r.get(0)
        })?,
    )
}

fn split_roles(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whole seconds of a duration; at least one, since a zero ttl would make
/// a token that never works.
fn seconds(what: &'static str, d: Duration) -> Result<i64, IdentityError> {
    match i64::try_from(d.as_secs()) {
        Ok(0) => Err(IdentityError::InvalidDuration {
            what,
            why: "it must be at least one second".into(),
        }),
        Ok(s) if s <= MAX_TIME => Ok(s),
        _ => Err(IdentityError::InvalidDuration {
            what,
            why: "it is too long".into(),
        }),
    }
}

/// Unix seconds. A clock before 1970 reads as 0 rather than failing: the
/// times stored are for people and for expiry, both harmless at 0.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
