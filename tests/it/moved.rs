//! An order that moves to another day, country and customer, or goes, takes its share out of the
//! aggregate rows it left. When that batch's MongoDB publish is lost (a crash after the lake's
//! aggregates, before the hand-over), the rerun no longer sees where the order was: the lake is
//! already past it. MongoDB must still end equal to the lake, old rows corrected or removed.

use std::collections::BTreeMap;

use orderlake::cdc_gen::CdcRecord;
use orderlake::config::Settings;
use orderlake::model::Entity;
use orderlake::produce;
use serde_json::json;

use crate::e2e::{assert_mongo_matches, differences, lake_totals, mongo_totals, run_once};
use crate::reference::Reference;
use crate::restart::run_failing_at;
use crate::support::*;

/// A Debezium change without the Connect schema (`after: None` deletes).
fn change(entity: Entity, key: serde_json::Value, lsn: i64, op: &str, after: Option<serde_json::Value>) -> CdcRecord {
    let ts = 1_733_011_200_000i64 + lsn;
    let v = json!({"before": null, "after": after, "op": op, "source": {"lsn": lsn, "ts_ms": ts}, "ts_ms": ts});
    CdcRecord { entity, key: key.to_string(), value: Some(v.to_string()) }
}

fn order(id: i64, customer: i64, country: &str, day: i64, lsn: i64, op: &str) -> CdcRecord {
    let after =
        json!({"order_id": id, "customer_id": customer, "country": country, "order_date": day, "status": "placed"});
    change(Entity::Orders, json!({ "order_id": id }), lsn, op, Some(after))
}

fn item(id: i64, order_id: i64, quantity: i64, lsn: i64) -> CdcRecord {
    let after =
        json!({"item_id": id, "order_id": order_id, "product_id": "P001", "quantity": quantity, "unit_price": "2.50"});
    change(Entity::OrderItems, json!({ "item_id": id }), lsn, "c", Some(after))
}

/// MongoDB's aggregate documents equal the lake's gold rows (and the lake is `want`).
async fn assert_mongo_is_the_lake(s: &Settings, want: &Reference) {
    let lake = lake_totals(s).await;
    assert_eq!(differences("lake", &lake, want), "lake: equal to the source\n");
    let (t, c, d) = lake;
    let as_ref = Reference { orders: t, customers: c, daily: d };
    let mongo = differences("MongoDB", &mongo_totals(s).await, &as_ref);
    assert_eq!(mongo, "MongoDB: equal to the source\n", "MongoDB after the rerun");
    assert_mongo_matches(s, &as_ref).await;
}

/// Settings of a CDC source with MongoDB and a local lake in `dir`, and the topics' prefix.
fn cdc_settings(dir: &tempfile::TempDir, name: &str) -> (Settings, String) {
    let name = unique(name);
    let prefix = format!("{name}.public");
    let s = settings_with(&name, &LakeKind::Local(dir.path().to_path_buf()), true, &crate::cdc::cdc_toml(&prefix));
    (s, prefix)
}

/// MongoDB's documents equal the lake's gold rows, whatever they are.
async fn assert_mongo_equals_the_lake(s: &Settings) {
    let (t, c, d) = lake_totals(s).await;
    let as_ref = Reference { orders: t, customers: c, daily: d };
    let mongo = differences("MongoDB", &mongo_totals(s).await, &as_ref);
    assert_eq!(mongo, "MongoDB: equal to the source\n", "MongoDB after the catch-up");
    assert_mongo_matches(s, &as_ref).await;
}

/// Reference rows by key (3 figures for orders and customers, 5 for days).
fn rows<const N: usize>(rows: &[(&str, [i64; N])]) -> std::collections::BTreeMap<String, Vec<i64>> {
    rows.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

/// The crash lands after the aggregates' commits: the rerun finds them applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_deleted_order_leaves_no_stale_aggregate_after_a_crash_after_the_aggregates() {
    moved_and_deleted_then_crash_at("after-gold", false).await;
}

/// The crash lands between the order tables and the aggregates: the rerun rebuilds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_deleted_order_leaves_no_stale_aggregate_after_a_crash_before_the_aggregates() {
    moved_and_deleted_then_crash_at("before-aggregates", false).await;
}

/// As after the aggregates, and then maintenance removes the gold tables' expired commits (MongoDB
/// was away past the log's retention): the rerun cannot read what changed, so it republishes the
/// whole tables and every order, and the documents of rows they no longer hold go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_deleted_order_leaves_no_stale_aggregate_when_the_log_no_longer_reaches_mongodb() {
    moved_and_deleted_then_crash_at("after-gold", true).await;
}

/// What log cleanup after a checkpoint leaves of a local table: the commits from the checkpoint on.
async fn expire_log(s: &Settings, root: &std::path::Path, rel: &str) {
    let t = orderlake::lake::Lake::new(s).open(rel).await.unwrap().expect("table exists");
    deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
    let newest = orderlake::lake::version_of(&t);
    let log = root.join(rel).join("_delta_log");
    let mut removed = 0;
    for e in std::fs::read_dir(&log).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(v) = name.strip_suffix(".json").and_then(|v| v.parse::<u64>().ok())
            && v < newest
        {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "{rel}: commits before {newest} removed");
}

async fn moved_and_deleted_then_crash_at(stage: &str, expire: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (s, prefix) = cdc_settings(&dir, "moved");
    // Day 20058 is 2024-12-01, 20059 the day after.
    let first = [
        order(1, 7, "France", 20058, 1, "c"),
        order(2, 8, "Germany", 20059, 2, "c"),
        order(3, 9, "Norway", 20059, 3, "c"),
        item(11, 1, 2, 4),
        item(12, 2, 4, 5),
        item(13, 3, 1, 6),
    ];
    produce::publish_cdc(&s, &prefix, &first).await.unwrap();
    run_once(&s).await;
    let before = Reference {
        orders: rows(&[("1", [1, 2, 500]), ("2", [1, 4, 1000]), ("3", [1, 1, 250])]),
        customers: rows(&[("7", [1, 2, 500]), ("8", [1, 4, 1000]), ("9", [1, 1, 250])]),
        daily: rows(&[
            ("2024-12-01|France", [1, 2, 500, 0, 0]),
            ("2024-12-02|Germany", [1, 4, 1000, 0, 0]),
            ("2024-12-02|Norway", [1, 1, 250, 0, 0]),
        ]),
    };
    assert_mongo_is_the_lake(&s, &before).await;

    // Order 1 moves to customer 8, Spain and the next day; order 3 goes. The batch's aggregates
    // land in the lake, then the process dies before MongoDB hears of them.
    let second = [
        order(1, 8, "Spain", 20059, 101, "u"),
        change(Entity::Orders, json!({"order_id": 3}), 102, "d", None),
        CdcRecord { entity: Entity::Orders, key: json!({"order_id": 3}).to_string(), value: None },
    ];
    produce::publish_cdc(&s, &prefix, &second).await.unwrap();
    run_failing_at(&s, stage).await;
    if expire {
        for rel in ["gold/order_totals", "gold/customer_totals", "gold/daily_sales"] {
            expire_log(&s, dir.path(), rel).await;
        }
    }
    run_once(&s).await;
    let after = Reference {
        orders: rows(&[("1", [1, 2, 500]), ("2", [1, 4, 1000])]),
        customers: rows(&[("8", [2, 6, 1500])]),
        daily: rows(&[("2024-12-02|Germany", [1, 4, 1000, 0, 0]), ("2024-12-02|Spain", [1, 2, 500, 0, 0])]),
    };
    assert_mongo_is_the_lake(&s, &after).await;
}

/// MongoDB away for many batches (publishing off, the lake going on), then back: the catch-up
/// goes through the missed bronze versions in steps, each of which carries the rows of the commits
/// MongoDB has not heard of: the aggregate rows and the orders that lost an item to a delete or a
/// move. MongoDB must end equal to the lake and the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_catches_up_over_many_missed_commits_with_moves_and_deletes() {
    let away = MongoAway::new("moved-catchup", 400, 43, 80, 3).await;
    run_once(&away.s).await;
    assert_mongo_is_the_lake(&away.s, &crate::cdc::cdc_reference(&away.history.db)).await;
}

/// A CDC history whose first `published` changes reached MongoDB, and the rest only the lake
/// (publishing off), in batches of 12 changes; MongoDB then catches up in steps of `steps`.
struct MongoAway {
    dir: tempfile::TempDir,
    s: Settings,
    prefix: String,
    history: orderlake::cdc_gen::CdcHistory,
}

impl MongoAway {
    async fn new(name: &str, changes: usize, seed: u64, published: usize, steps: i64) -> MongoAway {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, prefix) = cdc_settings(&dir, name);
        (s.batch.max_records, s.catch_up_versions) = (12, steps);
        let history = orderlake::cdc_gen::synthetic(changes, seed, false);
        let (first, rest) = history.records.split_at(published);
        produce::publish_cdc(&s, &prefix, first).await.unwrap();
        run_once(&s).await;
        let items = format!("bronze/{prefix}.order_items");
        let published = table_version(&s, &items).await.unwrap();

        let mut without_mongo = s.clone();
        without_mongo.mongodb_uri = None;
        produce::publish_cdc(&s, &prefix, rest).await.unwrap();
        run_once(&without_mongo).await;
        let missed = table_version(&s, &items).await.unwrap() - published;
        assert!(missed > 2 * s.catch_up_versions as u64, "the catch-up takes several steps ({missed} versions)");
        MongoAway { dir, s, prefix, history }
    }
}

/// As above, and maintenance removed the gold tables' commits MongoDB missed before it came back:
/// the first steps of the catch-up cannot read what changed and republish the whole aggregates and
/// every order (sweeping the documents of rows the lake no longer holds), until a step starts past
/// the oldest commit the log still has. MongoDB must end equal to the source all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_catches_up_in_steps_when_the_log_no_longer_reaches_it() {
    let MongoAway { dir, s, prefix, history } = MongoAway::new("moved-expired", 200, 47, 40, 2).await;
    for rel in ["gold/order_totals", "gold/customer_totals", "gold/daily_sales"] {
        expire_log(&s, dir.path(), rel).await;
    }

    run_once(&s).await;
    assert_mongo_is_the_lake(&s, &crate::cdc::cdc_reference(&history.db)).await;
    // Whole once, and at most once more by the step whose aggregates were read while the first
    // whole publish was still going out; not at every step.
    let mut wholes = BTreeMap::new();
    for topic in ["orders", "order_items"].map(|t| format!("{prefix}.{t}")) {
        for coll in ["customer_totals", "daily_sales", "order_totals", "orders"] {
            let n = orderlake::metrics::global().whole_publishes(&topic, coll);
            assert!(n <= 2, "{topic} {coll}: {n} whole publishes");
            *wholes.entry(coll).or_insert(0) += n;
        }
    }
    assert!(wholes.values().all(|n| *n > 0), "the catch-up began whole: {wholes:?}");
}

/// The same with items: while MongoDB is away one item of order 1 is deleted (the event names
/// only the item) and the other moves to order 2. The catch-up's events never name order 1, and
/// gold, already past both changes, no longer says the items were there: the order's documents
/// are corrected only because the commits MongoDB missed are read back. In steps of two bronze
/// versions, so later steps use what the first one read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_lost_its_items_while_mongodb_was_away_is_republished() {
    order_lost_its_items_while_mongodb_was_away("moved-items", false).await;
}

/// As above, and the commits that say so expired before MongoDB came back: every order is
/// republished, order 1's documents with it, and a run killed halfway through that leaves it to
/// the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_lost_its_items_is_republished_when_the_log_no_longer_reaches_mongodb() {
    order_lost_its_items_while_mongodb_was_away("moved-items-expired", true).await;
}

async fn order_lost_its_items_while_mongodb_was_away(name: &str, expire: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, prefix) = cdc_settings(&dir, name);
    (s.batch.max_records, s.catch_up_versions) = (1, 2);
    let first = [
        order(1, 7, "France", 20058, 1, "c"),
        order(2, 8, "Germany", 20059, 2, "c"),
        order(3, 9, "Norway", 20059, 3, "c"),
        item(11, 1, 2, 4),
        item(12, 1, 1, 5),
        item(13, 2, 4, 6),
        item(19, 3, 1, 7),
    ];
    produce::publish_cdc(&s, &prefix, &first).await.unwrap();
    run_once(&s).await;
    assert_mongo_equals_the_lake(&s).await;

    // Item 12 goes, item 11 moves to order 2, order 3 goes with its item.
    let mut without_mongo = s.clone();
    without_mongo.mongodb_uri = None;
    let mut rest = vec![
        change(Entity::OrderItems, json!({"item_id": 12}), 101, "d", None),
        CdcRecord { entity: Entity::OrderItems, key: json!({"item_id": 12}).to_string(), value: None },
        item(11, 2, 2, 102),
        change(Entity::OrderItems, json!({"item_id": 19}), 103, "d", None),
        change(Entity::Orders, json!({"order_id": 3}), 104, "d", None),
    ];
    rest.extend((14..18).map(|i| item(i, 2, 1, 90 + i)));
    produce::publish_cdc(&s, &prefix, &rest).await.unwrap();
    run_once(&without_mongo).await;
    let (orders, _, _) = lake_totals(&s).await;
    assert_eq!(orders, rows(&[("1", [0, 0, 0]), ("2", [6, 10, 2500])]), "the lake took the changes");
    if expire {
        expire_log(&s, dir.path(), "gold/order_totals").await;
        // Killed after the orders went out, before the sweep: the rerun must start over.
        run_failing_at(&s, "mid-whole-orders").await;
    }

    run_once(&s).await;
    assert_mongo_equals_the_lake(&s).await;
    let topic = format!("{prefix}.order_items");
    let wholes = orderlake::metrics::global().whole_publishes(&topic, "orders");
    assert_eq!(wholes > 0, expire, "{topic}: {wholes} whole publishes of the orders");
}
