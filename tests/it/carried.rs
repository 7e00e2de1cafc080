//! While MongoDB is the bottleneck, a batch's `customer_totals` and `daily_sales` documents may
//! go out with a later batch's publish (`pipeline::publish`). MongoDB's stored position must not
//! move past them meanwhile: a crash while they wait, or a failure of the publish that carries
//! them, must still end with MongoDB equal to the lake.
//!
//! Every order here has a customer of its own, so the aggregates of a batch that never reached
//! MongoDB show as missing customers instead of hiding behind a later batch's rewrite.

use orderlake::Error;
use orderlake::config::Settings;
use orderlake::pipeline::Pipeline;
use orderlake::produce::{self, SaleRecord};
use orderlake::sink::mongo::MongoSink;

use crate::e2e::{assert_lake_matches, assert_mongo_matches, lake_totals, mongo_totals, run_once};
use crate::reference;
use crate::support::*;

/// A backlog of orders, each with a customer of its own, read in small batches, with each publish
/// held after its order documents until the next batch waits: that is when aggregates are carried.
async fn carrying(prefix: &str, seed: u64, faults: &str) -> (tempfile::TempDir, Settings, Vec<SaleRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeKind::Local(dir.path().to_path_buf());
    let mut s = settings_with(&unique(prefix), &lake, true, "[mongodb]\naggregates_lag_ms = 60000\n");
    s.batch.max_records = 100;
    s.fail_at = Some(format!("slow-order-publish,{faults}"));
    let records = own_customers(produce::synthetic(500, seed), &seed.to_string());
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    (dir, s, records)
}

fn own_customers(records: Vec<SaleRecord>, prefix: &str) -> Vec<SaleRecord> {
    renumbered(records, prefix)
        .into_iter()
        .map(|mut r| {
            r.customer_no = format!("9{}", r.transaction_no.trim_start_matches('C'));
            r
        })
        .collect()
}

async fn stored_position(s: &Settings) -> Option<i64> {
    let m = MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();
    m.progress(&s.sales_topic).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_waiting_for_the_next_publish_survive_a_crash() {
    let (_dir, s, records) = carrying("carried-crash", 41, "after-aggregates-carried").await;

    let mut p = Pipeline::start(s.clone()).await.unwrap();
    match p.run(true).await {
        Err(Error::InjectedFault(at)) => assert_eq!(at, "after-aggregates-carried"),
        other => panic!("expected the run to stop with aggregates carried, got {other:?}"),
    }
    drop(p);
    assert!(orderlake::metrics::global().aggregates_carried_count(&s.sales_topic) >= 1);
    // The order documents of the carrying batch are in; its customers are not, and MongoDB's
    // stored position is still before it.
    let (lake_orders, lake_customers, _) = lake_totals(&s).await;
    let (mongo_orders, mongo_customers, _) = mongo_totals(&s).await;
    assert!(!mongo_orders.is_empty(), "the order documents went out before the aggregates were carried");
    let missing = lake_customers.keys().filter(|c| !mongo_customers.contains_key(*c)).count();
    assert!(missing > 0, "the carried customers are not in MongoDB yet ({} in the lake)", lake_customers.len());
    let stored = stored_position(&s).await.unwrap_or(-1);
    assert!(mongo_orders.keys().all(|o| lake_orders.contains_key(o)));
    assert!(
        stored < bronze_events_version(&s).await,
        "MongoDB's stored position ({stored}) did not move past the carried aggregates"
    );

    let mut healed = s.clone();
    healed.fail_at = None;
    run_once(&healed).await;
    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_that_carried_aggregates_leaves_them_to_the_catch_up() {
    let (_dir, s, records) = carrying("carried-fail", 43, "carrying-publish-transient-once").await;

    // The publish that carries the first batch's aggregates fails once (as MongoDB going away
    // would); publishing backs off, then catches up from MongoDB's stored position.
    run_once(&s).await;
    assert!(orderlake::metrics::global().aggregates_carried_count(&s.sales_topic) >= 1);
    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;
    let bronze = bronze_events_version(&s).await;
    assert_eq!(stored_position(&s).await, Some(bronze), "MongoDB's position reaches the lake's");
}
