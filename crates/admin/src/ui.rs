//! The dashboard's files, embedded in the binary so it works offline: no
//! CDN, no fonts, no build step. Plain HTML, CSS and JavaScript modules
//! (`ui/`). They hold no data, so they are served without a credential;
//! the page logs in against `/v1/login` and reads the API like any client.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Only this origin's scripts, styles and connections; no framing. The
/// page uses no inline script or style attribute, so nothing needs
/// `unsafe-inline`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("ui/index.html");

/// name, content type, text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css", include_str!("ui/style.css")),
    ("app.js", "text/javascript", include_str!("ui/app.js")),
    ("api.js", "text/javascript", include_str!("ui/api.js")),
    ("dom.js", "text/javascript", include_str!("ui/dom.js")),
    ("live.js", "text/javascript", include_str!("ui/live.js")),
    ("detail.js", "text/javascript", include_str!("ui/detail.js")),
    (
        "overview.js",
        "text/javascript",
        include_str!("ui/overview.js"),
    ),
    ("chart.js", "text/javascript", include_str!("ui/chart.js")),
    (
        "inventory.js",
        "text/javascript",
        include_str!("ui/inventory.js"),
    ),
    (
        "optouts.js",
        "text/javascript",
        include_str!("ui/optouts.js"),
    ),
    (
        "changes.js",
        "text/javascript",
        include_str!("ui/changes.js"),
    ),
    ("access.js", "text/javascript", include_str!("ui/access.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("ui/favicon.svg"),
    ),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Small and embedded: always fresh after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ty, body)) => page(ty, body),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offline means offline: no asset names another origin.
    #[test]
    fn no_asset_loads_anything_from_elsewhere() {
        let all = ASSETS.iter().map(|(_, _, b)| *b).chain([INDEX]);
        for body in all {
            for bad in ["http://", "https://", "//cdn", "@import", "url(http"] {
                let hit = body
                    .match_indices(bad)
                    // The SVG namespace is an identifier, not a fetch.
                    .any(|(i, _)| !body[i..].starts_with("http://www.w3.org/2000/svg"));
                assert!(!hit, "an asset mentions {bad}");
            }
        }
    }

    /// Every module the page imports is served.
    #[test]
    fn every_import_is_served() {
        for (name, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let file = line
                    .rsplit_once("'./")
                    .and_then(|(_, f)| f.split_once('\''))
                    .map(|(f, _)| f)
                    .unwrap_or_else(|| panic!("{name}: unexpected import line {line}"));
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
    }
}
