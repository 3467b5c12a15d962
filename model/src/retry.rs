//! How a driver retries a failed reconcile: one policy, and one failure count per reconcile
//! target, for the simulator and the controller alike.

use std::collections::BTreeMap;

/// Why a reconcile failed, as far as retrying cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A race with another writer: 409 on a guarded write, or 404 on an object that went. The
    /// watch usually brings the fresh state within milliseconds, so retry soon, without backoff.
    Race,
    /// Anything else (the API server refused or did not answer): back off, doubling per
    /// consecutive failure.
    Other,
}

/// Retry delays after a failed reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after a [`Failure::Race`].
    pub race_retry_ms: u64,
    /// Delay after the first [`Failure::Other`]; it doubles per consecutive one.
    pub backoff_min_ms: u64,
    /// No backoff is longer than this.
    pub backoff_max_ms: u64,
    /// A pair whose own writes have not come back through the watch yet
    /// (`crate::unconfirmed::PendingWrites`) is looked at again after this, should the watch
    /// event that triggers it anyway be lost.
    pub own_write_wait_ms: u64,
}

impl Default for RetryPolicy {
    /// What the controller ships with (and the simulator therefore runs).
    fn default() -> Self {
        Self { race_retry_ms: 200, backoff_min_ms: 1_000, backoff_max_ms: 300_000, own_write_wait_ms: 250 }
    }
}

impl RetryPolicy {
    /// The backoff after `consecutive` failures of kind [`Failure::Other`] in a row (1 = the first).
    pub fn backoff_ms(&self, consecutive: u32) -> u64 {
        let doublings = consecutive.saturating_sub(1).min(32);
        self.backoff_min_ms.saturating_mul(1u64 << doublings).min(self.backoff_max_ms)
    }
}

/// Consecutive [`Failure::Other`] failures per reconcile target (`K`: the driver's key).
#[derive(Debug, Clone)]
pub struct Retries<K: Ord> {
    policy: RetryPolicy,
    failures: BTreeMap<K, u32>,
}

impl<K: Ord> Retries<K> {
    /// No failures yet.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, failures: BTreeMap::new() }
    }

    /// The policy in force.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Records a failed reconcile of `key` and returns the delay before its retry. A race
    /// neither counts nor resets: it says nothing about whether the API server is healthy.
    pub fn failed(&mut self, key: K, failure: Failure) -> u64 {
        match failure {
            Failure::Race => self.policy.race_retry_ms,
            Failure::Other => {
                let count = self.failures.entry(key).or_insert(0);
                *count = count.saturating_add(1);
                self.policy.backoff_ms(*count)
            }
        }
    }

    /// Records a reconcile of `key` that succeeded: the next failure starts from the minimum.
    pub fn succeeded(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// Forgets every count (a restart).
    pub fn clear(&mut self) {
        self.failures.clear();
    }
}

impl<K: Ord> Default for Retries<K> {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_and_caps() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = [1, 2, 3, 5, 9, 10, 64, u32::MAX].iter().map(|n| policy.backoff_ms(*n)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 16_000, 256_000, 300_000, 300_000, 300_000]);
        assert_eq!(policy.backoff_ms(0), 1_000, "no failure yet reads as the first");
    }

    #[test]
    fn races_retry_soon_and_leave_the_count_alone() {
        let mut retries = Retries::default();
        assert_eq!(retries.failed("a", Failure::Other), 1_000);
        assert_eq!(retries.failed("a", Failure::Race), 200);
        assert_eq!(retries.failed("a", Failure::Other), 2_000, "the race did not reset the backoff");
        assert_eq!(retries.failed("b", Failure::Other), 1_000, "counts are per target");
        retries.succeeded(&"a");
        assert_eq!(retries.failed("a", Failure::Other), 1_000, "a success resets");
        retries.clear();
        assert_eq!(retries.failed("b", Failure::Other), 1_000, "a restart forgets every count");
    }
}
