//! Requests, decisions and the precedence that turns matching rules into a
//! decision (policy-v1, "How a decision is reached").
//!
//! Finding which rules match is done twice, by the compiled index and by the
//! naive reference evaluator; both feed a [`Tally`] and share [`finish`], so
//! the precedence exists once.

use crate::addr::{Internal, classify};
use crate::host::HostRef;
use crate::model::{DataSet, Document, Effect, Guard, Mode, Protocol};
use std::net::IpAddr;

/// Seconds since the Unix epoch, supplied by the caller: the engine has no
/// clock.
pub type Timestamp = i64;

/// One outbound attempt, as the policy language sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The authenticated identity, or `anonymous`.
    pub machine: &'a str,
    pub protocol: Protocol,
    /// Normalised with [`crate::normalize_host`].
    pub host: HostRef<'a>,
    pub port: u16,
    /// What the host resolved to. An IP-literal host counts as an address
    /// even when this is empty.
    pub ips: &'a [IpAddr],
    /// HTTP only; empty for tunnels.
    pub method: &'a str,
    /// HTTP only, normalised with [`crate::normalize_path`].
    pub path: &'a str,
    pub data: DataSet,
    pub now: Timestamp,
}

impl<'a> Request<'a> {
    /// The destination's addresses, IPv4-mapped IPv6 read as IPv4 so that
    /// `::ffff:10.0.0.1` falls in `10.0.0.0/8`.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + 'a {
        let literal = match self.host {
            HostRef::Ip(ip) => Some(ip),
            HostRef::Name(_) => None,
        };
        literal
            .into_iter()
            .chain(self.ips.iter().copied())
            .map(|ip| ip.to_canonical())
    }

    pub fn has_addrs(&self) -> bool {
        matches!(self.host, HostRef::Ip(_)) || !self.ips.is_empty()
    }

    pub(crate) fn is_tunnel(&self) -> bool {
        !self.protocol.is_http()
    }
}

/// The method of a probe request: any request at all to the destination,
/// its method, path and data unknown (a DNS lookup asks "could some
/// request to this name be allowed?"). A rule that checks methods, paths
/// or data matches a probe when it allows (some request could meet its
/// conditions) and not when it refuses or redacts (some request could
/// avoid them). No rule names this method: rule methods are tokens.
pub const ANY_REQUEST: &str = "*";

/// Where grant use comes from (policy-v1, "Permissions that expire"). The
/// engine reads it; recording a use is the caller's job.
pub trait Grants {
    /// The last applied allow decision naming `rule` for `machine`.
    fn last_used(&self, rule: &str, machine: &str) -> Option<Timestamp>;
    /// When a rule with this id was first loaded; `None` counts as now.
    fn first_loaded(&self, rule: &str) -> Option<Timestamp>;
}

/// No recorded use, every rule loaded just now: nothing has expired.
pub struct NoGrants;

impl Grants for NoGrants {
    fn last_used(&self, _: &str, _: &str) -> Option<Timestamp> {
        None
    }
    fn first_loaded(&self, _: &str) -> Option<Timestamp> {
        None
    }
}

/// What named a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// A rule, by its index in the document.
    Rule(u32),
    /// A deny or redact rule that could apply to a tunnel veto cannot see
    /// into: the tunnel is refused rather than guessed about.
    Unseen(u32),
    /// No rule decided: `defaults.decision`.
    Default,
    /// The private-network guard, with the first internal address found.
    PrivateNetwork(IpAddr, Internal),
}

/// An `expire_if_unused` grant that stopped matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    pub rule: u32,
    /// `None`: never used since the rule was loaded.
    pub last_used: Option<Timestamp>,
    /// The time the idle period counts from.
    pub since: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub effect: Effect,
    pub by: By,
    /// Set on refusals that an expired grant would have allowed.
    pub expired: Option<Expired>,
}

/// The applied decision and the shadow one (everything enforced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub applied: Outcome,
    pub shadow: Outcome,
    /// A tunnel only: the first rule (file order, any effect or mode) with
    /// a `methods`, `paths` or `data` condition that could apply to it
    /// (policy-v1, "What veto cannot see"). Opening the tunnel's TLS would
    /// let veto decide each request inside instead of the tunnel as a whole.
    pub inspect: Option<u32>,
}

impl Decision {
    /// The stricter of two decisions of one request (deny, then redact,
    /// then allow; the applied effect first, then the shadow one), and
    /// whether it is `other`: a request that may be read as two methods
    /// (an override) is decided as the stricter reading.
    pub fn stricter(self, other: Decision) -> (Decision, bool) {
        let rank = |d: &Decision| {
            let r = |e: Effect| match e {
                Effect::Deny => 2,
                Effect::Redact => 1,
                Effect::Allow => 0,
            };
            (r(d.applied.effect), r(d.shadow.effect))
        };
        if rank(&other) > rank(&self) {
            (other, true)
        } else {
            (self, false)
        }
    }

    /// What happens to the request.
    pub fn effect(&self) -> Effect {
        self.applied.effect
    }

    /// Report mode: what would have happened, when that differs.
    pub fn would(&self) -> Option<Effect> {
        (self.shadow.effect != self.applied.effect).then_some(self.shadow.effect)
    }

    /// The outcome the record names: the shadow one when `would` is set
    /// (policy-v1: "the shadow decision's rule").
    pub fn named(&self) -> &Outcome {
        if self.would().is_some() {
            &self.shadow
        } else {
            &self.applied
        }
    }
}

/// Index 0: only enforce-mode rules (the applied decision); 1: all rules
/// (the shadow decision).
const APPLIED: usize = 0;
const SHADOW: usize = 1;

/// The first rule in file order of each kind that matched; rules may be
/// noted in any order and more than once.
#[derive(Default, Debug)]
pub(crate) struct Tally {
    deny: [Option<(u32, bool)>; 2],
    redact: [Option<u32>; 2],
    allow: [Option<u32>; 2],
    opener: [bool; 2],
    expired: [Option<Expired>; 2],
    inspect: Option<u32>,
}

fn keep_first<T: Copy>(slot: &mut Option<T>, new: T, key: impl Fn(T) -> u32) {
    if slot.is_none_or(|old| key(new) < key(old)) {
        *slot = Some(new);
    }
}

impl Tally {
    fn levels(mode: Mode) -> &'static [usize] {
        match mode {
            Mode::Enforce => &[APPLIED, SHADOW],
            Mode::Report => &[SHADOW],
        }
    }

    /// A rule that matched. `unseen`: a deny/redact rule refusing a tunnel
    /// it cannot see into. `opener`: an allow rule that matched through a
    /// `cidrs` entry, which may open private networks.
    pub(crate) fn matched(
        &mut self,
        rule: u32,
        effect: Effect,
        mode: Mode,
        unseen: bool,
        opener: bool,
    ) {
        for &l in Self::levels(mode) {
            match (effect, unseen) {
                (Effect::Deny, _) | (Effect::Redact, true) => {
                    keep_first(&mut self.deny[l], (rule, unseen), |d| d.0)
                }
                (Effect::Redact, false) => keep_first(&mut self.redact[l], rule, |r| r),
                (Effect::Allow, _) => {
                    keep_first(&mut self.allow[l], rule, |r| r);
                    self.opener[l] |= opener;
                }
            }
        }
    }

    /// A rule with HTTP-only conditions that could apply to a tunnel.
    pub(crate) fn could_see(&mut self, rule: u32) {
        keep_first(&mut self.inspect, rule, |r| r);
    }

    /// An allow rule that matched but whose grant has lapsed.
    pub(crate) fn expired(&mut self, e: Expired, mode: Mode) {
        for &l in Self::levels(mode) {
            keep_first(&mut self.expired[l], e, |e| e.rule);
        }
    }
}

/// The mode of a rule: its own, else the machine's, else the default.
pub(crate) fn rule_mode(rule: Option<Mode>, machine: Option<Mode>, default: Mode) -> Mode {
    rule.or(machine).unwrap_or(default)
}

/// The first internal address of the request, if any.
pub(crate) fn first_internal(req: &Request<'_>) -> Option<(IpAddr, Internal)> {
    req.addrs().find_map(|ip| classify(ip).map(|i| (ip, i)))
}

/// Applies the precedence to a tally, once per level.
pub(crate) fn finish(
    doc: &Document,
    t: &Tally,
    machine_mode: Option<Mode>,
    req: &Request<'_>,
) -> Decision {
    let default_mode = machine_mode.unwrap_or(doc.defaults.mode);
    let internal = first_internal(req);
    let one = |l: usize| -> Outcome {
        let refuse = |by: By| Outcome {
            effect: Effect::Deny,
            by,
            expired: t.expired[l],
        };
        if let Some((rule, unseen)) = t.deny[l] {
            return refuse(if unseen {
                By::Unseen(rule)
            } else {
                By::Rule(rule)
            });
        }
        let guard_on = match doc.defaults.private_networks {
            Guard::Deny => true,
            Guard::Report => l == SHADOW,
            Guard::Allow => false,
        };
        if let (true, Some((ip, class)), false) = (guard_on, internal, t.opener[l]) {
            return refuse(By::PrivateNetwork(ip, class));
        }
        let allowed_by = match t.allow[l] {
            Some(rule) => Some(By::Rule(rule)),
            None if doc.defaults.decision == Effect::Allow => Some(By::Default),
            None if l == APPLIED && default_mode == Mode::Report => Some(By::Default),
            None => None,
        };
        match (allowed_by, t.redact[l]) {
            (Some(_), Some(rule)) => Outcome {
                effect: Effect::Redact,
                by: By::Rule(rule),
                expired: None,
            },
            (Some(by), None) => Outcome {
                effect: Effect::Allow,
                by,
                expired: None,
            },
            (None, _) => refuse(By::Default),
        }
    };
    let mut applied = one(APPLIED);
    let shadow = one(SHADOW);
    // A report-mode default lets a request out as `default` even when an
    // allow rule (left out of the applied decision for being in report
    // mode) matched it. The allow is then that rule's doing: name it, and
    // count it as a use of the grant.
    if applied.by == By::Default
        && applied.effect != doc.defaults.decision
        && shadow.effect == Effect::Allow
    {
        applied.by = shadow.by;
    }
    Decision {
        applied,
        shadow,
        inspect: t.inspect,
    }
}

/// Formats a timestamp as RFC 3339 in UTC (the engine has no time crate).
pub fn format_time(ts: Timestamp) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
    }
}
