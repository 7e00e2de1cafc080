//! Alignment in time across topics, against the real broker: one topic of small events and one of
//! large events over the same twelve seconds of Kafka timestamps, read by a pipeline slower than
//! the broker (a backlog being caught up). Read freely, the small topic runs far ahead of the
//! large one; aligned (`batch.align_topics_ms`), neither runs ahead by much more than the window,
//! and every event is still read exactly once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use orderlake::config::Settings;
use orderlake::source::feed::Feed;
use orderlake::source::kafka;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::*;

const SPAN_MS: i64 = 12_000;
const COMMIT_EVERY: Duration = Duration::from_millis(20);
/// The reader's in-flight budget: about 0.4 s of the small topic, 0.2 s of the large one.
const BUDGET: usize = 24 << 10;

/// `n` events of `size` bytes, timestamped evenly over [`SPAN_MS`] from `t0`.
async fn produce_timed(s: &Settings, topic: &str, n: usize, size: usize, t0: i64) {
    let producer: FutureProducer =
        kafka::config_with(s, &[("linger.ms", "5"), ("message.timeout.ms", "60000")]).create().unwrap();
    let payload = "x".repeat(size);
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        let (key, ts) = (format!("k{i}"), t0 + (i as i64 * SPAN_MS) / n as i64);
        let (producer, payload, topic) = (producer.clone(), payload.clone(), topic.to_string());
        inflight.push(async move {
            let record = FutureRecord::to(&topic).key(&key).payload(&payload).timestamp(ts);
            producer.send(record, Duration::from_secs(60)).await.map(|_| ())
        });
        while inflight.len() >= 2_000 {
            inflight.next().await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
    while let Some(r) = inflight.next().await {
        r.map_err(|(e, _)| e).unwrap();
    }
}

/// Reads every event of `counts` (per topic) as a pipeline that commits what it holds every
/// [`COMMIT_EVERY`] would (with [`BUDGET`] in flight), and returns how far (ms) the newest event
/// read of one topic was ahead of the other's (`t0` for a topic not read yet) while both still
/// had events to read.
async fn widest_gap(s: &Settings, counts: &HashMap<String, usize>, t0: i64, align: Option<Duration>) -> i64 {
    let (consumer, epochs) = kafka::consumer(s).unwrap();
    let mut feed = Feed::start(consumer, epochs, BUDGET, align);
    let total: usize = counts.values().sum();
    let (mut seen, mut read, mut unreleased) = (HashSet::new(), HashMap::<String, usize>::new(), 0);
    let mut committed = Instant::now();
    let mut newest: HashMap<String, i64> = counts.keys().map(|t| (t.clone(), t0)).collect();
    let (mut widest, deadline) = (0i64, Instant::now() + Duration::from_secs(180));
    while seen.len() < total {
        assert!(Instant::now() < deadline, "read {} of {total} events", seen.len());
        if committed.elapsed() >= COMMIT_EVERY {
            feed.release(std::mem::take(&mut unreleased));
            committed = Instant::now();
        }
        let Some(f) = feed.next(Duration::from_millis(10)).await else { continue };
        let e = f.event;
        unreleased += e.size();
        assert!(
            seen.insert((e.topic.clone(), e.partition, e.offset)),
            "read twice: {} {} {}",
            e.topic,
            e.partition,
            e.offset
        );
        *read.entry(e.topic.clone()).or_default() += 1;
        let n = newest.get_mut(&e.topic).expect("a topic of the test");
        *n = (*n).max(e.timestamp_ms.unwrap());
        if counts.iter().all(|(t, n)| read.get(t).copied().unwrap_or(0) < *n) {
            let (lo, hi) = (newest.values().min().unwrap(), newest.values().max().unwrap());
            widest = widest.max(hi - lo);
        }
    }
    feed.close().await;
    widest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_two_topics_read_within_the_window_of_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("align");
    let prefix = format!("{name}.public");
    let cdc = crate::cdc::cdc_toml(&prefix);
    let mut s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), false, &cdc);
    // One partition a topic: a budget's worth of events is then about the same stretch of time
    // for the topic as for its partition.
    s.partitions = 1;
    kafka::ensure_topics(&s, &s.topics()).await.unwrap();
    let (small, large) = (s.sales_topic.clone(), format!("{prefix}.order_items"));
    let t0 = chrono::Utc::now().timestamp_millis() - SPAN_MS;
    produce_timed(&s, &small, 3_000, 100, t0).await;
    produce_timed(&s, &large, 1_000, 1_000, t0).await;
    let counts = HashMap::from([(small, 3_000), (large, 1_000)]);

    s.group = unique("align-free");
    let free = widest_gap(&s, &counts, t0, None).await;
    s.group = unique("align-1s");
    let aligned = widest_gap(&s, &counts, t0, Some(Duration::from_secs(1))).await;
    eprintln!("widest gap: read freely {free} ms, aligned to 1 s {aligned} ms");
    assert!(free > 3_000, "read freely, the small topic runs ahead (else this test shows nothing): {free} ms");
    assert!(aligned < 2_000, "aligned to 1 s, yet one topic ran {aligned} ms ahead");
}
