//! Grants that expire when unused (policy-v1, "Permissions that expire"),
//! kept in the identity store so a restart neither forgets a use nor starts
//! an idle clock over:
//! - at start, uses and first loads are read back before the first request;
//! - uses are written in batches with the credential uses, never per request;
//! - renewals (`veto access renew`) reach the running proxy with the store's
//!   version, and each is recorded once in the audit trail;
//! - a grant that lapses is reported once, in the change log and in the
//!   audit trail, with its last use.

use std::sync::Arc;
use veto_identity::{GrantUse, Store};
use veto_proxy::Shared;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads what the store holds into the proxy's book. Blocking: called at
/// start, before the proxy serves, and from blocking tasks after.
pub fn load(shared: &Shared, store: &Store) -> Result<(), String> {
    let active = shared.policy.load();
    let ids = shared.grants.loaded(&active.policy, active.loaded_at);
    for (rule, at) in store
        .rules_loaded(&ids, active.loaded_at)
        .map_err(|e| e.to_string())?
    {
        shared.grants.merge_first_loaded(&rule, at);
    }
    for u in store.grant_uses().map_err(|e| e.to_string())? {
        shared.grants.merge(&u.rule, &u.machine, u.last_used);
    }
    Ok(())
}

/// Writes new uses and first loads. On failure the uses stay unwritten.
pub fn flush(shared: &Shared, store: &Store) -> Result<(), String> {
    let batch = shared.grants.take_unwritten();
    let uses: Vec<GrantUse> = batch
        .iter()
        .map(|(rule, machine, t)| GrantUse {
            rule: rule.clone(),
            machine: machine.clone(),
            last_used: *t,
        })
        .collect();
    if let Err(e) = store.record_grant_uses(&uses) {
        shared.grants.unwritten(batch);
        return Err(e.to_string());
    }
    load(shared, store)
}

/// A change the proxy itself reports: the audit event and the change log
/// entry (actor `veto`).
pub struct Report {
    pub event: &'static str,
    pub reason: String,
    pub detail: serde_json::Value,
    /// Marked as reported only once it is in the audit trail.
    done: Done,
}

enum Done {
    Expiry {
        rule: String,
        machine: String,
        since: i64,
    },
    Renewal(i64),
}

/// Grants that lapsed since the last sweep, each reported once.
pub fn lapsed(shared: &Shared, store: &Store) -> Result<Vec<Report>, String> {
    let now = unix_now();
    let active = shared.policy.load();
    let uses = shared.grants.uses();
    let mut out = Vec::new();
    for rule in active.policy.document().rules.iter() {
        let Some(idle) = rule.expire_if_unused else {
            continue;
        };
        let idle = idle as i64;
        let id = rule.id.as_str();
        let mut any = false;
        for (_, machine, last) in uses.iter().filter(|(r, _, _)| r == id) {
            any = true;
            if now - last >= idle
                && !store
                    .grant_expiry_reported(id, machine, *last)
                    .map_err(|e| e.to_string())?
            {
                out.push(expired(id, machine, Some(*last), *last, *last + idle, idle));
            }
        }
        // Never used by anyone: it lapsed for every machine at once.
        let first = veto_policy::Grants::first_loaded(&shared.grants, id);
        if let (false, Some(first)) = (any, first)
            && now - first >= idle
            && !store
                .grant_expiry_reported(id, "*", first)
                .map_err(|e| e.to_string())?
        {
            out.push(expired(id, "*", None, first, first + idle, idle));
        }
    }
    Ok(out)
}

fn expired(rule: &str, machine: &str, last: Option<i64>, since: i64, at: i64, idle: i64) -> Report {
    let fmt = veto_identity::format_time;
    let who = if machine == "*" {
        "every machine (never used since it was loaded)".to_string()
    } else {
        format!("machine `{machine}`")
    };
    Report {
        done: Done::Expiry {
            rule: rule.to_string(),
            machine: machine.to_string(),
            since,
        },
        event: "grant-expired",
        reason: format!(
            "grant `{rule}` expired for {who}: unused for {} (last used {})",
            veto_policy::format_duration(idle as u64),
            last.map_or_else(|| "never".to_string(), fmt)
        ),
        detail: serde_json::json!({
            "rule": rule,
            "machine": machine,
            "last_used": last.map(fmt),
            "expired_at": fmt(at),
        }),
    }
}

/// Renewals not yet in the audit trail.
pub fn renewals(store: &Store) -> Result<Vec<Report>, String> {
    let seen = store.renewals_audited().map_err(|e| e.to_string())?;
    let new = store.renewals_after(seen).map_err(|e| e.to_string())?;
    Ok(new
        .into_iter()
        .map(|r| Report {
            done: Done::Renewal(r.seq),
            event: "grant-renewed",
            reason: r.reason.clone(),
            detail: serde_json::json!({
                "rule": r.rule,
                "machine": r.machine,
                "at": veto_identity::format_time(r.at),
                "actor": r.actor,
                "reason": r.reason,
            }),
        })
        .collect())
}

/// Writes reports to the audit trail (and expiries to the change log; a
/// renewal was logged there by whoever renewed it).
pub async fn report(
    shared: &Arc<Shared>,
    control: &Arc<veto_control::Store>,
    store: &Arc<Store>,
    reports: Vec<Report>,
) {
    for r in reports {
        let (ms, time) = veto_audit::now();
        let event = veto_audit::Event {
            id: veto_audit::new_id(ms),
            time,
            event: r.event.into(),
            detail: r.detail.clone(),
        };
        if let Err(e) = shared.writer.event(event, ms).await {
            // Not marked: the next sweep reports it again.
            tracing::error!(error = %e, "cannot record a grant event in the audit trail");
            return;
        }
        let (control, store) = (control.clone(), store.clone());
        let marked = tokio::task::spawn_blocking(move || -> Result<(), String> {
            match r.done {
                Done::Expiry {
                    rule,
                    machine,
                    since,
                } => {
                    control
                        .record(
                            "veto",
                            "grant.expire",
                            &r.reason,
                            &r.detail,
                            &serde_json::Value::Null,
                        )
                        .map_err(|e| e.to_string())?;
                    store
                        .grant_expired(&rule, &machine, since)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                // A renewal was logged in the change log by whoever renewed.
                Done::Renewal(seq) => store.set_renewals_audited(seq).map_err(|e| e.to_string()),
            }
        })
        .await;
        if let Ok(Err(e)) | Err(e) = marked.map_err(|e| e.to_string()) {
            tracing::error!(error = %e, "cannot mark a grant event as reported");
        }
    }
}
