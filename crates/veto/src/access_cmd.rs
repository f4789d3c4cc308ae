//! `veto access review|renew|prune`: what access exists, when it was last
//! used, what expires soon, and cleaning up what nobody uses. Credentials
//! come from `DATA/identity.db`; grants are the policy's `expire_if_unused`
//! rules with the use the proxy recorded. Every change goes to the change
//! log (`DATA/control.db`) with who and why.

use std::io::Write;
use std::path::Path;
use veto_identity::{Store, db_path, format_time};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Who is changing things from the command line, for the change log.
pub fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

/// Appends to the change log under `data`.
pub fn log_change(
    data: &Path,
    action: &str,
    reason: &str,
    before: serde_json::Value,
    after: serde_json::Value,
) -> Result<(), String> {
    let control = veto_control::Store::open(data).map_err(|e| e.to_string())?;
    control
        .record(&actor(), action, reason, &before, &after)
        .map_err(|e| e.to_string())
}

/// One line of the review.
#[derive(Debug)]
pub struct Row {
    /// `credential` or `grant`.
    pub kind: &'static str,
    /// The grant's rule id; none for a credential.
    pub rule: Option<String>,
    /// `*`: every machine that never used the grant.
    pub machine: String,
    pub last_used: Option<String>,
    /// When it stops working if left unused (or at its ttl).
    pub expires_at: Option<String>,
    /// `expired`, `expiring` (within the window), `active`, `revoked`.
    pub state: &'static str,
    sort: i64,
}

fn state(expires: Option<i64>, now: i64, within: i64) -> &'static str {
    match expires {
        Some(e) if e <= now => "expired",
        Some(e) if e <= now + within => "expiring",
        _ => "active",
    }
}

/// Everything to review: every credential and every grant, with last use
/// and expiry; expired first, then what expires soonest.
pub fn review(data: &Path, policy: &veto_policy::Policy, within: i64) -> Result<Vec<Row>, String> {
    let now = unix_now();
    let mut rows = Vec::new();
    let store = if db_path(data).exists() {
        Some(Store::open(data).map_err(|e| e.to_string())?)
    } else {
        None
    };
    if let Some(store) = &store {
        for m in store.list().map_err(|e| e.to_string())? {
            let idle_end = m
                .idle_ttl
                .map(|i| m.last_used.unwrap_or(m.created).saturating_add(i));
            let expires = match (m.expires, idle_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let st = if m.revoked_at.is_some() {
                "revoked"
            } else {
                state(expires, now, within)
            };
            rows.push(Row {
                kind: "credential",
                rule: None,
                machine: m.name,
                last_used: m.last_used.map(format_time),
                expires_at: expires.map(format_time),
                state: st,
                sort: expires.unwrap_or(i64::MAX),
            });
        }
    }
    let uses = match &store {
        Some(s) => s.grant_uses().map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let first_loaded: std::collections::HashMap<String, i64> = match &store {
        Some(s) => s
            .rules_loaded(&[], now)
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect(),
        None => Default::default(),
    };
    for rule in &policy.document().rules {
        let Some(idle) = rule.expire_if_unused else {
            continue;
        };
        let idle = idle as i64;
        for u in uses.iter().filter(|u| u.rule == rule.id.as_str()) {
            let end = u.last_used.saturating_add(idle);
            rows.push(Row {
                kind: "grant",
                rule: Some(rule.id.to_string()),
                machine: u.machine.clone(),
                last_used: Some(format_time(u.last_used)),
                expires_at: Some(format_time(end)),
                state: state(Some(end), now, within),
                sort: end,
            });
        }
        // Machines that never used it: counted from the rule's first load
        // (now, if no proxy has loaded it yet).
        let end = first_loaded
            .get(rule.id.as_str())
            .copied()
            .unwrap_or(now)
            .saturating_add(idle);
        rows.push(Row {
            kind: "grant",
            rule: Some(rule.id.to_string()),
            machine: "*".into(),
            last_used: None,
            expires_at: Some(format_time(end)),
            state: state(Some(end), now, within),
            sort: end,
        });
    }
    let rank = |s: &str| match s {
        "expired" => 0,
        "expiring" => 1,
        "active" => 2,
        _ => 3,
    };
    rows.sort_by_key(|r| (rank(r.state), r.sort));
    Ok(rows)
}

pub fn write_review(rows: &[Row], json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        for r in rows {
            let j = serde_json::json!({
                "kind": r.kind,
                "rule": r.rule,
                "machine": r.machine,
                "last_used": r.last_used,
                "expires_at": r.expires_at,
                "state": r.state,
            });
            writeln!(out, "{j}")?;
        }
        return Ok(());
    }
    let or = |s: &Option<String>, d: &str| s.clone().unwrap_or_else(|| d.to_string());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.state.to_string(),
                r.kind.to_string(),
                or(&r.rule, "-"),
                r.machine.clone(),
                or(&r.last_used, "never"),
                or(&r.expires_at, "never"),
            ]
        })
        .collect();
    crate::table::write(
        out,
        &["STATE", "KIND", "RULE", "MACHINE", "LAST USED", "EXPIRES"],
        &table,
    )
}

/// Renews a grant: it counts as used now. The running proxy picks it up
/// within half a second; the renewal is in the change log and, once a
/// proxy has seen it, in the audit trail.
pub fn renew(
    data: &Path,
    policy: Option<&veto_policy::Policy>,
    rule: &str,
    machine: &str,
    reason: &str,
) -> Result<String, String> {
    if reason.trim().is_empty() {
        return Err("--reason must say why the grant is renewed".into());
    }
    if let Some(p) = policy {
        match p.document().rules.iter().find(|r| r.id.as_str() == rule) {
            None => return Err(format!("the policy has no rule `{rule}`")),
            Some(r) if r.expire_if_unused.is_none() => {
                return Err(format!(
                    "rule `{rule}` has no expire_if_unused: there is nothing to renew"
                ));
            }
            Some(_) => {}
        }
    }
    let store = Store::open(data).map_err(|e| e.to_string())?;
    let before = store
        .grant_uses()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|u| u.rule == rule && u.machine == machine)
        .map(|u| format_time(u.last_used));
    let r = store
        .renew_grant(rule, machine, &actor(), reason.trim())
        .map_err(|e| e.to_string())?;
    log_change(
        data,
        "grant.renew",
        reason.trim(),
        serde_json::json!({ "rule": rule, "machine": machine, "last_used": before }),
        serde_json::json!({ "rule": rule, "machine": machine, "last_used": format_time(r.at) }),
    )?;
    Ok(format_time(r.at))
}

/// Revokes credentials unused for `unused` seconds (never used: since
/// created). With `dry_run`, only says what it would revoke.
pub fn prune(
    data: &Path,
    unused: i64,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<usize, String> {
    if !db_path(data).exists() {
        return Ok(0);
    }
    let now = unix_now();
    let store = Store::open(data).map_err(|e| e.to_string())?;
    let stale: Vec<_> = store
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|m| m.revoked_at.is_none())
        .filter(|m| now - m.last_used.unwrap_or(m.created) >= unused)
        .collect();
    let limit = veto_policy::format_duration(unused as u64);
    for m in &stale {
        let since = m.last_used.map_or_else(
            || format!("never used (created {})", format_time(m.created)),
            |t| format!("last used {}", format_time(t)),
        );
        if dry_run {
            let _ = writeln!(out, "would revoke {}: {since}", m.name);
            continue;
        }
        store.revoke(&m.name).map_err(|e| e.to_string())?;
        log_change(
            data,
            "machine.revoke",
            &format!("unused for {limit} or more: {since} (veto access prune)"),
            serde_json::json!({ "machine": m.name, "last_used": m.last_used.map(format_time) }),
            serde_json::Value::Null,
        )?;
        let _ = writeln!(out, "revoked {}: {since}", m.name);
    }
    Ok(stale.len())
}
