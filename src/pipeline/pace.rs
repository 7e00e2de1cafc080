//! When to cut a batch that falls due while MongoDB is still writing the previous one.
//!
//! A batch's publish cannot start before the previous publish is done (publishes stay in order).
//! Cut at its deadline, a batch would write the lake and then wait for MongoDB, while the events
//! arriving meanwhile wait for the batch after it, a whole publish later. Held instead until its
//! lake work (bronze, silver, order gold) would end as the publish in flight's order documents
//! are in, the batch takes those events in and MongoDB gets every event sooner, at the same
//! cadence and the same work.
//! The lake commits later by as much: that is the trade, bounded by `mongodb.hold_batches_ms`.
//!
//! The estimate is the publish's order documents (what it starts with, and what the next publish
//! cannot overtake) at this topic's recent cost per order, less the lake work's recent time. The
//! hold ends as soon as the publish has sent its order documents (what is left of it, the
//! aggregates and the progress document, then overlaps the lake work) or has ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::progress::Progress;

/// Weight of the newest timing in the running averages, in tenths.
const NEWEST: u32 = 3;
/// Cut this much before the estimated end, so MongoDB does not sit idle for an estimate's error.
const MARGIN: Duration = Duration::from_millis(100);
/// A timing longer than this (a retry, a stall) says nothing about the next batch.
const LONGEST: Duration = Duration::from_secs(10);
/// Publishes of fewer orders than this are too short to time the cost per order by.
const FEWEST_ORDERS: usize = 50;

/// What the batch loop sees of a publish in flight.
#[derive(Debug, Default)]
pub struct Watch {
    /// The order documents it writes first (`order_totals` and `orders` per order).
    pub orders: usize,
    /// Set once they are written.
    pub orders_sent: AtomicBool,
}

impl Watch {
    pub fn new(orders: usize) -> Arc<Watch> {
        Arc::new(Watch { orders, orders_sent: AtomicBool::new(false) })
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Pace {
    /// From a batch's cut until its publish is ready to go.
    lake: Option<Duration>,
    /// From a publish's handover until its order documents are written, per order.
    per_order: Option<Duration>,
}

fn average(avg: &mut Option<Duration>, took: Duration) {
    *avg = Some(match *avg {
        None => took,
        Some(a) => a * (10 - NEWEST) / 10 + took * NEWEST / 10,
    });
}

fn times(d: Duration, n: usize) -> Duration {
    d.saturating_mul(n.min(u32::MAX as usize) as u32)
}

impl Pace {
    pub fn lake_took(&mut self, took: Duration) {
        average(&mut self.lake, took.min(LONGEST));
    }

    /// A publish took `took` from its handover to writing the documents of `orders` orders.
    pub fn orders_took(&mut self, orders: usize, took: Duration) {
        if orders >= FEWEST_ORDERS {
            average(&mut self.per_order, took.min(LONGEST) / orders as u32);
        }
    }

    /// When a due batch should be cut, given a publish of `orders` orders was handed over at
    /// `started`: so that its lake work ends just before that publish's order documents are in.
    /// `None` until both timings are known.
    pub fn cut_at(&self, started: Instant, orders: usize) -> Option<Instant> {
        let (lake, per_order) = (self.lake?, self.per_order?);
        Some(started + times(per_order, orders).saturating_sub(lake + MARGIN))
    }
}

/// When a batch of these topics due at `deadline` is cut: held for their publishes in flight, by
/// at most `max`.
pub fn cut_time<'a>(deadline: Instant, max: Duration, topics: impl Iterator<Item = &'a Progress>) -> Instant {
    if max.is_zero() {
        return deadline;
    }
    let hold = topics.filter_map(hold_until).max();
    hold.map_or(deadline, |h| h.max(deadline).min(deadline + max))
}

/// Until when a due batch of this topic should wait for the publish in flight, if one is
/// still running.
fn hold_until(p: &Progress) -> Option<Instant> {
    let f = p.publishing.as_ref().filter(|f| !f.task.is_finished() && !f.watch.orders_sent.load(Relaxed))?;
    p.pace.cut_at(f.handed_over, f.watch.orders)
}

/// A batch of this topic was cut after waiting for the publish in flight: MongoDB is the
/// bottleneck, and that publish's aggregates may ride with this batch's (`super::publish`).
pub fn next_on_its_way(p: &Progress) {
    if let Some(f) = p.publishing.as_ref().filter(|_| p.mongo.is_some() && p.mongo_due()) {
        f.next_waiting.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_batch_is_cut_so_its_lake_work_ends_as_the_order_documents_are_in() {
        let mut p = Pace::default();
        let t0 = Instant::now();
        assert_eq!(p.cut_at(t0, 1_000), None, "nothing known: no hold");
        p.lake_took(ms(400));
        assert_eq!(p.cut_at(t0, 1_000), None);
        p.orders_took(2_000, ms(2_000));
        // 1 ms per order: 1,000 orders take 1,000 ms, less 400 ms lake and 100 ms margin.
        assert_eq!(p.cut_at(t0, 1_000), Some(t0 + ms(500)));
        // A bigger publish holds longer; one quicker than the lake work not at all.
        assert_eq!(p.cut_at(t0, 3_000), Some(t0 + ms(2_500)));
        assert_eq!(p.cut_at(t0, 300), Some(t0));
    }

    #[test]
    fn the_cost_per_order_follows_recent_publishes_of_enough_orders() {
        let mut p = Pace::default();
        p.lake_took(ms(0));
        p.orders_took(1_000, ms(1_000));
        p.orders_took(1_000, ms(2_000));
        // Too few orders to tell: ignored.
        p.orders_took(10, ms(5_000));
        let t0 = Instant::now();
        // 0.7 * 1 + 0.3 * 2 = 1.3 ms per order, less the margin.
        assert_eq!(p.cut_at(t0, 1_000), Some(t0 + ms(1_200)));
        // A stall counts as 10 s: 0.7 * 1.3 + 0.3 * 10 = 3.91 ms per order.
        p.orders_took(1_000, Duration::from_secs(600));
        assert_eq!(p.cut_at(t0, 1_000), Some(t0 + ms(3_810)));
    }

    fn publishing(pace: Pace, handed_over: Instant, orders: usize, runs_for: Duration) -> Progress {
        let task = tokio::spawn(async move {
            tokio::time::sleep(runs_for).await;
            Ok(super::super::publish::Published::default())
        });
        let (next_waiting, watch) = (Arc::new(AtomicBool::new(false)), Watch::new(orders));
        let publishing = Some(super::super::progress::InFlight {
            upto: 2,
            task,
            next_waiting,
            back_to: 1,
            handed_over,
            watch,
            gate: None,
        });
        Progress { pace, publishing, mongo: Some(1), ..Progress::default() }
    }

    #[tokio::test]
    async fn a_due_batch_waits_for_the_order_documents_in_flight_within_the_cap() {
        let mut pace = Pace::default();
        pace.lake_took(ms(300));
        pace.orders_took(1_000, ms(1_000));
        let t0 = Instant::now();
        let deadline = t0 + ms(200);
        let busy = publishing(pace, t0, 1_400, Duration::from_secs(60));
        // Cut at 1,400 - 300 - 100 ms after the handover, past the deadline.
        assert_eq!(cut_time(deadline, Duration::from_secs(2), [&busy].into_iter()), t0 + ms(1_000));
        // Never longer than the cap after the deadline.
        assert_eq!(cut_time(deadline, ms(500), [&busy].into_iter()), deadline + ms(500));
        // 0 turns holding off; no topic with a publish in flight: the deadline.
        assert_eq!(cut_time(deadline, Duration::ZERO, [&busy].into_iter()), deadline);
        let idle = Progress { pace, ..Progress::default() };
        assert_eq!(cut_time(deadline, Duration::from_secs(2), [&idle].into_iter()), deadline);
        // A deadline later than the estimate stands.
        assert_eq!(cut_time(t0 + ms(1_500), Duration::from_secs(2), [&busy].into_iter()), t0 + ms(1_500));

        // Held: the publish in flight is told the next batch is coming.
        next_on_its_way(&busy);
        assert!(busy.publishing.as_ref().unwrap().next_waiting.load(Relaxed));
        // Its order documents in, the rest of the publish overlaps the lake work: no more hold.
        busy.publishing.as_ref().unwrap().watch.orders_sent.store(true, Relaxed);
        assert_eq!(cut_time(deadline, Duration::from_secs(2), [&busy].into_iter()), deadline);

        // A publish done sooner than estimated ends the hold.
        let quick = publishing(pace, t0, 1_400, ms(1));
        tokio::time::sleep(ms(50)).await;
        assert_eq!(cut_time(deadline, Duration::from_secs(2), [&quick].into_iter()), deadline);
    }
}
