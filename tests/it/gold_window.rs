//! The gold order MERGEs read only the files of the batch's date window: an order whose date
//! moved must still be found where it was (one row per order, its lines moved with it), and the
//! files of other days must be skipped, as the commit's own MERGE metrics say.

use orderlake::lake::Lake;
use orderlake::produce::{self, SaleRecord};

use crate::e2e::{assert_lake_matches, run_once};
use crate::reference;
use crate::support::*;

fn line(order: &str, date: &str, product: &str, qty: i64) -> SaleRecord {
    SaleRecord {
        transaction_no: order.into(),
        date: date.into(),
        product_no: product.into(),
        product_name: format!("Product {product}"),
        price: "2.50".into(),
        quantity: qty.to_string(),
        customer_no: "13001".into(),
        country: "France".into(),
    }
}

/// `operationMetrics` of the last commit of a gold table.
async fn last_merge_metrics(s: &orderlake::config::Settings, rel: &str) -> serde_json::Value {
    let t = Lake::new(s).open(rel).await.unwrap().expect("table exists");
    let mut history = t.history(Some(1));
    let info = futures::StreamExt::next(&mut history).await.expect("a commit").unwrap().info;
    info.get("operationMetrics").cloned().unwrap_or_else(|| panic!("{rel}: last commit has MERGE metrics: {info:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_date_moved_is_found_and_other_days_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("gold-window");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), false);
    let phases = [
        // Each phase is its own run, so its rows land in their own files.
        vec![line("600001", "11/1/2019", "22001", 3), line("600001", "11/1/2019", "22002", 1)],
        vec![line("600002", "12/1/2019", "22001", 2), line("600002", "12/1/2019", "22003", 4)],
        // 600002 gets a line dated three weeks later: the order moves to 12/20 (the last line's
        // date wins), and its row dated 12/01 must be replaced, not kept beside the new one.
        vec![line("600002", "12/20/2019", "22004", 5), line("600003", "12/20/2019", "22001", 1)],
    ];
    let mut all = Vec::new();
    for records in &phases {
        produce::publish(&s, &name, records, None).await.unwrap();
        run_once(&s).await;
        all.extend(records.iter().cloned());
    }

    let r = reference::compute(&all);
    assert_lake_matches(&s, &r).await;
    let lines = read_table(&s, "gold/order_lines").await;
    let (orders, dates) = (strs(&lines, "order_id"), ints(&lines, "order_date"));
    let moved: Vec<i64> =
        (0..orders.len()).filter(|i| orders[*i].as_deref() == Some("600002")).map(|i| dates[i].unwrap()).collect();
    let dec20 = orderlake::lake::rows::days_since_epoch(reference::day("12/20/2019")) as i64;
    assert_eq!(moved, vec![dec20; 3], "every line of the moved order carries its new date");

    // The last MERGE read the window 12/01..12/20 only: the file of 11/01 was skipped.
    for rel in ["gold/order_totals", "gold/order_lines"] {
        let m = last_merge_metrics(&s, rel).await;
        let skipped = m["num_target_files_skipped_during_scan"].as_u64().unwrap_or(0);
        assert!(skipped >= 1, "{rel}: the MERGE skipped the files outside its date window: {m}");
        assert_eq!(
            m["num_target_rows_updated"].as_u64(),
            Some(if rel == "gold/order_totals" { 1 } else { 2 }),
            "{rel}: {m}"
        );
    }
}
