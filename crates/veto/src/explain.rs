//! `veto policy explain`: one decision as JSON, with the trace of every rule
//! and why it did or did not match. The same explanation the dashboard
//! shows for a stored record (`veto_admin::explain`).

use crate::sample::Sample;
use serde_json::Value;
use veto_policy::{Grants, Policy};

/// The explanation as one JSON object. A path the proxy would refuse
/// before asking any rule (`paths:`), or overrides that disagree, are
/// explained as that refusal; a method override is explained as the proxy
/// decides it, by the stricter of the two methods (`override` names it).
pub fn explain(policy: &Policy, sample: &Sample, grants: &dyn Grants) -> Value {
    let mut sample = sample.clone();
    let refused = |why: String| {
        serde_json::json!({
            "decision": "deny",
            "rule": MALFORMED,
            "reason": why,
            "status": 400,
            "policy": policy.hash(),
            "trace": [],
        })
    };
    if let Err(e) = sample.apply_paths(&policy.document().paths) {
        return refused(e.to_string());
    }
    let over = match sample.overridden() {
        Ok(o) => o,
        Err(e) => return refused(e),
    };
    let chosen = match &over {
        Some(m) => {
            let other = sample.with_method(m);
            let d = policy.decide(&sample.request(), grants);
            match d.stricter(policy.decide(&other.request(), grants)) {
                (_, true) => other,
                (_, false) => sample,
            }
        }
        None => sample,
    };
    let mut out = veto_admin::explain::explain_request(policy, &chosen.request(), grants);
    if let Some(m) = over {
        out["override"] = Value::from(m);
    }
    out
}

/// veto's own rule for requests refused before any rule is asked.
pub const MALFORMED: &str = "malformed-request";
