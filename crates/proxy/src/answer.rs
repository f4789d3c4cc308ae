//! The answers veto gives itself (contract.md, "The proxy, as HTTP clients
//! see it"): refusals, credential failures and errors, each with a JSON
//! body people and programs can read and the `Veto-Request-Id` of its
//! audit record.
//!
//! Errors are classed as pingora does: downstream (the client's request is
//! bad: 4xx), upstream (the destination failed: 502/504) and internal
//! (veto cannot do its job, e.g. the audit store: 503).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// Marks an answer veto made before any record of the request existed
/// (a malformed request, bad credentials, a name that did not resolve).
/// The entry point that owns the request finds it, writes the record and
/// gives the answer again with the record's id: every answer has a record.
#[derive(Clone, Debug)]
pub struct Unrecorded {
    /// The rule the record names: `malformed-request`, `proxy-auth`,
    /// `unresolvable`, `internal`.
    pub rule: &'static str,
    /// What the record says.
    pub reason: String,
    /// What the answer says (it may say less than the record).
    pub answer: String,
}

/// Where an error came from; it decides the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request cannot be served as sent.
    Downstream(StatusCode),
    /// The destination could not be reached in time or at all.
    UpstreamUnreachable,
    UpstreamTimeout,
    /// veto cannot do its job (fails closed).
    Internal,
}

impl Fault {
    pub fn status(self) -> StatusCode {
        match self {
            Fault::Downstream(s) => s,
            Fault::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Fault::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Fault::Internal => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn json_response(
    status: StatusCode,
    body: serde_json::Value,
    request_id: Option<&str>,
) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert("veto-request-id", id);
    }
    resp
}

/// A policy refusal: 403 with the decision, rule and reason.
pub fn refusal(rule: &str, reason: &str, request_id: &str) -> Response<Body> {
    refusal_status(StatusCode::FORBIDDEN, rule, reason, request_id)
}

/// A refusal with another status than 403 (`508` for a loop), the same
/// body and headers.
pub fn refusal_status(
    status: StatusCode,
    rule: &str,
    reason: &str,
    request_id: &str,
) -> Response<Body> {
    let body = serde_json::json!({
        "decision": "deny",
        "rule": rule,
        "reason": reason,
        "request_id": request_id,
    });
    let mut resp = json_response(status, body, Some(request_id));
    let h = resp.headers_mut();
    h.insert("veto-decision", HeaderValue::from_static("deny"));
    if let Ok(v) = HeaderValue::from_str(rule) {
        h.insert("veto-rule", v);
    }
    resp
}

/// Credentials that do not hold: 407, never treated as anonymous.
pub fn bad_credentials(reason: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": "proxy authentication failed", "reason": reason });
    let mut resp = json_response(StatusCode::PROXY_AUTHENTICATION_REQUIRED, body, None);
    resp.headers_mut().insert(
        http::header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"veto\""),
    );
    resp.extensions_mut().insert(Unrecorded {
        rule: "proxy-auth",
        reason: reason.to_string(),
        answer: reason.to_string(),
    });
    resp
}

/// [`bad_credentials`] once recorded: the same answer with its record's id.
pub fn bad_credentials_recorded(reason: &str, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": "proxy authentication failed",
        "reason": reason,
        "request_id": request_id,
    });
    let mut resp = json_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        body,
        Some(request_id),
    );
    resp.headers_mut().insert(
        http::header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"veto\""),
    );
    resp
}

/// An error answer: the status follows the fault's class.
pub fn error(fault: Fault, reason: &str, request_id: Option<&str>) -> Response<Body> {
    let status = fault.status();
    let mut body = serde_json::json!({
        "error": status.canonical_reason().unwrap_or("error"),
        "reason": reason,
    });
    if let Some(id) = request_id {
        body["request_id"] = id.into();
    }
    let mut resp = json_response(status, body, request_id);
    if request_id.is_none() {
        let rule = match fault {
            Fault::Downstream(_) => "malformed-request",
            Fault::UpstreamUnreachable | Fault::UpstreamTimeout => "unresolvable",
            Fault::Internal => "internal",
        };
        resp.extensions_mut().insert(Unrecorded {
            rule,
            reason: reason.to_string(),
            answer: reason.to_string(),
        });
    }
    if matches!(fault, Fault::Downstream(_)) {
        // After a malformed request the byte stream cannot be trusted to
        // frame the next one: close the connection.
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
