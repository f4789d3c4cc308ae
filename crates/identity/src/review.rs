//! Access review as pure functions over what a store holds: which
//! credentials and grants exist, when each was last used, when it stops
//! working if left unused, and which grants have lapsed. `veto access
//! review` runs it over the local identity store; `veto server` over the
//! fleet's, so both answer the same question the same way.

use crate::GrantUse;
use std::collections::HashMap;

/// A credential as the review needs it (Unix seconds).
#[derive(Clone, Debug)]
pub struct CredentialUse {
    pub name: String,
    pub created: i64,
    pub expires: Option<i64>,
    pub idle_ttl: Option<i64>,
    pub last_used: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An `expire_if_unused` rule: its id and idle period in seconds.
#[derive(Clone, Debug)]
pub struct Expiring {
    pub rule: String,
    pub idle: i64,
}

impl Expiring {
    /// The `expire_if_unused` rules of a policy.
    pub fn of(policy: &veto_policy::Policy) -> Vec<Expiring> {
        policy
            .document()
            .rules
            .iter()
            .filter_map(|r| {
                r.expire_if_unused.map(|idle| Expiring {
                    rule: r.id.to_string(),
                    idle: idle as i64,
                })
            })
            .collect()
    }
}

/// One line of the review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `credential` or `grant`.
    pub kind: &'static str,
    /// The grant's rule id; none for a credential.
    pub rule: Option<String>,
    /// `*`: every machine that never used the grant.
    pub machine: String,
    pub last_used: Option<i64>,
    /// When it stops working if left unused (or at its ttl).
    pub expires_at: Option<i64>,
    /// `expired`, `expiring` (within the window), `active`, `revoked`.
    pub state: &'static str,
}

fn state(expires: Option<i64>, now: i64, within: i64) -> &'static str {
    match expires {
        Some(e) if e <= now => "expired",
        Some(e) if e <= now.saturating_add(within) => "expiring",
        _ => "active",
    }
}

/// Every credential and grant with last use and expiry; expired first,
/// then what expires soonest. A rule nobody loaded yet counts from `now`.
pub fn review(
    credentials: &[CredentialUse],
    rules: &[Expiring],
    uses: &[GrantUse],
    first_loaded: &HashMap<String, i64>,
    now: i64,
    within: i64,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for m in credentials {
        let idle_end = m
            .idle_ttl
            .map(|i| m.last_used.unwrap_or(m.created).saturating_add(i));
        let expires = match (m.expires, idle_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        rows.push(Row {
            kind: "credential",
            rule: None,
            machine: m.name.clone(),
            last_used: m.last_used,
            expires_at: expires,
            state: if m.revoked_at.is_some() {
                "revoked"
            } else {
                state(expires, now, within)
            },
        });
    }
    for r in rules {
        for u in uses.iter().filter(|u| u.rule == r.rule) {
            let end = u.last_used.saturating_add(r.idle);
            rows.push(Row {
                kind: "grant",
                rule: Some(r.rule.clone()),
                machine: u.machine.clone(),
                last_used: Some(u.last_used),
                expires_at: Some(end),
                state: state(Some(end), now, within),
            });
        }
        // Machines that never used it: counted from the rule's first load.
        let end = first_loaded
            .get(&r.rule)
            .copied()
            .unwrap_or(now)
            .saturating_add(r.idle);
        rows.push(Row {
            kind: "grant",
            rule: Some(r.rule.clone()),
            machine: "*".into(),
            last_used: None,
            expires_at: Some(end),
            state: state(Some(end), now, within),
        });
    }
    let rank = |s: &str| match s {
        "expired" => 0,
        "expiring" => 1,
        "active" => 2,
        _ => 3,
    };
    rows.sort_by_key(|r| (rank(r.state), r.expires_at.unwrap_or(i64::MAX)));
    rows
}

/// A grant that lapsed: unused for its whole idle period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapse {
    pub rule: String,
    /// `*`: nobody ever used it since the rule was first loaded.
    pub machine: String,
    pub last_used: Option<i64>,
    /// The use (or first load) the idle period counts from: with the rule
    /// and machine, what makes a lapse the same one when seen again.
    pub since: i64,
    pub idle: i64,
}

impl Lapse {
    pub fn expired_at(&self) -> i64 {
        self.since.saturating_add(self.idle)
    }

    /// One sentence for the change log and the audit trail.
    pub fn reason(&self) -> String {
        let who = if self.machine == "*" {
            "every machine (never used since it was loaded)".to_string()
        } else {
            format!("machine `{}`", self.machine)
        };
        format!(
            "grant `{}` expired for {who}: unused for {} (last used {})",
            self.rule,
            veto_policy::format_duration(self.idle.max(0) as u64),
            self.last_used
                .map_or_else(|| "never".to_string(), crate::format_time)
        )
    }
}

/// Every grant that has lapsed by `now`. A rule with no use at all lapses
/// for every machine at once (`*`), counted from its first load; a rule
/// never loaded has not started its clock.
pub fn lapsed(
    rules: &[Expiring],
    uses: &[GrantUse],
    first_loaded: &HashMap<String, i64>,
    now: i64,
) -> Vec<Lapse> {
    let mut out = Vec::new();
    for r in rules {
        let mut any = false;
        for u in uses.iter().filter(|u| u.rule == r.rule) {
            any = true;
            if now - u.last_used >= r.idle {
                out.push(Lapse {
                    rule: r.rule.clone(),
                    machine: u.machine.clone(),
                    last_used: Some(u.last_used),
                    since: u.last_used,
                    idle: r.idle,
                });
            }
        }
        if let (false, Some(&first)) = (any, first_loaded.get(&r.rule))
            && now - first >= r.idle
        {
            out.push(Lapse {
                rule: r.rule.clone(),
                machine: "*".into(),
                last_used: None,
                since: first,
                idle: r.idle,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(rule: &str, machine: &str, at: i64) -> GrantUse {
        GrantUse {
            rule: rule.into(),
            machine: machine.into(),
            last_used: at,
        }
    }

    #[test]
    fn lapses_per_machine_and_for_everyone_when_never_used() {
        let rules = [
            Expiring {
                rule: "a".into(),
                idle: 100,
            },
            Expiring {
                rule: "b".into(),
                idle: 100,
            },
            Expiring {
                rule: "c".into(),
                idle: 100,
            },
        ];
        let uses = [u("a", "m1", 1000), u("a", "m2", 950)];
        let first: HashMap<String, i64> = [("b".to_string(), 900), ("a".to_string(), 0)].into();
        // At 1050: m2's use is exactly 100 s old (lapsed), m1's is not;
        // `b` was loaded 150 s ago and never used; `c` was never loaded.
        let l = lapsed(&rules, &uses, &first, 1050);
        assert_eq!(
            l.iter()
                .map(|l| (l.rule.as_str(), l.machine.as_str(), l.since))
                .collect::<Vec<_>>(),
            vec![("a", "m2", 950), ("b", "*", 900)]
        );
        assert_eq!(l[0].expired_at(), 1050);
        assert!(l[1].reason().contains("never used since it was loaded"));
    }

    #[test]
    fn review_orders_expired_then_soonest_and_marks_revoked() {
        let creds = [
            CredentialUse {
                name: "old".into(),
                created: 0,
                expires: None,
                idle_ttl: Some(10),
                last_used: None,
                revoked_at: None,
            },
            CredentialUse {
                name: "gone".into(),
                created: 0,
                expires: Some(5),
                idle_ttl: None,
                last_used: None,
                revoked_at: Some(1),
            },
            CredentialUse {
                name: "soon".into(),
                created: 0,
                expires: Some(1000),
                idle_ttl: Some(2000),
                last_used: Some(900),
                revoked_at: None,
            },
        ];
        let rules = [Expiring {
            rule: "g".into(),
            idle: 50,
        }];
        let rows = review(
            &creds,
            &rules,
            &[u("g", "m", 990)],
            &HashMap::new(),
            1000,
            60,
        );
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.machine.as_str(), r.state, r.expires_at))
            .collect();
        assert_eq!(
            got,
            vec![
                ("old", "expired", Some(10)),
                ("soon", "expired", Some(1000)),
                ("m", "expiring", Some(1040)),
                ("*", "expiring", Some(1050)),
                ("gone", "revoked", Some(5)),
            ]
        );
    }
}
