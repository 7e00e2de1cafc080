//! Table maintenance: `orderlake maintain`, and a round every `maintenance.every_batches` batches
//! inside `run`, one step per batch boundary. Micro-batches add a few small files to every table
//! per batch; left alone, every read and MERGE lists and opens more of them, so a continuous
//! consumer slows down by the hour. Per
//! table: small files are packed, the keyed tables' (silver, gold) by key range into files of at
//! most `maintenance.keyed_file_rows` rows (`lake::compact`), the append-only tables' by OPTIMIZE
//! into files of about `maintenance.target_file_mb` (bronze's by day, `lake::tiered`: a day once
//! it is over, a group of files per step; today's by size tier as it fills), then a checkpoint, expired-log
//! cleanup, and VACUUM of unreferenced files older than the retention (never below 7 days unless
//! overridden; see `config`). The exactly-once markers (`txn`) are table state, so maintenance
//! keeps them; it commits no data change.

use std::collections::VecDeque;
use std::fmt::Write;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use tracing::{info, warn};

use crate::config::{MaintenanceSettings, Settings};
use crate::error::{Error, Result};
use crate::lake::compact::{self, FileStat};
use crate::lake::schema::TableSpec;
use crate::lake::tiered::{self, DayFile};
use crate::lake::{Lake, bronze, dead_letter, version_of};
use crate::pipeline::progress;
use crate::{gold, lake::silver};

/// A table orderlake writes: its layer and name as SQL sees them (`gold.order_totals`), and its
/// path under the lake root. One list for `maintain`, `status` and `query`.
pub struct TableRef {
    pub layer: &'static str,
    pub name: String,
    pub rel: String,
    /// The column a keyed table's files are sorted and split by (silver, gold); `None` for the
    /// append-only tables.
    pub cluster: Option<&'static str>,
}

/// Every table orderlake writes.
pub fn catalog(settings: &Settings) -> Vec<TableRef> {
    let table = |layer, name: &str, rel: String| TableRef { layer, name: name.to_string(), rel, cluster: None };
    let keyed = |layer, name: &str, rel: String, spec: &TableSpec| TableRef {
        layer,
        name: name.to_string(),
        rel,
        cluster: Some(spec.cluster_column()),
    };
    let mut t: Vec<TableRef> = settings
        .topics()
        .iter()
        .map(|topic| table("bronze", topic, bronze::table_name(&settings.bronze_prefix, topic)))
        .collect();
    let dl = dead_letter::table_name(&settings.bronze_prefix);
    t.push(table("bronze", dl.rsplit('/').next().unwrap_or(&dl), dl.clone()));
    let sp = &settings.silver_prefix;
    t.extend(silver::TABLES.iter().map(|(n, spec)| keyed("silver", n, format!("{sp}/{n}"), spec)));
    t.push(table("silver", silver::TOMBSTONES, format!("{sp}/{}", silver::TOMBSTONES)));
    let gp = &settings.gold_prefix;
    t.extend(gold::TABLES.iter().map(|(n, spec)| keyed("gold", n, format!("{gp}/{n}"), spec)));
    t.push(table("orderlake", "batches", progress::batches_table().to_string()));
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
    settle(table, m, vacuum, &mut w.report).await?;
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

/// After packing: a checkpoint, expired-log cleanup and VACUUM, then the report line.
async fn settle(t: DeltaTable, m: &MaintenanceSettings, vacuum: Vacuum, r: &mut TableReport) -> Result<()> {
    deltalake::checkpoints::create_checkpoint(&t, None).await?;
    crate::lake::log_cleanup::cleanup(&t).await?;
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
        "table maintained"
    );
    Ok(())
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

/// Maintenance inside `run`: a round every `maintenance.every_batches` batches, one step per
/// batch boundary, so that ingestion pauses for a fraction of the round at a time. A step is one
/// group of a keyed table's files (at most `maintenance.keyed_file_rows` rows, 0.3–1 s at 3M
/// events) or a whole small or append-only table; a whole round at once paused ingestion 12 s at
/// 3M events, and a whole order table 2–3 s. A failure is logged and the table left for the next
/// round, never fatal: ingestion matters more than compaction.
#[derive(Default)]
pub struct Rounds {
    current: Option<Round>,
    /// Batches committed since the last round began, across runs (see [`Rounds::resume`]).
    since: u64,
}

/// The round under way: the tables left and what was done so far.
struct Round {
    tables: std::vec::IntoIter<TableRef>,
    /// A keyed table with groups of files left to pack.
    packing: Option<(TableRef, Work)>,
    maintained: usize,
    files_before: usize,
    files_after: usize,
    spent: std::time::Duration,
}

/// Where one step left a table.
enum Step {
    /// Groups of files are left to pack at the next step.
    Packing(Work),
    /// Maintained.
    Done(TableReport),
}

/// Set once the test-only fault `mid-packing-once` fired.
static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

/// Packs `max_groups` groups of the table's files, and settles the table once none is left.
async fn step_table(
    lake: &Lake,
    t: &TableRef,
    (table, mut w): (DeltaTable, Work),
    settings: &Settings,
    max_groups: usize,
) -> Result<Step> {
    let (mut table, m) = (table, &settings.maintenance);
    loop {
        if w.report.compacted > 0
            && crate::config::fault_is(settings.fail_at.as_deref(), "mid-packing-once")
            && !FAILED_ONCE.swap(true, Relaxed)
        {
            // As a storage error would between two groups: the groups packed so far stay.
            return Err(Error::Other("injected failure between two packing steps".into()));
        }
        let now = w.plan.take(max_groups, m.keyed_file_rows);
        let before = w.report.compacted;
        table = pack(lake, t, table, m, now, &mut w.report).await?;
        // A group whose files the batches since rewrote packs nothing: not worth a step.
        if w.report.compacted > before || w.plan.is_done() {
            break;
        }
    }
    if !w.plan.is_done() {
        let (packed, left) = (w.report.compacted, w.plan.groups_left());
        info!(table = t.rel, files_packed = packed, groups_left = left, "table packing under way");
        return Ok(Step::Packing(w));
    }
    settle(table, m, Vacuum::Removed, &mut w.report).await?;
    Ok(Step::Done(w.report))
}

impl Rounds {
    /// Takes up the count of batches since the last round from the lake, so that the count goes
    /// on across runs: a scheduled `run --once` of a few batches each time would otherwise never
    /// reach `every_batches`, and its small files would pile up for good. Each batch appends a
    /// one-row file per topic to the batch log, and a round packs them into one.
    pub async fn resume(&mut self, lake: &Lake) {
        let one_row = |t: &DeltaTable| {
            t.snapshot().map(|s| s.log_data().iter().filter(|f| f.num_records() == Some(1)).count()).unwrap_or(0)
        };
        self.since = match lake.open(progress::batches_table()).await {
            Ok(Some(t)) => one_row(&t) as u64,
            _ => 0, // no batch yet, or unreadable: counting from zero only delays a round
        };
    }

    /// Counts a committed batch, and starts a round once `every_batches` were committed since the
    /// last one began (and it is over).
    pub fn batch_committed(&mut self, settings: &Settings) {
        self.since += 1;
        let every = settings.maintenance.every_batches;
        if every > 0 && self.since >= every {
            self.start(settings);
        }
    }

    /// Starts a round unless one is still under way.
    fn start(&mut self, settings: &Settings) {
        if self.current.is_none() {
            self.since = 0;
            let tables = catalog(settings).into_iter();
            let spent = std::time::Duration::ZERO;
            self.current = Some(Round { tables, packing: None, maintained: 0, files_before: 0, files_after: 0, spent });
        }
    }

    /// Whether a round has work left.
    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Does the rest of the round: `run --once` has no freshness to protect, and a scheduled job
    /// that stopped mid-round every time would only ever reach the first tables.
    /// A table's groups are then packed in one commit.
    pub async fn finish(&mut self, lake: &Lake, settings: &Settings) {
        while self.busy() {
            self.advance(lake, settings, usize::MAX).await;
        }
    }

    /// The round's next step (a table that does not exist yet is passed over, nothing to wait a
    /// batch for); the last one ends the round with a summary line. With `whole_tables` a step
    /// packs all of a table's groups in one commit: `run --once` has no freshness to protect, and
    /// one group per step cost it 75 % more maintenance time (a commit and a reopen per group).
    pub async fn step(&mut self, lake: &Lake, settings: &Settings, whole_tables: bool) {
        self.advance(lake, settings, if whole_tables { usize::MAX } else { 1 }).await;
    }

    /// The next table of the round, packing at most `max_groups` groups of its files.
    async fn advance(&mut self, lake: &Lake, settings: &Settings, max_groups: usize) {
        let Some(round) = &mut self.current else { return };
        let started = std::time::Instant::now();
        loop {
            // The table is opened afresh at every step: the batches in between moved it on.
            let (t, opened) = match round.packing.take() {
                Some((t, w)) => {
                    let opened = lake.open(&t.rel).await.map(|o| o.map(|table| (table, w)));
                    (t, opened)
                }
                None => match round.tables.next() {
                    Some(t) => {
                        let opened = begin(lake, &t, &settings.maintenance, true).await;
                        (t, opened)
                    }
                    None => break,
                },
            };
            let done = match opened {
                Ok(None) => continue,
                Ok(Some(opened)) => step_table(lake, &t, opened, settings, max_groups).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(Step::Packing(w)) => round.packing = Some((t, w)),
                Ok(Step::Done(r)) => {
                    round.maintained += 1;
                    round.files_before += r.files_before;
                    round.files_after += r.files_after;
                }
                Err(e) => warn!(
                    table = t.rel,
                    error = %crate::redact::redact(&e.to_string()),
                    "maintenance failed; retried in the next round"
                ),
            }
            break;
        }
        round.spent += started.elapsed();
        if round.packing.is_none() && round.tables.len() == 0 {
            info!(
                tables = round.maintained,
                files_before = round.files_before,
                files_after = round.files_after,
                ms = round.spent.as_millis() as u64,
                "maintenance done"
            );
            self.current = None;
        }
    }
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
