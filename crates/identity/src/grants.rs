//! Grant use (policy-v1, "Permissions that expire"), kept in the identity
//! store so that a restart neither forgets a use nor restarts an idle
//! clock: the last applied allow per (rule, machine), when each rule id was
//! first loaded, renewals (`veto access renew`) and the expiries already
//! reported.

use crate::store::now;
use crate::{IdentityError, Store};
use rusqlite::{TransactionBehavior, params};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS grants (
    rule      TEXT NOT NULL,
    machine   TEXT NOT NULL,
    last_used INTEGER NOT NULL,
    PRIMARY KEY (rule, machine)
);
CREATE TABLE IF NOT EXISTS grant_rules (
    rule         TEXT PRIMARY KEY,
    first_loaded INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS grant_renewals (
    seq     INTEGER PRIMARY KEY,
    rule    TEXT NOT NULL,
    machine TEXT NOT NULL,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    reason  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grant_expiries (
    rule    TEXT NOT NULL,
    machine TEXT NOT NULL,
    since   INTEGER NOT NULL,
    PRIMARY KEY (rule, machine, since)
);
";

/// One (rule, machine) and its last use, Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantUse {
    pub rule: String,
    pub machine: String,
    pub last_used: i64,
}

/// A grant renewed by `veto access renew`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub seq: i64,
    pub rule: String,
    pub machine: String,
    pub at: i64,
    pub actor: String,
    pub reason: String,
}

impl Store {
    /// Every recorded grant use.
    pub fn grant_uses(&self) -> Result<Vec<GrantUse>, IdentityError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT rule, machine, last_used FROM grants ORDER BY rule, machine")?;
        let rows = st.query_map([], |r| {
            Ok(GrantUse {
                rule: r.get(0)?,
                machine: r.get(1)?,
                last_used: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records uses the proxy saw, in one transaction; a use never moves
    /// `last_used` back. Does not change [`Store::version`].
    pub fn record_grant_uses(&self, uses: &[GrantUse]) -> Result<(), IdentityError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO grants(rule, machine, last_used) VALUES (?1, ?2, ?3)
                 ON CONFLICT(rule, machine) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
            )?;
            for u in uses {
                st.execute(params![u.rule, u.machine, u.last_used])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes rule ids as loaded at `at` unless they were loaded before;
    /// returns every rule's first load.
    pub fn rules_loaded(
        &self,
        rules: &[String],
        at: i64,
    ) -> Result<Vec<(String, i64)>, IdentityError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO grant_rules(rule, first_loaded) VALUES (?1, ?2)",
            )?;
            for r in rules {
                st.execute(params![r, at])?;
            }
        }
        let all = {
            let mut st = tx.prepare("SELECT rule, first_loaded FROM grant_rules ORDER BY rule")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(all)
    }

    /// Renews a grant: it counts as used now. Logged with who and why, and
    /// [`Store::version`] changes so that running proxies pick it up.
    pub fn renew_grant(
        &self,
        rule: &str,
        machine: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Renewal, IdentityError> {
        let at = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO grants(rule, machine, last_used) VALUES (?1, ?2, ?3)
             ON CONFLICT(rule, machine) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
            params![rule, machine, at],
        )?;
        tx.execute(
            "INSERT INTO grant_renewals(rule, machine, at, actor, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![rule, machine, at, actor, reason],
        )?;
        let seq = tx.last_insert_rowid();
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'version'",
            [],
        )?;
        tx.commit()?;
        Ok(Renewal {
            seq,
            rule: rule.to_string(),
            machine: machine.to_string(),
            at,
            actor: actor.to_string(),
            reason: reason.to_string(),
        })
    }

    /// Renewals after `seq`, oldest first.
    pub fn renewals_after(&self, seq: i64) -> Result<Vec<Renewal>, IdentityError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT seq, rule, machine, at, actor, reason FROM grant_renewals WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = st.query_map([seq], |r| {
            Ok(Renewal {
                seq: r.get(0)?,
                rule: r.get(1)?,
                machine: r.get(2)?,
                at: r.get(3)?,
                actor: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last renewal already reported to the audit trail.
    pub fn renewals_audited(&self) -> Result<i64, IdentityError> {
        use rusqlite::OptionalExtension;
        let conn = self.conn();
        let v: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'renewals_audited'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0))
    }

    /// Whether this lapse was reported already.
    pub fn grant_expiry_reported(
        &self,
        rule: &str,
        machine: &str,
        since: i64,
    ) -> Result<bool, IdentityError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS(SELECT 1 FROM grant_expiries WHERE rule = ?1 AND machine = ?2 AND since = ?3)",
            params![rule, machine, since],
            |r| r.get(0),
        )?)
    }

    pub fn set_renewals_audited(&self, seq: i64) -> Result<(), IdentityError> {
        self.conn().execute(
            "INSERT INTO meta(key, value) VALUES ('renewals_audited', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [seq],
        )?;
        Ok(())
    }

    /// Notes that the grant of `rule` to `machine` lapsed, idle since
    /// `since`. `true` the first time: the caller reports it once.
    pub fn grant_expired(
        &self,
        rule: &str,
        machine: &str,
        since: i64,
    ) -> Result<bool, IdentityError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO grant_expiries(rule, machine, since) VALUES (?1, ?2, ?3)",
            params![rule, machine, since],
        )?;
        Ok(n == 1)
    }
}
