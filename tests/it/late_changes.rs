//! A change to an order of an earlier file, on Azurite: the file is written again with only the
//! row groups holding the changed orders decoded (the others copied as bytes), every other row
//! kept once, and statistics equal to what delta-rs writes for the same rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::DataType;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
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
        Arc::new(StringArray::from_iter_values(ids.clone().map(id))),
        Arc::new(StringArray::from_iter_values(ids.clone().map(|o| format!("{}", 12_000 + o % 4_000)))),
        Arc::new(StringArray::from_iter_values(ids.clone().map(|_| "France"))),
        Arc::new(Date32Array::from_iter(ids.clone().map(|o| (o != 7).then_some(19_000 + (o / 5_000) as i32)))),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| status))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(ids.map(|o| o as i64)).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| pos.as_str()))),
    ];
    RecordBatch::try_new(SILVER_ORDERS.arrow_schema(), cols).unwrap()
}

/// The order id of order number `o`, as [`orders`] writes it.
fn id(o: u64) -> String {
    format!("{:09}", 100_000_000 + o)
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
    let seen = statuses(&table).await;
    assert_eq!(seen.len() as u64, total + 1);
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

/// The table's root store, refusing to write data files while `broken` is set; whole-file reads
/// of data files (a splice reading its file) are counted.
#[derive(Debug)]
struct RefusingPuts {
    inner: Arc<dyn ObjectStore>,
    broken: AtomicBool,
    whole_reads: AtomicUsize,
}

impl std::fmt::Display for RefusingPuts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefusingPuts({})", self.inner)
    }
}

fn data_file(p: &Path) -> bool {
    p.as_ref().ends_with(".parquet") && !p.as_ref().contains("_delta_log")
}

#[async_trait::async_trait]
impl ObjectStore for RefusingPuts {
    async fn put_opts(&self, p: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        if data_file(p) && self.broken.load(Ordering::SeqCst) {
            let source = format!("PUT {p}: storage unavailable").into();
            return Err(object_store::Error::Generic { store: "RefusingPuts", source });
        }
        self.inner.put_opts(p, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        p: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(p, opts).await
    }

    async fn get_opts(&self, p: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if data_file(p) && options.range.is_none() && !options.head {
            self.whole_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_opts(p, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Every order of `table` with its status; fails on an order seen twice.
async fn statuses(table: &deltalake::DeltaTable) -> std::collections::BTreeMap<String, String> {
    let rows = read::scan(table, None).await.unwrap();
    let rows = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    let text = |c: &str| arrow::compute::cast(rows.column_by_name(c).unwrap(), &DataType::Utf8).unwrap();
    let (ids, status) = (text("order_id"), text("status"));
    let (ids, status) = (ids.as_string::<i32>(), status.as_string::<i32>());
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..rows.num_rows() {
        assert!(seen.insert(ids.value(i).to_string(), status.value(i).to_string()).is_none(), "{} twice", ids.value(i));
    }
    seen
}

/// Storage failing between reading a file and writing its splice: the rewrite fails, the table is
/// as it was, and the same batch retried (as the pipeline does) against the table once storage is
/// back lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splice_whose_file_cannot_be_written_changes_nothing_and_its_retry_lands_once() {
    let total = 40_000u64;
    let (lake, table) = seeded("late-changes-fault", total).await;
    let before = orderlake::lake::version_of(&table);
    let store = Arc::new(RefusingPuts {
        inner: table.log_store().root_object_store(None),
        broken: AtomicBool::new(true),
        whole_reads: AtomicUsize::new(0),
    });
    let url = table.table_url().clone();
    let faulty = deltalake::DeltaTableBuilder::from_url(url.clone())
        .unwrap()
        .with_storage_backend(store.clone(), url)
        .load()
        .await
        .unwrap();
    let batch = || {
        let parts = [orders([0, 20_000].into_iter(), 2, "shipped"), orders([total].into_iter(), 2, "placed")];
        arrow::compute::concat_batches(&SILVER_ORDERS.arrow_schema(), &parts).unwrap()
    };
    let err = replace_keys(faulty, "order_id", batch(), Search::All, Some("source_pos"), "order_id", vec![])
        .await
        .expect_err("storage refused the spliced file");
    assert!(!err.is_commit_conflict(), "an outage, not a conflict: {err}");
    assert!(err.to_string().contains("storage unavailable"), "the store's error is kept: {err}");
    assert_eq!(store.whole_reads.load(Ordering::SeqCst), 1, "the splice read its file before failing");

    let now = lake.open(REL).await.unwrap().unwrap();
    assert_eq!(orderlake::lake::version_of(&now), before, "nothing committed");
    let seen = statuses(&now).await;
    assert_eq!(seen.len() as u64, total);
    assert!(seen.values().all(|s| s == "placed"), "no change landed");

    store.broken.store(false, Ordering::SeqCst);
    let now =
        replace_keys(now, "order_id", batch(), Search::All, Some("source_pos"), "order_id", vec![]).await.unwrap();
    let m = metrics(&now).await;
    assert_eq!((m["groups_recoded"].as_u64(), m["groups_copied"].as_u64()), (Some(2), Some(1)), "{m}");
    let seen = statuses(&now).await;
    assert_eq!(seen.len() as u64, total + 1, "every order once, the new one in");
    let shipped: Vec<&String> = seen.iter().filter(|(_, s)| *s == "shipped").map(|(k, _)| k).collect();
    assert_eq!(shipped, [&id(0), &id(20_000)]);
}

/// A table whose statistics columns cannot be rendered by the splice (an analyst added a
/// timestamp) copies changed files the ordinary way, each into a file of its own, so every file
/// keeps its own range of keys instead of the copies merging into one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_files_copied_without_splicing_keep_one_file_each() {
    let (_, table) = empty("late-changes-plain").await;
    let with_ts = std::collections::HashMap::from([(
        orderlake::lake::stats::PROPERTY.to_string(),
        "order_id,order_date,updated_at".to_string(),
    )]);
    let mut table = table.set_tbl_properties().with_properties(with_ts).await.unwrap();
    for first in [0u64, 40_000] {
        let rows = orders(first..first + 40_000, 1, "placed");
        table = replace_keys(table, "order_id", rows, Search::Nowhere, Some("source_pos"), "order_id", vec![])
            .await
            .unwrap();
    }
    let batch = orders([5, 45_000].into_iter(), 2, "shipped");
    let table =
        replace_keys(table, "order_id", batch, Search::All, Some("source_pos"), "order_id", vec![]).await.unwrap();
    let m = metrics(&table).await;
    assert_eq!(m["files_rewritten"], 2, "{m}");
    assert_eq!((m["groups_recoded"].as_u64(), m["groups_copied"].as_u64()), (Some(0), Some(0)), "not spliced: {m}");
    let mut rows: Vec<usize> = table.snapshot().unwrap().log_data().iter().filter_map(|f| f.num_records()).collect();
    rows.sort();
    assert_eq!(rows, [2, 39_999, 39_999], "each copy a file of its own, the changes in a third");
    let seen = statuses(&table).await;
    assert_eq!(seen.len(), 80_000);
    assert_eq!(seen.values().filter(|s| *s == "shipped").count(), 2);
}
