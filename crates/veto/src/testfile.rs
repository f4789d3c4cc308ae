//! `veto policy test`: policy test files (contract.md, "A policy test file").

use crate::sample::{Payload, Sample};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use veto_policy::yaml::{self, Node, Value};
use veto_policy::{Effect, Grants, Policy, Protocol, Timestamp};
use veto_proxy::inspect::Detectors;

/// One case that did not pass, or a file that could not be run.
#[derive(Debug)]
pub struct Failure {
    /// `file:line` of the case, or of the problem.
    pub at: String,
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "FAIL {}: {}", self.at, self.message)
        } else {
            write!(f, "FAIL {} {}: {}", self.at, self.name, self.message)
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<Failure>,
}

/// The test files under a path: the file itself, or every `*.test.yaml`
/// (or `.test.yml`) below a directory, in a stable order.
pub fn find_tests(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".test.yaml") || name.ends_with(".test.yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs every test file under `path`.
pub fn run(path: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    let files = find_tests(path)?;
    if files.is_empty() {
        report.failures.push(Failure {
            at: path.display().to_string(),
            name: String::new(),
            message: "no test files (*.test.yaml) found".into(),
        });
    }
    for file in files {
        run_file(&file, &mut report);
    }
    Ok(report)
}

fn fail(report: &mut Report, at: String, name: &str, message: impl Into<String>) {
    report.failures.push(Failure {
        at,
        name: name.into(),
        message: message.into(),
    });
}

fn run_file(file: &Path, report: &mut Report) {
    let shown = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(report, shown, "", format!("cannot read: {e}")),
    };
    let root = match yaml::parse(&text) {
        Ok(Some(root)) => root,
        Ok(None) => return fail(report, shown, "", "the test file is empty"),
        Err(e) => {
            return fail(
                report,
                format!("{shown}:{}:{}", e.pos.line, e.pos.col),
                "",
                e.message,
            );
        }
    };
    let at = |n: &Node<'_>| format!("{shown}:{}", n.pos.line);
    let Some(fields) = map(&root) else {
        return fail(
            report,
            at(&root),
            "",
            "a test file is a mapping with `policy` and `cases`",
        );
    };
    if let Some(k) = unknown(fields, &["policy", "cases"]) {
        return fail(
            report,
            at(k),
            "",
            format!(
                "unknown field `{}`; expected policy, cases",
                k.as_str().unwrap_or("")
            ),
        );
    }
    let Some(policy_rel) = get(fields, "policy").and_then(Node::as_str) else {
        return fail(
            report,
            at(&root),
            "",
            "missing `policy:` (the policy file, relative to this file)",
        );
    };
    let policy_path = file.parent().unwrap_or(Path::new(".")).join(policy_rel);
    let cases: &[Node<'_>] = match get(fields, "cases").map(|c| &c.value) {
        Some(Value::Seq(items)) => items,
        _ => return fail(report, at(&root), "", "missing `cases:` (a list)"),
    };
    let loaded = std::fs::read_to_string(&policy_path)
        .map_err(|e| format!("cannot read policy {}: {e}", policy_path.display()))
        .and_then(|t| {
            Policy::compile(&t).map_err(|errs| {
                let lines: Vec<String> = errs
                    .iter()
                    .map(|d| format!("{}:{d}", policy_path.display()))
                    .collect();
                format!("invalid policy:\n  {}", lines.join("\n  "))
            })
        })
        .and_then(|p| Detectors::new(&p).map(|d| (p, d)));
    let (policy, detectors) = match loaded {
        Ok(pd) => pd,
        Err(msg) => {
            // Every case of the file fails: a broken policy passes nothing.
            for c in cases {
                fail(report, at(c), case_name(c), msg.clone());
            }
            return;
        }
    };
    for c in cases {
        match run_case(&policy, &detectors, c) {
            Ok(()) => report.passed += 1,
            Err(msg) => fail(report, at(c), case_name(c), msg),
        }
    }
}

fn map<'a, 'n>(n: &'a Node<'n>) -> Option<&'a [(Node<'n>, Node<'n>)]> {
    match &n.value {
        Value::Map(e) => Some(e),
        _ => None,
    }
}

fn get<'a, 'n>(entries: &'a [(Node<'n>, Node<'n>)], key: &str) -> Option<&'a Node<'n>> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn unknown<'a, 'n>(entries: &'a [(Node<'n>, Node<'n>)], allowed: &[&str]) -> Option<&'a Node<'n>> {
    entries
        .iter()
        .map(|(k, _)| k)
        .find(|k| !allowed.contains(&k.as_str().unwrap_or("")))
}

fn case_name<'a>(c: &'a Node<'_>) -> &'a str {
    map(c)
        .and_then(|e| get(e, "name"))
        .and_then(Node::as_str)
        .unwrap_or("(unnamed)")
}

fn time(n: &Node<'_>) -> Result<Timestamp, String> {
    let s = n.as_str().ok_or("a time must be an RFC 3339 string")?;
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("invalid time `{s}`: {e}"))?;
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    Ok(secs)
}

fn str_field<'a>(e: &'a [(Node<'_>, Node<'_>)], key: &str) -> Result<Option<&'a str>, String> {
    match get(e, key) {
        None => Ok(None),
        Some(n) => n
            .as_str()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a string")),
    }
}

/// Grant use as a test case states it.
struct CaseGrants {
    last_used: HashMap<String, Timestamp>,
    loaded_at: Timestamp,
}

impl Grants for CaseGrants {
    fn last_used(&self, rule: &str, _machine: &str) -> Option<Timestamp> {
        self.last_used.get(rule).copied()
    }
    fn first_loaded(&self, _rule: &str) -> Option<Timestamp> {
        Some(self.loaded_at)
    }
}

const REQUEST_FIELDS: &[&str] = &[
    "machine",
    "method",
    "url",
    "body",
    "headers",
    "connect",
    "lookup",
    "protocol",
    "resolves_to",
    "now",
    "last_used",
    "loaded_at",
];

/// Builds the sample and grants a case's `request` describes.
fn parse_request(detectors: &Detectors, r: &Node<'_>) -> Result<(Sample, CaseGrants), String> {
    let e = map(r).ok_or("`request` must be a mapping")?;
    if let Some(k) = unknown(e, REQUEST_FIELDS) {
        return Err(format!(
            "unknown request field `{}`",
            k.as_str().unwrap_or("")
        ));
    }
    let machine = str_field(e, "machine")?.unwrap_or("anonymous");
    let protocol = match str_field(e, "protocol")? {
        None => None,
        Some(p) => Some(Protocol::parse(p).ok_or_else(|| format!("unknown protocol `{p}`"))?),
    };
    let mut headers = Vec::new();
    if let Some(h) = get(e, "headers") {
        for (k, v) in map(h).ok_or("`headers` must be a mapping")? {
            headers.push((
                k.as_str().unwrap_or("").to_string(),
                v.as_str().unwrap_or("").to_string(),
            ));
        }
    }
    let payload = Payload {
        target: String::new(),
        headers,
        body: str_field(e, "body")?.unwrap_or("").as_bytes().to_vec(),
    };
    let lookup = str_field(e, "lookup")?;
    let mut sample = match (str_field(e, "url")?, str_field(e, "connect")?) {
        (None, None) if lookup.is_some() => {
            Sample::from_lookup(machine, lookup.unwrap_or_default()).map_err(|e| e.to_string())?
        }
        _ if lookup.is_some() => {
            return Err("a request needs exactly one of `url`, `connect` or `lookup`".into());
        }
        (Some(url), None) => {
            let s = Sample::from_url(
                machine,
                str_field(e, "method")?.unwrap_or("GET"),
                url,
                payload,
            )
            .map_err(|e| e.to_string())?;
            if let Some(p) = protocol
                && p != s.protocol
            {
                return Err(format!(
                    "protocol `{}` does not match the url's scheme",
                    p.as_str()
                ));
            }
            s
        }
        (None, Some(target)) => {
            Sample::from_connect(machine, target, protocol.unwrap_or(Protocol::Tls))
                .map_err(|e| e.to_string())?
        }
        _ => {
            return Err("a request needs exactly one of `url`, `connect` or `lookup`".into());
        }
    };
    if let Some(list) = get(e, "resolves_to") {
        let items: Vec<&Node<'_>> = match &list.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![list],
        };
        for it in items {
            let s = it.as_str().unwrap_or("");
            sample.ips.push(
                s.parse::<IpAddr>()
                    .map_err(|_| format!("invalid address `{s}` in resolves_to"))?,
            );
        }
    }
    sample.now = match get(e, "now") {
        Some(n) => time(n)?,
        None => now(),
    };
    let loaded_at = get(e, "loaded_at")
        .map(time)
        .transpose()?
        .unwrap_or(sample.now);
    let mut last_used = HashMap::new();
    if let Some(lu) = get(e, "last_used") {
        for (k, v) in map(lu).ok_or("`last_used` must map rule ids to times")? {
            last_used.insert(k.as_str().unwrap_or("").to_string(), time(v)?);
        }
    }
    sample.detect(detectors);
    Ok((
        sample,
        CaseGrants {
            last_used,
            loaded_at,
        },
    ))
}

pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn effect(s: &str) -> Option<Effect> {
    match s {
        "allow" => Some(Effect::Allow),
        "deny" => Some(Effect::Deny),
        "redact" => Some(Effect::Redact),
        _ => None,
    }
}

/// A `lookup:` case: decided as veto's DNS listener decides a lookup.
fn check_lookup(
    policy: &Policy,
    sample: &Sample,
    grants: &CaseGrants,
    expect: &[(Node<'_>, Node<'_>)],
) -> Result<(), String> {
    let req = sample.request();
    let l = policy.decide_lookup(&req, grants);
    let got = (
        l.effect().as_str(),
        policy.rule_id(l.by),
        l.would.map(Effect::as_str).unwrap_or("none"),
        policy.lookup_reason(&l, &req),
    );
    let mut problems = Vec::new();
    for (field, value) in [("decision", got.0), ("rule", got.1), ("would", got.2)] {
        if let Some(want) = str_field(expect, field)?
            && want != value
        {
            problems.push(format!("expected {field} {want}"));
        }
    }
    if let Some(want) = str_field(expect, "reason_contains")?
        && !got.3.contains(want)
    {
        problems.push(format!("expected the reason to contain {want:?}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}; got decision {}{}, rule {}: {}",
        problems.join(", "),
        got.0,
        match got.2 {
            "none" => String::new(),
            w => format!(" (would {w})"),
        },
        got.1,
        got.3
    ))
}

fn run_case(policy: &Policy, detectors: &Detectors, c: &Node<'_>) -> Result<(), String> {
    let e = map(c).ok_or("a case must be a mapping")?;
    if let Some(k) = unknown(e, &["name", "request", "expect"]) {
        return Err(format!("unknown case field `{}`", k.as_str().unwrap_or("")));
    }
    let (mut sample, grants) =
        parse_request(detectors, get(e, "request").ok_or("missing `request`")?)?;
    let expect =
        map(get(e, "expect").ok_or("missing `expect`")?).ok_or("`expect` must be a mapping")?;
    if let Some(k) = unknown(expect, &["decision", "rule", "would", "reason_contains"]) {
        return Err(format!(
            "unknown expect field `{}`",
            k.as_str().unwrap_or("")
        ));
    }
    // A path the proxy refuses before any rule (policy `paths:`), or
    // method overrides that disagree, are that refusal here too: deny,
    // rule `malformed-request`. An override is decided as the proxy
    // decides it: the stricter of the two methods.
    let (overridden, malformed) = match sample.apply_paths(&policy.document().paths) {
        Err(e) => (None, Some(e.to_string())),
        Ok(()) => match sample.overridden() {
            Ok(o) => (o, None),
            Err(e) => (None, Some(e)),
        },
    };
    if sample.protocol == Protocol::Dns {
        return check_lookup(policy, &sample, &grants, expect);
    }
    let other = overridden.as_deref().map(|m| sample.with_method(m));
    let req = sample.request();
    let d = policy.decide(&req, &grants);
    let (d, req, by_override) = match &other {
        Some(o) => match d.stricter(policy.decide(&o.request(), &grants)) {
            (d, true) => (d, o.request(), true),
            (d, false) => (d, req, false),
        },
        None => (d, req, false),
    };
    let (effect_got, rule, reason, would) = match &malformed {
        Some(e) => ("deny", crate::explain::MALFORMED, e.clone(), "none"),
        None => (
            d.effect().as_str(),
            policy.rule_id(d.named().by),
            match by_override {
                true => format!(
                    "the request overrides its method as {}: {}",
                    req.method,
                    policy.reason(&d, &req)
                ),
                false => policy.reason(&d, &req),
            },
            d.would().map(Effect::as_str).unwrap_or("none"),
        ),
    };
    let got = format!(
        "got decision {effect_got}{}, rule {rule}: {reason}",
        match would {
            "none" => String::new(),
            w => format!(" (would {w})"),
        }
    );
    let mut problems = Vec::new();
    if let Some(want) = str_field(expect, "decision")? {
        effect(want).ok_or_else(|| format!("unknown decision `{want}`"))?;
        if want != effect_got {
            problems.push(format!("expected decision {want}"));
        }
    }
    if let Some(want) = str_field(expect, "rule")?
        && want != rule
    {
        problems.push(format!("expected rule {want}"));
    }
    if let Some(want) = str_field(expect, "would")? {
        if want != "none" {
            effect(want).ok_or_else(|| format!("unknown would `{want}`"))?;
        }
        if want != would {
            problems.push(format!("expected would {want}"));
        }
    }
    if let Some(want) = str_field(expect, "reason_contains")?
        && !reason.contains(want)
    {
        problems.push(format!("expected the reason to contain {want:?}"));
    }
    // The index and the reference evaluator must agree on every case; a
    // disagreement is an engine bug, never a test failure to shrug off.
    let (reference, _) = policy.explain(&req, &grants);
    if reference != d {
        problems.push(format!(
            "the index and the reference evaluator disagree: {d:?} vs {reference:?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; {got}", problems.join(", ")))
    }
}

/// Requests for `veto policy bench`: a test file (each case's `request`), a
/// mapping with `requests:`, or a plain YAML list of requests.
pub fn load_requests(policy: &Policy, file: &Path) -> Result<Vec<Sample>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let root = yaml::parse(&text)
        .map_err(|e| {
            format!(
                "{}:{}:{}: {}",
                file.display(),
                e.pos.line,
                e.pos.col,
                e.message
            )
        })?
        .ok_or_else(|| format!("{}: no requests", file.display()))?;
    let detectors = Detectors::new(policy)?;
    let items: Vec<&Node<'_>> = match &root.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Map(e) => match (get(e, "cases"), get(e, "requests")) {
            (
                Some(Node {
                    value: Value::Seq(cases),
                    ..
                }),
                _,
            ) => cases
                .iter()
                .filter_map(|c| map(c).and_then(|e| get(e, "request")))
                .collect(),
            (
                _,
                Some(Node {
                    value: Value::Seq(reqs),
                    ..
                }),
            ) => reqs.iter().collect(),
            _ => {
                return Err(format!(
                    "{}: expected `cases:` or `requests:`",
                    file.display()
                ));
            }
        },
        _ => return Err(format!("{}: expected a list of requests", file.display())),
    };
    items
        .into_iter()
        .map(|n| {
            parse_request(&detectors, n)
                .map(|(s, _)| s)
                .map_err(|e| format!("{}:{}: {e}", file.display(), n.pos.line))
        })
        .collect()
}
