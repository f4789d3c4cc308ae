//! veto's policy engine: the policy language of `shared/spec/policy-v1.md`.
//!
//! Pure by design: no I/O, no clock, no async runtime. The caller hands it
//! the policy text and requests (with the time and grant use), and gets back
//! a [`Decision`] that names a rule and can explain itself. That keeps the
//! engine testable from fixtures and usable from the proxy, the CLI and the
//! control plane alike.
//!
//! ```
//! use veto_policy::{Policy, Request, HostRef, Protocol, DataSet, NoGrants, Effect};
//! let p = Policy::compile("version: 1\ndefaults: { decision: allow }\n").unwrap();
//! let req = Request {
//!     machine: "anonymous", protocol: Protocol::Http, host: HostRef::Name("example.com"),
//!     port: 80, ips: &[], method: "GET", path: "/", data: DataSet::EMPTY, now: 0,
//! };
//! assert_eq!(p.decide(&req, &NoGrants).effect(), Effect::Allow);
//! ```

pub mod addr;
mod decide;
pub mod host;
mod index;
mod load;
mod load_rule;
mod lookup;
pub mod model;
pub mod path;
pub mod reference;
pub mod target;
mod warn;
pub mod yaml;

pub use decide::{
    ANY_REQUEST, By, Decision, Expired, Grants, NoGrants, Outcome, Request, Timestamp, format_time,
};
pub use host::{Host, HostError, HostPattern, HostRef, normalize_host};
pub use load::{Diagnostic, load, parse_cidr, parse_duration};
pub use lookup::Lookup;
pub use model::{
    BUILTIN_CLASSES, DataSet, DnsRefusal, DnsRules, Document, Effect, Intercept, LoopRules, Mode,
    Protocol, TunnelGuard, format_duration,
};
pub use path::{PathGlob, normalize_path};
pub use reference::{Miss, Step};
pub use target::{EscapedSlashes, Normalize, PathRules, TargetError, forward_target};

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// A loaded and compiled policy, ready to decide.
#[derive(Debug)]
pub struct Policy {
    doc: Document,
    index: index::Index,
    hash: String,
    warnings: Vec<Diagnostic>,
    /// Whether an allow rule could match by address (`cidrs`, directly or
    /// through a service): only then can a lookup turn a default refusal
    /// into an allow.
    addr_allows: bool,
    /// The ports a lookup is tried against (`lookup.rs`).
    lookup_ports: Box<[u16]>,
}

fn addr_allows(doc: &Document) -> bool {
    let service_cidrs = doc.services.iter().any(|s| !s.cidrs.is_empty());
    doc.rules.iter().any(|r| {
        r.effect == Effect::Allow
            && r.to.as_ref().is_some_and(|t| {
                !t.cidrs.is_empty()
                    || (service_cidrs && (!t.services.is_empty() || !t.tags.is_empty()))
            })
    })
}

/// A runtime opt-out (contract: `veto optout add`), as the policy engine
/// takes it: a deny rule in force ahead of every rule of the file.
#[derive(Clone, Debug)]
pub struct OptOutSpec<'a> {
    /// `optout-<n>`: ids the file cannot use.
    pub rule_id: &'a str,
    /// `host` (a host pattern), `service` (a service of the file) or
    /// `machine`.
    pub kind: &'a str,
    pub value: &'a str,
    pub reason: &'a str,
}

/// The deny rule an opt-out stands for, checked against the document.
fn optout_rule(doc: &Document, o: &OptOutSpec<'_>) -> Result<model::Rule, String> {
    let mut to = None;
    let mut from = None;
    match o.kind {
        "host" => {
            let p = HostPattern::parse(o.value)?;
            to = Some(model::To {
                hosts: vec![p],
                ..model::To::default()
            });
        }
        "service" => {
            let i = doc
                .services
                .iter()
                .position(|s| s.name == o.value)
                .ok_or_else(|| format!("unknown service `{}`", o.value))?;
            to = Some(model::To {
                services: vec![i],
                ..model::To::default()
            });
        }
        "machine" => {
            from = Some(model::From {
                machines: vec![o.value.to_string()],
                ..model::From::default()
            });
        }
        other => {
            return Err(format!(
                "an opt-out is for a host, a service or a machine, not `{other}`"
            ));
        }
    }
    Ok(model::Rule {
        id: o.rule_id.to_string(),
        effect: Effect::Deny,
        reason: Some(o.reason.to_string()),
        from,
        to,
        protocols: None,
        methods: None,
        paths: None,
        data: None,
        // Opt-outs turn connections off: report mode never softens them.
        mode: Some(Mode::Enforce),
        expire_if_unused: None,
        pos: yaml::Pos::default(),
    })
}

impl Policy {
    /// Loads and compiles a policy. On failure, every problem found.
    pub fn compile(text: &str) -> Result<Policy, Vec<Diagnostic>> {
        Policy::compile_with_optouts(text, &[]).map(|(p, _)| p)
    }

    /// Checks that an opt-out fits this policy (a valid host pattern, a
    /// service the policy has).
    pub fn check_optout(&self, o: &OptOutSpec<'_>) -> Result<(), String> {
        optout_rule(&self.doc, o).map(|_| ())
    }

    /// Compiles a policy with runtime opt-outs in force ahead of its rules.
    /// An opt-out that no longer fits (its service was removed from the
    /// file) is left out and reported in the second value, so it cannot
    /// block a policy change; it stays stored.
    pub fn compile_with_optouts(
        text: &str,
        optouts: &[OptOutSpec<'_>],
    ) -> Result<(Policy, Vec<String>), Vec<Diagnostic>> {
        let mut doc = load::load(text)?;
        let digest = Sha256::digest(text.as_bytes());
        let mut hash = String::with_capacity(71);
        hash.push_str("sha256:");
        for b in digest.iter() {
            let _ = write!(hash, "{b:02x}");
        }
        let warnings = warn::warnings(&doc);
        let mut skipped = Vec::new();
        let mut front = Vec::with_capacity(optouts.len());
        for o in optouts {
            match optout_rule(&doc, o) {
                Ok(rule) => front.push(rule),
                Err(why) => skipped.push(format!("{}: {why}", o.rule_id)),
            }
        }
        if !front.is_empty() {
            front.append(&mut doc.rules);
            doc.rules = front;
        }
        let policy = Policy {
            index: index::Index::build(&doc),
            addr_allows: addr_allows(&doc),
            lookup_ports: lookup::ports(&doc),
            doc,
            hash,
            warnings,
        };
        Ok((policy, skipped))
    }

    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// `sha256:<hex>` of the policy text: what a node says it enforces.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Things that are valid but probably not what the author meant.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Decides a request through the compiled index. The hot path: it does
    /// not allocate.
    pub fn decide(&self, req: &Request<'_>, grants: &dyn Grants) -> Decision {
        self.index.decide(&self.doc, req, grants)
    }

    /// The decision when the destination's addresses cannot change whether
    /// it is refused: `Some` only for a refusal (by a rule, or by the
    /// default when no allow rule matches by address). The proxy asks this
    /// before resolving, so a refused name is never looked up: a lookup of
    /// `<secret>.attacker.example` would itself deliver the secret.
    /// `req.ips` must be empty.
    pub fn refused_by_name(&self, req: &Request<'_>, grants: &dyn Grants) -> Option<Decision> {
        let d = self.decide(req, grants);
        let final_refusal = match d.applied.by {
            By::Rule(_) | By::PrivateNetwork(..) => true,
            By::Default => !self.addr_allows,
            // A tunnel refused for what veto cannot see may still be
            // opened and decided request by request.
            By::Unseen(_) => false,
        };
        // Report mode lets the request out: it will be sent, so resolved.
        (d.applied.effect == Effect::Deny && d.shadow.effect == Effect::Deny && final_refusal)
            .then_some(d)
    }

    /// Decides a request by trying every rule, and returns what each rule
    /// did. Slow; for `explain` and for tests.
    pub fn explain(&self, req: &Request<'_>, grants: &dyn Grants) -> (Decision, Vec<Step>) {
        reference::decide(&self.doc, req, grants)
    }

    /// The rule id an outcome names: a rule's id, `default` or
    /// `private-network`.
    pub fn rule_id(&self, by: By) -> &str {
        match by {
            By::Rule(i) | By::Unseen(i) => &self.doc.rules[i as usize].id,
            By::Default => "default",
            By::PrivateNetwork(..) => "private-network",
        }
    }

    /// The data classes a redact decision replaces.
    pub fn redact_classes(&self, d: &Decision) -> DataSet {
        match d.applied {
            Outcome {
                effect: Effect::Redact,
                by: By::Rule(i),
                ..
            } => self.doc.rules[i as usize].data.unwrap_or_default(),
            _ => DataSet::EMPTY,
        }
    }

    /// The bit of a data class in [`Request::data`].
    pub fn class_bit(&self, name: &str) -> Option<u8> {
        self.doc.class_bit(name)
    }

    /// A sentence for people and the audit record: why this decision. It
    /// explains the outcome the decision names, except for a refusal that
    /// the shadow decision would let through (a report-mode allow rule):
    /// then it says why it was refused, and what would have allowed it.
    pub fn reason(&self, d: &Decision, req: &Request<'_>) -> String {
        if let (Effect::Deny, Some(would)) = (d.effect(), d.would()) {
            let mut s = self.outcome_reason(&d.applied, req);
            let by = match d.shadow.by {
                By::Rule(i) => format!("rule `{}` (report mode)", self.doc.rules[i as usize].id),
                other => format!("`{}`", self.rule_id(other)),
            };
            s.push_str(&format!(
                "; enforced in full, {by} would {} it",
                would.as_str()
            ));
            return s;
        }
        self.outcome_reason(d.named(), req)
    }

    fn outcome_reason(&self, o: &Outcome, req: &Request<'_>) -> String {
        let mut s = match o.by {
            By::Rule(i) => {
                let r = &self.doc.rules[i as usize];
                match &r.reason {
                    Some(reason) => reason.clone(),
                    None => format!("{} by rule `{}`", past(o.effect), r.id),
                }
            }
            By::Unseen(i) => {
                let r = &self.doc.rules[i as usize];
                let what: Vec<&str> = [
                    (r.methods.is_some(), "methods"),
                    (r.paths.is_some(), "paths"),
                    (r.data.is_some(), "data"),
                ]
                .into_iter()
                .filter_map(|(on, w)| on.then_some(w))
                .collect();
                format!(
                    "{} (veto cannot check the {} of this rule inside a {} tunnel it does not open, so it refuses the tunnel)",
                    r.reason.as_deref().unwrap_or(""),
                    what.join(" and "),
                    req.protocol.as_str()
                )
            }
            By::Default => {
                let declared = self.doc.defaults.decision;
                if o.effect == declared {
                    format!(
                        "no rule matched; the policy's default is {}",
                        declared.as_str()
                    )
                } else {
                    format!(
                        "no rule matched; the default ({}) is in report mode",
                        declared.as_str()
                    )
                }
            }
            By::PrivateNetwork(ip, class) => {
                let mut s = format!(
                    "{ip} is in a private network: {} ({})",
                    class.range, class.what
                );
                if let Some(v4) = class.embedded {
                    s.push_str(&format!(", through the IPv4 address {v4} it embeds"));
                }
                s
            }
        };
        if let (Effect::Deny, Some(e)) = (o.effect, o.expired) {
            let r = &self.doc.rules[e.rule as usize];
            let idle = format_duration(r.expire_if_unused.unwrap_or(0));
            match e.last_used {
                Some(t) => s.push_str(&format!(
                    "; grant `{}` expired: last used {}, unused for {idle} or more",
                    r.id,
                    format_time(t)
                )),
                None => s.push_str(&format!(
                    "; grant `{}` expired: never used since it was loaded at {}, unused for {idle} or more",
                    r.id,
                    format_time(e.since)
                )),
            }
        }
        s
    }
}

fn past(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allowed",
        Effect::Deny => "refused",
        Effect::Redact => "redacted",
    }
}
