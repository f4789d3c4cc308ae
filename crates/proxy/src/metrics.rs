//! Prometheus metrics of the proxy, rendered in the text exposition format.
//!
//! Counters are atomics; decisions by rule sit in a small map behind a mutex
//! held only for a lookup and an increment (never across I/O). Hand-written
//! because five metric families do not need a metrics framework on the
//! request path.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (integer, so it stays atomic).
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let trimmed = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
    }
}

/// Decision effects, in label order.
const EFFECTS: [&str; 3] = ["allow", "deny", "redact"];

#[derive(Default)]
pub struct Metrics {
    /// rule id -> count per effect.
    decisions: Mutex<HashMap<Box<str>, [u64; 3]>>,
    http_latency: Histogram,
    connect_latency: Histogram,
    tunnels_open: AtomicI64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    audit_failures: AtomicU64,
    /// DNS lookups answered and refused (`dns.rs`).
    dns: [AtomicU64; 2],
    /// Connections accepted on the transparent listener.
    transparent: AtomicU64,
}

impl Metrics {
    pub fn decision(&self, effect: &str, rule: &str) {
        let idx = EFFECTS.iter().position(|e| *e == effect).unwrap_or(1);
        let mut m = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(rule) {
            Some(c) => c[idx] += 1,
            None => {
                let mut c = [0; 3];
                c[idx] = 1;
                m.insert(rule.into(), c);
            }
        }
    }

    /// Time from accepting a request to its decision being recorded.
    pub fn latency(&self, connect: bool, d: Duration) {
        if connect {
            self.connect_latency.observe(d)
        } else {
            self.http_latency.observe(d)
        }
    }

    pub fn tunnel_opened(&self) {
        self.tunnels_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tunnel_closed(&self) {
        self.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn bytes(&self, out: u64, inn: u64) {
        self.bytes_out.fetch_add(out, Ordering::Relaxed);
        self.bytes_in.fetch_add(inn, Ordering::Relaxed);
    }

    /// A lookup on veto's DNS listener, answered or refused.
    pub fn lookup(&self, answered: bool) {
        self.dns[usize::from(!answered)].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection the kernel redirected to the transparent listener.
    pub fn transparent_connection(&self) {
        self.transparent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the audit writer's counts.
    pub fn render(&self, audit: veto_audit::Counts) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP veto_decisions_total Decisions by result and rule.\n# TYPE veto_decisions_total counter\n");
        {
            let m = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
            let mut rules: Vec<_> = m.iter().collect();
            rules.sort_by(|a, b| a.0.cmp(b.0));
            for (rule, counts) in rules {
                for (i, effect) in EFFECTS.iter().enumerate() {
                    if counts[i] > 0 {
                        let _ = writeln!(
                            out,
                            "veto_decisions_total{{decision=\"{effect}\",rule=\"{}\"}} {}",
                            escape(rule),
                            counts[i]
                        );
                    }
                }
            }
        }
        out.push_str("# HELP veto_decision_seconds Time from a request's arrival to its decision being recorded.\n# TYPE veto_decision_seconds histogram\n");
        self.http_latency
            .render(&mut out, "veto_decision_seconds", "kind=\"http\",");
        self.connect_latency
            .render(&mut out, "veto_decision_seconds", "kind=\"connect\",");
        let _ = writeln!(
            out,
            "# HELP veto_tunnels_open CONNECT tunnels open now.\n# TYPE veto_tunnels_open gauge\nveto_tunnels_open {}",
            self.tunnels_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP veto_bytes_total Bytes passed on, by direction.\n# TYPE veto_bytes_total counter\nveto_bytes_total{{direction=\"out\"}} {}\nveto_bytes_total{{direction=\"in\"}} {}",
            self.bytes_out.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP veto_dns_lookups_total Lookups on veto's DNS listener, answered or refused.\n# TYPE veto_dns_lookups_total counter\nveto_dns_lookups_total{{decision=\"allow\"}} {}\nveto_dns_lookups_total{{decision=\"deny\"}} {}",
            self.dns[0].load(Ordering::Relaxed),
            self.dns[1].load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP veto_transparent_connections_total Connections the kernel redirected to the transparent listener.\n# TYPE veto_transparent_connections_total counter\nveto_transparent_connections_total {}",
            self.transparent.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP veto_audit_failures_total Requests refused because the audit store could not write.\n# TYPE veto_audit_failures_total counter\nveto_audit_failures_total {}",
            self.audit_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP veto_audit_commits_total Transactions the audit writer committed (one per group of entries).\n# TYPE veto_audit_commits_total counter\nveto_audit_commits_total {}",
            audit.commits
        );
        let _ = writeln!(
            out,
            "# HELP veto_audit_entries_total Chain entries the audit writer committed (decisions, completions, events).\n# TYPE veto_audit_entries_total counter\nveto_audit_entries_total {}",
            audit.entries
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
