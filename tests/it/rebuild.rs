//! `orderlake rebuild` on Azurite, without Kafka: damaged silver and gold come back equal to the
//! reference, an interrupted rebuild continues with `--resume`, and afterwards a normal run finds
//! nothing to do.

use std::collections::BTreeMap;

use orderlake::lake::Lake;
use orderlake::produce;

use crate::e2e::{GOLD, SILVER, assert_lake_matches, run_once};
use crate::reference;
use crate::support::*;

async fn rows(s: &orderlake::config::Settings, rel: &str) -> usize {
    read_table(s, rel).await.iter().map(|b| b.num_rows()).sum()
}

/// Deletes rows of a table behind orderlake's back (the damage a rebuild repairs).
async fn damage(s: &orderlake::config::Settings, rel: &str, predicate: &str) {
    let t = Lake::new(s).open(rel).await.unwrap().unwrap();
    t.delete().with_predicate(predicate.to_string()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_repairs_silver_and_gold_from_bronze_and_resumes() {
    let s = settings(&unique("rebuild"), &LakeKind::Azurite, false);
    let records = renumbered(produce::synthetic(3000, 17), "9");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    run_once(&s).await;
    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;
    let mut silver_rows = Vec::new();
    for t in SILVER {
        silver_rows.push(rows(&s, t).await);
    }

    damage(&s, "silver/order_items", "quantity > 3").await;
    damage(&s, "gold/customer_totals", "orders > 2").await;
    assert!(rows(&s, "silver/order_items").await < silver_rows[1]);

    // A rebuild stopped by a fault after its first gold commits, then resumed.
    let out = orderlake_cmd(&s)
        .args(["rebuild", "--layer", "silver"])
        .env("ORDERLAKE_TEST_FAIL_AT", "after-gold")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the injected fault stops the rebuild");
    let out = orderlake_cmd(&s).args(["rebuild", "--resume"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rebuilt up to"), "{text}");
    assert_lake_matches(&s, &r).await;
    for (t, n) in SILVER.iter().zip(&silver_rows) {
        assert_eq!(rows(&s, t).await, *n, "{t} refilled from bronze");
    }
    assert_bronze_exactly_once(&s, records.len()).await;

    // Gold alone, from a later bronze version: what those versions touched is recomputed.
    damage(&s, "gold/daily_sales", "orders > 0").await;
    let out = orderlake_cmd(&s).args(["rebuild", "--layer", "gold", "--from-version", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_lake_matches(&s, &r).await;

    // Silver cannot start later than the first version: said at start.
    let out = orderlake_cmd(&s).args(["rebuild", "--layer", "silver", "--from-version", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from-version"));

    // The rebuilt lake is what the streaming path left: a normal run commits nothing.
    let mut versions = Vec::new();
    for t in GOLD.iter().chain(SILVER.iter()) {
        versions.push(table_version(&s, t).await);
    }
    run_once(&s).await;
    for (t, v) in GOLD.iter().chain(SILVER.iter()).zip(&versions) {
        assert_eq!(table_version(&s, t).await, *v, "{t}");
    }
}

/// Silver decodes bronze again in a rebuild, with the settings of the day; the dead letters must
/// follow: an event that decodes now leaves the list, one that no longer does joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silver_rebuild_lists_the_dead_letters_afresh_under_new_settings() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let lake = LakeKind::Local(dir.path().to_path_buf());
    let name = unique("rebuild-dl");
    let cdc = format!("[cdc]\nprefix = \"{name}.public\"\n");
    let before = settings_with(&name, &lake, false, &cdc);
    let orders = format!("{name}.public.orders");
    orderlake::source::kafka::ensure_topics(&before, std::slice::from_ref(&orders)).await.unwrap();
    let p: FutureProducer = orderlake::source::kafka::base_config(&before).create().unwrap();
    let changes = [
        ("by-id", r#"{"op":"c","after":{"id":1,"status":"paid"},"source":{"lsn":1}}"#),
        ("by-order-id", r#"{"op":"c","after":{"order_id":2,"status":"paid"},"source":{"lsn":2}}"#),
        ("bad-op", r#"{"op":"x","after":{"id":3,"order_id":3},"source":{"lsn":3}}"#),
    ];
    for (key, value) in changes {
        let record = FutureRecord::to(&orders).key(key).payload(value);
        p.send(record, std::time::Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
    let listed = |s: orderlake::config::Settings| async move {
        let dl = read_table(&s, "bronze/_dead_letters").await;
        let mut keys: Vec<(String, String)> = strs(&dl, "key")
            .into_iter()
            .map(Option::unwrap)
            .zip(strs(&dl, "error").into_iter().map(Option::unwrap))
            .collect();
        keys.sort();
        let silver = keyed(&read_table(&s, "silver/orders").await, "order_id", &[]);
        (keys, silver.into_keys().collect::<Vec<_>>())
    };

    run_once(&before).await;
    let (dead, silver) = listed(before.clone()).await;
    assert_eq!(dead.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["bad-op", "by-id"], "{dead:?}");
    assert_eq!(silver, ["2"]);

    // The source renamed the key column: orders' order_id now comes from `id`.
    let after =
        settings_with(&name, &lake, false, &format!("{cdc}[cdc.tables.orders]\ncolumns = {{ order_id = \"id\" }}\n"));
    orderlake::rebuild::run(after.clone(), orderlake::rebuild::Layer::Silver, 0, false).await.unwrap();
    let (dead, silver) = listed(after.clone()).await;
    assert_eq!(dead.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["bad-op", "by-order-id"], "{dead:?}");
    assert!(dead[1].1.contains("order_id"), "the reason names the missing key: {}", dead[1].1);
    assert!(dead[0].1.contains("unknown Debezium op 'x'"), "{}", dead[0].1);
    assert_eq!(silver, ["1"]);

    // Listed once: a run afterwards finds nothing to add.
    run_once(&after).await;
    assert_eq!(listed(after).await.0, dead);
}

/// A rebuild replays bronze commit by commit. Once maintenance has packed a day's files and VACUUM
/// has removed the originals, it cannot as it is: a gold rebuild says so and changes nothing; a
/// silver one re-bases bronze first (the same rows, rewritten a batch per commit) and survives a
/// crash in the middle of it, a run meanwhile being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_bronze_packed_and_vacuumed_re_bases_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let maintenance =
        "[maintenance]\nvacuum_retention_hours = 0\nallow_short_retention = true\ntoday_small_files = 2\n";
    let mut s = settings_with(&unique("rebuild-gone"), &LakeKind::Local(dir.path().to_path_buf()), false, maintenance);
    s.batch.max_records = 300;
    let records = renumbered(produce::synthetic(3000, 23), "7");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    run_once(&s).await;
    let lake = Lake::new(&s);
    let report = orderlake::maintain::all(&lake, &s, orderlake::maintain::Vacuum::Orphans).await.unwrap();
    let bronze = format!("bronze/{}", s.sales_topic);
    let packed = report.iter().find(|r| r.table == bronze).unwrap();
    assert!(packed.compacted > 0 && packed.vacuumed > 0, "bronze packed and its originals removed: {packed:?}");
    let mut before = Vec::new();
    for t in SILVER.iter().chain(GOLD.iter()) {
        before.push((table_version(&s, t).await, rows(&s, t).await));
    }

    let out = orderlake_cmd(&s).args(["rebuild", "--layer", "gold"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused:\n{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains("rebuild: nothing changed, as it could not finish"), "{last}");
    assert!(last.contains("packed it into bigger files and VACUUM removed it"), "{last}");
    assert!(last.contains("`--layer silver` re-bases bronze first"), "{last}");
    let mut after = Vec::new();
    for t in SILVER.iter().chain(GOLD.iter()) {
        after.push((table_version(&s, t).await, rows(&s, t).await));
    }
    assert_eq!(after, before, "no table touched");

    // A silver rebuild re-bases bronze, here stopped after its first re-base commit.
    let mut failing = s.clone();
    failing.fail_at = Some("mid-rebase".into());
    let e = orderlake::rebuild::run(failing, orderlake::rebuild::Layer::Silver, 0, false).await.unwrap_err();
    assert!(e.to_string().contains("mid-rebase"), "{e}");
    let out = orderlake_cmd(&s).args(["run", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a run meanwhile is refused:\n{stderr}");
    assert!(stderr.lines().last().unwrap().contains("finish it with `orderlake rebuild --resume`"), "{stderr}");
    orderlake::rebuild::run(s.clone(), orderlake::rebuild::Layer::Gold, 0, true).await.unwrap();

    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
    let silver_rows: Vec<usize> = before.iter().take(SILVER.len()).map(|(_, n)| *n).collect();
    let mut now = Vec::new();
    for t in SILVER {
        now.push(rows(&s, t).await);
    }
    assert_eq!(now, silver_rows, "silver refilled, nothing twice");

    // The pipeline goes on from there: new events land once, and nothing else moves.
    let more = renumbered(produce::synthetic(500, 29), "6");
    produce::publish(&s, &s.sales_topic, &more, None).await.unwrap();
    run_once(&s).await;
    let all: Vec<_> = records.iter().chain(more.iter()).cloned().collect();
    assert_lake_matches(&s, &reference::compute(&all)).await;
    assert_bronze_exactly_once(&s, all.len()).await;
}

/// Log cleanup removes the commits a checkpoint covers once they are older than the retention:
/// the rebuild cannot replay them either, and re-bases bronze as it does when files are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_after_log_cleanup_re_bases_bronze() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&unique("rebuild-log"), &LakeKind::Local(dir.path().to_path_buf()), false);
    s.batch.max_records = 300;
    let records = renumbered(produce::synthetic(3000, 31), "5");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    run_once(&s).await;
    let lake = Lake::new(&s);
    orderlake::maintain::all(&lake, &s, orderlake::maintain::Vacuum::Off).await.unwrap();
    // As log cleanup does 30 days later: every commit below the newest checkpoint goes.
    let log = dir.path().join(format!("bronze/{}/_delta_log", s.sales_topic));
    let checkpoint: u64 = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".checkpoint.parquet")?.parse().ok())
        .max()
        .expect("maintenance wrote a checkpoint");
    assert!(checkpoint > 1, "several commits before it: {checkpoint}");
    for v in 0..checkpoint {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
    }

    orderlake::rebuild::run(s.clone(), orderlake::rebuild::Layer::Silver, 0, false).await.unwrap();
    let bronze = Lake::new(&s).open(&format!("bronze/{}", s.sales_topic)).await.unwrap().unwrap();
    let rebase = orderlake::lake::rebase::app_id(&s.group, &s.sales_topic);
    let marker = Lake::new(&s).txn_version(&bronze, &rebase).await.unwrap();
    assert_eq!(marker, Some(orderlake::lake::rebase::NOT_RUNNING), "bronze was re-based, and the re-base finished");
    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
}

/// A PII rule turned on late: `orderlake scrub` applies it to what came before (bronze, dead
/// letters, silver) and leaves what the rule already hashed as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_applies_a_late_pii_rule_to_what_came_before_and_hashes_nothing_twice() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let lake = LakeKind::Local(dir.path().to_path_buf());
    let name = unique("scrub");
    let salt = "scrub-salt-1";
    let cdc = format!("[cdc]\nprefix = \"{name}.public\"\npii_salt = \"{salt}\"\n");
    let plain = settings_with(&name, &lake, false, &cdc);
    let topic = format!("{name}.public.customers");
    orderlake::source::kafka::ensure_topics(&plain, std::slice::from_ref(&topic)).await.unwrap();
    let p: FutureProducer = orderlake::source::kafka::base_config(&plain).create().unwrap();
    let send = |key: &'static str, value: String| {
        let (p, topic) = (p.clone(), topic.clone());
        async move {
            let record = FutureRecord::to(&topic).key(key).payload(&value);
            p.send(record, std::time::Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    };
    let change = |id: i64, email: &str, lsn: i64| {
        format!(
            r#"{{"op":"c","after":{{"customer_id":{id},"name":"N{id}","email":"{email}","country":"France"}},"source":{{"lsn":{lsn}}}}}"#
        )
    };
    send("1", change(1, "ann@example.org", 1)).await;
    send("bad", r#"{"op":"x","after":{"customer_id":3,"email":"bob@example.org"},"source":{"lsn":2}}"#.into()).await;
    run_once(&plain).await;
    let bronze_rel = format!("bronze/{topic}");
    let clear = |s: orderlake::config::Settings, rel: String| async move {
        let values = strs(&read_table(&s, &rel).await, "value").into_iter().flatten().collect::<Vec<_>>().join("\n");
        ["ann@example.org", "bob@example.org", "cy@example.org"].into_iter().filter(|e| values.contains(e)).count()
    };
    assert_eq!(clear(plain.clone(), bronze_rel.clone()).await, 2, "before the rule: in the clear");

    // The rule goes on; what arrives from now on is hashed before bronze.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut = chrono::Utc::now().timestamp_micros();
    let ruled =
        settings_with(&name, &lake, false, &format!("{cdc}[cdc.tables.customers]\npii = {{ email = \"hash\" }}\n"));
    send("2", change(2, "cy@example.org", 3)).await;
    run_once(&ruled).await;

    let out = orderlake::rebuild::scrub(ruled.clone(), cut).await.unwrap();
    assert!(out.contains("VACUUM"), "{out}");
    assert_eq!(clear(ruled.clone(), bronze_rel.clone()).await, 0, "bronze holds no clear e-mail");
    assert_eq!(clear(ruled.clone(), "bronze/_dead_letters".into()).await, 0, "nor do the dead letters");
    let dl = read_table(&ruled, "bronze/_dead_letters").await;
    assert_eq!(strs(&dl, "key"), vec![Some("bad".to_string())], "the bad change is listed once");
    let silver = read_table(&ruled, "silver/customers").await;
    let emails: BTreeMap<String, String> =
        strs(&silver, "customer_id").into_iter().flatten().zip(strs(&silver, "email").into_iter().flatten()).collect();
    let hash = |e: &str| orderlake::decode::pii::hash(e, salt);
    let want: BTreeMap<String, String> =
        [("1".to_string(), hash("ann@example.org")), ("2".to_string(), hash("cy@example.org"))].into();
    assert_eq!(emails, want, "hashed once each");

    // Through the binary, what is wrong is said at start.
    for (args, want) in [
        (["scrub", "--ingested-before", "yesterday"], "--ingested-before: 'yesterday' is neither"),
        (["scrub", "--ingested-before", "2026-11-20"], "no CDC table has PII rules"),
    ] {
        let out = orderlake_cmd(&plain).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.lines().last().unwrap().contains(want), "{stderr}");
    }

    // The pipeline goes on from there, with nothing to add.
    let version = table_version(&ruled, "silver/customers").await;
    run_once(&ruled).await;
    assert_eq!(table_version(&ruled, "silver/customers").await, version);
    assert_eq!(strs(&read_table(&ruled, &bronze_rel).await, "value").len(), 3);
}
