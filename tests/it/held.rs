//! `mongodb.hold_batches_ms`: while MongoDB is still writing the previous batch's order documents,
//! a due batch is held so that it takes in the events arriving meanwhile (`pipeline::pace`). A
//! continuous run against the real broker, SecantusDB and a local lake, fed at a steady pace, with
//! every publish's order documents made 1.5 s slower: batches are held, and the lake
//! and MongoDB still end equal to the reference, every event once.

use std::time::{Duration, Instant};

use orderlake::produce;

use crate::e2e::{assert_lake_matches, assert_mongo_matches};
use crate::metrics::{get, value, wait_ready};
use crate::reference;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_due_during_a_slow_publish_are_held_and_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&unique("held"), &LakeKind::Local(dir.path().join("lake")), true);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[batch]\nmax_latency_ms = 100\n[mongodb]\nhold_batches_ms = 2000\n").unwrap();
    let log_path = dir.path().join("run.log");
    let mut cmd = orderlake_cmd(&s);
    cmd.env("ORDERLAKE_METRICS_ADDR", format!("127.0.0.1:{port}")).env("ORDERLAKE_TEST_FAIL_AT", "slow-order-docs");
    let mut guard = spawn_run(cmd, &config, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_ready(port, log).await;

    // ≈ 1,000 events/s for 8 s: a 100 ms batch window against publishes of over 1.5 s, which
    // outlast the lake work even when the whole suite loads the machine.
    let records = renumbered(produce::synthetic(8_000, 77), "8");
    // Sent on a clock, not one after another: a send's own latency must not set the pace.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut sends = Vec::new();
    for chunk in records.chunks(50) {
        tick.tick().await;
        let (s, chunk) = (s.clone(), chunk.to_vec());
        sends.push(tokio::spawn(async move { produce::publish(&s, &s.sales_topic, &chunk, None).await.unwrap() }));
    }
    for send in sends {
        send.await.unwrap();
    }
    let series = format!("orderlake_batches_held_total{{topic=\"{}\"}}", s.sales_topic);
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let m = get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        if value(&m, "orderlake_events_consumed_total") == Some(records.len() as f64) {
            break m;
        }
        assert!(Instant::now() < deadline, "never caught up:\n{m}\n{}", log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let held = value(&metrics, &series).unwrap_or(0.0);
    let batches = value(&metrics, "orderlake_batches_committed_total").unwrap();
    let tail =
        |l: String| l.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(
        held >= 2.0,
        "batches due during a slow publish were held ({held} of {batches}):\n{metrics}\n{}",
        tail(log())
    );

    // SIGTERM commits what is in hand and waits for the publishes in flight.
    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0:\n{}", log());
    let r = reference::compute(&records);
    assert_bronze_exactly_once(&s, records.len()).await;
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;
}
