//! Opening a CONNECT tunnel's TLS (policy-v1, "What veto cannot see").
//!
//! With `tls.intercept: auto` and a CA, a tunnel is opened exactly when a
//! rule with `methods`, `paths` or `data` could apply to it. veto then
//! shows the client a leaf minted for the CONNECT host, speaks HTTP/1.1 or
//! HTTP/2 to it (ALPN), and decides each request inside as protocol
//! `https`, through the same phases as a plain request. Upstream, it speaks
//! TLS to the checked address only, verifying the server's certificate
//! against the system roots or `--upstream-ca`. Every other tunnel is
//! never opened, so certificate pinning keeps working there.

use crate::answer::{self, Body};
use crate::forward::Via;
use crate::http::Target;
use crate::idle::{Activity, Watched};
use crate::phase::{self, Ctx, Seen, Verdict};
use crate::state::Shared;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use veto_policy::{Host, Protocol};

/// What interception needs: the leaves to show clients and the TLS
/// settings to reach upstreams with.
pub struct Interceptor {
    leaves: veto_ca::Leaves,
    provider: Arc<rustls::crypto::CryptoProvider>,
    upstream: Arc<rustls::ClientConfig>,
}

const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl Interceptor {
    /// `upstream_ca`: certificates to trust upstream instead of the system
    /// roots (`--upstream-ca`).
    pub fn new(
        ca: veto_ca::Ca,
        upstream_ca: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Interceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let (certs, from) = match upstream_ca {
            Some(certs) => (certs, "--upstream-ca"),
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "a system root certificate could not be read");
                }
                (found.certs, "the system's root certificates")
            }
        };
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "no usable certificate in {from}: veto could not verify any upstream it opens TLS to"
            ));
        }
        let mut upstream = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        upstream.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Interceptor {
            leaves: veto_ca::Leaves::new(ca, 1024),
            provider,
            upstream: Arc::new(upstream),
        })
    }

    /// How many minted leaves are cached.
    pub fn cached_leaves(&self) -> usize {
        self.leaves.len()
    }
}

/// Serves the one leaf minted for the tunnel's host, whatever the client
/// names (the name was checked against the CONNECT host already).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The tunnel's fixed facts, shared by the requests inside it.
pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    pub host: Host,
    pub port: u16,
    pub ips: Vec<IpAddr>,
    pub machine: String,
    /// Whether credentials proved `machine`: then its registration must
    /// still hold for every request inside (revoked, expired, idle).
    pub proven: bool,
    /// A transparent connection's claimed name, held to the address the
    /// client connected to (`transparent.rs`).
    pub claim: Option<Arc<crate::transparent::Claim>>,
}

/// A client whose TLS veto has opened, not yet served.
pub(crate) struct Accepted<C> {
    tls: tokio_rustls::server::TlsStream<Watched<Replay<C>>>,
    activity: Activity,
    sent: Arc<std::sync::atomic::AtomicU64>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

/// Opens the client's TLS with a leaf minted for the CONNECT host. `Err`
/// says why it could not (the client refused the leaf, say).
pub(crate) async fn accept<C>(
    o: &Opened,
    interceptor: &Interceptor,
    client: C,
    first: Vec<u8>,
) -> Result<Accepted<C>, String>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let name = match &o.host {
        Host::Name(n) => n.to_string(),
        Host::Ip(ip) => ip.to_string(),
    };
    let leaf = interceptor.leaves.get(&name).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(interceptor.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(leaf)));
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    let activity = Activity::new();
    let watched = Watched::new(Replay::new(first, client), activity.clone());
    let (sent, received) = (watched.bytes_read(), watched.bytes_written());
    let wait = o.shared.config.peek_timeout;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    match tokio::time::timeout(wait, acceptor.accept(watched)).await {
        Ok(Ok(tls)) => Ok(Accepted {
            tls,
            activity,
            sent,
            received,
        }),
        Ok(Err(e)) => Err(format!("the client refused veto's certificate: {e}")),
        Err(_) => Err(format!(
            "the client did not finish the TLS handshake within {}s",
            wait.as_secs()
        )),
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin + Send + 'static> Accepted<C> {
    /// Serves the requests inside until the client is done, the tunnel
    /// idles out or lives too long. Gives the bytes the client sent and
    /// received.
    pub(crate) async fn serve(self, o: Opened, interceptor: &Interceptor) -> (u64, u64) {
        let shared = o.shared.clone();
        let (tunnel_machine, tunnel_host, tunnel_port) =
            (o.machine.clone(), o.host.to_string(), o.port);
        let tunnel = Arc::new(Upstream {
            opened: o,
            config: interceptor.upstream.clone(),
            senders: Mutex::new(Vec::new()),
        });
        let svc = hyper::service::service_fn(move |req| {
            let tunnel = tunnel.clone();
            async move {
                Ok::<_, std::convert::Infallible>(inner(&tunnel.opened, Some(&tunnel), req).await)
            }
        });
        let cfg = &shared.config;
        // HTTP/2 by ALPN; otherwise HTTP/1.1 behind the same head guard as
        // the listener's, so a smuggled or malformed head inside a tunnel
        // gets the same refusal and record as outside one.
        let h2 = self.tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let conn: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = if h2 {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
                .serve_connection(TokioIo::new(self.tls), svc);
            Box::pin(async move {
                let _ = conn.await;
            })
        } else {
            let origin = crate::guard::Origin {
                protocol: "https",
                machine: tunnel_machine,
                target: Some((tunnel_host, tunnel_port)),
            };
            let guarded = crate::guard::Guarded::new(self.tls, shared.clone(), origin);
            let conn =
                crate::server::http1_guarded(cfg).serve_connection(TokioIo::new(guarded), svc);
            Box::pin(async move {
                let _ = conn.await;
            })
        };
        tokio::select! {
            _ = tokio::time::timeout(cfg.tunnel_timeout, conn) => {}
            () = self.activity.wait_idle(cfg.idle_timeout) => {}
        }
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (n(&self.sent), n(&self.received))
    }
}

/// One request inside an opened tunnel: its own id, record and answer.
/// `up`: the tunnel's TLS upstream; `None`, plain HTTP sent through a
/// CONNECT (see `inside.rs`), forwarded by the pool to the checked address.
pub(crate) async fn inner(
    o: &Opened,
    up: Option<&Upstream>,
    req: Request<Incoming>,
) -> Response<Body> {
    let (protocol, label, via) = match up {
        Some(up) => (Protocol::Https, "https", Via::Tunnel(up)),
        None => (Protocol::Http, "http", Via::Pool),
    };
    let mut ctx = Ctx::new();
    ctx.machine.clone_from(&o.machine);
    // The tunnel's identity was checked when it opened; revocation, expiry
    // and idle limits apply to each request inside as well.
    let revoked = if o.proven {
        o.shared
            .credentials
            .load()
            .check_machine(&o.machine, ctx.now_secs())
            .err()
    } else {
        phase::check_named(&o.shared, &o.machine, ctx.now_secs()).err()
    };
    let facts = crate::head::Facts::of(&req, label);
    let result = match crate::http::precheck(&o.shared, &req) {
        Some(refusal) => Err(refusal),
        None if revoked.is_some() => Err(answer::bad_credentials(
            revoked.as_deref().unwrap_or_default(),
        )),
        None => match other_host(&o.host, &req) {
            Some(named) => refuse_other_host(o, &ctx, &req, &named, label).await,
            None => {
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let target = target.to_string();
                let t = Target {
                    protocol,
                    host: &o.host,
                    port: o.port,
                    target: &target,
                    ips: Some(&o.ips),
                    claim: o.claim.as_deref(),
                };
                crate::http::exchange(&o.shared, &mut ctx, &t, req, via).await
            }
        },
    };
    let resp = result.unwrap_or_else(|r| r);
    phase::finish(&o.shared, &ctx, &facts, resp).await
}

/// The host a request inside the tunnel names, when it is not the CONNECT
/// host: fronting at the HTTP layer, refused like a differing TLS name.
fn other_host(host: &Host, req: &Request<Incoming>) -> Option<String> {
    let named = req.uri().host().map(str::to_string).or_else(|| {
        let h = req.headers().get(http::header::HOST)?.to_str().ok()?;
        let h = h.parse::<http::uri::Authority>().ok()?;
        Some(h.host().to_string())
    })?;
    match veto_policy::normalize_host(&named) {
        Ok(n) if n == *host => None,
        _ => Some(named),
    }
}

async fn refuse_other_host(
    o: &Opened,
    ctx: &Ctx,
    req: &Request<Incoming>,
    named: &str,
    protocol: &'static str,
) -> Result<Response<Body>, Response<Body>> {
    let verdict = Verdict::refuse(
        "sni-mismatch",
        format!(
            "the tunnel was opened to {} but a request inside it names `{named}` (domain fronting)",
            o.host
        ),
    );
    let path = req.uri().path();
    let seen = Seen {
        protocol,
        host: o.host.as_ref(),
        port: o.port,
        method: Some(req.method().as_str()),
        path: Some(path),
        ips: &o.ips,
        dns_lookup: false,
        data: BTreeMap::new(),
    };
    let hash = o.shared.policy.load().policy.hash().to_string();
    phase::audit(&o.shared, ctx, &hash, seen, &verdict, Some(403)).await?;
    Ok(answer::refusal(&verdict.rule, &verdict.reason, &ctx.id))
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// The upstream side of an opened tunnel: TLS connections to the checked
/// address, HTTP/2 shared by every request, HTTP/1.1 one request at a time.
pub struct Upstream {
    opened: Opened,
    config: Arc<rustls::ClientConfig>,
    /// Idle HTTP/1.1 senders, or the one HTTP/2 sender. The lock is held
    /// to take or return one, never across I/O.
    senders: Mutex<Vec<Sender>>,
}

/// Most idle HTTP/1.1 connections kept per tunnel.
const IDLE_PER_TUNNEL: usize = 8;

impl Upstream {
    fn senders(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<Sender> {
        let mut s = self.senders();
        s.retain(|s| !s.is_closed());
        if let Some(h2) = s.iter().find_map(|s| match s {
            Sender::H2(h2) => Some(h2.clone()),
            Sender::H1(_) => None,
        }) {
            return Some(Sender::H2(h2));
        }
        let ready = s
            .iter()
            .position(|s| matches!(s, Sender::H1(h1) if h1.is_ready()))?;
        Some(s.swap_remove(ready))
    }

    fn give_back(&self, sender: Sender) {
        let mut s = self.senders();
        let keep = match &sender {
            Sender::H2(_) => !s.iter().any(|s| matches!(s, Sender::H2(_))),
            Sender::H1(_) => s.len() < IDLE_PER_TUNNEL,
        };
        if keep {
            s.push(sender);
        }
    }

    /// Sends a request upstream. `authority` is the CONNECT host as the
    /// Host header (HTTP/1.1) or `:authority` (HTTP/2) carries it; `path`
    /// the request target (redacted, if it was).
    pub async fn send(
        &self,
        req: Request<Body>,
        authority: String,
        path: &str,
    ) -> Result<Response<Incoming>, String> {
        let (mut parts, body) = req.into_parts();
        let sender = match self.take() {
            Some(s) => s,
            None => self.dial().await?,
        };
        let o = &self.opened;
        let failed = |e: hyper::Error| format!("{}:{} failed the request: {e}", o.host, o.port);
        match sender {
            Sender::H1(mut s) => {
                parts.uri = path
                    .parse()
                    .map_err(|e| format!("bad request target: {e}"))?;
                parts.version = http::Version::HTTP_11;
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    parts.headers.insert(http::header::HOST, v);
                }
                let pending = s.send_request(Request::from_parts(parts, body));
                // The connection is ready again once this answer's body
                // is read; `take` checks that before reusing it.
                self.give_back(Sender::H1(s));
                pending.await.map_err(failed)
            }
            Sender::H2(mut s) => {
                parts.uri = format!("https://{authority}{path}")
                    .parse()
                    .map_err(|e| format!("bad request target: {e}"))?;
                parts.version = http::Version::HTTP_2;
                parts.headers.remove(http::header::HOST);
                let pending = s.send_request(Request::from_parts(parts, body));
                self.give_back(Sender::H2(s));
                pending.await.map_err(failed)
            }
        }
    }

    /// A new TLS connection to the first checked address that answers,
    /// its certificate verified for the CONNECT host.
    async fn dial(&self) -> Result<Sender, String> {
        let o = &self.opened;
        let cfg = &o.shared.config;
        let server_name = match &o.host {
            Host::Name(n) => ServerName::try_from(n.to_string()).map_err(|e| e.to_string())?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let (tcp, ip) = crate::dial::dial(&o.host, &o.ips, o.port, cfg.connect_timeout)
            .await
            .map_err(|(_, why)| why)?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls =
            match tokio::time::timeout(cfg.connect_timeout, connector.connect(server_name, tcp))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return Err(format!(
                        "the TLS of {}:{} ({ip}) cannot be trusted: {e}",
                        o.host, o.port
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{}:{} ({ip}) did not finish the TLS handshake in time",
                        o.host, o.port
                    ));
                }
            };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let fail = |e: hyper::Error| format!("{}:{} ({ip}): {e}", o.host, o.port);
        if h2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(fail)?;
            tokio::spawn(conn);
            Ok(Sender::H2(s))
        } else {
            let (s, conn) = http1::handshake(io).await.map_err(fail)?;
            tokio::spawn(conn);
            Ok(Sender::H1(s))
        }
    }
}

/// The client's stream with the bytes veto already read (the ClientHello
/// it classified) replayed first.
pub(crate) struct Replay<C> {
    first: Vec<u8>,
    at: usize,
    inner: C,
}

impl<C> Replay<C> {
    pub(crate) fn new(first: Vec<u8>, inner: C) -> Replay<C> {
        Replay {
            first,
            at: 0,
            inner,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Replay<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.first.len() {
            let n = (self.first.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.first[at..at + n]);
            self.at += n;
            if self.at == self.first.len() {
                self.first = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Replay<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
