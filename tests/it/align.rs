//! Alignment in time across topics, against the real broker: one topic of small events and one of
//! large events over the same twelve seconds of Kafka timestamps, read by a pipeline slower than
//! the broker (a backlog being caught up). Read freely, the small topic runs far ahead of the
//! large one; aligned (`batch.align_topics_ms`), neither runs ahead by much more than the window,
//! and every event is still read exactly once. A partition paused when a rebalance takes it away
//! is read again once it comes back.

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

/// The partitions of `feed`'s consumer, once there are `n` of them (a rebalance has settled).
async fn await_assignment(feed: &mut Feed, n: usize, what: &str) -> Vec<kafka::TopicPartition> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tps = kafka::assignment(feed.consumer()).unwrap();
        if tps.len() == n {
            return tps;
        }
        assert!(Instant::now() < deadline, "{what}: {} partitions assigned, expected {n}", tps.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A partition paused when a rebalance takes it away (held back in time, or over the in-flight
/// budget) is read again when it comes back. librdkafka keeps a partition's pause through a
/// rebalance; the feed remembers what it paused, so it resumes it once it is wanted again rather
/// than leaving it stalled with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_paused_through_a_rebalance_are_read_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("align-rebalance");
    let prefix = format!("{name}.public");
    let cdc = crate::cdc::cdc_toml(&prefix);
    let mut s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), false, &cdc);
    s.partitions = 2;
    for (k, v) in [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")] {
        s.kafka_options.insert(k.into(), v.into());
    }
    kafka::ensure_topics(&s, &s.topics()).await.unwrap();
    // The small topic is a minute ahead in time: once the large one delivers, the small one's
    // partitions are held back for alignment.
    let (small, large) = (s.sales_topic.clone(), format!("{prefix}.order_items"));
    let t0 = chrono::Utc::now().timestamp_millis() - 80_000;
    produce_timed(&s, &large, 800, 1_000, t0).await;
    produce_timed(&s, &small, 2_000, 100, t0 + 60_000).await;
    let probe = kafka::base_config(&s).create::<rdkafka::consumer::BaseConsumer>().unwrap();
    let mut ends = HashMap::new();
    for t in [&small, &large] {
        for (p, hi) in kafka::end_offsets(&probe, &s, t).unwrap() {
            ends.insert((t.clone(), p), hi);
        }
    }
    assert_eq!(ends.len(), 4, "two partitions a topic: {ends:?}");
    assert!(ends.values().all(|hi| *hi > 0), "every partition has events: {ends:?}");

    // Every topic of the CDC source is subscribed, the empty ones too; the range assignor gives
    // each of two members one partition of each topic.
    let all = s.topics().len() * 2;
    s.group = unique("align-rebalance");
    let (consumer, epochs) = kafka::consumer(&s).unwrap();
    let mut a = Feed::start(consumer, epochs.clone(), BUDGET, Some(Duration::from_secs(1)));
    // 1. `a` reads the large topic for a while (the small one held back), then stops releasing
    //    what it read, so the budget pauses every partition too.
    let (mut large_read, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while large_read < 50 {
        assert!(Instant::now() < deadline, "the first reader read {large_read} events of the large topic");
        if let Some(f) = a.next(Duration::from_millis(10)).await {
            a.release(f.event.size());
            large_read += usize::from(f.event.topic == large);
        }
    }
    // 2. A second member joins: every partition is revoked from `a` while paused and half of them
    //    come back to it. Then the second member leaves and all come back.
    let (consumer_b, epochs_b) = kafka::consumer(&s).unwrap();
    let mut b = Feed::start(consumer_b, epochs_b, 64 << 20, None);
    let theirs = await_assignment(&mut b, all / 2, "the second member").await;
    await_assignment(&mut a, all / 2, "the first member beside the second").await;
    let mut b_read = 0;
    while let Some(f) = b.next(Duration::from_millis(500)).await {
        b.release(f.event.size());
        b_read += 1;
    }
    b.close().await;
    let tps = await_assignment(&mut a, all, "the first member alone again").await;
    eprintln!("the second member read {b_read} events of {theirs:?} before it left");
    // 3. `a` goes on releasing what it reads: every partition must be read to its end, whatever
    //    was paused when it was revoked. Events read before it came back carry an older generation.
    let since: HashMap<_, _> = tps.iter().map(|tp| (tp.clone(), epochs.get(tp))).collect();
    let (mut newest, started) = (HashMap::<kafka::TopicPartition, i64>::new(), Instant::now());
    let (mut unreleased, mut committed) = (0, Instant::now());
    let at_end = |newest: &HashMap<_, i64>| ends.iter().all(|(tp, hi)| newest.get(tp) == Some(&(hi - 1)));
    while !at_end(&newest) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "partitions not read to their end after the rebalances: newest offsets read {newest:?}, ends {ends:?}"
        );
        if committed.elapsed() >= COMMIT_EVERY {
            a.release(std::mem::take(&mut unreleased));
            committed = Instant::now();
        }
        let Some(f) = a.next(Duration::from_millis(10)).await else { continue };
        unreleased += f.event.size();
        let tp = (f.event.topic.clone(), f.event.partition);
        if f.epoch >= since[&tp] {
            let n = newest.entry(tp).or_insert(-1);
            *n = (*n).max(f.event.offset);
        }
    }
    eprintln!("every partition read to its end {} ms after the rebalances", started.elapsed().as_millis());
    a.close().await;
}
