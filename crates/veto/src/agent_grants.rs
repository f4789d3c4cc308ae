//! An agent's side of the fleet's grants (see veto-server's `grants.rs`):
//! the uses this agent applied go up with its status; the fleet's uses come
//! down as the `grants` event and are merged into the proxy's book, so a
//! grant used through any agent, or renewed on the server, stays alive
//! here too. The last event is kept on disk, so a restart while the server
//! is unreachable does not start idle clocks over.

use std::path::{Path, PathBuf};
use veto_proxy::Shared;

fn cache_path(data: &Path) -> PathBuf {
    data.join("agent-grants.json")
}

/// Merges one `grants` event into the book: later uses and earlier first
/// loads win, so nothing here can shorten or extend a grant wrongly.
fn merge(shared: &Shared, payload: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("the server sent bad grants: {e}"))?;
    let now = super::agent::unix_now();
    for u in v["uses"].as_array().into_iter().flatten() {
        if let (Some(rule), Some(machine), Some(at)) = (
            u["rule"].as_str(),
            u["machine"].as_str(),
            u["last_used"].as_i64(),
        ) {
            shared.grants.merge(rule, machine, at.min(now));
        }
    }
    for (rule, at) in v["first_loaded"].as_object().into_iter().flatten() {
        if let Some(at) = at.as_i64() {
            shared.grants.merge_first_loaded(rule, at);
        }
    }
    Ok(())
}

/// At start: what the server last said, if anything.
pub fn load_cached(shared: &Shared, data: &Path) {
    if let Ok(text) = std::fs::read_to_string(cache_path(data))
        && let Err(e) = merge(shared, &text)
    {
        tracing::warn!(error = %e, "ignoring the cached grants");
    }
}

/// A `grants` event from the server: merged, then kept on disk.
pub async fn apply(shared: &Shared, data: &Path, payload: &str) {
    if let Err(e) = merge(shared, payload) {
        tracing::error!(error = %e, "cannot apply the server's grants");
        return;
    }
    let (path, text) = (cache_path(data), payload.to_string());
    let cached =
        tokio::task::spawn_blocking(move || super::agent::replace(&path, text.as_bytes())).await;
    if let Ok(Err(e)) = cached {
        tracing::error!(error = %e, "cannot cache the server's grants");
    }
}

/// Uses not yet reported, for the status report; give them back with
/// [`unreported`] if the report fails.
pub fn take(shared: &Shared) -> (Vec<serde_json::Value>, Vec<(String, String, i64)>) {
    let batch = shared.grants.take_unwritten();
    let json = batch
        .iter()
        .map(|(rule, machine, at)| serde_json::json!({"rule": rule, "machine": machine, "at": at}))
        .collect();
    (json, batch)
}

pub fn unreported(shared: &Shared, batch: Vec<(String, String, i64)>) {
    shared.grants.unwritten(batch);
}
