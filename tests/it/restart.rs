//! Restart and bad input on a local (`file://`) lake: a crash between silver and gold, and one
//! after MongoDB writes but before its progress is saved, must end in the same state as an
//! uninterrupted run; undecodable events land in the dead-letter table and the batch goes on.

use std::time::Duration;

use orderlake::Error;
use orderlake::config::Settings;
use orderlake::pipeline::Pipeline;
use orderlake::produce;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::e2e::{assert_lake_matches, assert_mongo_matches, run_once, sample};
use crate::reference;
use crate::support::*;

pub async fn run_failing_at(s: &Settings, stage: &str) {
    let mut s = s.clone();
    s.fail_at = Some(stage.to_string());
    let mut p = Pipeline::start(s).await.unwrap();
    match p.run(true).await {
        Err(Error::InjectedFault(at)) => assert_eq!(at, stage),
        other => panic!("expected an injected fault at {stage}, got {other:?}"),
    }
}

async fn publish_raw(s: &Settings, values: &[&str]) {
    let p: FutureProducer = orderlake::source::kafka::base_config(s).create().unwrap();
    for v in values {
        p.send(FutureRecord::to(&s.sales_topic).key("bad").payload(*v), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_layers_heal_and_bad_events_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("restart");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), true);
    let records = sample();
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    let bad = [
        r#"{"TransactionNo":"X1","Date":"13/45/2019","ProductNo":"P","Price":1,"Quantity":1}"#,
        "not json at all",
        r#"{"TransactionNo":"X2","Date":"1/2/2019","ProductNo":"P","Price":"1.999","Quantity":1}"#,
    ];
    publish_raw(&s, &bad).await;

    // Killed after silver, before gold: bronze and silver hold data, gold does not yet.
    run_failing_at(&s, "after-silver").await;
    assert!(table_version(&s, &format!("bronze/{}", s.sales_topic)).await.unwrap() >= 1);
    let gold_rows = match table_version(&s, "gold/order_totals").await {
        Some(_) => strs(&read_table(&s, "gold/order_totals").await, "order_id").len(),
        None => 0,
    };
    assert!(gold_rows < records.len(), "the crash left gold behind bronze");

    run_once(&s).await;
    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;

    // 3,003 events with max_records = 1200: the record trigger cut several batches.
    assert!(strs(&read_table(&s, "_orderlake/batches").await, "topic").len() >= 3, "several batches");

    // Every offset exactly once in bronze.
    assert_bronze_exactly_once(&s, records.len() + bad.len()).await;

    // The three bad events, each with its reason, once.
    let dl = read_table(&s, "bronze/_dead_letters").await;
    let mut errors: Vec<String> = strs(&dl, "error").into_iter().map(Option::unwrap).collect();
    errors.sort();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("Date '13/45/2019'")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("invalid sales event JSON")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("more than 2 decimal places")), "{errors:?}");

    // Killed after MongoDB writes but before MongoDB progress: the rerun republishes, same result.
    let more = renumbered(produce::synthetic(250, 5), "8");
    produce::publish(&s, &s.sales_topic, &more, None).await.unwrap();
    run_failing_at(&s, "before-mongo-progress").await;
    run_once(&s).await;
    let mut all = records.clone();
    all.extend(more);
    let r2 = reference::compute(&all);
    assert_lake_matches(&s, &r2).await;
    assert_mongo_matches(&s, &r2).await;
    assert_eq!(strs(&read_table(&s, "bronze/_dead_letters").await, "error").len(), 3, "no dead letter twice");

    // Checkpoints every 10 commits, readable by an independent reader.
    let log = dir.path().join("gold/order_totals/_delta_log");
    if table_version(&s, "gold/order_totals").await.unwrap() >= 10 {
        assert!(log.join("_last_checkpoint").exists(), "checkpoint written");
    }
    let uri = format!("{}gold/order_totals", s.lake);
    let out = run_python("check_delta.py", &[&uri, "total_amount"]);
    let total: i64 = r2.orders.values().map(|v| v[2]).sum();
    assert!(out.contains(&format!("sum_cents={total}")), "python reader sum: {out}");
}
