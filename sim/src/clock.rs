//! Virtual time and the event queue, ordered by `(time, sequence)` so that ties break by insertion.

use std::collections::{BTreeMap, VecDeque};

use model::time::Millis;

/// Virtual time zero is 2025-01-01T00:00:00Z, so object timestamps read like real ones.
pub const EPOCH_MS: u64 = 1_735_689_600_000;

/// A virtual clock with a queue of future events of type `E`. Events due at the same
/// millisecond share a FIFO bucket, which is the `(time, sequence)` order without a sequence
/// number, and inserting one moves no other event (many events share a time: the fixed latencies).
#[derive(Debug)]
pub struct Clock<E> {
    now_ms: u64,
    queue: BTreeMap<u64, VecDeque<E>>,
    len: usize,
}

impl<E> Default for Clock<E> {
    fn default() -> Self {
        Self { now_ms: 0, queue: BTreeMap::new(), len: 0 }
    }
}

impl<E> Clock<E> {
    /// Milliseconds since the start of the run.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The current instant as the model sees it (ms since the Unix epoch).
    pub fn wall(&self) -> Millis {
        Millis(EPOCH_MS + self.now_ms)
    }

    /// Schedules `event` at `at_ms` (never in the past).
    pub fn schedule_at(&mut self, at_ms: u64, event: E) {
        let at_ms = at_ms.max(self.now_ms);
        self.queue.entry(at_ms).or_default().push_back(event);
        self.len += 1;
    }

    /// Schedules `event` after `delay_ms`.
    pub fn schedule_in(&mut self, delay_ms: u64, event: E) {
        self.schedule_at(self.now_ms.saturating_add(delay_ms), event);
    }

    /// The time of the next event, if any.
    pub fn next_at_ms(&self) -> Option<u64> {
        self.queue.first_key_value().map(|(at, _)| *at)
    }

    /// Takes the next event if it is due at or before `limit_ms`, advancing the clock to it.
    pub fn pop_until(&mut self, limit_ms: u64) -> Option<E> {
        let mut first = self.queue.first_entry()?;
        let at = *first.key();
        if at > limit_ms {
            return None;
        }
        let event = first.get_mut().pop_front();
        if first.get().is_empty() {
            first.remove();
        }
        self.now_ms = at;
        self.len -= usize::from(event.is_some());
        event
    }

    /// Moves the clock forward to `to_ms` (when no event is due before it).
    pub fn advance_to(&mut self, to_ms: u64) {
        self.now_ms = self.now_ms.max(to_ms);
    }

    /// Number of queued events.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates the queued events in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &E)> {
        self.queue.iter().flat_map(|(at, events)| events.iter().map(|event| (*at, event)))
    }

    /// Drops every queued event for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        self.queue.retain(|_, events| {
            events.retain(&mut keep);
            !events.is_empty()
        });
        self.len = self.queue.values().map(VecDeque::len).sum();
    }
}

/// Formats milliseconds as `h:mm:ss.mmm`.
pub fn format_ms(ms: u64) -> String {
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    format!("{hours}:{minutes:02}:{:02}.{:03}", rest / 1000, rest % 1000)
}

/// Formats milliseconds as a short duration: `1h2m`, `2m30s`, `1.5s`, `250ms`.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let (hours, minutes, seconds, millis) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || (millis > 0 && out.is_empty()) {
        if millis > 0 && out.is_empty() && seconds == 0 {
            out.push_str(&format!("{millis}ms"));
            return out;
        }
        out.push_str(&format!("{seconds}s"));
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_insertion_order() {
        let mut clock = Clock::default();
        clock.schedule_at(5, "b");
        clock.schedule_at(5, "c");
        clock.schedule_at(1, "a");
        assert_eq!(clock.pop_until(10), Some("a"));
        assert_eq!(clock.pop_until(10), Some("b"));
        assert_eq!(clock.pop_until(4), None);
        assert_eq!(clock.pop_until(10), Some("c"));
        assert_eq!(clock.now_ms(), 5);
    }

    #[test]
    fn an_event_for_the_past_runs_now_after_those_already_due_and_retain_keeps_the_count() {
        let mut clock = Clock::default();
        clock.schedule_at(3, 1);
        clock.schedule_at(3, 2);
        clock.schedule_at(7, 5);
        assert_eq!(clock.pop_until(10), Some(1));
        clock.schedule_at(0, 3);
        clock.schedule_in(0, 4);
        assert_eq!(clock.iter().collect::<Vec<_>>(), [(3, &2), (3, &3), (3, &4), (7, &5)]);
        clock.retain(|event| event % 2 == 0);
        assert_eq!((clock.len(), clock.next_at_ms()), (2, Some(3)));
        assert_eq!(clock.pop_until(10), Some(2));
        assert_eq!(clock.pop_until(10), Some(4));
        assert_eq!(clock.now_ms(), 3, "the bucket at 3 ms is gone, the clock stays");
        clock.retain(|_| false);
        assert!(clock.is_empty() && clock.next_at_ms().is_none() && clock.pop_until(10).is_none());
    }

    #[test]
    fn formats_read_well() {
        assert_eq!(format_ms(150_250), "0:02:30.250");
        assert_eq!(format_duration(150_000), "2m30s");
        assert_eq!(format_duration(250), "250ms");
        assert_eq!(format_duration(3_600_000), "1h");
    }
}
