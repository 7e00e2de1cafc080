//! What a keyed table's live files and its commits since the last checkpoint cost each batch.
//! delta-rs replays a table's whole file list after every commit (its snapshot update) and on
//! every filtered scan: each live file's statistics are parsed again, and the list is held as one
//! Arrow batch per commit replayed since it was loaded from a checkpoint, each with a fixed cost.
//! This bench seeds a silver `orders` table (a local lake) with a baseline number of live files
//! and with many more, loads it from a checkpoint as a running pipeline holds it, and times
//! batches written as silver writes them: new orders only (`Search::Nowhere`: the commit and its
//! replay) and half of them the previous batch's again (`Search::All`: a filtered scan first).
//! Each case runs with orderlake's statistics columns (`lake::stats`) and, as the baseline, with
//! delta-rs's default (every column). It prints the median CPU per batch, its ratio to the
//! baseline file count, the cost per live file, and the median of the first and last tenth of
//! the batches (the commits since the checkpoint). `make bench-replay` runs it; without `--bench`
//! (`cargo test --all-targets`) it runs a small case once, to check that it works.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder};
use orderlake::config::{FileConfig, Overrides, Settings};
use orderlake::lake::rewrite::{Search, replace_keys};
use orderlake::lake::schema::SILVER_ORDERS;
use orderlake::lake::{Lake, commit_with};

const REL: &str = "silver/orders";

/// Silver `orders` rows for order numbers `from..from + n`, written by Kafka position `pos`.
fn orders(from: u64, n: u64, pos: u64) -> RecordBatch {
    let ids: Vec<String> = (from..from + n).map(|o| format!("{:09}", 100_000_000 + o)).collect();
    let customers: Vec<String> = (from..from + n).map(|o| format!("{}", 12_000 + o % 4_000)).collect();
    let countries = ["United Kingdom", "France", "Germany", "EIRE", "Netherlands"];
    let pos = format!("shop.sales:0:{pos:020}");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(&ids)),
        Arc::new(StringArray::from_iter_values(&customers)),
        Arc::new(StringArray::from_iter_values((from..from + n).map(|o| countries[o as usize % countries.len()]))),
        Arc::new(Date32Array::from_iter_values((from..from + n).map(|o| 19_000 + (o / 5_000) as i32))),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| "placed"))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n).map(|i| 1_700_000_000_000_000 + i as i64))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| pos.as_str()))),
    ];
    RecordBatch::try_new(SILVER_ORDERS.arrow_schema(), cols).expect("rows of the silver orders schema")
}

/// A table of `files` live files of `rows` orders each, key ranges one after another (as
/// compaction leaves them), committed at once and then checkpointed, loaded from that checkpoint:
/// the state a long run keeps. With `all_stats` the table is created as delta-rs creates one
/// (statistics for every column) instead of by orderlake.
async fn seeded(settings: &Settings, files: u64, rows: u64, all_stats: bool) -> DeltaTable {
    let lake = Lake::new(settings);
    let table = if all_stats {
        let url = lake.table_url(REL).expect("table URL");
        std::fs::create_dir_all(url.to_file_path().expect("a local path")).expect("table directory");
        let t = DeltaTableBuilder::from_url(url).expect("builder").build().expect("table");
        t.create().with_columns(SILVER_ORDERS.delta_fields()).await.expect("table created")
    } else {
        lake.open_or_create(REL, &SILVER_ORDERS).await.expect("table created")
    };
    let mut writer = RecordBatchWriter::for_table(&table).expect("writer");
    let mut adds = Vec::new();
    for f in 0..files {
        writer.write(orders(f * rows, rows, 0)).await.expect("file written");
        adds.extend(writer.flush().await.expect("file flushed").into_iter().map(Action::Add));
    }
    let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
    let done = CommitBuilder::from(commit_with(Vec::new()))
        .with_actions(adds)
        .build(Some(table.snapshot().expect("state")), table.log_store(), op)
        .await
        .expect("seed committed");
    let mut table = table;
    table.state = Some(done.snapshot());
    assert!(lake.checkpoint_now(REL, &table).await.expect("checkpoint"), "seed checkpointed");
    // A second lake (a process starting) loads it from the checkpoint.
    let fresh = Lake::new(settings).open(REL).await.expect("reopened").expect("the table exists");
    assert_eq!(fresh.snapshot().expect("state").log_data().num_files() as u64, files);
    fresh
}

/// CPU time of this process (all threads).
fn cpu() -> Duration {
    orderlake::metrics::cpu_time().expect("getrusage")
}

/// Median CPU per batch: over all batches, the first tenth and the last tenth.
#[derive(Clone, Copy)]
struct Cost {
    all: Duration,
    first: Duration,
    last: Duration,
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

#[derive(Clone, Copy)]
struct Case {
    files: u64,
    update: bool,
    all_stats: bool,
}

/// `batches` batches of `per_batch` orders against a table of `c.files` live files: new orders
/// (search nowhere) or, with `c.update`, half of them the previous batch's again (search
/// everywhere).
async fn measure(c: Case, rows: u64, batches: u64, per_batch: u64) -> Cost {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = Overrides { lake: Some(dir.path().to_str().expect("UTF-8").into()), ..Default::default() };
    let settings = Settings::from_parts(FileConfig::default(), o).expect("settings");
    let mut table = seeded(&settings, c.files, rows, c.all_stats).await;
    let first = c.files * rows;
    let mut cpus = Vec::new();
    for b in 0..batches {
        // An update batch's first half are the previous batch's newest orders again.
        let from = first + b * if c.update { per_batch / 2 } else { per_batch };
        let batch = orders(from, per_batch, b + 1);
        let search = if c.update { Search::All } else { Search::Nowhere };
        let txn = Transaction::new("bench-replay", b as i64 + 1);
        let c0 = cpu();
        table = replace_keys(table, "order_id", batch, search, Some("source_pos"), "order_id", vec![txn])
            .await
            .expect("batch written");
        cpus.push(cpu() - c0);
    }
    let live = table.snapshot().expect("state").log_data().num_files() as u64;
    // A batch adds a file; an update also replaces the previous batch's by the rows it keeps.
    assert_eq!(live, c.files + batches, "live files after the batches");
    let tenth = (cpus.len() / 10).max(1);
    Cost { all: median(&cpus), first: median(&cpus[..tenth]), last: median(&cpus[cpus.len() - tenth..]) }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (counts, batches): ([u64; 2], u64) = if smoke { ([4, 16], 3) } else { ([50, 2_000], 60) };
    let (rows, per_batch) = (200, 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!(
        "silver orders: {batches} batches of {per_batch} orders after a checkpoint, on {} or {} live files of {rows} rows; CPU per batch, median",
        counts[0], counts[1]
    );
    println!(
        "{:<7} {:<10} {:>6} {:>8} {:>7} {:>12} {:>10} {:>10}",
        "batch", "statistics", "files", "cpu ms", "× base", "µs cpu/file", "first 10%", "last 10%"
    );
    let mut per_file = std::collections::BTreeMap::new();
    for update in [false, true] {
        for all_stats in [true, false] {
            let kind = if update { "update" } else { "append" };
            let stats = if all_stats { "every col" } else { "orderlake" };
            let base = rt.block_on(measure(Case { files: counts[0], update, all_stats }, rows, batches, per_batch));
            let big = rt.block_on(measure(Case { files: counts[1], update, all_stats }, rows, batches, per_batch));
            let us = (big.all.as_secs_f64() - base.all.as_secs_f64()) * 1e6 / (counts[1] - counts[0]) as f64;
            per_file.insert((update, all_stats), us);
            for (files, c) in [(counts[0], base), (counts[1], big)] {
                let ratio = c.all.as_secs_f64() / base.all.as_secs_f64();
                let us = if files == counts[0] { String::from("-") } else { format!("{us:.1}") };
                println!(
                    "{kind:<7} {stats:<10} {files:>6} {:>8.1} {ratio:>7.2} {us:>12} {:>10.1} {:>10.1}",
                    ms(c.all),
                    ms(c.first),
                    ms(c.last)
                );
            }
        }
    }
    for update in [false, true] {
        let (every, ours) = (per_file[&(update, true)], per_file[&(update, false)]);
        println!(
            "{}: {ours:.1} µs of CPU per live file and batch with orderlake's statistics, {every:.1} with every column's",
            if update { "update" } else { "append" }
        );
    }
}
