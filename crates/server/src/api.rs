//! The control plane's HTTP API (JSON; described by `openapi.json`, served
//! at `/openapi.json`). People and scripts use admin tokens with roles
//! (viewer reads, operator changes policy and opt-outs, admin also enrolls
//! agents); agents use their own tokens and only dial out: they hold the
//! config stream open and post audit batches and status.

use crate::auth::{self, Role};
use crate::store::{Entry, Store, StoreError, Target};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::watch;

pub struct App {
    pub store: Store,
    pub tokens: auth::Tokens,
    /// The config agents enforce, as sent: policy and opt-outs in force.
    pub config: watch::Receiver<Arc<String>>,
    /// The fleet's grant uses, as the `grants` event (`grants.rs`).
    pub grants: watch::Receiver<Arc<String>>,
}

type Shared = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(|| async { "ok" }))
        .route("/v1/whoami", get(whoami))
        .route("/openapi.json", get(openapi))
        .route("/v1/policy", get(policy_get).post(policy_push))
        .route("/v1/policy/versions", get(policy_versions))
        .route("/v1/policy/rollback", post(policy_rollback))
        .route("/v1/optouts", get(optouts).post(optout_add))
        .route("/v1/optouts/{id}", delete(optout_remove))
        .route("/v1/changes", get(changes))
        .route("/v1/agents", get(agents).post(agent_add))
        .route("/v1/machines", get(machines).post(machine_add))
        .route("/v1/machines/{name}/rotate", post(machine_rotate))
        .route("/v1/machines/{name}/revoke", post(machine_revoke))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/access", get(crate::grants::review))
        .route("/v1/grants/renew", post(crate::grants::renew))
        .route("/v1/agent/config", get(agent_config))
        .route("/v1/agent/audit", post(agent_audit))
        .route("/v1/agent/status", post(agent_status))
        // Agents cap their audit batches at 1 MiB; leave room for JSON.
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(app)
}

pub const OPENAPI: &str = include_str!("openapi.json");

/// The dashboard: one page, embedded, no external asset; it reads and
/// changes everything through this API with the token pasted into it.
const DASHBOARD: &str = include_str!("ui.html");

async fn dashboard() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

pub fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "reason": reason.to_string(),
    });
    (status, Json(body)).into_response()
}

/// A JSON request body, or the 400 that says what was expected.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{expected}: {e}")))
}

/// As [`json`], an empty body meaning the defaults.
fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    expected: &str,
) -> Result<T, Response> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        json(body, expected)
    }
}

pub(crate) fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(why) => error(StatusCode::BAD_REQUEST, why),
        StoreError::NotFound(what) => error(StatusCode::NOT_FOUND, format!("no {what}")),
        StoreError::Conflict(why) => error(StatusCode::CONFLICT, why),
        other => {
            tracing::error!(error = %other, "control store failed");
            error(StatusCode::SERVICE_UNAVAILABLE, other)
        }
    }
}

macro_rules! need {
    ($app:expr, $headers:expr, $role:expr) => {
        match $app.tokens.check(&$headers, $role) {
            Ok(who) => who,
            Err(r) => return r,
        }
    };
}

async fn policy_get(State(app): Shared, h: HeaderMap) -> Response {
    need!(app, h, Role::Viewer);
    match app.store.policy_current().await {
        Ok(Some(p)) => Json(p).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no policy has been pushed yet"),
        Err(e) => store_error(e),
    }
}

async fn policy_versions(State(app): Shared, h: HeaderMap) -> Response {
    need!(app, h, Role::Viewer);
    match app.store.policy_versions().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct Push {
    text: String,
    reason: String,
}

/// Validates a policy text as `veto policy check` does: refused whole,
/// with every problem.
fn validate(text: &str) -> Result<String, Response> {
    veto_policy::Policy::compile(text)
        .map(|p| p.hash().to_string())
        .map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(|d| format!("policy:{d}")).collect();
            error(
                StatusCode::BAD_REQUEST,
                format!("the policy is not valid:\n{}", lines.join("\n")),
            )
        })
}

async fn policy_push(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = need!(app, h, Role::Operator);
    let push: Push = match json(&body, "expected {{text, reason}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    if push.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "a policy push needs a reason");
    }
    let hash = match validate(&push.text) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match app
        .store
        .policy_push(push.text, hash, who.actor(), push.reason, "policy.push")
        .await
    {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct Rollback {
    version: i64,
    reason: String,
}

async fn policy_rollback(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = need!(app, h, Role::Operator);
    let rb: Rollback = match json(&body, "expected {{version, reason}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    if rb.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "a rollback needs a reason");
    }
    let old = match app.store.policy_version(rb.version).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no policy version {}", rb.version),
            );
        }
        Err(e) => return store_error(e),
    };
    let reason = format!("rollback to version {}: {}", rb.version, rb.reason.trim());
    match app
        .store
        .policy_push(old.text, old.hash, who.actor(), reason, "policy.rollback")
        .await
    {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => store_error(e),
    }
}

async fn optouts(State(app): Shared, h: HeaderMap) -> Response {
    need!(app, h, Role::Viewer);
    match app.store.optouts().await {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct NewOptOut {
    host: Option<String>,
    service: Option<String>,
    machine: Option<String>,
    reason: String,
    /// Seconds from now.
    expires: Option<u64>,
}

async fn optout_add(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = need!(app, h, Role::Operator);
    let req: NewOptOut = match json(&body, "invalid opt-out") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let target = match (req.host, req.service, req.machine) {
        (Some(h), None, None) => Target::Host(h),
        (None, Some(s), None) => Target::Service(s),
        (None, None, Some(m)) => Target::Machine(m),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "an opt-out names exactly one of host, service or machine",
            );
        }
    };
    // What the policy in force could not enforce is refused before it is
    // stored (an unknown service, a bad host pattern).
    if let Ok(Some(current)) = app.store.policy_current().await
        && let Ok(policy) = veto_policy::Policy::compile(&current.text)
    {
        let spec = veto_policy::OptOutSpec {
            rule_id: "optout-0",
            kind: target.kind(),
            value: target.value(),
            reason: &req.reason,
        };
        if let Err(why) = policy.check_optout(&spec) {
            return error(StatusCode::BAD_REQUEST, why);
        }
    }
    let expires = req
        .expires
        .map(|s| crate::store::unix_now().saturating_add(s as i64));
    match app
        .store
        .optout_add(target, req.reason, expires, who.actor())
        .await
    {
        Ok(o) => (StatusCode::CREATED, Json(o)).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct RemoveQuery {
    reason: Option<String>,
}

async fn optout_remove(
    State(app): Shared,
    h: HeaderMap,
    Path(id): Path<u32>,
    Query(q): Query<RemoveQuery>,
) -> Response {
    let who = need!(app, h, Role::Operator);
    match app
        .store
        .optout_remove(id, q.reason.unwrap_or_default(), who.actor())
        .await
    {
        Ok(o) => Json(o).into_response(),
        Err(e) => store_error(e),
    }
}

async fn changes(State(app): Shared, h: HeaderMap) -> Response {
    need!(app, h, Role::Viewer);
    match app.store.changes().await {
        Ok(c) => Json(c).into_response(),
        Err(e) => store_error(e),
    }
}

/// Agents, and per env whether they all enforce the same policy hash.
async fn agents(State(app): Shared, h: HeaderMap) -> Response {
    need!(app, h, Role::Viewer);
    let list = match app.store.agents().await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    let mut envs: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for a in &list {
        envs.entry(a.env.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .insert(a.policy_hash.clone().unwrap_or_else(|| "none".into()));
    }
    let envs: serde_json::Map<String, serde_json::Value> = envs
        .into_iter()
        .map(|(env, hashes)| {
            let consistent = hashes.len() == 1;
            (
                env,
                serde_json::json!({"hashes": hashes, "consistent": consistent}),
            )
        })
        .collect();
    Json(serde_json::json!({"agents": list, "envs": envs})).into_response()
}

#[derive(serde::Deserialize)]
struct NewAgent {
    name: String,
    env: Option<String>,
}

async fn agent_add(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = need!(app, h, Role::Admin);
    let req: NewAgent = match json(&body, "expected {{name, env}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let valid = !req.name.is_empty()
        && req.name.len() <= 128
        && req
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            "an agent name is letters, digits, `.`, `_` and `-`, at most 128",
        );
    }
    match app
        .store
        .agent_add(req.name.clone(), req.env, who.actor())
        .await
    {
        Ok(token) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"name": req.name, "token": token})),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    agent: String,
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

async fn audit(State(app): Shared, h: HeaderMap, Query(q): Query<AuditQuery>) -> Response {
    need!(app, h, Role::Viewer);
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    match app.store.audit_entries(q.agent, q.after, limit).await {
        Ok(e) => Json(e).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct AgentQuery {
    agent: String,
}

/// An agent's shipped chain walked and held to its signed head.
async fn audit_verify(State(app): Shared, h: HeaderMap, Query(q): Query<AgentQuery>) -> Response {
    need!(app, h, Role::Viewer);
    match app.store.audit_verify(q.agent).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => store_error(e),
    }
}

/// The agent a request's bearer token belongs to.
async fn agent_of(app: &App, h: &HeaderMap) -> Result<String, Response> {
    let token = auth::bearer(h).ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "an agent token is needed (Authorization: Bearer)",
        )
    })?;
    match app.store.agent_by_token(token).await {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(error(StatusCode::UNAUTHORIZED, "unknown agent token")),
        Err(e) => Err(store_error(e)),
    }
}

/// The config stream: the current config and the fleet's grant uses at
/// once, then every change of either (`config` and `grants` events).
async fn agent_config(State(app): Shared, h: HeaderMap) -> Response {
    if let Err(r) = agent_of(&app, &h).await {
        return r;
    }
    use tokio_stream::StreamExt as _;
    use tokio_stream::wrappers::WatchStream;
    let event = |name: &'static str| {
        move |data: Arc<String>| {
            Ok::<_, std::convert::Infallible>(Event::default().event(name).data(data.as_str()))
        }
    };
    let config = WatchStream::new(app.config.clone()).map(event("config"));
    let grants = WatchStream::new(app.grants.clone()).map(event("grants"));
    let events = config.merge(grants);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

#[derive(serde::Deserialize)]
struct Batch {
    entries: Vec<Entry>,
    /// The agent's signed chain head, held to the one stored for it.
    #[serde(default)]
    head: Option<veto_audit::head::SignedHead>,
}

async fn agent_audit(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let agent = match agent_of(&app, &h).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let batch: Batch = match json(&body, "expected {{entries}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app
        .store
        .audit_ingest(agent, batch.entries, batch.head)
        .await
    {
        Ok(acked) => Json(serde_json::json!({"acked": acked})).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct Status {
    version: String,
    policy_hash: Option<String>,
    #[serde(default)]
    spool: i64,
    /// Machines that used their credentials since the last report.
    #[serde(default)]
    uses: Vec<MachineUse>,
    /// Grants applied since the last report.
    #[serde(default)]
    grant_uses: Vec<GrantUseReport>,
}

#[derive(serde::Deserialize)]
struct GrantUseReport {
    rule: String,
    machine: String,
    at: i64,
}

#[derive(serde::Deserialize)]
struct MachineUse {
    machine: String,
    at: i64,
}

async fn machines(State(app): Shared, h: HeaderMap) -> Response {
    need!(app, h, Role::Viewer);
    match app.store.machines().await {
        Ok(m) => Json(m).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct NewMachine {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    env: Option<String>,
    /// Seconds.
    ttl: Option<i64>,
    idle_ttl: Option<i64>,
    #[serde(default)]
    reason: String,
}

fn reason_or(r: &str) -> String {
    if r.trim().is_empty() {
        "no reason given".into()
    } else {
        r.trim().to_string()
    }
}

async fn machine_add(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = need!(app, h, Role::Operator);
    let m: NewMachine = match json(&body, "invalid machine") {
        Ok(v) => v,
        Err(r) => return r,
    };
    if m.ttl.is_some_and(|t| t <= 0) || m.idle_ttl.is_some_and(|t| t <= 0) {
        return error(
            StatusCode::BAD_REQUEST,
            "ttl and idle_ttl are at least one second",
        );
    }
    match app
        .store
        .machine_add(
            m.name.clone(),
            m.roles,
            m.env,
            m.ttl,
            m.idle_ttl,
            who.actor(),
            reason_or(&m.reason),
        )
        .await
    {
        Ok(token) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"name": m.name, "token": token})),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct Rotate {
    /// Seconds the old token keeps working.
    #[serde(default)]
    overlap: i64,
    #[serde(default)]
    reason: String,
}

async fn machine_rotate(
    State(app): Shared,
    h: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let who = need!(app, h, Role::Operator);
    let r: Rotate = match json_or_default(&body, "expected {{overlap, reason}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app
        .store
        .machine_rotate(
            name.clone(),
            r.overlap.max(0),
            who.actor(),
            reason_or(&r.reason),
        )
        .await
    {
        Ok(token) => Json(serde_json::json!({"name": name, "token": token})).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct Revoke {
    #[serde(default)]
    reason: String,
}

async fn machine_revoke(
    State(app): Shared,
    h: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let who = need!(app, h, Role::Operator);
    let r: Revoke = match json_or_default(&body, "expected {{reason}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app
        .store
        .machine_revoke(name.clone(), who.actor(), reason_or(&r.reason))
        .await
    {
        Ok(()) => Json(serde_json::json!({"name": name, "revoked": true})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn agent_status(State(app): Shared, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let agent = match agent_of(&app, &h).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let s: Status = match json(&body, "expected {{version, policy_hash, spool}}") {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !s.uses.is_empty() {
        // An agent reports what it saw; a time in the future is clamped
        // to now, so no agent can keep a machine alive ahead of time.
        let now = crate::store::unix_now();
        let uses = s
            .uses
            .into_iter()
            .map(|u| (u.machine, u.at.min(now)))
            .collect();
        if let Err(e) = app.store.machine_uses(uses).await {
            return store_error(e);
        }
    }
    if !s.grant_uses.is_empty() {
        let now = crate::store::unix_now();
        let uses = s
            .grant_uses
            .into_iter()
            .map(|u| crate::store::GrantUse {
                rule: u.rule,
                machine: u.machine,
                last_used: u.at.min(now),
            })
            .collect();
        if let Err(e) = app.store.grant_uses(uses).await {
            return store_error(e);
        }
    }
    match app
        .store
        .agent_report(agent, s.version, s.policy_hash, s.spool)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn whoami(State(app): Shared, h: HeaderMap) -> Response {
    let who = need!(app, h, Role::Viewer);
    Json(serde_json::json!({ "role": who.actor() })).into_response()
}
