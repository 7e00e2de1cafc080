//! What individual commits of a table did to its rows. A progress proof that names a table
//! version (the aggregates' `orderlake/base/…` markers: "this aggregate equals `order_totals` at
//! version 41") must survive maintenance: a compaction rewrites files without changing a row, so
//! the proof still holds after it. Without this check every maintenance round made the aggregates
//! rebuild from the whole order tables (3 s and 600 MiB at 3M events).
//!
//! And what a commit changed, read from only the files it removed and added ([`touched`]), for a
//! MongoDB publish that must carry the rows of commits it never heard of.

use std::collections::BTreeSet;

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use futures::TryStreamExt;

use crate::error::Result;

/// Beyond this many commits a rebuild is cheaper to reason about than reading them all.
const MAX_COMMITS: i64 = 32;

/// Whether the commits after version `after` up to `upto` (inclusive) are all compactions: each
/// holds only `add`/`remove` actions flagged `dataChange: false` (OPTIMIZE) besides `commitInfo`,
/// or table properties set with the schema unchanged. Anything else answers `false`, and the caller falls back to what it does without the proof: a
/// data change, a schema or protocol change, a change-data file, an action this code does not
/// know, a commit cleaned up by log retention, and a `txn` (a commit recording progress is a step
/// of a pipeline, not maintenance: `orderlake rebuild` lowers the order tables' markers with one
/// to make the aggregates recompute).
pub async fn only_rearranged(table: &DeltaTable, after: i64, upto: i64) -> Result<bool> {
    if after < 0 || upto <= after || upto - after > MAX_COMMITS {
        return Ok(false);
    }
    let store = table.log_store();
    let schema = schema_of(table)?;
    for v in after + 1..=upto {
        let Some(bytes) = store.read_commit_entry(v as u64).await? else { return Ok(false) };
        if !bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).all(|l| changes_no_row(l, &schema)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The table's schema as a `metaData` action spells it, parsed.
fn schema_of(table: &DeltaTable) -> Result<serde_json::Value> {
    let schema = table.snapshot()?.schema();
    serde_json::to_value(schema.as_ref()).map_err(|e| crate::error::Error::Other(format!("schema as JSON: {e}")))
}

/// The newest version of `table` that did more than rearrange files, looking back to `floor` at
/// most (and no more than 32 commits): a reader at `floor` lacks nothing when it is `floor`.
/// Bronze's compactions of the current day follow its batches, and a status that counted them
/// would report an idle, caught-up pipeline as behind.
pub async fn last_changed(table: &DeltaTable, floor: i64) -> Result<i64> {
    let mut v = super::version_of(table) as i64;
    let stop = floor.max(v - MAX_COMMITS);
    while v > stop && only_rearranged(table, v - 1, v).await? {
        v -= 1;
    }
    Ok(v)
}

/// A table at one version and the files it holds (paths relative to the table root, as the log
/// names them).
pub struct AtVersion {
    pub version: u64,
    table: DeltaTable,
    files: BTreeSet<String>,
}

impl AtVersion {
    /// `table` at `version`: from its own state when that is older (the commits in between are
    /// read), from the last checkpoint otherwise.
    pub async fn load(table: &DeltaTable, version: u64) -> Result<AtVersion> {
        let mut t = table.clone();
        t.load_version(version).await?;
        let mut files = BTreeSet::new();
        let snapshot = t.snapshot()?.snapshot().clone();
        let mut views = snapshot.file_views(t.log_store().as_ref(), None);
        while let Some(v) = views.try_next().await? {
            files.insert(v.path().to_string());
        }
        Ok(AtVersion { version, table: t, files })
    }

    /// The table at a later `version`: only the commits in between are read.
    pub async fn at(&self, version: u64) -> Result<AtVersion> {
        AtVersion::load(&self.table, version).await
    }

    /// The rows of `files` (all of them held at this version).
    async fn rows(&self, files: Vec<String>) -> Result<Vec<RecordBatch>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = super::read::session();
        self.table.update_datafusion_session(&ctx.state())?;
        let provider = self.table.table_provider().with_file_paths(files).await?;
        Ok(ctx.read_table(provider)?.collect().await?)
    }
}

/// The rows commit `after.version` took out (those of the files it removed, as `before` holds
/// them) and put in (those of the files it added). Rows a commit copied unchanged into a new
/// file are in both; a rewrite's cost is that of the files it touched, not of the table.
pub async fn touched(before: Option<&AtVersion>, after: &AtVersion) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let none = BTreeSet::new();
    let old = before.map_or(&none, |b| &b.files);
    let removed: Vec<String> = old.difference(&after.files).cloned().collect();
    let added: Vec<String> = after.files.difference(old).cloned().collect();
    let out = match before {
        Some(b) => b.rows(removed).await?,
        None => Vec::new(),
    };
    Ok((out, after.rows(added).await?))
}

/// Whether one log line leaves every row as it was, in a table whose schema is `schema`. A
/// `metaData` action with that schema changed only table properties (maintenance sets the
/// tombstone retention, `super::retention`).
fn changes_no_row(line: &[u8], schema: &serde_json::Value) -> bool {
    let Ok(serde_json::Value::Object(actions)) = serde_json::from_slice(line) else { return false };
    actions.iter().all(|(kind, action)| match kind.as_str() {
        "commitInfo" => true,
        "add" | "remove" => action.get("dataChange").and_then(|d| d.as_bool()) == Some(false),
        "metaData" => action
            .get("schemaString")
            .and_then(|s| s.as_str())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .is_some_and(|s| s == *schema),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rearranging_lines_keep_the_rows() {
        let schema = serde_json::json!({"type": "struct", "fields": []});
        let keeps = |line: &[u8]| changes_no_row(line, &schema);
        assert!(keeps(br#"{"commitInfo":{"operation":"OPTIMIZE"}}"#));
        assert!(!keeps(br#"{"txn":{"appId":"a","version":1}}"#), "progress is not maintenance");
        assert!(keeps(br#"{"add":{"path":"a.parquet","dataChange":false,"stats":"{}"}}"#));
        assert!(keeps(br#"{"remove":{"path":"b.parquet","dataChange":false}}"#));
        assert!(!keeps(br#"{"add":{"path":"a.parquet","dataChange":true}}"#));
        assert!(!keeps(br#"{"remove":{"path":"b.parquet"}}"#), "no flag is not a promise");
        assert!(!keeps(br#"{"metaData":{"id":"x"}}"#));
        let props = br#"{"metaData":{"id":"x","schemaString":"{\"fields\": [], \"type\": \"struct\"}"}}"#;
        assert!(keeps(props), "table properties set, same schema");
        let other = br#"{"metaData":{"id":"x","schemaString":"{\"type\":\"struct\",\"fields\":[{\"name\":\"a\"}]}"}}"#;
        assert!(!keeps(other), "a schema change");
        assert!(!keeps(br#"{"cdc":{"path":"c.parquet","dataChange":false}}"#));
        assert!(!keeps(br#"{"protocol":{"minReaderVersion":3}}"#));
        assert!(!keeps(b"not json"));
    }
}
