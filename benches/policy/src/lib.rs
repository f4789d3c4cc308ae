//! One policy shape, generated at any size and written three ways: as a veto
//! policy (YAML), as cedar policies (with the entities cedar needs) and as a
//! data-driven Rego policy with its data document, so that the three engines
//! can be timed deciding the same requests.
//!
//! Everything is deterministic (a fixed seed, a hand-written PRNG): a rerun
//! measures the same policy and the same requests.
//!
//! The shape, per 100 rules (see [`Shape::generate`]):
//!
//! | share | rule |
//! |---|---|
//! | 72 | `allow` one machine (60%) or one role (40%) to one exact host, often with `methods` and `ports` |
//! | 10 | `deny` everyone (60%) or one env (40%) to `*.dK.net` |
//! | 1 | `deny` one env to a vendor's `*.vK.com` |
//! | 6 | `allow` one machine or role to a `/24` |
//! | 2 | `deny` everyone to a `/16` |
//! | 5 | `deny` everyone to `*.vK.com` when the request carries a data class |
//! | 4 | `allow` one role to `GET` on `*.vK.com` |
//!
//! The pools of hosts, vendors and networks grow with the rule count, so a
//! host has about the same number of rules at every size: a larger policy
//! covers more destinations, not more rules per destination.

pub mod cedar;
pub mod rego;
pub mod veto;

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The rule counts the benchmark measures.
pub const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];
/// Machines in every policy, whatever its rule count.
pub const MACHINES: usize = 1_000;
pub const ROLES: usize = 50;
pub const ENVS: [&str; 3] = ["prod", "staging", "dev"];
/// Requests in the sample each engine decides.
pub const REQUESTS: usize = 1_000;
/// The data classes the data rules name; all are built into veto.
pub const CLASSES: [&str; 3] = ["email", "credit_card", "us_ssn"];
/// Methods of requests aimed at no rule in particular.
const ANY_METHOD: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const SEED: u64 = 0x7665_746f_2d62_656e;

/// SplitMix64: small, fast and good enough to pick rule kinds; avoids a
/// dependency on `rand` and its version churn.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Clone, Debug)]
pub struct Machine {
    pub name: String,
    /// Indices into the roles `role00`..`role49`.
    pub roles: Vec<usize>,
    /// Index into [`ENVS`].
    pub env: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a rule is about. One principal per rule, so that each rule maps to a
/// single cedar policy scope.
#[derive(Clone, Debug)]
pub enum From {
    Machine(usize),
    Role(usize),
    Env(usize),
    Anyone,
}

#[derive(Clone, Debug)]
pub enum Dest {
    /// An exact host name.
    Host(String),
    /// `*.<suffix>`: every subdomain of the suffix, never the suffix itself.
    Suffix(String),
    /// An IPv4 network: address and prefix length (16 or 24 only).
    Cidr(Ipv4Addr, u8),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub from: From,
    pub dest: Dest,
    pub ports: Option<Vec<u16>>,
    pub methods: Option<Vec<&'static str>>,
    pub data: Option<Vec<&'static str>>,
}

/// One request, engine-neutral. Always an `https` request veto can see
/// (methods and data are checked), to one IPv4 literal or one host name that
/// carries no resolved addresses.
#[derive(Clone, Debug)]
pub struct Req {
    pub machine: String,
    /// A host name, or the dotted IPv4 literal when `ip` is set.
    pub host: String,
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
    pub method: &'static str,
    pub data: Vec<&'static str>,
}

impl Req {
    /// The proper parent suffixes of the host at label boundaries (`a.b.c`:
    /// `b.c`, `c`), none for an IP literal: the helper the Rego policy gets
    /// precomputed in its input, as veto's index computes it per request.
    pub fn suffixes(&self) -> Vec<&str> {
        if self.ip.is_some() {
            return Vec::new();
        }
        self.host
            .match_indices('.')
            .map(|(i, _)| &self.host[i + 1..])
            .collect()
    }

    /// The networks of every prefix length the shape uses that contain the
    /// address: the Rego input's other precomputed helper.
    pub fn nets(&self) -> Vec<String> {
        match self.ip {
            None => Vec::new(),
            Some(ip) => [24u8, 16]
                .iter()
                .map(|&len| format!("{}/{len}", network(ip, len)))
                .collect(),
        }
    }
}

/// The network address of `ip` at prefix length `len`.
pub fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Ipv4Addr::from(u32::from(ip) & mask)
}

pub fn role_name(i: usize) -> String {
    format!("role{i:02}")
}

/// The machines and rules of one policy.
#[derive(Clone, Debug)]
pub struct Shape {
    pub machines: Vec<Machine>,
    pub rules: Vec<Rule>,
}

/// Pools that grow with the rule count (see the module docs).
struct Pools {
    hosts: usize,
    vendors: usize,
    deny_domains: usize,
}

impl Pools {
    fn new(n: usize) -> Pools {
        Pools {
            hosts: (n / 3).max(3),
            vendors: (n / 30).max(2),
            deny_domains: (n / 30).max(2),
        }
    }
    fn host(&self, h: usize) -> String {
        format!("api{h}.v{}.com", h % self.vendors)
    }
}

/// A public IPv4 address: first octet 11..=99 keeps clear of every range
/// veto's private-network guard refuses, which cedar and Rego do not model.
fn public_ip(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::new(
        11 + rng.below(89) as u8,
        rng.below(256) as u8,
        rng.below(256) as u8,
        rng.below(256) as u8,
    )
}

fn machines() -> Vec<Machine> {
    // Its own seed: the same 1,000 machines at every rule count.
    let mut rng = Rng::new(SEED);
    (0..MACHINES)
        .map(|i| {
            let mut roles = vec![rng.below(ROLES)];
            if rng.below(100) < 30 {
                let second = rng.below(ROLES);
                if second != roles[0] {
                    roles.push(second);
                }
            }
            Machine {
                name: format!("m{i:04}"),
                roles,
                env: rng.below(ENVS.len()),
            }
        })
        .collect()
}

impl Shape {
    /// The policy with `n` rules.
    pub fn generate(n: usize) -> Shape {
        let machines = machines();
        let pools = Pools::new(n);
        let mut rng = Rng::new(SEED ^ (n as u64).wrapping_mul(0x1000_0000_01b3));
        let mut rules = Vec::with_capacity(n);
        for i in 0..n {
            let kind = rng.below(100);
            let machine_or_role = |rng: &mut Rng, machine_pct: usize| {
                if rng.below(100) < machine_pct {
                    From::Machine(rng.below(MACHINES))
                } else {
                    From::Role(rng.below(ROLES))
                }
            };
            let (effect, from, dest, ports, methods, data) = match kind {
                0..72 => {
                    let from = machine_or_role(&mut rng, 60);
                    let host = pools.host(rng.below(pools.hosts));
                    let methods = match rng.below(100) {
                        0..70 => Some(vec!["GET", "POST"]),
                        70..85 => Some(vec!["GET"]),
                        _ => None,
                    };
                    let ports = (rng.below(100) < 60).then(|| vec![443]);
                    (Effect::Allow, from, Dest::Host(host), ports, methods, None)
                }
                72..82 => {
                    let from = if rng.below(100) < 40 {
                        From::Env(rng.below(ENVS.len()))
                    } else {
                        From::Anyone
                    };
                    let sfx = format!("d{}.net", rng.below(pools.deny_domains));
                    (Effect::Deny, from, Dest::Suffix(sfx), None, None, None)
                }
                82..83 => {
                    let from = From::Env(rng.below(ENVS.len()));
                    let sfx = format!("v{}.com", rng.below(pools.vendors));
                    (Effect::Deny, from, Dest::Suffix(sfx), None, None, None)
                }
                83..89 => {
                    let from = machine_or_role(&mut rng, 50);
                    let net = network(public_ip(&mut rng), 24);
                    let methods = (rng.below(2) == 0).then(|| vec!["GET", "POST"]);
                    (
                        Effect::Allow,
                        from,
                        Dest::Cidr(net, 24),
                        None,
                        methods,
                        None,
                    )
                }
                89..91 => {
                    let net = network(public_ip(&mut rng), 16);
                    (
                        Effect::Deny,
                        From::Anyone,
                        Dest::Cidr(net, 16),
                        None,
                        None,
                        None,
                    )
                }
                91..96 => {
                    let sfx = format!("v{}.com", rng.below(pools.vendors));
                    let data = match rng.below(3) {
                        0 => vec!["email"],
                        1 => vec!["credit_card"],
                        _ => vec!["email", "us_ssn"],
                    };
                    (
                        Effect::Deny,
                        From::Anyone,
                        Dest::Suffix(sfx),
                        None,
                        None,
                        Some(data),
                    )
                }
                _ => {
                    let from = From::Role(rng.below(ROLES));
                    let sfx = format!("v{}.com", rng.below(pools.vendors));
                    let methods = Some(vec!["GET"]);
                    (Effect::Allow, from, Dest::Suffix(sfx), None, methods, None)
                }
            };
            rules.push(Rule {
                id: format!("r{i:06}"),
                effect,
                from,
                dest,
                ports,
                methods,
                data,
            });
        }
        Shape { machines, rules }
    }

    /// [`REQUESTS`] requests that hit a mix of rules: about 45% aimed at an
    /// allow rule, 20% at a deny rule, 35% at nothing in particular (and so
    /// mostly the default). What each engine then decides is its own
    /// business; aiming only sets the mix.
    pub fn requests(&self) -> Vec<Req> {
        let n = self.rules.len();
        let pools = Pools::new(n);
        let mut rng = Rng::new(!SEED ^ n as u64);
        let by_role: Vec<Vec<usize>> = (0..ROLES)
            .map(|r| {
                (0..self.machines.len())
                    .filter(|&m| self.machines[m].roles.contains(&r))
                    .collect()
            })
            .collect();
        let by_env: Vec<Vec<usize>> = (0..ENVS.len())
            .map(|e| {
                (0..self.machines.len())
                    .filter(|&m| self.machines[m].env == e)
                    .collect()
            })
            .collect();
        let allows: Vec<usize> = (0..n)
            .filter(|&i| self.rules[i].effect == Effect::Allow)
            .collect();
        let denies: Vec<usize> = (0..n)
            .filter(|&i| self.rules[i].effect == Effect::Deny)
            .collect();
        let mut out = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let aim = rng.below(100);
            let target = match aim {
                0..45 if !allows.is_empty() => Some(*rng.pick(&allows)),
                45..65 if !denies.is_empty() => Some(*rng.pick(&denies)),
                _ => None,
            };
            let mut req = match target {
                Some(ri) => self.aimed(&self.rules[ri], &mut rng, &by_role, &by_env),
                None => self.unaimed(&pools, &mut rng),
            };
            // Some traffic carries personal data whatever it is aimed at.
            if req.data.is_empty() && rng.below(100) < 5 {
                req.data.push("email");
            }
            out.push(req);
        }
        out
    }

    fn aimed(
        &self,
        rule: &Rule,
        rng: &mut Rng,
        by_role: &[Vec<usize>],
        by_env: &[Vec<usize>],
    ) -> Req {
        let any = |rng: &mut Rng| rng.below(self.machines.len());
        let m = match &rule.from {
            From::Machine(m) => *m,
            From::Role(r) if !by_role[*r].is_empty() => *rng.pick(&by_role[*r]),
            From::Env(e) if !by_env[*e].is_empty() => *rng.pick(&by_env[*e]),
            _ => any(rng),
        };
        let (host, ip) = match &rule.dest {
            Dest::Host(h) => (h.clone(), None),
            Dest::Suffix(s) => (format!("x{}.{s}", rng.below(1000)), None),
            Dest::Cidr(net, len) => {
                let span = 1u32 << (32 - u32::from(*len));
                let ip = Ipv4Addr::from(u32::from(*net) + rng.below(span as usize) as u32);
                (ip.to_string(), Some(ip))
            }
        };
        let method = match &rule.methods {
            Some(m) => *rng.pick(m),
            None => *rng.pick(&["GET", "POST"]),
        };
        Req {
            machine: self.machines[m].name.clone(),
            host,
            ip,
            port: rule.ports.as_ref().map_or(443, |p| p[0]),
            method,
            data: rule.data.as_ref().map_or_else(Vec::new, |d| vec![d[0]]),
        }
    }

    fn unaimed(&self, pools: &Pools, rng: &mut Rng) -> Req {
        let machine = if rng.below(100) < 10 {
            "anonymous".to_string()
        } else {
            self.machines[rng.below(self.machines.len())].name.clone()
        };
        let (host, ip) = match rng.below(4) {
            0 | 1 => (pools.host(rng.below(pools.hosts)), None),
            2 => (format!("www{}.example.org", rng.below(10_000)), None),
            _ => {
                let ip = public_ip(rng);
                (ip.to_string(), Some(ip))
            }
        };
        Req {
            machine,
            host,
            ip,
            port: if rng.below(100) < 10 { 8443 } else { 443 },
            method: ANY_METHOD[rng.below(ANY_METHOD.len())],
            data: Vec::new(),
        }
    }
}

/// Quotes a string for YAML or cedar (the generator only makes plain ASCII).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `[a, b, c]` with each item written by `f`.
fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    let mut s = String::from("[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}", f(it));
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests;
