//! The named phases every request passes through, plain or CONNECT:
//! identify → resolve → (inspect) → decide → audit → answer.
//!
//! `audit` is the one place a decision record is written, and it returns
//! only once the record is committed: no client hears an answer that is not
//! in the trail.

use crate::answer::{self, Body, Fault};
use crate::state::{Active, Shared};
use base64::Engine;
use http::{HeaderMap, Response};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use veto_audit::{Decided, Receipt};
use veto_policy::{Decision, Effect, Host, HostRef, Request};

/// Per-request facts gathered along the phases.
#[derive(Clone)]
pub struct Ctx {
    pub id: String,
    pub started: Instant,
    pub unix_ms: u64,
    pub time: String,
    pub machine: String,
    /// Whether `machine` was proven by credentials (a token or a client
    /// certificate), not named by veto's configuration or `anonymous`.
    pub proven: bool,
    /// What the client's TLS connection to the proxy proved, if anything.
    pub peer: crate::mtls::Peer,
}

impl Ctx {
    pub fn new() -> Ctx {
        let (unix_ms, time) = veto_audit::now();
        Ctx {
            id: veto_audit::new_id(unix_ms),
            started: Instant::now(),
            unix_ms,
            time,
            machine: "anonymous".into(),
            proven: false,
            peer: crate::mtls::Peer::None,
        }
    }

    pub fn now_secs(&self) -> i64 {
        (self.unix_ms / 1000) as i64
    }
}

/// Phase: identify. `Proxy-Authorization: Basic machine:token`, or
/// `anonymous` when absent. Bad credentials are a 407, never anonymous.
pub fn identify(shared: &Shared, headers: &HeaderMap, ctx: &mut Ctx) -> Result<(), Response<Body>> {
    let bad = |why: &str| answer::bad_credentials(why);
    let by_cert = match &ctx.peer {
        crate::mtls::Peer::None => None,
        crate::mtls::Peer::Refused(why) => return Err(bad(why)),
        crate::mtls::Peer::Machine(m, not_before) => Some((m.clone(), *not_before)),
    };
    let Some(value) = headers.get(http::header::PROXY_AUTHORIZATION) else {
        if let Some((machine, not_before)) = by_cert {
            let creds = shared.credentials.load();
            // Our certificates start an hour early for clock skew: one issued
            // before the machine's current registration is from an earlier
            // one (revoked, then added again) and is refused.
            if let Some(created) = creds.registered_at(&machine)
                && not_before.saturating_add(3600) < created
            {
                return Err(bad(&format!(
                    "The client certificate was issued before machine `{machine}` was registered again ({}); issue a new one.",
                    veto_policy::format_time(created)
                )));
            }
            creds
                .check_machine(&machine, ctx.now_secs())
                .map_err(|why| bad(&why))?;
            ctx.machine = machine.to_string();
            ctx.proven = true;
        } else if let Some(m) = &shared.config.listener_machine {
            ctx.machine.clone_from(m);
        }
        return Ok(());
    };
    if by_cert.is_some() {
        // Two proofs of identity that could disagree: refuse rather than
        // pick one.
        return Err(bad(
            "the connection's client certificate already names the machine; send no Proxy-Authorization with it",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| bad("the Proxy-Authorization header is not text"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad("only Basic proxy authentication is supported"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad("the Basic credentials are not valid base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| bad("the Basic credentials are not UTF-8"))?;
    let (machine, token) = decoded
        .split_once(':')
        .ok_or_else(|| bad("the Basic credentials must be machine:token"))?;
    shared
        .credentials
        .load()
        .check(machine, token, ctx.now_secs())
        .map_err(|why| {
            // The answer stays vague (no help to guess names); the record
            // says which machine the credentials claimed.
            let mut resp = bad(&why);
            if let Some(u) = resp.extensions_mut().get_mut::<answer::Unrecorded>() {
                let shown: String = machine.chars().take(128).collect();
                u.reason = format!("credentials for machine `{shown}`: {why}");
            }
            resp
        })?;
    ctx.machine = machine.to_string();
    ctx.proven = true;
    Ok(())
}

/// A machine named by veto's own configuration (`--transparent-machine`,
/// `veto exec --machine`) rather than proven by credentials: a label for
/// the policy and the records. If it is also registered, its registration
/// holds it (revoked, expired or idle: refused).
pub fn check_named(shared: &Shared, machine: &str, now: i64) -> Result<(), String> {
    let creds = shared.credentials.load();
    if machine == "anonymous" || creds.registered_at(machine).is_none() {
        return Ok(());
    }
    creds.check_machine(machine, now)
}

/// Phase: resolve. An IP literal is its own address; a name is resolved
/// once, and only the addresses found here are ever connected to.
pub async fn resolve(shared: &Shared, host: &Host) -> Result<Vec<IpAddr>, (Fault, String)> {
    match host {
        Host::Ip(ip) => Ok(vec![*ip]),
        Host::Name(name) => shared
            .resolver
            .resolve(name)
            .await
            .map_err(|e| (Fault::UpstreamUnreachable, e.to_string())),
    }
}

/// A request that names veto's own listening address would loop through
/// the proxy; it is refused as the private-network guard refuses.
pub fn names_self(shared: &Shared, ips: &[IpAddr], port: u16) -> Option<String> {
    let own: SocketAddr = shared.own_addr;
    if own.port() != port {
        return None;
    }
    ips.iter()
        .find(|ip| ip.to_canonical() == own.ip() || (own.ip().is_unspecified() && ip.is_loopback()))
        .map(|ip| format!("{ip}:{port} is veto's own listening address"))
}

/// What the record says was decided: the engine's effects, typed to the
/// record (where they become words).
pub struct Verdict {
    pub effect: Effect,
    pub would: Option<Effect>,
    pub rule: String,
    pub reason: String,
}

impl Verdict {
    /// Phase: decide.
    pub fn decide(shared: &Shared, active: &Active, req: &Request<'_>) -> (Decision, Verdict) {
        let d = active.policy.decide(req, &shared.grants);
        let v = Verdict::of(shared, active, req, &d);
        (d, v)
    }

    /// The verdict of a decision made for `req`; an applied allow by an
    /// expiring grant counts as its use.
    pub fn of(shared: &Shared, active: &Active, req: &Request<'_>, d: &Decision) -> Verdict {
        if let veto_policy::Outcome {
            effect: Effect::Allow,
            by: veto_policy::By::Rule(i),
            ..
        } = d.applied
        {
            let rule = &active.policy.document().rules[i as usize];
            if rule.expire_if_unused.is_some() {
                shared.grants.used(&rule.id, req.machine, req.now);
            }
        }
        Verdict {
            effect: d.effect(),
            would: d.would(),
            rule: active.policy.rule_id(d.named().by).to_string(),
            reason: active.policy.reason(d, req),
        }
    }

    /// A refusal veto makes before the policy (its own address).
    pub fn refuse(rule: &str, reason: String) -> Verdict {
        Verdict {
            effect: Effect::Deny,
            would: None,
            rule: rule.to_string(),
            reason,
        }
    }
}

/// What the record says the request was.
pub struct Seen<'a> {
    pub protocol: &'static str,
    pub host: HostRef<'a>,
    pub port: u16,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub ips: &'a [IpAddr],
    /// Whether veto asked DNS for the host.
    pub dns_lookup: bool,
    pub data: BTreeMap<String, u32>,
}

/// Phase: audit. The one place a decision record is written. Returns once
/// it is committed; if the store cannot write, the request is refused with
/// 503 (fail closed).
pub async fn audit(
    shared: &Shared,
    ctx: &Ctx,
    policy_hash: &str,
    seen: Seen<'_>,
    verdict: &Verdict,
    status: Option<u16>,
) -> Result<Receipt, Response<Body>> {
    let d = Decided {
        id: ctx.id.clone(),
        time: ctx.time.clone(),
        machine: ctx.machine.clone(),
        protocol: seen.protocol.to_string(),
        method: seen.method.map(str::to_string),
        host: seen.host.to_string(),
        port: seen.port,
        path: seen.path.map(str::to_string),
        ips: seen.ips.iter().map(|ip| ip.to_string()).collect(),
        dns_lookup: seen.dns_lookup,
        decision: verdict.effect.as_str().to_string(),
        would: verdict.would.map(|w| w.as_str().to_string()),
        rule: verdict.rule.clone(),
        reason: verdict.reason.clone(),
        data: seen.data,
        status,
        policy: policy_hash.to_string(),
    };
    let tunnel = seen.method.is_none();
    // A benchmark-only build measures what the audit costs by leaving it
    // out; it is never what `cargo build` makes (see BENCHMARKS.md).
    #[cfg(feature = "unaudited-bench")]
    let result: Result<Receipt, veto_audit::AuditError> = {
        drop(d);
        Ok(Receipt {
            seq: 0,
            hash: String::new(),
        })
    };
    #[cfg(not(feature = "unaudited-bench"))]
    let result = shared.writer.decide(d, ctx.unix_ms).await;
    if result.is_ok() {
        shared
            .metrics
            .decision(verdict.effect.as_str(), &verdict.rule);
        shared.metrics.latency(tunnel, ctx.started.elapsed());
    }
    result.map_err(|e| {
        shared.metrics.audit_failure();
        tracing::error!(error = %e, "audit store cannot write; refusing");
        answer::error(
            Fault::Internal,
            &format!("veto cannot record this decision, so it refuses it: {e}"),
            Some(&ctx.id),
        )
    })
}

/// The last phase of every request: an answer veto made before any record
/// existed (marked [`answer::Unrecorded`]) is recorded now and given again
/// with its record's id, so every answer's `Veto-Request-Id` names a
/// record. If that record cannot be written, the answer is the audit's 503.
pub async fn finish(
    shared: &Shared,
    ctx: &Ctx,
    facts: &crate::head::Facts,
    mut resp: Response<Body>,
) -> Response<Body> {
    if let Some(u) = resp.extensions_mut().remove::<answer::Unrecorded>() {
        let status = resp.status();
        let answer_reason = u.answer.clone();
        resp = match record_refusal(shared, ctx, facts, u.rule, &u.reason, status).await {
            Err(failed) => failed,
            Ok(_) if status == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
                answer::bad_credentials_recorded(&answer_reason, &ctx.id)
            }
            Ok(_) => {
                let fault = match status.as_u16() {
                    502 => Fault::UpstreamUnreachable,
                    504 => Fault::UpstreamTimeout,
                    503 => Fault::Internal,
                    _ => Fault::Downstream(status),
                };
                answer::error(fault, &answer_reason, Some(&ctx.id))
            }
        };
    }
    if let Ok(v) = http::HeaderValue::from_str(&ctx.id) {
        resp.headers_mut().insert("veto-request-id", v);
    }
    resp
}

/// Records a refusal veto made before any decision, from the facts of the
/// request: nothing was decided, so nothing was scanned, and what the
/// record keeps of the request (its path, the reason) is masked here.
pub async fn record_refusal(
    shared: &Shared,
    ctx: &Ctx,
    facts: &crate::head::Facts,
    rule: &'static str,
    reason: &str,
    status: http::StatusCode,
) -> Result<Receipt, Response<Body>> {
    record_early(shared, ctx, facts, rule, reason, Some(status.as_u16())).await
}

/// As [`record_refusal`], for a connection closed with no answer at all
/// (see `refused.rs`).
pub async fn record_closed(
    shared: &Shared,
    ctx: &Ctx,
    facts: &crate::head::Facts,
    rule: &'static str,
    reason: &str,
) -> Result<Receipt, Response<Body>> {
    record_early(shared, ctx, facts, rule, reason, None).await
}

async fn record_early(
    shared: &Shared,
    ctx: &Ctx,
    facts: &crate::head::Facts,
    rule: &'static str,
    reason: &str,
    status: Option<u16>,
) -> Result<Receipt, Response<Body>> {
    let active = shared.policy.load();
    let verdict = Verdict::refuse(rule, active.detectors.mask(reason).into_owned());
    let path = facts.path.as_deref().map(|p| active.detectors.mask(p));
    let seen = Seen {
        protocol: facts.protocol,
        host: HostRef::Name(&facts.host),
        port: facts.port,
        method: facts.method.as_deref(),
        path: path.as_deref(),
        ips: &[],
        dns_lookup: false,
        data: BTreeMap::new(),
    };
    let hash = active.policy.hash().to_string();
    audit(shared, ctx, &hash, seen, &verdict, status).await
}

/// Records how an exchange ended, without making anyone wait.
pub fn complete(shared: &Shared, ctx: &Ctx, status: Option<u16>, bytes_out: u64, bytes_in: u64) {
    completion(
        shared,
        ctx.id.clone(),
        ctx.started,
        None,
        status,
        bytes_out,
        bytes_in,
    );
}

/// As [`complete`], for a tunnel whose protocol its first bytes showed.
pub fn complete_as(
    shared: &Shared,
    ctx: &Ctx,
    protocol: &str,
    status: Option<u16>,
    bytes_out: u64,
    bytes_in: u64,
) {
    completion(
        shared,
        ctx.id.clone(),
        ctx.started,
        Some(protocol.to_string()),
        status,
        bytes_out,
        bytes_in,
    );
}

/// The completion entry of record `id`; usable where no context is
/// borrowed (a response body that ends or is dropped).
pub fn completion(
    shared: &Shared,
    id: String,
    started: Instant,
    protocol: Option<String>,
    status: Option<u16>,
    bytes_out: u64,
    bytes_in: u64,
) {
    shared.metrics.bytes(bytes_out, bytes_in);
    let c = veto_audit::Completed {
        id,
        protocol,
        status,
        bytes_out,
        bytes_in,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if cfg!(feature = "unaudited-bench") {
        return;
    }
    let ms = veto_audit::now().0;
    // Queued on the spot; only a writer that is behind (a full queue) costs
    // a task that waits for room.
    let c = match shared.writer.try_complete(c, ms) {
        Ok(()) => return,
        Err(veto_audit::Full::Later(c)) => c,
        Err(veto_audit::Full::Gone) => {
            tracing::error!("audit store cannot record a completion: the writer is gone");
            return;
        }
    };
    let writer = shared.writer.clone();
    // A body may be dropped outside the runtime (at shutdown): then the
    // completion cannot be sent, and the record keeps its decision.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            if let Err(e) = writer.complete(c, ms).await {
                tracing::error!(error = %e, "audit store cannot record a completion");
            }
        });
    }
}
