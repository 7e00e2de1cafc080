use std::collections::BTreeSet;

use super::*;
use crate::model::OrderRow;

fn pos(t: i64) -> SourcePos {
    SourcePos { primary: t, secondary: 0, partition: 0, offset: t }
}

fn order(id: &str, t: i64) -> OrderRow {
    OrderRow {
        order_id: id.into(),
        customer_id: None,
        country: None,
        order_date: None,
        status: "placed".into(),
        updated_at_us: 0,
        pos: pos(t),
        extra: vec![],
    }
}

fn delete(entity: Entity, key: &str, t: i64) -> DeleteRow {
    DeleteRow { entity, key: key.into(), pos: pos(t) }
}

/// Applies one batch (bronze `version`) to every silver table, as the pipeline does.
async fn apply(lake: &Lake, changes: &Changes, version: i64) {
    let batch = Batch::new(lake, "silver", 0);
    for (name, spec) in TABLES {
        let txn = Transaction::new("test/silver/t", version);
        apply_table(&batch, name, spec, changes, version - 1, txn).await.unwrap();
    }
}

async fn order_ids(lake: &Lake) -> BTreeSet<String> {
    let t = lake.open("silver/orders").await.unwrap().expect("silver/orders exists");
    let mut ids = BTreeSet::new();
    for b in scan(&t, None).await.unwrap() {
        let c = arrow::compute::cast(b.column_by_name("order_id").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
        ids.extend(arrow::array::AsArray::as_string::<i32>(&c).iter().flatten().map(str::to_string));
    }
    ids
}

/// The tombstones are read once per batch, so the batch that follows the first delete must see
/// the table that delete created: a change older than the delete stays deleted, a newer one
/// brings the row back. A delete of another entity in the same batch changes nothing for orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_sees_the_tombstones_the_batches_before_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path());

    let first = Changes { orders: vec![order("o1", 1), order("o2", 1)], ..Default::default() };
    apply(&lake, &first, 1).await;
    assert_eq!(order_ids(&lake).await, BTreeSet::from(["o1".into(), "o2".into()]));

    // No tombstone table yet when this batch starts: the delete creates it.
    let deleted = Changes { deletes: vec![delete(Entity::Orders, "o1", 10)], ..Default::default() };
    apply(&lake, &deleted, 2).await;
    assert_eq!(order_ids(&lake).await, BTreeSet::from(["o2".into()]));

    let late = Changes {
        orders: vec![order("o1", 5), order("o3", 5)],
        deletes: vec![delete(Entity::Products, "p9", 1)],
        ..Default::default()
    };
    apply(&lake, &late, 3).await;
    assert_eq!(
        order_ids(&lake).await,
        BTreeSet::from(["o2".into(), "o3".into()]),
        "an order change older than its delete does not bring the order back"
    );

    let newer = Changes { orders: vec![order("o1", 20)], ..Default::default() };
    apply(&lake, &newer, 4).await;
    assert_eq!(order_ids(&lake).await, BTreeSet::from(["o1".into(), "o2".into(), "o3".into()]));
}

/// `ALTER TABLE orders ADD COLUMN channel`: the first batch with the new column updates one order
/// and adds one, while the file it rewrites holds orders the batch does not touch. delta-rs 1.1's
/// MERGE with schema evolution checks NOT NULL columns on its intermediate rows for those and
/// failed the batch (delta-rs#4527), which stopped the pipeline on that topic for good. The column
/// is added in a commit of its own; a crash right after it leaves the table with an empty column,
/// which the batch's retry must fill the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_keeps_the_rows_the_batch_does_not_touch() {
    let with_channel = |id: &str, t: i64, c: &str| OrderRow {
        updated_at_us: t * 1000,
        extra: vec![("channel".to_string(), Some(c.to_string()))],
        ..order(id, t)
    };
    for crashed_after_adding_the_column in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let first = Changes { orders: (1..=5).map(|i| order(&format!("o{i}"), 1)).collect(), ..Default::default() };
        apply(&lake, &first, 1).await;
        if crashed_after_adding_the_column {
            let t = lake.open("silver/orders").await.unwrap().unwrap();
            let field = deltalake::kernel::StructField::nullable("channel", deltalake::kernel::DataType::STRING);
            t.add_columns().with_fields([field]).await.unwrap();
        }
        let evolved = Changes {
            orders: vec![with_channel("o1", 2, "web"), with_channel("o6", 2, "store")],
            ..Default::default()
        };
        apply(&lake, &evolved, 2).await;
        // Applied again (a crash after the commit): nothing changes.
        apply(&lake, &evolved, 2).await;

        let t = lake.open("silver/orders").await.unwrap().unwrap();
        let mut channel = std::collections::BTreeMap::new();
        for b in scan(&t, None).await.unwrap() {
            let cast = |n: &str| {
                arrow::compute::cast(b.column_by_name(n).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap()
            };
            let (ids, ch) = (cast("order_id"), cast("channel"));
            let (ids, ch) =
                (arrow::array::AsArray::as_string::<i32>(&ids), arrow::array::AsArray::as_string::<i32>(&ch));
            for i in 0..b.num_rows() {
                channel.insert(
                    ids.value(i).to_string(),
                    arrow::array::Array::is_valid(ch, i).then(|| ch.value(i).to_string()),
                );
            }
        }
        let expect: std::collections::BTreeMap<String, Option<String>> =
            [("o1", Some("web")), ("o2", None), ("o3", None), ("o4", None), ("o5", None), ("o6", Some("store"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect();
        assert_eq!(channel, expect, "crashed after adding the column: {crashed_after_adding_the_column}");
    }
}
