//! Redaction of what leaves: each occurrence of the classes a redact rule
//! names is replaced by `[REDACTED:<class>]`, keeping JSON bodies valid JSON.
//! (URL and header redaction, and Content-Length fixing for streamed
//! bodies, belong to the data opt-outs issue.)

use crate::state::Active;
use bytes::Bytes;
use veto_detect::{BodyKind, Findings};
use veto_policy::DataSet;

pub fn body(
    active: &Active,
    headers: &[(Vec<u8>, Vec<u8>)],
    body: &[u8],
    classes: DataSet,
) -> Bytes {
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let kind = BodyKind::of(&pairs, body);
    let det = active.detectors.detector();
    let mut findings = Findings::new();
    det.scan_body(body, kind, &mut findings);
    let chosen = findings.iter().filter(|f| {
        active
            .detectors
            .bit(f.class)
            .is_some_and(|b| classes.contains(b))
    });
    Bytes::from(veto_detect::redact_body(kind, body, chosen, det))
}
