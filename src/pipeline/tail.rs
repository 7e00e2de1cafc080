//! The end of a batch that runs while the next one starts: the aggregates (`customer_totals`,
//! `daily_sales`, `product_sales`) and then the batch log. They are a third of a small batch's
//! time, and nothing the next batch's bronze and silver writes depend on them, so the consume
//! loop cuts and writes batch N+1 meanwhile. N+1's gold waits for them: its `expand` reads
//! `product_sales`, and the aggregates move by the difference against the order tables as N left
//! them.
//!
//! Product names are the one silver input of the aggregates. They are read from silver
//! `products` as N's silver write left it (a snapshot taken before the tail starts), never as
//! N+1 may have changed it since, so `product_sales` names products as N's order lines do: that
//! is how N+1's `expand` finds lines a rename left stale.
//!
//! [`Progress`] counts a tail as done from its start, so the next batch plans from there. A tail
//! that fails fails whoever settles it; the retry re-reads every marker from the tables, and the
//! batch's MongoDB publish, which was waiting for the aggregates, is dropped (MongoDB stays behind
//! and catches up from bronze).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use tokio::sync::oneshot;

use super::progress::{self, Progress};
use crate::error::{Error, Result};
use crate::gold::{self, AggregateFrames, GoldCommit, OrderGold};
use crate::lake::rows::{batch, long_col, str_col, ts_col};
use crate::lake::{Lake, commit_with, schema};

/// A tail running in the background.
pub struct InFlightTail {
    /// The bronze version every lake layer stands at once it succeeds.
    pub upto: i64,
    pub task: tokio::task::JoinHandle<Result<()>>,
    /// What the markers it moved ahead said before: they go back there if it fails.
    before: Vec<(String, i64)>,
    lake_done_before: i64,
}

impl std::fmt::Debug for InFlightTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightTail").field("upto", &self.upto).finish_non_exhaustive()
    }
}

/// The batch log row of a batch.
pub struct LogRow {
    pub events: i64,
    pub dead_letters: i64,
    /// Events this process decoded into every layer for the first time: counted in the metrics
    /// once the row is written, so a batch retried after a failure is not counted twice.
    pub decoded: u64,
}

/// Everything a tail needs, owned: it outlives the call that started it.
pub struct Tail {
    pub lake: Lake,
    pub group: String,
    pub topic: String,
    pub gold_prefix: String,
    pub fail_at: Option<String>,
    /// The bronze version being applied, and the batch's clock.
    pub upto: i64,
    pub now_us: i64,
    /// The order tables the batch wrote (`None`: it touched no order).
    pub order_gold: Option<OrderGold>,
    /// Silver `products` as the batch left it.
    pub products: Option<DeltaTable>,
    /// Effective applied version per gold table when the batch started.
    pub applied: HashMap<String, i64>,
    /// See [`GoldCommit::publish_after`].
    pub publish_after: Option<i64>,
    /// `None` when the batch log holds this version already.
    pub log: Option<LogRow>,
    /// Where the aggregates go for MongoDB (a closed receiver: not publishing this batch).
    pub to_mongo: oneshot::Sender<Option<AggregateFrames>>,
    /// Shared by the run's batches (see [`gold::republish::Walks`]).
    pub walks: std::sync::Arc<gold::republish::Walks>,
}

impl Tail {
    /// Starts the tail and records it in `p`, marking every lake layer done up to its version.
    pub fn spawn(self, p: &mut Progress) {
        let upto = self.upto;
        let before = gold::TABLES
            .iter()
            .filter(|(n, _)| !gold::ORDER_TABLES.contains(n))
            .map(|(n, _)| {
                let stage = format!("gold/{n}");
                let v = p.get(&stage);
                (stage, v)
            })
            .collect();
        let lake_done_before = p.lake_done;
        p.tail = Some(InFlightTail { upto, task: tokio::spawn(self.run()), before, lake_done_before });
        p.mark_lake_done(upto);
    }

    async fn run(self) -> Result<()> {
        let started = Instant::now();
        if crate::config::fault_is(self.fail_at.as_deref(), "slow-aggregates") {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        // A crash after the order tables, before the aggregates: the rerun must rebuild them.
        crate::config::fault_point(self.fail_at.as_deref(), "before-aggregates")?;
        let app_id = gold::app_id(&self.group, &self.topic);
        let commit = GoldCommit {
            app_id: &app_id,
            version: self.upto,
            applied: &self.applied,
            publish_after: self.publish_after,
            walks: &self.walks,
        };
        let aggregates = match self.order_gold {
            Some(og) => Some(
                gold::rollup::aggregates(
                    &self.lake,
                    self.products.as_ref(),
                    &self.gold_prefix,
                    og,
                    &commit,
                    self.now_us,
                )
                .await?,
            ),
            None => None,
        };
        // The crash point sits before the hand-over, so a publish never outlives a failed batch.
        crate::config::fault_point(self.fail_at.as_deref(), "after-gold")?;
        if crate::config::fault_is(self.fail_at.as_deref(), "aggregates-transient-once")
            && !FAILED_ONCE.swap(true, Relaxed)
        {
            // As a storage error would after the aggregates' commits: retried, never fatal.
            return Err(Error::Other("injected transient failure after the aggregates".into()));
        }
        let _ = self.to_mongo.send(aggregates);
        let aggregates_ms = started.elapsed().as_millis() as u64;
        if let Some(row) = &self.log
            && write_log(&self.lake, &self.group, &self.topic, self.upto, row, self.now_us).await?
        {
            crate::metrics::global().decoded(row.decoded);
        }
        tracing::debug!(
            topic = %self.topic,
            bronze_version = self.upto,
            aggregates_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "aggregates and batch log committed (ms)"
        );
        Ok(())
    }
}

/// `aggregates-transient-once` (test-only) has failed its one tail.
static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

/// Appends the batch's row to the batch log, whose marker says every lake layer has the version;
/// false when the log had it already.
async fn write_log(lake: &Lake, group: &str, topic: &str, upto: i64, row: &LogRow, now_us: i64) -> Result<bool> {
    let t = lake.open_or_create(progress::batches_table(), &schema::BATCH_LOG).await?;
    let app_id = progress::batches_app_id(group, topic);
    if lake.has_applied(&t, &app_id, upto).await? {
        return Ok(false);
    }
    let b = batch(
        &schema::BATCH_LOG,
        vec![
            str_col([Some(topic)]),
            long_col([Some(upto)]),
            long_col([Some(row.events)]),
            long_col([Some(row.dead_letters)]),
            ts_col([Some(now_us)]),
        ],
    )?;
    let props = commit_with(vec![Transaction::new(app_id, upto)]);
    let t = t.write(vec![b]).with_save_mode(SaveMode::Append).with_commit_properties(props).await?;
    lake.keep(progress::batches_table(), &t);
    Ok(true)
}

/// Waits for (or, without `wait`, only collects a finished) tail. When it failed, the markers
/// it moved go back to where they were, so the next batch (or catch-up) applies its version again.
pub async fn settle(p: &mut Progress, wait: bool) -> Result<()> {
    let Some(t) = p.tail.take_if(|t| wait || t.task.is_finished()) else { return Ok(()) };
    let outcome = match t.task.await {
        Ok(r) => r,
        Err(e) => Err(Error::Other(format!("aggregates task: {e}"))),
    };
    if outcome.is_err() {
        for (stage, v) in t.before {
            let m = p.lake.entry(stage).or_insert(v);
            *m = (*m).min(v);
        }
        p.lake_done = p.lake_done.min(t.lake_done_before);
        // Its publish waits for aggregates that will never come.
        if let Some(f) = p.publishing.take_if(|f| f.upto == t.upto) {
            f.task.abort();
            p.publish_lost(f.back_to);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::pipeline::progress::InFlight;

    #[tokio::test]
    async fn a_failed_tail_drops_its_publish_and_mongodb_goes_back_to_its_stored_position() {
        // MongoDB stores 3; in memory it stands at 5, whose aggregates the publish of 6 carries.
        let mut p = Progress { mongo: Some(5), lake_done: 6, ..Default::default() };
        p.lake.insert("gold/customer_totals".into(), 6);
        let publish = tokio::spawn(std::future::pending());
        p.publishing = Some(InFlight {
            upto: 6,
            task: publish,
            next_waiting: Arc::new(AtomicBool::new(true)),
            back_to: 3,
            handed_over: std::time::Instant::now(),
            watch: Default::default(),
            gate: None,
        });
        let failed = tokio::spawn(async { Err(Error::Other("storage went away".into())) });
        let before = vec![("gold/customer_totals".to_string(), 5)];
        p.tail = Some(InFlightTail { upto: 6, task: failed, before, lake_done_before: 5 });

        assert!(settle(&mut p, true).await.is_err());
        assert!(p.publishing.is_none(), "the publish waiting for the failed aggregates is dropped");
        assert_eq!(p.mongo, Some(3), "the carried aggregates of 5 went with it: the catch-up starts at 3");
        assert_eq!((p.lake_done, p.get("gold/customer_totals")), (5, 5), "the tail's markers go back");
    }
}
