//! Accepting clients: connection limits (in all and per client address),
//! request-head limits and timeouts, and a graceful drain on shutdown.

use crate::mtls::Peer;
use crate::refused::{Refusals, Why};
use crate::state::Shared;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Open connections per client address. The lock is held for a map update,
/// never across I/O.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

impl PerClient {
    fn enter(&self, ip: IpAddr, max: usize) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }
    fn leave(&self, ip: IpAddr) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Serves clients until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (bounded by the drain timeout), and flushes
/// the audit trail. `tls`: a second listener where clients speak TLS to the
/// proxy and may prove who they are with a client certificate.
/// Where the proxy listens.
pub struct Listeners {
    /// The HTTP proxy (`--listen`).
    pub plain: TcpListener,
    /// Clients that speak TLS to the proxy (`--listen-tls`).
    pub tls: Option<(TcpListener, Arc<crate::mtls::ClientTls>)>,
    /// Connections the kernel redirected to veto (`--transparent`).
    pub transparent: Vec<TcpListener>,
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Tls,
    Transparent,
}

/// Accepts on any of `ls` (pending for ever when there are none).
async fn accept_any(
    ls: &[TcpListener],
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    if ls.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for l in ls {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                return std::task::Poll::Ready(r);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

pub async fn serve(listeners: Listeners, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let Listeners {
        plain: listener,
        tls,
        transparent,
    } = listeners;
    let cfg = shared.config.clone();
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let per_client = Arc::new(PerClient::default());
    let refusals = Arc::new(Refusals::default());
    // Connections watch this to finish their request in flight and close.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    let (tls_listener, client_tls) = match tls {
        Some((l, t)) => (Some(l), Some(t)),
        None => (None, None),
    };
    let accept_tls = async |l: &Option<TcpListener>| match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    };
    loop {
        let (accepted, kind) = tokio::select! {
            a = listener.accept() => (a, Kind::Plain),
            a = accept_tls(&tls_listener) => (a, Kind::Tls),
            a = accept_any(&transparent) => (a, Kind::Transparent),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off rather
                // than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            let why = Why::Limit {
                per_client: false,
                limit: cfg.max_connections,
            };
            refusals.record(&shared, peer, why, stream);
            continue;
        };
        if !per_client.enter(peer.ip(), cfg.max_per_client) {
            tracing::warn!(%peer, "per-client connection limit reached; closing");
            let why = Why::Limit {
                per_client: true,
                limit: cfg.max_per_client,
            };
            refusals.record(&shared, peer, why, stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let per_client = per_client.clone();
        let stop = stop_rx.clone();
        let client_tls = client_tls.clone().filter(|_| kind == Kind::Tls);
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let wait = shared.config.header_timeout;
            let secs = wait.as_secs();
            match client_tls {
                None if kind == Kind::Transparent => {
                    crate::transparent::serve(shared.clone(), stream, peer).await;
                }
                None => match sniff(&stream, wait).await {
                    Ok(h2) => connection(stream, shared, Peer::None, h2, stop).await,
                    Err(true) => {
                        tracing::debug!(%peer, "nothing sent before the head timeout");
                        let why = Why::Silent { secs, tls: false };
                        refusals.record(&shared, peer, why, stream);
                    }
                    Err(false) => {}
                },
                Some(t) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(wait, t.accept(stream)).await {
                        Ok(Ok((tls, who))) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            connection(tls, shared, who, h2, stop).await
                        }
                        // A client that hangs up mid-handshake refused
                        // nothing; a handshake veto failed did.
                        Ok(Err(e))
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::UnexpectedEof
                                    | std::io::ErrorKind::ConnectionReset
                            ) =>
                        {
                            tracing::debug!(%peer, error = %e, "client left during the TLS handshake");
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            let why = Why::Handshake {
                                credentials: crate::refused::over_credentials(&e),
                                error: e.to_string(),
                            };
                            refusals.record(&shared, peer, why, ());
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            refusals.record(&shared, peer, Why::Silent { secs, tls: true }, ());
                        }
                    }
                }
            }
            per_client.leave(peer.ip());
            drop(slot);
        });
    }
    drop(listener);
    drop(tls_listener);
    drop(transparent);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all slots back means all drained.
    let all = u32::try_from(cfg.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        () = tokio::time::sleep(cfg.drain_timeout) => tracing::warn!("drain timeout: closing remaining connections"),
    }
    if let Err(e) = shared.writer.flush().await {
        tracing::error!(error = %e, "audit flush at shutdown failed");
    }
}

/// HTTP/2's connection preface: a client that starts with it speaks h2
/// with prior knowledge (h2c); anything else is HTTP/1.1.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a plain client speaks, from its first bytes (peeked, so
/// hyper still reads them): `Some(true)` for h2. `None`: it sent nothing
/// within `wait`, or closed; a silent connection holds no slot for long.
/// `Ok(h2)`, or `Err(true)` when the client sent nothing within `wait`
/// (`Err(false)`: it closed first, which refuses nothing).
async fn sniff(stream: &tokio::net::TcpStream, wait: std::time::Duration) -> Result<bool, bool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return Err(false),
            Err(_) => return Err(true),
        };
        if !PREFACE.starts_with(&buf[..n]) {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface so far (rare: it comes in one segment).
        // peek returns at once while those bytes wait, so pause first.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Serves one client connection, plain or TLS, HTTP/1.1 or HTTP/2, until
/// it closes or veto stops (then the requests in flight finish first).
async fn connection<IO>(
    io: IO,
    shared: Arc<Shared>,
    who: Peer,
    h2: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cfg = shared.config.clone();
    let guard_shared = shared.clone();
    let svc = service_fn(move |req| {
        let (shared, who) = (shared.clone(), who.clone());
        async move { Ok::<_, Infallible>(crate::http::handle(shared, req, who).await) }
    });
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_STREAMS)
            // A peer that stops answering pings is gone: its streams and
            // tunnels are released.
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .keep_alive_timeout(std::time::Duration::from_secs(20))
            .serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        drain(conn, stop, |c| c.graceful_shutdown()).await;
        return;
    }
    let guarded = crate::guard::Guarded::new(io, guard_shared, crate::guard::Origin::listener());
    let conn = http1_guarded(&cfg)
        .serve_connection(TokioIo::new(guarded), svc)
        .with_upgrades();
    tokio::pin!(conn);
    drain(conn, stop, |c| c.graceful_shutdown()).await;
}

/// hyper's HTTP/1 server behind the head guard: every head is checked by
/// the guard before hyper reads it; hyper's own bounds stay, a little
/// wider, behind it (its timer also closes a kept-alive connection that
/// sends nothing more). The same on the listener and inside opened
/// tunnels.
pub(crate) fn http1_guarded(cfg: &crate::config::Config) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout + std::time::Duration::from_secs(1))
        // The guard ends the stream at a refused head: what an earlier
        // request is owed is still answered.
        .half_close(true)
        .max_buf_size((cfg.max_header_bytes + 1024).max(8192))
        .max_headers(cfg.max_headers.clamp(1, 256) + 1);
    b
}

/// Streams one HTTP/2 client may have open at once (requests and tunnels).
const H2_STREAMS: u32 = 256;

/// Runs a connection to its end; when veto stops, it is asked to finish
/// the requests in flight and take no more.
async fn drain<C, E>(
    mut conn: std::pin::Pin<&mut C>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            shutdown(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
