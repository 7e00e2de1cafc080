//! Bronze: every message as received, appended exactly once. Each commit carries one `txn` per
//! Kafka partition (`<group>/<topic>/<partition>` → last offset written), so the lake, not the
//! consumer group, is the truth about what has been ingested. Bronze is also the replay log
//! that lagging layers catch up from.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::rows::{batch, date_col, int_col, long_col, str_col, ts_col};
use super::{Lake, commit_with, schema, version_of};
use crate::error::{Error, Result};
use crate::model::RawEvent;

pub fn offset_app_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// The offsets bronze holds for `partitions` (last offset written; absent = nothing yet).
pub async fn stored_offsets(
    lake: &Lake,
    table: &DeltaTable,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<HashMap<i32, i64>> {
    let mut out = HashMap::new();
    for p in partitions {
        if let Some(o) = lake.txn_version(table, &offset_app_id(group, topic, p)).await? {
            out.insert(p, o);
        }
    }
    Ok(out)
}

/// How many of the newest commits [`writers`] reads.
const WRITERS_LOOK_BACK: u64 = 32;

/// The consumer groups whose offsets of `topic` the newest commits of `table` record (at most
/// [`WRITERS_LOOK_BACK`] of them, so a run of compactions can hide them): who wrote this bronze.
pub async fn writers(table: &DeltaTable, topic: &str) -> Result<BTreeSet<String>> {
    let store = table.log_store();
    let last = version_of(table);
    let mut out = BTreeSet::new();
    for v in (last.saturating_sub(WRITERS_LOOK_BACK - 1)..=last).rev() {
        let Some(bytes) = store.read_commit_entry(v).await? else { break };
        for line in bytes.split(|b| *b == b'\n') {
            let Some((app, _)) = super::markers::txn_of(line) else { continue };
            // `<group>/<topic>/<partition>` (a group holds no '/': refused at start).
            let Some(rest) = app.rsplit_once('/').filter(|(_, p)| p.parse::<i32>().is_ok()).map(|(r, _)| r) else {
                continue;
            };
            if let Some(group) = rest.strip_suffix(topic).and_then(|g| g.strip_suffix('/')) {
                out.insert(group.to_string());
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// Appends `records` (all of one topic) and their partition offsets in one commit.
/// Returns the new table and the bronze version that holds them.
pub async fn append(table: DeltaTable, group: &str, records: &[RawEvent], now_us: i64) -> Result<(DeltaTable, u64)> {
    let topic = &records.first().ok_or_else(|| Error::Other("empty bronze append".into()))?.topic;
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for r in records {
        let e = last.entry(r.partition).or_insert(r.offset);
        *e = (*e).max(r.offset);
    }
    let txns = last.iter().map(|(p, o)| Transaction::new(offset_app_id(group, topic, *p), *o)).collect();
    let today = chrono::DateTime::from_timestamp_micros(now_us).map(|t| t.date_naive());
    let b = batch(
        &schema::BRONZE,
        vec![
            str_col(records.iter().map(|r| Some(r.topic.as_str()))),
            int_col(records.iter().map(|r| Some(r.partition))),
            long_col(records.iter().map(|r| Some(r.offset))),
            str_col(records.iter().map(|r| r.key.as_deref())),
            str_col(records.iter().map(|r| r.value.as_deref())),
            // A producer sets the Kafka timestamp; one beyond microseconds' range is kept as none
            // (the event itself lands) rather than wrapped, or a panic in a debug build.
            ts_col(records.iter().map(|r| r.timestamp_ms.and_then(|t| t.checked_mul(1000)))),
            ts_col(records.iter().map(|_| Some(now_us))),
            date_col(records.iter().map(|_| today)),
        ],
    )?;
    let props = commit_with(txns);
    let table = table
        .write(vec![b])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(schema::BRONZE.partition_by.iter().map(|s| s.to_string()))
        .with_commit_properties(props)
        .await?;
    let v = version_of(&table);
    Ok((table, v))
}

/// Converts bronze rows back into records (for catch-up and rebuild).
pub fn records_from_batch(b: &RecordBatch) -> Result<Vec<RawEvent>> {
    let col = |n: &str| b.column_by_name(n).ok_or_else(|| Error::Other(format!("bronze file lacks column {n}")));
    let topic = col("topic")?.as_string::<i32>().clone();
    let part = col("partition")?.as_primitive::<Int32Type>().clone();
    let off = col("offset")?.as_primitive::<Int64Type>().clone();
    let key = col("key")?.as_string::<i32>().clone();
    let value = col("value")?.as_string::<i32>().clone();
    let ts = col("kafka_timestamp")?.as_primitive::<TimestampMicrosecondType>().clone();
    Ok((0..b.num_rows())
        .map(|i| RawEvent {
            topic: topic.value(i).to_string(),
            partition: part.value(i),
            offset: off.value(i),
            key: key.is_valid(i).then(|| key.value(i).to_string()),
            value: value.is_valid(i).then(|| value.value(i).to_string()),
            timestamp_ms: ts.is_valid(i).then(|| ts.value(i) / 1000),
        })
        .collect())
}

/// The data files each commit `(after, upto]` added (not compaction rewrites), by version; the
/// version whose commit the log no longer holds is the error.
async fn added_files(
    table: &DeltaTable,
    after: Option<u64>,
    upto: u64,
) -> std::result::Result<Vec<(u64, Vec<Path>)>, GoneAt> {
    let log = table.log_store();
    let mut out = Vec::new();
    for v in after.map_or(0, |a| a + 1)..=upto {
        let bytes = match log.read_commit_entry(v).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err(GoneAt::Commit(v)),
            Err(e) => return Err(GoneAt::Error(e.into())),
        };
        let mut paths = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| GoneAt::Error(Error::Other(format!("bronze commit {v}: {e}"))))?;
            let Some(add) = action.get("add") else { continue };
            if add.get("dataChange").and_then(|d| d.as_bool()) == Some(false) {
                continue; // compaction rewrites: the rows were already counted
            }
            let path = add.get("path").and_then(|p| p.as_str()).unwrap_or_default();
            paths.push(
                Path::from_url_path(path)
                    .map_err(|e| GoneAt::Error(Error::Other(format!("bronze path {path}: {e}"))))?,
            );
        }
        out.push((v, paths));
    }
    Ok(out)
}

/// Why a bronze commit cannot be read back.
enum GoneAt {
    /// Log cleanup removed the commit (older than `delta.logRetentionDuration`, 30 days by default).
    Commit(u64),
    /// The commit's file was packed into bigger ones by maintenance and VACUUM has removed it.
    File(u64, Path),
    Error(Error),
}

impl GoneAt {
    fn into_error(self, table: &DeltaTable) -> Error {
        let what = match self {
            GoneAt::Error(e) => return e,
            GoneAt::Commit(v) => format!(
                "commit {v} is no longer in the log (log cleanup removes commits older than delta.logRetentionDuration, 30 days by default)"
            ),
            GoneAt::File(v, path) => format!(
                "the file commit {v} added ({path}) is gone: maintenance packed it into bigger files and VACUUM removed it after maintenance.vacuum_retention_hours"
            ),
        };
        Error::Other(format!(
            "bronze {} cannot be read back commit by commit: {what}. Catching up from bronze, and rebuilding, replay each commit since the layer's position (README, Rebuilding)",
            table.table_url()
        ))
    }
}

/// Whether catching up from bronze can read every commit after `after`: each still in the log
/// and every file it added still in storage (one listing of the table). `Some` says why not. Run
/// before a rebuild empties anything.
pub async fn history_gone(table: &DeltaTable, after: Option<u64>) -> Result<Option<String>> {
    use futures::TryStreamExt;
    let versions = match added_files(table, after, version_of(table)).await {
        Ok(v) => v,
        Err(GoneAt::Error(e)) => return Err(e),
        Err(g) => return Ok(Some(g.into_error(table).to_string())),
    };
    let store = table.log_store().object_store(None);
    let present: std::collections::HashSet<Path> = store.list(None).map_ok(|m| m.location).try_collect().await?;
    for (v, paths) in versions {
        if let Some(p) = paths.into_iter().find(|p| !present.contains(p)) {
            return Ok(Some(GoneAt::File(v, p).into_error(table).to_string()));
        }
    }
    Ok(None)
}

/// The records bronze commits `(after, upto]` added, grouped by version in ascending order.
/// Reads the commit files directly, so the cost is that of the range, not of the table.
pub async fn read_commits(table: &DeltaTable, after: Option<u64>, upto: u64) -> Result<Vec<(u64, Vec<RawEvent>)>> {
    let store = table.log_store().object_store(None);
    let mut out = Vec::new();
    for (v, paths) in added_files(table, after, upto).await.map_err(|g| g.into_error(table))? {
        let mut recs = Vec::new();
        for path in paths {
            // A bronze file holds one batch of one topic: small enough to read whole.
            let bytes = match store.get(&path).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Err(GoneAt::File(v, path).into_error(table)),
                Err(e) => return Err(e.into()),
            };
            for b in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
                recs.extend(records_from_batch(&b?)?);
            }
        }
        out.push((v, recs));
    }
    Ok(out)
}

pub fn table_name(prefix: &str, topic: &str) -> String {
    format!("{prefix}/{topic}")
}
