//! `veto policy bench`: decisions per second and latency percentiles for a
//! policy, in the manner of `opa bench`.

use crate::sample::{Payload, Sample};
use std::hint::black_box;
use std::time::Instant;
use veto_policy::{HostPattern, NoGrants, Policy};

/// At most this many generated samples.
const MAX_SAMPLES: usize = 10_000;

/// Requests made from the policy itself: every machine it names (and
/// `anonymous`) to every service host and cidr it lists, so that the
/// sample exercises real rules rather than the default.
pub fn generate(policy: &Policy) -> Vec<Sample> {
    let doc = policy.document();
    let mut machines: Vec<&str> = doc.machines.iter().map(|m| m.name.as_str()).collect();
    machines.push("anonymous");
    let name = |h: &HostPattern| match h {
        HostPattern::Exact(n) => n.to_string(),
        HostPattern::Suffix(sfx) => format!("api.{sfx}"),
        HostPattern::AnyName => "example.com".to_string(),
    };
    let first = |p: &Option<Vec<u16>>| p.as_ref().and_then(|p| p.first().copied()).unwrap_or(443);
    let mut dests: Vec<(String, u16)> = Vec::new();
    for s in &doc.services {
        dests.extend(s.hosts.iter().map(|h| (name(h), first(&s.ports))));
        dests.extend(
            s.cidrs
                .iter()
                .map(|n| (n.network().to_string(), first(&s.ports))),
        );
    }
    for to in doc.rules.iter().filter_map(|r| r.to.as_ref()) {
        dests.extend(to.hosts.iter().map(|h| (name(h), first(&to.ports))));
        dests.extend(
            to.cidrs
                .iter()
                .map(|n| (n.network().to_string(), first(&to.ports))),
        );
    }
    if dests.is_empty() {
        dests.push(("example.com".into(), 443));
    }
    let mut out = Vec::new();
    'outer: for (i, (host, port)) in dests.iter().enumerate() {
        // Walk machines round-robin so a large policy still gets a mix.
        for k in 0..machines.len().min(4) {
            let m = machines[(i + k) % machines.len()];
            let url = if host.contains(':') {
                format!("https://[{host}]:{port}/v1/items")
            } else {
                format!("https://{host}:{port}/v1/items")
            };
            if let Ok(s) = Sample::from_url(m, "POST", &url, Payload::default()) {
                out.push(s);
            }
            if out.len() >= MAX_SAMPLES {
                break 'outer;
            }
        }
    }
    out
}

#[derive(Debug)]
pub struct Figures {
    pub samples: usize,
    pub iterations: usize,
    pub per_second: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub mean_ns: f64,
}

/// Decides `iterations` requests drawn round-robin from `samples`.
pub fn run(policy: &Policy, samples: &[Sample], iterations: usize) -> Figures {
    let reqs: Vec<_> = samples.iter().map(Sample::request).collect();
    if reqs.is_empty() {
        return Figures {
            samples: 0,
            iterations: 0,
            per_second: 0.0,
            p50_ns: 0,
            p99_ns: 0,
            mean_ns: 0.0,
        };
    }
    // Warm caches and branch predictors before measuring.
    for r in reqs.iter().cycle().take(iterations.min(10_000)) {
        black_box(policy.decide(black_box(r), &NoGrants));
    }
    // Throughput: one clock read around the whole loop.
    let start = Instant::now();
    for r in reqs.iter().cycle().take(iterations) {
        black_box(policy.decide(black_box(r), &NoGrants));
    }
    let total = start.elapsed();
    // Latency: each decision timed on its own (includes the clock's cost,
    // about 20 ns here, so percentiles are an upper bound).
    let mut lat: Vec<u64> = Vec::with_capacity(iterations);
    for r in reqs.iter().cycle().take(iterations) {
        let t = Instant::now();
        black_box(policy.decide(black_box(r), &NoGrants));
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Figures {
        samples: reqs.len(),
        iterations,
        per_second: iterations as f64 / total.as_secs_f64(),
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        mean_ns: total.as_nanos() as f64 / iterations as f64,
    }
}
