//! Who is asking: a bearer token (tools, scripts) or a dashboard session
//! cookie (browsers, since `EventSource` cannot send an Authorization
//! header). The admin token is the operator; the viewer token reads only.
//!
//! A session is made by `POST /v1/login` with a token and lives in memory
//! (a restart logs everyone out, which is fine for a local dashboard). The
//! cookie is HttpOnly and SameSite=Strict; on top of that, a change made
//! with a cookie must carry `X-Veto-CSRF: 1`, a header a cross-site form
//! cannot send, so no other page can act in an operator's name.

use crate::Admin;
use crate::token;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const COOKIE: &str = "veto_session";
pub const CSRF_HEADER: &str = "x-veto-csrf";
/// A session lasts a working day; then one logs in again.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most: a token holder looping on login cannot grow
/// memory without bound; the oldest session goes first.
const MAX_SESSIONS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Session,
}

#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub role: Role,
    pub via: Via,
}

impl Who {
    /// The actor the change log names.
    pub fn actor(&self) -> &'static str {
        match self.via {
            Via::Bearer => "admin",
            Via::Session => "admin (dashboard)",
        }
    }
}

struct Session {
    role: Role,
    expires: Instant,
}

/// Sessions by the SHA-256 of their id: the ids themselves are only in
/// the browsers' cookies.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // The map holds no invariant a panic could break halfway.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self, role: Role) -> Result<String, token::TokenError> {
        let id = token::random_hex()?;
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            token::hash(&id),
            Session {
                role,
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    fn role(&self, id: &str) -> Option<Role> {
        let key = token::hash(id);
        let mut map = self.map();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.role),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.map().remove(&token::hash(id));
    }
}

/// The session id from the `Cookie` headers, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn role_of_token(admin: &Admin, t: &str) -> Option<Role> {
    // Both compared, always: which one matched does not show in the time.
    let operator = token::matches(&admin.token_hash, t);
    let viewer = token::matches(&admin.viewer_hash, t);
    if operator {
        Some(Role::Operator)
    } else if viewer {
        Some(Role::Viewer)
    } else {
        None
    }
}

pub fn who(admin: &Admin, headers: &HeaderMap) -> Option<Who> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(t) = bearer {
        return role_of_token(admin, t.trim()).map(|role| Who {
            role,
            via: Via::Bearer,
        });
    }
    let role = admin.sessions.role(session_id(headers)?)?;
    Some(Who {
        role,
        via: Via::Session,
    })
}

/// Why a request was refused before its route ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No credential, or one that matches nothing: 401.
    Unauthorized,
    /// A viewer asked for a change: 403.
    Viewer,
    /// A change by cookie without the CSRF header: 403.
    NoCsrf,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let forbidden = |reason: &str| {
            (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({"error": "forbidden", "reason": reason})),
            )
                .into_response()
        };
        match self {
            Refused::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Bearer realm=\"veto-admin\"")],
                Json(serde_json::json!({
                    "error": "unauthorized",
                    "reason": "the admin API needs `Authorization: Bearer <token>` (the token is in DATA/admin.token) or a dashboard session",
                })),
            )
                .into_response(),
            Refused::Viewer => {
                forbidden("a viewer cannot change anything; log in with the admin token")
            }
            Refused::NoCsrf => forbidden(
                "a change made with a session cookie needs the header `X-Veto-CSRF: 1`",
            ),
        }
    }
}

/// Any valid credential: the routes that only read.
pub fn read(admin: &Admin, headers: &HeaderMap) -> Result<Who, Refused> {
    who(admin, headers).ok_or(Refused::Unauthorized)
}

/// The operator, and with a cookie the CSRF header too: routes that change
/// something.
pub fn change(admin: &Admin, headers: &HeaderMap) -> Result<Who, Refused> {
    let w = read(admin, headers)?;
    if w.role != Role::Operator {
        return Err(Refused::Viewer);
    }
    if w.via == Via::Session && headers.get(CSRF_HEADER).is_none_or(|v| v != "1") {
        return Err(Refused::NoCsrf);
    }
    Ok(w)
}

#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

fn cookie(value: &str, max_age: u64) -> String {
    // No `Secure`: the admin listener speaks plain HTTP on loopback.
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}")
}

/// `POST /v1/login {"token": "..."}`: a session for the token's role.
pub async fn login(State(admin): State<Arc<Admin>>, Json(req): Json<Login>) -> Response {
    let Some(role) = role_of_token(&admin, req.token.trim()) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "unauthorized",
                "reason": "unknown token: paste DATA/admin.token (operator) or DATA/viewer.token (viewer)",
            })),
        )
            .into_response();
    };
    let id = match admin.sessions.create(role) {
        Ok(id) => id,
        Err(e) => return crate::internal(e),
    };
    (
        [(header::SET_COOKIE, cookie(&id, SESSION_TTL.as_secs()))],
        Json(serde_json::json!({ "role": role })),
    )
        .into_response()
}

/// `POST /v1/logout`: ends the session of the cookie sent.
pub async fn logout(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        admin.sessions.remove(id);
    }
    (
        [(header::SET_COOKIE, cookie("", 0))],
        Json(serde_json::json!({ "role": null })),
    )
        .into_response()
}

/// `GET /v1/whoami`: the role, so the page knows which buttons to show.
pub async fn whoami(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    match read(&admin, &headers) {
        Ok(w) => Json(serde_json::json!({ "role": w.role })).into_response(),
        Err(r) => r.into_response(),
    }
}
