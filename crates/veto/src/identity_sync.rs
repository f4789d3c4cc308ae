//! Keeps the proxy in step with the identity store (`DATA/identity.db`),
//! off the request path:
//! - machines added, rotated, revoked or expired take effect within half a
//!   second, without a restart (a new in-memory snapshot is swapped in when
//!   the store's version changes);
//! - each credential's last use is noted in memory per request and written
//!   to the store in batches every few seconds, and once more on shutdown,
//!   so `--idle-ttl` is enforced without a disk write per request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use veto_identity::{Store, Uses};
use veto_proxy::Shared;

/// How often uses are written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How often the store's version is read.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Machine credentials from the identity store, for the proxy's request
/// path: in memory, no disk, a lock only for the use map.
struct StoreCredentials {
    creds: veto_identity::Credentials,
    uses: Arc<Uses<String>>,
}

impl veto_proxy::Credentials for StoreCredentials {
    fn check(&self, machine: &str, token: &str, now: i64) -> Result<(), String> {
        let recent = self.uses.get(machine);
        self.creds
            .check_used(machine, token, now, recent)
            .map_err(|r| r.to_string())?;
        self.uses.note(machine, now);
        Ok(())
    }

    fn check_machine(&self, machine: &str, now: i64) -> Result<(), String> {
        let recent = self.uses.get(machine);
        self.creds
            .check_machine(machine, now, recent)
            .map_err(|r| match r {
                veto_identity::Refusal::UnknownMachine => format!(
                    "The client certificate names machine `{machine}`, which is not registered."
                ),
                other => other.to_string(),
            })?;
        self.uses.note(machine, now);
        Ok(())
    }
}

pub struct Identities {
    data: PathBuf,
    uses: Arc<Uses<String>>,
}

/// Starts watching the store and writing uses; the returned handle flushes
/// once more at shutdown.
pub fn start(shared: Arc<Shared>, data: PathBuf) -> Identities {
    let uses: Arc<Uses<String>> = Arc::default();
    let handle = Identities {
        data: data.clone(),
        uses: uses.clone(),
    };
    let flusher = Identities {
        data: data.clone(),
        uses: uses.clone(),
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            flusher.flush().await;
        }
    });
    tokio::spawn(async move {
        let mut seen: Option<i64> = None;
        let mut tick = tokio::time::interval(POLL_EVERY);
        loop {
            tick.tick().await;
            let data = data.clone();
            let read = tokio::task::spawn_blocking(
                move || -> Result<Option<veto_identity::Credentials>, String> {
                    let Some(store) = open(&data)? else {
                        return Ok(None);
                    };
                    store.snapshot().map(Some).map_err(|e| e.to_string())
                },
            )
            .await;
            match read {
                Ok(Ok(Some(creds))) if seen != Some(creds.version()) => {
                    seen = Some(creds.version());
                    let boxed: Box<dyn veto_proxy::Credentials> = Box::new(StoreCredentials {
                        creds,
                        uses: uses.clone(),
                    });
                    shared.credentials.store(Arc::new(boxed));
                }
                Ok(Err(e)) => tracing::error!(error = %e, "cannot read the identity store"),
                _ => {}
            }
        }
    });
    handle
}

/// The store, if one was ever made (`veto machine add` makes it).
fn open(data: &std::path::Path) -> Result<Option<Store>, String> {
    if !veto_identity::db_path(data).exists() {
        return Ok(None);
    }
    Store::open(data).map(Some).map_err(|e| e.to_string())
}

impl Identities {
    /// Writes the uses not yet written. A failed write keeps them for the
    /// next batch.
    pub async fn flush(&self) {
        let batch = self.uses.take_unwritten();
        if batch.is_empty() {
            return;
        }
        let data = self.data.clone();
        let (written, batch) = tokio::task::spawn_blocking(move || {
            let r = open(&data).and_then(|s| match s {
                Some(s) => s.record_uses(&batch).map_err(|e| e.to_string()),
                None => Ok(()),
            });
            (r, batch)
        })
        .await
        .unwrap_or_else(|e| (Err(e.to_string()), Vec::new()));
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record credential uses; will retry");
            self.uses.unwritten(batch);
        }
    }
}
