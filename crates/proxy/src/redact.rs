//! Redaction of what leaves: each occurrence of the classes a redact rule
//! names is replaced by `[REDACTED:<class>]` in the request target, the
//! header values and the body, keeping JSON bodies valid JSON and URLs
//! well-formed (the label is percent-encoded there), and each multipart
//! part by its own type. A value that cannot be rewritten in place (inside
//! UTF-16 text or a base64 part) is never redacted: the request is refused
//! before this (see `http::exchange`). A redacted body is sent with its new
//! Content-Length (see `forward::send`).

use crate::state::Active;
use bytes::Bytes;
use veto_detect::{BodyType, Finding, Findings, Opaque, Part, RequestParts};
use veto_policy::DataSet;

/// Redacts a body the way the scan decoded it (see
/// `veto_detect::redact_typed_body`). Fails when a value to redact lies
/// under an encoding no label can be written over (UTF-16 text, a base64
/// part): such a body must not be sent at all.
pub fn body(
    active: &Active,
    headers: &[(Vec<u8>, Vec<u8>)],
    body: &[u8],
    classes: DataSet,
) -> Result<Bytes, Opaque> {
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let ty = BodyType::of(&pairs, body);
    let det = active.detectors.detector();
    let mut findings = Findings::new();
    det.scan_typed_body(body, ty, &mut findings);
    let chosen = findings.iter().filter(|f| {
        active
            .detectors
            .bit(f.class)
            .is_some_and(|b| classes.contains(b))
    });
    veto_detect::redact_typed_body(ty, body, chosen, det).map(Bytes::from)
}

/// Redacts the request target and the header values in place. Returns the
/// new target when it changed.
pub fn head(
    active: &Active,
    target: &str,
    headers: &mut http::HeaderMap,
    classes: DataSet,
) -> Option<String> {
    let det = active.detectors.detector();
    let mut findings = Findings::new();
    {
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
            .collect();
        det.scan_request(
            RequestParts {
                url: target.as_bytes(),
                headers: &pairs,
                body: &[],
            },
            &mut findings,
        );
    }
    let chosen = |f: &&Finding| {
        active
            .detectors
            .bit(f.class)
            .is_some_and(|b| classes.contains(b))
    };
    for (i, (_, value)) in headers.iter_mut().enumerate() {
        let mut hits = findings.in_part(Part::Header(i)).filter(chosen).peekable();
        if hits.peek().is_none() {
            continue;
        }
        let masked = veto_detect::redact(value.as_bytes(), hits, det);
        // A value that cannot hold the label is emptied, never sent as is.
        *value = http::HeaderValue::from_bytes(&masked)
            .unwrap_or_else(|_| http::HeaderValue::from_static("[REDACTED]"));
    }
    let mut hits = findings.in_part(Part::Url).filter(chosen).peekable();
    hits.peek()?;
    let masked = veto_detect::redact_url(target.as_bytes(), hits, det);
    // The label is percent-encoded ASCII; should that ever fail, the path
    // alone goes, without the query that held the value.
    Some(
        String::from_utf8(masked)
            .unwrap_or_else(|_| target.split('?').next().unwrap_or("/").to_string()),
    )
}
