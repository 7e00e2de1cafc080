//! Reading tables back: filtered scans for gold recompute (only the keys a batch touched) and whole
//! scans for status and tests.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::DeltaTable;
use deltalake::datafusion::common::JoinType;
use deltalake::datafusion::prelude::{Expr, SessionContext, col, lit};

use crate::error::Result;

/// Room for Parquet footers kept between scans (a footer of these tables is a few KiB).
const FOOTER_CACHE_BYTES: usize = 32 << 20;

/// A DataFusion session whose Parquet footer cache is shared by every scan of the process. Data
/// files never change once written, and a batch reads the same recent files several times (and
/// again in the next batch); without it every read of a file fetched its footer again, two of the
/// five requests a small file costs. Entries are checked against the file's size and time.
pub fn session() -> SessionContext {
    use deltalake::datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
    use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use deltalake::datafusion::prelude::SessionConfig;
    static FOOTERS: std::sync::OnceLock<Option<Arc<FileMetadataCache>>> = std::sync::OnceLock::new();
    let config = || CacheManagerConfig::default().with_metadata_cache_limit(FOOTER_CACHE_BYTES);
    let shared = FOOTERS.get_or_init(|| {
        RuntimeEnvBuilder::new()
            .with_cache_manager(config())
            .build()
            .ok()
            .map(|rt| rt.cache_manager.get_file_metadata_cache())
    });
    let runtime =
        RuntimeEnvBuilder::new().with_cache_manager(config().with_file_metadata_cache(shared.clone())).build_arc();
    match runtime {
        Ok(rt) => SessionContext::new_with_config_rt(SessionConfig::new(), rt),
        Err(_) => SessionContext::new(), // only a slower scan
    }
}

/// Rows of `table` where `column` is one of `values`. Empty `values` reads nothing.
pub async fn scan_where_in(table: &DeltaTable, column: &str, values: Vec<Expr>) -> Result<Vec<RecordBatch>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    scan(table, Some(col(format!("\"{column}\"")).in_list(values, false))).await
}

/// Rows of `table` whose string `column` is one of `keys`, as a hash semi-join against the keys,
/// with only `columns` when given (Parquet then decodes nothing else).
/// A batch touches thousands of keys; as an `IN (...)` literal list the planner's cost (and stack
/// depth) grows with the list, while the join stays one hash lookup per scanned row.
pub async fn scan_keys(
    table: &DeltaTable,
    column: &str,
    keys: &BTreeSet<String>,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = session();
    table.update_datafusion_session(&ctx.state())?;
    let mut rows = ctx.read_table(table.table_provider().await?)?;
    if let Some(ranges) = super::keys::key_ranges(column, keys.iter().map(String::as_str)) {
        rows = rows.filter(ranges)?;
    }
    if let Some(cols) = columns {
        rows = rows.select_columns(cols)?;
    }
    // The key column as the scan presents it (Utf8 or Utf8View), so the join needs no coercion.
    let kind = rows.schema().field_with_unqualified_name(column)?.data_type().clone();
    // Keys on the left (the hash table's side), rows streamed on the right.
    let matched = ctx.read_batch(key_batch(keys, &kind)?)?.join(rows, JoinType::RightSemi, &[KEY], &[column], None)?;
    Ok(matched.collect().await?)
}

/// Name of the key column of a key join (distinct from every table column).
pub(crate) const KEY: &str = "__orderlake_key";

/// `keys` as a one-column batch ([`KEY`]) of the type the scanned key column has.
pub(crate) fn key_batch(keys: impl IntoIterator<Item = impl AsRef<str>>, kind: &DataType) -> Result<RecordBatch> {
    let values: Arc<dyn arrow::array::Array> = Arc::new(StringArray::from_iter_values(keys));
    let values = arrow::compute::cast(&values, kind)?;
    Ok(RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new(KEY, kind.clone(), false)])), vec![values])?)
}

/// Rows of `table` matching `filter` (all rows when `None`).
pub async fn scan(table: &DeltaTable, filter: Option<Expr>) -> Result<Vec<RecordBatch>> {
    let ctx = session();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    let mut df = ctx.read_table(provider)?;
    if let Some(f) = filter {
        df = df.filter(f)?;
    }
    Ok(df.collect().await?)
}

/// Every row of `table`, only `columns`.
pub async fn scan_columns(table: &DeltaTable, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let ctx = session();
    table.update_datafusion_session(&ctx.state())?;
    Ok(ctx.read_table(table.table_provider().await?)?.select_columns(columns)?.collect().await?)
}

/// Number of rows in a table.
pub async fn count(table: &DeltaTable) -> Result<usize> {
    let ctx = session();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    Ok(ctx.read_table(provider)?.count().await?)
}

pub fn str_lits<'a>(v: impl IntoIterator<Item = &'a String>) -> Vec<Expr> {
    v.into_iter().map(|s| lit(s.clone())).collect()
}
