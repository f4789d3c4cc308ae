//! Plain HTTP through the proxy: absolute-URI requests.

use crate::answer::{self, Body, Fault};
use crate::coding::Coding;
use crate::forward::{self, Via};
use crate::head::{self, Facts};
use crate::phase::{self, Ctx, Seen, Verdict};
use crate::state::Shared;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use veto_policy::{DataSet, Effect, Host, Protocol, normalize_host, normalize_path};

/// Serves one request: every answer, whatever it is, carries the id of
/// the request's audit record, and that record exists.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: crate::mtls::Peer,
) -> Response<Body> {
    let mut ctx = Ctx::new();
    ctx.peer = peer;
    let facts = Facts::of(&req, "http");
    let connect = req.method() == http::Method::CONNECT;
    let result = if let Some(refusal) = precheck(&shared, &req) {
        Err(refusal)
    } else if connect {
        crate::connect::serve(&shared, &mut ctx, req).await
    } else {
        serve(&shared, &mut ctx, req).await
    };
    let resp = result.unwrap_or_else(|r| r);
    let mut resp = phase::finish(&shared, &ctx, &facts, resp).await;
    if connect && resp.status() != StatusCode::OK {
        // A CONNECT not turned into a tunnel ends its connection: what the
        // client sends next was meant for a tunnel, not as requests.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
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
    head::framing(req.headers())
        .and_then(|()| head::one_host(req))
        .err()
        .map(refused)
}

fn refused((status, why): head::Refused) -> Response<Body> {
    answer::error(Fault::Downstream(status), &why, None)
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
    let port = match uri.authority() {
        Some(a) => head::port(a, 80).map_err(refused)?,
        None => 80,
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();

    phase::identify(shared, req.headers(), ctx)?;
    let t = Target {
        protocol: Protocol::Http,
        host: &host,
        port,
        target: &target,
        ips: None,
        claim: None,
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
    /// The checked addresses, when already known (an opened tunnel's);
    /// `None`: resolved here, once the name alone has not refused it.
    pub ips: Option<&'a [std::net::IpAddr]>,
    /// A transparent connection's: the host must be the address the
    /// client connected to (`ips`), or resolve to it.
    pub claim: Option<&'a crate::transparent::Claim>,
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
        claim,
    } = *t;
    let active = shared.policy.load_full();
    // Phase: target. What is decided is exactly what is forwarded: the
    // path in the policy's normal form (policy `paths:`).
    let target = veto_policy::forward_target(target, &active.policy.document().paths)
        .map_err(|e| bad_request(&e.to_string()))?;
    let target: &str = &target;
    let path = normalize_path(target).into_owned();
    let method = req.method().as_str().to_string();
    let mut overridden = head::method_override(req.headers(), target)
        .map_err(refused)?
        .filter(|m| *m != method);
    let (mut parts, body) = req.into_parts();
    // Phase: loops. A request that came back (or passed too many vetos)
    // is refused before anything is resolved or read.
    if let Some(why) = crate::loops::refused(
        &parts.headers,
        &shared.config.node_id,
        active.policy.document().loops,
    ) {
        let verdict = Verdict::refuse("loop", active.detectors.mask(&why).into_owned());
        let masked = active.detectors.mask(&path);
        let seen = Seen {
            protocol: protocol.as_str(),
            host: host.as_ref(),
            port,
            method: Some(&method),
            path: Some(&masked),
            ips: &[],
            dns_lookup: false,
            data: Default::default(),
        };
        let hash = active.policy.hash().to_string();
        phase::audit(shared, ctx, &hash, seen, &verdict, Some(508)).await?;
        return Ok(answer::refusal_status(
            StatusCode::LOOP_DETECTED,
            &verdict.rule,
            &verdict.reason,
            &ctx.id,
        ));
    }
    let at = At {
        machine: &ctx.machine,
        protocol,
        host,
        port,
        path: &path,
        now: ctx.now_secs(),
    };

    // Phase: resolve, only when the addresses can still change the
    // outcome: a lookup of a refused name would itself carry it out.
    let resolved: Vec<std::net::IpAddr>;
    let refused_by_name = || {
        matches!(host, Host::Name(_))
            && std::iter::once(method.as_str())
                .chain(overridden.as_deref())
                .any(|m| {
                    active
                        .policy
                        .refused_by_name(&at.view(&[], m, DataSet::EMPTY), &shared.grants)
                        .is_some()
                })
    };
    let (ips, dns_lookup, by_name) = match (ips, claim) {
        (Some(ips), None) => (ips, false, false),
        (Some(ips), Some(_)) if refused_by_name() => (ips, false, true),
        (Some(ips), Some(claim)) => match claim.verify(shared, host).await {
            Ok(dns) => (ips, dns, false),
            Err(why) => {
                let verdict = Verdict::refuse("address-mismatch", why);
                let seen = Seen {
                    protocol: protocol.as_str(),
                    host: host.as_ref(),
                    port,
                    method: Some(&method),
                    path: Some(&active.detectors.mask(&path)),
                    ips,
                    dns_lookup: false,
                    data: Default::default(),
                };
                let hash = active.policy.hash().to_string();
                phase::audit(shared, ctx, &hash, seen, &verdict, Some(403)).await?;
                return Ok(answer::refusal(&verdict.rule, &verdict.reason, &ctx.id));
            }
        },
        (None, _) => {
            if refused_by_name() {
                (&[][..], false, true)
            } else {
                resolved = phase::resolve(shared, host)
                    .await
                    .map_err(|(fault, why)| answer::error(fault, &why, None))?;
                let dns = matches!(host, Host::Name(n) if !shared.resolver.overrides(n));
                (&resolved[..], dns, false)
            }
        }
    };
    let self_ref = phase::names_self(shared, ips, port);
    // The stricter decision of the request line's method and an override.
    let decide_with = |over: Option<&str>, data: DataSet| {
        let d = active
            .policy
            .decide(&at.view(ips, &method, data), &shared.grants);
        match over {
            Some(m) => d.stricter(active.policy.decide(&at.view(ips, m, data), &shared.grants)),
            None => (d, false),
        }
    };

    // Phase: inspect. The body is read only when what it holds could
    // change the decision: deciding with no data and with every class
    // tells; and a POST whose body may say `_method=` when a rule naming
    // another method would decide otherwise.
    let live = self_ref.is_none() && !by_name;
    let data_matters = live
        && decide_with(overridden.as_deref(), DataSet::EMPTY).0
            != decide_with(overridden.as_deref(), DataSet(u128::MAX)).0;
    let method_matters = live
        && method == "POST"
        && head::body_may_override(&parts.headers)
        && active.methods.iter().any(|m| {
            [DataSet::EMPTY, DataSet(u128::MAX)]
                .iter()
                .any(|d| decide_with(Some(m), *d).0 != decide_with(None, *d).0)
        });
    let mut buffered: Option<Bytes> = None;
    let mut inspected: Option<Vec<u8>> = None;
    let mut streaming: Option<Incoming> = None;
    let mut unseen: Option<String> = None;
    let coding = Coding::of(&parts.headers);
    if !data_matters && !method_matters {
        streaming = Some(body);
    } else if let Coding::Other(name) = &coding {
        unseen = Some(format!(
            "the body is `{name}`-encoded, which veto does not decode"
        ));
    } else {
        // Bounded like a head: a body that trickles in would otherwise
        // hold its connection (and its client's slots) for ever.
        let wait = shared.config.body_timeout;
        let read = tokio::time::timeout(
            wait,
            Limited::new(body, shared.config.inspect_limit).collect(),
        )
        .await
        .map_err(|_| {
            answer::error(
                Fault::Downstream(StatusCode::REQUEST_TIMEOUT),
                &format!(
                    "the request body did not arrive within {}s (--body-timeout)",
                    wait.as_secs()
                ),
                None,
            )
        })?;
        match read {
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
    if method_matters && unseen.is_none() {
        match head::body_method(scanned).map_err(refused)? {
            Some(m) if overridden.as_ref().is_some_and(|o| *o != m) => {
                return Err(refused((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the request overrides its method twice, as `{}` and `{m}`",
                        overridden.unwrap_or_default()
                    ),
                )));
            }
            Some(m) if m != method => overridden = Some(m),
            _ => {}
        }
    }
    let found = active.detectors.scan(target.as_bytes(), &headers, scanned);
    if unseen.is_none()
        && let Some(why) = found.unreadable
    {
        unseen = Some(why.to_string());
    }
    // What veto cannot read counts as holding every class: it is never
    // assumed harmless.
    let data = if unseen.is_some() {
        DataSet(u128::MAX)
    } else {
        found.set
    };

    // Phase: decide.
    let (decision, mut verdict) = match self_ref {
        Some(why) => (None, Verdict::refuse("private-network", why)),
        None => {
            let (d, by_override) = decide_with(overridden.as_deref(), data);
            let m = match (&overridden, by_override) {
                (Some(m), true) => m.as_str(),
                _ => method.as_str(),
            };
            let mut v = Verdict::of(shared, &active, &at.view(ips, m, data), &d);
            if by_override {
                v.reason = format!("the request overrides its method as {m}: {}", v.reason);
            }
            (Some(d), v)
        }
    };
    // A value under an encoding no label can be written over (UTF-16
    // text, a base64 part) cannot be redacted: rather than send it, or a
    // corrupted body, refuse.
    let unredactable = decision
        .as_ref()
        .filter(|d| unseen.is_none() && d.effect() == Effect::Redact)
        .and_then(|d| found.unredactable(active.policy.redact_classes(d)));
    if let Some((bit, why)) = unredactable {
        let class = active.policy.document().class_name(bit).unwrap_or("data");
        verdict.effect = Effect::Deny;
        verdict.reason = format!(
            "the request's {class} is inside {why}, which veto cannot redact in place, so it is refused: {}",
            verdict.reason
        );
    }
    if let Some(what) = &unseen {
        // A redaction cannot be done on what cannot be read: refuse.
        verdict.effect = Effect::Deny;
        let check = if data_matters {
            "check it for data"
        } else {
            "tell whether it overrides its method (`_method`)"
        };
        verdict.reason = format!("{what}, so veto cannot {check}: {}", verdict.reason);
    }
    let refused = verdict.effect == Effect::Deny;
    // The record keeps the path with what the detectors found masked; the
    // scan is repeated only when the request held data at all.
    let shown = if found.counts.is_empty() {
        std::borrow::Cow::Borrowed(path.as_str())
    } else {
        active.detectors.mask(&path)
    };
    let seen = Seen {
        protocol: protocol.as_str(),
        host: host.as_ref(),
        port,
        method: Some(&method),
        path: Some(&shown),
        ips,
        dns_lookup,
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
                    crate::redact::body(&active, &headers_owned(&parts.headers), plain, classes)
                        .map_err(|why| {
                            // Refused before the record was written; never
                            // sent half-redacted should a scan disagree.
                            answer::error(
                                Fault::Internal,
                                &format!(
                                    "cannot redact the body in place: a value is inside {why}"
                                ),
                                Some(&ctx.id),
                            )
                        })?;
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
        ips: Some(ips),
        ..*t
    };
    forward::send(shared, ctx, parts, &t, body_out, via).await
}

/// What a request's views share: everything but its addresses, method
/// and data.
struct At<'a> {
    machine: &'a str,
    protocol: Protocol,
    host: &'a Host,
    port: u16,
    path: &'a str,
    now: veto_policy::Timestamp,
}

impl<'a> At<'a> {
    fn view<'b>(
        &'b self,
        ips: &'b [std::net::IpAddr],
        method: &'b str,
        data: DataSet,
    ) -> veto_policy::Request<'b> {
        veto_policy::Request {
            machine: self.machine,
            protocol: self.protocol,
            host: self.host.as_ref(),
            port: self.port,
            ips,
            method,
            path: self.path,
            data,
            now: self.now,
        }
    }
}

fn headers_owned(h: &http::HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}
