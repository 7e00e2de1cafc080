//! Replacing the rows of a set of keys by copy-on-write of only the files that hold them, with the
//! new rows in a file of their own, in one strict commit.
//!
//! delta-rs's MERGE writes the rows it copies and the rows it inserts into the same new file. A
//! table where every batch updates one older row (an order whose lines straddle two batches) then
//! stays one file that every batch rewrites whole: the cost of a batch grows with the table. Here
//! a batch rewrites only the files holding its existing keys (found within a file-skipping
//! window) and adds its rows as new files, so the cost stays that of the batch.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use deltalake::DeltaTable;
use deltalake::datafusion::common::JoinType;
use deltalake::datafusion::prelude::{Expr, SessionContext};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::{StreamExt, TryStreamExt};

use super::commit_with;
use super::keys::{family, key_ranges};
use super::merge::DELETED;
use super::read::{KEY, key_batch};
use crate::error::Result;

const FILE: &str = "__orderlake_file";

/// Files spliced at once at most, and the bytes they may hold together: each holds its old file
/// and the new one, about as big (at least one file is spliced, however big).
const MAX_SPLICES: usize = 4;
const SPLICE_BUDGET: u64 = 128 << 20;

/// What a rewrite did, recorded as the commit's `operationMetrics`.
#[derive(Debug, Default, serde::Serialize)]
struct Rewritten {
    files_rewritten: usize,
    rows_copied: usize,
    rows_written: usize,
    /// Row groups of rewritten files copied as bytes, and decoded to drop rows ([`super::splice`]).
    groups_copied: usize,
    groups_recoded: usize,
}

/// Where the existing rows of a batch's keys may be.
pub enum Search {
    /// Anywhere: every file whose key statistics admit one of the keys is read.
    All,
    /// Only where this filter holds (it must hold for every existing row of the keys), e.g. the
    /// batch's date window.
    Within(Expr),
    /// Nowhere: the keys are known to be new (a sales line keyed by its own Kafka position), so
    /// nothing is read and the rows are only added.
    Nowhere,
}

/// Replaces the rows of `table` whose `key` is one of `rows`' keys by those rows; a row flagged
/// in a [`DELETED`] column deletes its key instead. `search` says where existing rows of those
/// keys can be: only files it leaves are read. With `guard` (a column of
/// both), an existing row whose guard is not older than the new row's stays as it is (silver's
/// ordering rule). Files are written sorted by `cluster` and split by its key family, so reads by
/// it skip them on statistics. Strict: fails as a commit conflict if the table moved since
/// `table`'s version.
pub async fn replace_keys(
    table: DeltaTable,
    key: &str,
    rows: RecordBatch,
    search: Search,
    guard: Option<&str>,
    cluster: &str,
    txns: Vec<Transaction>,
) -> Result<DeltaTable> {
    let ctx = super::read::session();
    table.update_datafusion_session(&ctx.state())?;
    let mut done = Rewritten::default();

    // The new rows by key (keys are unique: callers keep one change per key).
    let new_keys = utf8(&rows, key)?;
    let new_keys = new_keys.as_string::<i32>();
    let new_guard = guard.map(|g| utf8(&rows, g)).transpose()?;
    let new_guard = new_guard.as_ref().map(|g| g.as_string::<i32>());
    let by_key: HashMap<&str, usize> = new_keys.iter().enumerate().filter_map(|(i, k)| Some((k?, i))).collect();

    let files = match search {
        Search::Nowhere => BTreeSet::new(),
        Search::All => locate(&ctx, &table, key, &by_key, None).await?,
        Search::Within(w) => locate(&ctx, &table, key, &by_key, Some(w)).await?,
    };

    // Keys whose existing row is at least as new as the batch's: that row stays. Behind a lock:
    // several files are spliced at once.
    let stale: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    // The files' other rows (and rows that stay) are copied into new files; the files go.
    let mut writer = RecordBatchWriter::for_table(&table)?.with_writer_properties(super::splice::writer_properties());
    let schema = writer.arrow_schema();
    let mut actions: Vec<Action> = Vec::new();
    if !files.is_empty() {
        // Which of an existing file's rows stay: all but the batch's keys, unless the existing
        // row is at least as new (then it stays and the batch's row is not written).
        let keep = |b: &RecordBatch| -> Result<BooleanArray> {
            let old_keys = utf8(b, key)?;
            let old_keys = old_keys.as_string::<i32>();
            let old_guard = guard.map(|g| utf8(b, g)).transpose()?;
            let old_guard = old_guard.as_ref().map(|g| g.as_string::<i32>());
            let mut stays = Vec::new();
            let mask = (0..b.num_rows())
                .map(|i| {
                    let Some((k, j)) =
                        old_keys.is_valid(i).then(|| old_keys.value(i)).and_then(|k| Some((k, by_key.get(k)?)))
                    else {
                        return Some(true); // not one of the batch's keys
                    };
                    let newer = match (old_guard, new_guard) {
                        // As MERGE's `s.guard > t.guard`: a missing value is never newer.
                        (Some(og), Some(ng)) => ng.is_valid(*j) && og.is_valid(i) && ng.value(*j) > og.value(i),
                        _ => true,
                    };
                    if !newer {
                        stays.push(k.to_string());
                    }
                    Some(!newer)
                })
                .collect();
            if !stays.is_empty() {
                stale.lock().unwrap_or_else(|e| e.into_inner()).extend(stays);
            }
            Ok(mask)
        };
        // The files go; how many rows each holds decides how it is copied.
        let mut sizes: HashMap<String, (usize, i64)> = HashMap::new();
        let snapshot = table.snapshot()?.snapshot().clone();
        let mut views = snapshot.file_views(table.log_store().as_ref(), None);
        while let Some(v) = views.try_next().await? {
            if files.contains(v.path().as_ref()) {
                actions.push(Action::Remove(v.remove_action(true)));
                sizes.insert(v.path().to_string(), (v.num_records().unwrap_or(0), v.size()));
                done.files_rewritten += 1;
            }
        }
        if done.files_rewritten != files.len() {
            return Err(crate::error::Error::Other(format!(
                "rewrite of {}: {} files hold the keys but {} of them are in the table's file list",
                table.table_url(),
                files.len(),
                done.files_rewritten
            )));
        }
        // Files of more than a row group lose only the groups holding the keys, each file staying
        // whole; smaller ones (the last batches' files) are read together and their rows merged
        // into as few files as their key families allow.
        let big = |f: &String| sizes.get(f).is_some_and(|&(rows, _)| rows > super::splice::ROW_GROUP_ROWS);
        let (big, small): (Vec<String>, Vec<String>) = files.iter().cloned().partition(big);
        let mut whole = Vec::new();
        match super::splice::stats_columns(&table, &schema) {
            Some(stats) if !big.is_empty() => {
                let mut sorted: Vec<&str> = by_key.keys().copied().collect();
                sorted.sort_unstable();
                // Several at once, so a store's latency is paid once per few files; each holds
                // its file's bytes twice, so as many as fit a budget.
                let largest = big.iter().filter_map(|f| sizes.get(f)).map(|&(_, bytes)| bytes.max(1) as u64).max();
                let at_once = (SPLICE_BUDGET / (2 * largest.unwrap_or(1))).clamp(1, MAX_SPLICES as u64) as usize;
                let spliced: Vec<(String, Option<super::splice::Spliced>)> = futures::stream::iter(big)
                    .map(|f| {
                        let (table, schema, stats, sorted, keep) = (&table, &schema, &stats, &sorted, &keep);
                        async move {
                            let s = super::splice::splice(table, &f, schema, stats, key, sorted, keep).await?;
                            Ok::<_, crate::error::Error>((f, s))
                        }
                    })
                    .buffer_unordered(at_once)
                    .try_collect()
                    .await?;
                for (f, s) in spliced {
                    match s {
                        Some(s) => {
                            done.rows_copied += s.rows_kept;
                            done.groups_copied += s.groups_copied;
                            done.groups_recoded += s.groups_recoded;
                            actions.extend(s.add.map(Action::Add));
                        }
                        None => whole.push(f),
                    }
                }
            }
            _ => whole = big,
        }
        // A big file that cannot be spliced is copied on its own, so it keeps its own key range
        // (merged with others, every later change would copy them all); small files together.
        let mut groups: Vec<Vec<String>> = whole.into_iter().map(|f| vec![f]).collect();
        if !small.is_empty() {
            groups.push(small);
        }
        for paths in groups {
            let provider = table.table_provider().with_file_paths(paths).await?;
            // Streamed, not collected: a file's rows are held only until what stays of them is kept.
            let mut scan = ctx.read_table(provider)?.execute_stream().await?;
            let mut copied = Vec::new();
            while let Some(b) = scan.try_next().await? {
                let kept = arrow::compute::filter_record_batch(&b, &keep(&b)?)?;
                if kept.num_rows() > 0 {
                    done.rows_copied += kept.num_rows();
                    copied.push(conform(&kept, &schema)?);
                }
            }
            actions.extend(write_clustered(&mut writer, copied, cluster).await?);
        }
    }
    let stale = stale.into_inner().unwrap_or_else(|e| e.into_inner());
    let deleted = rows.column_by_name(DELETED).map(|c| c.as_boolean().clone());
    let write: BooleanArray = (0..rows.num_rows())
        .map(|i| {
            let gone = deleted.as_ref().is_some_and(|d| d.value(i));
            let stays = new_keys.is_valid(i) && stale.contains(new_keys.value(i));
            Some(!gone && !stays)
        })
        .collect();
    let rows = arrow::compute::filter_record_batch(&rows, &write)?;
    if rows.num_rows() > 0 {
        done.rows_written = rows.num_rows();
        let rows = conform(&rows, &schema)?;
        actions.extend(write_clustered(&mut writer, vec![rows], cluster).await?);
    }

    let mut props = commit_with(txns).with_max_retries(0);
    let metrics = serde_json::to_value(&done).map_err(|e| crate::error::Error::Other(e.to_string()))?;
    props = props.with_metadata([("operationMetrics".to_string(), metrics)]);
    let op = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(format!("t.{key} = s.{key}")),
        matched_predicates: vec![MergePredicate { action_type: "update".into(), predicate: None }],
        not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
        not_matched_by_source_predicates: vec![],
    };
    let commit = CommitBuilder::from(props).with_actions(actions).build(Some(table.snapshot()?), table.log_store(), op);
    let finalized = commit.await?;
    tracing::debug!(
        table = %table.table_url(),
        files_rewritten = done.files_rewritten,
        rows_copied = done.rows_copied,
        rows_written = done.rows_written,
        "rewrite"
    );
    // The commit's own post-commit state is the table at the new version: no need to list the
    // log and read the commit back.
    let mut table = table;
    table.state = Some(finalized.snapshot());
    Ok(table)
}

/// The files holding any of the keys (table-relative paths), searched where `window` holds.
async fn locate(
    ctx: &SessionContext,
    table: &DeltaTable,
    key: &str,
    by_key: &HashMap<&str, usize>,
    window: Option<Expr>,
) -> Result<BTreeSet<String>> {
    let mut located = ctx.read_table(table.table_provider().with_file_column(FILE).await?)?;
    if let Some(w) = window {
        located = located.filter(w)?;
    }
    if let Some(ranges) = key_ranges(key, by_key.keys().copied()) {
        located = located.filter(ranges)?;
    }
    let located = located.select_columns(&[key, FILE])?;
    let kind = located.schema().field_with_unqualified_name(key)?.data_type().clone();
    let keys = key_batch(by_key.keys(), &kind)?;
    let hits = ctx.read_batch(keys)?.join(located, JoinType::RightSemi, &[KEY], &[key], None)?;
    // The scan names files by URL, the log by path relative to the table root.
    let root = table.table_url().to_string();
    let root = root.trim_end_matches('/');
    let mut files = BTreeSet::new();
    for b in hits.select_columns(&[FILE])?.collect().await? {
        let f = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        for url in f.as_string::<i32>().iter().flatten() {
            files.insert(url.strip_prefix(root).map_or(url, |p| p.trim_start_matches('/')).to_string());
        }
    }
    Ok(files)
}

/// Files beyond which [`write_clustered`] keeps a batch in one file (many tiny files cost more
/// than they skip).
const MAX_SPLITS: usize = 8;

/// Writes the rows of `parts` sorted by `cluster`'s [`family`] and value, one file per family: a
/// file then spans a narrow range of ids, which [`super::keys::key_ranges`] filters skip on its
/// statistics. The parts are not concatenated first: rows are gathered from them in their sorted
/// order once, and not at all when they are in it already (the rows of one file this module
/// wrote). The sort is stable, so parts that are sorted runs (files being packed, a file's row
/// groups) cost a merge of the runs, not a sort of every row. Takes `parts` by value so they are
/// gone once written.
pub(super) async fn write_clustered(
    writer: &mut RecordBatchWriter,
    parts: Vec<RecordBatch>,
    cluster: &str,
) -> Result<Vec<Action>> {
    let parts: Vec<RecordBatch> = parts.into_iter().filter(|p| p.num_rows() > 0).collect();
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let keys = parts.iter().map(|p| utf8(p, cluster)).collect::<Result<Vec<_>>>()?;
    let (parts, keys): (Vec<RecordBatch>, Vec<ArrayRef>) =
        part_order(&keys).into_iter().map(|p| (parts[p].clone(), keys[p].clone())).unzip();
    let mut rows = clustered_order(&keys);
    let in_order = rows.is_sorted_by(|a, b| a.0 <= b.0);
    if !in_order {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let fam = |i: usize| rows[i].0.map(|(f, _)| f);
    let mut bounds: Vec<usize> = (1..rows.len()).filter(|&i| fam(i) != fam(i - 1)).collect();
    if bounds.len() >= MAX_SPLITS {
        bounds.clear();
    }
    bounds.push(rows.len());
    let at: Vec<(usize, usize)> = rows.iter().map(|r| r.1).collect();
    drop(rows);
    let refs: Vec<&RecordBatch> = parts.iter().collect();
    let mut adds = Vec::new();
    let mut start = 0;
    for end in bounds {
        if in_order {
            for (p, from, len) in runs(&at[start..end]) {
                writer.write(parts[p].slice(from, len)).await?;
            }
        } else {
            writer.write(arrow::compute::interleave_record_batch(&refs, &at[start..end])?).await?;
        }
        adds.extend(writer.flush().await?.into_iter().map(Action::Add));
        start = end;
    }
    Ok(adds)
}

/// A row's place in the written order: nulls first (a null key is a row the MERGE rejected
/// anyway), then by family and key ([`super::keys::by_family`], the family found once per row).
type SortKey<'a> = Option<((&'a str, usize), &'a str)>;

/// The parts (by their key columns) in the order of their first keys. A scan of several files
/// hands their batches back interleaved; files of disjoint key ranges (as this module and
/// compaction leave them) are then in order again, and need neither a sort nor a gather.
fn part_order(keys: &[ArrayRef]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&p| sort_key(keys[p].as_string::<i32>(), 0));
    order
}

/// The [`SortKey`] of row `i` of a key column.
fn sort_key(k: &arrow::array::StringArray, i: usize) -> SortKey<'_> {
    k.is_valid(i).then(|| (family(k.value(i)), k.value(i)))
}

/// Each row of the parts (by part and row) with its [`SortKey`], in the parts' order.
fn clustered_order(keys: &[ArrayRef]) -> Vec<(SortKey<'_>, (usize, usize))> {
    let mut rows = Vec::with_capacity(keys.iter().map(|k| k.len()).sum());
    for (p, k) in keys.iter().enumerate() {
        let k = k.as_string::<i32>();
        rows.extend((0..k.len()).map(|i| (sort_key(k, i), (p, i))));
    }
    rows
}

/// Consecutive rows of one part as (part, first row, rows).
fn runs(at: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for &(p, i) in at {
        match runs.last_mut() {
            Some((q, from, len)) if *q == p && *from + *len == i => *len += 1,
            _ => runs.push((p, i, 1)),
        }
    }
    runs
}

/// A string column as plain `Utf8` (a scan may hand strings back as views).
fn utf8(b: &RecordBatch, name: &str) -> Result<ArrayRef> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::Other(format!("rewrite: column {name} missing from the rows")))?;
    Ok(arrow::compute::cast(c, &DataType::Utf8)?)
}

/// `batch` with the writer's column types (a scan may hand strings back as views).
pub(super) fn conform(batch: &RecordBatch, schema: &Arc<Schema>) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                crate::error::Error::Other(format!("rewrite: column {} missing from the rows", f.name()))
            })?;
            Ok(arrow::compute::cast(c, f.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn keys(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    #[test]
    fn rows_are_ordered_nulls_first_then_by_family_and_key_across_parts() {
        let parts = [keys(&[Some("1000000"), Some("C999999")]), keys(&[None, Some("999999"), Some("999998")])];
        let mut rows = clustered_order(&parts);
        assert!(!rows.is_sorted_by(|a, b| a.0 <= b.0));
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let at: Vec<(usize, usize)> = rows.iter().map(|r| r.1).collect();
        // null, 999998, 999999 (six digits), 1000000 (seven), C999999 (another family)
        assert_eq!(at, [(1, 0), (1, 2), (1, 1), (0, 0), (0, 1)]);
    }

    #[test]
    fn rows_already_in_order_are_written_as_slices_of_their_parts() {
        let parts = [keys(&[Some("100"), Some("101")]), keys(&[Some("102"), Some("103"), Some("104")])];
        let rows = clustered_order(&parts);
        assert!(rows.is_sorted_by(|a, b| a.0 <= b.0));
        let at: Vec<(usize, usize)> = rows.iter().map(|r| r.1).collect();
        assert_eq!(runs(&at), [(0, 0, 2), (1, 0, 3)]);
        assert_eq!(runs(&at[1..4]), [(0, 1, 1), (1, 0, 2)]);
    }

    #[test]
    fn batches_of_disjoint_files_scanned_interleaved_are_put_back_in_order() {
        // Two files, 100–103 and 200–203, each read as two batches and streamed interleaved.
        let parts = [
            keys(&[Some("200"), Some("201")]),
            keys(&[Some("100"), Some("101")]),
            keys(&[Some("202"), Some("203")]),
            keys(&[Some("102"), Some("103")]),
        ];
        assert!(!clustered_order(&parts).is_sorted_by(|a, b| a.0 <= b.0));
        let order = part_order(&parts);
        assert_eq!(order, [1, 3, 0, 2]);
        let reordered: Vec<ArrayRef> = order.iter().map(|&p| parts[p].clone()).collect();
        assert!(clustered_order(&reordered).is_sorted_by(|a, b| a.0 <= b.0));
    }
}
