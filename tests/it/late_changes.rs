//! A change to an order of an earlier file, on Azurite: the file is written again with only the
//! row groups holding the changed orders decoded (the others copied as bytes), every other row
//! kept once, and statistics equal to what delta-rs writes for the same rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use orderlake::lake::rewrite::{Search, replace_keys};
use orderlake::lake::schema::SILVER_ORDERS;
use orderlake::lake::{Lake, read};
use serde_json::Value;

use crate::support::{LakeKind, settings, unique};

const REL: &str = "silver/orders";

/// Orders `from..from + n` as of Kafka position `pos`, with `status`; order 7 has no date.
fn orders(ids: impl Iterator<Item = u64> + Clone, pos: u64, status: &str) -> RecordBatch {
    let n = ids.clone().count();
    let pos = format!("shop.sales:0:{pos:020}");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids.clone().map(|o| format!("{:09}", 100_000_000 + o)))),
        Arc::new(StringArray::from_iter_values(ids.clone().map(|o| format!("{}", 12_000 + o % 4_000)))),
        Arc::new(StringArray::from_iter_values(ids.clone().map(|_| "France"))),
        Arc::new(Date32Array::from_iter(ids.clone().map(|o| (o != 7).then_some(19_000 + (o / 5_000) as i32)))),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| status))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(ids.map(|o| o as i64)).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| pos.as_str()))),
    ];
    RecordBatch::try_new(SILVER_ORDERS.arrow_schema(), cols).unwrap()
}

/// An empty silver orders table on Azurite (container named after `prefix`), and its lake.
async fn empty(prefix: &str) -> (Lake, deltalake::DeltaTable) {
    let s = settings(&unique(prefix), &LakeKind::Azurite, false);
    let lake = Lake::new(&s);
    let table = lake.open_or_create(REL, &SILVER_ORDERS).await.unwrap();
    (lake, table)
}

/// Orders `0..total` written as orderlake writes them: one file of three row groups.
async fn seeded(prefix: &str, total: u64) -> (Lake, deltalake::DeltaTable) {
    let (lake, table) = empty(prefix).await;
    let rows = orders(0..total, 1, "placed");
    let table =
        replace_keys(table, "order_id", rows, Search::Nowhere, Some("source_pos"), "order_id", vec![]).await.unwrap();
    assert_eq!(table.snapshot().unwrap().log_data().num_files(), 1, "one file of three row groups");
    (lake, table)
}

/// `table` after order `o` is shipped at position `pos`, and that commit's metrics.
async fn ship(table: deltalake::DeltaTable, o: u64, pos: u64) -> (deltalake::DeltaTable, Value) {
    let batch = orders([o].into_iter(), pos, "shipped");
    let table =
        replace_keys(table, "order_id", batch, Search::All, Some("source_pos"), "order_id", vec![]).await.unwrap();
    let m = metrics(&table).await;
    (table, m)
}

/// The `operationMetrics` of the table's last commit.
async fn metrics(table: &deltalake::DeltaTable) -> Value {
    let v = orderlake::lake::version_of(table);
    let bytes = table.log_store().read_commit_entry(v).await.unwrap().unwrap();
    let info = String::from_utf8(bytes.to_vec()).unwrap();
    let line = info.lines().find(|l| l.contains("commitInfo")).unwrap();
    serde_json::from_str::<Value>(line).unwrap()["commitInfo"]["operationMetrics"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_change_decodes_only_the_row_groups_holding_it() {
    let total = 40_000u64;
    let (_, table) = seeded("late-changes", total).await;

    // Order 0 (first row group, the file's least key) and 20,000 (second) change; order 30,000
    // (third) arrives with an older position and stays as it is; order 40,000 is new.
    let mut batch = vec![orders([0, 20_000].into_iter(), 3, "shipped"), orders([30_000].into_iter(), 0, "stale")];
    batch.push(orders([total].into_iter(), 3, "placed"));
    let batch = arrow::compute::concat_batches(&SILVER_ORDERS.arrow_schema(), &batch).unwrap();
    let table =
        replace_keys(table, "order_id", batch, Search::All, Some("source_pos"), "order_id", vec![]).await.unwrap();

    let m = metrics(&table).await;
    assert_eq!(m["files_rewritten"], 1, "{m}");
    assert_eq!(m["groups_recoded"], 2, "{m}");
    assert_eq!(m["groups_copied"], 1, "{m}");
    assert_eq!(m["rows_copied"], total - 2, "{m}");
    assert_eq!(m["rows_written"], 3, "{m}");

    // Every order once, the two changes in, the stale one not.
    let rows = read::scan(&table, None).await.unwrap();
    let rows = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    assert_eq!(rows.num_rows() as u64, total + 1);
    let ids = rows.column_by_name("order_id").unwrap();
    let ids = arrow::compute::cast(ids, &arrow::datatypes::DataType::Utf8).unwrap();
    let ids = ids.as_string::<i32>();
    let status =
        arrow::compute::cast(rows.column_by_name("status").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    let status = status.as_string::<i32>();
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..rows.num_rows() {
        assert!(seen.insert(ids.value(i).to_string(), status.value(i).to_string()).is_none(), "{} twice", ids.value(i));
    }
    let id = |o: u64| format!("{:09}", 100_000_000 + o);
    assert_eq!(seen[&id(0)], "shipped");
    assert_eq!(seen[&id(20_000)], "shipped");
    assert_eq!(seen[&id(30_000)], "placed");
    assert_eq!(seen[&id(6)], "placed");
    assert_eq!(seen[&id(total)], "placed");

    // Reads that skip on the copied chunks' statistics and page indexes find their rows.
    for o in [1, 16_383, 16_384, 35_000, total - 1] {
        let filter = deltalake::datafusion::prelude::col("order_id").eq(deltalake::datafusion::prelude::lit(id(o)));
        let found = read::scan(&table, Some(filter)).await.unwrap();
        assert_eq!(found.iter().map(RecordBatch::num_rows).sum::<usize>(), 1, "order {o}");
    }

    // The spliced file's statistics are what delta-rs writes for the same rows.
    let spliced = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .find(|f| f.num_records() == Some((total - 2) as usize))
        .map(|f| f.path().to_string())
        .expect("the spliced file");
    let provider = table.table_provider().with_file_paths([spliced.clone()]).await.unwrap();
    let ctx = read::session();
    let kept = ctx.read_table(provider).unwrap().collect().await.unwrap();
    let kept = arrow::compute::concat_batches(&kept[0].schema(), &kept).unwrap();
    assert_eq!(kept.column_by_name("order_date").unwrap().null_count(), 1, "order 7 keeps its missing date");
    let schema = SILVER_ORDERS.arrow_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| arrow::compute::cast(kept.column_by_name(f.name()).unwrap(), f.data_type()).unwrap());
    let kept = RecordBatch::try_new(schema.clone(), columns.collect()).unwrap();
    let mut writer = RecordBatchWriter::for_table(&table).unwrap();
    writer.write(kept).await.unwrap();
    let expected = writer.flush().await.unwrap().remove(0);
    let stats_of = |s: Option<String>| serde_json::from_str::<Value>(&s.unwrap()).unwrap();
    let actual =
        table.snapshot().unwrap().log_data().iter().find(|f| f.path() == spliced).map(|f| f.stats().unwrap()).unwrap();
    let (actual, expected) = (serde_json::from_str::<Value>(&actual).unwrap(), stats_of(expected.stats));
    assert_eq!(actual["minValues"]["order_id"], "100000001", "order 0 left the file: {actual}");
    for field in ["numRecords", "minValues", "maxValues", "nullCount"] {
        assert_eq!(actual[field], expected[field], "{field}: spliced {actual} vs delta-rs {expected}");
    }
}

/// A file written before keyed files came in row groups (one group of every row) is decoded whole
/// at its first change, and written in row groups of 16,384 rows from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_one_row_group_takes_row_groups_at_its_first_change() {
    let (_, table) = empty("late-changes-old").await;
    let total = 40_000u64;
    // As delta-rs writes by default: one row group.
    let mut writer = RecordBatchWriter::for_table(&table).unwrap();
    writer.write(orders(0..total, 1, "placed")).await.unwrap();
    let table = {
        use deltalake::kernel::Action;
        use deltalake::kernel::transaction::CommitBuilder;
        use deltalake::protocol::{DeltaOperation, SaveMode};
        let adds = writer.flush().await.unwrap().into_iter().map(Action::Add).collect();
        let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
        let done = CommitBuilder::default()
            .with_actions(adds)
            .build(Some(table.snapshot().unwrap()), table.log_store(), op)
            .await
            .unwrap();
        let mut table = table;
        table.state = Some(done.snapshot());
        table
    };
    let (table, m) = ship(table, 123, 2).await;
    assert_eq!((m["groups_recoded"].as_u64(), m["groups_copied"].as_u64()), (Some(1), Some(0)), "{m}");
    assert_eq!(m["rows_copied"], total - 1, "{m}");
    let rows = read::scan(&table, None).await.unwrap();
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>() as u64, total);

    // The next change to that file copies two of its three groups as bytes.
    let (table, m) = ship(table, 30_000, 3).await;
    assert_eq!((m["groups_recoded"].as_u64(), m["groups_copied"].as_u64()), (Some(1), Some(2)), "{m}");
    let found = read::scan(
        &table,
        Some(deltalake::datafusion::prelude::col("status").eq(deltalake::datafusion::prelude::lit("shipped"))),
    )
    .await
    .unwrap();
    assert_eq!(found.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
}

/// A splice is only right against the version it read: over a table another writer moved since,
/// the rewrite fails as a commit conflict after writing its file, and the table keeps every row
/// as the other writer left it (the unreferenced file is VACUUM's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splice_over_a_table_that_moved_fails_as_a_conflict_and_changes_nothing() {
    let total = 40_000u64;
    let (lake, stale) = seeded("late-changes-race", total).await;
    let fresh = lake.open(REL).await.unwrap().unwrap();
    let (fresh, _) = ship(fresh, 100, 2).await;

    let batch = orders([20_000].into_iter(), 3, "shipped");
    let err = replace_keys(stale, "order_id", batch, Search::All, Some("source_pos"), "order_id", vec![])
        .await
        .expect_err("the table moved");
    assert!(err.is_commit_conflict(), "a splice over a newer version is a commit conflict: {err}");

    let now = lake.open(REL).await.unwrap().unwrap();
    assert_eq!(orderlake::lake::version_of(&now), orderlake::lake::version_of(&fresh));
    let shipped = deltalake::datafusion::prelude::col("status").eq(deltalake::datafusion::prelude::lit("shipped"));
    let found = read::scan(&now, Some(shipped)).await.unwrap();
    let found = arrow::compute::concat_batches(&found[0].schema(), &found).unwrap();
    let ids =
        arrow::compute::cast(found.column_by_name("order_id").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    assert_eq!(
        ids.as_string::<i32>().iter().collect::<Vec<_>>(),
        [Some("100000100")],
        "only the other writer's change"
    );
    let all = read::scan(&now, None).await.unwrap();
    assert_eq!(all.iter().map(RecordBatch::num_rows).sum::<usize>() as u64, total);
}
