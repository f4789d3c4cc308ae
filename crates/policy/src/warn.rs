//! Warnings: valid policies that probably do not say what their author
//! meant. `veto policy check` prints them; they never refuse a file.

use crate::load::Diagnostic;
use crate::model::{Document, Effect, From, Intercept, Protocol, Rule, To};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Most earlier rules checked as the one shadowing a rule: the check is
/// advice, and must not make compiling a large policy quadratic.
const MAX_SHADOW_CANDIDATES: usize = 256;

/// A destination an earlier rule lists, for finding the rules that could
/// cover a later one without comparing every pair.
#[derive(Hash, PartialEq, Eq)]
enum Key<'a> {
    Host(&'a crate::host::HostPattern),
    Service(usize),
    Tag(&'a str),
}

/// The key a covering rule must also list: the first destination of `to`.
fn first_key(to: &To) -> Option<Key<'_>> {
    if let Some(h) = to.hosts.first() {
        return Some(Key::Host(h));
    }
    if let Some(s) = to.services.first() {
        return Some(Key::Service(*s));
    }
    to.tags.first().map(|t| Key::Tag(t.as_str()))
}

pub(crate) fn warnings(doc: &Document) -> Vec<Diagnostic> {
    let roles: HashSet<&str> = doc
        .machines
        .iter()
        .flat_map(|m| m.roles.iter().map(String::as_str))
        .collect();
    let envs: HashSet<&str> = doc
        .machines
        .iter()
        .filter_map(|m| m.env.as_deref())
        .collect();
    let mut out = Vec::new();
    // Earlier rules that match every destination, by destination key, and
    // those with cidrs.
    let mut open: Vec<usize> = Vec::new();
    let mut by_key: HashMap<Key<'_>, Vec<usize>> = HashMap::default();
    let mut with_cidrs: Vec<usize> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (i, rule) in doc.rules.iter().enumerate() {
        blanket_tunnel_refusal(doc, rule, &mut out);
        candidates.clear();
        candidates.extend_from_slice(&open);
        if let Some(to) = rule.to.as_ref().filter(|t| !t.any_destination()) {
            match first_key(to) {
                Some(k) => candidates.extend(by_key.get(&k).into_iter().flatten()),
                None => candidates.extend(&with_cidrs),
            }
        }
        candidates.sort_unstable();
        candidates.truncate(MAX_SHADOW_CANDIDATES);
        if let Some(earlier) = candidates
            .iter()
            .map(|&j| &doc.rules[j])
            .find(|a| covers(a, rule))
        {
            let msg = if earlier.effect == rule.effect {
                format!(
                    "rule `{}` is shadowed: rule `{}` (line {}) comes first and matches every request it matches",
                    rule.id, earlier.id, earlier.pos.line
                )
            } else {
                format!(
                    "rule `{}` can never decide: deny rule `{}` (line {}) matches every request it matches, and deny wins",
                    rule.id, earlier.id, earlier.pos.line
                )
            };
            out.push(Diagnostic {
                pos: rule.pos,
                message: msg,
            });
        }
        if let Some(from) = &rule.from {
            unknown_principals(rule, from, &roles, &envs, &mut out);
        }
        match &rule.to {
            None => open.push(i),
            Some(to) if to.any_destination() => open.push(i),
            Some(to) => {
                for h in &to.hosts {
                    by_key.entry(Key::Host(h)).or_default().push(i);
                }
                for s in &to.services {
                    by_key.entry(Key::Service(*s)).or_default().push(i);
                }
                for t in &to.tags {
                    by_key.entry(Key::Tag(t.as_str())).or_default().push(i);
                }
                if !to.cidrs.is_empty() {
                    with_cidrs.push(i);
                }
            }
        }
    }
    out
}

/// policy-v1 "What veto cannot see": a deny or redact rule that checks
/// methods, paths or data refuses every tunnel it could apply to that veto
/// does not open. Say so, since it often surprises.
fn blanket_tunnel_refusal(doc: &Document, rule: &Rule, out: &mut Vec<Diagnostic>) {
    if rule.effect == Effect::Allow || !rule.has_http_conditions() {
        return;
    }
    let tunnels = |p: Protocol| rule.protocols.is_none_or(|set| set.contains(p));
    let tls = tunnels(Protocol::Tls) || tunnels(Protocol::Https);
    let tcp = tunnels(Protocol::Tcp);
    let kinds = match (doc.intercept, tls, tcp) {
        (Intercept::Never, true, true) => "every CONNECT tunnel (tls.intercept is never)",
        (Intercept::Never, true, false) => "every TLS tunnel (tls.intercept is never)",
        (_, _, true) => "every tcp tunnel (veto can only open TLS)",
        _ => return,
    };
    out.push(Diagnostic {
        pos: rule.pos,
        message: format!(
            "rule `{}` checks methods, paths or data, which veto cannot see inside a tunnel it does not open: it refuses {kinds} to its destinations; add `protocols: [http, https]` if that is not meant",
            rule.id
        ),
    });
}

fn unknown_principals(
    rule: &Rule,
    from: &From,
    roles: &HashSet<&str>,
    envs: &HashSet<&str>,
    out: &mut Vec<Diagnostic>,
) {
    for role in from.roles.iter().filter(|r| !roles.contains(r.as_str())) {
        out.push(Diagnostic {
            pos: rule.pos,
            message: format!(
                "rule `{}`: no machine under `machines` has role `{role}`",
                rule.id
            ),
        });
    }
    for env in from.env.iter().filter(|e| !envs.contains(e.as_str())) {
        out.push(Diagnostic {
            pos: rule.pos,
            message: format!(
                "rule `{}`: no machine under `machines` has env `{env}`",
                rule.id
            ),
        });
    }
}

fn subset<T: PartialEq>(b: &[T], a: &[T]) -> bool {
    b.iter().all(|x| a.contains(x))
}

/// `field` of A is absent (matches all), or B lists a subset of it.
fn wider<T>(a: &Option<T>, b: &Option<T>, sub: impl Fn(&T, &T) -> bool) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => sub(b, a),
    }
}

fn to_subset(b: &To, a: &To) -> bool {
    // A destination-less `to` (ports only) matches every destination.
    let dest = a.any_destination()
        || (!b.any_destination()
            && subset(&b.services, &a.services)
            && subset(&b.hosts, &a.hosts)
            && b.cidrs
                .iter()
                .all(|n| a.cidrs.iter().any(|m| m.contains(n)))
            && subset(&b.tags, &a.tags));
    dest && wider(&a.ports, &b.ports, |b, a| subset(b, a))
}

/// Whether earlier rule `a` matches every request that later rule `b`
/// matches, and so keeps `b` from ever being named. Conservative: literal
/// subsets only, same mode, and `a` must not be able to expire.
fn covers(a: &Rule, b: &Rule) -> bool {
    let order = a.effect == b.effect || a.effect == Effect::Deny;
    order
        && a.mode == b.mode
        && a.expire_if_unused.is_none()
        // An unseen-tunnel refusal makes deny rules with HTTP conditions
        // behave differently on tunnels; keep the check to the plain case.
        && (a.effect != Effect::Deny || !a.has_http_conditions() || b.effect == Effect::Deny)
        && wider(&a.from, &b.from, |b, a| {
            subset(&b.machines, &a.machines) && subset(&b.roles, &a.roles) && subset(&b.env, &a.env)
        })
        && wider(&a.to, &b.to, to_subset)
        && wider(&a.protocols, &b.protocols, |b, a| b.iter().all(|p| a.contains(p)))
        && wider(&a.methods, &b.methods, |b, a| subset(b, a))
        && wider(&a.paths, &b.paths, |b, a| subset(b, a))
        && wider(&a.data, &b.data, |b, a| b.0 & !a.0 == 0)
}
