//! Loading the `rules:` section. Rules refer to machines, services, tags and
//! data classes, so they are read after those sections.

use crate::load::{Loader, parse_duration};
use crate::model::*;
use crate::path::PathGlob;
use crate::yaml::{Node, Value};

const RULE_FIELDS: &[&str] = &[
    "id",
    "effect",
    "reason",
    "from",
    "to",
    "protocols",
    "methods",
    "paths",
    "data",
    "mode",
    "expire_if_unused",
];

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Service names and tags, for lookups that do not scan every service.
struct Names<'a> {
    services: Map<&'a str, usize>,
    tags: Set<&'a str>,
}

pub(crate) fn rules(l: &mut Loader, n: &Node<'_>, doc: &Document) -> Vec<Rule> {
    let names = Names {
        services: doc
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect(),
        tags: doc
            .services
            .iter()
            .flat_map(|s| s.tags.iter().map(String::as_str))
            .collect(),
    };
    let items: &[Node] = match &n.value {
        Value::Seq(items) => items,
        _ if n.is_null() => &[],
        _ => {
            l.err(n.pos, format!("`rules` must be a list, found {}", n.kind()));
            return Vec::new();
        }
    };
    let mut out: Vec<Rule> = Vec::with_capacity(items.len());
    // Ids borrowed from the tree, which outlives this loop.
    let mut seen: Map<&str, u32> = Map::default();
    seen.reserve(items.len());
    for item in items {
        if let Some((rule, id)) = rule(l, item, doc, &names) {
            if let Some(&line) = seen.get(id) {
                l.err(
                    rule.pos,
                    format!("duplicate rule id `{}` (first at line {line})", rule.id),
                );
                continue;
            }
            seen.insert(id, rule.pos.line);
            out.push(rule);
        }
    }
    out
}

pub(crate) fn valid_rule_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// A rule, and its id as the tree holds it.
fn rule<'a>(
    l: &mut Loader,
    n: &'a Node<'_>,
    doc: &Document,
    names: &Names<'_>,
) -> Option<(Rule, &'a str)> {
    let entries = l.map(n, "rule")?;
    let f = l.fields(entries, "a rule", RULE_FIELDS);
    let errors_before = l.errors.len();

    let id_node = f.get("id");
    let id = match id_node {
        None => {
            l.err(n.pos, "a rule needs an `id`");
            None
        }
        Some(v) => l.scalar(v, "id").and_then(|id| {
            if !valid_rule_id(id) {
                l.err(v.pos, format!("invalid rule id `{id}`: use lower case letters, digits, `.`, `_` and `-`, starting with a letter or digit"));
                None
            } else if matches!(id, "default" | "private-network" | "sni-mismatch") || id.starts_with("optout") {
                l.err(v.pos, format!("rule id `{id}` is reserved"));
                None
            } else {
                Some(id)
            }
        }),
    };
    let pos = id_node.map_or(n.pos, |v| v.pos);
    let effect = match f.get("effect") {
        None => {
            l.err(pos, "a rule needs an `effect`: allow, deny or redact");
            None
        }
        Some(v) => l.one_of(
            v,
            "effect",
            &[
                ("allow", Effect::Allow),
                ("deny", Effect::Deny),
                ("redact", Effect::Redact),
            ],
        ),
    };
    let reason = f
        .get("reason")
        .and_then(|v| l.scalar(v, "reason"))
        .map(|s| s.trim().to_string());
    if let Some(effect @ (Effect::Deny | Effect::Redact)) = effect
        && reason.as_deref().is_none_or(str::is_empty)
    {
        l.err(
            pos,
            format!("missing `reason`: a {} rule must say why", effect.as_str()),
        );
    }
    let from = f.get("from").and_then(|v| from(l, v));
    let to = f.get("to").and_then(|v| to(l, v, names));
    let protocols = f.get("protocols").and_then(|v| {
        let mut set = Protocols::default();
        for (s, p) in l.list(v, "protocols")? {
            match Protocol::parse(s) {
                Some(pr) => set.insert(pr),
                None => l.err(
                    p,
                    format!("unknown protocol `{s}`: expected http, https, tls, tcp or dns"),
                ),
            }
        }
        Some(set)
    });
    let methods = f.get("methods").and_then(|v| {
        let mut out = Vec::new();
        for (s, p) in l.list(v, "methods")? {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
            {
                l.err(p, format!("invalid HTTP method `{s}`"));
            } else {
                out.push(s.to_ascii_uppercase());
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    });
    let paths = f.get("paths").and_then(|v| {
        let mut out = Vec::new();
        for (s, p) in l.list(v, "paths")? {
            match PathGlob::parse(s) {
                Ok(g) => out.push(g),
                Err(m) => l.err(p, m),
            }
        }
        Some(out)
    });
    let data = f.get("data").and_then(|v| {
        let mut set = DataSet::EMPTY;
        for (s, p) in l.list(v, "data")? {
            match doc.class_bit(s) {
                Some(bit) => set.insert(bit),
                None => l.err(
                    p,
                    format!("unknown data class `{s}`: not built in and not under `detectors`"),
                ),
            }
        }
        Some(set)
    });
    let mode = f.get("mode").and_then(|v| l.mode(v));
    let expire = f.get("expire_if_unused").and_then(|v| {
        let s = l.scalar(v, "expire_if_unused")?;
        match parse_duration(s) {
            Ok(d) => Some((d, v.pos)),
            Err(m) => {
                l.err(v.pos, m);
                None
            }
        }
    });
    if let (Some((_, p)), Some(e)) = (expire, effect)
        && e != Effect::Allow
    {
        l.err(p, "`expire_if_unused` applies only to allow rules");
    }
    if effect == Some(Effect::Redact) && f.get("data").is_none() {
        l.err(pos, "a redact rule needs `data`: the classes it replaces");
    }
    if l.errors.len() > errors_before {
        return None;
    }
    let id = id?;
    let rule = Rule {
        id: id.to_string(),
        effect: effect?,
        reason,
        from,
        to,
        protocols,
        methods,
        paths,
        data,
        mode,
        expire_if_unused: expire.map(|(d, _)| d),
        pos,
    };
    Some((rule, id))
}

fn from(l: &mut Loader, n: &Node<'_>) -> Option<From> {
    let entries = l.map(n, "from")?;
    let f = l.fields(entries, "`from`", &["machines", "roles", "env"]);
    let mut out = crate::model::From::default();
    if let Some(v) = f.get("machines") {
        out.machines = l.name_list(v, "machines")?;
    }
    if let Some(v) = f.get("roles") {
        out.roles = l.name_list(v, "roles")?;
    }
    if let Some(v) = f.get("env") {
        out.env = l.name_list(v, "env")?;
    }
    if entries.is_empty() {
        l.err(n.pos, "`from` is empty; remove it to match every machine");
        return None;
    }
    Some(out)
}

fn to(l: &mut Loader, n: &Node<'_>, names: &Names<'_>) -> Option<To> {
    let entries = l.map(n, "to")?;
    let f = l.fields(
        entries,
        "`to`",
        &["services", "hosts", "cidrs", "tags", "ports"],
    );
    let mut out = To::default();
    if let Some(v) = f.get("services") {
        for (s, p) in l.list(v, "services")? {
            match names.services.get(s).copied() {
                Some(i) if !out.services.contains(&i) => out.services.push(i),
                Some(_) => {}
                None => l.err(p, format!("unknown service `{s}`")),
            }
        }
    }
    if let Some(v) = f.get("hosts") {
        out.hosts = l.hosts(v);
    }
    if let Some(v) = f.get("cidrs") {
        out.cidrs = l.cidrs(v);
    }
    if let Some(v) = f.get("tags") {
        for (t, p) in l.list(v, "tags")? {
            if !names.tags.contains(t) {
                l.err(p, format!("unknown tag `{t}`: no service has it"));
            } else {
                out.tags.push(t.to_string());
            }
        }
    }
    if let Some(v) = f.get("ports") {
        out.ports = Some(l.ports(v)?);
    }
    if entries.is_empty() {
        l.err(n.pos, "`to` is empty; remove it to match every destination");
        return None;
    }
    Some(out)
}
