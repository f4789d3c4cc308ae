//! The admin listener: the dashboard, the live decision stream (SSE),
//! queries, inventory, the policy in force, opt-outs, the change log,
//! access review and Prometheus metrics.
//!
//! Every route but `/health` and the dashboard's static files needs a
//! credential (`auth.rs`): `Authorization: Bearer <token>` or a dashboard
//! session cookie. The admin token (`DATA/admin.token`) is the operator;
//! the viewer token (`DATA/viewer.token`) reads only. Both are made on
//! first start (mode 0600) so that tools on the same machine (`veto tail`)
//! and people find them; the listener keeps only their SHA-256 and compares
//! in constant time.

mod auth;
pub mod explain;
mod insight;
mod optouts;
mod token;
mod ui;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::stream::{Stream, StreamExt};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use veto_audit::Filter;
use veto_proxy::Shared;

pub use auth::{CSRF_HEADER, Role};
pub use token::{TokenError, load_or_create, load_or_create_viewer, token_path, viewer_token_path};

pub struct Admin {
    pub shared: Arc<Shared>,
    pub control: Arc<veto_control::Store>,
    pub data: PathBuf,
    token_hash: [u8; 32],
    viewer_hash: [u8; 32],
    sessions: auth::Sessions,
}

impl Admin {
    /// `token`: the operator's (admin) token; `viewer`: the read-only one.
    pub fn new(
        shared: Arc<Shared>,
        control: Arc<veto_control::Store>,
        data: PathBuf,
        token: &str,
        viewer: &str,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            shared,
            control,
            data,
            token_hash: token::hash(token),
            viewer_hash: token::hash(viewer),
            sessions: auth::Sessions::default(),
        })
    }
}

/// Filters as query parameters, the same as `veto audit query`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct FilterQuery {
    decision: Option<String>,
    machine: Option<String>,
    host: Option<String>,
    rule: Option<String>,
    /// Seconds back from now.
    since: Option<u64>,
    /// Most records to return (newest last), for `/v1/decisions`.
    limit: Option<usize>,
}

impl FilterQuery {
    fn filter(&self) -> Filter {
        let now = veto_audit::now().0 as i64;
        Filter {
            decision: self.decision.clone(),
            machine: self.machine.clone(),
            host: self.host.clone(),
            rule: self.rule.clone(),
            since_ms: self.since.map(|s| now - (s as i64) * 1000),
        }
    }
}

pub(crate) fn bad(reason: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"error": "bad request", "reason": reason.to_string()})),
    )
        .into_response()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({"error": "internal", "reason": e.to_string()})),
    )
        .into_response()
}

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        admin.shared.metrics.render(admin.shared.writer.counts()),
    )
        .into_response()
}

async fn policy(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let active = admin.shared.policy.load();
    Json(serde_json::json!({
        "hash": active.policy.hash(),
        "rules": active.policy.document().rules.len(),
        "warnings": active.policy.warnings().iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Recent records from the store (read on a blocking thread, off the
/// proxy's request path).
async fn decisions(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<FilterQuery>,
) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let path = veto_audit::db_path(&admin.data);
    let filter = q.filter();
    let limit = q.limit.unwrap_or(200).min(10_000);
    let read = tokio::task::spawn_blocking(move || {
        let conn = veto_audit::open_ro(&path)?;
        let mut out = std::collections::VecDeque::with_capacity(limit);
        veto_audit::query(&conn, &filter, |r| {
            if out.len() == limit {
                out.pop_front();
            }
            out.push_back(r);
            Ok(())
        })?;
        Ok::<_, veto_audit::AuditError>(out.into_iter().collect::<Vec<_>>())
    })
    .await;
    match read {
        Ok(Ok(records)) => Json(records).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

async fn inventory(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    let path = veto_audit::db_path(&admin.data);
    let read = tokio::task::spawn_blocking(move || {
        let conn = veto_audit::open_ro(&path)?;
        veto_audit::inventory(&conn)
    })
    .await;
    match read {
        Ok(Ok(rows)) => Json(rows).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// The live stream: one `decision` event per committed decision matching
/// the filters; a watcher that fell behind gets a `skipped` event with how
/// many it missed. The proxy never waits for a watcher.
fn live(
    admin: &Admin,
    filter: Filter,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + use<> {
    BroadcastStream::new(admin.shared.writer.subscribe()).filter_map(move |item| {
        let event = match item {
            Ok(record) if filter.matches(&record) => {
                Event::default().event("decision").json_data(&*record).ok()
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                Some(Event::default().event("skipped").data(n.to_string()))
            }
        };
        std::future::ready(event.map(Ok))
    })
}

async fn stream(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<FilterQuery>,
) -> Response {
    if let Err(r) = auth::read(&admin, &headers) {
        return r.into_response();
    }
    Sse::new(live(&admin, q.filter()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/assets/{file}", get(ui::asset))
        .route("/v1/login", post(auth::login))
        .route("/v1/logout", post(auth::logout))
        .route("/v1/whoami", get(auth::whoami))
        .route("/v1/optouts", get(optouts::list).post(optouts::add))
        .route("/v1/optouts/{id}", delete(optouts::remove))
        .route("/v1/changes", get(optouts::changes))
        .route("/v1/explain", get(insight::explain))
        .route("/v1/stats", get(insight::stats))
        .route("/v1/machines", get(insight::machines))
        .route("/v1/grants", get(insight::grants))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/policy", get(policy))
        .route("/v1/decisions", get(decisions))
        .route("/v1/decisions/stream", get(stream))
        .route("/v1/inventory", get(inventory))
        .with_state(admin)
}

/// Serves the admin API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(shutdown)
        .await
}
