//! The gold order tables are written by rewriting only the files that hold the batch's orders,
//! searched within the batch's date window: an order whose date moved must still be found where it
//! was (one row per order, its lines moved with it), and files of other orders are left alone, as
//! the commit's own metrics say. Files hold one id family each, so reads by order id can skip them.

use orderlake::lake::Lake;
use orderlake::lake::rewrite::Search;
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
async fn last_commit_metrics(s: &orderlake::config::Settings, rel: &str) -> serde_json::Value {
    let t = Lake::new(s).open(rel).await.unwrap().expect("table exists");
    let mut history = t.history(Some(1));
    let info = futures::StreamExt::next(&mut history).await.expect("a commit").unwrap().info;
    info.get("operationMetrics").cloned().unwrap_or_else(|| panic!("{rel}: last commit has MERGE metrics: {info:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_date_moved_is_found_and_only_its_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("gold-window");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), false);
    let phases = [
        // Each phase is its own run, so its rows land in their own files.
        vec![line("600001", "11/1/2019", "22001", 3), line("600001", "11/1/2019", "22002", 1)],
        vec![
            line("600002", "12/1/2019", "22001", 2),
            line("600002", "12/1/2019", "22003", 4),
            line("600004", "12/1/2019", "22002", 7),
        ],
        // 600002 gets a line dated three weeks later: the order moves to 12/20 (the last line's
        // date wins), and its row dated 12/01 must be replaced, not kept beside the new one.
        vec![line("600002", "12/20/2019", "22004", 5), line("600003", "12/20/2019", "22001", 1)],
    ];
    run_phases(&s, &phases).await;
    let lines = read_table(&s, "gold/order_lines").await;
    let (orders, dates) = (strs(&lines, "order_id"), ints(&lines, "order_date"));
    let moved: Vec<i64> =
        (0..orders.len()).filter(|i| orders[*i].as_deref() == Some("600002")).map(|i| dates[i].unwrap()).collect();
    let dec20 = orderlake::lake::rows::days_since_epoch(reference::day("12/20/2019")) as i64;
    assert_eq!(moved, vec![dec20; 3], "every line of the moved order carries its new date");

    // The last batch rewrote the one file holding 600002 (copying 600004 over) and left the file
    // of 600001 alone; its new rows went to a file of their own.
    for (rel, copied, written) in [("gold/order_totals", 1, 2), ("gold/order_lines", 1, 4)] {
        let m = last_commit_metrics(&s, rel).await;
        assert_eq!(m["files_rewritten"].as_u64(), Some(1), "{rel}: {m}");
        assert_eq!(m["rows_copied"].as_u64(), Some(copied), "{rel}: {m}");
        assert_eq!(m["rows_written"].as_u64(), Some(written), "{rel}: {m}");
    }
}

/// A rewrite is only right against the version it searched: over a table another writer moved
/// since, it must fail as a commit conflict (callers then MERGE) and leave the table as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_over_a_table_that_moved_fails_as_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("gold-window-race");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), false);
    let records = vec![line("700001", "12/1/2019", "22001", 3), line("700002", "12/1/2019", "22002", 1)];
    produce::publish(&s, &name, &records, None).await.unwrap();
    run_once(&s).await;

    let rel = "gold/order_totals";
    let lake = Lake::new(&s);
    let batches = read_table(&s, rel).await;
    let rows = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let stale = lake.open(rel).await.unwrap().unwrap();
    let v = orderlake::lake::version_of(&stale);
    // Another writer replaces the same orders first.
    let fresh = lake.open(rel).await.unwrap().unwrap();
    orderlake::lake::rewrite::replace_keys(fresh, "order_id", rows.clone(), Search::All, None, "order_id", vec![])
        .await
        .unwrap();
    assert_eq!(table_version(&s, rel).await, Some(v + 1));

    let err = orderlake::lake::rewrite::replace_keys(stale, "order_id", rows, Search::All, None, "order_id", vec![])
        .await
        .unwrap_err();
    assert!(err.is_commit_conflict(), "a rewrite over a newer version is a commit conflict: {err}");
    assert_eq!(table_version(&s, rel).await, Some(v + 1), "the failed rewrite committed nothing");
    let ids = strs(&read_table(&s, rel).await, "order_id");
    assert_eq!(ids.len(), 2, "still one row per order: {ids:?}");
}

/// `(min, max)` of `column` in every file of a table, from the log's statistics.
async fn file_ranges(s: &orderlake::config::Settings, rel: &str, column: &str) -> Vec<(String, String)> {
    let t = Lake::new(s).open(rel).await.unwrap().expect("table exists");
    let data = t.snapshot().unwrap().log_data();
    data.iter()
        .map(|f| {
            let stats: serde_json::Value = serde_json::from_str(&f.stats().expect("files carry statistics")).unwrap();
            let v = |m: &str| {
                stats[m][column].as_str().unwrap_or_else(|| panic!("{rel}: {m}.{column}: {stats}")).to_string()
            };
            (v("minValues"), v("maxValues"))
        })
        .collect()
}

/// The tables whose files are written clustered by order id.
const KEYED: [&str; 4] = ["gold/order_totals", "gold/order_lines", "silver/orders", "silver/order_items"];

/// Publishes and runs each phase in turn, then checks the lake against the reference.
async fn run_phases(s: &orderlake::config::Settings, phases: &[Vec<SaleRecord>]) {
    let mut all = Vec::new();
    for records in phases {
        produce::publish(s, &s.sales_topic, records, None).await.unwrap();
        run_once(s).await;
        all.extend(records.iter().cloned());
    }
    assert_lake_matches(s, &reference::compute(&all)).await;
}

/// Order numbers crossing a power of ten: as strings, "999999" sorts after "1000000", so a file
/// holding both would span almost every id ("1…" to "9…") and every later read by order id would
/// scan it. Ids of a new length are a family of their own, written to files of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_past_a_power_of_ten_are_a_family_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("gold-digits");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), false);
    let phases = [
        ["999998", "999999", "1000000", "1000001"].map(|o| line(o, "12/2/2019", "22001", 2)).to_vec(),
        // A late line of 1000001: only the file of the seven-digit ids holds it.
        vec![line("1000001", "12/2/2019", "22002", 1)],
    ];
    run_phases(&s, &phases).await;
    for rel in KEYED {
        let ranges = file_ranges(&s, rel, "order_id").await;
        for (lo, hi) in &ranges {
            assert_eq!(lo.len(), hi.len(), "{rel}: a file spans ids of two lengths: {ranges:?}");
        }
    }
    let m = last_commit_metrics(&s, "gold/order_totals").await;
    assert_eq!((m["files_rewritten"].as_u64(), m["rows_copied"].as_u64()), (Some(1), Some(1)), "{m}");
}

/// Orders ("6…") and cancellations ("C6…") arrive mixed; a file holding both would span every id
/// between them, so no read by order id could skip it. Files are written one id family each, and
/// an update to an order rewrites only its family's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_hold_one_id_family_so_a_batch_rewrites_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("gold-families");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), false);
    let phases = [
        vec![
            line("610001", "12/1/2019", "22001", 3),
            line("C610002", "12/1/2019", "22001", -1),
            line("610003", "12/1/2019", "22002", 2),
            line("C610004", "12/1/2019", "22002", -2),
        ],
        // A late line of 610003: only the file of the "6…" family holds it.
        vec![line("610003", "12/1/2019", "22003", 1)],
    ];
    run_phases(&s, &phases).await;
    for rel in KEYED {
        let ranges = file_ranges(&s, rel, "order_id").await;
        assert!(ranges.len() >= 2, "{rel}: the two families are in files of their own: {ranges:?}");
        for (lo, hi) in &ranges {
            assert_eq!(lo.starts_with('C'), hi.starts_with('C'), "{rel}: a file spans two id families: {ranges:?}");
        }
    }
    // The late line rewrote the orders file of its family (610001 copied) and not the other.
    let m = last_commit_metrics(&s, "gold/order_totals").await;
    assert_eq!(m["files_rewritten"].as_u64(), Some(1), "{m}");
    assert_eq!(m["rows_copied"].as_u64(), Some(1), "{m}");
}
