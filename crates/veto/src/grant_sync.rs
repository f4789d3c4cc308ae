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
    let active = shared.policy.load();
    let rules = veto_identity::review::Expiring::of(&active.policy);
    let uses: Vec<GrantUse> = shared
        .grants
        .uses()
        .into_iter()
        .map(|(rule, machine, last_used)| GrantUse {
            rule,
            machine,
            last_used,
        })
        .collect();
    let first_loaded = rules
        .iter()
        .filter_map(|r| {
            veto_policy::Grants::first_loaded(&shared.grants, &r.rule).map(|t| (r.rule.clone(), t))
        })
        .collect();
    let mut out = Vec::new();
    for l in veto_identity::review::lapsed(&rules, &uses, &first_loaded, unix_now()) {
        if !store
            .grant_expiry_reported(&l.rule, &l.machine, l.since)
            .map_err(|e| e.to_string())?
        {
            out.push(expired(l));
        }
    }
    Ok(out)
}

fn expired(l: veto_identity::review::Lapse) -> Report {
    let fmt = veto_identity::format_time;
    Report {
        event: "grant-expired",
        reason: l.reason(),
        detail: serde_json::json!({
            "rule": l.rule,
            "machine": l.machine,
            "last_used": l.last_used.map(fmt),
            "expired_at": fmt(l.expired_at()),
        }),
        done: Done::Expiry {
            rule: l.rule,
            machine: l.machine,
            since: l.since,
        },
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
