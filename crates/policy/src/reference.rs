//! The reference evaluator: every rule, in file order, read straight off the
//! document the way the spec words it. It is slow on purpose and simple on
//! purpose. It explains decisions (the trace) and is the oracle the compiled
//! index is property-tested against.

use crate::decide::{Decision, Expired, Grants, Request, Tally, finish, rule_mode};
use crate::model::{Document, Effect, Protocol, Rule, Service};
use ipnet::IpNet;

/// Why a rule did not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    From,
    Destination,
    Port,
    Protocol,
    Method,
    Path,
    Data,
    /// A rule that needs HTTP details cannot allow a tunnel veto cannot see into.
    Unseen,
    /// A probe ([`crate::ANY_REQUEST`]): a request could avoid this
    /// refusal's methods, paths or data.
    Avoidable,
    Expired(Expired),
}

/// How a rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Through a `cidrs` entry (its own or of a service it names).
    pub via_cidr: bool,
    /// A deny/redact rule refusing a tunnel it could apply to.
    pub unseen: bool,
}

/// One line of an explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub rule: u32,
    pub outcome: Result<Hit, Miss>,
}

/// A `cidrs` condition: for allow rules every address must be inside, for
/// deny and redact rules any one. No addresses: no match.
fn cidr_cond(nets: &[IpNet], effect: Effect, req: &Request<'_>) -> bool {
    if nets.is_empty() || !req.has_addrs() {
        return false;
    }
    let inside = |ip| nets.iter().any(|n: &IpNet| n.contains(&ip));
    match effect {
        Effect::Allow => req.addrs().all(inside),
        Effect::Deny | Effect::Redact => req.addrs().any(inside),
    }
}

/// (matches, matched through cidrs)
fn service_matches(s: &Service, effect: Effect, req: &Request<'_>) -> (bool, bool) {
    if let Some(ports) = &s.ports
        && !ports.contains(&req.port)
    {
        return (false, false);
    }
    let by_cidr = cidr_cond(&s.cidrs, effect, req);
    (
        by_cidr || s.hosts.iter().any(|h| h.matches(req.host)),
        by_cidr,
    )
}

/// Matches one rule against a request, in the spec's words.
pub fn match_rule(
    doc: &Document,
    index: u32,
    req: &Request<'_>,
    grants: &dyn Grants,
) -> Result<Hit, Miss> {
    let rule: &Rule = &doc.rules[index as usize];
    if let Some(from) = &rule.from {
        let m = doc.machine(req.machine);
        let listed = from.machines.iter().any(|x| x == req.machine);
        let role = m.is_some_and(|m| m.roles.iter().any(|r| from.roles.contains(r)));
        let env = m
            .and_then(|m| m.env.as_ref())
            .is_some_and(|e| from.env.contains(e));
        if !(listed || role || env) {
            return Err(Miss::From);
        }
    }
    let mut via_cidr = false;
    if let Some(to) = &rule.to {
        if !to.any_destination() {
            let own_cidr = cidr_cond(&to.cidrs, rule.effect, req);
            let mut dest = own_cidr || to.hosts.iter().any(|h| h.matches(req.host));
            via_cidr = own_cidr;
            for (i, s) in doc.services.iter().enumerate() {
                let named = to.services.contains(&i) || s.tags.iter().any(|t| to.tags.contains(t));
                if named {
                    let (m, c) = service_matches(s, rule.effect, req);
                    dest |= m;
                    via_cidr |= c;
                }
            }
            if !dest {
                return Err(Miss::Destination);
            }
        }
        if let Some(ports) = &to.ports
            && !ports.contains(&req.port)
        {
            return Err(Miss::Port);
        }
    }
    if let Some(p) = rule.protocols {
        let tls_as_https = req.protocol == Protocol::Tls && p.contains(Protocol::Https);
        if !p.contains(req.protocol) && !tls_as_https {
            return Err(Miss::Protocol);
        }
    }
    let mut unseen = false;
    if rule.has_http_conditions() && req.method == crate::decide::ANY_REQUEST {
        if rule.effect != Effect::Allow {
            return Err(Miss::Avoidable);
        }
    } else if req.is_tunnel() && rule.has_http_conditions() {
        if rule.effect == Effect::Allow {
            return Err(Miss::Unseen);
        }
        unseen = true;
    } else {
        if let Some(methods) = &rule.methods
            && !methods.iter().any(|m| m.eq_ignore_ascii_case(req.method))
        {
            return Err(Miss::Method);
        }
        if let Some(paths) = &rule.paths
            && !paths.iter().any(|g| g.matches(req.path))
        {
            return Err(Miss::Path);
        }
        if let Some(data) = rule.data
            && !data.intersects(req.data)
        {
            return Err(Miss::Data);
        }
    }
    if let Some(idle) = rule.expire_if_unused {
        let last = grants.last_used(&rule.id, req.machine);
        let since = last
            .or_else(|| grants.first_loaded(&rule.id))
            .unwrap_or(req.now);
        if req.now.saturating_sub(since) >= i64::try_from(idle).unwrap_or(i64::MAX) {
            return Err(Miss::Expired(Expired {
                rule: index,
                last_used: last,
                since,
            }));
        }
    }
    Ok(Hit { via_cidr, unseen })
}

/// Decides a request by trying every rule, and says what each rule did.
pub fn decide(doc: &Document, req: &Request<'_>, grants: &dyn Grants) -> (Decision, Vec<Step>) {
    let machine_mode = doc.machine(req.machine).and_then(|m| m.mode);
    let mut tally = Tally::default();
    let mut steps = Vec::with_capacity(doc.rules.len());
    for (i, rule) in doc.rules.iter().enumerate() {
        let i = i as u32;
        let mode = rule_mode(rule.mode, machine_mode, doc.defaults.mode);
        let outcome = match_rule(doc, i, req, grants);
        if matches!(&outcome, Ok(Hit { unseen: true, .. }) | Err(Miss::Unseen)) {
            tally.could_see(i);
        }
        match &outcome {
            Ok(hit) => tally.matched(i, rule.effect, mode, hit.unseen, hit.via_cidr),
            Err(Miss::Expired(e)) => tally.expired(*e, mode),
            Err(_) => {}
        }
        steps.push(Step { rule: i, outcome });
    }
    (finish(doc, &tally, machine_mode, req), steps)
}
