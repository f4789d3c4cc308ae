//! What every request shares: the policy in force (swapped atomically on
//! reload, never locked), the credentials, the resolver, the upstream pool
//! and the audit writer.

use crate::config::Config;
use crate::inspect::Detectors;
use crate::resolve::Resolver;
use arc_swap::ArcSwap;
use std::sync::Arc;
use veto_audit::Writer;
use veto_policy::{Grants, Policy, Timestamp};

/// A compiled policy with its detectors and the opt-outs compiled into it:
/// swapped as one, so a request never sees the rules of one file with the
/// detectors of another, and what is in force is always one text with one
/// set of opt-outs (changed only through `Shared::change`).
pub struct Active {
    pub policy: Policy,
    /// The policy text, for recompiling with other opt-outs.
    pub source: Arc<str>,
    pub detectors: Detectors,
    /// When this policy was loaded (Unix seconds): the start of the idle
    /// period of grants no machine has used yet.
    pub loaded_at: Timestamp,
    /// The opt-outs in force: those compiled into `policy`.
    pub optouts: Arc<Vec<OwnedOptOut>>,
    /// Every method a rule names (upper case): the methods a `_method`
    /// in a body could turn a POST into that a rule would see.
    pub methods: Box<[String]>,
}

impl Active {
    fn new(
        policy: Policy,
        source: Arc<str>,
        loaded_at: Timestamp,
        optouts: Vec<OwnedOptOut>,
    ) -> Result<Active, String> {
        let detectors = Detectors::new(&policy)?;
        let mut methods: Vec<String> = policy
            .document()
            .rules
            .iter()
            .filter_map(|r| r.methods.as_ref())
            .flatten()
            .cloned()
            .collect();
        methods.sort();
        methods.dedup();
        Ok(Active {
            methods: methods.into(),
            policy,
            source,
            detectors,
            loaded_at,
            optouts: Arc::new(optouts),
        })
    }

    /// Compiles policy text with the opt-outs in force. Err: the file's
    /// problems, one per line. Opt-outs that no longer fit are logged and
    /// left out.
    pub fn compile(
        text: &str,
        name: &str,
        optouts: &[OwnedOptOut],
        loaded_at: Timestamp,
    ) -> Result<Active, String> {
        let specs: Vec<veto_policy::OptOutSpec<'_>> =
            optouts.iter().map(OwnedOptOut::spec).collect();
        let (policy, skipped) = Policy::compile_with_optouts(text, &specs).map_err(|errs| {
            errs.iter()
                .map(|d| format!("{name}:{d}"))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        for s in skipped {
            tracing::warn!("opt-out not applied: {s}");
        }
        Active::new(policy, text.into(), loaded_at, optouts.to_vec())
    }
}

/// An opt-out as the proxy keeps it, to recompile with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedOptOut {
    pub rule_id: String,
    pub kind: String,
    pub value: String,
    pub reason: String,
}

impl OwnedOptOut {
    pub fn spec(&self) -> veto_policy::OptOutSpec<'_> {
        veto_policy::OptOutSpec {
            rule_id: &self.rule_id,
            kind: &self.kind,
            value: &self.value,
            reason: &self.reason,
        }
    }
}

/// Checks `user:token` from `Proxy-Authorization`. The seam to the
/// credential store: `Err` is the sentence for the 407.
pub trait Credentials: Send + Sync {
    fn check(&self, machine: &str, token: &str, now: Timestamp) -> Result<(), String>;
    /// A machine proven by a client certificate: still registered, not
    /// revoked, expired or idle.
    fn check_machine(&self, machine: &str, now: Timestamp) -> Result<(), String>;
    /// When the machine's current registration was made, if it is known.
    fn registered_at(&self, _machine: &str) -> Option<Timestamp> {
        None
    }
}

/// Until machines are registered, every presented credential is unknown.
pub struct NoCredentials;

impl Credentials for NoCredentials {
    fn check(&self, machine: &str, _token: &str, _now: Timestamp) -> Result<(), String> {
        Err(format!("unknown machine `{machine}`"))
    }
    fn check_machine(&self, machine: &str, _now: Timestamp) -> Result<(), String> {
        Err(format!(
            "machine `{machine}` is not registered (veto machine add {machine})"
        ))
    }
}

/// Grant use (policy-v1 "Permissions that expire"): the last applied allow
/// per (rule, machine), and when each rule id was first loaded. Held in
/// memory behind a mutex taken only for a map lookup or update, never
/// across I/O; the caller persists it in batches (`take_unwritten`) and
/// loads what the store holds (`merge`, `merge_first_loaded`).
#[derive(Default)]
pub struct GrantBook {
    inner: std::sync::Mutex<Book>,
}

/// Last use, and whether the store has it.
type Use = (Timestamp, bool);

#[derive(Default)]
struct Book {
    /// rule id -> machine -> last use. Nested so lookups borrow `&str`
    /// and allocate nothing.
    last_used: std::collections::HashMap<Box<str>, std::collections::HashMap<Box<str>, Use>>,
    first_loaded: std::collections::HashMap<Box<str>, Timestamp>,
}

impl GrantBook {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the rules of a policy just loaded: a rule id seen for the
    /// first time starts its idle period now. Returns the ids of every
    /// expiring rule of the policy.
    pub fn loaded(&self, policy: &Policy, now: Timestamp) -> Vec<String> {
        let mut b = self.book();
        let mut ids = Vec::new();
        for r in policy
            .document()
            .rules
            .iter()
            .filter(|r| r.expire_if_unused.is_some())
        {
            b.first_loaded.entry(r.id.as_str().into()).or_insert(now);
            ids.push(r.id.to_string());
        }
        ids
    }

    /// A first load the store remembers (from before a restart): the
    /// earlier time counts.
    pub fn merge_first_loaded(&self, rule: &str, at: Timestamp) {
        let mut b = self.book();
        match b.first_loaded.get_mut(rule) {
            Some(t) if *t <= at => {}
            Some(t) => *t = at,
            None => {
                b.first_loaded.insert(rule.into(), at);
            }
        }
    }

    /// Every recorded use: (rule, machine, last use).
    pub fn uses(&self) -> Vec<(String, String, Timestamp)> {
        let b = self.book();
        let mut out: Vec<_> = b
            .last_used
            .iter()
            .flat_map(|(rule, m)| {
                m.iter()
                    .map(move |(machine, t)| (rule.to_string(), machine.to_string(), t.0))
            })
            .collect();
        out.sort();
        out
    }

    /// A use: an applied allow decision naming an expiring rule.
    pub fn used(&self, rule: &str, machine: &str, now: Timestamp) {
        self.set(rule, machine, now, false);
    }

    /// A use the store holds (from before a restart, or a renewal): kept
    /// if newer, not written back.
    pub fn merge(&self, rule: &str, machine: &str, at: Timestamp) {
        self.set(rule, machine, at, true);
    }

    fn set(&self, rule: &str, machine: &str, at: Timestamp, written: bool) {
        let mut b = self.book();
        if let Some(t) = b.last_used.get_mut(rule).and_then(|m| m.get_mut(machine)) {
            // The same second again changes nothing the store lacks.
            if at > t.0 {
                *t = (at, written);
            }
            return;
        }
        b.last_used
            .entry(rule.into())
            .or_default()
            .insert(machine.into(), (at, written));
    }

    /// Uses the store does not have yet, marked as written.
    pub fn take_unwritten(&self) -> Vec<(String, String, Timestamp)> {
        let mut b = self.book();
        let mut out = Vec::new();
        for (rule, m) in b.last_used.iter_mut() {
            for (machine, t) in m.iter_mut().filter(|(_, t)| !t.1) {
                t.1 = true;
                out.push((rule.to_string(), machine.to_string(), t.0));
            }
        }
        out
    }

    /// Gives back uses whose write failed, unless a newer use came since.
    pub fn unwritten(&self, uses: Vec<(String, String, Timestamp)>) {
        let mut b = self.book();
        for (rule, machine, at) in uses {
            if let Some(t) = b
                .last_used
                .get_mut(rule.as_str())
                .and_then(|m| m.get_mut(machine.as_str()))
                && t.0 == at
            {
                t.1 = false;
            }
        }
    }
}

impl Grants for GrantBook {
    fn last_used(&self, rule: &str, machine: &str) -> Option<Timestamp> {
        self.book()
            .last_used
            .get(rule)
            .and_then(|m| m.get(machine))
            .map(|t| t.0)
    }
    fn first_loaded(&self, rule: &str) -> Option<Timestamp> {
        self.book().first_loaded.get(rule).copied()
    }
}

pub struct Shared {
    pub config: Config,
    pub policy: ArcSwap<Active>,
    pub credentials: ArcSwap<Box<dyn Credentials>>,
    pub resolver: Resolver,
    pub writer: Writer,
    pub client: crate::forward::Client,
    /// This proxy's own listening address, which is never a destination.
    pub own_addr: std::net::SocketAddr,
    pub metrics: crate::metrics::Metrics,
    pub grants: GrantBook,
    /// Whose turn it is to change the policy in force (`owner.rs`).
    pub(crate) owner: tokio::sync::Mutex<()>,
    /// Addresses veto's DNS listener answered, by name (`dns.rs`).
    pub remembered: crate::dns::Remembered,
    /// The DNS covert-channel guard's counts (`tunnel_guard.rs`).
    pub(crate) tunnel: crate::tunnel_guard::Windows,
    /// `config.node_id` as the `CDN-Loop` value veto adds (made once:
    /// cloning it per request shares its bytes).
    pub(crate) cdn_loop: Option<http::HeaderValue>,
    /// Set when a CA is configured: tunnels may be opened for inspection.
    pub intercept: Option<crate::intercept::Interceptor>,
}

impl Shared {
    pub fn new(
        config: Config,
        active: Active,
        writer: Writer,
        own_addr: std::net::SocketAddr,
        intercept: Option<crate::intercept::Interceptor>,
    ) -> Arc<Shared> {
        let resolver = if config.dns_upstream.is_empty() {
            Resolver::system(config.resolve.clone())
        } else {
            Resolver::with_servers(config.resolve.clone(), &config.dns_upstream)
        };
        let grants = GrantBook::default();
        let _ = grants.loaded(&active.policy, active.loaded_at);
        let client = crate::forward::client(&config);
        let cdn_loop = http::HeaderValue::from_str(&config.node_id).ok();
        Arc::new(Shared {
            config,
            policy: ArcSwap::from_pointee(active),
            credentials: ArcSwap::from_pointee(Box::new(NoCredentials)),
            resolver,
            writer,
            client,
            own_addr,
            metrics: crate::metrics::Metrics::default(),
            grants,
            owner: tokio::sync::Mutex::new(()),
            remembered: crate::dns::Remembered::default(),
            tunnel: crate::tunnel_guard::Windows::default(),
            cdn_loop,
            intercept,
        })
    }
}
