//! The embedded backend: one SQLite file in WAL mode, one connection
//! behind a mutex (writes are people and agents' batches, not requests).

use super::{
    Agent, Change, Entry, MIGRATIONS, Machine, OptOut, PolicyVersion, StoreError, Target, unix_now,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use veto_audit::head::SignedHead;

#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    pub(super) changed: broadcast::Sender<()>,
}

fn optout_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OptOut> {
    let kind: String = r.get(1)?;
    let value: String = r.get(2)?;
    Ok(OptOut {
        id: r.get(0)?,
        target: target(&kind, value),
        reason: r.get(3)?,
        created: r.get(4)?,
        expires: r.get(5)?,
        actor: r.get(6)?,
    })
}

pub(super) fn target(kind: &str, value: String) -> Target {
    match kind {
        "host" => Target::Host(value),
        "service" => Target::Service(value),
        _ => Target::Machine(value),
    }
}

pub(super) fn change(
    seq: i64,
    time: i64,
    actor: String,
    action: String,
    reason: String,
    before: &str,
    after: &str,
) -> Change {
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    Change {
        seq,
        time: veto_policy::format_time(time),
        actor,
        action,
        reason,
        before: parse(before),
        after: parse(after),
    }
}

const SELECT_OPTOUT: &str = "SELECT id, kind, value, reason, created, expires, actor FROM optouts";
const SELECT_POLICY: &str = "SELECT version, hash, text, actor, reason, time FROM policies";

fn policy_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyVersion> {
    Ok(PolicyVersion {
        version: r.get(0)?,
        hash: r.get(1)?,
        text: r.get(2)?,
        actor: r.get(3)?,
        reason: r.get(4)?,
        time: r.get(5)?,
    })
}

pub(super) fn log(
    tx: &rusqlite::Transaction<'_>,
    actor: &str,
    action: &str,
    reason: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO changes(time, actor, action, reason, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![unix_now(), actor, action, reason, before.to_string(), after.to_string()],
    )?;
    Ok(())
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Invalid(format!("{}: {e}", dir.display())))?;
        }
        veto_fsutil::private_file(path);
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)")?;
        for (v, sql) in MIGRATIONS {
            let done: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [v],
                |r| r.get(0),
            )?;
            if !done {
                let sql = sql
                    .replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT")
                    .replace("{blob}", "BLOB");
                tx.execute_batch(&sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations(version, applied) VALUES (?1, ?2)",
                    params![v, unix_now()],
                )?;
            }
        }
        tx.commit()?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            changed: broadcast::channel(64).0,
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn announce(&self) {
        let _ = self.changed.send(());
    }

    pub fn policy(&self, v: Option<i64>) -> Result<Option<PolicyVersion>, StoreError> {
        let c = self.conn();
        Ok(match v {
            Some(v) => c
                .query_row(
                    &format!("{SELECT_POLICY} WHERE version = ?1"),
                    [v],
                    policy_row,
                )
                .optional()?,
            None => c
                .query_row(
                    &format!("{SELECT_POLICY} ORDER BY version DESC LIMIT 1"),
                    [],
                    policy_row,
                )
                .optional()?,
        })
    }

    pub fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT version, hash, '', actor, reason, time FROM policies ORDER BY version DESC",
        )?;
        let rows = st.query_map([], policy_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn policy_push(
        &self,
        text: &str,
        hash: &str,
        actor: &str,
        reason: &str,
        action: &str,
    ) -> Result<PolicyVersion, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before: Option<(i64, String)> = tx
            .query_row(
                "SELECT version, hash FROM policies ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let time = unix_now();
        tx.execute(
            "INSERT INTO policies(hash, text, actor, reason, time) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, text, actor, reason, time],
        )?;
        let version = tx.last_insert_rowid();
        log(
            &tx,
            actor,
            action,
            reason,
            &before.map_or(
                serde_json::Value::Null,
                |(v, h)| serde_json::json!({"version": v, "hash": h}),
            ),
            &serde_json::json!({"version": version, "hash": hash}),
        )?;
        tx.commit()?;
        drop(c);
        self.announce();
        Ok(PolicyVersion {
            version,
            hash: hash.into(),
            text: text.into(),
            actor: actor.into(),
            reason: reason.into(),
            time,
        })
    }

    pub fn optouts(&self) -> Result<Vec<OptOut>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "{SELECT_OPTOUT} WHERE removed IS NULL ORDER BY id"
        ))?;
        let rows = st.query_map([], optout_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn optout_add(
        &self,
        target: &Target,
        reason: &str,
        expires: Option<i64>,
        actor: &str,
    ) -> Result<OptOut, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let created = unix_now();
        tx.execute(
            "INSERT INTO optouts(kind, value, reason, created, expires, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![target.kind(), target.value(), reason, created, expires, actor],
        )?;
        let o = OptOut {
            id: tx.last_insert_rowid() as u32,
            target: target.clone(),
            reason: reason.into(),
            created,
            expires,
            actor: actor.into(),
        };
        let after = serde_json::to_value(&o).unwrap_or_default();
        log(
            &tx,
            actor,
            "optout.add",
            reason,
            &serde_json::Value::Null,
            &after,
        )?;
        tx.commit()?;
        drop(c);
        self.announce();
        Ok(o)
    }

    pub fn optout_remove(&self, id: u32, reason: &str, actor: &str) -> Result<OptOut, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let o = tx
            .query_row(
                &format!("{SELECT_OPTOUT} WHERE id = ?1 AND removed IS NULL"),
                [id],
                optout_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("opt-out {id}")))?;
        tx.execute(
            "UPDATE optouts SET removed = ?1 WHERE id = ?2",
            params![unix_now(), id],
        )?;
        let why = if reason.trim().is_empty() {
            "removed"
        } else {
            reason.trim()
        };
        let before = serde_json::to_value(&o).unwrap_or_default();
        log(
            &tx,
            actor,
            "optout.remove",
            why,
            &before,
            &serde_json::Value::Null,
        )?;
        tx.commit()?;
        drop(c);
        self.announce();
        Ok(o)
    }

    pub fn record(
        &self,
        actor: &str,
        action: &str,
        reason: &str,
        before: &serde_json::Value,
        after: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        log(&tx, actor, action, reason, before, after)?;
        tx.commit()?;
        Ok(())
    }

    pub fn changes(&self) -> Result<Vec<Change>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT seq, time, actor, action, reason, before, after FROM changes ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok(change(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                &r.get::<_, String>(5)?,
                &r.get::<_, String>(6)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn agent_add(
        &self,
        name: &str,
        env: Option<&str>,
        hash: &[u8],
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM agents WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(StoreError::Invalid(format!(
                "agent `{name}` is already enrolled"
            )));
        }
        tx.execute(
            "INSERT INTO agents(name, token_hash, env) VALUES (?1, ?2, ?3)",
            params![name, hash, env],
        )?;
        log(
            &tx,
            actor,
            "agent.add",
            "enrolled",
            &serde_json::Value::Null,
            &serde_json::json!({"agent": name, "env": env}),
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn agent_by_token(&self, hash: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name FROM agents WHERE token_hash = ?1",
                [hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn agent_report(
        &self,
        name: &str,
        version: &str,
        policy_hash: Option<&str>,
        spool: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE agents SET version = ?2, policy_hash = ?3, spool = ?4, last_seen = ?5 WHERE name = ?1",
            params![name, version, policy_hash, spool, unix_now()],
        )?;
        Ok(())
    }

    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT name, env, version, policy_hash, spool, last_seen FROM agents ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Agent {
                name: r.get(0)?,
                env: r.get(1)?,
                version: r.get(2)?,
                policy_hash: r.get(3)?,
                spool: r.get(4)?,
                last_seen: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn audit_ingest(
        &self,
        agent: &str,
        entries: &[Entry],
        head: Option<&SignedHead>,
    ) -> Result<i64, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before: Option<i64> = tx.query_row(
            "SELECT max(seq) FROM audit WHERE agent = ?1",
            [agent],
            |r| r.get(0),
        )?;
        super::no_gap(before, entries)?;
        let hash_at = |seq: i64| -> Result<Option<String>, StoreError> {
            Ok(tx
                .query_row(
                    "SELECT hash FROM audit WHERE agent = ?1 AND seq = ?2",
                    params![agent, seq],
                    |r| r.get(0),
                )
                .optional()?)
        };
        let anchor = match entries.first() {
            Some(e) => hash_at(e.seq - 1)?,
            None => None,
        };
        super::chain::links(anchor.as_deref(), entries)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO audit(agent, seq, kind, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in entries {
                st.execute(params![agent, e.seq, e.kind, e.body, e.prev, e.hash])?;
            }
        }
        {
            let mut st =
                tx.prepare_cached("SELECT hash FROM audit WHERE agent = ?1 AND seq = ?2")?;
            for e in entries {
                let stored: String = st.query_row(params![agent, e.seq], |r| r.get(0))?;
                super::same(e, &stored)?;
            }
        }
        if let Some(h) = head {
            let stored = head_of(&tx, agent)?;
            super::chain::head_ok(stored.as_ref(), h, hash_at(h.seq)?.as_deref())?;
            tx.execute(
                "INSERT INTO audit_heads(agent, seq, hash, time_ms, key, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(agent) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, time_ms = excluded.time_ms, key = excluded.key, signature = excluded.signature",
                params![agent, h.seq, h.hash, h.time_ms as i64, h.key, h.signature],
            )?;
        }
        let top: Option<i64> = tx.query_row(
            "SELECT max(seq) FROM audit WHERE agent = ?1",
            [agent],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(top.unwrap_or(0))
    }

    pub fn audit_head(&self, agent: &str) -> Result<Option<SignedHead>, StoreError> {
        head_of(&self.conn(), agent)
    }

    pub fn audit_entries(
        &self,
        agent: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Entry>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT seq, kind, body, prev, hash FROM audit WHERE agent = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = st.query_map(params![agent, after, limit], |r| {
            Ok(Entry {
                seq: r.get(0)?,
                kind: r.get(1)?,
                body: r.get(2)?,
                prev: r.get(3)?,
                hash: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn machine_add(&self, m: &Machine, actor: &str, reason: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let live: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM machines WHERE name = ?1 AND revoked_at IS NULL)",
            [&m.name],
            |r| r.get(0),
        )?;
        if live {
            return Err(StoreError::Invalid(format!(
                "machine `{}` already exists; revoke it first to register it again",
                m.name
            )));
        }
        tx.execute(
            "INSERT OR REPLACE INTO machines(name, token_hash, roles, env, created, expires, idle_ttl)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![m.name, m.hash, m.roles.join(","), m.env, m.created, m.expires, m.idle_ttl],
        )?;
        let after = serde_json::to_value(m).unwrap_or_default();
        log(
            &tx,
            actor,
            "machine.add",
            reason,
            &serde_json::Value::Null,
            &after,
        )?;
        tx.commit()?;
        drop(c);
        self.announce();
        Ok(())
    }

    pub fn machine_rotate(
        &self,
        name: &str,
        hash: &[u8],
        until: i64,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE machines SET old_hash = token_hash, old_until = ?3, token_hash = ?2
             WHERE name = ?1 AND revoked_at IS NULL",
            params![name, hash, until],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("live machine `{name}`")));
        }
        let after = serde_json::json!({"machine": name, "old_token_until": until});
        log(
            &tx,
            actor,
            "machine.rotate",
            reason,
            &serde_json::Value::Null,
            &after,
        )?;
        tx.commit()?;
        drop(c);
        self.announce();
        Ok(())
    }

    pub fn machine_revoke(&self, name: &str, actor: &str, reason: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE machines SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, unix_now()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("live machine `{name}`")));
        }
        let before = serde_json::json!({"machine": name, "revoked": false});
        let after = serde_json::json!({"machine": name, "revoked": true});
        log(&tx, actor, "machine.revoke", reason, &before, &after)?;
        tx.commit()?;
        drop(c);
        self.announce();
        Ok(())
    }

    pub fn machines(&self) -> Result<Vec<Machine>, StoreError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT name, roles, env, created, expires, idle_ttl, last_used, revoked_at, token_hash, old_hash, old_until
             FROM machines ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            let old_hash: Option<Vec<u8>> = r.get(9)?;
            let old_until: Option<i64> = r.get(10)?;
            Ok(Machine {
                name: r.get(0)?,
                roles: r
                    .get::<_, String>(1)?
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
                env: r.get(2)?,
                created: r.get(3)?,
                expires: r.get(4)?,
                idle_ttl: r.get(5)?,
                last_used: r.get(6)?,
                revoked_at: r.get(7)?,
                hash: r.get(8)?,
                old: old_hash.zip(old_until),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn machine_uses(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
}

fn head_of(c: &Connection, agent: &str) -> Result<Option<SignedHead>, StoreError> {
    Ok(c.query_row(
        "SELECT seq, hash, time_ms, key, signature FROM audit_heads WHERE agent = ?1",
        [agent],
        |r| {
            Ok(SignedHead {
                seq: r.get(0)?,
                hash: r.get(1)?,
                time_ms: r.get::<_, i64>(2)? as u64,
                key: r.get(3)?,
                signature: r.get(4)?,
            })
        },
    )
    .optional()?)
}
