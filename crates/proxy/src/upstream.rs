//! Plain-HTTP upstream connections, driven by the client connection's own
//! task.
//!
//! Why not hyper-util's pooled client: it runs every upstream connection in
//! a task of its own, so each request crosses tasks (often threads) twice,
//! through a pool lock and a channel. Here a client connection's task polls
//! the upstream connections its requests use, beside its own: the request,
//! the upstream's answer and the client's next request wake one task. A bare
//! hyper proxy gains 13-20% req/s this way on the benchmark machine.
//!
//! A connection is checked out of the shared [`Pool`] (or dialled) by the
//! first request of a client connection that needs one, stays with that
//! client connection while it lives (its later requests to the same address
//! reuse it without touching the pool), and goes back to the pool, idle,
//! when the client connection ends. An idle pooled connection is polled by
//! nobody; whether the upstream closed it meanwhile is checked when it is
//! taken out.

use crate::answer::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

type Conn = http1::Connection<TokioIo<TcpStream>, Body>;

/// Idle connections per upstream address beyond this are closed.
const MAX_IDLE_PER_ADDR: usize = 256;
/// Free upstream connections one client connection keeps beyond this are
/// closed.
const MAX_KEPT: usize = 8;
/// An idle connection older than this is closed, not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

struct Idle {
    sender: http1::SendRequest<Body>,
    conn: Pin<Box<Conn>>,
    since: Instant,
}

/// Idle upstream connections shared by all client connections, keyed by
/// the checked address they were made to. The lock is held for a map
/// update, never across I/O.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Idles>,
}

#[derive(Default)]
struct Idles {
    by_addr: HashMap<SocketAddr, Vec<Idle>>,
    swept: Option<Instant>,
}

impl Pool {
    fn take(&self, addr: SocketAddr) -> Option<Idle> {
        let now = Instant::now();
        loop {
            // Checked outside the lock: the check reads from the socket.
            let mut idle = {
                let mut idles = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idles.by_addr.get_mut(&addr)?.pop()?
            };
            if now.duration_since(idle.since) < IDLE_TIMEOUT && alive(&mut idle) {
                return Some(idle);
            }
        }
    }

    fn put(&self, addr: SocketAddr, idle: Idle) {
        let mut idles = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Connections to addresses no request goes to any more would stay
        // open forever: every so often, the expired ones are closed.
        let now = idle.since;
        if idles
            .swept
            .is_none_or(|t| now.duration_since(t) > IDLE_TIMEOUT / 3)
        {
            idles.swept = Some(now);
            idles.by_addr.retain(|_, list| {
                list.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = idles.by_addr.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(idle);
        }
    }

    /// Idle connections held (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        let idles = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idles.by_addr.values().map(Vec::len).sum()
    }
}

/// Whether an idle connection can carry a request: polled once, it takes
/// in whatever the upstream did while nobody watched (a close, say).
fn alive(idle: &mut Idle) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    idle.conn.as_mut().poll(&mut cx).is_pending() && idle.sender.is_ready()
}

/// One client connection's upstream connections: the request side (senders,
/// used by its requests) and the driving side ([`Driver`], polled by its
/// task). Both live in the one task; the lock is never contended and never
/// held across I/O.
pub struct Affinity {
    senders: Mutex<Vec<Held>>,
    to_driver: mpsc::UnboundedSender<(u64, SocketAddr, Pin<Box<Conn>>)>,
    next: std::sync::atomic::AtomicU64,
}

struct Held {
    id: u64,
    addr: SocketAddr,
    /// `None` while a request is using it.
    sender: Option<http1::SendRequest<Body>>,
}

/// Polls a client connection's upstream connections; see [`Affinity`].
pub struct Driver {
    from_requests: mpsc::UnboundedReceiver<(u64, SocketAddr, Pin<Box<Conn>>)>,
    conns: Vec<(u64, SocketAddr, Pin<Box<Conn>>)>,
}

pub fn affinity() -> (std::sync::Arc<Affinity>, Driver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        std::sync::Arc::new(Affinity {
            senders: Mutex::new(Vec::new()),
            to_driver: tx,
            next: std::sync::atomic::AtomicU64::new(0),
        }),
        Driver {
            from_requests: rx,
            conns: Vec::new(),
        },
    )
}

impl Driver {
    /// Drives the connections; never completes (the client connection's
    /// end is what ends it).
    pub async fn run(&mut self) {
        std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(c)) = self.from_requests.poll_recv(cx) {
                self.conns.push(c);
            }
            // A finished connection was closed (by either side, or with an
            // error its request has already been told of).
            self.conns
                .retain_mut(|(_, _, conn)| conn.as_mut().poll(cx).is_pending());
            Poll::<()>::Pending
        })
        .await
    }

    /// The client connection ended: its idle upstream connections go back
    /// to the pool; one still answering a request is closed.
    pub fn release(mut self, affinity: &Affinity, pool: &Pool) {
        while let Ok(c) = self.from_requests.try_recv() {
            self.conns.push(c);
        }
        let since = Instant::now();
        let free: Vec<_> = {
            let mut senders = affinity.senders.lock().unwrap_or_else(|p| p.into_inner());
            self.conns
                .drain(..)
                .filter_map(|(id, addr, conn)| {
                    let h = senders.iter_mut().find(|h| h.id == id)?;
                    Some((addr, h.sender.take()?, conn))
                })
                .collect()
        };
        for (addr, sender, conn) in free {
            let mut idle = Idle {
                sender,
                conn,
                since,
            };
            if alive(&mut idle) {
                pool.put(addr, idle);
            }
        }
    }
}

impl Affinity {
    /// Sends a request to `addr` on a connection of this client connection,
    /// one from the pool, or a new one (made within `connect_timeout`).
    /// `Err` says why the upstream could not be reached.
    pub async fn send(
        &self,
        pool: &Pool,
        addr: SocketAddr,
        mut req: http::Request<Body>,
        connect_timeout: Duration,
    ) -> Result<http::Response<Incoming>, String> {
        // A kept connection, then pooled ones: any of them may turn out to
        // be closed by the upstream just now, and a request it did not send
        // is sent again on the next.
        loop {
            let (id, mut sender) = match self.held(addr) {
                Some(h) => h,
                None => match pool.take(addr) {
                    Some(idle) => self.keep(addr, idle.sender, idle.conn),
                    None => break,
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.give_back(id, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(e.into_error().to_string()),
                },
            }
        }
        let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "no connection within {}s",
                    connect_timeout.as_secs_f32()
                ));
            }
        };
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        let (id, mut sender) = self.keep(addr, sender, Box::pin(conn));
        let resp = sender.send_request(req).await.map_err(|e| {
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        })?;
        self.give_back(id, sender);
        Ok(resp)
    }

    /// A kept connection to `addr` that is free, taken out for one request.
    fn held(&self, addr: SocketAddr) -> Option<(u64, http1::SendRequest<Body>)> {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        // Closed ones are forgotten (their driver side has ended).
        senders.retain(|h| h.sender.as_ref().is_none_or(|s| !s.is_closed()));
        let h = senders
            .iter_mut()
            .find(|h| h.addr == addr && h.sender.as_ref().is_some_and(|s| s.is_ready()))?;
        Some((h.id, h.sender.take()?))
    }

    /// Keeps a connection for this client connection: its driving side goes
    /// to the task, its sender is taken out for the request at hand.
    fn keep(
        &self,
        addr: SocketAddr,
        sender: http1::SendRequest<Body>,
        conn: Pin<Box<Conn>>,
    ) -> (u64, http1::SendRequest<Body>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Held {
                id,
                addr,
                sender: None,
            });
        // The driver lives as long as the connection's task, which outlives
        // its requests; if it is gone, the connection is simply dropped.
        let _ = self.to_driver.send((id, addr, conn));
        (id, sender)
    }

    fn give_back(&self, id: u64, sender: http1::SendRequest<Body>) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = senders.iter_mut().find(|h| h.id == id) {
            h.sender = Some(sender);
        }
        // A client that talks to many upstreams over one connection keeps
        // a few of their connections, not all: dropping a free sender lets
        // its connection close (the oldest first).
        if senders.iter().filter(|h| h.sender.is_some()).count() > MAX_KEPT
            && let Some(i) = senders.iter().position(|h| h.sender.is_some())
        {
            senders.remove(i);
        }
    }
}
