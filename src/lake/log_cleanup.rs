//! Removal of a table's expired log files, reading the log only as far as it has expired.
//!
//! delta-rs' `cleanup_metadata` lists the whole `_delta_log` to find the commit files past the log
//! retention (30 days by default), and every checkpoint of `lake::checkpoints` and every
//! maintenance round ends with it. At two commits a second a table's log holds ≈ 5 million files
//! once it is 30 days old: a thousand LIST requests of 5,000 names on Azure each time, to delete a
//! few hundred. Object stores list names in order and a log's versions are written in order, so
//! the expired files come first: the listing here stops at the first commit that is inside the
//! retention (or the table's current version), and on Azure only reads the pages it deletes from.
//! A local directory lists in no order: its oldest names are kept and sorted, and only the files
//! up to that commit are looked at.
//!
//! The rule is delta-rs': a file goes when its version is below the newest checkpoint that is not
//! past the first commit inside the retention, and it was written before the retention's start.

use deltalake::DeltaTable;
use deltalake::logstore::object_store::{ObjectMeta, ObjectStore, path::Path};
use deltalake::table::config::TablePropertiesExt;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::error::Result;

/// A file of the log directory that cleanup knows.
#[derive(Debug)]
struct LogFile {
    version: u64,
    kind: Kind,
    meta: ObjectMeta,
}

#[derive(Debug, PartialEq)]
enum Kind {
    Commit,
    /// A classic checkpoint (one file, or one part of several): deleted like a commit.
    Checkpoint,
    /// Another checkpoint form (a V2 checkpoint's UUID name): a safe point, never deleted here,
    /// as delta-rs leaves it.
    OtherCheckpoint,
}

/// What a log file's name says: `<20 digits>.json`, `<20 digits>.checkpoint[.<n>].parquet`, or
/// another `<20 digits>.checkpoint…`; `None` for anything else (`_last_checkpoint`, `.crc`).
fn log_file(meta: ObjectMeta) -> Option<LogFile> {
    let name = meta.location.filename()?;
    let (digits, rest) = name.split_at_checked(20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version = digits.parse().ok()?;
    let kind = match rest.strip_prefix('.')? {
        "json" => Kind::Commit,
        "checkpoint.parquet" => Kind::Checkpoint,
        r if r.starts_with("checkpoint.")
            && r.strip_suffix(".parquet")
                .and_then(|r| r.strip_prefix("checkpoint."))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Kind::Checkpoint
        }
        r if r.starts_with("checkpoint") => Kind::OtherCheckpoint,
        _ => return None,
    };
    Some(LogFile { version, kind, meta })
}

/// The files to delete from a log listed in name order: reads `listing` up to the first commit
/// at or past `current` or written at or after `cutoff_ms`, and no further.
async fn expired(
    mut listing: BoxStream<'static, deltalake::logstore::object_store::Result<ObjectMeta>>,
    current: u64,
    cutoff_ms: i64,
) -> Result<Vec<Path>> {
    let mut before = Vec::new();
    while let Some(meta) = listing.try_next().await? {
        let Some(f) = log_file(meta) else { continue };
        if f.kind == Kind::Commit && (f.version >= current || f.meta.last_modified.timestamp_millis() >= cutoff_ms) {
            break;
        }
        before.push(f);
    }
    // A checkpoint of the stopping commit's version lists before it (`…05.checkpoint` < `…05.json`).
    let Some(safe) = before.iter().filter(|f| f.kind != Kind::Commit).map(|f| f.version).max() else {
        return Ok(Vec::new()); // no checkpoint to read the table from without them
    };
    Ok(before
        .into_iter()
        .filter(|f| f.kind != Kind::OtherCheckpoint && f.version < safe)
        .filter(|f| f.meta.last_modified.timestamp_millis() <= cutoff_ms)
        .map(|f| f.meta.location)
        .collect())
}

/// Deletes the table's log files past its log retention that a checkpoint covers (unless the
/// table turned expired-log cleanup off); the number deleted.
pub async fn cleanup(table: &DeltaTable) -> Result<usize> {
    let snapshot = table.snapshot()?;
    let config = snapshot.table_config();
    if !config.enable_expired_log_cleanup() {
        return Ok(0);
    }
    let cutoff_ms = chrono::Utc::now().timestamp_millis() - config.log_retention_duration().as_millis() as i64;
    let store = table.log_store().object_store(None);
    let log = Path::from("_delta_log");
    let local =
        table.log_store().root_url().to_file_path().ok().filter(|_| table.log_store().root_url().scheme() == "file");
    let listing = match local {
        Some(root) => local_log(root.join("_delta_log")).await,
        None => store.list(Some(&log)),
    };
    let gone = expired(listing, snapshot.version(), cutoff_ms).await?;
    delete(store.as_ref(), gone).await
}

/// Names a local cleanup looks at, at most: the oldest of the log. More expired files than this
/// (a log whose cleanup was off for a while) go over the following cleanups.
const LOCAL_OLDEST: usize = 10_000;

/// The oldest [`LOCAL_OLDEST`] names of a local log directory in name order, each file looked
/// at (its time) only when the cleanup reads that far: a directory lists in no order, and
/// looking at every file of a 30-day log at every cleanup was a third of a continuous run's
/// maintenance after 20 minutes. Holding only the oldest names keeps a 5-million-file log from
/// costing hundreds of MiB for a moment at every cleanup.
async fn local_log(
    dir: std::path::PathBuf,
) -> BoxStream<'static, deltalake::logstore::object_store::Result<ObjectMeta>> {
    let read = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || oldest_names(&dir, LOCAL_OLDEST)).await
    };
    let names = match read {
        Ok(Ok(names)) => names,
        // No log directory: nothing to clean up.
        _ => Vec::new(),
    };
    let files = names.into_iter().filter_map(move |name| {
        let meta = std::fs::metadata(dir.join(&name)).ok().filter(|m| m.is_file())?;
        Some(Ok(ObjectMeta {
            location: Path::from(format!("_delta_log/{name}")),
            last_modified: meta.modified().ok()?.into(),
            size: meta.len(),
            e_tag: None,
            version: None,
        }))
    });
    futures::stream::iter(files).boxed()
}

/// The `keep` smallest names in `dir`, sorted.
fn oldest_names(dir: &std::path::Path, keep: usize) -> std::io::Result<Vec<String>> {
    let mut oldest = std::collections::BinaryHeap::with_capacity(keep + 1);
    for entry in std::fs::read_dir(dir)? {
        let Some(name) = entry.ok().and_then(|e| e.file_name().into_string().ok()) else { continue };
        if oldest.len() == keep && oldest.peek().is_some_and(|newest: &String| *newest <= name) {
            continue;
        }
        oldest.push(name);
        if oldest.len() > keep {
            oldest.pop();
        }
    }
    Ok(oldest.into_sorted_vec())
}

async fn delete(store: &dyn ObjectStore, paths: Vec<Path>) -> Result<usize> {
    if paths.is_empty() {
        return Ok(0);
    }
    let deleted: Vec<Path> =
        store.delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed()).try_collect().await?;
    Ok(deleted.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::*;

    fn meta(name: &str, ms: i64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(format!("_delta_log/{name}")),
            last_modified: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
            size: 1,
            e_tag: None,
            version: None,
        }
    }

    /// A log in name order: commits 0–9 written at 0, 100, …, 900 ms, checkpoints at 4 and 7,
    /// `_last_checkpoint` last; and how many entries the cleanup read.
    fn log() -> (Vec<ObjectMeta>, Arc<AtomicUsize>) {
        let mut files = Vec::new();
        for v in 0..10u64 {
            if v == 4 || v == 7 {
                files.push(meta(&format!("{v:020}.checkpoint.parquet"), v as i64 * 100 + 50));
            }
            files.push(meta(&format!("{v:020}.json"), v as i64 * 100));
        }
        files.push(meta("_last_checkpoint", 950));
        (files, Arc::new(AtomicUsize::new(0)))
    }

    fn counted(
        files: Vec<ObjectMeta>,
        read: Arc<AtomicUsize>,
    ) -> BoxStream<'static, deltalake::logstore::object_store::Result<ObjectMeta>> {
        futures::stream::iter(files).inspect(move |_| _ = read.fetch_add(1, Relaxed)).map(Ok).boxed()
    }

    fn names(paths: &[Path]) -> Vec<&str> {
        paths.iter().map(|p| p.filename().unwrap()).collect()
    }

    #[tokio::test]
    async fn expired_files_below_the_newest_safe_checkpoint_go_and_the_listing_stops_there() {
        let (files, read) = log();
        // Commits before 650 ms are expired: 0–6; the newest checkpoint not past 7 is 7's.
        let gone = expired(counted(files, read.clone()), 9, 650).await.unwrap();
        let mut want: Vec<String> = (0..7).map(|v| format!("{v:020}.json")).collect();
        want.insert(4, format!("{:020}.checkpoint.parquet", 4));
        assert_eq!(names(&gone), want);
        assert_eq!(read.load(Relaxed), 10, "read up to commit 7 (its checkpoint lists before it), no further");

        // Inside the retention from commit 5 on: the safe checkpoint is 4's, only 0–3 go.
        let (files, read) = log();
        let gone = expired(counted(files, read), 9, 450).await.unwrap();
        assert_eq!(names(&gone), (0..4).map(|v| format!("{v:020}.json")).collect::<Vec<_>>());

        // Everything expired, but the current version bounds it as the retention did.
        let (files, read) = log();
        let gone = expired(counted(files, read), 7, i64::MAX).await.unwrap();
        assert_eq!(gone.len(), 8, "{:?}", names(&gone));

        // No checkpoint before the retention: nothing goes.
        let (files, read) = log();
        assert!(expired(counted(files, read), 9, 250).await.unwrap().is_empty());
    }

    #[test]
    fn log_files_are_told_by_name() {
        let kind = |n: &str| log_file(meta(n, 0)).map(|f| (f.version, f.kind));
        assert_eq!(kind("00000000000000000012.json"), Some((12, Kind::Commit)));
        assert_eq!(kind("00000000000000000012.checkpoint.parquet"), Some((12, Kind::Checkpoint)));
        assert_eq!(kind("00000000000000000012.checkpoint.0000000001.parquet"), Some((12, Kind::Checkpoint)));
        assert_eq!(
            kind("00000000000000000012.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.parquet"),
            Some((12, Kind::OtherCheckpoint))
        );
        assert_eq!(kind("00000000000000000012.crc"), None);
        assert_eq!(kind("_last_checkpoint"), None);
        assert_eq!(kind("0000000000000000001x.json"), None);
    }

    #[test]
    fn a_local_cleanup_holds_only_the_oldest_names() {
        let dir = tempfile::tempdir().unwrap();
        for v in [7, 3, 9, 1, 5, 0, 8] {
            std::fs::write(dir.path().join(format!("{v:020}.json")), "x").unwrap();
        }
        std::fs::write(dir.path().join("_last_checkpoint"), "x").unwrap();
        let oldest = oldest_names(dir.path(), 4).unwrap();
        assert_eq!(oldest, [0, 1, 3, 5].map(|v| format!("{v:020}.json")));
        assert_eq!(oldest_names(dir.path(), 100).unwrap().len(), 8);
        assert!(oldest_names(&dir.path().join("missing"), 4).is_err());
    }
}
