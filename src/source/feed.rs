//! The consumer's poll loop, as its own task. Polling never waits for the lake: while a batch is
//! being written, heartbeats and rebalance callbacks are still served and the next batch is already
//! being fetched. Memory stays bounded: when the bytes handed over but not yet released by the
//! pipeline exceed the in-flight budget, every assigned partition is paused (the consumer keeps
//! polling, so its group membership stays alive) until the pipeline has caught up to half of it.
//! Over several topics, partitions that run ahead in time are paused too (see `align`). A
//! partition not paused here that has delivered nothing for [`NUDGE_AFTER`] is resumed again, in
//! case librdkafka left it paused: a stall that would otherwise show no error. Only this loop
//! pauses, resumes and seeks: a pause from another task while the loop waited in `recv` made
//! closing the consumer hang (librdkafka 2.12; its broker thread never ended).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::align::Align;
use super::kafka::{self, Epochs, OrderConsumer, TopicPartition};
use crate::model::RawEvent;

/// One event as read, with the partition generation it was read in (see [`Epochs`]).
pub struct Fed {
    pub event: RawEvent,
    pub epoch: u64,
    /// When the poll loop read it: a batch's `max_latency` runs from its first event's read, so
    /// events that queued while the previous batch was written do not wait a full period more.
    pub read_at: tokio::time::Instant,
}

enum Command {
    Seek { tp: TopicPartition, offset: Option<i64>, epoch: u64 },
    PauseUntracked(TopicPartition),
}

/// The pipeline's end of the feed.
pub struct Feed {
    consumer: Arc<OrderConsumer>,
    epochs: Epochs,
    events: mpsc::UnboundedReceiver<Fed>,
    commands: mpsc::UnboundedSender<Command>,
    in_flight: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Feed {
    /// Starts polling `consumer`; `budget` bounds the bytes in flight; with `align`, partitions
    /// read at most about that far apart in time.
    pub fn start(consumer: OrderConsumer, epochs: Epochs, budget: usize, align: Option<Duration>) -> Feed {
        let consumer = Arc::new(consumer);
        let (tx, events) = mpsc::unbounded_channel();
        let (commands, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let poller = Poller {
            consumer: consumer.clone(),
            epochs: epochs.clone(),
            in_flight: in_flight.clone(),
            budget,
            align: align.filter(|w| !w.is_zero()).map(Align::new),
            paused: HashSet::new(),
            quiet: HashMap::new(),
        };
        let task = tokio::spawn(poller.run(tx, rx));
        Feed { consumer, epochs, events, commands, in_flight, task }
    }

    pub fn consumer(&self) -> &OrderConsumer {
        &self.consumer
    }

    /// The next event, or `None` if none arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Fed> {
        tokio::time::timeout(wait, self.events.recv()).await.ok().flatten()
    }

    /// Repositions a partition (`None`: the beginning of what the broker retains). Events read
    /// after it carry the returned generation; those still queued from before carry an older one.
    pub fn seek(&self, tp: TopicPartition, offset: Option<i64>) -> u64 {
        let epoch = self.epochs.allocate();
        let _ = self.commands.send(Command::Seek { tp, offset, epoch });
        epoch
    }

    /// Pauses a partition without the poll loop recording it: what librdkafka does when it loses
    /// a resume. For tests of the recovery from that.
    #[doc(hidden)]
    pub fn pause_untracked(&self, tp: TopicPartition) {
        let _ = self.commands.send(Command::PauseUntracked(tp));
    }

    /// The pipeline is done with `bytes` of events (committed, or dropped as duplicates).
    pub fn release(&self, bytes: usize) {
        let _ = self.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.saturating_sub(bytes)));
    }

    /// Bytes handed over and not yet released.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops polling and leaves the group.
    pub async fn close(self) {
        drop(self.commands);
        let _ = self.task.await;
        self.consumer.unsubscribe();
        crate::metrics::global().partitions_paused(0, 0);
    }
}

struct Poller {
    consumer: Arc<OrderConsumer>,
    epochs: Epochs,
    in_flight: Arc<AtomicUsize>,
    budget: usize,
    align: Option<Align>,
    /// The partitions this poller paused, assigned or not. librdkafka keeps a partition paused
    /// through a rebalance, even one that moved to another member and came back (checked by
    /// `align::partitions_paused_through_a_rebalance_are_read_to_their_end`), so one revoked while
    /// paused is remembered here and resumed when it comes back.
    paused: HashSet<TopicPartition>,
    /// Each assigned partition not paused here: its read position, and since when it stands.
    quiet: HashMap<TopicPartition, (Offset, Instant)>,
}

/// How often the paused partitions are brought in line with the budget and the alignment.
const CHECK: Duration = Duration::from_millis(25);

/// A partition this poller has not paused that delivers nothing for this long is resumed again.
/// librdkafka can lose a resume (an assignment racing a pause and resume leaves the partition
/// paused for good, confluentinc/librdkafka#5591), and nothing else would ever notice. Resuming a
/// partition that is not paused does nothing (librdkafka 2.12 returns before touching it), so an
/// idle partition costs one call per period.
pub const NUDGE_AFTER: Duration = Duration::from_secs(10);

impl Poller {
    async fn run(mut self, tx: mpsc::UnboundedSender<Fed>, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (mut over_budget, mut checked, mut nudged) = (false, Instant::now(), Instant::now());
        // Wakes the loop when nothing arrives at all: a stalled partition may be the reason.
        let mut nudge_tick = tokio::time::interval(NUDGE_AFTER / 4);
        nudge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let held = self.in_flight.load(Ordering::SeqCst);
            let was = over_budget;
            if !over_budget && held > self.budget {
                over_budget = true;
                info!(in_flight_bytes = held, budget = self.budget, "in-flight budget reached: consumption paused");
            } else if over_budget && held <= self.budget / 2 {
                over_budget = false;
                info!(in_flight_bytes = held, "consumption resumed");
            }
            // A partition assigned since the last check starts unpaused.
            let watching = self.align.is_some() || over_budget || !self.paused.is_empty();
            // Not on every event: each pause or resume throws away what librdkafka prefetched
            // for the partition, and holding partitions at once whenever they cross the window
            // made them flap (CDC bronze ingest and the full pipeline fell by about a third).
            if was != over_budget || (watching && checked.elapsed() >= CHECK) {
                self.check(over_budget);
                checked = Instant::now();
            }
            if nudged.elapsed() >= NUDGE_AFTER / 4 {
                self.nudge();
                nudged = Instant::now();
            }
            let waiting = over_budget || !self.paused.is_empty();
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Seek { tp, offset, epoch }) => self.seek(tp, offset, epoch),
                    Some(Command::PauseUntracked(tp)) => self.set_paused(&[tp], true),
                },
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let tp = (m.topic().to_string(), m.partition());
                        let event = RawEvent {
                            topic: tp.0.clone(),
                            partition: tp.1,
                            offset: m.offset(),
                            key: m.key().map(crate::model::value_text),
                            value: m.payload().map(crate::model::value_text),
                            timestamp_ms: m.timestamp().to_millis(),
                        };
                        if let Some(a) = &mut self.align {
                            a.read(&tp, event.offset, event.timestamp_ms, Instant::now());
                        }
                        self.in_flight.fetch_add(event.size(), Ordering::SeqCst);
                        let epoch = self.epochs.get(&tp);
                        if tx.send(Fed { event, epoch, read_at: tokio::time::Instant::now() }).is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "kafka consumer error (retrying)"),
                },
                // While anything is paused, wake up to notice what changed.
                _ = tokio::time::sleep(CHECK), if waiting => {}
                _ = nudge_tick.tick() => {}
            }
        }
    }

    /// Pauses what should not be read now (everything over the budget, else the partitions
    /// ahead in time) and resumes the rest. Only changes are sent: each pause or resume drops
    /// what librdkafka prefetched for the partition.
    fn check(&mut self, over_budget: bool) {
        let Ok(assignment) = self.consumer.assignment() else { return };
        let assigned: HashSet<TopicPartition> =
            assignment.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        let (consumer, now) = (&self.consumer, Instant::now());
        if let Some(a) = &mut self.align {
            for tp in &self.paused {
                a.paused(tp, now);
            }
        }
        let want: HashSet<TopicPartition> = match (&mut self.align, over_budget) {
            (_, true) => assigned.clone(),
            (Some(a), false) => {
                a.held(&assigned, now, |tp| kafka::cached_high_watermark(consumer, &tp.0, tp.1)).clone()
            }
            (None, false) => HashSet::new(),
        };
        let pause: Vec<_> = want.difference(&self.paused).cloned().collect();
        let resume: Vec<_> =
            self.paused.iter().filter(|tp| !want.contains(*tp) && assigned.contains(*tp)).cloned().collect();
        if !over_budget && (!pause.is_empty() || !resume.is_empty()) {
            debug!(paused = ?pause, resumed = ?resume, "partitions aligned in time");
        }
        self.set_paused(&pause, true);
        self.set_paused(&resume, false);
        self.paused.extend(pause);
        for tp in &resume {
            self.paused.remove(tp);
        }
        let now_paused = self.paused.iter().filter(|tp| assigned.contains(*tp)).count();
        let (budget, aligning) = if over_budget { (now_paused, 0) } else { (0, now_paused) };
        crate::metrics::global().partitions_paused(budget, aligning);
    }

    /// Resumes the assigned partitions not paused here whose read position has not moved for
    /// [`NUDGE_AFTER`]; time paused here does not count. Positions are librdkafka's own (no broker
    /// round trip), so nothing is tracked per event.
    fn nudge(&mut self) {
        let Ok(positions) = self.consumer.position() else { return };
        let now = Instant::now();
        let mut unpaused = HashMap::new();
        for e in positions.elements() {
            let tp = (e.topic().to_string(), e.partition());
            if !self.paused.contains(&tp) {
                unpaused.insert(tp, e.offset());
            }
        }
        self.quiet.retain(|tp, _| unpaused.contains_key(tp));
        let mut stalled = Vec::new();
        for (tp, at) in unpaused {
            let (last, since) = self.quiet.entry(tp.clone()).or_insert((at, now));
            if *last != at {
                (*last, *since) = (at, now);
            } else if now.duration_since(*since) >= NUDGE_AFTER {
                *since = now;
                stalled.push(tp);
            }
        }
        if !stalled.is_empty() {
            debug!(partitions = ?stalled, "nothing read for a while: resumed in case librdkafka left them paused");
            self.set_paused(&stalled, false);
        }
    }

    fn set_paused(&self, tps: &[TopicPartition], pause: bool) {
        if tps.is_empty() {
            return;
        }
        let mut list = rdkafka::TopicPartitionList::new();
        for (t, p) in tps {
            list.add_partition(t, *p);
        }
        let r = if pause { self.consumer.pause(&list) } else { self.consumer.resume(&list) };
        if let Err(e) = r {
            warn!(error = %e, pause, "could not pause/resume partitions");
        }
    }

    /// librdkafka drops what it prefetched before the seek, so everything read after this
    /// returns starts at `offset`. The seek is asynchronous (a zero timeout): waiting for it would
    /// stall the poll loop for seconds per partition, and the version barrier librdkafka sets when
    /// the seek is issued already filters what was fetched before it.
    fn seek(&mut self, tp: TopicPartition, offset: Option<i64>, epoch: u64) {
        if let Some(a) = &mut self.align {
            a.forget(&tp);
        }
        let o = offset.map_or(Offset::Beginning, Offset::Offset);
        match self.consumer.seek(&tp.0, tp.1, o, Duration::ZERO) {
            Ok(()) => self.epochs.set(tp, epoch),
            Err(e) => {
                // Typically revoked meanwhile. A generation other than the one the pipeline asked
                // for makes it re-check the position (and seek again if still assigned) instead of
                // trusting what is read next.
                warn!(topic = %tp.0, partition = tp.1, error = %e, "seek failed; the position is checked again");
                let other = self.epochs.allocate();
                self.epochs.set(tp, other);
            }
        }
    }
}
