//! Maintenance inside `run`: rounds of steps between batches, so that ingestion pauses for a
//! fraction of a round at a time, and a table's VACUUM at most hourly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use tracing::{info, warn};

use super::{Settle, TableRef, TableReport, Vacuum, Work, begin, catalog, pack, progress, settle};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::lake::Lake;

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
    /// When each table was last vacuumed by this process.
    vacuumed: HashMap<String, Instant>,
}

/// The least time between two VACUUMs of a table inside `run`. VACUUM reads every tombstone
/// the log keeps (8 days of them by default, `lake::retention`), and files become deletable only
/// once the retention (7 days) is past: at every round it cost more each hour and found nothing
/// new within the hour.
pub const VACUUM_EVERY: Duration = Duration::from_secs(3600);

/// Whether a round should vacuum a table last vacuumed at `last`.
fn vacuum_due(last: Option<&Instant>) -> bool {
    last.is_none_or(|at| at.elapsed() >= VACUUM_EVERY)
}

/// The round under way: the tables left and what was done so far.
struct Round {
    tables: std::vec::IntoIter<TableRef>,
    /// A keyed table with groups of files left to pack.
    packing: Option<(TableRef, Work)>,
    maintained: usize,
    files_before: usize,
    files_after: usize,
    spent: Duration,
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
    vacuum: Vacuum,
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
    let table = settle(table, m, Settle { checkpoint: false, vacuum }, &mut w.report).await?;
    // Checkpointed through the lake's writer, which spaces a table's checkpoints by their cost.
    lake.checkpoint_now(&t.rel, &table).await?;
    lake.keep(&t.rel, &table);
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
            let spent = Duration::ZERO;
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
        let Rounds { current, vacuumed, .. } = self;
        let Some(round) = current else { return };
        let started = Instant::now();
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
                Ok(Some(opened)) => {
                    let vacuum = if vacuum_due(vacuumed.get(&t.rel)) { Vacuum::Removed } else { Vacuum::Off };
                    let done = step_table(lake, &t, opened, settings, max_groups, vacuum).await;
                    if vacuum == Vacuum::Removed && matches!(done, Ok(Step::Done(_))) {
                        vacuumed.insert(t.rel.clone(), Instant::now());
                    }
                    done
                }
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
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_vacuumed_at_its_first_round_then_hourly() {
        assert!(vacuum_due(None), "not vacuumed by this process yet");
        let now = Instant::now();
        assert!(!vacuum_due(Some(&now)));
        if let Some(earlier) = now.checked_sub(VACUUM_EVERY) {
            assert!(vacuum_due(Some(&earlier)));
        }
    }
}
