//! The in-memory snapshot the proxy checks credentials against.

use crate::token;
use std::collections::HashMap;
use std::fmt;
use subtle::ConstantTimeEq;

/// One machine as the request path sees it.
#[derive(Clone, Debug)]
pub struct Credential {
    pub name: String,
    pub roles: Vec<String>,
    pub env: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; from then on the token is refused.
    pub expires: Option<i64>,
    /// Seconds of disuse after which the credential is refused: counted
    /// from its last use (or its creation), `Store`'s `last_used` or a
    /// more recent use the caller knows of (see [`Credentials::check_used`]).
    pub idle_ttl: Option<i64>,
    pub last_used: Option<i64>,
    pub revoked_at: Option<i64>,
    pub(crate) hash: [u8; 32],
    /// The token before the last rotation, and when it stops working.
    pub(crate) old: Option<([u8; 32], i64)>,
}

impl Credential {
    /// A credential as a control plane keeps it: the SHA-256 of the token
    /// (and of the token before the last rotation, with when it stops).
    #[allow(clippy::too_many_arguments)]
    pub fn from_stored(
        name: String,
        roles: Vec<String>,
        env: Option<String>,
        created: i64,
        expires: Option<i64>,
        idle_ttl: Option<i64>,
        last_used: Option<i64>,
        revoked_at: Option<i64>,
        hash: [u8; 32],
        old: Option<([u8; 32], i64)>,
    ) -> Credential {
        Credential {
            name,
            roles,
            env,
            created,
            expires,
            idle_ttl,
            last_used,
            revoked_at,
            hash,
            old,
        }
    }

    /// Revoked, expired or idle at `now`, in that order.
    fn live(&self, now: i64, recent: Option<i64>) -> Result<(), Refusal> {
        if let Some(at) = self.revoked_at {
            return Err(Refusal::Revoked { at });
        }
        if let Some(at) = self.expires.filter(|&at| now >= at) {
            return Err(Refusal::Expired { at });
        }
        if let Some(limit) = self.idle_ttl {
            let since = self.last_used.max(recent).unwrap_or(self.created);
            if now.saturating_sub(since) >= limit {
                return Err(Refusal::Idle { since, limit });
            }
        }
        Ok(())
    }
}

/// `90s`, `15m`, `12h`, `30d`: the largest unit that divides evenly.
fn veto_duration(secs: i64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= n && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// Every machine, in memory: what the proxy needs to accept or refuse
/// credentials with no I/O and no lock. `Send + Sync`; share it behind an
/// `Arc` and swap in a new snapshot when [`crate::Store::version`] changes.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub(crate) machines: HashMap<String, Credential>,
    pub(crate) version: i64,
}

/// Why credentials were refused (a `407`). `Display` is a sentence for the
/// response body; it never contains the token.
///
/// An unknown machine and a wrong token read the same to the client, so the
/// 407 does not tell a guesser which machine names exist (the variants stay
/// apart for the audit log and the operator: see [`Refusal::code`]).
/// Revoked and expired are only reported to a client that presented the
/// right token: it needs to know why, and anyone else learns nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownMachine,
    BadToken,
    /// Unix seconds.
    Revoked {
        at: i64,
    },
    /// Unix seconds.
    Expired {
        at: i64,
    },
    /// The token was replaced by `veto machine rotate`; it stopped working
    /// at this time (Unix seconds).
    Rotated {
        at: i64,
    },
    /// Unused for its whole `--idle-ttl` (seconds): last used (or created)
    /// at `since`, Unix seconds.
    Idle {
        since: i64,
        limit: i64,
    },
}

impl Refusal {
    /// A stable short code for logs and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownMachine => "unknown_machine",
            Refusal::BadToken => "bad_token",
            Refusal::Revoked { .. } => "revoked",
            Refusal::Expired { .. } => "expired",
            Refusal::Rotated { .. } => "rotated",
            Refusal::Idle { .. } => "idle",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownMachine | Refusal::BadToken => {
                f.write_str("The proxy credentials are not valid: unknown machine or wrong token.")
            }
            Refusal::Revoked { at } => write!(
                f,
                "The proxy credentials of this machine were revoked at {}.",
                format_time(*at)
            ),
            Refusal::Expired { at } => write!(
                f,
                "The proxy credentials of this machine expired at {}.",
                format_time(*at)
            ),
            Refusal::Rotated { at } => write!(
                f,
                "This token was rotated: it stopped working at {}; use the machine's new token.",
                format_time(*at)
            ),
            Refusal::Idle { since, limit } => write!(
                f,
                "The proxy credentials of this machine lapsed: unused since {} (idle limit {}).",
                format_time(*since),
                veto_duration(*limit)
            ),
        }
    }
}

/// Compared against when the machine is unknown, so that an unknown name
/// costs the same hash and comparison as a known one: response time does
/// not reveal which names exist. No token hashes to it in practice.
const DUMMY_HASH: [u8; 32] = [0x5a; 32];

impl Credentials {
    /// A snapshot from credentials held elsewhere (a control plane).
    pub fn from_machines(machines: Vec<Credential>, version: i64) -> Credentials {
        Credentials {
            machines: machines.into_iter().map(|c| (c.name.clone(), c)).collect(),
            version,
        }
    }

    /// Checks `machine:token` as presented; `now` in Unix seconds.
    /// `Ok(name)` or `Err(reason for the 407)`.
    pub fn check(&self, machine: &str, token: &str, now: i64) -> Result<&str, Refusal> {
        self.check_used(machine, token, now, None)
    }

    /// As [`Credentials::check`], knowing a use more recent than the
    /// snapshot's `last_used` (the proxy keeps uses in memory and writes
    /// them to the store in batches).
    pub fn check_used(
        &self,
        machine: &str,
        token: &str,
        now: i64,
        recent: Option<i64>,
    ) -> Result<&str, Refusal> {
        let presented = token::hash(token);
        let Some(c) = self.machines.get(machine) else {
            // Same work as the known case; the result is thrown away.
            let _ = bool::from(presented.ct_eq(&DUMMY_HASH));
            return Err(Refusal::UnknownMachine);
        };
        let current = bool::from(presented.ct_eq(&c.hash));
        // Compared whether or not the current token matched: equal work.
        let old = c
            .old
            .map(|(h, until)| (bool::from(presented.ct_eq(&h)), until));
        if !current {
            match old {
                // The old token, within its overlap: checked like the new.
                Some((true, until)) if now < until => {}
                Some((true, until)) => return Err(Refusal::Rotated { at: until }),
                _ => return Err(Refusal::BadToken),
            }
        }
        c.live(now, recent)?;
        Ok(&c.name)
    }

    /// Checks a machine proven by other means (a client certificate):
    /// known, not revoked, not expired, not idle.
    pub fn check_machine(
        &self,
        machine: &str,
        now: i64,
        recent: Option<i64>,
    ) -> Result<&str, Refusal> {
        let c = self.machines.get(machine).ok_or(Refusal::UnknownMachine)?;
        c.live(now, recent)?;
        Ok(&c.name)
    }

    /// The machine of that name (the current registration if it was revoked
    /// and added again): roles, env and times for the request.
    pub fn get(&self, machine: &str) -> Option<&Credential> {
        self.machines.get(machine)
    }

    /// The store's [`crate::Store::version`] this snapshot was read at.
    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }
}

/// The last second humantime can format (9999-12-31T23:59:59Z); its
/// formatter fails past it, and `to_string` would then panic.
pub(crate) const MAX_TIME: i64 = 253_402_300_799;

/// RFC 3339 in UTC to the second, or the raw number if it is out of range
/// (a damaged store should still produce a readable sentence).
pub fn format_time(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(s) if unix <= MAX_TIME => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => format!("{unix} (Unix seconds)"),
    }
}
