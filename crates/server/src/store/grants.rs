//! Grants that expire when unused (policy-v1 "Permissions that expire"),
//! kept for the whole fleet: the last use of each (rule, machine) as any
//! agent reported it, when each expiring rule was first pushed, renewals,
//! and the lapses already written to the change log. Both backends here,
//! side by side, so they stay alike.

use super::pg::{LOG, NOTIFY, Pg};
use super::sqlite::{Sqlite, log};
use super::{StoreError, unix_now};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
pub use veto_identity::GrantUse;

/// What the fleet knows of its grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantState {
    pub uses: Vec<GrantUse>,
    /// rule id -> when it was first pushed (Unix seconds).
    pub first_loaded: std::collections::HashMap<String, i64>,
}

pub(super) const MIGRATION: &str = "CREATE TABLE grant_uses (
        rule      TEXT NOT NULL,
        machine   TEXT NOT NULL,
        last_used BIGINT NOT NULL,
        PRIMARY KEY (rule, machine)
    );
    CREATE TABLE grant_rules (
        rule         TEXT PRIMARY KEY,
        first_loaded BIGINT NOT NULL
    );
    CREATE TABLE grant_expiries (
        rule    TEXT NOT NULL,
        machine TEXT NOT NULL,
        since   BIGINT NOT NULL,
        PRIMARY KEY (rule, machine, since)
    );";

/// A renewal's change-log entry: the use before and after.
fn renewal_diff(
    rule: &str,
    machine: &str,
    before: Option<i64>,
    at: i64,
) -> (serde_json::Value, serde_json::Value) {
    let fmt = veto_identity::format_time;
    (
        serde_json::json!({"rule": rule, "machine": machine, "last_used": before.map(fmt)}),
        serde_json::json!({"rule": rule, "machine": machine, "last_used": fmt(at)}),
    )
}

impl Sqlite {
    pub fn grant_uses(&self, uses: &[GrantUse]) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO grant_uses(rule, machine, last_used) VALUES (?1, ?2, ?3)
                 ON CONFLICT(rule, machine) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
            )?;
            for u in uses {
                st.execute(params![u.rule, u.machine, u.last_used])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn grants(&self) -> Result<GrantState, StoreError> {
        let c = self.conn();
        let uses = c
            .prepare_cached(
                "SELECT rule, machine, last_used FROM grant_uses ORDER BY rule, machine",
            )?
            .query_map([], |r| {
                Ok(GrantUse {
                    rule: r.get(0)?,
                    machine: r.get(1)?,
                    last_used: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let first_loaded = c
            .prepare_cached("SELECT rule, first_loaded FROM grant_rules")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(GrantState { uses, first_loaded })
    }

    pub fn grant_rules_loaded(&self, rules: &[String], at: i64) -> Result<(), StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for r in rules {
            tx.execute(
                "INSERT INTO grant_rules(rule, first_loaded) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![r, at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn grant_renew(
        &self,
        rule: &str,
        machine: &str,
        actor: &str,
        reason: &str,
    ) -> Result<i64, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before: Option<i64> = tx
            .query_row(
                "SELECT last_used FROM grant_uses WHERE rule = ?1 AND machine = ?2",
                params![rule, machine],
                |r| r.get(0),
            )
            .optional()?;
        let at = unix_now().max(before.unwrap_or(0));
        tx.execute(
            "INSERT INTO grant_uses(rule, machine, last_used) VALUES (?1, ?2, ?3)
             ON CONFLICT(rule, machine) DO UPDATE SET last_used = excluded.last_used",
            params![rule, machine, at],
        )?;
        let (b, a) = renewal_diff(rule, machine, before, at);
        log(&tx, actor, "grant.renew", reason, &b, &a)?;
        tx.commit()?;
        self.announce();
        Ok(at)
    }

    /// Logs a lapse once: false when it was logged already (by this
    /// server or, on PostgreSQL, by another replica).
    pub fn grant_expired(
        &self,
        rule: &str,
        machine: &str,
        since: i64,
        reason: &str,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = tx.execute(
            "INSERT INTO grant_expiries(rule, machine, since) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![rule, machine, since],
        )? == 1;
        if new {
            log(
                &tx,
                "veto-server",
                "grant.expire",
                reason,
                detail,
                &serde_json::Value::Null,
            )?;
        }
        tx.commit()?;
        Ok(new)
    }
}

impl Pg {
    pub async fn grant_uses(&self, uses: &[GrantUse]) -> Result<(), StoreError> {
        let rules: Vec<&str> = uses.iter().map(|u| u.rule.as_str()).collect();
        let machines: Vec<&str> = uses.iter().map(|u| u.machine.as_str()).collect();
        let ats: Vec<i64> = uses.iter().map(|u| u.last_used).collect();
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO grant_uses(rule, machine, last_used)
             SELECT rule, machine, max(at)
               FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS x(rule, machine, at)
              GROUP BY rule, machine
             ON CONFLICT (rule, machine)
             DO UPDATE SET last_used = greatest(grant_uses.last_used, excluded.last_used)",
            &[&rules, &machines, &ats],
        )
        .await?;
        Ok(())
    }

    pub async fn grants(&self) -> Result<GrantState, StoreError> {
        let c = self.conn().await?;
        let uses = c
            .query(
                "SELECT rule, machine, last_used FROM grant_uses ORDER BY rule, machine",
                &[],
            )
            .await?
            .iter()
            .map(|r| GrantUse {
                rule: r.get(0),
                machine: r.get(1),
                last_used: r.get(2),
            })
            .collect();
        let first_loaded = c
            .query("SELECT rule, first_loaded FROM grant_rules", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(GrantState { uses, first_loaded })
    }

    pub async fn grant_rules_loaded(&self, rules: &[String], at: i64) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO grant_rules(rule, first_loaded) SELECT r, $2 FROM UNNEST($1::text[]) AS x(r)
             ON CONFLICT DO NOTHING",
            &[&rules, &at],
        )
        .await?;
        Ok(())
    }

    pub async fn grant_renew(
        &self,
        rule: &str,
        machine: &str,
        actor: &str,
        reason: &str,
    ) -> Result<i64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let before: Option<i64> = tx
            .query_opt(
                "SELECT last_used FROM grant_uses WHERE rule = $1 AND machine = $2 FOR UPDATE",
                &[&rule, &machine],
            )
            .await?
            .map(|r| r.get(0));
        let at = unix_now().max(before.unwrap_or(0));
        tx.execute(
            "INSERT INTO grant_uses(rule, machine, last_used) VALUES ($1, $2, $3)
             ON CONFLICT (rule, machine) DO UPDATE SET last_used = excluded.last_used",
            &[&rule, &machine, &at],
        )
        .await?;
        let (b, a) = renewal_diff(rule, machine, before, at);
        tx.execute(
            LOG,
            &[
                &at,
                &actor,
                &"grant.renew",
                &reason,
                &b.to_string(),
                &a.to_string(),
            ],
        )
        .await?;
        tx.execute(NOTIFY, &[]).await?;
        tx.commit().await?;
        Ok(at)
    }

    pub async fn grant_expired(
        &self,
        rule: &str,
        machine: &str,
        since: i64,
        reason: &str,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let new = tx
            .execute(
                "INSERT INTO grant_expiries(rule, machine, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&rule, &machine, &since],
            )
            .await?
            == 1;
        if new {
            tx.execute(
                LOG,
                &[
                    &unix_now(),
                    &"veto-server",
                    &"grant.expire",
                    &reason,
                    &detail.to_string(),
                    &"null",
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(new)
    }
}
