//! veto's DNS listener (`veto run --dns ADDR`, and inside `veto exec`):
//! machines ask veto, and veto decides every lookup with the same policy
//! before any query leaves.
//!
//! - A name no rule could allow a connection to (policy-v1, "DNS lookups";
//!   `Policy::decide_lookup`) gets NXDOMAIN (or REFUSED: the policy's
//!   `dns: { refuse: refused }`)
//!   and is never asked upstream: the query itself would carry it out.
//! - An allowed name is resolved by veto's own resolver (`--resolve`
//!   first), and the addresses it answered are remembered
//!   ([`Remembered`]), so the transparent listener can name a connection
//!   that carries no name of its own.
//! - Every lookup is a record (protocol `dns`, the query type as its
//!   method), committed before the answer, like every other decision.
//! - The covert-channel guard ([`crate::tunnel_guard`]) flags lookups
//!   shaped like DNS tunnelling.
//!
//! The wire format is hickory's (`hickory-proto`); nothing is parsed by
//! hand.

use crate::phase::{self, Ctx, Seen, Verdict};
use crate::resolve::Answer;
use crate::state::Shared;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, RData, RecordType};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use veto_policy::{Effect, Host, normalize_host};

/// Lookups answered at once, at most; a datagram beyond is dropped (the
/// client asks again), so a flood holds bounded memory.
const IN_FLIGHT: usize = 1024;
/// The largest UDP answer without EDNS (RFC 1035), and the most veto sends
/// with it (RFC 9715's advice against fragmentation).
const UDP_PLAIN: usize = 512;
const UDP_EDNS: usize = 1232;
/// A TCP client silent this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Addresses veto's DNS answered, and for which name: the transparent
/// listener's name for a connection that sends none (a server-speaks-first
/// protocol, TLS without a server name). Bounded; the lock is held for a
/// map operation only.
#[derive(Default)]
pub struct Remembered(Mutex<HashMap<IpAddr, (Arc<str>, Instant)>>);

/// Addresses remembered at most.
const REMEMBERED: usize = 65_536;

impl Remembered {
    fn note(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let until = Instant::now() + Duration::from_secs(u64::from(ttl.clamp(30, 3600)));
        let name: Arc<str> = name.into();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() + ips.len() > REMEMBERED {
            let now = Instant::now();
            m.retain(|_, (_, t)| *t > now);
            if m.len() + ips.len() > REMEMBERED {
                m.clear();
            }
        }
        for ip in ips {
            m.insert(ip.to_canonical(), (name.clone(), until));
        }
    }

    /// The name veto last answered `ip` for, while its answer lives.
    pub fn name_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip.to_canonical())
            .filter(|(_, t)| *t > Instant::now())
            .map(|(n, _)| n.clone())
    }
}

/// Serves DNS over UDP until the task is dropped.
pub async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many DNS lookups at once; one dropped");
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            if let Some(answer) = answer(&shared, &query, peer, true).await {
                let _ = sock.send_to(&answer, peer).await;
            }
            drop(slot);
        });
    }
}

/// Serves DNS over TCP (length-prefixed messages, RFC 7766) until the task
/// is dropped.
pub async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                let read = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await;
                if !matches!(read, Ok(Ok(_))) {
                    break;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                let read = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await;
                if !matches!(read, Ok(Ok(_))) {
                    break;
                }
                let Some(answer) = answer(&shared, &query, peer, false).await else {
                    break;
                };
                let Ok(n) = u16::try_from(answer.len()) else {
                    break;
                };
                let mut out = n.to_be_bytes().to_vec();
                out.extend_from_slice(&answer);
                if stream.write_all(&out).await.is_err() {
                    break;
                }
            }
            drop(slot);
        });
    }
}

/// The answer to one query, or `None` when it is not a DNS message at all.
async fn answer(shared: &Shared, query: &[u8], peer: SocketAddr, udp: bool) -> Option<Vec<u8>> {
    let Ok(q) = Message::from_vec(query) else {
        // Not even a header to answer to: silence, as resolvers do.
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        tracing::debug!(%peer, "a malformed DNS query");
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            .to_vec()
            .ok();
    };
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
    resp.metadata.recursion_desired = q.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.queries.clone_from(&q.queries);
    let limit = match &q.edns {
        Some(e) if udp => usize::from(e.max_payload()).clamp(UDP_PLAIN, UDP_EDNS),
        None if udp => UDP_PLAIN,
        _ => usize::from(u16::MAX),
    };
    if q.edns.is_some() {
        let mut edns = hickory_resolver::proto::op::Edns::new();
        edns.set_max_payload(UDP_EDNS as u16);
        resp.edns = Some(edns);
    }
    let code = match (q.metadata.op_code, q.queries.as_slice()) {
        (OpCode::Query, [question]) if question.query_class() == DNSClass::IN => {
            lookup(
                shared,
                question.name().to_ascii(),
                question.query_type(),
                &mut resp,
            )
            .await
        }
        (OpCode::Query, [_]) => ResponseCode::Refused,
        (OpCode::Query, _) => ResponseCode::FormErr,
        _ => ResponseCode::NotImp,
    };
    resp.metadata.response_code = code;
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Too long for UDP: the client asks again over TCP.
    let mut cut = resp.truncate();
    cut.queries.clone_from(&q.queries);
    cut.to_vec().ok()
}

/// Decides, records and resolves one question; fills the answers.
async fn lookup(
    shared: &Shared,
    name: String,
    qtype: RecordType,
    resp: &mut Message,
) -> ResponseCode {
    let mut ctx = Ctx::new();
    ctx.machine.clone_from(&shared.config.transparent_machine);
    let active = shared.policy.load_full();
    let hash = active.policy.hash().to_string();
    let qtype_text = qtype.to_string();
    let trimmed = name.trim_end_matches('.');
    let host = match normalize_host(trimmed) {
        Ok(Host::Name(n)) => n,
        // An address or a malformed name is no lookup to make.
        Ok(Host::Ip(_)) | Err(_) => {
            let shown: String = trimmed.chars().take(255).collect();
            let verdict = Verdict::refuse(
                "malformed-request",
                format!("`{shown}` is not a host name veto looks up"),
            );
            let seen = seen(&shown, &qtype_text, &[], false);
            return match phase::audit(shared, &ctx, &hash, seen, &verdict, None).await {
                Ok(_) => refused(&active),
                Err(_) => ResponseCode::ServFail,
            };
        }
    };
    let req = veto_policy::Request {
        machine: &ctx.machine,
        protocol: veto_policy::Protocol::Dns,
        host: veto_policy::HostRef::Name(&host),
        port: 53,
        ips: &[],
        method: "",
        path: "",
        data: veto_policy::DataSet::EMPTY,
        now: ctx.now_secs(),
    };
    let l = active.policy.decide_lookup(&req, &shared.grants);
    let mut verdict = Verdict {
        effect: l.effect(),
        would: l.would,
        rule: active.policy.rule_id(l.by).to_string(),
        reason: active.policy.lookup_reason(&l, &req),
    };
    let guard = crate::tunnel_guard::check(shared, &active, &ctx.machine, &host, qtype);
    // The guard weighs only what would be asked upstream.
    if let Some(flag) = guard.filter(|_| l.answered) {
        if flag.enforced {
            verdict.effect = Effect::Deny;
            verdict.would = None;
            verdict.rule = "dns-tunnel".into();
            verdict.reason = flag.why;
        } else {
            verdict.would = Some(Effect::Deny);
            verdict.reason = format!("{}; report mode: {}", verdict.reason, flag.why);
        }
    }
    shared.metrics.lookup(verdict.effect != Effect::Deny);
    if verdict.effect == Effect::Deny {
        let seen = seen(&host, &qtype_text, &[], false);
        return match phase::audit(shared, &ctx, &hash, seen, &verdict, None).await {
            Ok(_) => refused(&active),
            Err(_) => ResponseCode::ServFail,
        };
    }
    let (code, records) = match shared.resolver.records(&host, qtype).await {
        Ok(Answer::Records(r)) => (ResponseCode::NoError, r),
        Ok(Answer::NoData) => (ResponseCode::NoError, Vec::new()),
        Ok(Answer::NxDomain) => (ResponseCode::NXDomain, Vec::new()),
        Err(e) => {
            tracing::debug!(error = %e, "DNS lookup failed");
            (ResponseCode::ServFail, Vec::new())
        }
    };
    let ips: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    let dns_lookup = !shared.resolver.overrides(&host);
    if phase::audit(
        shared,
        &ctx,
        &hash,
        seen(&host, &qtype_text, &ips, dns_lookup),
        &verdict,
        None,
    )
    .await
    .is_err()
    {
        return ResponseCode::ServFail;
    }
    let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(60);
    shared.remembered.note(&host, &ips, ttl);
    resp.answers = records;
    code
}

/// How the policy answers a refused lookup (`dns: { refuse: … }`).
fn refused(active: &crate::state::Active) -> ResponseCode {
    match active.policy.document().dns.refuse {
        veto_policy::DnsRefusal::NxDomain => ResponseCode::NXDomain,
        veto_policy::DnsRefusal::Refused => ResponseCode::Refused,
    }
}

fn seen<'a>(host: &'a str, qtype: &'a str, ips: &'a [IpAddr], dns_lookup: bool) -> Seen<'a> {
    Seen {
        protocol: "dns",
        host: veto_policy::HostRef::Name(host),
        port: 53,
        method: Some(qtype),
        path: None,
        ips,
        dns_lookup,
        data: BTreeMap::new(),
    }
}
