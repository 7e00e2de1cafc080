//! The tables stay readable by every common reader: protocol reader 1 / writer 2, statistics in
//! every add action, a checkpoint every 10 commits, offsets in `txn` actions.

use orderlake::lake::{Lake, bronze, schema, version_of};
use orderlake::model::RawEvent;

use crate::support::*;

#[tokio::test]
async fn bronze_checkpoints_every_ten_commits_and_keeps_offsets_in_txn() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&unique("format"), &LakeKind::Local(dir.path().to_path_buf()), false);
    let lake = Lake::new(&s);
    let mut t = lake.open_or_create("bronze/format", &schema::BRONZE).await.unwrap();
    for i in 0..11i64 {
        let ev = RawEvent {
            topic: "format".into(),
            partition: (i % 2) as i32,
            offset: i,
            key: Some(format!("k{i}")),
            value: Some(format!("{{\"n\":{i}}}")),
            timestamp_ms: Some(1_700_000_000_000 + i),
        };
        t = bronze::append(t, &s.group, &[ev], 1_700_000_000_000_000).await.unwrap().0;
        lake.keep("bronze/format", &t);
    }
    assert_eq!(version_of(&t), 11);
    assert!(lake.settle_checkpoints(std::time::Duration::from_secs(30)).await, "checkpoints written");
    assert!(dir.path().join("bronze/format/_delta_log/_last_checkpoint").exists(), "checkpoint after 10 commits");
    assert_eq!(lake.txn_version(&t, &bronze::offset_app_id(&s.group, "format", 0)).await.unwrap(), Some(10));
    assert_eq!(lake.txn_version(&t, &bronze::offset_app_id(&s.group, "format", 1)).await.unwrap(), Some(9));
    let p = t.snapshot().unwrap().protocol().clone();
    assert_eq!((p.min_reader_version(), p.min_writer_version()), (1, 2));

    // Reopened from the checkpoint, the offsets are still there.
    let reopened = lake.open("bronze/format").await.unwrap().unwrap();
    assert_eq!(lake.txn_version(&reopened, &bronze::offset_app_id(&s.group, "format", 0)).await.unwrap(), Some(10));
    let out = run_python("check_delta.py", &[&format!("{}bronze/format", s.lake), "offset"]);
    assert!(out.contains("rows=11"), "{out}");
}

/// One bronze event at `offset` of `partition`, appended to `t` in a commit of its own by `lake`
/// (which writes the table's checkpoints).
async fn append(
    lake: &Lake,
    t: deltalake::DeltaTable,
    group: &str,
    partition: i32,
    offset: i64,
) -> deltalake::DeltaTable {
    let ev = RawEvent {
        topic: "cache".into(),
        partition,
        offset,
        key: None,
        value: Some("{}".into()),
        timestamp_ms: Some(1_700_000_000_000),
    };
    let t = bronze::append(t, group, &[ev], 1_700_000_000_000_000).await.unwrap().0;
    lake.keep("bronze/cache", &t);
    t
}

/// The table cache and the marker cache never hide another writer's commit: a table opened again
/// is at the latest version, and its markers are what a fresh reader (the kernel's log replay)
/// finds, also after commits this process did not make and across a checkpoint. On Azurite,
/// because "no newer commit" is told there by a 404 on the next commit file. (The kernel's
/// storage calls on Azure need a multi-threaded runtime.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tables_and_markers_follow_other_writers() {
    let name = unique("cache");
    let s = settings(&name, &LakeKind::Azurite, false);
    let (mine, other) = (Lake::new(&s), Lake::new(&s));
    let app = |p| bronze::offset_app_id(&s.group, "cache", p);
    let mut t = mine.open_or_create("bronze/cache", &schema::BRONZE).await.unwrap();
    t = append(&mine, t, &s.group, 0, 5).await;
    assert_eq!(mine.txn_version(&t, &app(0)).await.unwrap(), Some(5));
    assert_eq!(mine.txn_version(&t, &app(1)).await.unwrap(), None);

    // Another writer moves partition 0, starts partition 1, and goes past a checkpoint.
    let mut o = other.open("bronze/cache").await.unwrap().unwrap();
    for (i, p) in [(0, 0), (1, 1), (2, 0)].into_iter().cycle().take(12).enumerate() {
        o = append(&other, o, &s.group, p.1, 10 + i as i64).await;
    }
    assert!(other.settle_checkpoints(std::time::Duration::from_secs(30)).await, "the other writer's checkpoint");
    let seen = mine.open("bronze/cache").await.unwrap().unwrap();
    assert_eq!(version_of(&seen), version_of(&o), "the cached table is refreshed to the other writer's commits");
    let fresh = Lake::new(&s).open("bronze/cache").await.unwrap().unwrap();
    for p in 0..3 {
        let expected = fresh.snapshot().unwrap().transaction_version(fresh.log_store().as_ref(), app(p)).await.unwrap();
        assert_eq!(mine.txn_version(&seen, &app(p)).await.unwrap(), expected, "partition {p}");
    }
    assert_eq!(mine.txn_version(&seen, &app(0)).await.unwrap(), Some(21));

    // One more commit, one version ahead of what the cache knows: read from that commit alone.
    let o = append(&other, o, &s.group, 1, 40).await;
    let seen = mine.open("bronze/cache").await.unwrap().unwrap();
    assert_eq!(version_of(&seen), version_of(&o));
    assert_eq!(mine.txn_version(&seen, &app(1)).await.unwrap(), Some(40));
    assert_eq!(mine.txn_version(&seen, &app(0)).await.unwrap(), Some(21));
    // An older snapshot still answers for its own version.
    assert_eq!(mine.txn_version(&t, &app(0)).await.unwrap(), Some(5));
    assert_eq!(mine.txn_version(&seen, &app(0)).await.unwrap(), Some(21));
}

/// When commits the marker cache would read have been cleaned up (log retention removes commits a
/// checkpoint covers), the markers still come from the log as it is: the kernel's replay from the
/// checkpoint, never the remembered value. Partition 1's last marker sits in a removed commit.
#[tokio::test]
async fn markers_in_cleaned_up_commits_come_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&unique("cleanup"), &LakeKind::Local(dir.path().to_path_buf()), false);
    let (mine, other) = (Lake::new(&s), Lake::new(&s));
    let app = |p| bronze::offset_app_id(&s.group, "cache", p);
    let mut t = mine.open_or_create("bronze/cache", &schema::BRONZE).await.unwrap();
    for v in 1..=5i64 {
        t = append(&mine, t, &s.group, (v % 2) as i32, v).await;
    }
    assert_eq!(mine.txn_version(&t, &app(1)).await.unwrap(), Some(5), "remembered at version 5");
    for v in 6..=12i64 {
        t = append(&mine, t, &s.group, if v == 7 { 1 } else { 0 }, v).await;
    }
    assert!(mine.settle_checkpoints(std::time::Duration::from_secs(30)).await, "checkpoints written");
    let log = dir.path().join("bronze/cache/_delta_log");
    // The checkpoint covering the tenth commit (delta-rs writes it at version 9).
    let checkpoint = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .find_map(|n| n.strip_suffix(".checkpoint.parquet").and_then(|v| v.parse::<u64>().ok()))
        .expect("a checkpoint after ten commits");
    assert!(checkpoint >= 7, "the checkpoint covers commit 7 (it is at {checkpoint})");
    for v in 6..=checkpoint {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
    }
    let now = other.open("bronze/cache").await.unwrap().unwrap();
    assert_eq!(version_of(&now), 12);
    assert_eq!(mine.txn_version(&now, &app(1)).await.unwrap(), Some(7));
    assert_eq!(mine.txn_version(&now, &app(0)).await.unwrap(), Some(12));
}

/// Commits of another process (the Python `deltalake` writer, whose files never pass through this
/// process' read-back memory) are seen on the next open, their markers and rows read from storage,
/// and a commit this process builds on a version from before them still lands after them: the
/// probing log store finds the newer commit and lets delta-rs check the conflict (two appends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_commits_are_seen_through_the_read_back_memory() {
    let s = settings(&unique("xproc"), &LakeKind::Azurite, false);
    let lake = Lake::new(&s);
    let (rel, app) = ("bronze/cache", |p| bronze::offset_app_id(&s.group, "cache", p));
    let uri = format!("{}{rel}", s.lake);
    let t = lake.open_or_create(rel, &schema::BRONZE).await.unwrap();
    let before = append(&lake, t, &s.group, 0, 1).await;
    assert_eq!(version_of(&before), 1);

    let out = run_python("append_bronze.py", &[&uri, &app(1), "1", "50"]);
    assert_eq!(out.trim(), "2", "the other process wrote version 2");
    let seen = lake.open(rel).await.unwrap().unwrap();
    assert_eq!(version_of(&seen), 2, "the next open sees the other process' commit");
    assert_eq!(lake.txn_version(&seen, &app(1)).await.unwrap(), Some(50));
    assert_eq!(lake.txn_version(&seen, &app(0)).await.unwrap(), Some(1));
    let offsets: Vec<_> = ints(&read_table(&s, rel).await, "offset").into_iter().flatten().collect();
    assert_eq!(offsets.len(), 2, "its row is read from storage: {offsets:?}");
    assert!(offsets.contains(&50), "{offsets:?}");

    // Built on version 1, committed after the other process' version 2.
    let after = append(&lake, before, &s.group, 0, 2).await;
    assert_eq!(version_of(&after), 3);
    let out = run_python("check_delta.py", &[&uri, "offset"]);
    assert!(out.contains("version=3 rows=3"), "an independent reader sees all three commits: {out}");
    assert_eq!(lake.txn_version(&after, &app(1)).await.unwrap(), Some(50), "the other process' marker survives");
}

/// Expired commit files go once a checkpoint covers them, on Azurite (a listing in name order,
/// read only as far as the log has expired), and the table still opens at its version with its
/// markers; a second cleanup finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_commits_are_cleaned_up_and_the_table_still_opens() {
    use futures::TryStreamExt;
    let s = settings(&unique("logclean"), &LakeKind::Azurite, false);
    let lake = Lake::new(&s);
    let spec = &schema::BATCH_LOG;
    let mut t = deltalake::DeltaTableBuilder::from_url(s.lake.join("logclean/").unwrap())
        .unwrap()
        .with_storage_options(s.storage_options.clone())
        .build()
        .unwrap()
        .create()
        .with_columns(spec.delta_fields())
        // Every commit is past the retention as soon as it is written.
        .with_configuration_property(deltalake::TableProperty::LogRetentionDuration, Some("interval 0 seconds"))
        .await
        .unwrap();
    let mark = |t, v| orderlake::lake::mark(t, spec, vec![deltalake::kernel::Transaction::new("test", v)]);
    for v in 1..=10i64 {
        t = mark(t, v).await.unwrap();
    }
    deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
    for v in 11..=14i64 {
        t = mark(t, v).await.unwrap();
    }
    let log = || async {
        let store = t.log_store().object_store(None);
        let listed: Vec<_> = store.list(Some(&"_delta_log".into())).try_collect().await.unwrap();
        let mut names: Vec<String> = listed.iter().map(|m| m.location.filename().unwrap().to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(log().await.len(), 15 + 2, "commits 0–14, the checkpoint and _last_checkpoint");

    assert_eq!(orderlake::lake::log_cleanup::cleanup(&t).await.unwrap(), 10, "commits 0–9, below the checkpoint");
    let mut left: Vec<String> = (10..=14).map(|v| format!("{v:020}.json")).collect();
    left.insert(0, format!("{:020}.checkpoint.parquet", 10));
    left.push("_last_checkpoint".into());
    assert_eq!(log().await, left);
    assert_eq!(orderlake::lake::log_cleanup::cleanup(&t).await.unwrap(), 0, "nothing more to clean up");

    let opened = lake.open("logclean").await.unwrap().unwrap();
    assert_eq!(version_of(&opened), 14);
    assert_eq!(lake.txn_version(&opened, "test").await.unwrap(), Some(14));
}
