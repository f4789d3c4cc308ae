//! When the audit writer commits: at once when entries are rare, after a
//! short wait for company when they are not.

use std::time::{Duration, Instant};

/// Longest a group waits for company before its commit.
const MAX_LINGER: Duration = Duration::from_micros(400);
/// The group size a lingering group aims at.
const TARGET_GROUP: f64 = 24.0;

/// When to commit. Most of a commit's cost is fixed (locks, and a WAL frame
/// for every page it touches, however little of the page changed), so a
/// commit per entry or two spends the writer's time on overhead. Under load,
/// a group that waits a few hundred microseconds for the entries about to
/// arrive costs each request that much latency and the machine far less
/// CPU; when entries are rare nobody would join, and the group commits at
/// once.
#[derive(Debug)]
pub(crate) struct Pace {
    /// Entries per second, smoothed.
    rate: f64,
    last: Instant,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            rate: 0.0,
            last: Instant::now(),
        }
    }
}

impl Pace {
    /// How long a group of `have` entries should wait for more, if at all.
    pub(crate) fn linger(&self, have: usize) -> Option<Duration> {
        let want = TARGET_GROUP - have as f64;
        // Worth a wait only when at least two more would come within it.
        if want <= 0.0 || self.rate * MAX_LINGER.as_secs_f64() < 2.0 {
            return None;
        }
        Some(Duration::from_secs_f64(want / self.rate).min(MAX_LINGER))
    }

    /// A group of `n` entries was taken: everything it holds arrived since
    /// the last one was.
    pub(crate) fn taken(&mut self, n: usize) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-6);
        self.last = now;
        let seen = n as f64 / dt;
        self.rate = if self.rate == 0.0 {
            seen
        } else {
            0.8 * self.rate + 0.2 * seen
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_rate(per_sec: f64) -> Pace {
        Pace {
            rate: per_sec,
            last: Instant::now(),
        }
    }

    #[test]
    fn rare_entries_commit_at_once() {
        // 1,000/s: under one more entry would arrive in the longest wait.
        assert_eq!(at_rate(1_000.0).linger(1), None);
        assert_eq!(Pace::default().linger(1), None);
    }

    #[test]
    fn busy_writers_wait_for_the_entries_about_to_arrive() {
        // 20,000/s: 23 more take 1.15 ms, so the wait is the bound.
        assert_eq!(at_rate(20_000.0).linger(1), Some(MAX_LINGER));
        // 200,000/s: 14 more take 70 µs.
        let wait = at_rate(200_000.0).linger(10).unwrap();
        assert!((wait.as_secs_f64() - 70e-6).abs() < 1e-6, "{wait:?}");
        // A group already at its target commits at once.
        assert_eq!(at_rate(200_000.0).linger(24), None);
    }

    #[test]
    fn the_rate_follows_what_groups_hold() {
        let mut p = Pace::default();
        std::thread::sleep(Duration::from_millis(10));
        p.taken(10);
        // About 1,000/s (10 in 10 ms, less with a slow clock).
        assert!(p.rate > 100.0 && p.rate <= 1_000.0, "{}", p.rate);
        assert_eq!(p.linger(1), None);
    }
}
