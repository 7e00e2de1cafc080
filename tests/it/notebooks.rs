//! The analysts' notebooks, executed headless against a lake the pipeline built from the bundled
//! sample: every cell runs, the plots render, and the figures they show (read through polars'
//! `scan_delta` and DuckDB's delta extension) equal the totals computed straight from the CSV.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use orderlake::produce;
use serde_json::Value;

use crate::e2e::{run_once, sample};
use crate::reference;
use crate::support::*;

/// The interpreter of the notebooks' own venv (`infra/local/install.sh notebooks`).
fn notebook_python() -> PathBuf {
    let venv =
        std::env::var("ORDERLAKE_NB_VENV").map(PathBuf::from).unwrap_or_else(|_| cache_dir().join("notebooks-venv"));
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} is missing: run `bash infra/local/install.sh notebooks`", python.display());
    python
}

fn money(cents: i64) -> String {
    format!("{}{}.{:02}", if cents < 0 { "-" } else { "" }, cents.abs() / 100, cents.abs() % 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebooks_execute_headless_and_show_the_sales_figures() {
    let name = unique("notebooks");
    let s = settings(&name, &LakeKind::Azurite, false);
    let records = sample();
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    run_once(&s).await;

    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(notebook_python());
    cmd.arg(repo_root().join("tests/py/run_notebooks.py"))
        .arg(out_dir.path())
        .env("ORDERLAKE_LAKE", s.lake.as_str())
        .env("AZURITE_PORT", azurite_port());
    for (k, v) in &s.storage_options {
        cmd.env(k.to_ascii_uppercase(), v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "notebooks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = reference::compute(&records);

    // Sales overview: revenue and orders per country, cancellations, three plots.
    let sales = &results["sales_overview"];
    assert_eq!(sales["images"], 3, "daily revenue, top products and cancellations are plotted");
    let (mut revenue, mut orders, mut cancelled, mut cancelled_amount) = (BTreeMap::new(), BTreeMap::new(), 0, 0);
    for (key, v) in &r.daily {
        let country = key.split_once('|').unwrap().1.to_string();
        *revenue.entry(country.clone()).or_insert(0) += v[2];
        *orders.entry(country).or_insert(0) += v[0];
        cancelled += v[3];
        cancelled_amount += v[4];
    }
    let shown: BTreeMap<String, String> =
        serde_json::from_value(sales["summary"]["revenue_by_country"].clone()).unwrap();
    assert_eq!(shown, revenue.iter().map(|(c, v)| (c.clone(), money(*v))).collect(), "revenue by country");
    let shown: BTreeMap<String, i64> = serde_json::from_value(sales["summary"]["orders_by_country"].clone()).unwrap();
    assert_eq!(shown, orders, "orders by country");
    assert_eq!(sales["summary"]["cancelled_orders"], cancelled);
    assert_eq!(sales["summary"]["cancelled_amount"], money(cancelled_amount));
    // The top product DuckDB shows is the one the lake holds (read here by delta-rs).
    let products = read_table(&s, "gold/product_sales").await;
    let best = ints(&products, "revenue")
        .into_iter()
        .zip(strs(&products, "product_id"))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    let (best_revenue, best_product) = best.unwrap();
    assert_eq!(sales["summary"]["top_product"], best_product.unwrap());
    assert_eq!(sales["summary"]["top_product_revenue"], money(best_revenue.unwrap()));

    // Customers and orders: counts, repeat customers and the best customer, two plots.
    let customers = &results["customers_and_orders"];
    assert_eq!(customers["images"], 2, "purchase frequency and basket size are plotted");
    assert_eq!(customers["summary"]["customers"], r.customers.len());
    assert_eq!(customers["summary"]["repeat_customers"], r.customers.values().filter(|v| v[0] >= 2).count());
    let top = r.customers.iter().max_by(|a, b| a.1[2].cmp(&b.1[2]).then_with(|| b.0.cmp(a.0))).unwrap();
    assert_eq!(customers["summary"]["top_customer"], top.0.as_str());
    assert_eq!(customers["summary"]["top_customer_revenue"], money(top.1[2]));
    assert_eq!(customers["summary"]["orders"], orders.values().sum::<i64>());
}
