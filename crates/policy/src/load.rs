//! Parse, don't validate: YAML text in, a [`Document`] of checked types out,
//! or every problem with its line and column. A file with any error is
//! refused as a whole.

use crate::host::HostPattern;
use crate::model::*;
use crate::target::{EscapedSlashes, Normalize, PathRules};
use crate::yaml::{self, Node, Pos, Value};
use ipnet::IpNet;
use std::net::IpAddr;

/// A problem in a policy file, at the position of the offending key or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
    }
}

/// Loads a policy document from its text.
pub fn load(text: &str) -> Result<Document, Vec<Diagnostic>> {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(vec![Diagnostic {
                pos: Pos { line: 1, col: 1 },
                message: "the policy is empty; it needs at least `version: 1`".into(),
            }]);
        }
        Err(e) => {
            return Err(vec![Diagnostic {
                pos: e.pos,
                message: e.message,
            }]);
        }
    };
    let mut l = Loader { errors: Vec::new() };
    let doc = l.document(&root);
    match doc {
        Some(doc) if l.errors.is_empty() => Ok(doc),
        _ => {
            l.errors.sort_by_key(|d| d.pos);
            l.errors.dedup();
            Err(l.errors)
        }
    }
}

pub(crate) struct Loader {
    pub(crate) errors: Vec<Diagnostic>,
}

type Entries<'n> = [(Node<'n>, Node<'n>)];

impl Loader {
    pub(crate) fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            pos,
            message: message.into(),
        });
    }

    /// A mapping, or an error naming what was found instead. A plain null
    /// counts as an empty mapping so that `rules:` with nothing under it is
    /// an empty section, not a type error.
    pub(crate) fn map<'a, 'n>(&mut self, n: &'a Node<'n>, what: &str) -> Option<&'a Entries<'n>> {
        match &n.value {
            Value::Map(e) => Some(e),
            _ if n.is_null() => Some(&[]),
            _ => {
                self.err(
                    n.pos,
                    format!("`{what}` must be a mapping, found {}", n.kind()),
                );
                None
            }
        }
    }

    /// Reports keys outside `allowed` and returns a lookup for the rest.
    pub(crate) fn fields<'a, 'n>(
        &mut self,
        entries: &'a Entries<'n>,
        what: &str,
        allowed: &[&str],
    ) -> Fields<'a, 'n> {
        for (k, _) in entries {
            let key = k.as_str().unwrap_or("");
            if !allowed.contains(&key) {
                self.err(
                    k.pos,
                    format!(
                        "unknown field `{key}` in {what}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Fields { entries }
    }

    pub(crate) fn scalar<'a>(&mut self, n: &'a Node<'_>, what: &str) -> Option<&'a str> {
        match n.as_str() {
            Some(s) if !n.is_null() => Some(s),
            _ => {
                self.err(
                    n.pos,
                    format!("`{what}` must be a single value, found {}", n.kind()),
                );
                None
            }
        }
    }

    /// A list of scalars; a lone scalar is read as a list of one. Empty lists
    /// are refused: absent means "everything", and an empty list reading as
    /// "nothing" would be a silent trap. Every item is checked before the
    /// list is returned, so iterating it yields only single values.
    pub(crate) fn list<'a, 'n>(&mut self, n: &'a Node<'n>, what: &str) -> Option<List<'a, 'n>> {
        match &n.value {
            Value::Seq(items) if items.is_empty() => {
                self.err(
                    n.pos,
                    format!("`{what}` is an empty list; remove the field to match everything"),
                );
                None
            }
            Value::Seq(items) => {
                if let Some(it) = items
                    .iter()
                    .find(|it| it.as_str().is_none() || it.is_null())
                {
                    self.err(
                        it.pos,
                        format!(
                            "items of `{what}` must be single values, found {}",
                            it.kind()
                        ),
                    );
                    return None;
                }
                Some(List { items })
            }
            Value::Scalar { .. } if !n.is_null() => Some(List {
                items: std::slice::from_ref(n),
            }),
            _ => {
                self.err(
                    n.pos,
                    format!("`{what}` must be a list, found {}", n.kind()),
                );
                None
            }
        }
    }

    pub(crate) fn name_list(&mut self, n: &Node<'_>, what: &str) -> Option<Vec<String>> {
        let items = self.list(n, what)?;
        let mut out = Vec::with_capacity(items.len());
        for (s, pos) in items {
            if valid_name(s) {
                out.push(s.to_string());
            } else {
                self.err(
                    pos,
                    format!(
                        "invalid name `{s}` in `{what}`: use letters, digits, `.`, `_` and `-`"
                    ),
                );
            }
        }
        Some(out)
    }

    fn document(&mut self, root: &Node<'_>) -> Option<Document> {
        let entries = match &root.value {
            Value::Map(e) => e,
            _ => {
                self.err(
                    root.pos,
                    format!("a policy must be a mapping, found {}", root.kind()),
                );
                return None;
            }
        };
        let f = self.fields(
            entries,
            "the policy",
            &[
                "version",
                "defaults",
                "tls",
                "paths",
                "dns",
                "loops",
                "machines",
                "services",
                "detectors",
                "rules",
            ],
        );
        match f.get("version") {
            None => self.err(
                root.pos,
                "missing field `version`: a v1 policy starts with `version: 1`",
            ),
            Some(v) => {
                if v.as_str() != Some("1") {
                    self.err(v.pos, "unsupported `version`: this veto reads version 1");
                }
            }
        }
        let defaults = self.defaults(f.get("defaults"));
        let intercept = self.tls(f.get("tls"));
        let paths = self.paths(f.get("paths"));
        let dns = self.dns(f.get("dns"));
        let loops = self.loops(f.get("loops"));
        let machines = f
            .get("machines")
            .map(|n| self.machines(n))
            .unwrap_or_default();
        let services = f
            .get("services")
            .map(|n| self.services(n))
            .unwrap_or_default();
        let detectors = f
            .get("detectors")
            .map(|n| self.detectors(n))
            .unwrap_or_default();
        let mut doc = Document {
            defaults: defaults?,
            intercept: intercept?,
            paths: paths?,
            dns: dns?,
            loops: loops?,
            machines,
            services,
            detectors,
            rules: Vec::new(),
        };
        if let Some(n) = f.get("rules") {
            doc.rules = crate::load_rule::rules(self, n, &doc);
        }
        Some(doc)
    }

    fn defaults(&mut self, n: Option<&Node<'_>>) -> Option<Defaults> {
        let mut d = Defaults {
            decision: Effect::Deny,
            mode: Mode::Enforce,
            private_networks: Guard::Deny,
        };
        let Some(n) = n else { return Some(d) };
        let entries = self.map(n, "defaults")?;
        let f = self.fields(
            entries,
            "`defaults`",
            &["decision", "mode", "private_networks"],
        );
        // Read every field even after a bad one, so all problems are told.
        let before = self.errors.len();
        if let Some(v) = f.get("decision") {
            let options = [("allow", Effect::Allow), ("deny", Effect::Deny)];
            d.decision = self.one_of(v, "decision", &options).unwrap_or(d.decision);
        }
        if let Some(v) = f.get("mode") {
            d.mode = self.mode(v).unwrap_or(d.mode);
        }
        if let Some(v) = f.get("private_networks") {
            let options = [
                ("deny", Guard::Deny),
                ("report", Guard::Report),
                ("allow", Guard::Allow),
            ];
            d.private_networks = self
                .one_of(v, "private_networks", &options)
                .unwrap_or(d.private_networks);
        }
        (self.errors.len() == before).then_some(d)
    }

    fn tls(&mut self, n: Option<&Node<'_>>) -> Option<Intercept> {
        let Some(n) = n else {
            return Some(Intercept::Auto);
        };
        let entries = self.map(n, "tls")?;
        let f = self.fields(entries, "`tls`", &["intercept"]);
        match f.get("intercept") {
            Some(v) => self.one_of(
                v,
                "intercept",
                &[("auto", Intercept::Auto), ("never", Intercept::Never)],
            ),
            None => Some(Intercept::Auto),
        }
    }

    fn paths(&mut self, n: Option<&Node<'_>>) -> Option<PathRules> {
        let mut r = PathRules::default();
        let Some(n) = n else { return Some(r) };
        let entries = self.map(n, "paths")?;
        let f = self.fields(entries, "`paths`", &["normalize", "escaped_slashes"]);
        let before = self.errors.len();
        if let Some(v) = f.get("normalize") {
            let options = [
                ("forward", Normalize::Forward),
                ("refuse", Normalize::Refuse),
            ];
            r.normalize = self.one_of(v, "normalize", &options).unwrap_or(r.normalize);
        }
        if let Some(v) = f.get("escaped_slashes") {
            let options = [
                ("refuse", EscapedSlashes::Refuse),
                ("keep", EscapedSlashes::Keep),
                ("decode", EscapedSlashes::Decode),
            ];
            r.escaped_slashes = self
                .one_of(v, "escaped_slashes", &options)
                .unwrap_or(r.escaped_slashes);
        }
        (self.errors.len() == before).then_some(r)
    }

    fn loops(&mut self, n: Option<&Node<'_>>) -> Option<LoopRules> {
        let mut r = LoopRules::default();
        let Some(n) = n else { return Some(r) };
        let entries = self.map(n, "loops")?;
        let f = self.fields(entries, "`loops`", &["max_passes", "max_depth"]);
        let before = self.errors.len();
        for (key, slot, min) in [
            ("max_passes", &mut r.max_passes, 0),
            ("max_depth", &mut r.max_depth, 1),
        ] {
            let Some(v) = f.get(key) else { continue };
            let Some(s) = self.scalar(v, key) else {
                continue;
            };
            match s.parse::<u32>() {
                Ok(x) if (min..=64).contains(&x) => *slot = x,
                _ => self.err(
                    v.pos,
                    format!("invalid `{key}` `{s}`: a whole number from {min} to 64"),
                ),
            }
        }
        (self.errors.len() == before).then_some(r)
    }

    fn dns(&mut self, n: Option<&Node<'_>>) -> Option<DnsRules> {
        let mut r = DnsRules::default();
        let Some(n) = n else { return Some(r) };
        let entries = self.map(n, "dns")?;
        let f = self.fields(entries, "`dns`", &["tunnel_guard", "refuse"]);
        let before = self.errors.len();
        if let Some(v) = f.get("tunnel_guard") {
            let options = [
                ("off", TunnelGuard::Off),
                ("report", TunnelGuard::Report),
                ("enforce", TunnelGuard::Enforce),
            ];
            r.tunnel_guard = self
                .one_of(v, "tunnel_guard", &options)
                .unwrap_or(r.tunnel_guard);
        }
        if let Some(v) = f.get("refuse") {
            let options = [
                ("nxdomain", DnsRefusal::NxDomain),
                ("refused", DnsRefusal::Refused),
            ];
            r.refuse = self.one_of(v, "refuse", &options).unwrap_or(r.refuse);
        }
        (self.errors.len() == before).then_some(r)
    }

    pub(crate) fn mode(&mut self, v: &Node<'_>) -> Option<Mode> {
        self.one_of(
            v,
            "mode",
            &[("enforce", Mode::Enforce), ("report", Mode::Report)],
        )
    }

    pub(crate) fn one_of<T: Copy>(
        &mut self,
        v: &Node<'_>,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let s = self.scalar(v, what)?;
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        };
        self.err(
            v.pos,
            format!("invalid `{what}` `{s}`: expected {expected}"),
        );
        None
    }

    fn machines(&mut self, n: &Node<'_>) -> Vec<Machine> {
        let Some(entries) = self.map(n, "machines") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = k.as_str().unwrap_or_default();
            if !valid_name(name) {
                self.err(
                    k.pos,
                    format!("invalid machine name `{name}`: use letters, digits, `.`, `_` and `-`"),
                );
                continue;
            }
            let Some(e) = self.map(v, name) else { continue };
            let f = self.fields(e, &format!("machine `{name}`"), &["roles", "env", "mode"]);
            let roles = f
                .get("roles")
                .and_then(|r| self.name_list(r, "roles"))
                .unwrap_or_default();
            let env = f
                .get("env")
                .and_then(|e| self.scalar(e, "env").map(str::to_string));
            let mode = f.get("mode").and_then(|m| self.mode(m));
            if name == "anonymous" && (!roles.is_empty() || env.is_some()) {
                self.err(k.pos, "`anonymous` (clients without credentials) cannot have roles or an env; only a `mode`");
            }
            out.push(Machine {
                name: name.to_string(),
                roles,
                env,
                mode,
                pos: k.pos,
            });
        }
        out
    }

    fn services(&mut self, n: &Node<'_>) -> Vec<Service> {
        let Some(entries) = self.map(n, "services") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = k.as_str().unwrap_or_default();
            if !valid_name(name) {
                self.err(
                    k.pos,
                    format!("invalid service name `{name}`: use letters, digits, `.`, `_` and `-`"),
                );
                continue;
            }
            let Some(e) = self.map(v, name) else { continue };
            let f = self.fields(
                e,
                &format!("service `{name}`"),
                &["hosts", "cidrs", "ports", "tags"],
            );
            let hosts = f.get("hosts").map(|h| self.hosts(h)).unwrap_or_default();
            let cidrs = f.get("cidrs").map(|c| self.cidrs(c)).unwrap_or_default();
            let ports = f.get("ports").and_then(|p| self.ports(p));
            let tags = f
                .get("tags")
                .and_then(|t| self.name_list(t, "tags"))
                .unwrap_or_default();
            if f.get("hosts").is_none() && f.get("cidrs").is_none() {
                self.err(k.pos, format!("service `{name}` needs `hosts` or `cidrs`"));
            }
            out.push(Service {
                name: name.to_string(),
                hosts,
                cidrs,
                ports,
                tags,
                pos: k.pos,
            });
        }
        out
    }

    fn detectors(&mut self, n: &Node<'_>) -> Vec<Detector> {
        let Some(entries) = self.map(n, "detectors") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = k.as_str().unwrap_or_default();
            if !valid_name(name) {
                self.err(
                    k.pos,
                    format!(
                        "invalid detector name `{name}`: use letters, digits, `.`, `_` and `-`"
                    ),
                );
                continue;
            }
            if BUILTIN_CLASSES.contains(&name) {
                self.err(
                    k.pos,
                    format!("detector `{name}` has the name of a built-in data class"),
                );
                continue;
            }
            if BUILTIN_CLASSES.len() + out.len() >= MAX_CLASSES {
                self.err(
                    k.pos,
                    format!(
                        "too many detectors: at most {}",
                        MAX_CLASSES - BUILTIN_CLASSES.len()
                    ),
                );
                break;
            }
            let Some(e) = self.map(v, name) else { continue };
            let f = self.fields(e, &format!("detector `{name}`"), &["regex", "keywords"]);
            let kind = match (f.get("regex"), f.get("keywords")) {
                (Some(r), None) => {
                    let Some(re) = self.scalar(r, "regex") else {
                        continue;
                    };
                    if let Err(e) = regex_syntax::Parser::new().parse(re) {
                        // regex-syntax renders a caret diagram; the last
                        // line is the message itself.
                        let text = e.to_string();
                        let last = text.lines().last().unwrap_or("invalid").trim();
                        let first = last.strip_prefix("error: ").unwrap_or(last);
                        self.err(
                            r.pos,
                            format!("invalid regex in detector `{name}`: {first}"),
                        );
                        continue;
                    }
                    DetectorKind::Regex(re.to_string())
                }
                (None, Some(kw)) => {
                    let Some(words) = self.list(kw, "keywords") else {
                        continue;
                    };
                    let mut ok = Vec::new();
                    for (w, pos) in words {
                        if w.trim().is_empty() {
                            self.err(pos, "an empty keyword would match everywhere");
                        } else {
                            ok.push(w.to_string());
                        }
                    }
                    DetectorKind::Keywords(ok)
                }
                _ => {
                    self.err(
                        k.pos,
                        format!("detector `{name}` needs exactly one of `regex` or `keywords`"),
                    );
                    continue;
                }
            };
            out.push(Detector {
                name: name.to_string(),
                kind,
                pos: k.pos,
            });
        }
        out
    }

    pub(crate) fn hosts(&mut self, n: &Node<'_>) -> Vec<HostPattern> {
        let Some(items) = self.list(n, "hosts") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, pos) in items {
            match HostPattern::parse(s) {
                Ok(p) => out.push(p),
                Err(m) => self.err(pos, m),
            }
        }
        out
    }

    pub(crate) fn cidrs(&mut self, n: &Node<'_>) -> Vec<IpNet> {
        let Some(items) = self.list(n, "cidrs") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, pos) in items {
            match parse_cidr(s) {
                Ok(net) => out.push(net),
                Err(m) => self.err(pos, m),
            }
        }
        out
    }

    pub(crate) fn ports(&mut self, n: &Node<'_>) -> Option<Vec<u16>> {
        let items = self.list(n, "ports")?;
        let mut out = Vec::new();
        for (s, pos) in items {
            match s.parse::<u16>() {
                Ok(p) if p > 0 => out.push(p),
                _ => self.err(
                    pos,
                    format!("invalid port `{s}`: ports are whole numbers from 1 to 65535"),
                ),
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// A checked list of single values (see [`Loader::list`]): its items with
/// their positions, without copying them out of the tree.
#[derive(Clone, Copy)]
pub(crate) struct List<'a, 'n> {
    items: &'a [Node<'n>],
}

impl List<'_, '_> {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

impl<'a, 'n> IntoIterator for List<'a, 'n> {
    type Item = (&'a str, Pos);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, Node<'n>>, fn(&'a Node<'n>) -> (&'a str, Pos)>;
    fn into_iter(self) -> Self::IntoIter {
        self.items
            .iter()
            .map(|n| (n.as_str().unwrap_or_default(), n.pos))
    }
}

/// Read access to a mapping's fields by name.
pub(crate) struct Fields<'a, 'n> {
    entries: &'a Entries<'n>,
}

impl<'a, 'n> Fields<'a, 'n> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Node<'n>> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// Machine, role, env, tag, service and detector names.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A CIDR, or a bare address as a single-address network.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("invalid cidr `{s}`: expected an address and prefix length like 10.0.0.0/8")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "invalid cidr `{s}`: it has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `90s`, `15m`, `12h`, `30d` as seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid duration `{s}`: use a whole number and a unit s, m, h or d (`30d`)");
    let unit = s.chars().last().ok_or_else(bad)?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let num = &s[..s.len() - 1];
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!(
            "invalid duration `{s}`: it must be longer than zero"
        ));
    }
    n.checked_mul(mult).ok_or_else(bad)
}
