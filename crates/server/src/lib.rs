//! veto's control plane (`veto server`): it keeps policy versions, runtime
//! opt-outs, enrolled agents, the audit trail they ship and the change log,
//! in SQLite or PostgreSQL, and streams policy and opt-outs to agents that
//! dial out to it (`veto agent`). Agents open no inbound port.

// Handlers return the answer to give as their error: it is what the client
// hears, and boxing every early answer would only add allocations.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
pub mod grants;
pub mod store;

pub use store::{Location, Store, StoreError};

use std::sync::Arc;
use tokio::sync::watch;

/// What agents enforce: the current policy and the opt-outs in force, as
/// the JSON of one `config` event.
pub async fn config_json(store: &Store) -> Result<String, StoreError> {
    let policy = store.policy_current().await?;
    let now = store::unix_now();
    let optouts: Vec<serde_json::Value> = store
        .optouts()
        .await?
        .into_iter()
        .filter(|o| o.in_force(now))
        .map(|o| {
            serde_json::json!({
                "rule_id": o.rule_id(),
                "expires": o.expires,
                "kind": o.target.kind(),
                "value": o.target.value(),
                "reason": o.reason,
            })
        })
        .collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // Credentials as hashes only: an agent checks tokens, never sees one.
    // Last use stays out: it changes with every report, and the config is
    // resent only when it changes (each agent counts idle time from its
    // own uses: stricter, never looser).
    let machines: Vec<serde_json::Value> = store
        .machines()
        .await?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name, "roles": m.roles, "env": m.env, "created": m.created,
                "expires": m.expires, "idle_ttl": m.idle_ttl,
                "revoked_at": m.revoked_at, "hash": hex(&m.hash),
                "old_hash": m.old.as_ref().map(|(h, _)| hex(h)),
                "old_until": m.old.as_ref().map(|(_, t)| *t),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "policy": policy.map(|p| serde_json::json!({"version": p.version, "hash": p.hash, "text": p.text})),
        "optouts": optouts,
        "machines": machines,
    })
    .to_string())
}

/// TLS for the API: the certificate chain and key, PEM.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--tls-cert: not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("--tls-cert holds no certificate".into());
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("--tls-key: not a PEM private key ({e})"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Serves the API until `shutdown`, over TLS when `tls` is given. The
/// config agents see is recomputed on every change the store announces
/// (from any replica) and once a second (opt-outs that expire), and sent
/// only when it differs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    data: std::path::PathBuf,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let tokens = auth::Tokens::load_or_create(&data)?;
    let first = config_json(&store).await.map_err(|e| e.to_string())?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let first_grants = grants::grants_json(&store.grants().await.map_err(|e| e.to_string())?);
    let (grants_tx, grants_rx) = watch::channel(Arc::new(first_grants));
    tokio::spawn(grants::watch(store.clone(), grants_tx));
    let app = Arc::new(api::App {
        store,
        tokens,
        config: rx,
        grants: grants_rx,
    });
    let watcher = app.clone();
    tokio::spawn(async move {
        let mut heard = watcher.store.subscribe();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = heard.recv() => {}
                _ = tick.tick() => {}
            }
            match config_json(&watcher.store).await {
                Ok(cfg) if cfg != **tx.borrow() => {
                    let _ = tx.send(Arc::new(cfg));
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read the config for agents"),
            }
        }
    });
    let router = api::router(app);
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| e.to_string());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(tls)) = handshake.await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}
