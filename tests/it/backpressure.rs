//! Backpressure: what is read from Kafka but not yet committed stays within the in-flight budget.
//! The feed pauses its partitions at the budget and resumes, without a gap or a duplicate, once
//! the pipeline releases; end to end, a MongoDB that answers slowly (a SecantusDB fail point)
//! pauses consumption instead of buffering the topic, and everything lands once it is fast again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orderlake::produce;
use orderlake::source::feed::Feed;
use orderlake::source::kafka;

use crate::e2e::{assert_lake_matches, mongo_matches};
use crate::reference;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_pauses_at_the_budget_and_resumes_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&unique("budget"), &LakeKind::Local(dir.path().join("lake")), false);
    s.partitions = 3;
    let records = produce::synthetic(5000, 5);
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    let budget = 64 * 1024;
    let (consumer, epochs) = kafka::consumer(&s).unwrap();
    let mut feed = Feed::start(consumer, epochs, budget, None);

    // Nothing is released: reading stops at the budget (plus the one event that crossed it).
    let (mut got, mut bytes, mut max_event) = (Vec::new(), 0usize, 0usize);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        match feed.next(Duration::from_secs(3)).await {
            Some(f) => {
                bytes += f.event.size();
                max_event = max_event.max(f.event.size());
                got.push((f.event.partition, f.event.offset));
            }
            None if !got.is_empty() => break,
            None => {}
        }
    }
    assert!(!got.is_empty(), "the feed delivered nothing");
    assert!(bytes <= budget + max_event, "read {bytes} bytes with a budget of {budget}");
    assert!(got.len() < records.len() / 4, "paused long before the topic's end ({} of {})", got.len(), records.len());
    assert_eq!(feed.in_flight(), bytes);

    // Released as a pipeline would after each commit: consumption resumes and finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    feed.release(bytes);
    while got.len() < records.len() {
        assert!(Instant::now() < deadline, "stalled at {} of {} events after resuming", got.len(), records.len());
        if let Some(f) = feed.next(Duration::from_millis(500)).await {
            feed.release(f.event.size());
            got.push((f.event.partition, f.event.offset));
        }
    }
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in got {
        per_partition.entry(p).or_default().push(o);
    }
    for (p, offsets) in per_partition {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {p}: every offset once, in order, across pause and resume");
    }
    feed.close().await;
}

async fn set_slow_updates(uri: &str, block_ms: Option<u64>) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let cmd = match block_ms {
        Some(ms) => mongodb::bson::doc! {
            "configureFailPoint": "failCommand", "mode": "alwaysOn",
            "data": { "failCommands": ["update"], "blockConnection": true, "blockTimeMS": ms as i64, "appName": "slow-sink" },
        },
        None => mongodb::bson::doc! { "configureFailPoint": "failCommand", "mode": "off" },
    };
    client.database("admin").run_command(cmd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mongodb_pauses_consumption_within_the_budget() {
    let mut mongo = PrivateMongo::start_with(&["--enable-test-commands"]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&unique("slowsink"), &LakeKind::Local(dir.path().join("lake")), true);
    s.mongodb_uri = Some(format!("{}/?appName=slow-sink", mongo.uri()));
    // Enough events that "held back" is clear: the lake may run one batch ahead of a publish, and
    // the in-flight budget holds two more.
    let records = renumbered(produce::synthetic(6000, 9), "5");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    set_slow_updates(&mongo.uri(), Some(1500)).await;

    let config = dir.path().join("c.toml");
    let budget = 256 * 1024;
    std::fs::write(
        &config,
        format!("[batch]\nmax_bytes = 131072\nmax_latency_ms = 200\nmax_in_flight_bytes = {budget}\n"),
    )
    .unwrap();
    let log_path = dir.path().join("run.log");
    let mut guard = spawn_run(orderlake_cmd(&s), &config, &log_path);
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    while !log().contains("consumption paused") {
        assert!(Instant::now() < deadline, "never paused:\n{}", log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Paused with most of the topic still in Kafka, not in memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bronze = table_version(&s, &format!("bronze/{}", s.sales_topic)).await;
    let in_bronze = if bronze.is_some() {
        ints(&read_table(&s, &format!("bronze/{}", s.sales_topic)).await, "offset").len()
    } else {
        0
    };
    let text = log();
    let paused: Vec<usize> = text
        .lines()
        .filter(|l| l.contains("consumption paused"))
        .filter_map(|l| l.split("in_flight_bytes=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    assert!(!paused.is_empty(), "pause lines carry the in-flight bytes:\n{text}");
    assert!(paused.iter().all(|b| *b <= budget + 4096), "in flight beyond the budget: {paused:?}");
    assert!(in_bronze < records.len() / 2, "a slow sink holds the pipeline back ({in_bronze} in bronze)");

    // MongoDB is fast again: consumption resumes and everything lands, exactly once.
    set_slow_updates(&mongo.uri(), None).await;
    let r = reference::compute(&records);
    let deadline = Instant::now() + Duration::from_secs(150);
    while !(lake_complete(&s, records.len()).await && mongo_matches(&s, &r).await) {
        assert!(Instant::now() < deadline, "did not finish after the sink recovered:\n{}", log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(log().contains("consumption resumed"));
    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0");
    assert_bronze_exactly_once(&s, records.len()).await;
    assert_lake_matches(&s, &r).await;
    mongo.pause();
}
