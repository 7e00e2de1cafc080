use std::collections::BTreeSet;

use super::*;
use crate::config::{FileConfig, Overrides, Settings};
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
    let o = Overrides { lake: Some(dir.path().to_str().unwrap().into()), ..Default::default() };
    let lake = Lake::new(&Settings::from_parts(FileConfig::default(), o).unwrap());

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
