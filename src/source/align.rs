//! Keeps the partitions of several topics reading at about the same point in time.
//!
//! Left alone, the consumer reads each partition as fast as the broker serves it, so a topic
//! whose events are small runs ahead of one whose events are many or large: on a CDC source the
//! `orders` topic can be seconds to minutes ahead of `order_items`. An order and its items then
//! land in different batches, MongoDB shows the order without its items in between, and the
//! order's documents are written twice (once per batch). So a partition whose newest event is
//! more than `batch.align_topics_ms` (by Kafka timestamp) ahead of the furthest-behind partition
//! that still has events to read is paused until that one catches up to half the window.
//!
//! A partition assigned but not read yet counts as furthest behind: until it delivers, the
//! others wait (otherwise a topic the broker happens to serve first would be read to its end
//! before the others start). A partition only holds the others back while it is read, though:
//! one at its end (by the high watermark librdkafka last saw) or that delivered nothing for
//! [`IDLE`] since it was assigned or last read, time paused not counted (an empty or stalled
//! partition), does not count, so
//! alignment can slow reading down, by at most about a second after an assignment, but never
//! stop it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::kafka::TopicPartition;

/// A partition that has delivered nothing for this long no longer holds the others back.
pub const IDLE: Duration = Duration::from_secs(1);

struct Read {
    /// The newest Kafka timestamp read (ms).
    newest_ms: i64,
    /// The offset after the last one read.
    next_offset: i64,
    read_at: Instant,
}

/// The read positions in time of the assigned partitions, and which of them are held back.
pub struct Align {
    window_ms: i64,
    read: HashMap<TopicPartition, Read>,
    /// Assigned partitions not read yet, since when they are known.
    unread: HashMap<TopicPartition, Instant>,
    held: HashSet<TopicPartition>,
}

impl Align {
    pub fn new(window: Duration) -> Align {
        let window_ms = window.as_millis() as i64;
        Align { window_ms, read: HashMap::new(), unread: HashMap::new(), held: HashSet::new() }
    }

    /// An event of `tp` at `offset` with Kafka timestamp `ts_ms` was read at `now`.
    pub fn read(&mut self, tp: &TopicPartition, offset: i64, ts_ms: Option<i64>, now: Instant) {
        let Some(ts) = ts_ms else { return };
        self.unread.remove(tp);
        match self.read.get_mut(tp) {
            Some(r) => {
                r.newest_ms = r.newest_ms.max(ts);
                r.next_offset = offset + 1;
                r.read_at = now;
            }
            None => {
                self.read.insert(tp.clone(), Read { newest_ms: ts, next_offset: offset + 1, read_at: now });
            }
        }
    }

    /// `tp` is paused at `now` (over the in-flight budget, or held here): a paused partition
    /// delivers nothing, which is not the silence of an empty or stalled one, so its idle clock
    /// stands still until it is fetched again.
    pub fn paused(&mut self, tp: &TopicPartition, now: Instant) {
        if let Some(r) = self.read.get_mut(tp) {
            r.read_at = now;
        }
        if let Some(since) = self.unread.get_mut(tp) {
            *since = now;
        }
    }

    /// `tp` is read from elsewhere from now on (a seek, a rebalance): what was seen says nothing.
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.read.remove(tp);
        self.unread.remove(tp);
        self.held.remove(tp);
    }

    /// The partitions of `assigned` to hold back at `now`. `end` gives a partition's high
    /// watermark as last seen, if known.
    pub fn held(
        &mut self,
        assigned: &HashSet<TopicPartition>,
        now: Instant,
        end: impl Fn(&TopicPartition) -> Option<i64>,
    ) -> &HashSet<TopicPartition> {
        self.read.retain(|tp, _| assigned.contains(tp));
        self.unread.retain(|tp, _| assigned.contains(tp));
        self.held.retain(|tp| assigned.contains(tp));
        for tp in assigned.iter().filter(|tp| !self.read.contains_key(*tp)) {
            self.unread.entry(tp.clone()).or_insert(now);
        }
        let waiting_for_first =
            self.unread.iter().any(|(tp, since)| end(tp).is_none_or(|hi| hi > 0) && now.duration_since(*since) < IDLE);
        let behind = self
            .read
            .iter()
            .filter(|(tp, r)| {
                let more = end(tp).is_none_or(|hi| r.next_offset < hi);
                more && !self.held.contains(*tp) && now.duration_since(r.read_at) < IDLE
            })
            .map(|(_, r)| r.newest_ms)
            .min();
        let behind = if waiting_for_first { Some(i64::MIN) } else { behind };
        let Some(behind) = behind else {
            self.held.clear();
            return &self.held;
        };
        for (tp, r) in &self.read {
            let ahead = r.newest_ms.saturating_sub(behind);
            if self.held.contains(tp) {
                if ahead <= self.window_ms / 2 {
                    self.held.remove(tp);
                }
            } else if ahead > self.window_ms {
                self.held.insert(tp.clone());
            }
        }
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    fn one(tp: &TopicPartition) -> HashSet<TopicPartition> {
        HashSet::from([tp.clone()])
    }

    fn set(tps: &[TopicPartition]) -> HashSet<TopicPartition> {
        tps.iter().cloned().collect()
    }

    #[test]
    fn a_partition_ahead_by_more_than_the_window_waits_until_the_others_are_within_half_of_it() {
        let (orders, items) = (tp("orders", 0), tp("items", 0));
        let all = set(&[orders.clone(), items.clone()]);
        let mut a = Align::new(Duration::from_millis(1_000));
        let now = Instant::now();
        a.read(&orders, 10, Some(10_000), now);
        a.read(&items, 50, Some(9_500), now);
        assert!(a.held(&all, now, |_| None).is_empty(), "500 ms apart: within the window");
        a.read(&orders, 20, Some(10_600), now);
        assert_eq!(*a.held(&all, now, |_| None), one(&orders), "1,100 ms ahead");
        a.read(&items, 60, Some(9_900), now);
        assert_eq!(*a.held(&all, now, |_| None), one(&orders), "still 700 ms ahead: above half");
        a.read(&items, 70, Some(10_200), now);
        assert!(a.held(&all, now, |_| None).is_empty(), "400 ms ahead: read again");
    }

    #[test]
    fn partitions_at_their_end_idle_or_unassigned_hold_nobody_back() {
        let (orders, items, other) = (tp("orders", 0), tp("items", 0), tp("items", 1));
        let mut a = Align::new(Duration::from_millis(1_000));
        let t0 = Instant::now();
        a.read(&orders, 10, Some(20_000), t0);
        a.read(&items, 50, Some(1_000), t0);
        let all = set(&[orders.clone(), items.clone()]);
        assert_eq!(*a.held(&all, t0, |_| Some(100)), one(&orders), "items has 49 more to read");
        assert!(a.held(&all, t0, |_| Some(51)).is_empty(), "items read to its end");
        assert_eq!(*a.held(&all, t0, |_| None), one(&orders), "end unknown: counted as more to read");
        let later = t0 + IDLE + Duration::from_millis(1);
        assert!(a.held(&all, later, |_| None).is_empty(), "items delivered nothing for a second");
        a.read(&items, 51, Some(1_100), later);
        assert_eq!(*a.held(&all, later, |_| None), one(&orders), "items delivers again");
        // Revoked: no longer assigned, so forgotten (the newly assigned one is empty).
        let empty = other.clone();
        assert!(a.held(&set(&[orders.clone(), other]), later, |tp| (*tp == empty).then_some(0)).is_empty());
        assert!(!a.read.contains_key(&items));
        // Without a timestamp an event tells nothing.
        a.read(&items, 52, None, later);
        assert!(!a.read.contains_key(&items));
    }

    #[test]
    fn partitions_not_read_yet_hold_the_others_back_for_at_most_a_second() {
        let (orders, items) = (tp("orders", 0), tp("items", 0));
        let all = set(&[orders.clone(), items.clone()]);
        let mut a = Align::new(Duration::from_millis(1_000));
        let t0 = Instant::now();
        a.read(&orders, 10, Some(5_000), t0);
        assert_eq!(*a.held(&all, t0, |_| None), one(&orders), "items may hold older events");
        assert!(a.held(&all, t0, |tp| (tp == &items).then_some(0)).is_empty(), "items is empty");
        let later = t0 + IDLE;
        assert!(a.held(&all, later, |_| None).is_empty(), "items delivered nothing for a second");
        a.read(&items, 0, Some(4_500), later);
        assert!(a.held(&all, later, |_| None).is_empty(), "within the window");
        // A seek makes it unread again, and a fresh second starts.
        a.forget(&items);
        assert_eq!(*a.held(&all, later, |_| None), one(&orders));
    }

    #[test]
    fn time_spent_paused_is_not_silence() {
        let (orders, items) = (tp("orders", 0), tp("items", 0));
        let all = set(&[orders.clone(), items.clone()]);
        let mut a = Align::new(Duration::from_millis(1_000));
        let t0 = Instant::now();
        a.read(&orders, 10, Some(20_000), t0);
        a.read(&items, 50, Some(1_000), t0);
        // Everything sat paused over the in-flight budget for five seconds, then resumes.
        let later = t0 + 5 * IDLE;
        a.paused(&orders, later);
        a.paused(&items, later);
        assert_eq!(*a.held(&all, later, |_| None), one(&orders), "items is behind, not idle");
        assert!(a.held(&all, later + IDLE, |_| None).is_empty(), "then silent for a second while fetched");
    }
}
