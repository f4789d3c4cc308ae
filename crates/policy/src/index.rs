//! The compiled form of a policy: indexes that find the few rules a request
//! could match without scanning all of them.
//!
//! - exact host names in a hash map, `*.` suffixes in a hash map keyed by the
//!   suffix (looked up once per label boundary of the request host);
//! - CIDRs in a prefix table (one hash map per prefix length present);
//! - per-rule machine, role and env sets as bitsets over interned names.
//!
//! The index only proposes candidates; each candidate is then checked in
//! full, and the precedence is applied by the same [`finish`] as the
//! reference evaluator, which the property tests hold it to.

use crate::decide::{Decision, Expired, Grants, Request, Tally, finish, rule_mode};
use crate::host::{HostPattern, HostRef, parent_suffixes};
use crate::model::{DataSet, Document, Effect, Mode, Protocol, Protocols};
use crate::path::PathGlob;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A set of small ids.
#[derive(Clone, Debug, Default)]
struct IdSet(Box<[u64]>);

impl IdSet {
    fn from_ids(ids: impl IntoIterator<Item = u32>) -> IdSet {
        let mut words: Vec<u64> = Vec::new();
        for id in ids {
            let w = (id / 64) as usize;
            if words.len() <= w {
                words.resize(w + 1, 0);
            }
            words[w] |= 1 << (id % 64);
        }
        IdSet(words.into())
    }
    fn contains(&self, id: u32) -> bool {
        self.0
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

#[derive(Debug, Default)]
struct Interner(Map<Box<str>, u32>);

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(s.into()).or_insert(next)
    }
    fn get(&self, s: &str) -> Option<u32> {
        self.0.get(s).copied()
    }
}

#[derive(Debug, Default)]
struct Principal {
    roles: Box<[u32]>,
    env: Option<u32>,
    mode: Option<Mode>,
}

#[derive(Debug)]
struct CFrom {
    machines: IdSet,
    roles: IdSet,
    envs: IdSet,
}

/// One way a rule's `to` can match: the rule's own hosts and cidrs, or one
/// service it names (directly or by tag) with that service's ports.
#[derive(Debug)]
struct Group {
    ports: Option<Box<[u16]>>,
    cidrs: Box<[IpNet]>,
}

#[derive(Debug)]
struct CRule {
    effect: Effect,
    mode: Option<Mode>,
    from: Option<CFrom>,
    ports: Option<Box<[u16]>>,
    groups: Box<[Group]>,
    protocols: Option<Protocols>,
    methods: Option<Box<[Box<str>]>>,
    paths: Option<Box<[PathGlob]>>,
    data: Option<DataSet>,
    expire: Option<u64>,
}

type Hits = Vec<(u32, u32)>;

/// CIDRs of one address family, bucketed by prefix length.
#[derive(Debug, Default)]
struct Prefixes {
    bits: u32,
    by_len: Vec<(u8, Map<u128, Hits>)>,
}

impl Prefixes {
    fn new(bits: u32) -> Prefixes {
        Prefixes {
            bits,
            by_len: Vec::new(),
        }
    }
    fn mask(&self, addr: u128, len: u8) -> u128 {
        let keep = u32::from(len);
        if keep == 0 {
            0
        } else {
            addr >> (self.bits - keep)
        }
    }
    fn insert(&mut self, addr: u128, len: u8, hit: (u32, u32)) {
        let key = self.mask(addr, len);
        let slot = match self.by_len.iter().position(|(l, _)| *l == len) {
            Some(i) => i,
            None => {
                self.by_len.push((len, Map::default()));
                self.by_len.len() - 1
            }
        };
        self.by_len[slot].1.entry(key).or_default().push(hit);
    }
    fn lookup(&self, addr: u128) -> impl Iterator<Item = &(u32, u32)> {
        self.by_len
            .iter()
            .filter_map(move |(len, map)| map.get(&self.mask(addr, *len)))
            .flatten()
    }
}

/// The compiled index of a [`Document`].
#[derive(Debug)]
pub(crate) struct Index {
    names: Interner,
    principals: Vec<Principal>,
    rules: Vec<CRule>,
    exact: Map<Box<str>, Hits>,
    suffix: Map<Box<str>, Hits>,
    any_name: Hits,
    v4: Prefixes,
    v6: Prefixes,
    any_dest: Vec<u32>,
}

fn boxed_ports(p: &Option<Vec<u16>>) -> Option<Box<[u16]>> {
    p.as_ref().map(|v| v.clone().into_boxed_slice())
}

impl Index {
    pub(crate) fn build(doc: &Document) -> Index {
        let mut names = Interner::default();
        let mut roles = Interner::default();
        let mut envs = Interner::default();
        let mut principals = Vec::new();
        for m in &doc.machines {
            let id = names.id(&m.name) as usize;
            if principals.len() <= id {
                principals.resize_with(id + 1, Principal::default);
            }
            principals[id] = Principal {
                roles: m.roles.iter().map(|r| roles.id(r)).collect(),
                env: m.env.as_deref().map(|e| envs.id(e)),
                mode: m.mode,
            };
        }
        let mut ix = Index {
            names,
            principals,
            rules: Vec::with_capacity(doc.rules.len()),
            exact: Map::default(),
            suffix: Map::default(),
            any_name: Vec::new(),
            v4: Prefixes::new(32),
            v6: Prefixes::new(128),
            any_dest: Vec::new(),
        };
        let mut by_tag: Map<&str, Vec<usize>> = Map::default();
        for (si, s) in doc.services.iter().enumerate() {
            for t in &s.tags {
                by_tag.entry(t.as_str()).or_default().push(si);
            }
        }
        for (ri, rule) in doc.rules.iter().enumerate() {
            let ri = ri as u32;
            let from = rule.from.as_ref().map(|f| CFrom {
                machines: IdSet::from_ids(f.machines.iter().map(|m| ix.names.id(m))),
                roles: IdSet::from_ids(f.roles.iter().map(|r| roles.id(r))),
                envs: IdSet::from_ids(f.env.iter().map(|e| envs.id(e))),
            });
            let mut groups = Vec::new();
            match &rule.to {
                Some(to) if !to.any_destination() => {
                    if !to.hosts.is_empty() || !to.cidrs.is_empty() {
                        ix.add_group(ri, groups.len() as u32, &to.hosts, &to.cidrs);
                        groups.push(Group {
                            ports: None,
                            cidrs: to.cidrs.clone().into(),
                        });
                    }
                    // The services a rule names, directly or by tag, in
                    // document order, without scanning every service.
                    let mut named: Vec<usize> = to.services.clone();
                    for t in &to.tags {
                        named.extend(by_tag.get(t.as_str()).into_iter().flatten().copied());
                    }
                    named.sort_unstable();
                    named.dedup();
                    for si in named {
                        let s = &doc.services[si];
                        {
                            ix.add_group(ri, groups.len() as u32, &s.hosts, &s.cidrs);
                            groups.push(Group {
                                ports: boxed_ports(&s.ports),
                                cidrs: s.cidrs.clone().into(),
                            });
                        }
                    }
                }
                _ => ix.any_dest.push(ri),
            }
            ix.rules.push(CRule {
                effect: rule.effect,
                mode: rule.mode,
                from,
                ports: rule.to.as_ref().and_then(|t| boxed_ports(&t.ports)),
                groups: groups.into(),
                protocols: rule.protocols,
                methods: rule
                    .methods
                    .as_ref()
                    .map(|m| m.iter().map(|s| s.as_str().into()).collect()),
                paths: rule.paths.as_ref().map(|p| p.clone().into()),
                data: rule.data,
                expire: rule.expire_if_unused,
            });
        }
        ix
    }

    fn add_group(&mut self, rule: u32, group: u32, hosts: &[HostPattern], cidrs: &[IpNet]) {
        let hit = (rule, group);
        for h in hosts {
            match h {
                HostPattern::Exact(n) => self.exact.entry(n.clone()).or_default().push(hit),
                HostPattern::Suffix(s) => self.suffix.entry(s.clone()).or_default().push(hit),
                HostPattern::AnyName => self.any_name.push(hit),
            }
        }
        for net in cidrs {
            match net {
                IpNet::V4(n) => self
                    .v4
                    .insert(u32::from(n.network()).into(), n.prefix_len(), hit),
                IpNet::V6(n) => self.v6.insert(u128::from(n.network()), n.prefix_len(), hit),
            }
        }
    }

    /// Decides a request. Allocates nothing.
    pub(crate) fn decide(
        &self,
        doc: &Document,
        req: &Request<'_>,
        grants: &dyn Grants,
    ) -> Decision {
        let who = self.names.get(req.machine);
        let principal = who.and_then(|id| self.principals.get(id as usize));
        let machine_mode = principal.and_then(|p| p.mode);
        let mut cx = Cx {
            ix: self,
            doc_rules: &doc.rules,
            req,
            grants,
            who,
            principal,
            machine_mode,
            default_mode: doc.defaults.mode,
            tally: Tally::default(),
        };
        for &ri in &self.any_dest {
            cx.check(ri, None);
        }
        if let HostRef::Name(name) = req.host {
            let host_hits = self
                .exact
                .get(name)
                .into_iter()
                .chain(parent_suffixes(name).filter_map(|s| self.suffix.get(s)))
                .flatten()
                .chain(self.any_name.iter());
            for &(ri, g) in host_hits {
                cx.check(ri, Some((g, false)));
            }
        }
        for ip in req.addrs() {
            let hits = match ip {
                IpAddr::V4(v4) => self.v4.lookup(u32::from(v4).into()),
                IpAddr::V6(v6) => self.v6.lookup(u128::from(v6)),
            };
            for &(ri, g) in hits {
                cx.check(ri, Some((g, true)));
            }
        }
        finish(doc, &cx.tally, machine_mode, req)
    }
}

struct Cx<'a, 'r> {
    ix: &'a Index,
    doc_rules: &'a [crate::model::Rule],
    req: &'a Request<'r>,
    grants: &'a dyn Grants,
    who: Option<u32>,
    principal: Option<&'a Principal>,
    machine_mode: Option<Mode>,
    default_mode: Mode,
    tally: Tally,
}

impl Cx<'_, '_> {
    /// Checks rule `ri` in full, given that the index reached it through
    /// `via` (a group, and whether through its cidrs), and notes the result.
    fn check(&mut self, ri: u32, via: Option<(u32, bool)>) {
        let rule = &self.ix.rules[ri as usize];
        let req = self.req;
        let mut via_cidr = false;
        if let Some((g, by_cidr)) = via {
            let group = &rule.groups[g as usize];
            if group.ports.as_ref().is_some_and(|p| !p.contains(&req.port)) {
                return;
            }
            if by_cidr {
                // The lookup found one address inside; allow rules need all.
                if rule.effect == Effect::Allow
                    && !req
                        .addrs()
                        .all(|ip| group.cidrs.iter().any(|n| n.contains(&ip)))
                {
                    return;
                }
                via_cidr = true;
            }
        }
        if rule.ports.as_ref().is_some_and(|p| !p.contains(&req.port)) {
            return;
        }
        if let Some(p) = rule.protocols {
            let tls_as_https = req.protocol == Protocol::Tls && p.contains(Protocol::Https);
            if !p.contains(req.protocol) && !tls_as_https {
                return;
            }
        }
        if let Some(from) = &rule.from {
            let listed = self.who.is_some_and(|id| from.machines.contains(id));
            let by_role = || {
                self.principal
                    .is_some_and(|p| p.roles.iter().any(|r| from.roles.contains(*r)))
            };
            let by_env = || {
                self.principal
                    .and_then(|p| p.env)
                    .is_some_and(|e| from.envs.contains(e))
            };
            if !(listed || by_role() || by_env()) {
                return;
            }
        }
        let http_conditions = rule.methods.is_some() || rule.paths.is_some() || rule.data.is_some();
        let mut unseen = false;
        if http_conditions && req.method == crate::decide::ANY_REQUEST {
            // A probe: some request could meet an allow's conditions, and
            // some could avoid a refusal's.
            if rule.effect != Effect::Allow {
                return;
            }
        } else if req.is_tunnel() && http_conditions {
            self.tally.could_see(ri);
            if rule.effect == Effect::Allow {
                return;
            }
            unseen = true;
        } else {
            if rule
                .methods
                .as_ref()
                .is_some_and(|m| !m.iter().any(|m| m.eq_ignore_ascii_case(req.method)))
            {
                return;
            }
            if rule
                .paths
                .as_ref()
                .is_some_and(|p| !p.iter().any(|g| g.matches(req.path)))
            {
                return;
            }
            if rule.data.is_some_and(|d| !d.intersects(req.data)) {
                return;
            }
        }
        let mode = rule_mode(rule.mode, self.machine_mode, self.default_mode);
        if let Some(idle) = rule.expire {
            let id = &self.doc_rules[ri as usize].id;
            let last = self.grants.last_used(id, req.machine);
            let since = last
                .or_else(|| self.grants.first_loaded(id))
                .unwrap_or(req.now);
            if req.now.saturating_sub(since) >= i64::try_from(idle).unwrap_or(i64::MAX) {
                self.tally.expired(
                    Expired {
                        rule: ri,
                        last_used: last,
                        since,
                    },
                    mode,
                );
                return;
            }
        }
        self.tally.matched(ri, rule.effect, mode, unseen, via_cidr);
    }
}
