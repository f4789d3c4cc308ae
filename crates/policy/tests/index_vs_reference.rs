//! The main guard of the compiled index: on random policies and random
//! requests it decides exactly like the naive reference evaluator.
//!
//! Policies are generated as YAML text from small universes of names,
//! hosts and networks that overlap on purpose (suffixes of each other,
//! nested CIDRs, IPv4-mapped forms), so that rules collide often.

use proptest::prelude::*;
use std::collections::HashMap;
use std::net::IpAddr;
use veto_policy::{
    DataSet, Grants, Policy, Protocol, Request, Timestamp, normalize_host, reference,
};

const HOSTS: &[&str] = &[
    "a.com",
    "b.a.com",
    "c.b.a.com",
    "x.org",
    "y.x.org",
    "z.net",
    "bücher.example",
];
const PATTERNS: &[&str] = &[
    "a.com",
    "b.a.com",
    "*.a.com",
    "*.b.a.com",
    "x.org",
    "*.x.org",
    "z.net",
    "*",
    "*.bücher.example",
    "xn--bcher-kva.example",
];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "192.168.0.0/16",
    "8.8.8.0/24",
    "8.8.0.0/16",
    "2001:db8::/32",
    "0.0.0.0/0",
    "::/0",
    "1.1.1.1",
];
const ADDRS: &[&str] = &[
    "10.1.2.3",
    "10.2.0.1",
    "192.168.1.1",
    "8.8.8.8",
    "8.8.4.4",
    "1.1.1.1",
    "2001:db8::1",
    "::ffff:10.1.2.3",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
];
const PORTS: &[u16] = &[80, 443, 8443];
const METHODS: &[&str] = &["GET", "POST", "DELETE"];
/// What requests are made with: the methods, and the probe of a lookup.
const REQUEST_METHODS: &[&str] = &["GET", "POST", "DELETE", veto_policy::ANY_REQUEST];
const PATHS: &[&str] = &["/", "/admin", "/admin/x", "/v1/users/1", "/v2/x"];
const GLOBS: &[&str] = &["/admin/**", "/v*/users/*", "/**", "/", "/v1/**"];
const CLASSES: &[&str] = &["credit_card", "email", "us_ssn", "custom-a"];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(list)
}

fn subset<T: Clone + std::fmt::Debug>(
    list: &'static [T],
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(list, 1..=max.min(list.len()))
}

fn yaml_list<T: std::fmt::Display>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn opt<S: Strategy>(s: S) -> impl Strategy<Value = Option<S::Value>> {
    proptest::option::weighted(0.4, s)
}

fn machine() -> impl Strategy<Value = String> {
    (
        subset(&["r0", "r1", "r2"], 2),
        opt(pick(&["e0", "e1"])),
        opt(pick(&["enforce", "report"])),
    )
        .prop_map(|(roles, env, mode)| {
            let mut s = format!("{{ roles: {}", yaml_list(&roles));
            if let Some(e) = env {
                s.push_str(&format!(", env: {e}"));
            }
            if let Some(m) = mode {
                s.push_str(&format!(", mode: {m}"));
            }
            s + " }"
        })
}

fn service() -> impl Strategy<Value = String> {
    (
        opt(subset(PATTERNS, 3)),
        opt(subset(CIDRS, 2)),
        opt(subset(PORTS, 2)),
        opt(subset(&["t0", "t1"], 2)),
    )
        .prop_map(|(hosts, cidrs, ports, tags)| {
            let mut parts = Vec::new();
            let no_dest = hosts.is_none() && cidrs.is_none();
            if let Some(h) = hosts {
                parts.push(format!("hosts: {}", yaml_list(&h)));
            }
            if let Some(c) = cidrs {
                parts.push(format!("cidrs: {}", yaml_list(&c)));
            }
            if no_dest {
                parts.push("hosts: [\"z.net\"]".into());
            }
            if let Some(p) = ports {
                parts.push(format!("ports: {}", yaml_list(&p)));
            }
            // Every service carries t0 so that a rule naming a tag always
            // names a known one.
            let mut t = tags.unwrap_or_default();
            if !t.contains(&"t0") {
                t.push("t0");
            }
            parts.push(format!("tags: {}", yaml_list(&t)));
            format!("{{ {} }}", parts.join(", "))
        })
}

type Names = Option<Vec<&'static str>>;
type Ports = Option<Vec<u16>>;

#[derive(Debug, Clone)]
struct RuleSpec {
    effect: &'static str,
    /// machines, roles, env
    from: Option<(Names, Names, Names)>,
    /// services, hosts, cidrs, tags, ports
    to: Option<(Names, Names, Names, Names, Ports)>,
    protocols: Names,
    methods: Names,
    paths: Names,
    data: Names,
    mode: Option<&'static str>,
    expire: Option<&'static str>,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    let from = opt((
        opt(subset(&["m0", "m1", "m2", "m9", "anonymous"], 2)),
        opt(subset(&["r0", "r1", "r2"], 2)),
        opt(subset(&["e0", "e1"], 1)),
    ));
    let to = opt((
        opt(subset(&["s0", "s1", "s2"], 2)),
        opt(subset(PATTERNS, 2)),
        opt(subset(CIDRS, 2)),
        opt(subset(&["t0", "t1"], 1)),
        opt(subset(PORTS, 2)),
    ));
    (
        pick(&["allow", "allow", "deny", "redact"]),
        from,
        to,
        opt(subset(&["http", "https", "tls", "tcp", "dns"], 2)),
        opt(subset(METHODS, 2)),
        opt(subset(GLOBS, 2)),
        opt(subset(CLASSES, 2)),
        opt(pick(&["enforce", "report"])),
        opt(pick(&["1h", "30d"])),
    )
        .prop_map(
            |(effect, from, to, protocols, methods, paths, data, mode, expire)| RuleSpec {
                effect,
                from,
                to,
                protocols,
                methods,
                paths,
                data,
                mode,
                expire,
            },
        )
}

fn render(i: usize, r: &RuleSpec) -> String {
    let mut s = format!(
        "  - id: r{i}\n    effect: {}\n    reason: because {i}\n",
        r.effect
    );
    if let Some((m, ro, e)) = &r.from {
        let mut parts = Vec::new();
        if let Some(m) = m {
            parts.push(format!("machines: {}", yaml_list(m)));
        }
        if let Some(ro) = ro {
            parts.push(format!("roles: {}", yaml_list(ro)));
        }
        if let Some(e) = e {
            parts.push(format!("env: {}", yaml_list(e)));
        }
        if !parts.is_empty() {
            s.push_str(&format!("    from: {{ {} }}\n", parts.join(", ")));
        }
    }
    if let Some((sv, h, c, t, p)) = &r.to {
        let mut parts = Vec::new();
        for (k, v) in [("services", sv), ("hosts", h), ("cidrs", c), ("tags", t)] {
            if let Some(v) = v {
                parts.push(format!("{k}: {}", yaml_list(v)));
            }
        }
        if let Some(p) = p {
            parts.push(format!("ports: {}", yaml_list(p)));
        }
        if !parts.is_empty() {
            s.push_str(&format!("    to: {{ {} }}\n", parts.join(", ")));
        }
    }
    for (k, v) in [
        ("protocols", &r.protocols),
        ("methods", &r.methods),
        ("paths", &r.paths),
    ] {
        if let Some(v) = v {
            s.push_str(&format!("    {k}: {}\n", yaml_list(v)));
        }
    }
    let data = match (&r.data, r.effect) {
        (Some(d), _) => Some(d.clone()),
        (None, "redact") => Some(vec!["credit_card"]),
        _ => None,
    };
    if let Some(d) = data {
        s.push_str(&format!("    data: {}\n", yaml_list(&d)));
    }
    if let Some(m) = r.mode {
        s.push_str(&format!("    mode: {m}\n"));
    }
    if let (Some(e), "allow") = (r.expire, r.effect) {
        s.push_str(&format!("    expire_if_unused: {e}\n"));
    }
    s
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        pick(&["allow", "deny"]),
        pick(&["enforce", "report"]),
        pick(&["deny", "report", "allow"]),
        proptest::collection::vec(machine(), 3),
        proptest::collection::vec(service(), 3),
        proptest::collection::vec(rule(), 0..12),
    )
        .prop_map(|(decision, mode, guard, machines, services, rules)| {
            let mut s = format!(
                "version: 1\ndefaults: {{ decision: {decision}, mode: {mode}, private_networks: {guard} }}\nmachines:\n"
            );
            for (i, m) in machines.iter().enumerate() {
                s.push_str(&format!("  m{i}: {m}\n"));
            }
            s.push_str("services:\n");
            for (i, sv) in services.iter().enumerate() {
                // s0 always has t1 too, so both tags a rule may name exist.
                let sv = if i == 0 { sv.replace("tags: [", "tags: [\"t1\", ") } else { sv.clone() };
                s.push_str(&format!("  s{i}: {sv}\n"));
            }
            s.push_str("detectors:\n  custom-a: { regex: 'A+' }\nrules:\n");
            for (i, r) in rules.iter().enumerate() {
                s.push_str(&render(i, r));
            }
            s
        })
}

#[derive(Debug, Clone)]
struct ReqSpec {
    machine: &'static str,
    protocol: Protocol,
    host: Result<&'static str, &'static str>,
    port: u16,
    ips: Vec<&'static str>,
    method: &'static str,
    path: &'static str,
    data: u8,
    last_used: Vec<(usize, i64)>,
}

fn request() -> impl Strategy<Value = ReqSpec> {
    (
        pick(&["m0", "m1", "m2", "m9", "anonymous"]),
        proptest::sample::select(vec![
            Protocol::Http,
            Protocol::Https,
            Protocol::Tls,
            Protocol::Tcp,
            Protocol::Dns,
        ]),
        prop_oneof![pick(HOSTS).prop_map(Ok), pick(ADDRS).prop_map(Err)],
        proptest::sample::select(PORTS),
        proptest::sample::subsequence(ADDRS, 0..3),
        pick(REQUEST_METHODS),
        pick(PATHS),
        0u8..16,
        proptest::collection::vec((0usize..12, 0i64..200_000), 0..4),
    )
        .prop_map(
            |(machine, protocol, host, port, ips, method, path, data, last_used)| ReqSpec {
                machine,
                protocol,
                host,
                port,
                ips,
                method,
                path,
                data,
                last_used,
            },
        )
}

struct MapGrants(HashMap<String, Timestamp>);

impl Grants for MapGrants {
    fn last_used(&self, rule: &str, _: &str) -> Option<Timestamp> {
        self.0.get(rule).copied()
    }
    fn first_loaded(&self, _: &str) -> Option<Timestamp> {
        Some(0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn index_decides_like_reference(text in policy_text(), reqs in proptest::collection::vec(request(), 1..24)) {
        let policy = match Policy::compile(&text) {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("generated policy invalid: {e:?}\n{text}"))),
        };
        for r in reqs {
            let host = match r.host {
                Ok(name) => normalize_host(name).unwrap(),
                Err(ip) => veto_policy::Host::Ip(ip.parse().unwrap()),
            };
            let ips: Vec<IpAddr> = r.ips.iter().map(|s| s.parse().unwrap()).collect();
            let mut data = DataSet::EMPTY;
            for (bit, name) in CLASSES.iter().enumerate() {
                if r.data & (1 << bit) != 0 {
                    data.insert(policy.class_bit(name).unwrap());
                }
            }
            let req = Request {
                machine: r.machine,
                protocol: r.protocol,
                host: host.as_ref(),
                port: r.port,
                ips: &ips,
                method: r.method,
                path: r.path,
                data,
                now: 100_000,
            };
            let grants = MapGrants(r.last_used.iter().map(|(i, t)| (format!("r{i}"), *t)).collect());
            let fast = policy.decide(&req, &grants);
            let (slow, _) = reference::decide(policy.document(), &req, &grants);
            prop_assert_eq!(fast, slow, "policy:\n{}\nrequest: {:?}", text, r);
        }
    }
}
