//! How long a table's log remembers a removed file (`delta.deletedFileRetentionDuration`), set
//! from VACUUM's retention (`maintenance.vacuum_retention_hours`).
//!
//! Every checkpoint carries a `remove` (a tombstone) for each file removed within that time, and
//! VACUUM reads them all to find what it may delete. A micro-batch removes a file or more per
//! table (copy-on-write MERGE, packing), so at one batch a second a week's tombstones are a million
//! or more per table: a checkpoint of ~80 MB and seconds of work each time. Delta's default is a
//! week whatever VACUUM keeps; orderlake derives it from VACUUM's retention, so that one setting
//! says how far back readers can go and what the log carries for it.
//!
//! It is VACUUM's retention plus [`MARGIN`]: a tombstone must outlive the moment its file becomes
//! deletable until a VACUUM has seen it. A checkpoint drops an expired tombstone, and `run`
//! vacuums a table hourly; with no margin, most files would be dropped from the log before any
//! VACUUM saw them and stay in storage for good. Shorter still would let VACUUM's orphan mode
//! delete a file a reader of an older version still needs (its tombstone gone, the file old).

use std::collections::HashMap;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::table::config::TablePropertiesExt;
use tracing::info;

use crate::error::Result;

/// The table property holding the tombstone retention.
pub const PROPERTY: &str = "delta.deletedFileRetentionDuration";

/// How long past VACUUM's retention a tombstone stays: VACUUM inside `run` comes hourly, and a
/// day covers a consumer stopped for up to a day too.
pub const MARGIN: Duration = Duration::from_secs(24 * 3600);

/// The tombstone retention for a VACUUM retention.
pub fn tombstones(vacuum_retention: Duration) -> Duration {
    vacuum_retention + MARGIN
}

/// The property's value for a VACUUM retention (whole hours: the setting is in hours).
pub fn value(vacuum_retention: Duration) -> String {
    format!("interval {} hours", tombstones(vacuum_retention).as_secs() / 3600)
}

/// `table` with the tombstone retention for `vacuum_retention`: unchanged when it has it, else
/// after a commit of the property alone (a table created before orderlake set it, or since the
/// setting changed). The commit carries no data and no progress marker.
pub async fn align(table: DeltaTable, vacuum_retention: Duration) -> Result<DeltaTable> {
    let current = table.snapshot()?.table_config().deleted_file_retention_duration();
    let wanted = tombstones(vacuum_retention);
    if current == wanted {
        return Ok(table);
    }
    let set = HashMap::from([(PROPERTY.to_string(), value(vacuum_retention))]);
    let table =
        table.set_tbl_properties().with_properties(set).with_commit_properties(super::commit_with(vec![])).await?;
    info!(
        table = %table.table_url(),
        from_hours = current.as_secs() / 3600,
        to_hours = wanted.as_secs() / 3600,
        "tombstone retention set from the VACUUM retention"
    );
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{Lake, refresh, schema, version_of};
    use arrow::array::{Array, AsArray, StructArray};

    fn kept(t: &DeltaTable) -> Duration {
        t.snapshot().unwrap().table_config().deleted_file_retention_duration()
    }

    /// The paths of the tombstones a checkpoint file carries.
    fn tombstones_in(checkpoint: &std::path::Path) -> Vec<String> {
        let file = std::fs::File::open(checkpoint).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let mut paths = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let remove: &StructArray = b.column_by_name("remove").unwrap().as_struct();
            let path = remove.column_by_name("path").unwrap().as_string::<i32>();
            paths.extend((0..b.num_rows()).filter(|&i| remove.is_valid(i)).map(|i| path.value(i).to_string()));
        }
        paths.sort();
        paths
    }

    #[tokio::test]
    async fn checkpoints_keep_tombstones_for_the_vacuum_retention_and_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let t = lake.open_or_create("t", &schema::BATCH_LOG).await.unwrap();
        let week = Duration::from_secs(168 * 3600);
        assert_eq!(kept(&t), week + MARGIN, "a created table takes the default VACUUM retention and a day");

        // The setting changed since (or the table predates it): settling the table aligns it, once.
        let hour = Duration::from_secs(3600);
        let created = version_of(&t) as i64;
        let t = align(t, hour).await.unwrap();
        assert_eq!(kept(&t), Duration::from_secs(25 * 3600));
        let v = version_of(&t);
        let rearranged = crate::lake::commits::only_rearranged(&t, created, v as i64).await.unwrap();
        assert!(rearranged, "a property commit changes no row: the aggregates' markers still hold");
        let t = align(t, hour).await.unwrap();
        assert_eq!(version_of(&t), v, "no commit when the table has it");

        // Two files removed 2 and 26 hours ago: a checkpoint keeps the first tombstone only.
        let now = chrono::Utc::now().timestamp_millis();
        let remove = |path: &str, hours_ago: i64| {
            serde_json::json!({"remove": {"path": path, "deletionTimestamp": now - hours_ago * 3_600_000,
                "dataChange": true, "extendedFileMetadata": true, "partitionValues": {}, "size": 100}})
            .to_string()
        };
        let commit = [
            serde_json::json!({"commitInfo": {"timestamp": now, "operation": "DELETE"}}).to_string(),
            remove("young.parquet", 2),
            remove("old.parquet", 26),
        ]
        .join("\n");
        let log = dir.path().join("t/_delta_log");
        std::fs::write(log.join(format!("{:020}.json", v + 1)), commit + "\n").unwrap();
        let t = refresh(t).await.unwrap();
        assert_eq!(version_of(&t), v + 1);
        deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
        assert_eq!(tombstones_in(&log.join(format!("{:020}.checkpoint.parquet", v + 1))), ["young.parquet"]);
    }
}
