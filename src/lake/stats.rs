//! Which columns a table's files carry statistics for (`delta.dataSkippingStatsColumns`).
//!
//! Each file's `add` holds min/max/null counts as a JSON string, by default for the first 32
//! columns. delta-rs parses those strings again for every live file at each commit (its snapshot
//! update) and at each filtered scan: with every column's statistics, a keyed table's live files
//! cost ≈ 2 µs of CPU per file and commit, ≈ 5 µs with a key lookup; with these columns a
//! third or less (`make bench-replay`). Live files grow with the table (a top-tier file per
//! `maintenance.keyed_file_rows` rows), so that part of a batch grew with the table however well
//! it was compacted. Statistics only skip files for columns the files are sorted or looked up by:
//! a file sorted by order id spans every customer, product name and amount. So each table keeps
//! them for its [`TableSpec::stats`] columns (keys, lookups, dates); the rest no longer cost a
//! batch anything, and checkpoints shrink with them.

use deltalake::DeltaTable;
use tracing::info;

use super::schema::TableSpec;
use crate::error::Result;

/// The table property naming the columns with statistics.
pub const PROPERTY: &str = "delta.dataSkippingStatsColumns";

/// The property's value for `spec`: its statistics columns, comma-separated.
pub fn value(spec: &TableSpec) -> String {
    spec.stats.join(",")
}

/// `table` with statistics columns: unchanged when it names some (orderlake's, or ones an analyst
/// set with `ALTER TABLE … SET TBLPROPERTIES` for their own filters, which are kept), else with
/// `spec`'s after a commit of the property alone (a table created before orderlake set it).
/// Files written before keep their statistics; reads parse only the listed columns of them. The
/// commit carries no data and no progress marker.
pub async fn align(table: DeltaTable, spec: &TableSpec) -> Result<DeltaTable> {
    if table.snapshot()?.metadata().configuration().contains_key(PROPERTY) {
        return Ok(table);
    }
    let wanted = value(spec);
    let set = std::collections::HashMap::from([(PROPERTY.to_string(), wanted.clone())]);
    let table =
        table.set_tbl_properties().with_properties(set).with_commit_properties(super::commit_with(vec![])).await?;
    info!(table = %table.table_url(), columns = %wanted, "file statistics limited to the columns reads skip on");
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::schema::{self, SILVER_ORDERS};
    use crate::lake::{Lake, version_of};
    use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use deltalake::datafusion::physical_plan::displayable;
    use deltalake::datafusion::prelude::{col, lit};
    use deltalake::protocol::SaveMode;
    use std::sync::Arc;

    /// Silver orders `ids` (one file when written at once).
    fn orders(ids: &[&str]) -> RecordBatch {
        let n = ids.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(ids)),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("c{i}")))),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "France"))),
            Arc::new(Date32Array::from_iter_values((0..n).map(|i| 19_000 + i as i32))),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "placed"))),
            Arc::new(TimestampMicrosecondArray::from_iter_values((0..n).map(|i| i as i64)).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "t:0:1"))),
        ];
        RecordBatch::try_new(SILVER_ORDERS.arrow_schema(), cols).unwrap()
    }

    async fn append(t: DeltaTable, ids: &[&str]) -> DeltaTable {
        t.write(vec![orders(ids)]).with_save_mode(SaveMode::Append).await.unwrap()
    }

    /// The columns with a minimum in the statistics of the file commit `version` added, as the log
    /// holds them (not as delta-rs re-renders them).
    fn stats_columns_in_log(root: &std::path::Path, version: u64) -> Vec<String> {
        let commit = std::fs::read_to_string(root.join(format!("_delta_log/{version:020}.json"))).unwrap();
        let add = commit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find_map(|a| a.get("add").cloned())
            .expect("the commit adds a file");
        let stats: serde_json::Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        let mut cols: Vec<String> = stats["minValues"].as_object().unwrap().keys().cloned().collect();
        cols.sort();
        cols
    }

    /// How many files a scan of `t` for `order_id = id` reads, as its physical plan lists them.
    async fn files_read_for(t: &DeltaTable, id: &str) -> usize {
        let ctx = crate::lake::read::session();
        t.update_datafusion_session(&ctx.state()).unwrap();
        let df =
            ctx.read_table(t.table_provider().await.unwrap()).unwrap().filter(col("order_id").eq(lit(id))).unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        displayable(plan.as_ref()).indent(true).to_string().matches(".parquet").count()
    }

    #[test]
    fn every_table_keeps_statistics_for_its_keys_and_cluster_column() {
        let mut specs = vec![&schema::BRONZE, &schema::DEAD_LETTERS, &schema::SILVER_TOMBSTONES, &schema::BATCH_LOG];
        specs.extend(crate::lake::silver::TABLES.iter().map(|(_, s)| *s));
        specs.extend(crate::gold::TABLES.iter().map(|(_, s)| *s));
        for spec in specs {
            let names: Vec<&str> = spec.names().collect();
            for c in spec.stats {
                assert!(names.contains(c), "{c} is a column of {names:?}");
                assert!(!spec.partition_by.contains(c), "{c} is a partition column: its value is in the path");
            }
            for c in spec.key.iter().chain([&spec.cluster_column()]).filter(|c| !spec.partition_by.contains(c)) {
                assert!(spec.stats.contains(c), "{c} (key or cluster column) has statistics in {names:?}");
            }
        }
    }

    #[tokio::test]
    async fn files_carry_statistics_only_for_the_columns_reads_skip_on() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let t = lake.open_or_create("silver/orders", &SILVER_ORDERS).await.unwrap();
        let t = append(t, &["500001", "500002"]).await;
        let t = append(t, &["500003", "500004"]).await;
        let root = dir.path().join("silver/orders");
        assert_eq!(stats_columns_in_log(&root, version_of(&t)), ["order_date", "order_id"]);
        // Reads by key still skip the other file on its statistics.
        assert_eq!(files_read_for(&t, "500003").await, 1);
        assert_eq!(files_read_for(&t, "600000").await, 0);
    }

    #[tokio::test]
    async fn a_table_created_without_the_property_is_aligned_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("orders");
        std::fs::create_dir_all(&root).unwrap();
        let url = url::Url::from_directory_path(&root).unwrap();
        let t = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(SILVER_ORDERS.delta_fields())
            .await
            .unwrap();
        let t = append(t, &["500001", "500002"]).await;
        let all = stats_columns_in_log(&root, version_of(&t));
        assert!(all.contains(&"customer_id".to_string()), "delta-rs's default: every column ({all:?})");

        let before = version_of(&t);
        let t = align(t, &SILVER_ORDERS).await.unwrap();
        assert_eq!(version_of(&t), before + 1, "one commit of the property");
        let t = align(t, &SILVER_ORDERS).await.unwrap();
        assert_eq!(version_of(&t), before + 1, "no commit when the table has it");
        let t = append(t, &["500003", "500004"]).await;
        assert_eq!(stats_columns_in_log(&root, version_of(&t)), ["order_date", "order_id"]);
        // The older file's full statistics are read for the listed columns: it is still skipped.
        assert_eq!(files_read_for(&t, "500003").await, 1);
        assert_eq!(files_read_for(&t, "500001").await, 1);

        // Columns someone else chose since (an analyst's own filters) are kept.
        let theirs = std::collections::HashMap::from([(PROPERTY.to_string(), "order_id,customer_id".to_string())]);
        let t = t.set_tbl_properties().with_properties(theirs).await.unwrap();
        let set = version_of(&t);
        let t = align(t, &SILVER_ORDERS).await.unwrap();
        assert_eq!(version_of(&t), set, "no commit over someone else's choice");
        let t = append(t, &["500005"]).await;
        assert_eq!(stats_columns_in_log(&root, version_of(&t)), ["customer_id", "order_id"]);
    }
}
