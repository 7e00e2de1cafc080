//! Debezium CDC end to end on the real services: a scripted history of inserts, updates and
//! deletes across the four tables (with sales events in the same pipeline) must leave silver
//! equal to the source's final state row for row, and gold and MongoDB equal to totals computed
//! from that state. Replays, duplicates and disorder across partitions change nothing; a column
//! added mid-stream appears in silver; a masked column's clear value is nowhere.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orderlake::cdc_gen::{self, CdcRecord, ShopDb};
use orderlake::config::Settings;
use orderlake::produce;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::e2e::{assert_lake_matches, assert_mongo_matches, run_once};
use crate::reference::{self, Reference};
use crate::support::*;

pub fn cdc_toml(prefix: &str) -> String {
    format!("[cdc]\nprefix = \"{prefix}\"\n[cdc.tables.customers]\npii = {{ credit_card = \"mask\" }}\n")
}

/// Totals of the source database's final state, by the contract's definitions.
pub fn cdc_reference(db: &ShopDb) -> Reference {
    let mut r = Reference::default();
    for o in db.orders.values() {
        let items: Vec<_> = db.items.values().filter(|i| i.order_id == o.id).collect();
        let units: i64 = items.iter().map(|i| i.quantity).sum();
        let total: i64 =
            items.iter().map(|i| i.unit_price.unwrap_or(db.products[&i.product_id].price) * i.quantity).sum();
        r.orders.insert(o.id.to_string(), vec![items.len() as i64, units, total]);
        let cancelled = o.status == "cancelled";
        let counts = !cancelled || total < 0;
        if let Some(c) = o.customer_id {
            let e = r.customers.entry(c.to_string()).or_insert_with(|| vec![0, 0, 0]);
            e[0] += i64::from(!cancelled);
            if counts {
                e[1] += units;
                e[2] += total;
            }
        }
        let d =
            r.daily.entry(format!("{}|{}", o.order_date.format("%Y-%m-%d"), o.country)).or_insert_with(|| vec![0; 5]);
        d[0] += i64::from(!cancelled);
        if counts {
            d[1] += units;
            d[2] += total;
        }
        if cancelled {
            d[3] += 1;
            d[4] += total.abs();
        }
    }
    r
}

fn union(mut a: Reference, b: Reference) -> Reference {
    a.orders.extend(b.orders);
    a.customers.extend(b.customers);
    a.daily.extend(b.daily);
    a
}

/// Silver rows of the CDC keys equal the database, row for row.
async fn assert_silver_is_the_source(s: &Settings, db: &ShopDb) {
    let orders = read_table(s, "silver/orders").await;
    let (ids, status, country, cust) =
        (strs(&orders, "order_id"), strs(&orders, "status"), strs(&orders, "country"), strs(&orders, "customer_id"));
    let got: BTreeMap<String, (String, String, Option<String>)> = (0..ids.len())
        .filter(|i| ids[*i].as_ref().unwrap().len() <= 5)
        .map(|i| (ids[i].clone().unwrap(), (status[i].clone().unwrap(), country[i].clone().unwrap(), cust[i].clone())))
        .collect();
    let want: BTreeMap<String, (String, String, Option<String>)> = db
        .orders
        .values()
        .map(|o| (o.id.to_string(), (o.status.clone(), o.country.clone(), o.customer_id.map(|c| c.to_string()))))
        .collect();
    assert_eq!(got, want, "silver/orders");

    let items = read_table(s, "silver/order_items").await;
    let (ids, oid, pid, qty, price) = (
        strs(&items, "item_id"),
        strs(&items, "order_id"),
        strs(&items, "product_id"),
        ints(&items, "quantity"),
        ints(&items, "unit_price"),
    );
    let got: BTreeMap<String, (String, String, i64, Option<i64>)> = (0..ids.len())
        .filter(|i| !ids[*i].as_ref().unwrap().contains('-'))
        .map(|i| {
            (ids[i].clone().unwrap(), (oid[i].clone().unwrap(), pid[i].clone().unwrap(), qty[i].unwrap(), price[i]))
        })
        .collect();
    let want: BTreeMap<String, (String, String, i64, Option<i64>)> = db
        .items
        .values()
        .map(|i| (i.id.to_string(), (i.order_id.to_string(), i.product_id.clone(), i.quantity, i.unit_price)))
        .collect();
    assert_eq!(got, want, "silver/order_items");

    let products = read_table(s, "silver/products").await;
    let (ids, names, prices) = (strs(&products, "product_id"), strs(&products, "name"), ints(&products, "price"));
    let got: BTreeMap<String, (String, i64)> = (0..ids.len())
        .filter(|i| ids[*i].as_ref().unwrap().starts_with('P'))
        .map(|i| (ids[i].clone().unwrap(), (names[i].clone().unwrap(), prices[i].unwrap())))
        .collect();
    let want: BTreeMap<String, (String, i64)> =
        db.products.values().map(|p| (p.id.clone(), (p.name.clone(), p.price))).collect();
    assert_eq!(got, want, "silver/products");

    let customers = read_table(s, "silver/customers").await;
    let got: BTreeMap<String, String> = strs(&customers, "customer_id")
        .into_iter()
        .map(Option::unwrap)
        .zip(strs(&customers, "email").into_iter().map(Option::unwrap))
        .collect();
    let want: BTreeMap<String, String> = db.customers.values().map(|c| (c.id.to_string(), c.email.clone())).collect();
    assert_eq!(got, want, "silver/customers");
}

async fn gold_snapshot(s: &Settings) -> Vec<BTreeMap<String, Vec<i64>>> {
    vec![
        keyed(&read_table(s, "gold/order_totals").await, "order_id", &["lines", "units", "total_amount"]),
        keyed(&read_table(s, "gold/order_lines").await, "item_id", &["quantity", "unit_price", "line_amount"]),
        keyed(&read_table(s, "gold/customer_totals").await, "customer_id", &["orders", "units", "revenue"]),
        keyed(&read_table(s, "gold/product_sales").await, "product_id", &["orders", "units", "revenue"]),
    ]
}

/// Every file under `dir`, as bytes, must not contain any of `needles`.
fn assert_nowhere_on_disk(dir: &std::path::Path, needles: &[String]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).unwrap();
            for n in needles {
                assert!(!bytes.windows(n.len()).any(|w| w == n.as_bytes()), "{n} found in {}", p.display());
            }
        }
    }
    assert!(files > 20, "scanned the lake ({files} files)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_history_lands_as_the_source_state_and_replays_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cdc");
    let prefix = format!("{name}.public");
    let s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), true, &cdc_toml(&prefix));
    // Uncompressed Parquet would be needed to scan values byte-for-byte; the scan below also reads every table.
    let history = cdc_gen::synthetic(700, 11, true);
    assert!(history.records.iter().filter(|r| r.value.is_none()).count() > 10, "the history deletes rows");
    produce::publish_cdc(&s, &prefix, &history.records).await.unwrap();
    let sales = produce::synthetic(300, 3);
    produce::publish(&s, &s.sales_topic, &sales, None).await.unwrap();
    run_once(&s).await;

    assert_silver_is_the_source(&s, &history.db).await;
    let r = union(reference::compute(&sales), cdc_reference(&history.db));
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;

    // Schema evolution: `channel` appeared mid-stream; orders last written before it have null.
    let orders = read_table(&s, "silver/orders").await;
    let channel: BTreeMap<String, Option<String>> =
        strs(&orders, "order_id").into_iter().map(Option::unwrap).zip(strs(&orders, "channel")).collect();
    let mut seen = (0, 0);
    for o in history.db.orders.values() {
        assert_eq!(channel[&o.id.to_string()], o.channel, "channel of order {}", o.id);
        if o.channel.is_some() { seen.0 += 1 } else { seen.1 += 1 }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "history has orders from before and after the new column: {seen:?}");

    // PII: the masked card numbers are nowhere — not in any lake file, not in any table, not in MongoDB.
    let cards: Vec<String> = history.db.customers.values().map(|c| c.credit_card.clone()).collect();
    let customers = read_table(&s, "silver/customers").await;
    for v in strs(&customers, "credit_card") {
        let v = v.unwrap();
        assert!(v.starts_with("************") && v.len() == 16, "masked: {v}");
    }
    let bronze = read_table(&s, &format!("bronze/{prefix}.customers")).await;
    for v in strs(&bronze, "value").into_iter().flatten() {
        assert!(!cards.iter().any(|c| v.contains(c.as_str())), "bronze holds a clear card number");
    }
    assert_nowhere_on_disk(dir.path(), &cards);
    for coll in ["orders", "order_totals", "customer_totals", "daily_sales"] {
        for d in mongo_docs(&s, coll).await {
            let text = d.to_string();
            assert!(!cards.iter().any(|c| text.contains(c.as_str())), "card number in mongo {coll}");
        }
    }

    // Replay: the whole history published again (duplicates) leaves everything as it was.
    let before = gold_snapshot(&s).await;
    produce::publish_cdc(&s, &prefix, &history.records).await.unwrap();
    run_once(&s).await;
    assert_silver_is_the_source(&s, &history.db).await;
    assert_eq!(gold_snapshot(&s).await, before, "a replayed history changes no gold row");
    assert_mongo_matches(&s, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_out_of_order_across_partitions_converges_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cdc-disorder");
    let prefix = format!("{name}.public");
    let mut s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), false, &cdc_toml(&prefix));
    // Small batches: a delete and the older changes of the same row land in different batches.
    s.batch.max_records = 60;
    let history = cdc_gen::synthetic(500, 12, false);
    let topics: Vec<String> = orderlake::model::Entity::ALL.iter().map(|e| format!("{prefix}.{}", e.table())).collect();
    orderlake::source::kafka::ensure_topics(&s, &topics).await.unwrap();

    // Shuffled, with a third of the records duplicated, each sent to a random partition.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(99);
    let mut records: Vec<&CdcRecord> = history.records.iter().collect();
    records.extend(history.records.iter().filter(|_| rng.gen_bool(0.33)));
    records.shuffle(&mut rng);
    let producer: FutureProducer = orderlake::source::kafka::base_config(&s).create().unwrap();
    for r in &records {
        let topic = format!("{prefix}.{}", r.entity.table());
        let mut rec = FutureRecord::<String, String>::to(&topic).key(&r.key).partition(rng.gen_range(0..3));
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        producer.send(rec, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
    run_once(&s).await;
    let batches = strs(&read_table(&s, "_orderlake/batches").await, "topic").len();
    assert!(batches >= 8, "the history was applied over many batches ({batches})");

    assert_silver_is_the_source(&s, &history.db).await;
    let r = cdc_reference(&history.db);
    let ot = read_table(&s, "gold/order_totals").await;
    assert_eq!(keyed(&ot, "order_id", &["lines", "units", "total_amount"]), r.orders, "gold/order_totals");
    let ct = read_table(&s, "gold/customer_totals").await;
    assert_eq!(keyed(&ct, "customer_id", &["orders", "units", "revenue"]), r.customers, "gold/customer_totals");
    // Renamed products: no gold line keeps a stale name.
    let lines = read_table(&s, "gold/order_lines").await;
    let names: BTreeSet<(String, String)> = strs(&lines, "product_id")
        .into_iter()
        .map(Option::unwrap)
        .zip(strs(&lines, "product_name").into_iter().map(Option::unwrap))
        .collect();
    for (pid, n) in names {
        assert_eq!(history.db.products[&pid].name, n, "line of {pid} carries the current name");
    }
    // And so does product sales, which the next batch compares with silver to find stale lines.
    let sold = read_table(&s, "gold/product_sales").await;
    for (pid, n) in strs(&sold, "product_id").into_iter().zip(strs(&sold, "product_name")) {
        let pid = pid.unwrap();
        assert_eq!(Some(&history.db.products[&pid].name), n.as_ref(), "product sales of {pid} carry the current name");
    }
}

/// `ALTER TABLE orders ADD COLUMN channel` between two runs: the first change with the column
/// updates one order and adds another, while the silver file it rewrites holds four orders it does
/// not touch. delta-rs 1.1's MERGE with schema evolution failed that batch on every retry (#4527),
/// which stopped the topic; the column must appear, set where the source set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_to_a_table_that_has_rows_appears_in_silver() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cdc-alter");
    let prefix = format!("{name}.public");
    let s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), false, &cdc_toml(&prefix));
    let change = |id: i64, lsn: i64, channel: Option<&str>| {
        let mut after = serde_json::json!({"order_id": id, "customer_id": 7, "country": "France",
            "order_date": 20058, "status": if lsn > 100 { "paid" } else { "placed" }});
        if let Some(c) = channel {
            after["channel"] = c.into();
        }
        let v = serde_json::json!({"before": null, "after": after, "op": if lsn > 100 { "u" } else { "c" },
            "source": {"lsn": lsn, "ts_ms": 1_733_011_200_000i64 + lsn}, "ts_ms": 1_733_011_200_000i64 + lsn});
        CdcRecord {
            entity: orderlake::model::Entity::Orders,
            key: serde_json::json!({ "order_id": id }).to_string(),
            value: Some(v.to_string()),
        }
    };
    let first: Vec<CdcRecord> = (1..=5).map(|id| change(id, id, None)).collect();
    produce::publish_cdc(&s, &prefix, &first).await.unwrap();
    run_once(&s).await;
    produce::publish_cdc(&s, &prefix, &[change(1, 101, Some("web")), change(6, 102, Some("store"))]).await.unwrap();
    run_once(&s).await;

    let orders = read_table(&s, "silver/orders").await;
    let ids = strs(&orders, "order_id").into_iter().map(Option::unwrap);
    let got: BTreeMap<String, (Option<String>, Option<String>)> =
        ids.zip(strs(&orders, "channel").into_iter().zip(strs(&orders, "status"))).collect();
    let want: BTreeMap<String, (Option<String>, Option<String>)> = [
        ("1", Some("web"), "paid"),
        ("2", None, "placed"),
        ("3", None, "placed"),
        ("4", None, "placed"),
        ("5", None, "placed"),
        ("6", Some("store"), "paid"),
    ]
    .into_iter()
    .map(|(k, c, st)| (k.to_string(), (c.map(str::to_string), Some(st.to_string()))))
    .collect();
    assert_eq!(got, want);
}

/// A batch over several topics whose `orders` topic fails: the topics before it (in name order,
/// `customers` and `order_items`) are committed and their MongoDB publishes, held until the batch
/// was through its topics, still go out. Nothing waits forever on the failed batch, and the rerun
/// ends with the lake and MongoDB equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_at_one_topic_lets_the_held_publishes_of_the_others_go() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cdc-held-fail");
    let prefix = format!("{name}.public");
    let s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), true, &cdc_toml(&prefix));
    let history = cdc_gen::synthetic(700, 17, true);
    produce::publish_cdc(&s, &prefix, &history.records).await.unwrap();
    let (items, orders) = (format!("{prefix}.order_items"), format!("{prefix}.orders"));
    // `publish_cdc` produces to all four topics, so the first batch spans them.

    let failing = format!("after-silver:{orders}");
    tokio::time::timeout(Duration::from_secs(120), crate::restart::run_failing_at(&s, &failing))
        .await
        .expect("the failed batch returned");
    let sink = orderlake::sink::mongo::MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();
    // Committed before `orders` failed, their publishes were held: both still go out in full.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for topic in [format!("{prefix}.customers"), items] {
        let bronze = table_version(&s, &format!("bronze/{topic}")).await.expect("landed") as i64;
        while sink.progress(&topic).await.unwrap() != Some(bronze) {
            assert!(std::time::Instant::now() < deadline, "{topic}: its held publish never went out");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let orders_bronze = table_version(&s, &format!("bronze/{orders}")).await.expect("orders landed") as i64;
    assert!(sink.progress(&orders).await.unwrap().is_none_or(|v| v < orders_bronze), "orders' publish never ran");

    run_once(&s).await;
    assert_silver_is_the_source(&s, &history.db).await;
    let r = cdc_reference(&history.db);
    assert_lake_matches(&s, &r).await;
    assert_mongo_matches(&s, &r).await;
}
