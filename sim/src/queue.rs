//! A delay queue that dedupes by item: the work queues of the controller and of the built-in controllers.

use std::collections::BTreeSet;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Why a key is queued: urgent entries keep a run from counting as converged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// A watch notification or a backoff retry.
    Urgent,
    /// A `Requeue::AfterMs` timer (periodic resync or a polite retry).
    Timer,
}

/// A delay queue that dedupes by item: each item is due once, at the earliest time asked.
/// Hashed, not ordered: it is only ever looked up by item (the clock orders the events), and a
/// hash lookup spares the string comparisons of a tree walk on every event.
#[derive(Debug, Clone)]
pub struct DelayQueue<T: Hash + Eq + Clone> {
    due: FxHashMap<T, (u64, u64, Due)>,
    next_token: u64,
    urgent: usize,
    /// Later times asked (by [`Self::add_after_cache`]) for an item already due earlier.
    followups: FxHashMap<T, BTreeSet<u64>>,
}

impl<T: Hash + Eq + Clone> Default for DelayQueue<T> {
    fn default() -> Self {
        Self { due: FxHashMap::default(), next_token: 0, urgent: 0, followups: FxHashMap::default() }
    }
}

impl<T: Hash + Eq + Clone> DelayQueue<T> {
    /// Asks for `item` at `at_ms`. Returns the token of a new event to schedule, or None when the
    /// item is already due no later.
    pub fn add(&mut self, item: &T, at_ms: u64) -> Option<u64> {
        self.add_why(item, at_ms, Due::Urgent)
    }

    /// Like [`Self::add`], saying why. The item is copied only when it is not queued yet.
    pub fn add_why(&mut self, item: &T, at_ms: u64, why: Due) -> Option<u64> {
        match self.due.get_mut(item) {
            Some((due, current, reason)) => {
                if why == Due::Urgent && *reason != Due::Urgent {
                    *reason = Due::Urgent;
                    self.urgent += 1;
                }
                if *due <= at_ms {
                    return None;
                }
                // Due earlier now: a new event replaces the queued one (urgent stays urgent).
                self.next_token += 1;
                (*due, *current) = (at_ms, self.next_token);
            }
            None => {
                self.next_token += 1;
                self.due.insert(item.clone(), (at_ms, self.next_token, why));
                if why == Due::Urgent {
                    self.urgent += 1;
                }
            }
        }
        Some(self.next_token)
    }

    /// Like [`Self::add`] for a watch event that reaches the lagging cache only at `at_ms`: an
    /// earlier queued run of `item` reads the cache before it, so `item` is due again at `at_ms`
    /// (see [`Self::take_followup`]); a real informer enqueues only once its cache has the change.
    pub fn add_after_cache(&mut self, item: &T, at_ms: u64) -> Option<u64> {
        if let Some((due, _, _)) = self.due.get(item)
            && *due < at_ms
        {
            match self.followups.get_mut(item) {
                Some(times) => {
                    times.insert(at_ms);
                }
                None => {
                    self.followups.insert(item.clone(), BTreeSet::from([at_ms]));
                }
            }
        }
        self.add(item, at_ms)
    }

    /// After a run of `item` that read the cache at `ran_at_ms`: the next time it is due again
    /// for a change the cache had not yet seen, if any. Each such time gets a run of its own, as
    /// each change enqueues its key once the informer's cache holds it; the later ones wait for
    /// the runs before them.
    pub fn take_followup(&mut self, item: &T, ran_at_ms: u64) -> Option<u64> {
        let times = self.followups.get_mut(item)?;
        let next = times.iter().copied().find(|at| *at > ran_at_ms);
        match next {
            Some(next) => {
                // Times the run saw, and the one taken now, are done.
                *times = times.split_off(&(next + 1));
                if times.is_empty() {
                    self.followups.remove(item);
                }
            }
            None => {
                self.followups.remove(item);
            }
        }
        next
    }

    /// True when the event with `token` is the current one for `item` (and takes the item).
    pub fn take(&mut self, item: &T, token: u64) -> bool {
        // One lookup on the usual path: most events are current; a stale one goes back.
        match self.due.remove_entry(item) {
            Some((_, (_, current, why))) if current == token => {
                if why == Due::Urgent {
                    self.urgent -= 1;
                }
                true
            }
            Some((item, due)) => {
                self.due.insert(item, due);
                false
            }
            None => false,
        }
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// True when `item` is queued.
    pub fn is_queued(&self, item: &T) -> bool {
        self.due.contains_key(item)
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// True when an urgent item is queued.
    pub fn has_urgent(&self) -> bool {
        self.urgent > 0
    }

    /// Forgets `item` (its queued event, when it comes, is stale). True when it was queued.
    pub fn cancel(&mut self, item: &T) -> bool {
        self.followups.remove(item);
        match self.due.remove(item) {
            Some((_, _, why)) => {
                if why == Due::Urgent {
                    self.urgent -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.due.clear();
        self.followups.clear();
        self.urgent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_item_is_not_due_and_its_event_is_stale() {
        let mut queue: DelayQueue<&str> = DelayQueue::default();
        let token = queue.add(&"recover", 5_000).expect("queued");
        assert!(queue.has_urgent());
        assert!(queue.cancel(&"recover"));
        assert!(queue.is_empty() && !queue.has_urgent());
        assert!(!queue.take(&"recover", token), "the cancelled event does not run");
        assert!(!queue.cancel(&"recover"));
    }

    #[test]
    fn an_item_is_due_once_at_the_earliest_time_asked() {
        let mut queue = DelayQueue::default();
        let first = queue.add(&"a", 100).expect("new");
        assert_eq!(queue.add(&"a", 150), None, "already due sooner");
        let sooner = queue.add(&"a", 50).expect("due sooner: a new event");
        assert_ne!(first, sooner);
        assert!(!queue.take(&"a", first), "the replaced event is stale");
        assert!(queue.is_queued(&"a"), "a stale event leaves the item queued");
        assert!(queue.take(&"a", sooner));
        assert!(queue.is_empty());
        assert!(!queue.take(&"a", sooner), "taken once");
    }

    #[test]
    fn urgency_is_counted_once_and_sticks_until_taken() {
        let mut queue = DelayQueue::default();
        let timer = queue.add_why(&"a", 100, Due::Timer).expect("new");
        assert!(!queue.has_urgent(), "a timer is not urgent");
        assert_eq!(queue.add(&"a", 200), None);
        assert!(queue.has_urgent(), "a later watch event makes it urgent");
        let sooner = queue.add_why(&"a", 50, Due::Timer).expect("sooner");
        assert!(queue.has_urgent(), "an earlier timer keeps it urgent");
        let other = queue.add(&"b", 10).expect("new");
        assert!(!queue.take(&"a", timer));
        assert!(queue.take(&"a", sooner));
        assert!(queue.has_urgent(), "b is still urgent");
        assert!(queue.take(&"b", other));
        assert!(!queue.has_urgent() && queue.is_empty());
    }

    #[test]
    fn a_change_the_cache_has_not_seen_yet_asks_for_a_followup() {
        let mut queue = DelayQueue::default();
        queue.add(&"a", 100).expect("new");
        assert_eq!(queue.add_after_cache(&"a", 300), None, "due sooner already");
        assert_eq!(queue.add_after_cache(&"a", 250), None);
        assert_eq!(queue.add_after_cache(&"a", 120), None);
        // The run at 100 did not see any of them; one at 130 would have seen the change of 120.
        assert_eq!(queue.take_followup(&"a", 130), Some(250), "the earliest time the cache needs");
        assert_eq!(queue.take_followup(&"a", 250), Some(300), "then the next");
        assert_eq!(queue.take_followup(&"a", 300), None);
        queue.clear();
        assert!(queue.is_empty() && !queue.has_urgent());
    }
}
