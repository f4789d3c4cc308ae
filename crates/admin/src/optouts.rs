//! Runtime opt-outs and the change log over HTTP. Reading needs any
//! credential; adding and removing need the operator (`auth::change`).

use crate::{Admin, auth, bad, internal};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// `POST /v1/optouts`: exactly one of host, service, machine; a reason;
/// optionally `expires` (seconds from now).
#[derive(Debug, serde::Deserialize)]
pub struct NewOptOut {
    host: Option<String>,
    service: Option<String>,
    machine: Option<String>,
    reason: String,
    expires: Option<u64>,
}

/// Re-reads the opt-outs in force and applies them to the proxy at once,
/// in the policy owner's turn (read inside it, so a set read before
/// another change can never be stored after it).
async fn apply_optouts(admin: &Arc<Admin>) -> Result<(), Response> {
    let a = admin.clone();
    let read = Box::new(move || {
        let now = veto_audit::now().0 as i64 / 1000;
        let list = a.control.list().map_err(|e| e.to_string())?;
        Ok(list
            .into_iter()
            .filter(|o| o.in_force(now))
            .map(|o| veto_proxy::OwnedOptOut {
                rule_id: o.rule_id(),
                kind: o.target.kind().to_string(),
                value: o.target.value().to_string(),
                reason: o.reason,
            })
            .collect())
    });
    admin
        .shared
        .change(veto_proxy::owner::Change::OptOuts(read), "admin")
        .await
        .map(|_| ())
        .map_err(internal)
}

pub async fn list(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let a = admin.clone();
    match tokio::task::spawn_blocking(move || a.control.list()).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

pub async fn add(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Who asks is checked before the body is read: a viewer hears 403
    // whatever it sent.
    let who = match auth::change(&admin, &headers) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let req: NewOptOut = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid opt-out: {e}")),
    };
    let target = match (req.host, req.service, req.machine) {
        (Some(h), None, None) => veto_control::Target::Host(h),
        (None, Some(s), None) => veto_control::Target::Service(s),
        (None, None, Some(m)) => veto_control::Target::Machine(m),
        _ => return bad("an opt-out names exactly one of host, service or machine"),
    };
    // Refuse what the policy could not enforce, before storing it.
    let spec = veto_policy::OptOutSpec {
        rule_id: "optout-0",
        kind: target.kind(),
        value: target.value(),
        reason: &req.reason,
    };
    if let Err(why) = admin.shared.policy.load().policy.check_optout(&spec) {
        return bad(why);
    }
    let now = veto_audit::now().0 as i64 / 1000;
    let expires = req.expires.map(|s| now + s as i64);
    let a = admin.clone();
    let added = tokio::task::spawn_blocking(move || {
        a.control.add(target, &req.reason, expires, who.actor())
    })
    .await;
    let optout = match added {
        Ok(Ok(o)) => o,
        Ok(Err(veto_control::ControlError::NoReason)) => return bad("an opt-out needs a reason"),
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    if let Err(r) = apply_optouts(&admin).await {
        return r;
    }
    (StatusCode::CREATED, Json(optout)).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RemoveQuery {
    reason: Option<String>,
}

pub async fn remove(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u32>,
    Query(q): Query<RemoveQuery>,
) -> Response {
    let who = match auth::change(&admin, &headers) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let a = admin.clone();
    let reason = q.reason.unwrap_or_default();
    let removed =
        tokio::task::spawn_blocking(move || a.control.remove(id, &reason, who.actor())).await;
    let optout =
        match removed {
            Ok(Ok(o)) => o,
            Ok(Err(veto_control::ControlError::Unknown(id))) => return (
                StatusCode::NOT_FOUND,
                Json(
                    serde_json::json!({"error": "not found", "reason": format!("no opt-out {id}")}),
                ),
            )
                .into_response(),
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
    if let Err(r) = apply_optouts(&admin).await {
        return r;
    }
    Json(optout).into_response()
}

pub async fn changes(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let a = admin.clone();
    match tokio::task::spawn_blocking(move || a.control.changes()).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
