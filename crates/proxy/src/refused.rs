//! Connections veto closes before any request: over a connection limit,
//! silent past the head timeout, or failing the TLS handshake (a broken
//! or foreign client certificate is a failed credential). Each is recorded
//! like a refused request (`decision: deny`, one of veto's own rules, no
//! status: nothing was answered), and only then closed.
//!
//! The accept loop never waits for the audit: each record is written by a
//! task that holds the connection until it is committed. A flood of
//! refused connections could otherwise hold unbounded tasks (and file
//! descriptors), so at most [`PENDING`] wait at once; beyond that a
//! connection is closed at once and counted, and the count is recorded
//! with the next connection refusal that gets a slot.

use crate::phase::{self, Ctx};
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// Connection records waiting for their commit at once, at most.
const PENDING: usize = 1024;

/// Why a connection was closed before any request.
pub enum Why {
    /// `--max-connections` or `--max-per-client` reached.
    Limit { per_client: bool, limit: usize },
    /// Nothing (or no complete TLS handshake) within `--header-timeout`.
    Silent { secs: u64, tls: bool },
    /// The TLS handshake failed; `credentials` when over the client's
    /// certificate.
    Handshake { error: String, credentials: bool },
}

pub struct Refusals {
    slots: Arc<Semaphore>,
    /// Refused connections closed unrecorded while every slot was taken.
    unrecorded: AtomicU64,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            slots: Arc::new(Semaphore::new(PENDING)),
            unrecorded: AtomicU64::new(0),
        }
    }
}

impl Refusals {
    /// Records the refusal of the connection from `peer`, then closes it
    /// (drops `conn`); never waits.
    pub fn record<C: Send + 'static>(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        peer: SocketAddr,
        why: Why,
        conn: C,
    ) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.unrecorded.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (shared, this) = (shared.clone(), self.clone());
        tokio::spawn(async move {
            let (rule, protocol, mut reason) = describe(&why, peer);
            let missed = this.unrecorded.swap(0, Ordering::Relaxed);
            if missed > 0 {
                reason.push_str(&format!(
                    "; {missed} more connections were refused and closed unrecorded while {PENDING} such records were being written"
                ));
            }
            let ctx = Ctx::new();
            let facts = crate::head::Facts {
                protocol,
                method: None,
                host: String::new(),
                port: 0,
                path: None,
            };
            if phase::record_closed(&shared, &ctx, &facts, rule, &reason)
                .await
                .is_err()
            {
                this.unrecorded.fetch_add(missed, Ordering::Relaxed);
            }
            drop(conn);
            drop(slot);
        });
    }
}

fn describe(why: &Why, peer: SocketAddr) -> (&'static str, &'static str, String) {
    match why {
        Why::Limit {
            per_client: true,
            limit,
        } => (
            "connection-limit",
            "tcp",
            format!(
                "{} already has {limit} connections open (--max-per-client): the connection from {peer} was closed before any request",
                peer.ip()
            ),
        ),
        Why::Limit {
            per_client: false,
            limit,
        } => (
            "connection-limit",
            "tcp",
            format!(
                "veto already has {limit} connections open (--max-connections): the connection from {peer} was closed before any request"
            ),
        ),
        Why::Silent { secs, tls } => (
            "malformed-request",
            if *tls { "tls" } else { "tcp" },
            format!(
                "the connection from {peer} sent {} within {secs}s (--header-timeout) and was closed",
                if *tls {
                    "no complete TLS handshake"
                } else {
                    "nothing"
                }
            ),
        ),
        Why::Handshake { error, credentials } => (
            if *credentials {
                "proxy-auth"
            } else {
                "malformed-request"
            },
            "tls",
            format!("the TLS handshake from {peer} failed: {error}"),
        ),
    }
}

/// Whether a failed handshake failed over the client's certificate.
pub fn over_credentials(e: &std::io::Error) -> bool {
    use rustls::Error as E;
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<E>())
        .is_some_and(|r| {
            matches!(
                r,
                E::InvalidCertificate(_)
                    | E::NoCertificatesPresented
                    | E::InvalidCertRevocationList(_)
            )
        })
}
