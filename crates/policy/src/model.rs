//! The checked form of a policy document: what the loader produces once
//! every field has been parsed. Nothing here can be invalid; the compiled
//! index (`index.rs`) and the reference evaluator (`reference.rs`) both read
//! it.

use crate::host::HostPattern;
use crate::path::PathGlob;
use crate::yaml::Pos;
use ipnet::IpNet;

/// What a rule does, and what a decision is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
    Redact,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Redact => "redact",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Report,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    Deny,
    Report,
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercept {
    Auto,
    Never,
}

/// The policy's `loops:` section: requests that come back through veto
/// (a relay that forwards to veto again) or pass through a chain of vetos
/// (machine-to-machine calls), counted by the `CDN-Loop` header (RFC 8586)
/// each veto adds to what it forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopRules {
    /// How many times a request may already have passed this veto
    /// (default 0: a request that comes back is refused).
    pub max_passes: u32,
    /// How many vetos (any) a request may already have passed (default 8).
    pub max_depth: u32,
}

impl Default for LoopRules {
    fn default() -> LoopRules {
        LoopRules {
            max_passes: 0,
            max_depth: 8,
        }
    }
}

/// The policy's `dns:` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsRules {
    /// What the covert-channel guard does with lookups shaped like DNS
    /// tunnelling: `report` (the default) records them as `would: deny`.
    pub tunnel_guard: TunnelGuard,
    /// How a refused lookup is answered.
    pub refuse: DnsRefusal,
}

impl Default for DnsRules {
    fn default() -> DnsRules {
        DnsRules {
            tunnel_guard: TunnelGuard::Report,
            refuse: DnsRefusal::NxDomain,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelGuard {
    Off,
    Report,
    Enforce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRefusal {
    NxDomain,
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Tls,
    Tcp,
    /// A DNS lookup of the host (veto's DNS listener): decided by
    /// [`crate::Policy::decide_lookup`].
    Dns,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "dns" => Protocol::Dns,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
            Protocol::Dns => "dns",
        }
    }
    /// `http` and `https` carry visible HTTP requests; `tls` and `tcp` are
    /// tunnels veto decides without seeing inside; a `dns` lookup has no
    /// method, path or data either.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of protocols as a bitmask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Protocols(pub(crate) u8);

impl Protocols {
    pub fn contains(self, p: Protocol) -> bool {
        self.0 & p.bit() != 0
    }
    pub fn insert(&mut self, p: Protocol) {
        self.0 |= p.bit();
    }
    pub fn iter(self) -> impl Iterator<Item = Protocol> {
        [
            Protocol::Http,
            Protocol::Https,
            Protocol::Tls,
            Protocol::Tcp,
            Protocol::Dns,
        ]
        .into_iter()
        .filter(move |p| self.contains(*p))
    }
}

/// The data classes found in a request, as bits in the policy's class table
/// (built-ins first, then the file's detectors in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DataSet(pub u128);

impl DataSet {
    pub const EMPTY: DataSet = DataSet(0);
    pub fn contains(self, bit: u8) -> bool {
        self.0 & (1u128 << bit) != 0
    }
    pub fn insert(&mut self, bit: u8) {
        self.0 |= 1u128 << bit;
    }
    pub fn intersects(self, other: DataSet) -> bool {
        self.0 & other.0 != 0
    }
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..128u8).filter(move |b| self.contains(*b))
    }
}

/// The built-in data classes, in their fixed bit order.
pub const BUILTIN_CLASSES: [&str; 8] = [
    "credit_card",
    "us_ssn",
    "email",
    "iban",
    "aws_access_key",
    "private_key",
    "jwt",
    "github_token",
];

/// At most this many classes in all fit the request's class bitmask.
pub const MAX_CLASSES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectorKind {
    Regex(String),
    Keywords(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct Detector {
    pub name: String,
    pub kind: DetectorKind,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub struct Machine {
    pub name: String,
    pub roles: Vec<String>,
    pub env: Option<String>,
    pub mode: Option<Mode>,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub cidrs: Vec<IpNet>,
    pub ports: Option<Vec<u16>>,
    pub tags: Vec<String>,
    pub pos: Pos,
}

/// `from:` — matches when any of the lists matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct From {
    pub machines: Vec<String>,
    pub roles: Vec<String>,
    pub env: Vec<String>,
}

/// `to:` — services are indices into [`Policy::services`]; tags are kept as
/// names and resolved to services by whoever evaluates them.
#[derive(Clone, Debug, Default)]
pub struct To {
    pub services: Vec<usize>,
    pub hosts: Vec<HostPattern>,
    pub cidrs: Vec<IpNet>,
    pub tags: Vec<String>,
    pub ports: Option<Vec<u16>>,
}

impl To {
    /// True when the destination part (everything but ports) is absent.
    pub fn any_destination(&self) -> bool {
        self.services.is_empty()
            && self.hosts.is_empty()
            && self.cidrs.is_empty()
            && self.tags.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub reason: Option<String>,
    pub from: Option<From>,
    pub to: Option<To>,
    pub protocols: Option<Protocols>,
    /// Upper case.
    pub methods: Option<Vec<String>>,
    pub paths: Option<Vec<PathGlob>>,
    pub data: Option<DataSet>,
    pub mode: Option<Mode>,
    /// Seconds.
    pub expire_if_unused: Option<u64>,
    pub pos: Pos,
}

impl Rule {
    /// Conditions veto can only check on visible HTTP requests.
    pub fn has_http_conditions(&self) -> bool {
        self.methods.is_some() || self.paths.is_some() || self.data.is_some()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub decision: Effect,
    pub mode: Mode,
    pub private_networks: Guard,
}

/// A checked policy document.
#[derive(Clone, Debug)]
pub struct Document {
    pub defaults: Defaults,
    pub intercept: Intercept,
    /// How request paths are put in the form that is matched and forwarded.
    pub paths: crate::target::PathRules,
    /// How veto's DNS listener answers (`dns:`).
    pub dns: DnsRules,
    /// How often a request may pass veto (`loops:`).
    pub loops: LoopRules,
    pub machines: Vec<Machine>,
    pub services: Vec<Service>,
    pub detectors: Vec<Detector>,
    pub rules: Vec<Rule>,
}

impl Document {
    /// The name of a class bit: built-ins first, then detectors.
    pub fn class_name(&self, bit: u8) -> Option<&str> {
        let b = bit as usize;
        BUILTIN_CLASSES.get(b).copied().or_else(|| {
            self.detectors
                .get(b - BUILTIN_CLASSES.len())
                .map(|d| d.name.as_str())
        })
    }

    /// The bit of a class name.
    pub fn class_bit(&self, name: &str) -> Option<u8> {
        BUILTIN_CLASSES
            .iter()
            .position(|c| *c == name)
            .or_else(|| {
                self.detectors
                    .iter()
                    .position(|d| d.name == name)
                    .map(|i| i + BUILTIN_CLASSES.len())
            })
            .and_then(|i| u8::try_from(i).ok())
    }

    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.name == name)
    }
}

/// Formats a duration in seconds in the policy's own units.
pub fn format_duration(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}
