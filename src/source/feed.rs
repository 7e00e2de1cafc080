//! The consumer's poll loop, as its own task. Polling never waits for the lake: while a batch is
//! being written, heartbeats and rebalance callbacks are still served and the next batch is already
//! being fetched. Memory stays bounded: when the bytes handed over but not yet released by the
//! pipeline exceed the in-flight budget, every assigned partition is paused (the consumer keeps
//! polling, so its group membership stays alive) until the pipeline has caught up to half of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::kafka::{Epochs, OrderConsumer, TopicPartition};
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
    /// Starts polling `consumer`; `budget` bounds the bytes in flight.
    pub fn start(consumer: OrderConsumer, epochs: Epochs, budget: usize) -> Feed {
        let consumer = Arc::new(consumer);
        let (tx, events) = mpsc::unbounded_channel();
        let (commands, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let poller =
            Poller { consumer: consumer.clone(), epochs: epochs.clone(), in_flight: in_flight.clone(), budget };
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
    }
}

struct Poller {
    consumer: Arc<OrderConsumer>,
    epochs: Epochs,
    in_flight: Arc<AtomicUsize>,
    budget: usize,
}

impl Poller {
    async fn run(self, tx: mpsc::UnboundedSender<Fed>, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut paused = false;
        loop {
            let held = self.in_flight.load(Ordering::SeqCst);
            if !paused && held > self.budget {
                paused = true;
                info!(in_flight_bytes = held, budget = self.budget, "in-flight budget reached: consumption paused");
                self.set_paused(true);
            } else if paused && held <= self.budget / 2 {
                paused = false;
                info!(in_flight_bytes = held, "consumption resumed");
                self.set_paused(false);
            }
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Seek { tp, offset, epoch }) => self.seek(tp, offset, epoch),
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
                        self.in_flight.fetch_add(event.size(), Ordering::SeqCst);
                        let epoch = self.epochs.get(&tp);
                        if tx.send(Fed { event, epoch, read_at: tokio::time::Instant::now() }).is_err() {
                            return;
                        }
                        if paused {
                            // A partition assigned since the pause starts unpaused.
                            self.set_paused(true);
                        }
                    }
                    Err(e) => warn!(error = %e, "kafka consumer error (retrying)"),
                },
                // While paused, wake up to notice that the pipeline has released enough.
                _ = tokio::time::sleep(Duration::from_millis(50)), if paused => {}
            }
        }
    }

    fn set_paused(&self, pause: bool) {
        let Ok(assigned) = self.consumer.assignment() else { return };
        let r = if pause { self.consumer.pause(&assigned) } else { self.consumer.resume(&assigned) };
        if let Err(e) = r {
            warn!(error = %e, pause, "could not pause/resume partitions");
        }
    }

    /// librdkafka drops what it prefetched before the seek, so everything read after this
    /// returns starts at `offset`. The seek is asynchronous (a zero timeout): waiting for it would
    /// stall the poll loop for seconds per partition, and the version barrier librdkafka sets when
    /// the seek is issued already filters what was fetched before it.
    fn seek(&self, tp: TopicPartition, offset: Option<i64>, epoch: u64) {
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
