//! Passing an allowed request on: pooled upstream connections made only to
//! the address the policy checked, hop-by-hop headers and credentials
//! removed, bodies streamed both ways and counted for the record.

use crate::answer::{self, Body, BoxError, Fault};
use crate::config::Config;
use crate::http::Target;
use crate::phase::{self, Ctx};
use crate::state::Shared;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use veto_policy::{Host, Protocol};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

pub fn client(config: &Config) -> Client {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    // The URI carries an IP literal (see `upstream_uri`), so the connector
    // never resolves anything itself.
    http.enforce_http(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(http)
}

/// The upstream URI: the checked address, not the name, so the pool keys
/// connections by address and no connection is ever made to an address the
/// policy did not see. The name travels in the Host header.
pub fn upstream_uri(
    ip: std::net::IpAddr,
    port: u16,
    path_and_query: &str,
) -> Result<http::Uri, http::Error> {
    let authority = match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers (RFC 9110 7.6.1), those the Connection header
/// names, and the client's proxy credentials. Transfer-Encoding is left to
/// hyper, which frames each side itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Adds this hop to `Via` (RFC 9110 7.6.3), after any the message carries:
/// the received protocol and veto's pseudonym.
fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_2 => "2 veto",
        http::Version::HTTP_10 => "1.0 veto",
        _ => "1.1 veto",
    };
    headers.append(http::header::VIA, HeaderValue::from_static(hop));
}

/// An upstream's `Veto-*` headers are dropped: only veto speaks for veto,
/// so a destination cannot forge a decision (`Veto-Decision: allow`) or
/// another request's id.
fn drop_veto_headers(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("veto-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// Set in a [`Counted`] count when the body it passes on failed: the
/// client's body broke, so a failed exchange is the client's fault, not
/// the upstream's. (A flag bit, not a second atomic: no allocation.)
const BROKEN: u64 = 1 << 63;

/// A body that counts the bytes passing through and reports the total once,
/// when it ends or is dropped (a client that hangs up still gets a record).
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl<B> Counted<B> {
    pub fn new(
        inner: B,
        count: Arc<AtomicU64>,
        on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    ) -> Counted<B> {
        Counted {
            inner,
            count,
            on_end,
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.count.load(Ordering::Relaxed) & !BROKEN);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> hyper::body::Body for Counted<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.count.fetch_or(BROKEN, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Boxes any body for the client or the answer.
pub fn boxed<B>(b: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// Which connection an allowed request leaves by.
pub enum Via<'a> {
    /// The shared pool of plain HTTP connections, keyed by checked address.
    Pool,
    /// The TLS connection(s) of an opened tunnel, to its checked address.
    Tunnel(&'a crate::intercept::Upstream),
}

/// Phase: answer. Sends an allowed request on and streams the answer
/// back; the completion is recorded when the answer's body ends.
pub(crate) async fn send(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    mut parts: http::request::Parts,
    t: &Target<'_>,
    body: Body,
    via: Via<'_>,
) -> Result<Response<Body>, Response<Body>> {
    let (host, port) = (&t.host, t.port);
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    crate::loops::add(&mut parts.headers, shared.cdn_loop.as_ref());
    // A body veto read (and may have redacted) is sent with its own length;
    // a streamed one keeps the client's framing.
    let exact = hyper::body::Body::size_hint(&body).exact();
    if let Some(n) =
        exact.filter(|n| *n > 0 || parts.headers.contains_key(http::header::CONTENT_LENGTH))
    {
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let default_port = if t.protocol == Protocol::Https {
        443
    } else {
        80
    };
    // Built only where it is needed (a tunnel's request, or a request
    // without Host): most plain requests carry their Host.
    let authority = || match (host, port) {
        (Host::Ip(std::net::IpAddr::V6(v6)), p) if p == default_port => format!("[{v6}]"),
        (Host::Ip(std::net::IpAddr::V6(v6)), p) => format!("[{v6}]:{p}"),
        (h, p) if p == default_port => h.to_string(),
        (h, p) => format!("{h}:{p}"),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let fail = |fault: Fault, why: String| {
        let count = sent.load(Ordering::Relaxed);
        let (fault, why) = if count & BROKEN != 0 {
            (
                Fault::Downstream(http::StatusCode::BAD_REQUEST),
                "the request body could not be read to its end".to_string(),
            )
        } else {
            (fault, why)
        };
        phase::complete(
            shared,
            ctx,
            Some(fault.status().as_u16()),
            count & !BROKEN,
            0,
        );
        answer::error(fault, &why, Some(&ctx.id))
    };
    let body = boxed(Counted::new(body, sent.clone(), None));
    // Each way is awaited in its own arm: no boxed future per request.
    let wait = shared.config.response_timeout;
    let answered = match via {
        Via::Pool => {
            let ips = t.ips.unwrap_or_default();
            let ip = ips
                .iter()
                .find(|ip| ip.is_ipv4())
                .or_else(|| ips.first())
                .copied();
            let Some(ip) = ip else {
                return Err(fail(
                    Fault::UpstreamUnreachable,
                    "no address to connect to".into(),
                ));
            };
            parts.uri = match upstream_uri(ip, port, t.target) {
                Ok(uri) => uri,
                Err(e) => {
                    return Err(fail(
                        Fault::Downstream(http::StatusCode::BAD_REQUEST),
                        format!("the request target cannot be sent: {e}"),
                    ));
                }
            };
            // The Host is the target's authority, whatever the client's own
            // Host said (RFC 9112 3.2.2): a request decided for one host
            // must not reach another virtual host of a shared upstream.
            match HeaderValue::from_str(&authority()) {
                Ok(v) => {
                    parts.headers.insert(http::header::HOST, v);
                }
                Err(_) => {
                    return Err(fail(
                        Fault::Downstream(http::StatusCode::BAD_REQUEST),
                        "the target's authority cannot be a Host header".into(),
                    ));
                }
            }
            parts.version = http::Version::HTTP_11;
            let client = shared.client.clone();
            let req = Request::from_parts(parts, body);
            tokio::time::timeout(wait, async move {
                client.request(req).await.map_err(|e| {
                    let why = std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| s.to_string());
                    format!("cannot reach {host}:{port} ({ip}): {why}")
                })
            })
            .await
        }
        Via::Tunnel(up) => {
            let req = Request::from_parts(parts, body);
            tokio::time::timeout(wait, up.send(req, authority(), t.target)).await
        }
    };
    let resp = match answered {
        Err(_) => {
            return Err(fail(
                Fault::UpstreamTimeout,
                format!(
                    "{host}:{port} did not answer within {}s",
                    shared.config.response_timeout.as_secs()
                ),
            ));
        }
        Ok(Err(why)) => return Err(fail(Fault::UpstreamUnreachable, why)),
        Ok(Ok(resp)) => resp,
    };
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    drop_veto_headers(&mut rparts.headers);
    add_via(&mut rparts.headers, rparts.version);
    let status = rparts.status.as_u16();
    let received = Arc::new(AtomicU64::new(0));
    let done = {
        let (shared, id, started) = (shared.clone(), ctx.id.clone(), ctx.started);
        move |bytes_in: u64| {
            let out = sent.load(Ordering::Relaxed) & !BROKEN;
            phase::completion(&shared, id, started, None, Some(status), out, bytes_in);
        }
    };
    let body = Counted::new(rbody, received, Some(Box::new(done)));
    Ok(Response::from_parts(rparts, boxed(body)))
}
