//! The MongoDB publish against the real server: documents that exist go through the guarded
//! upsert, an older gold version never replaces a newer one (a late publish after a restart),
//! and deletes honour the same guard, also against another instance's older publish.

use mongodb::bson::Document;
use orderlake::gold::{AggregateFrames, OrderFrames};
use orderlake::sink::mongo::MongoSink;
use orderlake::sink::tombstones::TOMBSTONES;
use polars::prelude::*;

use crate::support::{int, money, mongo_docs, mongodb_uri, settings, unique};

/// One single-line order per `(id, cents)`, as the gold order tables at `version` hold them.
fn frames(version: i64, orders: &[(&str, i64)], deleted: &[&str]) -> OrderFrames {
    let ids: Vec<&str> = orders.iter().map(|o| o.0).collect();
    let cents: Vec<i64> = orders.iter().map(|o| o.1).collect();
    let n = orders.len();
    OrderFrames {
        order_lines: df! {
            "order_id" => &ids,
            "item_id" => ids.iter().map(|i| format!("{i}-1")).collect::<Vec<_>>(),
            "product_id" => vec!["p1"; n],
            "product_name" => vec!["Lamp"; n],
            "quantity" => vec![1i64; n],
            "unit_price" => &cents,
            "line_amount" => &cents,
        }
        .unwrap(),
        order_totals: df! {
            "order_id" => &ids,
            "customer_id" => vec!["c1"; n],
            "country" => vec!["UK"; n],
            "order_date" => vec![19_723i32; n],
            "status" => vec!["completed"; n],
            "cancelled" => vec![false; n],
            "lines" => vec![1i64; n],
            "units" => vec![1i64; n],
            "total_amount" => &cents,
            "updated_at" => vec![version * 1_000_000; n],
        }
        .unwrap(),
        deleted_orders: deleted.iter().map(|s| s.to_string()).collect(),
        version,
    }
}

fn by_id(docs: Vec<Document>) -> std::collections::BTreeMap<String, (i64, i64)> {
    docs.into_iter()
        .map(|d| (d.get_str("_id").unwrap().to_string(), (money(&d, "total_amount"), int(&d, "_v"))))
        .collect()
}

#[tokio::test]
async fn older_versions_never_replace_newer_documents() {
    let name = unique("publish");
    let s = settings(&name, &crate::support::LakeKind::Local(std::env::temp_dir().join(&name)), true);
    let sink = MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();

    let st = sink.publish_orders(&frames(5, &[("o1", 1000), ("o2", 250)], &[]), None).await.unwrap();
    assert_eq!((st.upserted, st.stale), (4, 0), "two orders, two collections");

    // A late publish of version 3 (e.g. replayed after a crash) finds both documents newer.
    let st = sink.publish_orders(&frames(3, &[("o1", 999)], &[]), None).await.unwrap();
    assert_eq!((st.upserted, st.stale), (0, 2));
    for coll in ["orders", "order_totals"] {
        let docs = by_id(mongo_docs(&s, coll).await);
        assert_eq!(docs["o1"], (1000, 5), "{coll}: version 5 stays");
    }

    // Version 7 replaces the existing document (insert reports it exists, the guarded upsert
    // writes it) and adds a new one.
    let st = sink.publish_orders(&frames(7, &[("o1", 1234), ("o3", 50)], &[]), None).await.unwrap();
    assert_eq!((st.upserted, st.stale), (4, 0));
    let totals = by_id(mongo_docs(&s, "order_totals").await);
    assert_eq!(totals["o1"], (1234, 7));
    assert_eq!(totals["o3"], (50, 7));
    let orders = mongo_docs(&s, "orders").await;
    let o1 = orders.iter().find(|d| d.get_str("_id") == Ok("o1")).unwrap();
    let items = o1.get_array("items").unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(money(items[0].as_document().unwrap(), "amount"), 1234);

    // A delete at version 6 removes o2 (stored at 5) but not o1 (stored at 7).
    let st = sink.publish_orders(&frames(6, &[], &["o1", "o2"]), None).await.unwrap();
    assert_eq!(st.deleted, 2, "o2 from both collections");
    for coll in ["orders", "order_totals"] {
        let ids: Vec<String> = by_id(mongo_docs(&s, coll).await).into_keys().collect();
        assert_eq!(ids, ["o1", "o3"], "{coll}");
    }
    sink.close().await;
}

#[tokio::test]
async fn a_rejected_write_fails_the_publish_and_names_the_collection() {
    let name = unique("publish-rejected");
    let s = settings(&name, &crate::support::LakeKind::Local(std::env::temp_dir().join(&name)), true);
    let sink = MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();
    // An operator's validator that the contract's documents do not satisfy: every insert is
    // refused with a write error other than a duplicate key, which must not pass as "stale".
    sink.database()
        .create_collection("order_totals")
        .validator(mongodb::bson::doc! {"total_amount": {"$type": "string"}})
        .await
        .unwrap();
    let err = sink.publish_orders(&frames(1, &[("o1", 100)], &[]), None).await.unwrap_err().to_string();
    assert!(err.contains("order_totals") && err.contains("121"), "{err}");
    assert!(mongo_docs(&s, "order_totals").await.is_empty());
    sink.close().await;
}

/// One customer total per `(id, cents)` as gold `customer_totals` holds it at `version`.
fn customers(version: i64, rows: &[(&str, i64)], deleted: &[&str]) -> AggregateFrames {
    let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let cents: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let n = rows.len();
    let day = || Series::new("d".into(), vec![19_723i32; n]).cast(&DataType::Date).unwrap();
    let mut customer_totals = df! {
        "customer_id" => &ids,
        "country" => vec!["UK"; n],
        "orders" => vec![1i64; n],
        "units" => vec![1i64; n],
        "revenue" => &cents,
        "updated_at" => vec![version * 1_000_000; n],
    }
    .unwrap();
    customer_totals.with_column(day().with_name("first_order_date".into()).into()).unwrap();
    customer_totals.with_column(day().with_name("last_order_date".into()).into()).unwrap();
    AggregateFrames {
        customer_totals,
        daily_sales: DataFrame::default(),
        deleted_customers: deleted.iter().map(|s| s.to_string()).collect(),
        deleted_days: DataFrame::default(),
        customers_version: version,
        days_version: version,
        customers_whole: None,
        days_whole: None,
    }
}

/// Two instances of a group publish side by side (say one reads `orders`, the other
/// `order_items`): what one deletes must stay deleted when the other's older publish, which read
/// gold before the delete, reaches MongoDB after it. A re-created document (newer) is kept.
#[tokio::test]
async fn a_delete_holds_against_an_older_publish_from_another_instance() {
    let name = unique("publish-tombstones");
    let s = settings(&name, &crate::support::LakeKind::Local(std::env::temp_dir().join(&name)), true);
    let a = MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();
    let b = MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();

    a.publish_orders(&frames(2, &[("o1", 100), ("o2", 200)], &[]), None).await.unwrap();
    a.publish_orders(&frames(5, &[], &["o1"]), None).await.unwrap();
    let st = b.publish_orders(&frames(4, &[("o1", 150), ("o2", 250)], &[]), None).await.unwrap();
    assert_eq!(st.deleted, 2, "o1 deleted again from both collections");
    for coll in ["orders", "order_totals"] {
        let docs = by_id(mongo_docs(&s, coll).await);
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["o2"], "{coll}: the order deleted at 5 stays deleted");
        assert_eq!(docs["o2"], (250, 4), "{coll}");
    }

    // Created again after the delete: a newer version than the tombstone's, so it stays.
    let st = b.publish_orders(&frames(7, &[("o1", 300)], &[]), None).await.unwrap();
    assert_eq!(st.deleted, 0);
    for coll in ["orders", "order_totals"] {
        assert_eq!(by_id(mongo_docs(&s, coll).await)["o1"], (300, 7), "{coll}");
    }

    // Deleted again at 9: its tombstone moves up to 9, so a publish read at 8 is undone as well.
    a.publish_orders(&frames(9, &[], &["o1"]), None).await.unwrap();
    let st = b.publish_orders(&frames(8, &[("o1", 310)], &[]), None).await.unwrap();
    assert_eq!(st.deleted, 2, "the second delete of o1 holds too");
    for coll in ["orders", "order_totals"] {
        assert!(!by_id(mongo_docs(&s, coll).await).contains_key("o1"), "{coll}");
    }

    // The aggregates take the same path: a customer whose last order went.
    a.publish_aggregates(&customers(3, &[("c1", 500), ("c9", 90)], &[])).await.unwrap();
    a.publish_aggregates(&customers(6, &[], &["c9"])).await.unwrap();
    b.publish_aggregates(&customers(5, &[("c1", 700), ("c9", 80)], &[])).await.unwrap();
    let totals: Vec<String> =
        mongo_docs(&s, "customer_totals").await.iter().map(|d| d.get_str("_id").unwrap().to_string()).collect();
    assert_eq!(totals, ["c1"]);

    // Expired tombstones are removed; the per-collection markers stay.
    assert_eq!(a.prune_tombstones(std::time::Duration::ZERO).await.unwrap(), 3, "o1 twice, c9");
    let left: Vec<String> =
        mongo_docs(&s, TOMBSTONES).await.iter().map(|d| d.get_str("_id").unwrap().to_string()).collect();
    assert_eq!(left.len(), 3, "one marker per collection that had deletes: {left:?}");
    a.close().await;
    b.close().await;
}

/// A publish of a whole table (the lake could no longer say which rows changed since MongoDB's
/// position) also removes the documents of every key it does not hold, unless a newer publish
/// wrote them; and those deletes hold against an older publish like any other.
#[tokio::test]
async fn a_whole_table_publish_removes_the_documents_of_rows_the_table_no_longer_holds() {
    let name = unique("publish-whole");
    let s = settings(&name, &crate::support::LakeKind::Local(std::env::temp_dir().join(&name)), true);
    let sink = MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap();
    let revenue = async || -> Vec<(String, i64, i64)> {
        let docs = mongo_docs(&s, "customer_totals").await;
        docs.iter().map(|d| (d.get_str("_id").unwrap().to_string(), money(d, "revenue"), int(d, "_v"))).collect()
    };

    sink.publish_aggregates(&customers(3, &[("c1", 100), ("c2", 200), ("c3", 300)], &[])).await.unwrap();
    sink.publish_aggregates(&customers(9, &[("c4", 400)], &[])).await.unwrap();
    let mut whole = customers(8, &[("c1", 150)], &[]);
    whole.customers_whole = Some(orderlake::gold::republish::WholeAt::new("file:///lake/gold/customer_totals", "g", 7));
    let st = sink.publish_aggregates(&whole).await.unwrap();
    assert_eq!(st.deleted, 2, "c2 and c3");
    let want = [("c1".to_string(), 150, 8), ("c4".to_string(), 400, 9)];
    assert_eq!(revenue().await, want, "c4 was written by a newer publish");

    // A partial publish removes nothing it was not told to.
    sink.publish_aggregates(&customers(10, &[("c5", 500)], &[])).await.unwrap();
    assert_eq!(revenue().await.len(), 3);

    sink.publish_aggregates(&customers(5, &[("c2", 210)], &[])).await.unwrap();
    assert!(!revenue().await.iter().any(|r| r.0 == "c2"), "the sweep's delete holds against an older publish");
    sink.close().await;
}

/// A publish of `frames` for `<name>-<topic>`, in line behind those spawned before it (its tail
/// hands over no aggregates).
fn in_line(
    sink: &std::sync::Arc<MongoSink>,
    name: &str,
    topic: &str,
    orders: OrderFrames,
    fail_at: Option<&str>,
) -> orderlake::pipeline::progress::InFlight {
    let (tail, aggregates) = tokio::sync::oneshot::channel();
    assert!(tail.send(None).is_ok());
    orderlake::pipeline::publish::Publish {
        mongo: std::sync::Arc::clone(sink),
        walks: Default::default(),
        topic: format!("{name}-{topic}"),
        fail_at: fail_at.map(String::from),
        upto: 1,
        orders: Some(orders),
        whole_orders: None,
        aggregates,
        carried: None,
        lag: std::time::Duration::ZERO,
    }
    .spawn(0)
}

/// Three publishes in line on a fresh database: a slow one ahead (1.5 s after its order
/// documents), so the other two are in line before the first of them starts; it deletes o4
/// (written before at version 3) and writes o1 and o2, the one behind it writes o2, o3 and o4.
async fn three_in_line(
    name: &str,
    behind_fails_at: Option<&str>,
) -> (
    std::sync::Arc<MongoSink>,
    orderlake::sink::mongo::PublishStats,
    orderlake::error::Result<Option<orderlake::sink::mongo::PublishStats>>,
) {
    let s = settings(name, &crate::support::LakeKind::Local(std::env::temp_dir().join(name)), true);
    let sink = std::sync::Arc::new(MongoSink::connect(&mongodb_uri(), &s.mongodb_database, &s.group).await.unwrap());
    sink.publish_orders(&frames(3, &[("o4", 40)], &[]), None).await.unwrap();
    let ahead = in_line(&sink, name, "ahead", frames(4, &[("o9", 9)], &[]), Some("slow-order-docs"));
    let first = in_line(&sink, name, "orders", frames(5, &[("o1", 100), ("o2", 200)], &["o4"]), None);
    let second = in_line(&sink, name, "items", behind(), behind_fails_at);
    ahead.task.await.unwrap().unwrap();
    let first = first.task.await.unwrap().unwrap().stats.unwrap();
    let second = second.task.await.unwrap().map(|p| p.stats);
    (sink, first, second)
}

/// The frames of the publish behind.
fn behind() -> OrderFrames {
    frames(6, &[("o2", 222), ("o3", 300), ("o4", 400)], &[])
}

const NEWEST: [(&str, (i64, i64)); 5] =
    [("o1", (100, 5)), ("o2", (222, 6)), ("o3", (300, 6)), ("o4", (400, 6)), ("o9", (9, 4))];

async fn assert_newest(name: &str, coll: &str) {
    let s = settings(name, &crate::support::LakeKind::Local(std::env::temp_dir().join(name)), true);
    let docs = by_id(mongo_docs(&s, coll).await);
    assert_eq!(docs, NEWEST.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), "{coll}");
}

/// Publishes queued one behind the other (a CDC source's topics touch the same orders): the
/// earlier one leaves out the orders a later one writes at a newer version, and MongoDB ends up
/// with every order as the newest publish has it.
#[tokio::test]
async fn a_publish_leaves_to_the_one_queued_behind_it_the_orders_that_one_writes() {
    let name = unique("queued");
    let (sink, first, second) = three_in_line(&name, None).await;
    assert_eq!(
        (first.upserted, first.deleted),
        (2, 0),
        "only o1, in both collections; o2 and o4 left to the later one"
    );
    assert_eq!(second.unwrap().unwrap().upserted, 6);

    let metrics = orderlake::metrics::global().render();
    let series = format!("orderlake_mongodb_orders_left_to_later_total{{topic=\"{name}-orders\"}} 2");
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    assert!(!metrics.contains(&format!("{{topic=\"{name}-items\"}}")), "nothing queued behind the last one");
    for coll in ["order_totals", "orders"] {
        assert_newest(&name, coll).await;
    }
    for topic in ["ahead", "orders", "items"] {
        assert_eq!(sink.progress(&format!("{name}-{topic}")).await.unwrap(), Some(1), "{topic}: its position moved");
    }
}

/// The later publish fails halfway, after the earlier one left its orders to it: the later
/// topic's position stays where it was, so the catch-up republishes that batch's orders from the
/// lake, and MongoDB ends with every order at its newest version.
#[tokio::test]
async fn orders_left_to_a_publish_that_fails_come_back_with_its_topics_catch_up() {
    let name = unique("queuedfail");
    let (sink, first, second) = three_in_line(&name, Some("mid-mongo")).await;
    assert_eq!(first.upserted, 2, "o2 and o4 left to the later one");
    assert!(second.is_err(), "the later publish failed");
    assert_eq!(sink.progress(&format!("{name}-orders")).await.unwrap(), Some(1), "the earlier one is in");
    assert_eq!(sink.progress(&format!("{name}-items")).await.unwrap(), None, "the later topic stays behind");
    // Between the failure and the catch-up, the later batch's `orders` documents are missing.
    let s = settings(&name, &crate::support::LakeKind::Local(std::env::temp_dir().join(&name)), true);
    let orders = by_id(mongo_docs(&s, "orders").await);
    assert_eq!(orders.get("o2"), None, "o2: the earlier publish left it out, the later failed before it");
    assert_eq!(orders["o4"], (40, 3), "o4: not deleted by the earlier publish, not yet rewritten");

    // The catch-up: the same orders again, from the lake.
    sink.publish_orders(&behind(), None).await.unwrap();
    for coll in ["order_totals", "orders"] {
        assert_newest(&name, coll).await;
    }
}
