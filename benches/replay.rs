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
//! the batches (the commits since the checkpoint). The `late` section times batches that also
//! change earlier orders (CPU and wall time); `REPLAY_LAKE=az://<container>/<prefix>` puts its
//! tables on Azurite, so the wall times include the store. `make bench-replay` runs it; without `--bench`
//! (`cargo test --all-targets`) it runs a small case once, to check that it works.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::StreamExt;
use orderlake::config::{FileConfig, Overrides, Settings};
use orderlake::lake::rewrite::{Search, replace_keys};
use orderlake::lake::schema::SILVER_ORDERS;
use orderlake::lake::{Lake, commit_with};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

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
    // In row groups as orderlake writes keyed files (compaction, rewrites).
    let mut writer = RecordBatchWriter::for_table(&table)
        .expect("writer")
        .with_writer_properties(orderlake::lake::splice::writer_properties());
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

/// Which earlier orders a batch changes besides adding its new ones.
#[derive(Clone, Copy)]
enum Late {
    /// No earlier order: the floor the others are measured from.
    None,
    /// One order anywhere in the table.
    One,
    /// `n` orders anywhere in the table (statuses of old orders, uniformly).
    Scattered(u64),
    /// `n` orders among the newest tenth of the table (statuses of last days' orders).
    Recent(u64),
}

impl Late {
    fn name(self) -> String {
        match self {
            Late::None => "none".into(),
            Late::One => "1 anywhere".into(),
            Late::Scattered(n) => format!("{n} anywhere"),
            Late::Recent(n) => format!("{n} in newest 10%"),
        }
    }

    /// The earlier order numbers a batch changes, out of the `total` seeded.
    fn pick(self, total: u64, rng: &mut SmallRng) -> BTreeSet<u64> {
        let (n, from) = match self {
            Late::None => (0, 0),
            Late::One => (1, 0),
            Late::Scattered(n) => (n, 0),
            Late::Recent(n) => (n, total - total / 10),
        };
        let mut picked = BTreeSet::new();
        while (picked.len() as u64) < n {
            picked.insert(rng.gen_range(from..total));
        }
        picked
    }
}

/// What one layout of the table costs the batches that change earlier orders.
struct LateCost {
    cpu: Duration,
    wall: Duration,
    rows_copied: u64,
    /// Row groups decoded and encoded again (the rest of a copied file is copied as bytes).
    groups_recoded: u64,
}

/// `batches` batches of `per_batch` new orders each plus the earlier orders `late` picks, against
/// `total` orders in files of `rows` rows (key ranges one after another, as compaction leaves
/// them): every file holding a changed order is copied but for that order.
async fn late_changes(total: u64, rows: u64, batches: u64, per_batch: u64, late: Late) -> LateCost {
    let dir = tempfile::tempdir().expect("temp dir");
    // Under `REPLAY_LAKE` (e.g. `az://replay/late` on Azurite) the store's latency is in the wall
    // times; a new prefix per case.
    let lake = match std::env::var("REPLAY_LAKE") {
        Ok(root) => format!("{}/{}", root.trim_end_matches('/'), uuid::Uuid::new_v4()),
        Err(_) => dir.path().to_str().expect("UTF-8").into(),
    };
    let o = Overrides { lake: Some(lake), ..Default::default() };
    let settings = Settings::from_parts(FileConfig::default(), o).expect("settings");
    let mut table = seeded(&settings, total / rows, rows, false).await;
    let mut rng = SmallRng::seed_from_u64(rows ^ batches);
    let (mut cpus, mut walls, mut copied, mut recoded) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in 0..batches {
        let pos = b + 1;
        let mut parts = vec![orders(total + b * per_batch, per_batch, pos)];
        parts.extend(late.pick(total, &mut rng).into_iter().map(|o| orders(o, 1, pos)));
        let batch = arrow::compute::concat_batches(&SILVER_ORDERS.arrow_schema(), &parts).expect("one batch");
        let txn = Transaction::new("bench-replay-late", pos as i64);
        let (c0, w0) = (cpu(), Instant::now());
        table = replace_keys(table, "order_id", batch, Search::All, Some("source_pos"), "order_id", vec![txn])
            .await
            .expect("batch written");
        cpus.push(cpu() - c0);
        walls.push(w0.elapsed());
        let mut history = table.history(Some(1));
        let last = history.next().await.expect("a commit").expect("commit info");
        let metrics = &last.info["operationMetrics"];
        copied.push(metrics["rows_copied"].as_u64().expect("rewrite metrics"));
        recoded.push(metrics["groups_recoded"].as_u64().expect("rewrite metrics"));
    }
    let live: u64 =
        table.snapshot().expect("state").log_data().iter().filter_map(|f| f.num_records()).sum::<usize>() as u64;
    assert_eq!(live, total + batches * per_batch, "every order once after the batches");
    copied.sort();
    recoded.sort();
    LateCost {
        cpu: median(&cpus),
        wall: median(&walls),
        rows_copied: copied[copied.len() / 2],
        groups_recoded: recoded[recoded.len() / 2],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

const PER_BATCH: u64 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    // `cargo bench --bench replay -- late` runs one section.
    let only: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if only.is_empty() || only.contains(&"files") {
        live_files(&rt, smoke);
    }
    if only.is_empty() || only.contains(&"late") {
        late(&rt, smoke);
    }
}

/// What each live file costs a batch, with orderlake's statistics columns and with every column's.
fn live_files(rt: &tokio::runtime::Runtime, smoke: bool) {
    let (counts, batches): ([u64; 2], u64) = if smoke { ([4, 16], 3) } else { ([50, 2_000], 60) };
    let (rows, per_batch) = (200, PER_BATCH);
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

/// What a batch that changes earlier orders costs with the table in smaller or bigger files.
fn late(rt: &tokio::runtime::Runtime, smoke: bool) {
    let per_batch = PER_BATCH;
    let (total, layouts, late_batches, changes) =
        // Smoke files still span several row groups, so the byte copy runs there too.
        if smoke { (40_000, [20_000, 40_000], 2, 4) } else { (2_000_000, [250_000, 1_000_000], 8, 16) };
    println!();
    println!(
        "changes to earlier orders: {late_batches} batches of {per_batch} new orders plus the changes, {total} orders in files of {} or {} rows; median",
        layouts[0], layouts[1]
    );
    println!(
        "{:<18} {:>10} {:>6} {:>8} {:>7} {:>8} {:>12} {:>15}",
        "changes", "file rows", "files", "cpu ms", "× small", "wall ms", "rows copied", "groups recoded"
    );
    for late in [Late::None, Late::One, Late::Recent(changes), Late::Scattered(changes)] {
        let mut small = None;
        for rows in layouts {
            let c = rt.block_on(late_changes(total, rows, late_batches, per_batch, late));
            let base = *small.get_or_insert(c.cpu);
            println!(
                "{:<18} {rows:>10} {:>6} {:>8.1} {:>7.2} {:>8.1} {:>12} {:>15}",
                late.name(),
                total / rows,
                ms(c.cpu),
                c.cpu.as_secs_f64() / base.as_secs_f64(),
                ms(c.wall),
                c.rows_copied,
                c.groups_recoded
            );
        }
    }
}
