//! Logs as a collector takes them: with `ORDERLAKE_LOG_FORMAT=json` every stderr line of a run is
//! one JSON object and a batch's line carries its figures as fields. A decoder panic (injected
//! with `ORDERLAKE_TEST_FAIL_AT=decoder-panic`, as a decoder bug would panic) is an ERROR line
//! with its place, while its event goes to the dead letters and the rest of the batch lands.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::support::*;

fn sale(order: &str, product: &str) -> String {
    format!(
        r#"{{"TransactionNo":"{order}","Date":"12/9/2019","ProductNo":"{product}","ProductName":"Mug","Price":2.50,"Quantity":4,"CustomerNo":17490,"Country":"France"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_and_a_decoder_panic_is_logged_while_the_rest_lands() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("logs");
    let s = settings(&name, &LakeKind::Local(dir.path().to_path_buf()), true);
    orderlake::source::kafka::ensure_topics(&s, std::slice::from_ref(&s.sales_topic)).await.unwrap();
    let p: FutureProducer = orderlake::source::kafka::base_config(&s).create().unwrap();
    for (key, order, product) in [("a", "700001", "P1"), ("b", "700002", "PANIC"), ("c", "700003", "P2")] {
        let value = sale(order, product);
        let record = FutureRecord::to(&s.sales_topic).key(key).payload(&value);
        p.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }

    let out = orderlake_cmd(&s)
        .args(["run", "--once"])
        .env("ORDERLAKE_LOG_FORMAT", "json")
        .env("ORDERLAKE_TEST_FAIL_AT", "decoder-panic")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run --once failed:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
        .collect();
    let message = |l: &Value| l["fields"]["message"].as_str().unwrap_or_default().to_string();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()), "{log}");

    let batch = lines.iter().find(|l| message(l) == "batch committed").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(batch["fields"]["events"], 3, "{batch}");
    assert_eq!(batch["fields"]["dead_letters"], 1, "{batch}");
    assert_eq!(batch["fields"]["topic"], s.sales_topic.as_str(), "{batch}");

    let panic = lines.iter().find(|l| message(l).starts_with("panicked: injected decoder panic")).expect("the panic");
    assert_eq!(panic["level"], "ERROR", "{panic}");
    assert!(panic["fields"]["location"].as_str().unwrap().starts_with("src/decode/mod.rs:"), "{panic}");
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR" && message(l).contains("This is a bug in orderlake")),
        "the guard says what became of the event:\n{log}"
    );

    // The panicking line is a dead letter that says so; the order row it had added is gone.
    let dl = read_table(&s, "bronze/_dead_letters").await;
    assert_eq!(strs(&dl, "key"), vec![Some("b".to_string())]);
    let error = strs(&dl, "error").remove(0).unwrap();
    assert!(error.starts_with("decoder panicked (a bug in orderlake"), "{error}");
    let silver = keyed(&read_table(&s, "silver/orders").await, "order_id", &[]);
    assert_eq!(silver.keys().collect::<Vec<_>>(), ["700001", "700003"], "no row of the panicking line");
    let totals = keyed(&read_table(&s, "gold/order_totals").await, "order_id", &["total_amount"]);
    assert_eq!(totals.get("700001"), Some(&vec![1000]));
    assert_eq!(totals.get("700003"), Some(&vec![1000]));
    let docs = mongo_docs(&s, "order_totals").await;
    let ids: Vec<&str> = docs.iter().map(|d| d.get_str("_id").unwrap()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"700001") && ids.contains(&"700003"), "{ids:?}");
}
