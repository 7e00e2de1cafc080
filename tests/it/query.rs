//! `orderlake query` over a lake on Azurite: the answers equal the reference totals, a row limit
//! is announced, and a bad table name fails with the list of tables instead of a stack trace.

use orderlake::produce;

use crate::e2e::run_once;
use crate::reference;
use crate::support::*;

fn query(s: &orderlake::config::Settings, sql: &str, extra: &[&str]) -> (bool, String, String) {
    let out = orderlake_cmd(s).arg("query").args(extra).arg(sql).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_answers_from_the_lake_tables() {
    let s = settings(&unique("query"), &LakeKind::Azurite, false);
    let records = renumbered(produce::synthetic(1500, 5), "8");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    run_once(&s).await;
    let r = reference::compute(&records);

    let (ok, out, err) = query(&s, "SELECT count(*) AS n, sum(lines) AS l FROM gold.order_totals", &[]);
    assert!(ok, "{err}");
    let lines: i64 = r.orders.values().map(|v| v[0]).sum();
    assert!(out.contains(&format!("| {} ", r.orders.len())) && out.contains(&format!("| {lines} ")), "{out}");
    assert!(out.contains("(1 row)"), "{out}");

    // Money comes back exact, as decimal(18,2).
    let revenue: i64 = r.customers.values().map(|v| v[2]).sum();
    let (ok, out, err) = query(&s, "SELECT sum(revenue) AS revenue FROM gold.customer_totals", &[]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("| {}.{:02} ", revenue / 100, (revenue % 100).abs())), "{revenue}: {out}");

    let sql = format!("SELECT \"offset\" FROM bronze.\"{}\" ORDER BY \"offset\"", s.sales_topic);
    let (ok, out, err) = query(&s, &sql, &["--limit", "5"]);
    assert!(ok, "{err}");
    assert!(out.contains("(first 5 rows; there are more: raise --limit)"), "{out}");

    let (ok, _, err) = query(&s, "SELECT * FROM gold.nope", &[]);
    assert!(!ok);
    assert!(err.contains("gold.nope") && err.contains("gold.order_totals"), "names the tables: {err}");
}
