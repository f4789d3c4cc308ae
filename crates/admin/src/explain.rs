//! The policy trace of a recorded decision: the record is turned back into
//! the engine's request and decided again by the reference evaluator of
//! the policy in force, which says why each rule did or did not match. The
//! JSON is the shape of `veto policy explain`.

use serde_json::{Value, json};
use std::net::IpAddr;
use veto_audit::Record;
use veto_policy::{
    DataSet, Decision, Effect, Grants, Host, Miss, Mode, Policy, Protocol, Request, Step,
    Timestamp, normalize_host,
};

/// A request rebuilt from a record, owned (the engine's request borrows).
pub struct Rebuilt {
    machine: String,
    protocol: Protocol,
    host: Host,
    port: u16,
    ips: Vec<IpAddr>,
    method: String,
    path: String,
    data: DataSet,
    now: Timestamp,
    /// Data classes of the record the policy in force does not define.
    unknown_classes: Vec<String>,
}

impl Rebuilt {
    pub fn new(policy: &Policy, r: &Record) -> Result<Rebuilt, String> {
        let protocol = Protocol::parse(&r.protocol)
            .ok_or_else(|| format!("the record has an unknown protocol `{}`", r.protocol))?;
        let host = normalize_host(&r.host).map_err(|e| e.to_string())?;
        let ips = r.ips.iter().filter_map(|i| i.parse().ok()).collect();
        let mut data = DataSet::EMPTY;
        let mut unknown_classes = Vec::new();
        for name in r.data.keys() {
            match policy.class_bit(name) {
                Some(bit) => data.insert(bit),
                None => unknown_classes.push(name.clone()),
            }
        }
        // The decision is re-made at the time it was recorded, so that
        // expiry dates in the policy are judged as they were then.
        let now = humantime::parse_rfc3339(&r.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as Timestamp)
            .unwrap_or(0);
        Ok(Rebuilt {
            machine: r.machine.clone(),
            protocol,
            host,
            port: r.port,
            ips,
            method: r.method.clone().unwrap_or_default(),
            path: r.path.clone().unwrap_or_default(),
            data,
            now,
            unknown_classes,
        })
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            machine: &self.machine,
            protocol: self.protocol,
            host: self.host.as_ref(),
            port: self.port,
            ips: &self.ips,
            method: &self.method,
            path: &self.path,
            data: self.data,
            now: self.now,
        }
    }
}

fn miss_text(req: &Request<'_>, miss: &Miss) -> String {
    match miss {
        Miss::From => format!(
            "from: machine `{}` is not listed and has no listed role or env",
            req.machine
        ),
        Miss::Destination => format!(
            "to: {} matches no listed service, host, cidr or tag",
            req.host
        ),
        Miss::Port => format!("to.ports: port {} is not listed", req.port),
        Miss::Protocol => format!("protocols: `{}` is not listed", req.protocol.as_str()),
        Miss::Method => format!("methods: `{}` is not listed", req.method),
        Miss::Path => format!("paths: `{}` matches no glob", req.path),
        Miss::Data => "data: none of the listed classes was found".into(),
        Miss::Avoidable => {
            "checks methods, paths or data: some request to this destination could avoid it".into()
        }
        Miss::Unseen => {
            "checks methods, paths or data, which a tunnel veto does not open cannot show: it cannot allow it"
                .into()
        }
        Miss::Expired(e) => {
            let last = match e.last_used {
                Some(t) => format!("last used {}", veto_policy::format_time(t)),
                None => format!(
                    "never used since it was loaded at {}",
                    veto_policy::format_time(e.since)
                ),
            };
            format!("expire_if_unused: the grant lapsed ({last})")
        }
    }
}

fn mode_of(policy: &Policy, i: u32, machine: &str) -> &'static str {
    let doc = policy.document();
    let mode = doc.rules[i as usize]
        .mode
        .or_else(|| doc.machine(machine).and_then(|m| m.mode))
        .unwrap_or(doc.defaults.mode);
    match mode {
        Mode::Enforce => "enforce",
        Mode::Report => "report",
    }
}

/// The explanation of a request as one JSON object: what `veto policy
/// explain` prints and what the dashboard shows. A DNS lookup is explained
/// as veto's DNS listener decides it: the trace is that of the request it
/// was decided on (`lookup.decided_as`: the lookup itself, or a connection
/// to the name that could be allowed), the decision the lookup's.
pub fn explain_request(policy: &Policy, r: &Request<'_>, grants: &dyn Grants) -> Value {
    if r.protocol != Protocol::Dns {
        return explain_decided(policy, r, grants);
    }
    let l = policy.decide_lookup(r, grants);
    let mut out = explain_decided(policy, &l.request(r), grants);
    out["decision"] = Value::from(l.effect().as_str());
    out["rule"] = Value::from(policy.rule_id(l.by));
    out["reason"] = Value::from(policy.lookup_reason(&l, r));
    match l.would {
        Some(w) => out["would"] = Value::from(w.as_str()),
        None => {
            if let Some(o) = out.as_object_mut() {
                o.remove("would");
            }
        }
    }
    out["request"]["protocol"] = Value::from("dns");
    out["request"]["port"] = Value::from(53);
    out["lookup"] = json!({
        "answered": l.answered,
        "decided_as": { "protocol": l.protocol.as_str(), "port": l.port },
    });
    out
}

fn explain_decided(policy: &Policy, r: &Request<'_>, grants: &dyn Grants) -> Value {
    let (d, steps): (Decision, Vec<Step>) = policy.explain(r, grants);
    let named = d.named();
    let doc = policy.document();
    let trace: Vec<Value> = steps
        .iter()
        .map(|s| {
            let rule = &doc.rules[s.rule as usize];
            let (matched, why) = match &s.outcome {
                Ok(hit) if hit.unseen => (
                    true,
                    "could apply to this tunnel, and veto cannot check its methods, paths or data inside: refuses the tunnel"
                        .to_string(),
                ),
                Ok(hit) if hit.via_cidr => (true, "matches (through a cidrs entry)".to_string()),
                Ok(_) => (true, "matches".to_string()),
                Err(m) => (false, miss_text(r, m)),
            };
            json!({
                "rule": rule.id,
                "line": rule.pos.line,
                "effect": rule.effect.as_str(),
                "mode": mode_of(policy, s.rule, r.machine),
                "matched": matched,
                "why": why,
            })
        })
        .collect();
    let data: Vec<&str> = r.data.iter().filter_map(|b| doc.class_name(b)).collect();
    let http = r.protocol.is_http();
    let mut out = json!({
        "decision": d.effect().as_str(),
        "rule": policy.rule_id(named.by),
        "reason": policy.reason(&d, r),
        "policy": policy.hash(),
        "request": {
            "machine": r.machine,
            "protocol": r.protocol.as_str(),
            "host": r.host.to_string(),
            "port": r.port,
            "method": if http { Value::from(r.method) } else { Value::Null },
            "path": if http { Value::from(r.path) } else { Value::Null },
            "ips": r.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "data": data,
        },
        "trace": trace,
    });
    if let Some(w) = d.would() {
        out["would"] = Value::from(w.as_str());
    }
    if d.effect() == Effect::Redact {
        let classes: Vec<&str> = policy
            .redact_classes(&d)
            .iter()
            .filter_map(|b| doc.class_name(b))
            .collect();
        out["redact"] = json!(classes);
    }
    out
}

/// The explanation of a stored record, plus `unknown_classes` when the
/// record names classes the policy lacks.
pub fn explain(policy: &Policy, req: &Rebuilt, grants: &dyn Grants) -> Value {
    let mut out = explain_request(policy, &req.request(), grants);
    if !req.unknown_classes.is_empty() {
        out["unknown_classes"] = json!(req.unknown_classes);
    }
    out
}
