//! `orderlake rebuild` on Azurite, without Kafka: damaged silver and gold come back equal to the
//! reference, an interrupted rebuild continues with `--resume`, and afterwards a normal run finds
//! nothing to do.

use orderlake::lake::Lake;
use orderlake::produce;

use crate::e2e::{GOLD, SILVER, assert_lake_matches, run_once};
use crate::reference;
use crate::support::*;

async fn rows(s: &orderlake::config::Settings, rel: &str) -> usize {
    read_table(s, rel).await.iter().map(|b| b.num_rows()).sum()
}

/// Deletes rows of a table behind orderlake's back (the damage a rebuild repairs).
async fn damage(s: &orderlake::config::Settings, rel: &str, predicate: &str) {
    let t = Lake::new(s).open(rel).await.unwrap().unwrap();
    t.delete().with_predicate(predicate.to_string()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_repairs_silver_and_gold_from_bronze_and_resumes() {
    let s = settings(&unique("rebuild"), &LakeKind::Azurite, false);
    let records = renumbered(produce::synthetic(3000, 17), "9");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    run_once(&s).await;
    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;
    let mut silver_rows = Vec::new();
    for t in SILVER {
        silver_rows.push(rows(&s, t).await);
    }

    damage(&s, "silver/order_items", "quantity > 3").await;
    damage(&s, "gold/customer_totals", "orders > 2").await;
    assert!(rows(&s, "silver/order_items").await < silver_rows[1]);

    // A rebuild stopped by a fault after its first gold commits, then resumed.
    let out = orderlake_cmd(&s)
        .args(["rebuild", "--layer", "silver"])
        .env("ORDERLAKE_TEST_FAIL_AT", "after-gold")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the injected fault stops the rebuild");
    let out = orderlake_cmd(&s).args(["rebuild", "--resume"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rebuilt up to"), "{text}");
    assert_lake_matches(&s, &r).await;
    for (t, n) in SILVER.iter().zip(&silver_rows) {
        assert_eq!(rows(&s, t).await, *n, "{t} refilled from bronze");
    }
    assert_bronze_exactly_once(&s, records.len()).await;

    // Gold alone, from a later bronze version: what those versions touched is recomputed.
    damage(&s, "gold/daily_sales", "orders > 0").await;
    let out = orderlake_cmd(&s).args(["rebuild", "--layer", "gold", "--from-version", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_lake_matches(&s, &r).await;

    // Silver cannot start later than the first version: said at start.
    let out = orderlake_cmd(&s).args(["rebuild", "--layer", "silver", "--from-version", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from-version"));

    // The rebuilt lake is what the streaming path left: a normal run commits nothing.
    let mut versions = Vec::new();
    for t in GOLD.iter().chain(SILVER.iter()) {
        versions.push(table_version(&s, t).await);
    }
    run_once(&s).await;
    for (t, v) in GOLD.iter().chain(SILVER.iter()).zip(&versions) {
        assert_eq!(table_version(&s, t).await, *v, "{t}");
    }
}
