//! The tables stay readable by every common reader: protocol reader 1 / writer 2, statistics in
//! every add action, a checkpoint every 10 commits, offsets in `txn` actions.

use orderlake::lake::{Lake, bronze, schema, txn_version, version_of};
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
    }
    assert_eq!(version_of(&t), 11);
    assert!(dir.path().join("bronze/format/_delta_log/_last_checkpoint").exists(), "checkpoint after 10 commits");
    assert_eq!(txn_version(&t, &bronze::offset_app_id(&s.group, "format", 0)).await.unwrap(), Some(10));
    assert_eq!(txn_version(&t, &bronze::offset_app_id(&s.group, "format", 1)).await.unwrap(), Some(9));
    let p = t.snapshot().unwrap().protocol().clone();
    assert_eq!((p.min_reader_version(), p.min_writer_version()), (1, 2));

    // Reopened from the checkpoint, the offsets are still there.
    let reopened = lake.open("bronze/format").await.unwrap().unwrap();
    assert_eq!(txn_version(&reopened, &bronze::offset_app_id(&s.group, "format", 0)).await.unwrap(), Some(10));
    let out = run_python("check_delta.py", &[&format!("{}bronze/format", s.lake), "offset"]);
    assert!(out.contains("rows=11"), "{out}");
}
