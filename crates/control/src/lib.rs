//! veto's control state, embedded in SQLite under `--data` (`control.db`):
//! runtime opt-outs and the change log.
//!
//! An opt-out turns off specific connections entirely: every request to a
//! host or service, or from a machine, is refused as rule `optout-<id>` with
//! the opt-out's reason, ahead of every policy rule. Every change is in the
//! change log with its actor, time, reason and a before/after.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control store failed: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot create {0}: {1}")]
    Io(String, std::io::Error),
    #[error("no opt-out {0}")]
    Unknown(u32),
    #[error("an opt-out needs a reason")]
    NoReason,
}

/// What an opt-out turns off.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A host pattern, as in policy-v1.
    Host(String),
    /// A service of the policy, by name.
    Service(String),
    /// A machine identity.
    Machine(String),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Host(_) => "host",
            Target::Service(_) => "service",
            Target::Machine(_) => "machine",
        }
    }
    pub fn value(&self) -> &str {
        match self {
            Target::Host(v) | Target::Service(v) | Target::Machine(v) => v,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OptOut {
    pub id: u32,
    pub target: Target,
    pub reason: String,
    /// Unix seconds.
    pub created: i64,
    pub expires: Option<i64>,
    pub actor: String,
}

impl OptOut {
    /// The rule id refusals name.
    pub fn rule_id(&self) -> String {
        format!("optout-{}", self.id)
    }

    pub fn in_force(&self, now: i64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// One entry of the change log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub seq: i64,
    /// RFC 3339.
    pub time: String,
    pub actor: String,
    /// `optout.add`, `optout.remove`, ...
    pub action: String,
    pub reason: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS optouts (
    id        INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL,
    value     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    created   INTEGER NOT NULL,
    expires   INTEGER,
    actor     TEXT NOT NULL,
    removed   INTEGER
);
CREATE TABLE IF NOT EXISTS changes (
    seq     INTEGER PRIMARY KEY,
    time    INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL
);
";

pub fn db_path(data: &Path) -> PathBuf {
    data.join("control.db")
}

/// The control store. Writes are rare (people, not requests), so one
/// connection behind a mutex is enough; the proxy never calls it on the
/// request path.
pub struct Store {
    conn: Mutex<Connection>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn row_to_optout(r: &rusqlite::Row<'_>) -> rusqlite::Result<OptOut> {
    let kind: String = r.get(1)?;
    let value: String = r.get(2)?;
    let target = match kind.as_str() {
        "host" => Target::Host(value),
        "service" => Target::Service(value),
        _ => Target::Machine(value),
    };
    Ok(OptOut {
        id: r.get(0)?,
        target,
        reason: r.get(3)?,
        created: r.get(4)?,
        expires: r.get(5)?,
        actor: r.get(6)?,
    })
}

impl Store {
    pub fn open(data: &Path) -> Result<Store, ControlError> {
        std::fs::create_dir_all(data)
            .map_err(|e| ControlError::Io(data.display().to_string(), e))?;
        veto_fsutil::private_file(&db_path(data));
        let conn = Connection::open(db_path(data))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(
        tx: &rusqlite::Transaction<'_>,
        actor: &str,
        action: &str,
        reason: &str,
        before: &serde_json::Value,
        after: &serde_json::Value,
    ) -> Result<(), ControlError> {
        tx.execute(
            "INSERT INTO changes(time, actor, action, reason, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now(), actor, action, reason, before.to_string(), after.to_string()],
        )?;
        Ok(())
    }

    /// Adds an opt-out; the change log records it in the same transaction.
    pub fn add(
        &self,
        target: Target,
        reason: &str,
        expires: Option<i64>,
        actor: &str,
    ) -> Result<OptOut, ControlError> {
        if reason.trim().is_empty() {
            return Err(ControlError::NoReason);
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let created = now();
        tx.execute(
            "INSERT INTO optouts(kind, value, reason, created, expires, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![target.kind(), target.value(), reason.trim(), created, expires, actor],
        )?;
        let id = tx.last_insert_rowid() as u32;
        let o = OptOut {
            id,
            target,
            reason: reason.trim().to_string(),
            created,
            expires,
            actor: actor.to_string(),
        };
        let after = serde_json::to_value(&o).unwrap_or_default();
        Self::log(
            &tx,
            actor,
            "optout.add",
            &o.reason,
            &serde_json::Value::Null,
            &after,
        )?;
        tx.commit()?;
        Ok(o)
    }

    /// Removes an opt-out, with the reason for removing it.
    pub fn remove(&self, id: u32, reason: &str, actor: &str) -> Result<OptOut, ControlError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let o = tx
            .query_row(
                "SELECT id, kind, value, reason, created, expires, actor FROM optouts WHERE id = ?1 AND removed IS NULL",
                [id],
                row_to_optout,
            )
            .optional()?
            .ok_or(ControlError::Unknown(id))?;
        tx.execute(
            "UPDATE optouts SET removed = ?1 WHERE id = ?2",
            params![now(), id],
        )?;
        let before = serde_json::to_value(&o).unwrap_or_default();
        let why = if reason.trim().is_empty() {
            "removed"
        } else {
            reason.trim()
        };
        Self::log(
            &tx,
            actor,
            "optout.remove",
            why,
            &before,
            &serde_json::Value::Null,
        )?;
        tx.commit()?;
        Ok(o)
    }

    /// Records a change made elsewhere (machines, grants): who, what, why,
    /// before and after.
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        reason: &str,
        before: &serde_json::Value,
        after: &serde_json::Value,
    ) -> Result<(), ControlError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        Self::log(&tx, actor, action, reason, before, after)?;
        tx.commit()?;
        Ok(())
    }

    /// Opt-outs not removed (expired ones included: callers check
    /// `in_force`).
    pub fn list(&self) -> Result<Vec<OptOut>, ControlError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, kind, value, reason, created, expires, actor FROM optouts WHERE removed IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([], row_to_optout)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The change log, oldest first.
    pub fn changes(&self) -> Result<Vec<Change>, ControlError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT seq, time, actor, action, reason, before, after FROM changes ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            let t: i64 = r.get(1)?;
            let parse = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null);
            Ok(Change {
                seq: r.get(0)?,
                time: humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
                )
                .to_string(),
                actor: r.get(2)?,
                action: r.get(3)?,
                reason: r.get(4)?,
                before: parse(r.get(5)?),
                after: parse(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .add(
                Target::Host("api.segment.io".into()),
                "incident 42",
                None,
                "admin",
            )
            .unwrap();
        let b = s
            .add(
                Target::Machine("web".into()),
                "compromised",
                Some(now() - 1),
                "admin",
            )
            .unwrap();
        assert_eq!((a.id, a.rule_id()), (1, "optout-1".to_string()));
        assert!(a.in_force(now()) && !b.in_force(now()));
        assert!(matches!(
            s.add(Target::Host("x".into()), " ", None, "admin"),
            Err(ControlError::NoReason)
        ));
        assert_eq!(s.list().unwrap().len(), 2);
        s.remove(1, "resolved", "admin").unwrap();
        assert!(matches!(
            s.remove(1, "", "admin"),
            Err(ControlError::Unknown(1))
        ));
        assert_eq!(s.list().unwrap(), vec![b]);
        let log = s.changes().unwrap();
        let actions: Vec<&str> = log.iter().map(|c| c.action.as_str()).collect();
        assert_eq!(actions, ["optout.add", "optout.add", "optout.remove"]);
        assert_eq!(log[2].reason, "resolved");
        assert_eq!(log[2].before["target"]["host"], "api.segment.io");
        assert!(log[2].after.is_null());
    }
}
