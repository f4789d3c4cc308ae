//! What the dashboard asks beyond the raw records: per-minute counts and
//! top refusals (`/v1/stats`), the policy trace of one record
//! (`/v1/explain`), and the machines for the access review
//! (`/v1/machines`). Every store is read on a blocking thread, off the
//! proxy's request path, through read-only connections.
//!
//! The SQL reads the audit chain's filter columns (copies of the hashed
//! body that `veto audit verify` checks) so that counting an hour of
//! traffic does not parse every record.

use crate::{Admin, auth, bad, explain, internal};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use veto_audit::{AuditError, Completed, Decided, Record};

#[derive(Debug, Default, serde::Deserialize)]
pub struct StatsQuery {
    /// Seconds back from now; default an hour.
    window: Option<u64>,
}

/// Top lists are this long.
const TOP: usize = 10;

/// The width of a chart bar: a minute up to two hours, then wider so a
/// chart never has more than 120 bars.
fn bucket_secs(window: u64) -> u64 {
    if window <= 7200 {
        60
    } else {
        window.div_ceil(120).div_ceil(60) * 60
    }
}

fn sql(e: rusqlite::Error) -> AuditError {
    AuditError::Sqlite(e.to_string())
}

/// Counts per bucket and decision (plus allowed requests that report mode
/// let through and full enforcement would refuse), and the top refused
/// destinations and refusing rules of the window.
fn stats_of(conn: &Connection, window: u64, now_ms: i64) -> Result<Value, AuditError> {
    let bucket = bucket_secs(window);
    let bucket_ms = bucket as i64 * 1000;
    let n = window.div_ceil(bucket).max(1) as i64;
    // Buckets end with the current, still filling one.
    let end = (now_ms / bucket_ms + 1) * bucket_ms;
    let start = end - n * bucket_ms;
    let mut series: BTreeMap<&str, Vec<u64>> = ["allow", "deny", "redact", "would_deny"]
        .into_iter()
        .map(|k| (k, vec![0; n as usize]))
        .collect();
    let mut st = conn
        .prepare(
            "SELECT (time_ms - ?1) / ?2, decision, json_extract(body, '$.would') = 'deny', COUNT(*)
             FROM chain WHERE kind = 0 AND time_ms >= ?1 GROUP BY 1, 2, 3",
        )
        .map_err(sql)?;
    let mut rows = st.query([start, bucket_ms]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let (i, decision, would_deny, count): (i64, String, Option<bool>, i64) = (
            r.get(0).map_err(sql)?,
            r.get(1).map_err(sql)?,
            r.get(2).map_err(sql)?,
            r.get(3).map_err(sql)?,
        );
        let Some(i) = usize::try_from(i).ok().filter(|i| *i < n as usize) else {
            continue;
        };
        if let Some(s) = series.get_mut(decision.as_str()) {
            s[i] += count as u64;
        }
        if would_deny == Some(true) && decision != "deny" {
            series.get_mut("would_deny").expect("made above")[i] += count as u64;
        }
    }
    let mut dest = conn
        .prepare(
            "SELECT host, port, COUNT(*), MAX(time_ms) FROM chain
             WHERE kind = 0 AND time_ms >= ?1 AND decision = 'deny'
             GROUP BY host, port ORDER BY 3 DESC, 4 DESC LIMIT ?2",
        )
        .map_err(sql)?;
    let destinations = dest
        .query_map([start, TOP as i64], |r| {
            Ok(json!({
                "host": r.get::<_, String>(0)?,
                "port": r.get::<_, i64>(1)?,
                "count": r.get::<_, i64>(2)?,
            }))
        })
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    let mut rules = conn
        .prepare(
            "SELECT rule, COUNT(*), MAX(time_ms) FROM chain
             WHERE kind = 0 AND time_ms >= ?1 AND decision = 'deny'
             GROUP BY rule ORDER BY 2 DESC, 3 DESC LIMIT ?2",
        )
        .map_err(sql)?;
    let rules = rules
        .query_map([start, TOP as i64], |r| {
            Ok(json!({ "rule": r.get::<_, String>(0)?, "count": r.get::<_, i64>(1)? }))
        })
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    let totals: BTreeMap<&str, u64> = series
        .iter()
        .map(|(k, v)| (*k, v.iter().sum::<u64>()))
        .collect();
    Ok(json!({
        "window": window,
        "bucket": bucket_ms / 1000,
        "start": veto_audit::format_time(start as u64),
        "start_ms": start,
        "series": series,
        "totals": totals,
        "top_refused_destinations": destinations,
        "top_refusing_rules": rules,
    }))
}

/// `GET /v1/stats?window=SECONDS` (default 3600, at most 7 days).
pub async fn stats(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<StatsQuery>,
) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let window = q.window.unwrap_or(3600).clamp(60, 7 * 86_400);
    let path = veto_audit::db_path(&admin.data);
    let now_ms = veto_audit::now().0 as i64;
    let read = tokio::task::spawn_blocking(move || {
        let conn = veto_audit::open_ro(&path)?;
        stats_of(&conn, window, now_ms)
    })
    .await;
    match read {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// One record by id, merged with its completion, as every reader shows it.
fn record(conn: &Connection, id: &str) -> Result<Option<Record>, AuditError> {
    let mut st = conn
        .prepare(
            "SELECT d.body, d.prev, d.hash, c.body FROM chain d
             LEFT JOIN chain c ON c.rid = d.rid AND c.kind = 1
             WHERE d.kind = 0 AND d.rid = ?1",
        )
        .map_err(sql)?;
    let mut rows = st.query([id]).map_err(sql)?;
    let Some(row) = rows.next().map_err(sql)? else {
        return Ok(None);
    };
    let corrupt = |e: serde_json::Error| AuditError::Corrupt(e.to_string());
    let d: Decided =
        serde_json::from_str(&row.get::<_, String>(0).map_err(sql)?).map_err(corrupt)?;
    let done: Option<Completed> = match row.get::<_, Option<String>>(3).map_err(sql)? {
        Some(b) => Some(serde_json::from_str(&b).map_err(corrupt)?),
        None => None,
    };
    Ok(Some(Record::merge(
        d,
        done,
        row.get(1).map_err(sql)?,
        row.get(2).map_err(sql)?,
    )))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ExplainQuery {
    id: Option<String>,
}

/// `GET /v1/explain?id=RECORD_ID`: the record from the store and the trace
/// of the policy in force for the request it describes. When the record
/// was decided under another policy, `same_policy` is false: the trace
/// says why the rules in force now decide as they do.
pub async fn explain(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<ExplainQuery>,
) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let Some(id) = q.id.filter(|i| !i.is_empty()) else {
        return bad("give the record's id: /v1/explain?id=RECORD_ID");
    };
    let path = veto_audit::db_path(&admin.data);
    let read = tokio::task::spawn_blocking(move || {
        let conn = veto_audit::open_ro(&path)?;
        record(&conn, &id).map(|r| (id, r))
    })
    .await;
    let rec = match read {
        Ok(Ok((_, Some(r)))) => r,
        Ok(Ok((id, None))) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not found", "reason": format!("no record {id}")})),
            )
                .into_response();
        }
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let active = admin.shared.policy.load();
    let policy = &active.policy;
    let rebuilt = match explain::Rebuilt::new(policy, &rec) {
        Ok(r) => r,
        Err(why) => return bad(why),
    };
    let explained = explain::explain(policy, &rebuilt, &admin.shared.grants);
    Json(json!({
        "same_policy": rec.policy == policy.hash(),
        "record": rec,
        "explain": explained,
    }))
    .into_response()
}

/// `GET /v1/machines`: every registration for the access review, never a
/// token or its hash. Times as RFC 3339, plus seconds until expiry and
/// since last use so the page can sort and highlight without clocks.
pub async fn machines(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let data = admin.data.clone();
    let read = tokio::task::spawn_blocking(move || {
        // Looking creates nothing: no store yet is no machine.
        if !veto_identity::db_path(&data).exists() {
            return Ok(Vec::new());
        }
        veto_identity::Store::open(&data)?.list()
    })
    .await;
    let list = match read {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let now = veto_audit::now().0 as i64 / 1000;
    let time = |t: Option<i64>| t.map(veto_policy::format_time);
    let out: Vec<Value> = list
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "roles": m.roles,
                "env": m.env,
                "state": m.state(now),
                "created": veto_policy::format_time(m.created),
                "expires": time(m.expires),
                "expires_in_secs": m.expires.map(|e| e - now),
                "idle_ttl_secs": m.idle_ttl,
                "last_used": time(m.last_used),
                "idle_secs": m.last_used.map(|u| now - u),
                "revoked": time(m.revoked_at),
            })
        })
        .collect();
    Json(out).into_response()
}

/// `GET /v1/grants`: every `expire_if_unused` grant of the policy in force,
/// per machine that used it, with its idle time and when it lapses; and, for
/// machines that never used it, when it lapses counted from its first load.
pub async fn grants(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    use veto_policy::Grants;
    let now = veto_audit::now().0 as i64 / 1000;
    let active = admin.shared.policy.load();
    let uses = admin.shared.grants.uses();
    let mut out: Vec<Value> = Vec::new();
    for rule in active.policy.document().rules.iter() {
        let Some(idle_limit) = rule.expire_if_unused else {
            continue;
        };
        let limit = i64::try_from(idle_limit).unwrap_or(i64::MAX);
        let row = |machine: Option<&str>, since: i64, used: bool| {
            let idle = (now - since).max(0);
            json!({
                "rule": rule.id,
                "machine": machine,
                "last_used": used.then(|| veto_policy::format_time(since)),
                "counting_from": veto_policy::format_time(since),
                "idle_secs": idle,
                "expire_if_unused_secs": limit,
                "expires_in_secs": limit.saturating_sub(idle),
                "state": if idle >= limit { "expired" } else { "active" },
            })
        };
        for (r, machine, last) in uses.iter().filter(|(r, ..)| *r == rule.id) {
            let _ = r;
            out.push(row(Some(machine), *last, true));
        }
        let loaded = admin.shared.grants.first_loaded(&rule.id).unwrap_or(now);
        out.push(row(None, loaded, false));
    }
    Json(out).into_response()
}
