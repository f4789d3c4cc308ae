//! `veto policy explain`: one decision as JSON, with the trace of every rule
//! and why it did or did not match. The same explanation the dashboard
//! shows for a stored record (`veto_admin::explain`).

use crate::sample::Sample;
use serde_json::Value;
use veto_policy::{Grants, Policy};

/// The explanation as one JSON object.
pub fn explain(policy: &Policy, sample: &Sample, grants: &dyn Grants) -> Value {
    veto_admin::explain::explain_request(policy, &sample.request(), grants)
}
