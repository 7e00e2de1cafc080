//! Freshness: while a producer paces events at a fixed rate into a topic a continuous `orderlake
//! run` consumes, how long from an event's Kafka timestamp until its order total is readable in
//! MongoDB. Every tenth order is tracked (its last line's timestamp, set explicitly on the
//! message); MongoDB is polled every 50 ms for the tracked orders not seen yet.
//!
//! The poll itself must not load the server it measures: an `$in` over every pending order costs
//! SecantusDB a lookup per id, and with a few seconds of backlog that was a third of its CPU, which
//! made the backlog grow. So a poll asks for the oldest [`WINDOW`] pending orders only and polls
//! again at once while it keeps finding some (publishes land a batch at a time, oldest first); a
//! full sweep every [`SWEEP_EVERY`] polls catches any order seen out of turn. An order found late
//! only makes its latency look longer, never shorter.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mongodb::bson::{Document, doc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::produce::{SaleRecord, enqueue};
use crate::source::kafka;

#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub tracked: usize,
    pub seen: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub produced_per_s: f64,
}

/// Pending orders asked for per poll, oldest first.
const WINDOW: usize = 64;
/// Every this many polls, all pending orders are asked for.
const SWEEP_EVERY: u32 = 20;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Publishes `records` at `rate` events/s and measures until every tracked order is readable in
/// MongoDB (or `drain` has passed after the last event).
pub async fn measure(
    settings: &Settings,
    topic: &str,
    records: &[SaleRecord],
    rate: u32,
    drain: Duration,
) -> Result<Latencies> {
    let uri = settings.mongodb_uri.clone().ok_or_else(|| Error::Config("bench needs --mongodb-uri".into()))?;
    let coll = mongodb::Client::with_uri_str(&uri)
        .await?
        .database(&settings.mongodb_database)
        .collection::<Document>("order_totals");
    let (tx, rx) = mpsc::unbounded_channel::<(String, i64)>();
    let watcher = tokio::spawn(watch(coll, rx));

    // The producer lingers 25 ms: the broker shares the two cores with what is measured, and fewer,
    // bigger produce requests halve its CPU. Each event's timestamp is taken before it is queued,
    // so the linger counts against the latency measured.
    let producer: FutureProducer = kafka::config_with(settings, &[("linger.ms", "25")]).create()?;
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut order_index: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let ts = now_ms();
        let payload = r.to_json();
        let rec = FutureRecord::to(topic).key(&r.transaction_no).payload(&payload).timestamp(ts);
        inflight.push(enqueue(&producer, rec).await?);
        while let Some(Some(d)) = futures::FutureExt::now_or_never(inflight.next()) {
            d?;
        }
        let n = order_index.len();
        let idx = *order_index.entry(r.transaction_no.as_str()).or_insert(n);
        let last_line = records.get(i + 1).is_none_or(|next| next.transaction_no != r.transaction_no);
        if idx.is_multiple_of(10) && last_line {
            let _ = tx.send((r.transaction_no.clone(), ts));
        }
    }
    while let Some(d) = inflight.next().await {
        d?;
    }
    let produced_per_s = records.len() as f64 / started.elapsed().as_secs_f64();
    drop(tx);
    let mut lat = tokio::time::timeout(drain + Duration::from_secs(5), watcher)
        .await
        .map_err(|_| Error::Other("freshness watcher did not finish".into()))?
        .map_err(|e| Error::Other(e.to_string()))??;
    lat.produced_per_s = produced_per_s;
    Ok(lat)
}

/// Polls MongoDB for the tracked orders; ends when the producer is done and every tracked order
/// was seen, or 30 s after the producer is done.
async fn watch(
    coll: mongodb::Collection<Document>,
    mut rx: mpsc::UnboundedReceiver<(String, i64)>,
) -> Result<Latencies> {
    // Pending orders by (production timestamp, id): the oldest come first.
    let mut pending: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut samples: Vec<i64> = Vec::new();
    let mut tracked = 0usize;
    let mut producer_done_at: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        loop {
            match rx.try_recv() {
                Ok((id, ts)) => {
                    tracked += 1;
                    pending.insert((ts, id));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    producer_done_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        let mut found_any = false;
        if !pending.is_empty() {
            polls += 1;
            let take = if polls.is_multiple_of(SWEEP_EVERY) { pending.len() } else { WINDOW };
            let asked: HashMap<&str, i64> = pending.iter().take(take).map(|(ts, id)| (id.as_str(), *ts)).collect();
            let ids: Vec<&str> = asked.keys().copied().collect();
            let mut cur = coll.find(doc! {"_id": {"$in": ids}}).projection(doc! {"_id": 1}).await?;
            let seen_at = now_ms();
            let mut seen = Vec::new();
            while let Some(d) = cur.next().await {
                if let Ok(id) = d?.get_str("_id")
                    && let Some(ts) = asked.get(id)
                {
                    seen.push((*ts, id.to_string()));
                }
            }
            found_any = !seen.is_empty();
            for key in seen {
                if pending.remove(&key) {
                    samples.push(seen_at - key.0);
                }
            }
        }
        if let Some(done) = producer_done_at
            && (pending.is_empty() || done.elapsed() > Duration::from_secs(30))
        {
            break;
        }
        if !found_any {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] as f64
    };
    Ok(Latencies {
        tracked,
        seen: samples.len(),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: samples.last().map_or(f64::NAN, |m| *m as f64),
        produced_per_s: 0.0,
    })
}
