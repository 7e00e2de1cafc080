//! One batch's MongoDB publish, in the background while the lake works on the next batch: the
//! order documents first (what real-time readers poll), then the aggregates once the batch's
//! tail hands them over, then MongoDB's position. Publishes go out one after another, so while
//! MongoDB is the bottleneck the next batch is already waiting when a publish reaches its
//! aggregates. Those then wait too, for up to `mongodb.aggregates_lag_ms`, and go out with a later
//! batch's: a customer or a day that both batches touched is written once instead of twice, and
//! the next batch's order documents go out that much sooner.
//!
//! MongoDB's stored position moves only once everything up to it is in, carried aggregates
//! included. A crash loses only what is in memory and the next start republishes from bronze.
//! A publish that fails puts the in-memory position back to the stored one (`InFlight::back_to`),
//! so the catch-up covers the carried batches too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::pace::Watch;
use super::progress::{InFlight, Progress};
use crate::error::{Error, Result};
use crate::gold::{self, AggregateFrames, OrderFrames, republish::Walks, whole_orders::WholeOrders};
use crate::sink::mongo::{MongoSink, PublishStats};
use crate::sink::queue::Turn;

/// Aggregates of batches MongoDB has the order documents of but not yet these (oldest first,
/// each without the keys a later one holds).
pub struct Carried {
    frames: Vec<AggregateFrames>,
    /// When the oldest of them was ready to go out.
    since: Instant,
    /// The batches they belong to, for the log.
    batches: usize,
}

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carried").field("batches", &self.batches).finish_non_exhaustive()
    }
}

/// What a finished publish leaves behind.
#[derive(Default)]
pub struct Published {
    pub stats: Option<PublishStats>,
    /// Aggregates left for the next publish; MongoDB's stored position has not moved.
    pub carried: Option<Carried>,
    /// Its orders, and the time from its handover (its turn included) until their documents
    /// were in.
    pub orders_took: (usize, Duration),
}

/// One batch's publish, ready to run.
pub struct Publish {
    pub mongo: Arc<MongoSink>,
    pub walks: Arc<Walks>,
    pub topic: String,
    pub fail_at: Option<String>,
    /// The bronze version MongoDB stands at once this publish is in.
    pub upto: i64,
    pub orders: Option<OrderFrames>,
    pub whole_orders: Option<Arc<WholeOrders>>,
    /// The batch's aggregates, from its tail (dropped unsent when the tail fails).
    pub aggregates: oneshot::Receiver<Option<AggregateFrames>>,
    /// What the previous publish left (see [`Carried`]).
    pub carried: Option<Carried>,
    /// `mongodb.aggregates_lag_ms`.
    pub lag: Duration,
}

impl Publish {
    /// Starts the publish behind every one queued before it. `back_to` is MongoDB's stored
    /// position, where the in-memory one goes back to if this publish is lost.
    pub fn spawn(self, back_to: i64) -> InFlight {
        let next_waiting = Arc::new(AtomicBool::new(false));
        let upto = self.upto;
        // Its place in line is taken now, in the order batches hand their publishes over.
        // Frames without the `order_id` column cannot be told apart: no publish leaves them out.
        let ids = self.orders.as_ref().and_then(|o| o.order_ids().ok()).unwrap_or_default();
        let turn = self.mongo.queue(ids);
        let gate = turn.gate();
        let orders = self.orders.as_ref().map_or(0, |o| o.order_totals.height() + o.deleted_orders.len());
        let watch = Watch::new(orders);
        let task = tokio::spawn(self.run(turn, Arc::clone(&next_waiting), Arc::clone(&watch)));
        InFlight { upto, task, next_waiting, back_to, handed_over: Instant::now(), watch, gate }
    }

    async fn run(self, mut turn: Turn, next_waiting: Arc<AtomicBool>, watch: Arc<Watch>) -> Result<Published> {
        let Publish { mongo: m, walks, topic, fail_at, upto, orders, whole_orders, aggregates, carried, lag } = self;
        let (fail_at, handed_over) = (fail_at.as_deref(), Instant::now());
        // After every publish queued before it, of any topic (see `Turn`).
        turn.wait().await;
        let orders = match orders {
            Some(o) => {
                let (o, left_out) = o.without_orders(&turn.written_later())?;
                if left_out > 0 {
                    crate::metrics::global().orders_left_to_later(&topic, left_out as u64);
                    tracing::debug!(topic, left_out, "orders left to a publish queued behind this one");
                }
                Some(o)
            }
            None => None,
        };
        let (mut stats, t0) = (None, Instant::now());
        if let Some(o) = &orders {
            stats = Some(m.publish_orders(o, fail_at).await?);
        }
        if crate::config::fault_is(fail_at, "slow-order-docs") {
            // Test-only: every publish's order documents take 1.5 s longer, as on a busy MongoDB.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
        watch.orders_sent.store(true, Relaxed);
        let orders_took = (watch.orders, handed_over.elapsed());
        if let Some(w) = &whole_orders {
            *stats.get_or_insert_default() += publish_whole_orders(&m, w, &topic, fail_at).await?;
            walks.heard(&w.at, w.version());
        }
        let orders_ms = t0.elapsed().as_millis() as u64;
        if crate::config::fault_is(fail_at, "slow-order-publish") {
            // Test-only: as a slow MongoDB would, keep the next batch waiting (within reason).
            let until = Instant::now() + Duration::from_secs(10);
            while !next_waiting.load(Relaxed) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if carried.is_some()
            && crate::config::fault_is(fail_at, "carrying-publish-transient-once")
            && !FAILED_ONCE.swap(true, Relaxed)
        {
            // As MongoDB going away would: transient, so publishing backs off and catches up.
            return Err(Error::Other("injected transient failure of a publish carrying aggregates".into()));
        }
        // A tail that fails before handing its aggregates over drops this publish;
        // MongoDB stays behind and a later catch-up republishes from bronze.
        let aggregates = aggregates.await.map_err(|_| Error::Abandoned)?;
        let waited_ms = t0.elapsed().as_millis() as u64 - orders_ms;

        let carry = carried.as_ref().is_none_or(|c| c.since.elapsed() < lag)
            && !lag.is_zero()
            && next_waiting.load(Relaxed)
            && !aggregates.as_ref().is_some_and(AggregateFrames::is_whole);
        let mut pending = carried;
        if let Some(a) = aggregates {
            pending = Some(add(pending, a)?);
        }
        if carry && let Some(c) = pending {
            crate::metrics::global().aggregates_carried(&topic);
            tracing::debug!(
                bronze_version = upto,
                batches = c.batches,
                orders_ms,
                "aggregates carried to the next publish"
            );
            crate::config::fault_point(fail_at, "after-aggregates-carried")?;
            return Ok(Published { stats, carried: Some(c), orders_took });
        }
        if let Some(c) = pending {
            for a in &c.frames {
                *stats.get_or_insert_default() += m.publish_aggregates(a).await?;
                heard_whole(&walks, &topic, a);
            }
        }
        crate::config::fault_point(fail_at, "before-mongo-progress")?;
        m.set_progress(&topic, upto).await?;
        tracing::debug!(
            bronze_version = upto,
            orders_ms,
            waited_ms,
            total_ms = t0.elapsed().as_millis() as u64,
            "MongoDB publish (ms)"
        );
        Ok(Published { stats, carried: None, orders_took })
    }
}

/// `carried` with a later batch's aggregates: the earlier frames lose the keys `newer` holds.
fn add(carried: Option<Carried>, newer: AggregateFrames) -> Result<Carried> {
    let mut c = carried.unwrap_or_else(|| Carried { frames: Vec::new(), since: Instant::now(), batches: 0 });
    let mut kept = Vec::with_capacity(c.frames.len() + 1);
    for f in &c.frames {
        let left = f.without_keys_of(&newer)?;
        if !left.is_empty() {
            kept.push(left);
        }
    }
    kept.push(newer);
    c.frames = kept;
    c.batches += 1;
    Ok(c)
}

/// `carrying-publish-transient-once` (test-only) has failed its one publish.
static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

/// Sends every order ([`gold::whole_orders`]) a slice at a time, then deletes the documents of
/// orders it did not send. Killed halfway, MongoDB's position has not moved: the rerun's catch-up
/// finds the log as short as before and starts again.
async fn publish_whole_orders(
    m: &MongoSink,
    w: &WholeOrders,
    topic: &str,
    fail_at: Option<&str>,
) -> Result<PublishStats> {
    let (slices, version) = (w.slices(gold::whole_orders::SLICE).await?, w.version());
    let orders: usize = slices.iter().map(Vec::len).sum();
    let mut st = PublishStats::default();
    let mut sent = 0;
    for ids in &slices {
        st += m.publish_orders(&w.frames(ids).await?, None).await?;
        sent += ids.len();
        info!(topic, sent, orders, order_totals_version = version, "MongoDB: order documents republished");
        crate::config::fault_point(fail_at, "mid-whole-orders")?;
    }
    let swept = m.sweep_orders(version).await?;
    st += swept;
    for coll in ["order_totals", "orders"] {
        crate::metrics::global().whole_publish(topic, coll);
    }
    info!(topic, orders, deleted = swept.deleted, "MongoDB: every order document republished");
    Ok(st)
}

/// Tells the walks of the whole tables MongoDB now holds, so the next publishes of the topic need
/// not send them whole again.
fn heard_whole(walks: &Walks, topic: &str, a: &AggregateFrames) {
    for (coll, whole, version) in
        [("customer_totals", &a.customers_whole, a.customers_version), ("daily_sales", &a.days_whole, a.days_version)]
    {
        if let Some(w) = whole {
            walks.heard(w, version);
            crate::metrics::global().whole_publish(topic, coll);
        }
    }
}

/// Waits for (or, without `wait`, only collects a finished) MongoDB publish in flight and records
/// its outcome: MongoDB's position moves on success (in memory only, while it left aggregates to
/// carry); a transient failure puts publishing into backoff while the lake goes on (a later
/// catch-up republishes from bronze); anything else fails the batch. Returns the publish's
/// figures when one was settled.
pub async fn settle(topic: &str, p: &mut Progress, max_backoff: Duration, wait: bool) -> Result<Option<PublishStats>> {
    let Some(f) = p.publishing.take_if(|f| wait || f.task.is_finished()) else { return Ok(None) };
    if let Some(gate) = &f.gate {
        // Held back by the batch that is waiting for it here (a topic catching up in steps).
        gate.open();
    }
    let outcome = match f.task.await {
        Ok(outcome) => outcome,
        Err(e) => {
            p.publish_lost(f.back_to);
            return Err(Error::Other(format!("MongoDB publish task: {e}")));
        }
    };
    match outcome {
        Ok(published) => {
            if p.mongo_retry.take().is_some() {
                info!(topic, bronze_version = f.upto, "MongoDB reachable again: publishing caught up");
            }
            p.mongo = Some(p.mongo.map_or(f.upto, |m| m.max(f.upto)));
            p.carried = published.carried.map(|c| (c, f.back_to));
            p.pace.orders_took(published.orders_took.0, published.orders_took.1);
            Ok(published.stats)
        }
        Err(e) => {
            p.publish_lost(f.back_to);
            match e {
                // Its batch failed before the aggregates were in: MongoDB simply stays where it is.
                Error::Abandoned => Ok(None),
                e if !e.is_transient() => Err(e),
                e => {
                    let wait = p.mongo_retry.map_or(Duration::from_secs(1), |(_, w)| (w * 2).min(max_backoff));
                    p.mongo_retry = Some((Instant::now() + wait, wait));
                    warn!(topic, error = %crate::redact::redact(&e.to_string()), retry_in_ms = wait.as_millis() as u64,
                        published_up_to = ?p.mongo, "MongoDB unavailable: the lake goes on, publishing will catch up (degraded)");
                    Ok(None)
                }
            }
        }
    }
}
