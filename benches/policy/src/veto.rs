//! The shape as a veto policy, and requests as veto sees them.

use crate::{Dest, ENVS, Effect, From, Req, Shape, list, quoted, role_name};
use std::fmt::Write as _;
use veto_policy::{DataSet, Host, Policy, Protocol, Request, normalize_host};

/// The policy as YAML, in the style people write: flow mappings per rule.
pub fn yaml(shape: &Shape) -> String {
    let mut s = String::with_capacity(64 + shape.machines.len() * 48 + shape.rules.len() * 110);
    s.push_str("version: 1\n\ndefaults:\n  decision: deny\n\nmachines:\n");
    for m in &shape.machines {
        let _ = writeln!(
            s,
            "  {}: {{ roles: {}, env: {} }}",
            m.name,
            list(&m.roles, |r| role_name(*r)),
            ENVS[m.env]
        );
    }
    s.push_str("\nrules:\n");
    for r in &shape.rules {
        let _ = writeln!(s, "  - id: {}", r.id);
        let effect = match r.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let _ = writeln!(s, "    effect: {effect}");
        match &r.from {
            From::Machine(m) => {
                let _ = writeln!(s, "    from: {{ machines: [{}] }}", shape.machines[*m].name);
            }
            From::Role(role) => {
                let _ = writeln!(s, "    from: {{ roles: [{}] }}", role_name(*role));
            }
            From::Env(e) => {
                let _ = writeln!(s, "    from: {{ env: [{}] }}", ENVS[*e]);
            }
            From::Anyone => {}
        }
        let dest = match &r.dest {
            Dest::Host(h) => format!("hosts: [{h}]"),
            Dest::Suffix(sfx) => format!("hosts: [{}]", quoted(&format!("*.{sfx}"))),
            Dest::Cidr(net, len) => format!("cidrs: [{net}/{len}]"),
        };
        match &r.ports {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "    to: {{ {dest}, ports: {} }}",
                    list(p, u16::to_string)
                );
            }
            None => {
                let _ = writeln!(s, "    to: {{ {dest} }}");
            }
        }
        if let Some(m) = &r.methods {
            let _ = writeln!(s, "    methods: {}", list(m, |m| m.to_string()));
        }
        if let Some(d) = &r.data {
            let _ = writeln!(s, "    data: {}", list(d, |d| d.to_string()));
        }
        if r.effect == Effect::Deny {
            s.push_str("    reason: Blocked by the benchmark policy.\n");
        }
    }
    s
}

/// A body that veto's built-in detectors classify as `class`, so that
/// `veto policy bench --requests` sees the same data classes as [`VetoReq`].
fn body_for(class: &str) -> &'static str {
    match class {
        "email" => "contact alice@example.com please",
        "credit_card" => "card 4111 1111 1111 1111 exp 12/30",
        "us_ssn" => "ssn 123-45-6789",
        _ => "",
    }
}

/// The requests as a `veto policy bench --requests` file.
pub fn requests_yaml(reqs: &[Req]) -> String {
    let mut s = String::from("requests:\n");
    for r in reqs {
        let _ = write!(
            s,
            "  - {{ machine: {}, method: {}, url: \"https://{}:{}/\"",
            r.machine, r.method, r.host, r.port
        );
        if !r.data.is_empty() {
            let body: Vec<&str> = r.data.iter().map(|c| body_for(c)).collect();
            let _ = write!(s, ", body: {}", quoted(&body.join(" ")));
        }
        s.push_str(" }\n");
    }
    s
}

/// Compiles a policy, turning diagnostics into one message.
pub fn compile(text: &str) -> Result<Policy, String> {
    Policy::compile(text).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// An owned request, from which the engine's borrowed [`Request`] is made
/// without allocating.
pub struct VetoReq {
    machine: String,
    host: Host,
    port: u16,
    method: &'static str,
    data: DataSet,
}

impl VetoReq {
    pub fn new(policy: &Policy, r: &Req) -> Result<VetoReq, String> {
        let host = normalize_host(&r.host).map_err(|e| e.to_string())?;
        let mut data = DataSet::EMPTY;
        for class in &r.data {
            let bit = policy
                .class_bit(class)
                .ok_or_else(|| format!("unknown data class `{class}`"))?;
            data.insert(bit);
        }
        Ok(VetoReq {
            machine: r.machine.clone(),
            host,
            port: r.port,
            method: r.method,
            data,
        })
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            machine: &self.machine,
            protocol: Protocol::Https,
            host: self.host.as_ref(),
            port: self.port,
            ips: &[],
            method: self.method,
            path: "/",
            data: self.data,
            now: 0,
        }
    }
}
