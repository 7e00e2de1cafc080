//! A partition that librdkafka leaves paused without orderlake asking (an assignment racing a
//! pause and resume can do so, confluentinc/librdkafka#5591) would stall with no error, and a
//! `--once` run would never end. The feed resumes any partition it has not paused itself that
//! delivers nothing for `feed::NUDGE_AFTER`. Simulated against the real broker by pausing a
//! partition behind the poll loop's back while events are still to come.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orderlake::config::Settings;
use orderlake::source::feed::{self, Feed};
use orderlake::source::kafka;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::*;

/// `n` events to one partition of `topic`.
async fn send(s: &Settings, topic: &str, partition: i32, n: usize) {
    let producer: FutureProducer = kafka::config_with(s, &[("linger.ms", "5")]).create().unwrap();
    for i in 0..n {
        let key = format!("k{partition}-{i}");
        let record = FutureRecord::to(topic).partition(partition).key(&key).payload("{}");
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
}

/// Reads until each partition of `want` has delivered that many events in all; `seen` holds the
/// offsets read per partition, and the time of each partition's last new event is returned.
async fn read_until(
    feed: &mut Feed,
    seen: &mut BTreeMap<i32, Vec<i64>>,
    want: &BTreeMap<i32, usize>,
    within: Duration,
) -> BTreeMap<i32, Instant> {
    let (deadline, mut last) = (Instant::now() + within, BTreeMap::new());
    while want.iter().any(|(p, n)| seen.get(p).map_or(0, Vec::len) < *n) {
        let counts: BTreeMap<_, _> = seen.iter().map(|(p, o)| (*p, o.len())).collect();
        assert!(Instant::now() < deadline, "read {counts:?} of {want:?} within {within:?}");
        let Some(f) = feed.next(Duration::from_millis(50)).await else { continue };
        feed.release(f.event.size());
        seen.entry(f.event.partition).or_default().push(f.event.offset);
        last.insert(f.event.partition, Instant::now());
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_left_paused_behind_the_feed_is_resumed_and_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&unique("stalled"), &LakeKind::Local(dir.path().to_path_buf()), false);
    s.partitions = 2;
    let topic = s.sales_topic.clone();
    kafka::ensure_topics(&s, std::slice::from_ref(&topic)).await.unwrap();
    send(&s, &topic, 0, 100).await;
    send(&s, &topic, 1, 100).await;
    let (consumer, epochs) = kafka::consumer(&s).unwrap();
    let mut feed = Feed::start(consumer, epochs, 64 << 20, None);
    let mut seen = BTreeMap::new();
    read_until(&mut feed, &mut seen, &BTreeMap::from([(0, 100), (1, 100)]), Duration::from_secs(60)).await;

    // Partition 1 is paused as librdkafka would leave it, behind the poll loop's back; then both
    // partitions get new events.
    feed.pause_untracked((topic.clone(), 1));
    let paused_at = Instant::now();
    send(&s, &topic, 0, 100).await;
    send(&s, &topic, 1, 100).await;
    let within = feed::NUDGE_AFTER + Duration::from_secs(30);
    let last = read_until(&mut feed, &mut seen, &BTreeMap::from([(0, 200), (1, 200)]), within).await;
    let (p0, p1) = (last[&0].duration_since(paused_at), last[&1].duration_since(paused_at));
    eprintln!("after the pause, partition 0 read to its end in {p0:?}, partition 1 in {p1:?}");
    assert!(p1 >= feed::NUDGE_AFTER / 2, "the pause held until the feed resumed the partition ({p1:?})");
    // Resuming continues from the last event handed over: nothing skipped, nothing read twice.
    for (p, offsets) in &seen {
        assert_eq!(offsets, &(0..200).collect::<Vec<i64>>(), "partition {p}: every offset once, in order");
    }
    feed.close().await;
}
