//! A batch's aggregates run while the next batch writes bronze and silver. Product sales must
//! still name products as the batch's own order lines do: when the next batch renames a product
//! in silver before the previous batch's aggregates are written, that rename must still reach the
//! earlier order's line (the next batch finds it by comparing product sales with silver).

use std::time::Duration;

use orderlake::lake::Lake;
use orderlake::produce::SaleRecord;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::e2e::{assert_lake_matches, assert_mongo_matches, run_once};
use crate::reference;
use crate::support::*;

fn line(order: &str, product_name: &str) -> SaleRecord {
    SaleRecord {
        transaction_no: order.into(),
        date: "12/9/2019".into(),
        product_no: "84029E".into(),
        product_name: product_name.into(),
        price: "4.25".into(),
        quantity: "3".into(),
        customer_no: "17490".into(),
        country: "France".into(),
    }
}

/// Commit timestamps (ms) of the writes to a table, oldest first (its creation left out).
async fn write_times(s: &orderlake::config::Settings, rel: &str) -> Vec<i64> {
    let t = Lake::new(s).open(rel).await.unwrap().expect("table exists");
    let commits: Vec<_> = futures::StreamExt::collect(t.history(None)).await;
    let mut times: Vec<i64> = commits
        .into_iter()
        .map(|c| c.unwrap())
        .filter(|c| c.operation.as_deref() != Some("CREATE TABLE"))
        .map(|c| c.timestamp.expect("commit timestamp"))
        .collect();
    times.sort();
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_written_while_the_previous_aggregates_are_pending_reaches_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("overlap");
    let mut s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), true);
    // One event per batch; every batch's aggregates wait 2 s, so batch 2's silver write (which
    // renames the product) lands before batch 1's product sales are computed.
    s.batch.max_records = 1;
    s.fail_at = Some("slow-aggregates".into());
    let records = vec![line("700001", "Mug"), line("700002", "Big mug")];
    // One partition, one after the other: the rename is the later event.
    orderlake::source::kafka::ensure_topics(&s, std::slice::from_ref(&s.sales_topic)).await.unwrap();
    let producer: FutureProducer = orderlake::source::kafka::base_config(&s).create().unwrap();
    for r in &records {
        let value = r.to_json();
        let rec = FutureRecord::to(&s.sales_topic).key(&r.transaction_no).payload(&value).partition(0);
        producer.send(rec, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run_once(&s).await;

    let products = write_times(&s, "silver/products").await;
    let sales = write_times(&s, "gold/product_sales").await;
    assert_eq!((products.len(), sales.len()), (2, 2), "two batches wrote silver products and product sales");
    assert!(
        products[1] < sales[0],
        "batch 2 renamed the product in silver ({}) before batch 1's product sales were written ({})",
        products[1],
        sales[0]
    );

    let lines = read_table(&s, "gold/order_lines").await;
    let named: Vec<(Option<String>, Option<String>)> =
        strs(&lines, "order_id").into_iter().zip(strs(&lines, "product_name")).collect();
    assert_eq!(named.len(), 2, "{named:?}");
    for (order, product_name) in &named {
        assert_eq!(product_name.as_deref(), Some("Big mug"), "order {order:?}'s line carries the current name");
    }
    let sold = read_table(&s, "gold/product_sales").await;
    assert_eq!(strs(&sold, "product_name"), vec![Some("Big mug".to_string())]);

    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;
    assert_eq!(strs(&read_table(&s, "_orderlake/batches").await, "topic").len(), 2, "two batches");
}

/// A storage error in a batch's background aggregates, after their commits and before the batch
/// log and MongoDB got them, with no batch after it: the idle loop puts the layers' progress back
/// and writes them again; the aggregates are not counted twice and MongoDB gets the abandoned
/// publish from that catch-up. A batch after the failure would re-read progress from the lake
/// instead; the idle path is the one that depends on the progress being put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_of_the_background_aggregates_is_written_again_exactly_once() {
    let s = settings(&unique("tailfail"), &LakeKind::Azurite, true);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[batch]\nmax_records = 1000\nmax_latency_ms = 300\n").unwrap();
    let log_path = dir.path().join("run.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let records = renumbered(orderlake::produce::synthetic(600, 33), "8");
    orderlake::produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();

    let mut cmd = orderlake_cmd(&s);
    cmd.env("ORDERLAKE_TEST_FAIL_AT", "aggregates-transient-once");
    let mut guard = spawn_run(cmd, &config, &log_path);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !lake_complete(&s, records.len()).await || !log().contains("written again") {
        assert!(std::time::Instant::now() < deadline, "the failed aggregates were never written again:\n{}", log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(log().contains("injected transient failure after the aggregates"), "{}", log());
    let r = reference::compute(&records);
    assert_bronze_exactly_once(&s, records.len()).await;
    assert_lake_matches(&s, &r).await;
    // The publish the failure abandoned comes from the idle catch-up, within a few turns.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while mongo_docs(&s, "customer_totals").await.len() < r.customers.len() {
        assert!(std::time::Instant::now() < deadline, "MongoDB never got the aggregates:\n{}", log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0:\n{}", log());
    assert_mongo_matches(&s, &r).await;
}
