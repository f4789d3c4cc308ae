//! Plain HTTP sent through a CONNECT tunnel. Passed on as opaque `tcp`, it
//! would carry any `Host` to the tunnel's address (fronting on a shared
//! upstream) and any method, path or data, unseen. So when a tunnel's first
//! bytes begin an HTTP/1 request (`head::http_start`), veto serves the
//! tunnel as it serves its own listener: every head through the guard,
//! every request decided as `http` to the CONNECT host (a request naming
//! another host is refused as fronting), recorded, and forwarded by the
//! pool to the address the tunnel was checked against.

use crate::guard::{Guarded, Origin};
use crate::idle::{Activity, Watched};
use crate::intercept::{Opened, Replay, inner};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite};

/// Serves the requests inside until the client is done, the tunnel idles
/// out or lives too long. Gives the bytes the client sent and received.
pub(crate) async fn serve<C>(o: Opened, client: C, first: Vec<u8>) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let shared = o.shared.clone();
    let activity = Activity::new();
    let watched = Watched::new(Replay::new(first, client), activity.clone());
    let (sent, received) = (watched.bytes_read(), watched.bytes_written());
    let origin = Origin {
        protocol: "http",
        machine: o.machine.clone(),
        target: Some((o.host.to_string(), o.port)),
    };
    let guarded = Guarded::new(watched, shared.clone(), origin);
    let o = Arc::new(o);
    let svc = hyper::service::service_fn(move |req| {
        let o = o.clone();
        async move { Ok::<_, std::convert::Infallible>(inner(&o, None, req).await) }
    });
    let cfg = &shared.config;
    let conn = crate::server::http1_guarded(cfg).serve_connection(TokioIo::new(guarded), svc);
    tokio::select! {
        _ = tokio::time::timeout(cfg.tunnel_timeout, conn) => {}
        () = activity.wait_idle(cfg.idle_timeout) => {}
    }
    (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    )
}
