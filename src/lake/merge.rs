//! One MERGE shape for every keyed table: upsert source rows by key, optionally only when the source
//! is newer (silver's ordering guard), and delete target rows the source marks as gone (gold
//! recompute). The progress `txn` rides in the same commit.

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::{Field, Schema};
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use std::sync::Arc;

use super::commit_with;
use super::schema::TableSpec;
use crate::error::Result;

/// Name of the extra source column that marks a key as deleted.
pub const DELETED: &str = "__deleted";

pub struct MergeSpec<'a> {
    pub spec: &'a TableSpec,
    /// Update a matched row only when `s.<guard> > t.<guard>` (newer source position).
    pub guard: Option<&'static str>,
    /// Fail (as a commit conflict) rather than commit over a newer table version: for writes whose
    /// correctness depends on the exact version that was read.
    pub strict: bool,
}

/// Appends a `__deleted` flag column to a batch.
pub fn with_deleted_flag(batch: &RecordBatch, deleted: Vec<bool>) -> Result<RecordBatch> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(DELETED, arrow::datatypes::DataType::Boolean, false)));
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(BooleanArray::from(deleted)));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn quote(c: &str) -> String {
    format!("`{c}`")
}

/// Adds the source's columns the table lacks (nullable: rows written before them have none), in a
/// commit of their own. MERGE's own schema evolution is not used: in delta-rs 1.1 it checks the
/// table's NOT NULL columns on its intermediate rows, where the target rows the source does not
/// touch have them null, and fails the batch (delta-rs#4527). A crash between the two commits
/// leaves a column nobody wrote yet, which the batch's retry finds and uses.
async fn add_columns(table: DeltaTable, source: &RecordBatch, known: &[String]) -> Result<DeltaTable> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let mut new = Vec::new();
    for f in source.schema().fields().iter().filter(|f| f.name() != DELETED && !known.contains(f.name())) {
        let f = f.as_ref().clone().with_nullable(true);
        let field: deltalake::kernel::StructField = (&f).try_into_kernel()?;
        new.push(field);
    }
    if new.is_empty() {
        return Ok(table);
    }
    let names: Vec<&str> = new.iter().map(|f| f.name().as_str()).collect();
    tracing::info!(table = %table.table_url(), columns = ?names, "new source columns added to the table");
    Ok(table.add_columns().with_fields(new).await?)
}

/// MERGE `source` into `table`. A source with a `__deleted` column deletes matched rows it flags.
/// Source keys must be unique (callers deduplicate to the newest change per key).
pub async fn merge(
    table: DeltaTable,
    m: &MergeSpec<'_>,
    source: RecordBatch,
    txns: Vec<Transaction>,
) -> Result<DeltaTable> {
    let has_deleted = source.schema().index_of(DELETED).is_ok();
    // Every source column is written: the table's own plus extras, which `add_columns` adds first.
    let names: Vec<String> =
        source.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != DELETED).collect();
    let known: Vec<String> = table.snapshot()?.schema().fields().map(|f| f.name().clone()).collect();
    let table = add_columns(table, &source, &known).await?;
    let ctx = SessionContext::new();
    let df = ctx.read_batch(source)?;
    let on = m.spec.key.iter().map(|k| format!("t.{q} = s.{q}", q = quote(k))).collect::<Vec<_>>().join(" AND ");
    let mut update_pred = Vec::new();
    if let Some(g) = m.guard {
        update_pred.push(format!("s.{q} > t.{q}", q = quote(g)));
    }
    if has_deleted {
        update_pred.push(format!("NOT s.{DELETED}"));
    }
    let props = if m.strict { commit_with(txns).with_max_retries(0) } else { commit_with(txns) };
    let mut b = table.merge(df, on).with_source_alias("s").with_target_alias("t").with_commit_properties(props);
    if has_deleted {
        let mut pred = format!("s.{DELETED}");
        if let Some(g) = m.guard {
            pred.push_str(&format!(" AND s.{q} > t.{q}", q = quote(g)));
        }
        b = b.when_matched_delete(|d| d.predicate(pred))?;
    }
    b = b.when_matched_update(|mut u| {
        if !update_pred.is_empty() {
            u = u.predicate(update_pred.join(" AND "));
        }
        for n in &names {
            u = u.update(n.as_str(), format!("s.{}", quote(n)));
        }
        u
    })?;
    b = b.when_not_matched_insert(|mut i| {
        if has_deleted {
            i = i.predicate(format!("NOT s.{DELETED}"));
        }
        for n in &names {
            i = i.set(n.as_str(), format!("s.{}", quote(n)));
        }
        i
    })?;
    let (table, metrics) = b.await?;
    tracing::debug!(
        table = %table.table_url(),
        files_scanned = metrics.num_target_files_scanned,
        files_skipped = metrics.num_target_files_skipped_during_scan,
        files_rewritten = metrics.num_target_files_removed,
        rows_copied = metrics.num_target_rows_copied,
        ms = metrics.execution_time_ms,
        "merge"
    );
    Ok(table)
}
