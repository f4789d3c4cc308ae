//! `veto access review|renew|prune`: what access exists, when it was last
//! used, what expires soon, and cleaning up what nobody uses. Credentials
//! come from `DATA/identity.db`; grants are the policy's `expire_if_unused`
//! rules with the use the proxy recorded. Every change goes to the change
//! log (`DATA/control.db`) with who and why.

use std::io::Write;
use std::path::Path;
use veto_identity::review::{self, Row};
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

/// Everything to review: every credential and every grant, with last use
/// and expiry; expired first, then what expires soonest.
pub fn review(data: &Path, policy: &veto_policy::Policy, within: i64) -> Result<Vec<Row>, String> {
    let now = unix_now();
    let store = if db_path(data).exists() {
        Some(Store::open(data).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let Some(store) = store else {
        return Ok(review::review(
            &[],
            &review::Expiring::of(policy),
            &[],
            &Default::default(),
            now,
            within,
        ));
    };
    let credentials: Vec<review::CredentialUse> = store
        .list()
        .map_err(|e| e.to_string())?
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
    let uses = store.grant_uses().map_err(|e| e.to_string())?;
    let first_loaded = store
        .rules_loaded(&[], now)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    Ok(review::review(
        &credentials,
        &review::Expiring::of(policy),
        &uses,
        &first_loaded,
        now,
        within,
    ))
}

/// Prints review lines (as `veto_server::grants::row_json` makes them, or as the server
/// sends them): JSON lines, or a table.
pub fn write_review(
    rows: &[serde_json::Value],
    json: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if json {
        for r in rows {
            writeln!(out, "{r}")?;
        }
        return Ok(());
    }
    let field = |r: &serde_json::Value, k: &str, d: &str| r[k].as_str().unwrap_or(d).to_string();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                field(r, "state", "?"),
                field(r, "kind", "?"),
                field(r, "rule", "-"),
                field(r, "machine", "?"),
                field(r, "last_used", "never"),
                field(r, "expires_at", "never"),
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
