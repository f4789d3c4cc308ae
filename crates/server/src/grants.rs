//! Grants across the fleet. A grant (an `expire_if_unused` rule) is used
//! wherever an agent applies it, so its idle clock is the fleet's, not one
//! agent's:
//! - agents report the grant uses they saw with their status; the store
//!   keeps the latest per (rule, machine);
//! - the server sends the fleet's uses back on the config stream as a
//!   `grants` event, so a grant used through one agent stays alive on all;
//! - a renewal (`veto access renew --server`) is a change: logged with who
//!   and why, announced, and on every agent at once;
//! - a grant that lapses is written to the change log once, by whichever
//!   replica sees it first.
//!
//! Uses are not announced one by one (they come with every agent's status
//! report, every 2 s). The `grants` event (the whole snapshot) is sent at
//! once after an announced change (a renewal, a new policy); a snapshot
//! that changed only by uses waits a quarter of the shortest idle period in
//! force, between 1 and 10 s, so busy fleets are not flooded with
//! snapshots while every agent still learns of a use long before the grant
//! could lapse. Lapses are checked once a second.

use crate::api::{App, error};
use crate::auth::Role;
use crate::store::{GrantState, Store, StoreError, unix_now};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use veto_identity::review::{self, Expiring};

/// How often the fleet's uses are read when nothing was announced.
const EVERY: Duration = Duration::from_secs(1);
/// The longest a changed snapshot waits (see above).
const MAX_HOLD: Duration = Duration::from_secs(10);

/// The `grants` event: every use, and when each expiring rule was first
/// pushed.
pub fn grants_json(state: &GrantState) -> String {
    let uses: Vec<serde_json::Value> = state
        .uses
        .iter()
        .map(
            |u| serde_json::json!({"rule": u.rule, "machine": u.machine, "last_used": u.last_used}),
        )
        .collect();
    let mut first: Vec<(&String, &i64)> = state.first_loaded.iter().collect();
    first.sort();
    let first: serde_json::Map<String, serde_json::Value> = first
        .into_iter()
        .map(|(r, t)| (r.clone(), (*t).into()))
        .collect();
    serde_json::json!({"uses": uses, "first_loaded": first}).to_string()
}

/// The policy in force, compiled once per hash.
struct Current {
    hash: String,
    rules: Vec<Expiring>,
}

/// Keeps the `grants` event current and logs lapses, until the process
/// ends.
pub async fn watch(store: Store, tx: watch::Sender<Arc<String>>) {
    let mut heard = store.subscribe();
    let mut tick = tokio::time::interval(EVERY);
    let mut current: Option<Current> = None;
    // Lapses known to be in the change log: asked of the store once each.
    let mut logged: HashSet<(String, String, i64)> = HashSet::new();
    let mut sent = tokio::time::Instant::now();
    loop {
        let announced = tokio::select! {
            _ = heard.recv() => true,
            _ = tick.tick() => false,
        };
        let w = Watch {
            announced,
            sent: &mut sent,
            current: &mut current,
            logged: &mut logged,
        };
        if let Err(e) = once(&store, &tx, w).await {
            tracing::error!(error = %e, "cannot bring the fleet's grants up to date");
        }
    }
}

/// What the watcher carries from one round to the next.
struct Watch<'a> {
    /// This round follows an announced change: send without waiting.
    announced: bool,
    sent: &'a mut tokio::time::Instant,
    current: &'a mut Option<Current>,
    logged: &'a mut HashSet<(String, String, i64)>,
}

fn hold(rules: &[Expiring]) -> Duration {
    let shortest = rules.iter().map(|r| r.idle.max(0) as u64).min();
    shortest.map_or(MAX_HOLD, |s| {
        Duration::from_millis(s.saturating_mul(250)).clamp(EVERY, MAX_HOLD)
    })
}

async fn once(
    store: &Store,
    tx: &watch::Sender<Arc<String>>,
    w: Watch<'_>,
) -> Result<(), StoreError> {
    let Watch {
        announced,
        sent,
        current,
        logged,
    } = w;
    let now = unix_now();
    let policy = store.policy_current().await?;
    if let Some(p) = &policy
        && current.as_ref().is_none_or(|c| c.hash != p.hash)
    {
        let text = p.text.clone();
        let rules = tokio::task::spawn_blocking(move || {
            veto_policy::Policy::compile(&text)
                .map(|p| Expiring::of(&p))
                .unwrap_or_default()
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?;
        // A rule id pushed for the first time starts its idle clock now.
        store
            .grant_rules_loaded(rules.iter().map(|r| r.rule.clone()).collect(), now)
            .await?;
        *current = Some(Current {
            hash: p.hash.clone(),
            rules,
        });
    }
    let rules = current.as_ref().map_or(&[][..], |c| &c.rules[..]);
    let state = store.grants().await?;
    if announced || sent.elapsed() >= hold(rules) {
        let event = grants_json(&state);
        if event != **tx.borrow() {
            let _ = tx.send(Arc::new(event));
            *sent = tokio::time::Instant::now();
        }
    }
    for l in review::lapsed(rules, &state.uses, &state.first_loaded, now) {
        let key = (l.rule.clone(), l.machine.clone(), l.since);
        if logged.contains(&key) {
            continue;
        }
        if store.grant_expired(&l).await? {
            tracing::info!(rule = %l.rule, machine = %l.machine, "{}", l.reason());
        }
        logged.insert(key);
    }
    Ok(())
}

/// One review line as JSON: what `veto access review --json` prints.
pub fn row_json(r: &review::Row) -> serde_json::Value {
    let fmt = veto_identity::format_time;
    serde_json::json!({
        "kind": r.kind,
        "rule": r.rule,
        "machine": r.machine,
        "last_used": r.last_used.map(fmt),
        "expires_at": r.expires_at.map(fmt),
        "state": r.state,
    })
}

#[derive(serde::Deserialize)]
pub struct ReviewQuery {
    /// Seconds: what counts as expiring soon (default 7 days).
    within: Option<i64>,
}

/// `GET /v1/access`: every machine credential and grant of the fleet, by
/// last use; expired first, then what expires soonest.
pub async fn review(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<ReviewQuery>,
) -> Response {
    if let Err(r) = app.tokens.check(&h, Role::Viewer) {
        return r;
    }
    let answer = async {
        let machines = app.store.machines().await?;
        let state = app.store.grants().await?;
        let rules = match app.store.policy_current().await? {
            Some(p) => veto_policy::Policy::compile(&p.text)
                .map(|p| Expiring::of(&p))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let credentials: Vec<review::CredentialUse> = machines
            .into_iter()
            .map(|m| review::CredentialUse {
                name: m.name,
                created: m.created,
                expires: m.expires,
                idle_ttl: m.idle_ttl,
                last_used: m.last_used,
                revoked_at: m.revoked_at,
            })
            .collect();
        Ok::<_, StoreError>(review::review(
            &credentials,
            &rules,
            &state.uses,
            &state.first_loaded,
            unix_now(),
            q.within.unwrap_or(7 * 86_400).max(0),
        ))
    };
    match answer.await {
        Ok(rows) => Json(rows.iter().map(row_json).collect::<Vec<_>>()).into_response(),
        Err(e) => crate::api::store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct Renew {
    rule: String,
    machine: String,
    reason: String,
}

/// `POST /v1/grants/renew`: the grant counts as used now, on every agent.
pub async fn renew(State(app): State<Arc<App>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = match app.tokens.check(&h, Role::Operator) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let r: Renew = match crate::api::json(&body, "expected {{rule, machine, reason}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Only a grant of the policy in force can be renewed: anything else is
    // a typo that would silently do nothing.
    let expiring = match app.store.policy_current().await {
        Ok(Some(p)) => veto_policy::Policy::compile(&p.text).ok().and_then(|p| {
            p.document()
                .rules
                .iter()
                .find(|x| x.id.as_str() == r.rule)
                .map(|x| x.expire_if_unused.is_some())
        }),
        Ok(None) => None,
        Err(e) => return crate::api::store_error(e),
    };
    match expiring {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                format!("the policy in force has no rule `{}`", r.rule),
            );
        }
        Some(false) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "rule `{}` has no expire_if_unused: there is nothing to renew",
                    r.rule
                ),
            );
        }
        Some(true) => {}
    }
    if r.machine.trim().is_empty() || r.machine == "*" {
        return error(
            StatusCode::BAD_REQUEST,
            "a renewal names a machine (`*` in the review stands for every machine that never used the grant)",
        );
    }
    match app
        .store
        .grant_renew(r.rule.clone(), r.machine.clone(), who.actor(), r.reason)
        .await
    {
        Ok(at) => Json(serde_json::json!({
            "rule": r.rule,
            "machine": r.machine,
            "last_used": veto_identity::format_time(at),
        }))
        .into_response(),
        Err(e) => crate::api::store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_wait_a_quarter_of_the_shortest_idle_period_within_bounds() {
        let r = |idle| Expiring {
            rule: "r".into(),
            idle,
        };
        assert_eq!(hold(&[]), MAX_HOLD);
        assert_eq!(hold(&[r(8)]), Duration::from_secs(2));
        assert_eq!(hold(&[r(30 * 86_400), r(20)]), Duration::from_secs(5));
        assert_eq!(hold(&[r(1)]), EVERY);
        assert_eq!(hold(&[r(3600)]), MAX_HOLD);
    }
}
