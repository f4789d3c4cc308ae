//! The one owner of what the policy in force is made of: its text and the
//! opt-outs compiled into it.
//!
//! Four things change them: the policy file (watcher, SIGHUP), the admin
//! API's opt-outs, opt-outs that expire, and an agent's config from its
//! server. Each used to read the snapshot, compile and store on its own,
//! so two at once could each start from the same snapshot and the later
//! store undo the earlier: a reload racing a new opt-out ended with the
//! new file *without* the opt-out (while the opt-out list said it was in
//! force), or with the opt-out over the *old* file. Now every change takes
//! a turn here: under one lock the current snapshot is read, the change
//! applied to it, the result compiled and swapped in whole (policy,
//! detectors and the opt-outs it was compiled with, one `Active`), and the
//! change recorded as one audit event. Requests never take this lock;
//! they read the snapshot with no lock at all.

use crate::state::{Active, OwnedOptOut, Shared};
use std::sync::Arc;

/// Reads the opt-outs in force (from the control store, a cached config):
/// called *inside* the owner's turn, so a set read before another change
/// was applied can never be stored after it.
pub type ReadOptOuts = Box<dyn FnOnce() -> Result<Vec<OwnedOptOut>, String> + Send>;

/// Reads policy text and its name for messages (a file), in the turn.
pub type ReadText = Box<dyn FnOnce() -> Result<(String, String), String> + Send>;

/// A change of what the policy in force is made of.
pub enum Change {
    /// New policy text (a reload), compiled with the opt-outs in force.
    Text(ReadText),
    /// The opt-outs in force, as `read` says when the turn comes.
    OptOuts(ReadOptOuts),
    /// Text and opt-outs together (an agent's config from its server).
    Config {
        text: String,
        name: String,
        optouts: Vec<OwnedOptOut>,
    },
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub old: String,
    pub new: String,
    /// Whether anything in force changed.
    pub changed: bool,
}

impl Shared {
    /// Applies `change` in its turn (see the module's text). `trigger`
    /// says what asked (`file`, `SIGHUP`, `admin`, `expiry`, `server`).
    /// Err: the change does not compile; the last policy stays in force,
    /// and the refusal is recorded too.
    pub async fn change(&self, change: Change, trigger: &str) -> Result<Applied, String> {
        let _turn = self.owner.lock().await;
        let cur = self.policy.load_full();
        let now = (veto_audit::now().0 / 1000) as i64;
        let read = |r| async move {
            tokio::task::spawn_blocking(r)
                .await
                .map_err(|e| format!("cannot read: {e}"))?
        };
        let (text, name, optouts, loaded_at) = match change {
            Change::Text(r) => match read(r).await {
                Ok((text, name)) => (text, name, cur.optouts.as_ref().clone(), now),
                Err(e) => {
                    self.record_change(trigger, &cur, None, Err(&e)).await;
                    return Err(e);
                }
            },
            Change::Config {
                text,
                name,
                optouts,
            } => (text, name, optouts, now),
            Change::OptOuts(r) => {
                let optouts = tokio::task::spawn_blocking(r)
                    .await
                    .map_err(|e| format!("cannot read the opt-outs: {e}"))??;
                // Same text, so the grants' idle clocks keep their start.
                (
                    cur.source.to_string(),
                    "policy".into(),
                    optouts,
                    cur.loaded_at,
                )
            }
        };
        let old = cur.policy.hash().to_string();
        if *text == *cur.source && optouts == *cur.optouts {
            return Ok(Applied {
                new: old.clone(),
                old,
                changed: false,
            });
        }
        let result = Active::compile(&text, &name, &optouts, loaded_at);
        match result {
            Ok(active) => {
                let new = active.policy.hash().to_string();
                let _ = self.grants.loaded(&active.policy, active.loaded_at);
                let active = Arc::new(active);
                self.policy.store(active.clone());
                self.record_change(trigger, &cur, Some(&active), Ok(()))
                    .await;
                Ok(Applied {
                    old,
                    new,
                    changed: true,
                })
            }
            Err(errors) => {
                self.record_change(trigger, &cur, None, Err(&errors)).await;
                Err(errors)
            }
        }
    }

    /// One event per change, from here, still in the turn: the trail holds
    /// the changes in the order they took effect.
    async fn record_change(
        &self,
        trigger: &str,
        old: &Active,
        new: Option<&Active>,
        result: Result<(), &str>,
    ) {
        let ids =
            |a: &Active| -> Vec<String> { a.optouts.iter().map(|o| o.rule_id.clone()).collect() };
        let detail = match (new, result) {
            (Some(new), Ok(())) => serde_json::json!({
                "trigger": trigger, "old": old.policy.hash(), "new": new.policy.hash(),
                "optouts": ids(new), "result": "loaded",
            }),
            (_, Err(errors)) => serde_json::json!({
                "trigger": trigger, "old": old.policy.hash(), "new": null,
                "optouts": ids(old), "result": "refused",
                "errors": errors.lines().collect::<Vec<_>>(),
            }),
            (None, Ok(())) => return,
        };
        let (ms, time) = veto_audit::now();
        let event = veto_audit::Event {
            id: veto_audit::new_id(ms),
            time,
            event: "policy-reload".into(),
            detail,
        };
        if let Err(e) = self.writer.event(event, ms).await {
            tracing::error!(error = %e, "cannot record the policy change");
        }
    }
}
