//! Table maintenance on Azurite: `run` compacts on its cadence, `orderlake maintain` packs the
//! small files of every table, checkpoints and vacuums, and afterwards the data, the exactly-once
//! markers and an independent reader all see the same tables. A VACUUM retention below the safe
//! minimum is refused at start unless explicitly allowed.

use deltalake::table::config::TablePropertiesExt;
use object_store::ObjectStoreExt;
use orderlake::lake::{Lake, bronze, schema, tiered, version_of};
use orderlake::model::RawEvent;
use orderlake::produce;

use crate::e2e::{GOLD, SILVER, assert_lake_matches, run_once};
use crate::reference;
use crate::support::*;

/// Maintenance steps `run` logged in a stretch of its log: tables done and groups of files packed.
fn steps(log: &str) -> usize {
    log.matches("table maintained").count() + log.matches("table packing under way").count()
}

/// A config file (in a temporary directory, kept alive by the returned guard) with batches of
/// `max_records` events, a 500 ms batch latency and the test's `extra` settings.
fn batch_config(max_records: usize, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[batch]\nmax_records = {max_records}\nmax_latency_ms = 500\n{extra}")).unwrap();
    (dir, config)
}

/// Live files of a table, as its Delta log lists them.
async fn files(s: &orderlake::config::Settings, rel: &str) -> usize {
    let t = Lake::new(s).open(rel).await.unwrap().unwrap();
    t.snapshot().unwrap().log_data().num_files()
}

/// A count column of `table`'s row in `orderlake maintain`'s report, `back` columns from the end
/// (0: vacuumed, 1: compacted).
fn report_count(report: &str, table: &str, back: usize) -> usize {
    let line = report.lines().find(|l| l.split_whitespace().next() == Some(table)).expect("table in report");
    line.split_whitespace().rev().nth(back).unwrap().parse().unwrap()
}

/// How many key families (`581470`, `1000470` and `C581476`: the letters before the digits and
/// the length of the rest) `column` holds.
fn key_families(rows: &[arrow::array::RecordBatch], column: &str) -> usize {
    let family = |k: String| {
        let digits = k.find(|c: char| c.is_ascii_digit()).unwrap_or(k.len());
        (k[..digits].to_string(), k.len() - digits)
    };
    strs(rows, column).into_iter().flatten().map(family).collect::<std::collections::BTreeSet<_>>().len()
}

/// Rows of each live file of a table, from its log's statistics.
async fn file_rows(s: &orderlake::config::Settings, rel: &str) -> Vec<usize> {
    let t = Lake::new(s).open(rel).await.unwrap().unwrap();
    t.snapshot().unwrap().log_data().iter().map(|f| f.num_records().expect("row count in the stats")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_compacts_and_vacuums_without_changing_data_or_markers() {
    let name = unique("maintain");
    let extra = "[maintenance]\nevery_batches = 2\nvacuum_retention_hours = 0\nallow_short_retention = true\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let records = renumbered(produce::synthetic(6000, 21), "7");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    let (_dir, config) = batch_config(400, extra);

    // `run` starts a round every second batch on its own and takes one step of it per batch
    // boundary (a table, or a group of a keyed table's files), so ingestion pauses for one step
    // at a time; `--once` finishes the round under way once caught up.
    let out = orderlake_cmd(&s).args(["run", "--once", "--config"]).arg(&config).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let gaps: Vec<usize> = log.split("batch committed").map(steps).collect();
    let (last, between) = gaps.split_last().unwrap();
    assert!(between.iter().all(|&n| n <= 1), "one step per batch boundary {gaps:?}:\n{log}");
    assert!(between.iter().sum::<usize>() >= 10, "rounds under way while batches run {gaps:?}:\n{log}");
    assert!(*last > 1, "the round under way is finished at the end {gaps:?}:\n{log}");
    let tail = log.rsplit("batch committed").next().unwrap();
    assert!(tail.contains("maintenance done"), "a round ends with a summary:\n{log}");
    assert!(log.contains(&format!("run --once done: {} events in 15 batches", records.len())), "closing line:\n{log}");
    let r = reference::compute(&records);
    assert_lake_matches(&s, &r).await;

    // The batch log only appends, one file per batch: 15 batches, packed into one by the rounds
    // inside `run` (the last one finished at the end of `--once`).
    assert_eq!(files(&s, "_orderlake/batches").await, 1, "run's rounds packed the batch log:\n{log}");
    let tables: Vec<&str> = GOLD.iter().chain(SILVER.iter()).copied().collect();
    let mut before = Vec::new();
    for t in &tables {
        before.push((files(&s, t).await, read_table(&s, t).await.iter().map(|b| b.num_rows()).sum::<usize>()));
    }

    let bronze = format!("bronze/{}", s.sales_topic);
    let bronze_run = files(&s, &bronze).await;

    let out = orderlake_cmd(&s).args(["maintain", "--config"]).arg(&config).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for (t, (files_before, rows_before)) in tables.iter().zip(&before) {
        let (f, rows) = (files(&s, t).await, read_table(&s, t).await.iter().map(|b| b.num_rows()).sum::<usize>());
        assert_eq!(rows, *rows_before, "{t}: maintenance changes no row");
        assert!(f <= *files_before, "{t}: {files_before} files became {f}");
        assert!(report.contains(&format!("{files_before} → {f}")), "{t} in the report:\n{report}");
    }
    for (t, (files_before, _)) in tables.iter().zip(&before) {
        // Keyed tables are packed per key family: sales orders and their `C…` cancellations apart,
        // products `21000` and `21007A` apart (their cluster column: the order id, else the key).
        let rows = read_table(&s, t).await;
        let cluster = ["order_id", "product_id"].into_iter().find(|c| rows[0].column_by_name(c).is_some());
        let families = match cluster {
            Some(c) if *files_before > 1 => key_families(&rows, c),
            _ => 1,
        };
        assert_eq!(files(&s, t).await, families, "{t}: small files packed into one per key family\n{report}");
    }
    assert_eq!(files(&s, "_orderlake/batches").await, 1, "maintain keeps the batch log packed:\n{report}");
    // Today's bronze is left alone up to `maintenance.today_small_files` (64) small files: a
    // bronze commit's replay of them costs about a millisecond (packing them is tested below).
    let bronze_files = files(&s, &bronze).await;
    assert_eq!(bronze_run, 15, "one file per batch, none packed yet\n{log}");
    assert!(report.contains("15 → 15"), "bronze in the report:\n{report}");
    assert_eq!(bronze_files, 15, "{report}");
    assert!(report_count(&report, "gold/order_lines", 0) > 0, "replaced files are vacuumed:\n{report}");
    assert_lake_matches(&s, &r).await;
    assert_bronze_exactly_once(&s, records.len()).await;

    // The `txn` markers survived: a re-run finds nothing to do and commits nothing.
    let mut maintained = Vec::new();
    for t in &tables {
        maintained.push(table_version(&s, t).await);
    }
    run_once(&s).await;
    for (t, v) in tables.iter().zip(&maintained) {
        assert_eq!(table_version(&s, t).await, *v, "{t}: a re-run after maintenance commits nothing");
    }
    assert_lake_matches(&s, &r).await;

    // What Power BI's DeltaLake.Table reads (docs/powerbi.md): protocol 1/2, no table features,
    // statistics, mapped column types, and a checkpoint to start from.
    let uris: Vec<String> = GOLD.iter().map(|t| format!("{}{t}", s.lake)).collect();
    let out = run_python("powerbi_compat.py", &uris.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), GOLD.len(), "{out}");
    for t in GOLD {
        let table = Lake::new(&s).open(t).await.unwrap().unwrap();
        let store = table.log_store().object_store(None);
        let head = store.head(&object_store::path::Path::from("_delta_log/_last_checkpoint")).await;
        assert!(head.is_ok(), "{t}: maintenance leaves a checkpoint for readers to start from");
        // Tombstones stay for VACUUM's retention (0 here) and a day: what checkpoints carry.
        let kept = table.snapshot().unwrap().table_config().deleted_file_retention_duration();
        assert_eq!(kept, std::time::Duration::from_secs(24 * 3600), "{t}: delta.deletedFileRetentionDuration");
    }

    // An independent reader opens the compacted, vacuumed table from its checkpoint.
    let out = run_python("check_delta.py", &[&format!("{}gold/order_lines", s.lake), "line_amount"]);
    let total_lines: i64 = r.orders.values().map(|v| v[0]).sum();
    let families = key_families(&read_table(&s, "gold/order_lines").await, "order_id");
    assert!(out.contains(&format!("rows={total_lines} files={families}")), "{out}");
}

#[test]
fn a_vacuum_retention_below_seven_days_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[maintenance]\nvacuum_retention_hours = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderlake"))
        .args(["maintain", "--lake"])
        .arg(dir.path().join("lake"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("maintenance.vacuum_retention_hours") && err.contains("allow_short_retention"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Compaction of a keyed table must keep a later batch's copy-on-write small: files are packed by
/// key range up to `maintenance.keyed_file_rows`, never into one file that every batch would
/// then copy whole (what delta-rs' OPTIMIZE did), and a second round packs nothing again. The
/// aggregates' proof of equality with the order tables survives the compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_tables_are_packed_by_key_range_so_later_batches_copy_little() {
    let name = unique("maintain-keyed");
    let extra = "[maintenance]\nevery_batches = 0\nkeyed_file_rows = 1000\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let records = renumbered(produce::synthetic(6000, 23), "8");
    // Split inside an order: the later events add lines to an order of a packed file.
    let cut = (5000..records.len()).find(|&i| records[i].transaction_no == records[i - 1].transaction_no).unwrap();
    let (first, later) = records.split_at(cut);
    produce::publish(&s, &s.sales_topic, first, None).await.unwrap();
    let (_dir, config) = batch_config(250, extra);
    let run = || {
        let out = orderlake_cmd(&s).args(["run", "--once", "--config"]).arg(&config).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{log}");
        log
    };
    let maintain = || {
        let out = orderlake_cmd(&s).args(["maintain", "--no-vacuum", "--config"]).arg(&config).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run();

    let lines = "gold/order_lines";
    let total: usize = file_rows(&s, lines).await.iter().sum();
    assert!(total > 4000, "{total} order lines");
    let report = maintain();
    let packed = file_rows(&s, lines).await;
    assert!(packed.iter().all(|&n| n <= 1000), "no packed file over keyed_file_rows: {packed:?}\n{report}");
    assert!(packed.len() < total / 250, "small files were packed: {packed:?}\n{report}");
    assert_eq!(packed.iter().sum::<usize>(), total, "packing changes no row");
    let again = maintain();
    for t in ["gold/order_lines", "gold/order_totals", "silver/orders", "silver/order_items"] {
        assert_eq!(report_count(&again, t, 1), 0, "{t}: a second round with no new file packs nothing:\n{again}");
    }

    // The next batches change orders of the packed files (cancellations of recent orders) and
    // copy little each: one packed file, plus the small files the batches since the packing
    // wrote (a cancellation may land in one of those too), never the whole table.
    produce::publish(&s, &s.sales_topic, later, None).await.unwrap();
    let before = table_version(&s, lines).await.unwrap();
    let log = run();
    // Compaction changed no row, so the aggregates still equal the order tables and are moved by
    // each batch's difference instead of being recomputed from the whole order tables.
    assert!(!log.contains("aggregate recomputed"), "aggregates rebuilt after a compaction:\n{log}");
    let t = Lake::new(&s).open(lines).await.unwrap().unwrap();
    let commits = (table_version(&s, lines).await.unwrap() - before) as usize;
    let mut history = t.history(Some(commits));
    let mut copied = Vec::new();
    while let Some(c) = futures::StreamExt::next(&mut history).await {
        let info = c.unwrap().info;
        copied.push(info["operationMetrics"]["rows_copied"].as_u64().expect("rewrite metrics"));
    }
    assert!(copied.len() >= 4, "about 1,000 events in batches of 250: {copied:?}");
    assert!(copied.iter().any(|&n| n > 0), "the order cut in two was rewritten: {copied:?}");
    assert!(copied.iter().all(|&n| n <= 1000 + 2 * 250), "rows copied per batch: {copied:?} of {total}");
    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
}

/// Publishes `records` and runs a continuous consumer with batches of 250 events until all
/// `landed` events are in the lake and a round ended after the last batch (in idle time), then
/// stops it with SIGTERM; its log.
async fn run_until_an_idle_round_ends(
    s: &orderlake::config::Settings,
    records: &[produce::SaleRecord],
    landed: usize,
    extra: &str,
    fail_at: Option<&str>,
) -> String {
    produce::publish(s, &s.sales_topic, records, None).await.unwrap();
    let (dir, config) = batch_config(250, extra);
    let log_path = dir.path().join("run.log");
    let mut cmd = orderlake_cmd(s);
    if let Some(stage) = fail_at {
        cmd.env("ORDERLAKE_TEST_FAIL_AT", stage);
    }
    let mut guard = spawn_run(cmd, &config, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !(lake_complete(s, landed).await
        && log().rsplit("batch committed").next().is_some_and(|tail| tail.contains("maintenance done")))
    {
        assert!(std::time::Instant::now() < deadline, "no round finished once idle:\n{}", log());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0:\n{}", log());
    log()
}

/// A round inside a continuous `run` packs a keyed table one group of files (at most
/// `keyed_file_rows` rows) per batch boundary, so ingestion never waits for a whole table's
/// compaction, and goes on in idle time once the events run out. The packing commits interleave
/// with the batches' commits, the aggregates are still moved by each batch's difference (no
/// recompute), and the data is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_tables_packing_is_spread_over_batch_boundaries() {
    let name = unique("maintain-steps");
    let extra = "[maintenance]\nevery_batches = 10\nkeyed_file_rows = 1000\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let records = renumbered(produce::synthetic(8000, 25), "6");
    let log = run_until_an_idle_round_ends(&s, &records, records.len(), extra, None).await;

    let gaps: Vec<&str> = log.split("batch committed").collect();
    let (_, between) = gaps.split_last().unwrap();
    assert!(between.iter().all(|g| steps(g) <= 1), "one step per batch boundary:\n{log}");
    for t in ["silver/order_items", "gold/order_lines"] {
        let packing = format!("table packing under way table=\"{t}\"");
        let maintained = format!("table maintained table=\"{t}\"");
        // The boundaries (gaps between two batches) at which this table was worked on.
        let at: Vec<usize> =
            (0..between.len()).filter(|&i| between[i].contains(&packing) || between[i].contains(&maintained)).collect();
        assert!(at.len() >= 3, "{t}: packed over several batch boundaries, got {at:?}:\n{log}");
        assert!(at.windows(2).all(|w| w[1] == w[0] + 1), "{t}: one boundary after the other {at:?}:\n{log}");
    }
    assert!(!log.contains("aggregate recomputed"), "packing steps kept the aggregates' proof:\n{log}");
    let packed = file_rows(&s, "gold/order_lines").await;
    assert!(packed.iter().all(|&n| n <= 1000), "no packed file over keyed_file_rows: {packed:?}");
    assert!(packed.len() < 32, "small files were packed: {packed:?}");
    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
}

/// A storage error halfway through a keyed table's packing (after one group's commit, before the
/// next) is logged, ingestion goes on, the groups already packed stay, and the next round packs
/// the rest of the table; no row changes and no aggregate is recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_halfway_through_packing_leaves_the_rest_to_the_next_round() {
    let name = unique("maintain-fail");
    let extra = "[maintenance]\nevery_batches = 10\nkeyed_file_rows = 1000\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let records = renumbered(produce::synthetic(11000, 29), "4");
    // The first run's round fails halfway through a table; the second run's round (due after
    // ten more batches, counted across runs) is the next one.
    let (first, second) = records.split_at(8000);
    let log = run_until_an_idle_round_ends(&s, first, first.len(), extra, Some("mid-packing-once")).await;
    let log = log + &run_until_an_idle_round_ends(&s, second, records.len(), extra, None).await;

    let (before, after) = log.split_once("maintenance failed; retried in the next round").expect("the fault fired");
    let failed_line = after.lines().next().unwrap();
    let t = failed_line.split("table=\"").nth(1).and_then(|r| r.split('"').next()).expect("table in the line");
    let packing = format!("table packing under way table=\"{t}\"");
    assert!(before.rsplit("maintenance done").next().unwrap().contains(&packing), "{t} was half packed:\n{log}");
    assert!(after.contains("batch committed"), "ingestion went on after the failure:\n{log}");
    let maintained = format!("table maintained table=\"{t}\"");
    assert!(after.contains(&maintained), "a later round packed the rest of {t}:\n{log}");
    assert!(!log.contains("aggregate recomputed"), "the packed groups kept the aggregates' proof:\n{log}");
    let packed = file_rows(&s, t).await;
    assert!(packed.iter().all(|&n| n <= 1000), "{t}: no packed file over keyed_file_rows: {packed:?}");
    assert!(packed.len() < 32, "{t}: small files were packed: {packed:?}");
    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
}

/// A scheduled `run --once` that commits fewer batches than `every_batches` each time still gets
/// its maintenance: the count of batches since the last round goes on across runs (from the
/// batch log), so small files do not pile up for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_scheduled_runs_count_batches_across_runs() {
    let name = unique("maintain-sched");
    let extra = "[maintenance]\nevery_batches = 5\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let records = renumbered(produce::synthetic(1200, 27), "5");
    let (_dir, config) = batch_config(200, extra);
    let mut logs = Vec::new();
    // Three runs of two batches each: the round is due in the third.
    for part in records.chunks(400) {
        produce::publish(&s, &s.sales_topic, part, None).await.unwrap();
        let out = orderlake_cmd(&s).args(["run", "--once", "--config"]).arg(&config).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{log}");
        assert!(log.contains("in 2 batches"), "two batches per run:\n{log}");
        logs.push(log);
    }
    assert!(!logs[0].contains("table maintained") && !logs[1].contains("table maintained"), "{logs:#?}");
    let third = &logs[2];
    assert!(third.contains("maintenance done"), "the third run reaches five batches since the start:\n{third}");
    assert_eq!(files(&s, "_orderlake/batches").await, 1, "the round packed the batch log:\n{third}");
    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
}

/// Today's bronze is packed while it fills (`lake::tiered`): a run of many small batches leaves a
/// few live files, not one per batch, with every event once. The layers after bronze then catch
/// up from bronze's commits, whose files were packed since: they read the files each commit
/// added, which stay in storage until VACUUM's retention, and skip the packing commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_bronze_is_packed_while_it_fills_and_the_layers_catch_up_from_it() {
    let name = unique("maintain-today");
    let extra = "[maintenance]\nevery_batches = 1\ntoday_small_files = 8\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let records = renumbered(produce::synthetic(2000, 33), "6");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    let (_dir, config) = batch_config(100, extra);

    let out = orderlake_cmd(&s).args(["run", "--once", "--bronze-only", "--config"]).arg(&config).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("in 20 batches"), "{log}");
    let bronze = format!("bronze/{}", s.sales_topic);
    let live = files(&s, &bronze).await;
    assert!(live < 10, "{live} live bronze files after 20 batches:\n{log}");
    let t = Lake::new(&s).open(&bronze).await.unwrap().unwrap();
    let packed = t.snapshot().unwrap().log_data().iter().filter(|f| f.num_records() > Some(100)).count();
    assert!(packed >= 1, "batch files were packed together:\n{log}");
    assert_bronze_exactly_once(&s, records.len()).await;

    let out = orderlake_cmd(&s).args(["run", "--once", "--config"]).arg(&config).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("catching up from bronze"), "silver and gold catch up from bronze:\n{log}");
    assert_lake_matches(&s, &reference::compute(&records)).await;
    assert_bronze_exactly_once(&s, records.len()).await;
}

/// Bronze's live files per `ingest_date`, oldest day first.
async fn files_per_day(s: &orderlake::config::Settings, rel: &str) -> Vec<usize> {
    let t = Lake::new(s).open(rel).await.unwrap().unwrap();
    tiered::files_by_partition(&t, "ingest_date").unwrap().values().map(Vec::len).collect()
}

/// The days that are over are packed into files of about `maintenance.target_file_mb`, and
/// nothing is lost or doubled: every event is in bronze once, and catch-up, which reads bronze's
/// commits, still finds every batch's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_bronze_days_are_packed_to_the_target_size_and_catch_up_still_reads_them() {
    let name = unique("maintain-closed");
    let extra = "[maintenance]\ntarget_file_mb = 1\n";
    let s = settings_with(&name, &LakeKind::Azurite, false, extra);
    let lake = Lake::new(&s);
    let rel = bronze::table_name(&s.bronze_prefix, &s.sales_topic);
    let mut table = lake.open_or_create(&rel, &schema::BRONZE).await.unwrap();
    let records = renumbered(produce::synthetic(6000, 36), "4");
    let now = chrono::Utc::now().timestamp_micros();
    let events: Vec<RawEvent> = (records.iter().enumerate())
        .map(|(i, r)| RawEvent {
            topic: s.sales_topic.clone(),
            partition: (i % 3) as i32,
            offset: (i / 3) as i64,
            key: Some(r.transaction_no.clone()),
            value: Some(r.to_json()),
            timestamp_ms: Some(now / 1000),
        })
        .collect();
    // 40 batches as `run` appended them: 18 two days ago, 18 yesterday, 4 today.
    let day_us = 86_400_000_000i64;
    for (i, batch) in events.chunks(150).enumerate() {
        let days_ago = [2, 1, 0][(i / 18).min(2)];
        (table, _) = bronze::append(table, &s.group, batch, now - days_ago * day_us).await.unwrap();
    }
    assert_eq!(files_per_day(&s, &rel).await, vec![18, 18, 4]);

    let (_dir, config) = batch_config(100, extra);
    let maintain = || orderlake_cmd(&s).args(["maintain", "--config"]).arg(&config).output().unwrap();
    let out = maintain();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    // Each closed day fits in one file of the 1 MiB target; today's four are below
    // `today_small_files` and stay.
    assert_eq!(files_per_day(&s, &rel).await, vec![1, 1, 4], "{report}");
    assert_eq!(report_count(&report, &rel, 1), 36, "{report}");
    assert_bronze_exactly_once(&s, records.len()).await;
    let t = lake.open(&rel).await.unwrap().unwrap();
    let commits = bronze::read_commits(&t, None, version_of(&t)).await.unwrap();
    let batches: Vec<usize> = commits.iter().map(|(_, e)| e.len()).filter(|&n| n > 0).collect();
    assert_eq!(batches, vec![150; 40], "catch-up reads every batch once, and no rewrite");

    // A finished day is not packed again.
    let out = maintain();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert_eq!(report_count(&report, &rel, 1), 0, "{report}");
    assert_eq!(files_per_day(&s, &rel).await, vec![1, 1, 4], "{report}");
}
