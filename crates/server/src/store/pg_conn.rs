//! Connections to PostgreSQL: the URL, TLS, the pool, and the listener
//! that hears other replicas' changes.
//!
//! The URL is libpq's (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB?...`)
//! with these options read by veto itself:
//! - `sslmode`: `disable` or `prefer` (the default) connect in the clear;
//!   `require`, `verify-ca` and `verify-full` use TLS and always verify the
//!   server's certificate and name: a control plane that accepts any
//!   certificate would take its policy from whoever is in the middle.
//! - `sslrootcert=PATH`: the CA (PEM) to verify the server against,
//!   instead of the system's roots.
//! - `pool_max_size=N`: connections per replica (default 8).
//!
//! Nothing here logs the URL: it may hold a password.

use super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, NoTls, Socket};

const DEFAULT_POOL: usize = 8;

/// How to reach the database: parsed once from the URL.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    pool_size: usize,
}

fn invalid(why: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("the PostgreSQL URL: {why}"))
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let (mut tls, mut root, mut pool_size) = (false, None, DEFAULT_POOL);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => match v {
                    "disable" | "prefer" => {}
                    "require" | "verify-ca" | "verify-full" => tls = true,
                    other => return Err(invalid(format!("unknown sslmode `{other}`"))),
                },
                "sslrootcert" => root = Some(v.to_string()),
                "pool_max_size" => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid("pool_max_size is a number above 0"))?;
                }
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rest.parse().map_err(invalid)?;
        config.ssl_mode(if tls {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        if root.is_some() && !tls {
            return Err(invalid(
                "sslrootcert is given but sslmode does not use TLS (add sslmode=verify-full)",
            ));
        }
        let tls = if tls {
            Some(tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(
                root.as_deref(),
            )?))
        } else {
            None
        };
        Ok(Target {
            config,
            tls,
            pool_size,
        })
    }

    pub fn pool(&self) -> Result<Pool, StoreError> {
        let mgr_config = ManagerConfig {
            // A connection the server dropped (a restart, a failover) is
            // noticed and replaced when it is next taken.
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), mgr_config),
            None => Manager::from_config(self.config.clone(), NoTls, mgr_config),
        };
        Pool::builder(mgr)
            .max_size(self.pool_size)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))
    }

    /// Listens for `veto_changes` on a connection of its own, and listens
    /// again after losing it (announcing then too: something may have
    /// changed meanwhile).
    pub fn listen(&self, changed: broadcast::Sender<()>) {
        let config = self.config.clone();
        match self.tls.clone() {
            Some(tls) => spawn_listener(config, tls, changed),
            None => spawn_listener(config, NoTls, changed),
        }
    }
}

/// Roots: the `sslrootcert` file, else the system's.
fn client_tls(root: Option<&str>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match root {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| invalid(format!("sslrootcert {path}: {e}")))?;
            CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(format!("sslrootcert {path}: not PEM certificates ({e})")))?
        }
        None => rustls_native_certs::load_native_certs().certs,
    };
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(invalid(match root {
            Some(p) => format!("sslrootcert {p} holds no usable certificate"),
            None => {
                "the system has no CA certificates to verify PostgreSQL with (give sslrootcert)"
                    .to_string()
            }
        }));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn spawn_listener<T>(config: tokio_postgres::Config, tls: T, changed: broadcast::Sender<()>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    tokio::spawn(async move {
        loop {
            match config.connect(tls.clone()).await {
                Ok((client, mut conn)) => {
                    let tx = changed.clone();
                    let pump = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                        while let Some(m) = messages.next().await {
                            match m {
                                Ok(AsyncMessage::Notification(_)) => {
                                    let _ = tx.send(());
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::error!(error = %e, "PostgreSQL LISTEN connection lost");
                                    break;
                                }
                            }
                        }
                    });
                    if let Err(e) = client.batch_execute("LISTEN veto_changes").await {
                        tracing::error!(error = %e, "cannot LISTEN on PostgreSQL");
                    } else {
                        let _ = changed.send(());
                    }
                    let _ = pump.await;
                }
                Err(e) => tracing::error!(error = %e, "cannot reach PostgreSQL to LISTEN"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_as_libpq_reads_them_with_verified_tls() {
        let t = Target::parse("postgres://u:secret@db.example:5433/veto").unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.pool_size, DEFAULT_POOL);
        assert_eq!(t.config.get_ports(), [5433]);
        let t =
            Target::parse("postgres://u@h/veto?sslmode=require&pool_max_size=3&application_name=x")
                .unwrap();
        assert!(t.tls.is_some());
        assert_eq!(t.pool_size, 3);
        assert_eq!(t.config.get_application_name(), Some("x"));
        for bad in [
            "postgres://u@h/veto?sslmode=allow",
            "postgres://u@h/veto?pool_max_size=0",
            "postgres://u@h/veto?sslrootcert=/nonexistent&sslmode=verify-full",
            "postgres://u@h/veto?sslrootcert=/etc/hostname",
        ] {
            let e = Target::parse(bad).err().expect(bad).to_string();
            assert!(e.starts_with("the PostgreSQL URL:"), "{e}");
            assert!(!e.contains("secret"));
        }
    }
}
