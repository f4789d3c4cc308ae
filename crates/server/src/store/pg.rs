//! The shared backend: PostgreSQL, for several `veto server` replicas.
//! Writes notify `veto_changes` in their transaction (delivered on
//! commit); each replica listens on a connection of its own and tells its
//! agents, so a change made through one replica reaches the agents of
//! every other at once, with no polling.

use super::sqlite::{change, target};
use super::{
    Agent, Change, Entry, MIGRATIONS, Machine, OptOut, PolicyVersion, StoreError, Target, unix_now,
};
use tokio::sync::broadcast;
use tokio_postgres::Row;
use veto_audit::head::SignedHead;

#[derive(Clone)]
pub struct Pg {
    pool: deadpool_postgres::Pool,
    pub(super) changed: broadcast::Sender<()>,
}

/// Any fixed number: replicas starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7665_746f;

fn policy_row(r: &Row) -> PolicyVersion {
    PolicyVersion {
        version: r.get(0),
        hash: r.get(1),
        text: r.get(2),
        actor: r.get(3),
        reason: r.get(4),
        time: r.get(5),
    }
}

fn optout_row(r: &Row) -> OptOut {
    OptOut {
        id: r.get::<_, i64>(0) as u32,
        target: target(r.get(1), r.get(2)),
        reason: r.get(3),
        created: r.get(4),
        expires: r.get(5),
        actor: r.get(6),
    }
}

const SELECT_OPTOUT: &str = "SELECT id, kind, value, reason, created, expires, actor FROM optouts";
const SELECT_POLICY: &str = "SELECT version, hash, text, actor, reason, time FROM policies";
pub(super) const LOG: &str = "INSERT INTO changes(time, actor, action, reason, before, after) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const NOTIFY: &str = "SELECT pg_notify('veto_changes', '')";

impl Pg {
    pub async fn open(url: &str) -> Result<Pg, StoreError> {
        let target = super::pg_conn::Target::parse(url)?;
        let pool = target.pool()?;
        let pg = Pg {
            pool,
            changed: broadcast::channel(64).0,
        };
        {
            let mut client = pg.conn().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)",
            )
            .await?;
            for (v, sql) in MIGRATIONS {
                let done = tx
                    .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[v])
                    .await?
                    .is_some();
                if !done {
                    let sql = sql
                        .replace("{serial}", "BIGSERIAL PRIMARY KEY")
                        .replace("{blob}", "BYTEA");
                    tx.batch_execute(&sql).await?;
                    tx.execute(
                        "INSERT INTO schema_migrations(version, applied) VALUES ($1, $2)",
                        &[v, &unix_now()],
                    )
                    .await?;
                }
            }
            tx.commit().await?;
        }
        target.listen(pg.changed.clone());
        Ok(pg)
    }

    /// A pooled connection. One the server dropped (a restart, a failover)
    /// is replaced when taken, so the first call after fails over to a new
    /// connection instead of answering 503 until veto restarts.
    pub(super) async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        })
    }

    pub async fn policy(&self, v: Option<i64>) -> Result<Option<PolicyVersion>, StoreError> {
        let c = self.conn().await?;
        let row = match v {
            Some(v) => {
                c.query_opt(&format!("{SELECT_POLICY} WHERE version = $1"), &[&v])
                    .await?
            }
            None => {
                c.query_opt(
                    &format!("{SELECT_POLICY} ORDER BY version DESC LIMIT 1"),
                    &[],
                )
                .await?
            }
        };
        Ok(row.as_ref().map(policy_row))
    }

    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT version, hash, '' AS text, actor, reason, time FROM policies ORDER BY version DESC",
                &[],
            )
            .await?;
        Ok(rows.iter().map(policy_row).collect())
    }

    pub async fn policy_push(
        &self,
        text: &str,
        hash: &str,
        actor: &str,
        reason: &str,
        action: &str,
    ) -> Result<PolicyVersion, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // One push at a time, so `before` is the version this one replaces.
        tx.execute("LOCK TABLE policies IN EXCLUSIVE MODE", &[])
            .await?;
        let before = tx
            .query_opt(
                "SELECT version, hash FROM policies ORDER BY version DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|r| serde_json::json!({"version": r.get::<_, i64>(0), "hash": r.get::<_, String>(1)}))
            .unwrap_or(serde_json::Value::Null);
        let time = unix_now();
        let version: i64 = tx
            .query_one(
                "INSERT INTO policies(hash, text, actor, reason, time) VALUES ($1, $2, $3, $4, $5) RETURNING version",
                &[&hash, &text, &actor, &reason, &time],
            )
            .await?
            .get(0);
        let after = serde_json::json!({"version": version, "hash": hash});
        tx.execute(
            LOG,
            &[
                &time,
                &actor,
                &action,
                &reason,
                &before.to_string(),
                &after.to_string(),
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(PolicyVersion {
            version,
            hash: hash.into(),
            text: text.into(),
            actor: actor.into(),
            reason: reason.into(),
            time,
        })
    }

    pub async fn optouts(&self) -> Result<Vec<OptOut>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("{SELECT_OPTOUT} WHERE removed IS NULL ORDER BY id"),
                &[],
            )
            .await?;
        Ok(rows.iter().map(optout_row).collect())
    }

    pub async fn optout_add(
        &self,
        target: &Target,
        reason: &str,
        expires: Option<i64>,
        actor: &str,
    ) -> Result<OptOut, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let created = unix_now();
        let id: i64 = tx
            .query_one(
                "INSERT INTO optouts(kind, value, reason, created, expires, actor) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&target.kind(), &target.value(), &reason, &created, &expires, &actor],
            )
            .await?
            .get(0);
        let o = OptOut {
            id: id as u32,
            target: target.clone(),
            reason: reason.into(),
            created,
            expires,
            actor: actor.into(),
        };
        let after = serde_json::to_value(&o).unwrap_or_default();
        tx.execute(
            LOG,
            &[
                &created,
                &actor,
                &"optout.add",
                &reason,
                &"null",
                &after.to_string(),
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(o)
    }

    pub async fn optout_remove(
        &self,
        id: u32,
        reason: &str,
        actor: &str,
    ) -> Result<OptOut, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!("{SELECT_OPTOUT} WHERE id = $1 AND removed IS NULL FOR UPDATE"),
                &[&(id as i64)],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("opt-out {id}")))?;
        let o = optout_row(&row);
        let now = unix_now();
        tx.execute(
            "UPDATE optouts SET removed = $1 WHERE id = $2",
            &[&now, &(id as i64)],
        )
        .await?;
        let why = if reason.trim().is_empty() {
            "removed"
        } else {
            reason.trim()
        };
        let before = serde_json::to_value(&o).unwrap_or_default();
        tx.execute(
            LOG,
            &[
                &now,
                &actor,
                &"optout.remove",
                &why,
                &before.to_string(),
                &"null",
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(o)
    }

    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        reason: &str,
        before: &serde_json::Value,
        after: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            LOG,
            &[
                &unix_now(),
                &actor,
                &action,
                &reason,
                &before.to_string(),
                &after.to_string(),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn changes(&self) -> Result<Vec<Change>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, time, actor, action, reason, before, after FROM changes ORDER BY seq",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                change(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get::<_, &str>(5),
                    r.get::<_, &str>(6),
                )
            })
            .collect())
    }

    pub async fn agent_add(
        &self,
        name: &str,
        env: Option<&str>,
        hash: &[u8],
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "INSERT INTO agents(name, token_hash, env) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&name, &hash, &env],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "agent `{name}` is already enrolled"
            )));
        }
        let after = serde_json::json!({"agent": name, "env": env});
        tx.execute(
            LOG,
            &[
                &unix_now(),
                &actor,
                &"agent.add",
                &"enrolled",
                &"null",
                &after.to_string(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn agent_by_token(&self, hash: &[u8]) -> Result<Option<String>, StoreError> {
        let c = self.conn().await?;
        Ok(
            c.query_opt("SELECT name FROM agents WHERE token_hash = $1", &[&hash])
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub async fn agent_report(
        &self,
        name: &str,
        version: &str,
        policy_hash: Option<&str>,
        spool: i64,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE agents SET version = $2, policy_hash = $3, spool = $4, last_seen = $5 WHERE name = $1",
            &[&name, &version, &policy_hash, &spool, &unix_now()],
        )
        .await?;
        Ok(())
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT name, env, version, policy_hash, spool, last_seen FROM agents ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Agent {
                name: r.get(0),
                env: r.get(1),
                version: r.get(2),
                policy_hash: r.get(3),
                spool: r.get(4),
                last_seen: r.get(5),
            })
            .collect())
    }

    pub async fn audit_ingest(
        &self,
        agent: &str,
        entries: &[Entry],
        head: Option<&SignedHead>,
    ) -> Result<i64, StoreError> {
        // One statement per batch (arrays unnested server-side), not one
        // round trip per entry.
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        let kinds: Vec<i64> = entries.iter().map(|e| e.kind).collect();
        let bodies: Vec<&str> = entries.iter().map(|e| e.body.as_str()).collect();
        let prevs: Vec<&str> = entries.iter().map(|e| e.prev.as_str()).collect();
        let hashes: Vec<&str> = entries.iter().map(|e| e.hash.as_str()).collect();
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // One ingest per agent at a time: the gap check stays true.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&agent])
            .await?;
        let before: Option<i64> = tx
            .query_one("SELECT max(seq) FROM audit WHERE agent = $1", &[&agent])
            .await?
            .get(0);
        super::no_gap(before, entries)?;
        let anchor = match entries.first() {
            Some(e) => hash_at(&*tx, agent, e.seq - 1).await?,
            None => None,
        };
        super::chain::links(anchor.as_deref(), entries)?;
        tx.execute(
            "INSERT INTO audit(agent, seq, kind, body, prev, hash)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[])
             ON CONFLICT DO NOTHING",
            &[&agent, &seqs, &kinds, &bodies, &prevs, &hashes],
        )
        .await?;
        let stored = tx
            .query(
                "SELECT seq, hash FROM audit WHERE agent = $1 AND seq = ANY($2)",
                &[&agent, &seqs],
            )
            .await?;
        let stored: std::collections::HashMap<i64, String> =
            stored.iter().map(|r| (r.get(0), r.get(1))).collect();
        for e in entries {
            super::same(e, stored.get(&e.seq).map_or("", String::as_str))?;
        }
        if let Some(h) = head {
            let before = head_of(&*tx, agent).await?;
            let at = hash_at(&*tx, agent, h.seq).await?;
            super::chain::head_ok(before.as_ref(), h, at.as_deref())?;
            tx.execute(
                "INSERT INTO audit_heads(agent, seq, hash, time_ms, key, signature) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT(agent) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, time_ms = excluded.time_ms, key = excluded.key, signature = excluded.signature",
                &[&agent, &h.seq, &h.hash, &(h.time_ms as i64), &h.key, &h.signature],
            )
            .await?;
        }
        let top: Option<i64> = tx
            .query_one("SELECT max(seq) FROM audit WHERE agent = $1", &[&agent])
            .await?
            .get(0);
        tx.commit().await?;
        Ok(top.unwrap_or(0))
    }

    pub async fn audit_head(&self, agent: &str) -> Result<Option<SignedHead>, StoreError> {
        let c = self.conn().await?;
        head_of(&**c, agent).await
    }

    pub async fn audit_entries(
        &self,
        agent: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Entry>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT seq, kind, body, prev, hash FROM audit WHERE agent = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&agent, &after, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                seq: r.get(0),
                kind: r.get(1),
                body: r.get(2),
                prev: r.get(3),
                hash: r.get(4),
            })
            .collect())
    }

    pub async fn machine_add(
        &self,
        m: &Machine,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let live = tx
            .query_opt(
                "SELECT 1 FROM machines WHERE name = $1 AND revoked_at IS NULL FOR UPDATE",
                &[&m.name],
            )
            .await?
            .is_some();
        if live {
            return Err(StoreError::Invalid(format!(
                "machine `{}` already exists; revoke it first to register it again",
                m.name
            )));
        }
        tx.execute("DELETE FROM machines WHERE name = $1", &[&m.name])
            .await?;
        tx.execute(
            "INSERT INTO machines(name, token_hash, roles, env, created, expires, idle_ttl)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &m.name,
                &m.hash,
                &m.roles.join(","),
                &m.env,
                &m.created,
                &m.expires,
                &m.idle_ttl,
            ],
        )
        .await?;
        let after = serde_json::to_value(m).unwrap_or_default();
        tx.execute(
            LOG,
            &[
                &m.created,
                &actor,
                &"machine.add",
                &reason,
                &"null",
                &after.to_string(),
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn machine_rotate(
        &self,
        name: &str,
        hash: &[u8],
        until: i64,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE machines SET old_hash = token_hash, old_until = $3, token_hash = $2
                 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &hash, &until],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("live machine `{name}`")));
        }
        let after = serde_json::json!({"machine": name, "old_token_until": until});
        tx.execute(
            LOG,
            &[
                &unix_now(),
                &actor,
                &"machine.rotate",
                &reason,
                &"null",
                &after.to_string(),
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn machine_revoke(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let now = unix_now();
        let n = tx
            .execute(
                "UPDATE machines SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &now],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("live machine `{name}`")));
        }
        let before = serde_json::json!({"machine": name, "revoked": false});
        let after = serde_json::json!({"machine": name, "revoked": true});
        tx.execute(
            LOG,
            &[
                &now,
                &actor,
                &"machine.revoke",
                &reason,
                &before.to_string(),
                &after.to_string(),
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn machines(&self) -> Result<Vec<Machine>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT name, roles, env, created, expires, idle_ttl, last_used, revoked_at, token_hash, old_hash, old_until
                 FROM machines ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let old_hash: Option<Vec<u8>> = r.get(9);
                let old_until: Option<i64> = r.get(10);
                Machine {
                    name: r.get(0),
                    roles: r
                        .get::<_, &str>(1)
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect(),
                    env: r.get(2),
                    created: r.get(3),
                    expires: r.get(4),
                    idle_ttl: r.get(5),
                    last_used: r.get(6),
                    revoked_at: r.get(7),
                    hash: r.get(8),
                    old: old_hash.zip(old_until),
                }
            })
            .collect())
    }

    pub async fn machine_uses(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let names: Vec<&str> = uses.iter().map(|(n, _)| n.as_str()).collect();
        let ats: Vec<i64> = uses.iter().map(|(_, t)| *t).collect();
        let c = self.conn().await?;
        c.execute(
            "UPDATE machines m SET last_used = greatest(coalesce(m.last_used, 0), u.at)
             FROM (SELECT name, max(at) AS at FROM UNNEST($1::text[], $2::bigint[]) AS x(name, at)
                   GROUP BY name) u
             WHERE m.name = u.name AND m.revoked_at IS NULL",
            &[&names, &ats],
        )
        .await?;
        Ok(())
    }
}

async fn hash_at(
    c: &impl tokio_postgres::GenericClient,
    agent: &str,
    seq: i64,
) -> Result<Option<String>, StoreError> {
    Ok(c.query_opt(
        "SELECT hash FROM audit WHERE agent = $1 AND seq = $2",
        &[&agent, &seq],
    )
    .await?
    .map(|r| r.get(0)))
}

async fn head_of(
    c: &impl tokio_postgres::GenericClient,
    agent: &str,
) -> Result<Option<SignedHead>, StoreError> {
    Ok(c.query_opt(
        "SELECT seq, hash, time_ms, key, signature FROM audit_heads WHERE agent = $1",
        &[&agent],
    )
    .await?
    .map(|r| SignedHead {
        seq: r.get(0),
        hash: r.get(1),
        time_ms: r.get::<_, i64>(2) as u64,
        key: r.get(3),
        signature: r.get(4),
    }))
}
