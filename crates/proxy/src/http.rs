//! Plain HTTP through the proxy: absolute-URI requests.

use crate::answer::{self, Body, Fault};
use crate::coding::Coding;
use crate::forward::{self, Via};
use crate::phase::{self, Ctx, Seen, Verdict};
use crate::state::Shared;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use veto_policy::{DataSet, Effect, Host, Protocol, normalize_host, normalize_path};

/// Serves one request: every answer, whatever it is, carries the id of
/// the request's audit record.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: crate::mtls::Peer,
) -> Response<Body> {
    let mut ctx = Ctx::new();
    ctx.peer = peer;
    let result = if let Some(refusal) = precheck(&shared, &req) {
        Err(refusal)
    } else if req.method() == http::Method::CONNECT {
        crate::connect::serve(&shared, &mut ctx, req).await
    } else {
        serve(&shared, &mut ctx, req).await
    };
    let mut resp = result.unwrap_or_else(|r| r);
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        resp.headers_mut().insert("veto-request-id", v);
    }
    resp
}

/// Checks every request gets before anything else: head limits, and
/// framing that could smuggle a second request.
pub(crate) fn precheck<B>(shared: &Shared, req: &Request<B>) -> Option<Response<Body>> {
    let head_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        // The target's parts, measured where they lie: no copy of the URI.
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if head_bytes > shared.config.max_header_bytes
        || req.headers().len() > shared.config.max_headers
    {
        // hyper bounds its read buffer, but one large read can carry a head
        // past it; the limit is enforced here as well.
        return Some(answer::error(
            Fault::Downstream(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            &format!(
                "the request head is larger than {} bytes or has more than {} fields",
                shared.config.max_header_bytes, shared.config.max_headers
            ),
            None,
        ));
    }
    smuggling(req.headers()).map(bad_request)
}

/// Framing that two servers could read two ways is refused outright
/// (RFC 9112 6.3): the proxy and the upstream must never disagree about
/// where one request ends and the next begins.
fn smuggling(h: &http::HeaderMap) -> Option<&'static str> {
    let te = h.get_all(http::header::TRANSFER_ENCODING).iter().count();
    let cl: Vec<_> = h.get_all(http::header::CONTENT_LENGTH).iter().collect();
    if te > 0 && !cl.is_empty() {
        return Some(
            "the request has both Content-Length and Transfer-Encoding (request smuggling)",
        );
    }
    if cl.len() > 1 && cl.windows(2).any(|w| w[0] != w[1]) {
        return Some("the request has conflicting Content-Length headers (request smuggling)");
    }
    if te > 0 {
        let chunked_last = h
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
        if !chunked_last {
            return Some(
                "the request's Transfer-Encoding does not end in chunked (request smuggling)",
            );
        }
    }
    None
}

fn bad_request(why: &str) -> Response<Body> {
    answer::error(Fault::Downstream(StatusCode::BAD_REQUEST), why, None)
}

async fn serve(
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
    req: Request<Incoming>,
) -> Result<Response<Body>, Response<Body>> {
    // Phase: target. A forward proxy is sent absolute URIs.
    let uri = req.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad_request(
                "send https:// requests through a CONNECT tunnel (HTTPS_PROXY), not as plain requests",
            ));
        }
        Some(other) => return Err(bad_request(&format!("veto does not proxy `{other}` URLs"))),
        None => {
            return Err(bad_request(
                "veto is a forward proxy: send absolute URIs (set HTTP_PROXY), not origin-form requests",
            ));
        }
    }
    let Some(authority_host) = uri.host() else {
        return Err(bad_request("the request URI has no host"));
    };
    let host = normalize_host(authority_host).map_err(|e| bad_request(&e.to_string()))?;
    let port = uri.port_u16().unwrap_or(80);
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();

    phase::identify(shared, req.headers(), ctx)?;
    let ips = phase::resolve(shared, &host)
        .await
        .map_err(|(fault, why)| answer::error(fault, &why, None))?;

    let t = Target {
        protocol: Protocol::Http,
        host: &host,
        port,
        target: &target,
        ips: &ips,
    };
    exchange(shared, ctx, &t, req, Via::Pool).await
}

/// Where a request goes, as the policy sees it: plain HTTP named by an
/// absolute URI, or HTTPS inside an opened tunnel.
pub(crate) struct Target<'a> {
    pub protocol: Protocol,
    pub host: &'a Host,
    pub port: u16,
    /// The path and query, as the client sent them.
    pub target: &'a str,
    pub ips: &'a [std::net::IpAddr],
}

/// The phases after resolve: inspect, decide, audit, answer. The same for
/// a plain request and one inside an opened tunnel.
pub(crate) async fn exchange(
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
    t: &Target<'_>,
    req: Request<Incoming>,
    via: Via<'_>,
) -> Result<Response<Body>, Response<Body>> {
    let Target {
        protocol,
        host,
        port,
        target,
        ips,
    } = *t;
    let path = normalize_path(target).into_owned();
    let active = shared.policy.load_full();
    let method = req.method().as_str().to_string();
    let (mut parts, body) = req.into_parts();
    let self_ref = phase::names_self(shared, ips, port);
    let view = |data: DataSet| veto_policy::Request {
        machine: &ctx.machine,
        protocol,
        host: host.as_ref(),
        port,
        ips,
        method: &method,
        path: &path,
        data,
        now: ctx.now_secs(),
    };

    // Phase: inspect. The body is read only when what it holds could
    // change the decision: deciding with no data and with every class tells.
    let decide_with = |data| active.policy.decide(&view(data), &shared.grants);
    let data_matters =
        self_ref.is_none() && decide_with(DataSet::EMPTY) != decide_with(DataSet(u128::MAX));
    let mut buffered: Option<Bytes> = None;
    let mut inspected: Option<Vec<u8>> = None;
    let mut streaming: Option<Incoming> = None;
    let mut unseen: Option<String> = None;
    let coding = Coding::of(&parts.headers);
    if !data_matters {
        streaming = Some(body);
    } else if let Coding::Other(name) = &coding {
        unseen = Some(format!(
            "the body is `{name}`-encoded, which veto does not decode"
        ));
    } else {
        match Limited::new(body, shared.config.inspect_limit)
            .collect()
            .await
        {
            Ok(collected) => {
                let raw = collected.to_bytes();
                match crate::coding::decode(&coding, &raw, shared.config.inspect_limit) {
                    Ok(plain) if coding != Coding::Identity => inspected = Some(plain),
                    Ok(_) => {}
                    Err(why) => unseen = Some(why),
                }
                buffered = Some(raw);
            }
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                unseen = Some(format!(
                    "the body is larger than the inspection limit ({} bytes)",
                    shared.config.inspect_limit
                ))
            }
            Err(e) => return Err(bad_request(&format!("cannot read the request body: {e}"))),
        }
    }
    let headers: Vec<(&[u8], &[u8])> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != http::header::PROXY_AUTHORIZATION)
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
        .collect();
    let scanned: &[u8] = match (&inspected, &buffered) {
        (Some(plain), _) => plain,
        (None, Some(raw)) => raw,
        (None, None) => &[],
    };
    let found = active.detectors.scan(target.as_bytes(), &headers, scanned);
    // What veto cannot read counts as holding every class: it is never
    // assumed harmless.
    let data = if unseen.is_some() {
        DataSet(u128::MAX)
    } else {
        found.set
    };

    // Phase: decide.
    let req_view = view(data);
    let (decision, mut verdict) = match self_ref {
        Some(why) => (None, Verdict::refuse("private-network", why)),
        None => {
            let (d, v) = Verdict::decide(shared, &active, &req_view);
            (Some(d), v)
        }
    };
    if let Some(what) = &unseen {
        // A redaction cannot be done on what cannot be read: refuse.
        verdict.effect = "deny";
        verdict.reason = format!(
            "{what}, so veto cannot check it for data: {}",
            verdict.reason
        );
    }
    let refused = verdict.effect == "deny";
    let seen = Seen {
        protocol: protocol.as_str(),
        host: host.as_ref(),
        port,
        method: Some(&method),
        path: Some(&path),
        ips,
        data: found.counts,
    };
    // Phase: audit.
    let policy_hash = active.policy.hash().to_string();
    phase::audit(
        shared,
        ctx,
        &policy_hash,
        seen,
        &verdict,
        refused.then_some(403),
    )
    .await?;
    if refused {
        return Ok(answer::refusal(&verdict.rule, &verdict.reason, &ctx.id));
    }

    // Phase: answer — forward.
    let redact = decision.filter(|d| d.effect() == Effect::Redact);
    // The target and header values are redacted as the body is.
    let redacted_target = redact.and_then(|d| {
        let classes = active.policy.redact_classes(&d);
        crate::redact::head(&active, target, &mut parts.headers, classes)
    });
    let body_out: Body = match (buffered, streaming) {
        (Some(bytes), _) => match redact {
            Some(d) => {
                // Redact the decoded body, then encode it as it came.
                let classes = active.policy.redact_classes(&d);
                let plain = inspected.as_deref().unwrap_or(&bytes);
                let masked =
                    crate::redact::body(&active, &headers_owned(&parts.headers), plain, classes);
                let out = crate::coding::encode(&coding, &masked).map_err(|e| {
                    answer::error(
                        Fault::Internal,
                        &format!("cannot re-encode the redacted body: {e}"),
                        Some(&ctx.id),
                    )
                })?;
                forward::boxed(Full::new(Bytes::from(out)))
            }
            None => forward::boxed(Full::new(bytes)),
        },
        (None, Some(incoming)) => forward::boxed(incoming),
        (None, None) => answer::empty(),
    };
    let t = Target {
        target: redacted_target.as_deref().unwrap_or(target),
        ..*t
    };
    forward::send(shared, ctx, parts, &t, body_out, via).await
}

fn headers_owned(h: &http::HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}
