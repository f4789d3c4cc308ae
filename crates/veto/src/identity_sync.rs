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

pub struct Identities {
    shared: Arc<Shared>,
    store: Arc<Store>,
    control: Arc<veto_control::Store>,
    uses: Arc<Uses<String>>,
}

/// Opens the store (making it if needed), reads grant use back into the
/// proxy, then keeps both in step in the background. The returned handle
/// flushes once more at shutdown.
pub fn start(
    shared: Arc<Shared>,
    data: PathBuf,
    control: Arc<veto_control::Store>,
) -> Result<Arc<Identities>, String> {
    let store = Arc::new(Store::open(&data).map_err(|e| format!("the identity store: {e}"))?);
    crate::grant_sync::load(&shared, &store)?;
    let me = Arc::new(Identities {
        shared: shared.clone(),
        store: store.clone(),
        control,
        uses: Arc::default(),
    });
    let flusher = me.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            flusher.flush().await;
        }
    });
    // Credentials in force before the first request, not half a second in.
    let creds = store
        .snapshot()
        .map_err(|e| format!("the identity store: {e}"))?;
    let first = creds.version();
    crate::proxy_creds::install(&shared, creds, &me.uses);
    let watcher = me.clone();
    tokio::spawn(async move {
        let mut seen: Option<i64> = Some(first);
        let mut tick = tokio::time::interval(POLL_EVERY);
        loop {
            tick.tick().await;
            let store = watcher.store.clone();
            let read =
                tokio::task::spawn_blocking(move || store.version().map_err(|e| e.to_string()))
                    .await;
            let version = match read {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the identity store");
                    continue;
                }
                Err(_) => continue,
            };
            if seen == Some(version) {
                continue;
            }
            let (store, shared) = (watcher.store.clone(), watcher.shared.clone());
            let read = tokio::task::spawn_blocking(move || {
                let creds = store.snapshot().map_err(|e| e.to_string())?;
                crate::grant_sync::load(&shared, &store)?;
                let renewed = crate::grant_sync::renewals(&store)?;
                Ok::<_, String>((creds, renewed))
            })
            .await;
            match read {
                Ok(Ok((creds, renewed))) => {
                    seen = Some(creds.version());
                    crate::proxy_creds::install(&watcher.shared, creds, &watcher.uses);
                    crate::grant_sync::report(
                        &watcher.shared,
                        &watcher.control,
                        &watcher.store,
                        renewed,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "cannot read the identity store"),
                Err(_) => {}
            }
        }
    });
    Ok(me)
}

impl Identities {
    /// Writes the credential and grant uses not yet written (a failed
    /// write keeps them for the next batch), and reports grants that
    /// lapsed.
    pub async fn flush(&self) {
        let batch = self.uses.take_unwritten();
        let (store, shared) = (self.store.clone(), self.shared.clone());
        let result = tokio::task::spawn_blocking(move || {
            let creds = store
                .record_uses(&batch)
                .map_err(|e| (e.to_string(), batch));
            let grants = crate::grant_sync::flush(&shared, &store)
                .and_then(|()| crate::grant_sync::lapsed(&shared, &store));
            (creds, grants)
        })
        .await;
        let Ok((creds, grants)) = result else {
            return;
        };
        if let Err((e, batch)) = creds {
            tracing::error!(error = %e, "cannot record credential uses; will retry");
            self.uses.unwritten(batch);
        }
        match grants {
            Ok(lapsed) => {
                crate::grant_sync::report(&self.shared, &self.control, &self.store, lapsed).await
            }
            Err(e) => tracing::error!(error = %e, "cannot record grant uses; will retry"),
        }
    }
}
