//! CONNECT tunnels: decided on host and port; classified as `tls` or `tcp`
//! by the first bytes the client sends; a TLS server name that differs from
//! the CONNECT host is refused (domain fronting, covert tunnels).
//!
//! When the decision does not depend on the protocol (the usual case), it
//! is made and recorded before the client hears anything, the upstream is
//! dialled, and only then does the client get `200`. Server-speaks-first
//! protocols work: the server's bytes flow at once, while the client's
//! first bytes are held until they are classified. When the decision does
//! depend on the protocol, the client gets `200`, veto waits (bounded) for
//! its first bytes, decides, records, and only then dials the destination,
//! so a refused destination never even sees a connection attempt.

use crate::answer::{self, Body, Fault};
use crate::first_bytes::{first_bytes, settled, unfinished};
use crate::idle::{Activity, Watched};
use crate::phase::{self, Ctx, Seen, Verdict};
use crate::sni::{self, Hello};
use crate::splice::{ClientIo, Spliceable};
use crate::state::{Active, Shared};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use veto_policy::{DataSet, Effect, Host, Protocol, normalize_host};

fn bad_request(why: &str) -> Response<Body> {
    answer::error(Fault::Downstream(StatusCode::BAD_REQUEST), why, None)
}

/// The tunnel's fixed facts, shared with the task that runs it. A
/// transparent connection (`transparent.rs`) is one too.
pub(crate) struct Tunnel {
    shared: Arc<Shared>,
    active: Arc<Active>,
    host: Host,
    port: u16,
    pub ips: Vec<IpAddr>,
    /// Whether veto asked DNS for the host.
    pub dns_lookup: bool,
    machine: String,
    /// Whether credentials proved `machine` (see `Ctx::proven`).
    pub proven: bool,
    /// A rule that makes this tunnel one to open if it is TLS.
    pub opens: Option<u32>,
}

/// The rule that makes a tunnel one to open (policy-v1, "What veto cannot
/// see"): interception is on, a rule with `methods`, `paths` or `data`
/// could apply, and nothing refuses the tunnel whatever is inside.
fn opens(shared: &Shared, active: &Active, d: &veto_policy::Decision) -> Option<u32> {
    shared.intercept.as_ref()?;
    if active.policy.document().intercept != veto_policy::Intercept::Auto {
        return None;
    }
    let refused_anyway = d.applied.effect == veto_policy::Effect::Deny
        && matches!(
            d.applied.by,
            veto_policy::By::Rule(_) | veto_policy::By::PrivateNetwork(..)
        );
    d.inspect.filter(|_| !refused_anyway)
}

impl Tunnel {
    pub fn new(
        shared: &Arc<Shared>,
        active: Arc<Active>,
        host: Host,
        port: u16,
        machine: &str,
    ) -> Tunnel {
        Tunnel {
            shared: shared.clone(),
            active,
            host,
            port,
            ips: Vec::new(),
            dns_lookup: false,
            machine: machine.to_string(),
            proven: false,
            opens: None,
        }
    }

    /// The decision when the name alone refuses the tunnel, whatever it
    /// resolves to (then it is never looked up).
    pub fn refused_by_name(&self, protocol: Protocol, now: i64) -> Option<veto_policy::Decision> {
        matches!(self.host, Host::Name(_))
            .then(|| {
                self.active
                    .policy
                    .refused_by_name(&self.view(protocol, now), &self.shared.grants)
            })
            .flatten()
    }

    /// The rule that makes this tunnel, if TLS, one to open.
    pub fn opens_for(&self, now: i64) -> Option<u32> {
        let (d, _) = Verdict::decide(&self.shared, &self.active, &self.view(Protocol::Tls, now));
        opens(&self.shared, &self.active, &d)
    }

    fn view(&self, protocol: Protocol, now: i64) -> veto_policy::Request<'_> {
        veto_policy::Request {
            machine: &self.machine,
            protocol,
            host: self.host.as_ref(),
            port: self.port,
            ips: &self.ips,
            method: "",
            path: "",
            data: DataSet::EMPTY,
            now,
        }
    }

    pub fn seen(&self, protocol: &'static str) -> Seen<'_> {
        Seen {
            protocol,
            host: self.host.as_ref(),
            port: self.port,
            method: None,
            path: None,
            ips: &self.ips,
            dns_lookup: self.dns_lookup,
            data: BTreeMap::new(),
        }
    }

    async fn dial(&self) -> Result<TcpStream, (Fault, String)> {
        let timeout = self.shared.config.connect_timeout;
        crate::dial::dial(&self.host, &self.ips, self.port, timeout)
            .await
            .map(|(s, _)| s)
    }
}

pub async fn serve(
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Err(bad_request("CONNECT needs a HOST:PORT target"));
    };
    let port = match crate::head::port(&authority, 0) {
        Ok(0) => return Err(bad_request("CONNECT needs a HOST:PORT target with a port")),
        Ok(p) => p,
        Err((_, why)) => return Err(bad_request(&why)),
    };
    let host = normalize_host(authority.host()).map_err(|e| bad_request(&e.to_string()))?;
    phase::identify(shared, req.headers(), ctx)?;
    let mut t = Tunnel::new(shared, shared.policy.load_full(), host, port, &ctx.machine);
    t.proven = ctx.proven;
    let hash = t.active.policy.hash().to_string();
    let now = ctx.now_secs();
    // A name refused whatever it resolves to is never looked up: the query
    // itself would carry the name out.
    let by_name = [Protocol::Tls, Protocol::Tcp]
        .iter()
        .all(|p| t.refused_by_name(*p, now).is_some());
    if !by_name {
        t.ips = phase::resolve(shared, &t.host)
            .await
            .map_err(|(fault, why)| answer::error(fault, &why, None))?;
        t.dns_lookup = matches!(&t.host, Host::Name(n) if !shared.resolver.overrides(n));
    }

    let early = match phase::names_self(shared, &t.ips, port) {
        Some(why) => Some(Verdict::refuse("private-network", why)),
        None if by_name => {
            Some(Verdict::decide(&t.shared, &t.active, &t.view(Protocol::Tls, now)).1)
        }
        None => {
            let (d_tls, v_tls) = Verdict::decide(&t.shared, &t.active, &t.view(Protocol::Tls, now));
            let (d_tcp, _) = Verdict::decide(&t.shared, &t.active, &t.view(Protocol::Tcp, now));
            t.opens = opens(shared, &t.active, &d_tls);
            (d_tls == d_tcp && t.opens.is_none()).then_some(v_tls)
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    match early {
        Some(verdict) => {
            // Decided before any byte: recorded as `tcp` until the first
            // bytes show TLS (the completion says which).
            let refused = verdict.effect == Effect::Deny;
            phase::audit(
                shared,
                ctx,
                &hash,
                t.seen("tcp"),
                &verdict,
                refused.then_some(403),
            )
            .await?;
            if refused {
                return Ok(answer::refusal(&verdict.rule, &verdict.reason, &ctx.id));
            }
            let upstream = match t.dial().await {
                Ok(s) => s,
                Err((fault, why)) => {
                    phase::complete(shared, ctx, Some(fault.status().as_u16()), 0, 0);
                    return Err(answer::error(fault, &why, Some(&ctx.id)));
                }
            };
            let task_ctx = ctx.clone();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(up) => relay(t, task_ctx, ClientIo::new(up), upstream, None).await,
                    Err(_) => phase::complete(&t.shared, &task_ctx, Some(499), 0, 0),
                }
            });
        }
        None => {
            let task_ctx = ctx.clone();
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    decide_after_peek(t, task_ctx, ClientIo::new(up), hash).await;
                }
            });
        }
    }
    Ok(Response::new(answer::empty()))
}

/// The decision depends on the protocol: classify first, then decide,
/// record and only then dial.
async fn decide_after_peek<C>(t: Tunnel, mut ctx: Ctx, mut client: C, hash: String)
where
    C: AsyncRead + AsyncWrite + Spliceable + Unpin + Send + 'static,
{
    let first = first_bytes(&mut client, t.shared.config.peek_timeout).await;
    // The decision's time is when it is made.
    let (ms, time) = veto_audit::now();
    ctx.unix_ms = ms;
    ctx.time = time;
    decide_first(t, ctx, client, first, hash).await;
}

/// Decides a tunnel by the client's first bytes (already read), records,
/// and only then dials: the rest of [`decide_after_peek`], and all of a
/// transparent connection's that is not plain HTTP.
pub(crate) async fn decide_first<C>(
    t: Tunnel,
    ctx: Ctx,
    mut client: C,
    first: Vec<u8>,
    hash: String,
) where
    C: AsyncRead + AsyncWrite + Spliceable + Unpin + Send + 'static,
{
    let hello = sni::parse(&first);
    if let Some(why) = unfinished(&hello, &first, &t.shared) {
        let verdict = Verdict::refuse("malformed-request", why);
        let _ = phase::audit(&t.shared, &ctx, &hash, t.seen("tls"), &verdict, Some(400)).await;
        let _ = client.shutdown().await;
        return;
    }
    let (protocol, label) = match hello {
        Hello::Tls(_) => (Protocol::Tls, "tls"),
        _ => (Protocol::Tcp, "tcp"),
    };
    let (_, mut verdict) = Verdict::decide(&t.shared, &t.active, &t.view(protocol, ctx.now_secs()));
    if let (Protocol::Tls, Some(rule)) = (protocol, t.opens) {
        if let Err(why) = open(&t, &ctx, client, first, rule, &hash).await {
            // Not opened: decided as a tunnel veto cannot see into.
            verdict.reason = format!("veto could not open the tunnel ({why}); {}", verdict.reason);
            let refused = verdict.effect == Effect::Deny;
            let status = if refused { 403 } else { 499 };
            let _ = phase::audit(
                &t.shared,
                &ctx,
                &hash,
                t.seen("tls"),
                &verdict,
                Some(status),
            )
            .await;
        }
        return;
    }
    let refused = verdict.effect == Effect::Deny;
    if phase::audit(
        &t.shared,
        &ctx,
        &hash,
        t.seen(label),
        &verdict,
        refused.then_some(403),
    )
    .await
    .is_err()
        || refused
    {
        let _ = client.shutdown().await;
        return;
    }
    match t.dial().await {
        Ok(upstream) => relay(t, ctx, client, upstream, Some(first)).await,
        Err((fault, _)) => {
            phase::complete(&t.shared, &ctx, Some(fault.status().as_u16()), 0, 0);
            let _ = client.shutdown().await;
        }
    }
}

impl Tunnel {
    /// The tunnel as the requests inside it see it, once veto serves them.
    fn opened(&self) -> crate::intercept::Opened {
        crate::intercept::Opened {
            shared: self.shared.clone(),
            host: self.host.clone(),
            port: self.port,
            ips: self.ips.clone(),
            machine: self.machine.clone(),
            proven: self.proven,
            claim: None,
        }
    }
}

/// Opens a TLS tunnel for inspection: its name checked against the CONNECT
/// host, the client's TLS opened, the tunnel recorded, then every request
/// inside decided on its own. `Err` says why it could not be opened.
async fn open<C>(
    t: &Tunnel,
    ctx: &Ctx,
    client: C,
    first: Vec<u8>,
    rule: u32,
    hash: &str,
) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Hello::Tls(Some(name)) = sni::parse(&first)
        && !same_host(&name, &t.host)
    {
        refuse_fronting(t, ctx, &name).await;
        phase::complete_as(&t.shared, ctx, "tls", Some(403), 0, 0);
        return Ok(());
    }
    let Some(interceptor) = t.shared.intercept.as_ref() else {
        return Err("no CA is configured".into());
    };
    let o = t.opened();
    let accepted = crate::intercept::accept(&o, interceptor, client, first).await?;
    let id = t.active.policy.rule_id(veto_policy::By::Rule(rule));
    let verdict = Verdict {
        effect: Effect::Allow,
        would: None,
        rule: id.to_string(),
        reason: format!(
            "opened to decide each request inside: rule `{id}` looks at methods, paths or data"
        ),
    };
    if phase::audit(&t.shared, ctx, hash, t.seen("tls"), &verdict, None)
        .await
        .is_err()
    {
        return Ok(());
    }
    t.shared.metrics.tunnel_opened();
    let (sent, received) = accepted.serve(o, interceptor).await;
    t.shared.metrics.tunnel_closed();
    phase::complete_as(&t.shared, ctx, "tls", Some(200), sent, received);
    Ok(())
}

fn same_host(name: &str, host: &Host) -> bool {
    match (normalize_host(name), host) {
        (Ok(Host::Name(n)), Host::Name(h)) => n == *h,
        _ => false,
    }
}

/// Copies both ways. The client's first bytes are classified before they
/// go anywhere: a TLS name that differs from the CONNECT host closes the
/// tunnel, with its own refusal record.
async fn relay<C>(
    t: Tunnel,
    ctx: Ctx,
    mut client: C,
    mut upstream: TcpStream,
    first: Option<Vec<u8>>,
) where
    C: AsyncRead + AsyncWrite + Spliceable + Unpin,
{
    let mut first = first;
    let mut from_server = 0u64;
    let mut to_server: u64;
    let mut status = 200u16;
    let mut protocol = "tcp";
    let mut http_first = None;
    {
        // Split borrows `upstream` until the first bytes are settled.
        let (mut up_read, mut up_write) = upstream.split();
        if first.is_none() {
            // Let the server speak first if it does, while holding the client's
            // first bytes for classification.
            let mut buf = vec![0u8; 16 * 1024];
            let mut sbuf = vec![0u8; 16 * 1024];
            let mut held = Vec::new();
            // Once the client has begun, its hello is bounded in time: a
            // hello sent a few bytes at a time must not wait for ever.
            let mut deadline: Option<tokio::time::Instant> = None;
            let until = async |d: Option<tokio::time::Instant>| match d {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            };
            loop {
                tokio::select! {
                    n = client.read(&mut buf) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            held.extend_from_slice(&buf[..n]);
                            if settled(&held) { break; }
                            deadline.get_or_insert(tokio::time::Instant::now() + t.shared.config.peek_timeout);
                        }
                    },
                    () = until(deadline) => break,
                    n = up_read.read(&mut sbuf) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            from_server += n as u64;
                            if client.write_all(&sbuf[..n]).await.is_err() { break; }
                        }
                    },
                }
            }
            first = Some(held);
        }
        let first = first.unwrap_or_default();
        let hello = sni::parse(&first);
        if let Some(why) = unfinished(&hello, &first, &t.shared) {
            refuse_inside(&t, &ctx, "malformed-request", why).await;
            phase::complete_as(&t.shared, &ctx, "tls", Some(400), 0, from_server);
            let _ = client.shutdown().await;
            return;
        }
        let is_http = crate::head::http_start(&first) == crate::head::Start::Yes;
        if is_http {
            // Decided request by request below.
        } else if let Hello::Tls(sni_name) = hello {
            protocol = "tls";
            if let Some(name) = sni_name
                && !same_host(&name, &t.host)
            {
                refuse_fronting(&t, &ctx, &name).await;
                phase::complete_as(&t.shared, &ctx, protocol, Some(403), 0, from_server);
                let _ = client.shutdown().await;
                return;
            }
        }
        to_server = first.len() as u64;
        if is_http {
            http_first = Some(first);
        } else if !first.is_empty() && up_write.write_all(&first).await.is_err() {
            status = 502;
        }
    }
    if let Some(first) = http_first {
        // Plain HTTP: each request inside is decided and forwarded on its
        // own (`inside.rs`); this connection to the upstream is not used.
        drop(upstream);
        let (sent, received) = crate::inside::serve(t.opened(), client, first).await;
        phase::complete_as(
            &t.shared,
            &ctx,
            "http",
            Some(200),
            sent,
            received + from_server,
        );
        return;
    }
    if status == 200 && client.socket().is_some() {
        t.shared.metrics.tunnel_opened();
        let activity = Activity::new();
        let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
        if let Some(sock) = client.socket() {
            let copy = crate::splice::both_ways(sock, &upstream, &sent, &received, &activity);
            let cfg = &t.shared.config;
            tokio::select! {
                _ = tokio::time::timeout(cfg.tunnel_timeout, copy) => {}
                () = activity.wait_idle(cfg.idle_timeout) => {
                    tracing::debug!(tunnel = %ctx.id, "tunnel idle; closed");
                }
            }
        }
        to_server += sent.load(std::sync::atomic::Ordering::Relaxed);
        from_server += received.load(std::sync::atomic::Ordering::Relaxed);
        t.shared.metrics.tunnel_closed();
    } else if status == 200 {
        t.shared.metrics.tunnel_opened();
        let activity = Activity::new();
        let mut c = Watched::new(&mut client, activity.clone());
        let mut u = Watched::new(&mut upstream, activity.clone());
        let (sent, received) = (c.bytes_read(), u.bytes_read());
        // 64 KiB buffers: eight times fewer reads than tokio's default 8 KiB
        // on bulk transfers (measured in BENCHMARKS.md).
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, 64 * 1024, 64 * 1024);
        let cfg = &t.shared.config;
        tokio::select! {
            _ = tokio::time::timeout(cfg.tunnel_timeout, copy) => {}
            () = activity.wait_idle(cfg.idle_timeout) => {
                tracing::debug!(tunnel = %ctx.id, "tunnel idle; closed");
            }
        }
        to_server += sent.load(std::sync::atomic::Ordering::Relaxed);
        from_server += received.load(std::sync::atomic::Ordering::Relaxed);
        t.shared.metrics.tunnel_closed();
    }
    phase::complete_as(
        &t.shared,
        &ctx,
        protocol,
        Some(status),
        to_server,
        from_server,
    );
}

/// A TLS name that is not the CONNECT host: its own refusal record, then
/// the tunnel closes.
async fn refuse_fronting(t: &Tunnel, tunnel_ctx: &Ctx, sni_name: &str) {
    let why = format!(
        "the tunnel was opened to {} but its TLS names `{sni_name}` (domain fronting or a covert tunnel); tunnel {} closed",
        t.host, tunnel_ctx.id
    );
    refuse_inside(t, tunnel_ctx, "sni-mismatch", why).await;
}

/// A refusal of what a tunnel's first bytes showed, after the tunnel itself
/// was decided and recorded: a record of its own.
async fn refuse_inside(t: &Tunnel, tunnel_ctx: &Ctx, rule: &str, why: String) {
    let mut ctx = Ctx::new();
    ctx.machine = tunnel_ctx.machine.clone();
    let status = if rule == "sni-mismatch" { 403 } else { 400 };
    let verdict = Verdict::refuse(rule, why);
    let hash = t.active.policy.hash().to_string();
    let _ = phase::audit(
        &t.shared,
        &ctx,
        &hash,
        t.seen("tls"),
        &verdict,
        Some(status),
    )
    .await;
}
