//! When the audit writer commits: at once when nobody else is coming, after
//! a short wait for company while entries keep arriving.
//!
//! Most of a commit's cost is fixed (locks, and a WAL frame for every page
//! it touches, however little of the page changed), so a commit per entry
//! or two spends the writer's time on overhead. Under load, a group that
//! waits a little for the entries about to arrive costs each request that
//! much latency and the machine far less CPU. But a wait only pays while
//! entries do arrive: producers that all wait for this very commit (one
//! client, or a handful) would never join, so the wait ends at the first
//! step that brought nothing.

use std::time::Duration;

/// Longest a group waits for company before its commit.
pub(crate) const MAX_LINGER: Duration = Duration::from_micros(400);
/// One step of the wait; the group commits after a step that brought
/// nothing new.
pub(crate) const STEP: Duration = Duration::from_micros(50);
/// A group this large commits at once.
pub(crate) const TARGET_GROUP: usize = 24;

/// Grows a group before its commit. `take` moves what is queued into the
/// group and returns the group's size; `sleep` waits (a parameter so the
/// tests can run it on a fake clock). A group of one waits for nobody:
/// nothing else was queued, so nobody else is known to be coming.
pub(crate) fn gather(mut take: impl FnMut() -> usize, mut sleep: impl FnMut(Duration)) {
    let mut have = take();
    if have < 2 {
        return;
    }
    let mut waited = Duration::ZERO;
    while have < TARGET_GROUP && waited < MAX_LINGER {
        sleep(STEP);
        waited += STEP;
        let now = take();
        if now == have {
            return;
        }
        have = now;
    }
}

/// The real clock for [`gather`].
pub(crate) fn sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `gather` over a queue whose sizes after each take are given;
    /// returns (the size committed, the time waited).
    fn run(sizes: &[usize]) -> (usize, Duration) {
        let mut it = sizes.iter().copied();
        let mut last = 0;
        let mut waited = Duration::ZERO;
        gather(
            || {
                last = it.next().unwrap_or(last);
                last
            },
            |d| waited += d,
        );
        (last, waited)
    }

    #[test]
    fn a_lone_entry_commits_at_once() {
        assert_eq!(run(&[1, 5]), (1, Duration::ZERO));
    }

    #[test]
    fn producers_that_all_wait_for_this_commit_cost_one_step() {
        // Two clients, both waiting: one step brings nothing, commit.
        assert_eq!(run(&[2, 2]), (2, STEP));
    }

    #[test]
    fn arrivals_extend_the_wait_up_to_the_bound() {
        // Entries keep coming: the wait ends at its bound.
        assert_eq!(run(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), (10, MAX_LINGER));
        // ...or when the group is large enough.
        assert_eq!(run(&[2, 12, 30]), (30, 2 * STEP));
        // ...or at the first step that brings nothing.
        assert_eq!(run(&[3, 6, 6]), (6, 2 * STEP));
    }

    #[test]
    fn a_full_group_commits_at_once() {
        assert_eq!(run(&[TARGET_GROUP]), (TARGET_GROUP, Duration::ZERO));
    }
}
