//! `veto policy explain`: one decision as JSON, with the trace of every rule
//! and why it did or did not match. The same explanation the dashboard
//! shows for a stored record (`veto_admin::explain`).

use crate::sample::Sample;
use serde_json::Value;
use veto_policy::{Grants, Policy};

/// The explanation as one JSON object. A path the proxy would refuse
/// before asking any rule (`paths:`) is explained as that refusal.
pub fn explain(policy: &Policy, sample: &Sample, grants: &dyn Grants) -> Value {
    let mut sample = sample.clone();
    if let Err(e) = sample.apply_paths(&policy.document().paths) {
        return serde_json::json!({
            "decision": "deny",
            "rule": MALFORMED,
            "reason": e.to_string(),
            "status": 400,
            "policy": policy.hash(),
            "trace": [],
        });
    }
    veto_admin::explain::explain_request(policy, &sample.request(), grants)
}

/// veto's own rule for requests refused before any rule is asked.
pub const MALFORMED: &str = "malformed-request";
