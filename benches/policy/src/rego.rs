//! The shape as a data-driven Rego policy for regorus.
//!
//! The rules live in the data document, indexed the way veto indexes them:
//! by exact host, by `*.` suffix and by network. The policy looks a request
//! up in those indexes and checks only the candidates: no scan of all rules.
//! Two helpers arrive precomputed in the input, because Rego would otherwise
//! compute them with string and `net` builtins on every decision:
//! `suffixes` (the host's parent suffixes at label boundaries, what veto's
//! index probes) and `nets` (the request address's network at each prefix
//! length the policy uses, /24 and /16).

use crate::{Dest, ENVS, Effect, From, Req, Shape, role_name};
use serde_json::{Map, Value as Json, json};

/// Allowed when an allow rule matches and no deny rule does; deny by default.
pub const POLICY: &str = r#"package veto

import rego.v1

default allow := false

principal := object.get(data.machines, input.machine, {})

# Candidate rule indices: looked up, never scanned.
candidates contains i if some i in object.get(data.exact, input.host, [])

candidates contains i if {
	some s in input.suffixes
	some i in object.get(data.suffix, s, [])
}

candidates contains i if {
	some n in input.nets
	some i in object.get(data.cidr, n, [])
}

from_ok(r) if not r.from

from_ok(r) if r.from.machine == input.machine

from_ok(r) if r.from.role in object.get(principal, "roles", [])

from_ok(r) if r.from.env == principal.env

ports_ok(r) if not r.ports

ports_ok(r) if input.port in r.ports

methods_ok(r) if not r.methods

methods_ok(r) if input.method in r.methods

data_ok(r) if not r.data

data_ok(r) if {
	some c in input.data
	c in r.data
}

# Every condition of rule `r` other than its destination, which the lookup
# that found it has already matched.
matches(r) if {
	from_ok(r)
	ports_ok(r)
	methods_ok(r)
	data_ok(r)
}

deny if {
	some i in candidates
	r := data.rules[i]
	r.effect == "deny"
	matches(r)
}

allow if {
	not deny
	some i in candidates
	r := data.rules[i]
	r.effect == "allow"
	matches(r)
}
"#;

/// The query that yields the decision.
pub const QUERY: &str = "data.veto.allow";

/// The data document: machines, rules, and the three lookup tables.
pub fn data(shape: &Shape) -> Json {
    let mut machines = Map::new();
    for m in &shape.machines {
        machines.insert(
            m.name.clone(),
            json!({
                "roles": m.roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>(),
                "env": ENVS[m.env],
            }),
        );
    }
    let mut rules = Vec::with_capacity(shape.rules.len());
    let mut exact: Map<String, Json> = Map::new();
    let mut suffix: Map<String, Json> = Map::new();
    let mut cidr: Map<String, Json> = Map::new();
    let push = |table: &mut Map<String, Json>, key: String, i: usize| {
        if let Json::Array(v) = table.entry(key).or_insert_with(|| Json::Array(Vec::new())) {
            v.push(json!(i));
        }
    };
    for (i, r) in shape.rules.iter().enumerate() {
        let mut o = Map::new();
        o.insert(
            "effect".into(),
            json!(match r.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            }),
        );
        match &r.from {
            From::Machine(m) => {
                o.insert("from".into(), json!({ "machine": shape.machines[*m].name }));
            }
            From::Role(role) => {
                o.insert("from".into(), json!({ "role": role_name(*role) }));
            }
            From::Env(e) => {
                o.insert("from".into(), json!({ "env": ENVS[*e] }));
            }
            From::Anyone => {}
        }
        if let Some(p) = &r.ports {
            o.insert("ports".into(), json!(p));
        }
        if let Some(m) = &r.methods {
            o.insert("methods".into(), json!(m));
        }
        if let Some(d) = &r.data {
            o.insert("data".into(), json!(d));
        }
        rules.push(Json::Object(o));
        match &r.dest {
            Dest::Host(h) => push(&mut exact, h.clone(), i),
            Dest::Suffix(s) => push(&mut suffix, s.clone(), i),
            Dest::Cidr(net, len) => push(&mut cidr, format!("{net}/{len}"), i),
        }
    }
    json!({
        "machines": machines,
        "rules": rules,
        "exact": exact,
        "suffix": suffix,
        "cidr": cidr,
    })
}

/// The input document for one request, helpers included.
pub fn input(r: &Req) -> Json {
    json!({
        "machine": r.machine,
        "host": r.host,
        "port": r.port,
        "method": r.method,
        "data": r.data,
        "suffixes": r.suffixes(),
        "nets": r.nets(),
    })
}

/// A regorus engine loaded with the policy and its data.
pub struct Rego {
    engine: regorus::Engine,
}

impl Rego {
    pub fn new(shape: &Shape) -> Result<Rego, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("veto.rego".to_string(), POLICY.to_string())
            .map_err(|e| e.to_string())?;
        engine
            .add_data_json(&data(shape).to_string())
            .map_err(|e| e.to_string())?;
        Ok(Rego { engine })
    }

    /// The input as a regorus value, parsed from JSON as an embedder would
    /// (parsed values are stored compactly). Not timed in the benchmark.
    pub fn input(r: &Req) -> Result<regorus::Value, String> {
        regorus::Value::from_json_str(&input(r).to_string()).map_err(|e| e.to_string())
    }

    /// One decision: the timed part. Setting the input is part of it, as it
    /// is for every request an embedder decides; the clone is a reference
    /// count.
    pub fn allows(&mut self, input: &regorus::Value) -> Result<bool, String> {
        self.engine.set_input(input.clone());
        let v = self
            .engine
            .eval_rule(QUERY.to_string())
            .map_err(|e| e.to_string())?;
        Ok(v == regorus::Value::from(true))
    }
}
