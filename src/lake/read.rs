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
    if let Some(ranges) = key_ranges(column, keys.iter().map(String::as_str)) {
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

/// Families beyond which [`key_ranges`] gives one overall range (a filter stays small).
const MAX_FAMILIES: usize = 8;

/// A key's family: its leading non-digit characters and the length of the rest. Ids of one family
/// ("5…" orders, "C5…" cancellations, "shop.sales-…" items) grow together, and as strings they
/// compare like numbers only at one length: "999999" sorts after "1000000". With the length in
/// the family, the ids past a new digit are a family of their own, so no range (a filter, a
/// file) spans from "1…" to "9…" when the numbering crosses a power of ten.
pub(crate) fn family(key: &str) -> (&str, usize) {
    let digits = key.find(|c: char| c.is_ascii_digit()).unwrap_or(key.len());
    (&key[..digits], key.len() - digits)
}

/// Orders keys by family, then by the key: the order files are written in ([`super::rewrite`])
/// so that each family's keys are one contiguous run.
pub(crate) fn by_family(a: &str, b: &str) -> std::cmp::Ordering {
    (family(a), a).cmp(&(family(b), b))
}

/// A filter that every one of `keys` passes: `column` within the [min, max] of each family of
/// the keys. A scan skips the files whose statistics fall outside it; files written sorted and
/// split by family ([`super::rewrite`]) then cover narrow ranges, so a batch of recent keys reads
/// only recent files instead of every file of the table. `None` without keys.
pub(crate) fn key_ranges<'a>(column: &str, keys: impl IntoIterator<Item = &'a str>) -> Option<Expr> {
    let mut ranges: std::collections::BTreeMap<(&str, usize), (&str, &str)> = std::collections::BTreeMap::new();
    for k in keys {
        let r = ranges.entry(family(k)).or_insert((k, k));
        r.0 = r.0.min(k);
        r.1 = r.1.max(k);
    }
    if ranges.len() > MAX_FAMILIES {
        let lo = ranges.values().map(|r| r.0).min()?;
        let hi = ranges.values().map(|r| r.1).max()?;
        ranges = [(("", 0), (lo, hi))].into();
    }
    let c = col(format!("\"{column}\""));
    ranges.values().map(|&(lo, hi)| c.clone().gt_eq(lit(lo)).and(c.clone().lt_eq(lit(hi)))).reduce(Expr::or)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_split_at_the_first_digit_and_by_length() {
        assert_eq!(family("581475"), ("", 6));
        assert_eq!(family("1000000"), ("", 7));
        assert_eq!(family("C581475"), ("C", 6));
        assert_eq!(family("shop.sales-2-41"), ("shop.sales-", 4));
        assert_eq!(family("abc"), ("abc", 0));
        let mut keys = vec!["1000001", "C999999", "999998", "1000000", "C1000000", "999999"];
        keys.sort_by(|a, b| by_family(a, b));
        assert_eq!(keys, ["999998", "999999", "1000000", "1000001", "C999999", "C1000000"]);
    }

    #[test]
    fn numbering_past_a_power_of_ten_keeps_ranges_narrow() {
        // As one string range, 999990..1000010 would be "1000000".."999999": almost every key.
        let keys: Vec<String> = (999_990..1_000_010).map(|n: u32| n.to_string()).collect();
        let e = key_ranges("order_id", keys.iter().map(String::as_str)).unwrap().to_string();
        assert!(e.contains("Utf8(\"999990\")") && e.contains("Utf8(\"999999\")"), "{e}");
        assert!(e.contains("Utf8(\"1000000\")") && e.contains("Utf8(\"1000009\")"), "{e}");
        assert_eq!(e.matches(" OR ").count(), 1, "{e}");
    }

    #[test]
    fn key_ranges_cover_every_key_with_one_range_per_family() {
        assert!(key_ranges("order_id", []).is_none());
        let e = key_ranges("order_id", ["581475", "C581480", "581470", "C581476"]).unwrap().to_string();
        assert!(e.contains("Utf8(\"581470\")") && e.contains("Utf8(\"581475\")"), "{e}");
        assert!(e.contains("Utf8(\"C581476\")") && e.contains("Utf8(\"C581480\")"), "{e}");
        assert_eq!(e.matches(" OR ").count(), 1, "{e}");
        // Many families: one overall range.
        let keys: Vec<String> = (b'a'..=b'z').map(|c| format!("{}1", c as char)).collect();
        let e = key_ranges("k", keys.iter().map(String::as_str)).unwrap().to_string();
        assert!(!e.contains(" OR ") && e.contains("Utf8(\"a1\")") && e.contains("Utf8(\"z1\")"), "{e}");
    }
}
