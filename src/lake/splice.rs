//! Copy-on-write of one file at row-group granularity: the file again without some of its rows,
//! where every row group that loses none is copied as its encoded bytes and only the groups that
//! do are decoded and encoded again.
//!
//! A batch that changes one order of an earlier file copies all of that file's other rows
//! ([`super::rewrite`]); decoding and encoding them (≈ 0.3 µs a row, mostly Parquet's string
//! encoding) was what such a batch cost. Keyed files are written in row groups of
//! [`ROW_GROUP_ROWS`] rows sorted by key, so a few changed keys touch a few groups.
//!
//! The new file's `add` carries statistics as delta-rs writes them (the row groups' min, max and
//! null counts of the table's statistics columns, aggregated), which readers skip files on and
//! may answer `MIN`/`MAX`/`COUNT` from: so splicing is only done where those columns are strings
//! or dates, whose statistics are rendered here exactly as delta-rs does; other tables (and files
//! of an older schema) take the ordinary copy.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, LogicalType};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;

use crate::error::{Error, Result};

/// Rows per row group of keyed files: a change decodes and encodes at most about this many rows
/// of a file, instead of the whole file.
pub const ROW_GROUP_ROWS: usize = 1 << 14;

/// Parquet settings of keyed files: delta-rs's (Snappy) with row groups of [`ROW_GROUP_ROWS`].
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// The table's statistics columns when a file of it can be spliced: the table is unpartitioned
/// and names its statistics columns (`delta.dataSkippingStatsColumns`), each a top-level string
/// or date column of `schema`. `None` otherwise.
pub fn stats_columns(table: &DeltaTable, schema: &SchemaRef) -> Option<Vec<String>> {
    let snapshot = table.snapshot().ok()?;
    let metadata = snapshot.metadata();
    if !metadata.partition_columns().is_empty() {
        return None;
    }
    let listed = metadata.configuration().get(super::stats::PROPERTY)?;
    let columns: Vec<String> = listed.split(',').map(|c| c.trim().to_string()).collect();
    let renderable = |c: &String| {
        schema.field_with_name(c).is_ok_and(|f| matches!(f.data_type(), DataType::Utf8 | DataType::Date32))
    };
    columns.iter().all(renderable).then_some(columns)
}

/// What splicing a file gave.
pub struct Spliced {
    /// The new file, `None` when no row of the old one stays.
    pub add: Option<Add>,
    /// Rows of the old file in the new one.
    pub rows_kept: usize,
    /// Row groups copied as bytes, and decoded to drop rows.
    pub groups_copied: usize,
    pub groups_recoded: usize,
}

/// The file at `path` (table-relative) again without the rows `keep` rejects, written to a new
/// file of the table; `None` when it cannot be spliced (a file of an older schema, whose rows
/// must be conformed) and the caller copies it the ordinary way. Only row groups whose `key`
/// statistics admit one of the sorted `keys` are decoded and given to `keep`; the others hold
/// none of them.
pub async fn splice(
    table: &DeltaTable,
    path: &str,
    schema: &SchemaRef,
    stats: &[String],
    key: &str,
    keys: &[&str],
    keep: &(dyn Fn(&RecordBatch) -> Result<BooleanArray> + Sync),
) -> Result<Option<Spliced>> {
    let store = table.log_store().object_store(None);
    let old: Bytes = store.get(&object_store::path::Path::from(path)).await?.bytes().await?;
    // With the page indexes: the copied chunks keep theirs (and a file whose chunks have them
    // mixed with chunks that do not cannot be written).
    let meta = ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional).parse_and_finish(&old)?;
    let out = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties()))?;
    let (mut writer, factory) = out.into_serialized_writer()?;
    let descr = meta.file_metadata().schema_descr();
    if descr.root_schema() != writer.schema_descr().root_schema() {
        return Ok(None);
    }
    let Some(key_col) = descr.columns().iter().position(|c| c.path().parts() == [key]) else { return Ok(None) };
    let meta = ArrowReaderMetadata::try_new(Arc::new(meta), ArrowReaderOptions::default())?;

    let mut done = Spliced { add: None, rows_kept: 0, groups_copied: 0, groups_recoded: 0 };
    for (i, group) in meta.metadata().row_groups().iter().enumerate() {
        if admits(group.column(key_col).statistics(), keys) {
            let rows = ParquetRecordBatchReaderBuilder::new_with_metadata(old.clone(), meta.clone());
            let mut kept = Vec::new();
            for b in rows.with_row_groups(vec![i]).build()? {
                let b = b?;
                kept.push(super::rewrite::conform(&arrow::compute::filter_record_batch(&b, &keep(&b)?)?, schema)?);
            }
            let kept = arrow::compute::concat_batches(schema, &kept)?;
            if kept.num_rows() < group.num_rows() as usize {
                done.groups_recoded += 1;
                done.rows_kept += kept.num_rows();
                // In groups of at most ROW_GROUP_ROWS: a file written before keyed files had
                // them (one group) takes this layout at its first change.
                for at in (0..kept.num_rows()).step_by(ROW_GROUP_ROWS) {
                    let rows = kept.slice(at, ROW_GROUP_ROWS.min(kept.num_rows() - at));
                    encode_group(&mut writer, &factory, schema, &rows)?;
                }
                continue;
            }
        }
        done.groups_copied += 1;
        done.rows_kept += group.num_rows() as usize;
        copy_group(&mut writer, &old, meta.metadata(), i)?;
    }
    if done.rows_kept == 0 {
        return Ok(Some(done));
    }
    // The footer as readers see it, for the statistics (`finish` and then `into_inner` would
    // write it twice).
    let bytes = Bytes::from(writer.into_inner()?);
    let written = ParquetMetaDataReader::new().parse_and_finish(&bytes)?;
    let name = format!("part-00000-{}-c000.snappy.parquet", uuid::Uuid::new_v4());
    let size = bytes.len() as i64;
    store.put(&object_store::path::Path::from(name.as_str()), bytes.into()).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    done.add = Some(Add {
        path: name,
        partition_values: HashMap::new(),
        size,
        modification_time: now.as_millis() as i64,
        data_change: true,
        stats: Some(file_stats(&written, stats)?),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    });
    Ok(Some(done))
}

type FileWriter = SerializedFileWriter<Vec<u8>>;

/// `rows` encoded as the next row group of `writer`.
fn encode_group(
    writer: &mut FileWriter,
    factory: &ArrowRowGroupWriterFactory,
    schema: &SchemaRef,
    rows: &RecordBatch,
) -> Result<()> {
    let mut columns = factory.create_column_writers(writer.flushed_row_groups().len())?;
    for ((w, field), array) in columns.iter_mut().zip(schema.fields()).zip(rows.columns()) {
        for leaf in compute_leaves(field, array)? {
            w.write(&leaf)?;
        }
    }
    let mut out = writer.next_row_group()?;
    for w in columns {
        w.close()?.append_to_row_group(&mut out)?;
    }
    out.close()?;
    Ok(())
}

/// Row group `i` of the file `old` (with footer `meta`) copied into `writer` as its encoded
/// bytes, with its page indexes.
fn copy_group(writer: &mut FileWriter, old: &Bytes, meta: &ParquetMetaData, i: usize) -> Result<()> {
    let group = meta.row_group(i);
    let mut out = writer.next_row_group()?;
    for (c, column) in group.columns().iter().enumerate() {
        let close = ColumnCloseResult {
            bytes_written: column.compressed_size() as u64,
            rows_written: group.num_rows() as u64,
            metadata: column.clone(),
            bloom_filter: None,
            column_index: meta.column_index().and_then(|g| g.get(i)?.get(c)).cloned(),
            offset_index: meta.offset_index().and_then(|g| g.get(i)?.get(c)).cloned(),
        };
        out.append_column(old, close)?;
    }
    out.close()?;
    Ok(())
}

/// Whether a row group whose key column has `stats` may hold one of the sorted `keys`.
fn admits(stats: Option<&Statistics>, keys: &[&str]) -> bool {
    let Some(Statistics::ByteArray(s)) = stats else { return true };
    let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) else { return true };
    let (Ok(lo), Ok(hi)) = (lo.as_utf8(), hi.as_utf8()) else { return true };
    let first = keys.partition_point(|k| *k < lo);
    keys.get(first).is_some_and(|k| *k <= hi)
}

/// A file's statistics as delta-rs writes them into its `add`: the row count, and for each of the
/// `columns` the least minimum and greatest maximum over the row groups (strings as they are, dates
/// as `YYYY-MM-DD`) and the sum of their null counts.
fn file_stats(meta: &ParquetMetaData, columns: &[String]) -> Result<String> {
    let descr = meta.file_metadata().schema_descr();
    let (mut min, mut max, mut nulls) = (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
    for name in columns {
        let Some(i) = descr.columns().iter().position(|c| c.path().parts() == [name.as_str()]) else { continue };
        let date = matches!(descr.column(i).logical_type_ref(), Some(LogicalType::Date));
        let stats: Vec<&Statistics> = meta.row_groups().iter().filter_map(|g| g.column(i).statistics()).collect();
        if stats.is_empty() {
            continue;
        }
        let null_count: u64 = stats.iter().map(|s| s.null_count_opt().unwrap_or(0)).sum();
        nulls.insert(name.clone(), null_count.into());
        let bounds = if date { date_bounds(&stats) } else { string_bounds(&stats)? };
        if let Some((lo, hi)) = bounds {
            min.insert(name.clone(), lo.into());
            max.insert(name.clone(), hi.into());
        }
    }
    let stats = serde_json::json!({
        "numRecords": meta.file_metadata().num_rows(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    });
    Ok(stats.to_string())
}

fn string_bounds(stats: &[&Statistics]) -> Result<Option<(String, String)>> {
    let mut bounds: Option<(String, String)> = None;
    for s in stats {
        let Statistics::ByteArray(s) = s else { return Err(Error::Other("string statistics expected".into())) };
        let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) else { continue };
        let (lo, hi) = (lo.as_utf8()?.to_string(), hi.as_utf8()?.to_string());
        bounds = Some(match bounds {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
    Ok(bounds)
}

fn date_bounds(stats: &[&Statistics]) -> Option<(String, String)> {
    let days = stats.iter().filter_map(|s| match s {
        Statistics::Int32(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    });
    let (lo, hi) = days.reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))?;
    let day = |d: i32| {
        let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)? + chrono::Duration::days(d.into());
        Some(date.format("%Y-%m-%d").to_string())
    };
    Some((day(lo)?, day(hi)?))
}
