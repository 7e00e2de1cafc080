//! Bad input never crashes the pipeline and is never dropped silently: a corpus of malformed
//! events (invalid JSON and UTF-8, wrong types, missing fields, absurd values, unknown Debezium
//! ops, schema/payload mismatches, a 10 MB message, an empty key) lands in the dead-letter table
//! with a precise reason each, and the valid events around them are processed.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::e2e::run_once;
use crate::support::*;

const GOOD: &str = r#"{"TransactionNo":"900001","Date":"12/9/2019","ProductNo":"P1","ProductName":"Mug","Price":2.50,"Quantity":4,"CustomerNo":17490,"Country":"France"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_dead_lettered_with_a_reason_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("bad");
    let prefix = format!("{name}.public");
    let s = settings_with(
        &name,
        &LakeKind::Local(dir.path().to_path_buf()),
        false,
        &format!("[cdc]\nprefix = \"{prefix}\"\n"),
    );
    let orders_topic = format!("{prefix}.orders");
    orderlake::source::kafka::ensure_topics(&s, &[s.sales_topic.clone(), orders_topic.clone()]).await.unwrap();

    let huge = format!(
        r#"{{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","ProductName":"{}","Price":1,"Quantity":1}}"#,
        "x".repeat(2 << 20)
    );
    let sales: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad-json", b"{\"TransactionNo\": ".to_vec(), "invalid sales event JSON"),
        ("bad-utf8", vec![b'{', 0xff, 0xfe, b'}'], "value is not valid UTF-8"),
        ("bad-type", br#"{"TransactionNo":["x"],"Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1}"#.to_vec(), "TransactionNo: expected a string or number"),
        ("bad-missing", br#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Quantity":1}"#.to_vec(), "Price is missing"),
        ("bad-negative-date", br#"{"TransactionNo":"1","Date":"-1/-5/2019","ProductNo":"P","Price":1,"Quantity":1}"#.to_vec(), "Date '-1/-5/2019' is not M/D/YYYY"),
        ("bad-year", br#"{"TransactionNo":"1","Date":"1/5/0019","ProductNo":"P","Price":1,"Quantity":1}"#.to_vec(), "out of range"),
        ("bad-40-digits", br#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1234567890123456789012345678901234567890,"Quantity":1}"#.to_vec(), "does not fit decimal(18,2)"),
        ("bad-huge", huge.into_bytes(), "exceeds the 1 MiB limit"),
        ("bad-null", Vec::new(), "invalid sales event JSON"),
    ];
    let cdc: Vec<(&str, &str, &str)> = vec![
        ("cdc-unknown-op", r#"{"op":"x","after":{"order_id":1},"source":{"lsn":1}}"#, "unknown Debezium op 'x'"),
        (
            "cdc-mismatch",
            r#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"total"}]}]},"payload":{"op":"c","after":{"order_id":1,"total":"%%not-base64%%"},"source":{"lsn":2}}}"#,
            "column total: decimal bytes",
        ),
        ("cdc-after-array", r#"{"op":"u","after":[1,2],"source":{"lsn":3}}"#, "'after' is not an object"),
        ("cdc-no-key", r#"{"op":"c","after":{"status":"paid"},"source":{"lsn":4}}"#, "order_id is missing"),
        ("", r#"{"op":"d","before":null,"source":{"lsn":5}}"#, "delete without a key"),
        // Nanoseconds where a transform should have put milliseconds.
        (
            "cdc-ns-source-time",
            r#"{"order_id":9,"__deleted":"false","__source_ts_ms":1733060033060000000,"__lsn":6}"#,
            "source ts_ms 1733060033060000000 is out of range",
        ),
    ];

    let p: FutureProducer =
        orderlake::source::kafka::base_config(&s).set("message.max.bytes", "12000000").create().unwrap();
    let send = |topic: String, key: String, value: Vec<u8>| {
        let p = p.clone();
        async move {
            p.send(FutureRecord::to(&topic).key(&key).payload(&value), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    send(s.sales_topic.clone(), "good-1".into(), GOOD.as_bytes().to_vec()).await;
    for (k, v, _) in &sales {
        send(s.sales_topic.clone(), k.to_string(), v.clone()).await;
    }
    // A producer sets the Kafka timestamp: one beyond microseconds' range is no reason to lose the
    // event (it broke the bronze write before: a wrapped time, or a panic in a debug build).
    let far_line = GOOD.replace("900001", "900003");
    let record = FutureRecord::to(&s.sales_topic).key("far-kafka-time").payload(&far_line).timestamp(i64::MAX / 10);
    p.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    // An empty key is no reason to reject a valid sales event.
    send(s.sales_topic.clone(), String::new(), GOOD.replace("900001", "900002").into_bytes()).await;
    for (k, v, _) in &cdc {
        send(orders_topic.clone(), k.to_string(), v.as_bytes().to_vec()).await;
    }
    run_once(&s).await;

    let dl = read_table(&s, "bronze/_dead_letters").await;
    let reasons: BTreeMap<String, String> = strs(&dl, "key")
        .into_iter()
        .map(|k| k.unwrap_or_default())
        .zip(strs(&dl, "error").into_iter().map(Option::unwrap))
        .collect();
    assert_eq!(reasons.len(), sales.len() + cdc.len(), "one dead letter per bad event: {reasons:#?}");
    for (k, _, want) in &sales {
        assert!(reasons[*k].contains(want), "{k}: {}", reasons[*k]);
    }
    for (k, _, want) in &cdc {
        assert!(reasons[*k].contains(want), "{k:?}: {}", reasons[*k]);
    }
    // The raw bytes that were not UTF-8 are kept in bronze, recoverably.
    let bronze = read_table(&s, &format!("bronze/{}", s.sales_topic)).await;
    assert!(strs(&bronze, "value").into_iter().flatten().any(|v| v.starts_with(orderlake::model::NOT_UTF8_PREFIX)));
    // The far Kafka timestamp is stored as none, the event kept.
    let far = strs(&bronze, "key").iter().position(|k| k.as_deref() == Some("far-kafka-time")).expect("in bronze");
    assert_eq!(ints(&bronze, "kafka_timestamp")[far], None, "no wrapped time in bronze");
    // The pipeline went on: the good events are in gold.
    let totals = keyed(&read_table(&s, "gold/order_totals").await, "order_id", &["total_amount"]);
    assert_eq!(totals.get("900001"), Some(&vec![1000]));
    assert_eq!(totals.get("900002"), Some(&vec![1000]));
    assert_eq!(totals.get("900003"), Some(&vec![1000]));
}
