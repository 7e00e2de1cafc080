//! Table maintenance: `orderlake maintain`, and a round every `maintenance.every_batches` batches
//! inside `run`, one step per batch boundary. Micro-batches add a few small files to every table
//! per batch; left alone, every read and MERGE lists and opens more of them, so a continuous
//! consumer slows down by the hour. Per
//! table: small files are packed, the keyed tables' (silver, gold) by key range into files of at
//! most `maintenance.keyed_file_rows` rows (`lake::compact`), the append-only tables' by OPTIMIZE
//! into files of about `maintenance.target_file_mb` (bronze's by day, `lake::tiered`: a day once
//! it is over, a group of files per step; today's by size tier as it fills), then a checkpoint,
//! expired-log cleanup, and VACUUM of unreferenced files older than the retention (never below 7
//! days unless overridden; see `config`). Inside `run` the checkpoint goes through the lake's
//! writer, which spaces a table's checkpoints by their cost (`lake::checkpoints`), and a table is
//! vacuumed at most hourly: both read every tombstone of the retention. The exactly-once markers (`txn`) are table state, so maintenance
//! keeps them; it commits no data change.

use std::collections::VecDeque;
use std::fmt::Write;
use std::num::NonZeroU64;
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use tracing::info;

use crate::config::{MaintenanceSettings, Settings};
use crate::error::{Error, Result};
use crate::lake::compact::{self, FileStat};
use crate::lake::schema::{self, TableSpec};
use crate::lake::tiered::{self, DayFile};
use crate::lake::{Lake, bronze, dead_letter, version_of};
use crate::pipeline::progress;
use crate::{gold, lake::silver};

mod rounds;
pub use rounds::{Rounds, VACUUM_EVERY};

/// A table orderlake writes: its layer and name as SQL sees them (`gold.order_totals`), and its
/// path under the lake root. One list for `maintain`, `status` and `query`.
pub struct TableRef {
    pub layer: &'static str,
    pub name: String,
    pub rel: String,
    /// The column a keyed table's files are sorted and split by (silver, gold); `None` for the
    /// append-only tables.
    pub cluster: Option<&'static str>,
    /// Its shape; maintenance aligns the table's statistics columns with it (`lake::stats`).
    pub spec: &'static TableSpec,
}

/// Every table orderlake writes.
pub fn catalog(settings: &Settings) -> Vec<TableRef> {
    let table =
        |layer, name: &str, rel: String, spec| TableRef { layer, name: name.to_string(), rel, cluster: None, spec };
    let keyed = |layer, name: &str, rel: String, spec: &'static TableSpec| TableRef {
        layer,
        name: name.to_string(),
        rel,
        cluster: Some(spec.cluster_column()),
        spec,
    };
    let mut t: Vec<TableRef> = settings
        .topics()
        .iter()
        .map(|topic| table("bronze", topic, bronze::table_name(&settings.bronze_prefix, topic), &schema::BRONZE))
        .collect();
    let dl = dead_letter::table_name(&settings.bronze_prefix);
    t.push(table("bronze", dl.rsplit('/').next().unwrap_or(&dl), dl.clone(), &schema::DEAD_LETTERS));
    let sp = &settings.silver_prefix;
    t.extend(silver::TABLES.iter().map(|(n, spec)| keyed("silver", n, format!("{sp}/{n}"), spec)));
    t.push(table("silver", silver::TOMBSTONES, format!("{sp}/{}", silver::TOMBSTONES), &schema::SILVER_TOMBSTONES));
    let gp = &settings.gold_prefix;
    t.extend(gold::TABLES.iter().map(|(n, spec)| keyed("gold", n, format!("{gp}/{n}"), spec)));
    t.push(table("orderlake", "batches", progress::batches_table().to_string(), &schema::BATCH_LOG));
    t
}

/// Every table orderlake writes, by path under the lake root.
pub fn tables(settings: &Settings) -> Vec<String> {
    catalog(settings).into_iter().map(|t| t.rel).collect()
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default)]
pub struct TableReport {
    pub table: String,
    pub files_before: usize,
    pub bytes_before: i64,
    pub files_after: usize,
    pub bytes_after: i64,
    /// Small files OPTIMIZE replaced.
    pub compacted: u64,
    /// Unreferenced files VACUUM deleted from storage.
    pub vacuumed: usize,
    /// Why the table was left as it was (e.g. another writer won the commit race).
    pub skipped: Option<String>,
}

fn files_and_bytes(t: &DeltaTable) -> Result<(usize, i64)> {
    let data = t.snapshot()?.log_data();
    Ok((data.num_files(), data.iter().map(|f| f.size()).sum()))
}

/// Which files VACUUM deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacuum {
    /// None (`maintain --no-vacuum`).
    Off,
    /// Files the log removed, older than the retention (inside `run`: cheap).
    Removed,
    /// Also files the log never referenced (left by a writer that died before its commit), at the
    /// cost of listing the whole table directory.
    Orphans,
}

/// Maintains one table; `None` when it does not exist (yet).
pub async fn table(lake: &Lake, t: &TableRef, m: &MaintenanceSettings, vacuum: Vacuum) -> Result<Option<TableReport>> {
    let Some((table, mut w)) = begin(lake, t, m, false).await? else { return Ok(None) };
    let now = w.plan.take(usize::MAX, u64::MAX);
    let table = pack(lake, t, table, m, now, &mut w.report).await?;
    settle(table, m, Settle { checkpoint: true, vacuum }, &mut w.report).await?;
    Ok(Some(w.report))
}

/// A table under maintenance: its report so far and the packing planned at its start and not
/// done yet. Planned once: planning again at every step would take in the files the batches in
/// between wrote, and a busy table would never be done.
struct Work {
    report: TableReport,
    plan: Plan,
}

/// What is left to pack of one table.
enum Plan {
    /// A keyed table's groups of files, by key range (`lake::compact`).
    Keyed(VecDeque<Vec<FileStat>>),
    /// An append-only table: by day (bronze), groups of today's files by size, then groups of
    /// its closed days' files, each with the size it aims at (`lake::tiered`); without days, an
    /// OPTIMIZE of all of it when `optimize`.
    Appended { optimize: bool, groups: VecDeque<(u64, Vec<DayFile>)> },
}

impl Plan {
    /// The next step's share: at most `max_groups` groups, and the OPTIMIZE with the first. A
    /// keyed table's step also takes the groups after its first while their rows stay within
    /// `max_rows` in all: tiered groups are eight small files, and a step (a commit and a reopen)
    /// per such group made a round last so long that small files piled up between rounds.
    fn take(&mut self, max_groups: usize, max_rows: u64) -> Plan {
        fn some<T>(g: &mut VecDeque<T>, max: usize) -> VecDeque<T> {
            g.drain(..max.min(g.len())).collect()
        }
        match self {
            Plan::Keyed(groups) => {
                let (mut n, mut rows) = (0, 0u64);
                while n < groups.len() {
                    let r: u64 = groups[n].iter().map(|f| f.rows).sum();
                    if n >= max_groups && rows.saturating_add(r) > max_rows {
                        break;
                    }
                    rows = rows.saturating_add(r);
                    n += 1;
                }
                Plan::Keyed(some(groups, n))
            }
            Plan::Appended { optimize, groups } => {
                Plan::Appended { optimize: std::mem::replace(optimize, false), groups: some(groups, max_groups) }
            }
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Plan::Keyed(groups) => groups.is_empty(),
            Plan::Appended { optimize, groups } => !*optimize && groups.is_empty(),
        }
    }

    fn groups_left(&self) -> usize {
        match self {
            Plan::Keyed(groups) => groups.len(),
            Plan::Appended { groups, .. } => groups.len(),
        }
    }
}

/// The cap of today's packed bronze files (`lake::tiered`): an eighth of the target size, so a
/// step's rewrite stays under a second; the closed day's OPTIMIZE makes full-size files of them.
fn today_cap(m: &MaintenanceSettings) -> u64 {
    (m.target_file_bytes / 8).max(1)
}

/// Opens a table for maintenance, notes its size before and plans its packing; `None` when it
/// does not exist. A keyed table is packed by size tier inside `run` (`tiered`), wholly on demand.
async fn begin(lake: &Lake, t: &TableRef, m: &MaintenanceSettings, tiered: bool) -> Result<Option<(DeltaTable, Work)>> {
    let Some(table) = lake.open(&t.rel).await? else { return Ok(None) };
    // Before packing, so that the files it writes carry only the statistics reads use.
    let table = crate::lake::stats::align(table, t.spec).await?;
    let (files_before, bytes_before) = files_and_bytes(&table)?;
    let report = TableReport { table: t.rel.clone(), files_before, bytes_before, ..Default::default() };
    let plan = match t.cluster {
        Some(cluster) => Plan::Keyed(compact::plan_table(&table, cluster, m.keyed_file_rows, tiered)?.into()),
        None if by_day(&table)? => Plan::Appended { optimize: false, groups: day_groups(&table, m)? },
        None => Plan::Appended { optimize: true, groups: VecDeque::new() },
    };
    Ok(Some((table, Work { report, plan })))
}

/// A by-day table's groups of files to pack, each with the size it aims at: today's small files
/// by tier, then each closed day's, oldest day first, up to the target size. Today's come first:
/// they are what every commit replays. A day after today (a clock set back) is left open.
fn day_groups(table: &DeltaTable, m: &MaintenanceSettings) -> Result<VecDeque<(u64, Vec<DayFile>)>> {
    let mut days = tiered::files_by_partition(table, "ingest_date")?;
    let today = today();
    let cap = today_cap(m);
    let files = days.remove(&today).unwrap_or_default();
    let mut groups: VecDeque<_> = tiered::plan(files, cap, m.today_small_files).into_iter().map(|g| (cap, g)).collect();
    for (_, files) in days.into_iter().filter(|(day, _)| *day < today) {
        groups.extend(tiered::plan_closed(files, m.target_file_bytes).into_iter().map(|g| (m.target_file_bytes, g)));
    }
    Ok(groups)
}

fn today() -> String {
    chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string()
}

/// Whether the table is partitioned by day (bronze).
fn by_day(table: &DeltaTable) -> Result<bool> {
    Ok(table.snapshot()?.metadata().partition_columns().iter().any(|c| c == "ingest_date"))
}

/// Packs small files: a keyed table's groups by key range (see `compact`); bronze's by day (see
/// `tiered`); the other append-only tables' by OPTIMIZE.
async fn pack(
    lake: &Lake,
    t: &TableRef,
    table: DeltaTable,
    m: &MaintenanceSettings,
    now: Plan,
    r: &mut TableReport,
) -> Result<DeltaTable> {
    let packed = match (t.cluster, now) {
        (Some(cluster), Plan::Keyed(groups)) => {
            compact::compact(table.clone(), cluster, m.keyed_file_rows, groups.into())
                .await
                .map(|(t, done)| (t, done.files_removed))
        }
        (_, Plan::Appended { optimize, groups }) => pack_appended(table.clone(), m, optimize, groups.into()).await,
        (_, Plan::Keyed(_)) => return Ok(table),
    };
    match packed {
        Ok((table, removed)) => {
            r.compacted += removed;
            Ok(table)
        }
        Err(e) => {
            if !e.is_commit_conflict() {
                return Err(e);
            }
            // Another writer changed the files being packed; the next round picks them up.
            r.skipped = Some("another writer committed first; compaction is retried next time".into());
            Ok(lake.open(&t.rel).await?.unwrap_or(table))
        }
    }
}

/// An append-only table's OPTIMIZE when `optimize`, then its groups of files by day; the files
/// removed.
async fn pack_appended(
    table: DeltaTable,
    m: &MaintenanceSettings,
    optimize: bool,
    groups: Vec<(u64, Vec<DayFile>)>,
) -> Result<(DeltaTable, u64)> {
    let (mut table, mut removed) = (table, 0);
    if optimize {
        let target = NonZeroU64::new(m.target_file_bytes).unwrap_or(NonZeroU64::MIN);
        let (t, metrics) = table.clone().optimize().with_target_size(target).await?;
        (table, removed) = (t, metrics.num_files_removed);
    }
    if let Some(cap) = groups.iter().map(|(cap, _)| *cap).max() {
        let (t, done) = tiered::pack(table, groups.into_iter().map(|(_, g)| g).collect(), cap).await?;
        (table, removed) = (t, removed + done.files_removed);
    }
    Ok((table, removed))
}

/// What settling a packed table does besides the report line.
#[derive(Debug, Clone, Copy)]
struct Settle {
    /// A checkpoint and expired-log cleanup, unconditionally (`orderlake maintain`). Inside `run`
    /// the lake's writer (`lake::checkpoints`) does both, spaced by their cost: a checkpoint
    /// holds every tombstone of the retention (8 days of copy-on-write removes), so one per
    /// table per round, between two batches, would cost more each hour of a run.
    checkpoint: bool,
    vacuum: Vacuum,
}

/// After packing: a checkpoint, expired-log cleanup and VACUUM as `how` says, then the report line.
async fn settle(t: DeltaTable, m: &MaintenanceSettings, how: Settle, r: &mut TableReport) -> Result<DeltaTable> {
    let started = Instant::now();
    if how.checkpoint {
        deltalake::checkpoints::create_checkpoint(&t, None).await?;
        crate::lake::log_cleanup::cleanup(&t).await?;
    }
    // Before VACUUM, which reads what it keeps.
    let t = crate::lake::retention::align(t, m.vacuum_retention).await?;
    let vacuum = how.vacuum;
    let mode = match vacuum {
        Vacuum::Off => None,
        Vacuum::Removed => Some(VacuumMode::Lite),
        Vacuum::Orphans => Some(VacuumMode::Full),
    };
    let t = match mode {
        Some(mode) => {
            let retention = chrono::Duration::from_std(m.vacuum_retention)
                .map_err(|e| Error::Config(format!("maintenance.vacuum_retention_hours: {e}")))?;
            // The minimum is enforced (with its override) when the settings are read.
            let (t, vacuumed) = t
                .vacuum()
                .with_retention_period(retention)
                .with_enforce_retention_duration(false)
                .with_mode(mode)
                .await?;
            r.vacuumed = vacuumed.files_deleted.len();
            t
        }
        None => t,
    };
    (r.files_after, r.bytes_after) = files_and_bytes(&t)?;
    info!(
        table = r.table,
        version = version_of(&t),
        files_before = r.files_before,
        files_after = r.files_after,
        bytes_before = r.bytes_before,
        bytes_after = r.bytes_after,
        vacuumed = r.vacuumed,
        settle_ms = started.elapsed().as_millis() as u64,
        "table maintained"
    );
    Ok(t)
}

/// Maintains every table of the pipeline, one after the other.
pub async fn all(lake: &Lake, settings: &Settings, vacuum: Vacuum) -> Result<Vec<TableReport>> {
    let mut out = Vec::new();
    for t in catalog(settings) {
        if let Some(r) = table(lake, &t, &settings.maintenance, vacuum).await? {
            out.push(r);
        }
    }
    Ok(out)
}

fn mib(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// The report `orderlake maintain` prints: files and MiB before → after per table.
pub fn render(reports: &[TableReport]) -> String {
    let mut out = String::new();
    writeln!(out, "{:<36} {:>13} {:>17} {:>10} {:>9}", "table", "files", "MiB", "compacted", "vacuumed").ok();
    for r in reports {
        let files = format!("{} → {}", r.files_before, r.files_after);
        let bytes = format!("{} → {}", mib(r.bytes_before), mib(r.bytes_after));
        writeln!(out, "{:<36} {:>13} {:>17} {:>10} {:>9}", r.table, files, bytes, r.compacted, r.vacuumed).ok();
        if let Some(why) = &r.skipped {
            writeln!(out, "  {}: {why}", r.table).ok();
        }
    }
    if reports.is_empty() {
        writeln!(out, "(no tables yet)").ok();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(rows: &[u64]) -> Vec<FileStat> {
        rows.iter().map(|&r| FileStat { path: format!("f{r}"), rows: r, min_key: None }).collect()
    }

    #[test]
    fn a_keyed_step_takes_groups_up_to_the_row_budget() {
        let groups =
            || Plan::Keyed(vec![group(&[600, 500]), group(&[100, 100]), group(&[50, 50]), group(&[900])].into());
        let sizes = |p: Plan| match p {
            Plan::Keyed(g) => g.iter().map(|g| g.len()).collect::<Vec<_>>(),
            Plan::Appended { .. } => unreachable!(),
        };
        let mut plan = groups();
        // The first group always (even over the budget), then while the rows fit.
        assert_eq!(sizes(plan.take(1, 1000)), [2]);
        assert_eq!(sizes(plan.take(1, 1000)), [2, 2]);
        assert_eq!(sizes(plan.take(1, 1000)), [1]);
        assert!(plan.is_done());
        assert_eq!(sizes(groups().take(usize::MAX, u64::MAX)), [2, 2, 2, 1]);
    }
}
