//! Delta checkpoints, written in the background one table at a time.
//!
//! delta-rs writes a table's checkpoint inside every tenth commit (`delta.checkpointInterval`),
//! and with it lists the log to remove expired commit files. A batch commits once to each of a
//! dozen tables, so all of them reached their tenth commit in the same batch: every tenth batch
//! took 0.3–0.5 s longer, the events waiting meanwhile made the next batch bigger, and those
//! batches were what the freshness p99 measured. orderlake's commits therefore skip both
//! (`lake::commit_with`), and [`Checkpoints`] writes the checkpoint of each table version this
//! process committed at the interval (at most one per table per [`spacing`]), then cleans up
//! the commits it covers, off the batch's path.
//!
//! A checkpoint only shortens reading the log: one lost to a crash costs readers ten more small
//! JSON files until the next. `run`, `rebuild` and the tests wait for what is queued
//! ([`Checkpoints::settle`]), so a scheduled `--once` job leaves its checkpoints behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::table::config::TablePropertiesExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::handles::Handles;

struct Job {
    rel: String,
    table: DeltaTable,
}

/// The background writer. Clones of a [`super::Lake`] share one.
pub struct Checkpoints {
    /// Started with the first job (a `Lake` may be made outside a runtime).
    queue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Jobs queued and not yet done.
    pending: watch::Sender<usize>,
    /// The last version queued per table and the time before which none is queued again: a table
    /// kept twice at one version is written once, and its checkpoints are [`spacing`] apart.
    queued: Queued,
    /// The lake's kept handles, re-read from each checkpoint written ([`Handles::reread`]).
    handles: Arc<Handles>,
}

/// The least time between two checkpoints of one table. A stream cutting a batch every second
/// reaches ten commits every ten seconds in each of a dozen tables; written at every interval,
/// checkpoints were a quarter of this two-core machine when they cost 0.1–0.5 s each. Too far
/// apart costs too: every refresh of a table (after each commit to it) lists and replays the
/// commits since its last checkpoint, and checkpoints 30 s apart instead of the ~10 s that
/// maintenance rounds used to write cost the freshness benchmark a fifth more CPU per batch.
/// Past this floor, a checkpoint's own cost spaces them ([`spacing`]).
pub const MIN_SPACING: Duration = Duration::from_secs(10);

/// The most time between two checkpoints of one table: a reader opening it replays at most this
/// long's worth of commits.
pub const MAX_SPACING: Duration = Duration::from_secs(600);

/// The time from the start of a table's checkpoint to its next, for one that took `cost`: at
/// least [`MIN_SPACING`], and [`COST_SHARE`] times its cost, up to [`MAX_SPACING`]. A
/// checkpoint is the table's whole state, and that state grows over days even when its live
/// files do not: every copy-on-write MERGE and compaction leaves a `remove` that checkpoints
/// carry for the tombstone retention (8 days, `super::retention`), so a silver table's checkpoint held 1,548
/// actions for 7 live files after 5 minutes. Spaced by their own cost, checkpoints take a
/// bounded share of the machine however long a run goes.
pub fn spacing(cost: Duration) -> Duration {
    cost.saturating_mul(COST_SHARE).clamp(MIN_SPACING, MAX_SPACING)
}

/// A table's checkpoints take at most one part in this of the time (until [`MAX_SPACING`]).
const COST_SHARE: u32 = 50;

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").finish_non_exhaustive()
    }
}

/// Whether delta-rs would have written a checkpoint with the commit that made `table`'s version:
/// the same rule, by the table's own interval (a table another tool created may have another).
pub fn due(table: &DeltaTable) -> bool {
    let Ok(state) = table.snapshot() else { return false };
    (state.version() + 1).is_multiple_of(state.table_config().checkpoint_interval().get())
}

impl Checkpoints {
    pub fn new(handles: Arc<Handles>) -> Self {
        Checkpoints { queue: Mutex::new(None), pending: watch::channel(0).0, queued: Arc::default(), handles }
    }

    /// Queues the checkpoint of `table`'s version if one is due there.
    pub fn after_commit(&self, rel: &str, table: &DeltaTable) {
        let Some(version) = table.version().filter(|_| due(table)) else { return };
        if !self.claim(rel, version) {
            return;
        }
        let job = Job { rel: rel.to_string(), table: table.clone() };
        let mut queue = self.queue.lock().expect("checkpoint queue");
        let tx = queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(work(rx, self.pending.clone(), self.queued.clone(), self.handles.clone()));
            tx
        });
        self.pending.send_modify(|n| *n += 1);
        if tx.send(job).is_err() {
            self.pending.send_modify(|n| *n -= 1);
        }
    }

    /// Writes the checkpoint of `table`'s version now, unless the table's last one is within its
    /// [`spacing`]; true if written. Maintenance calls it right after packing a table: the
    /// checkpoint then starts the log where every reader, this process's own table handles
    /// included, lists and replays from (runs with it at every round used a fifth less CPU per
    /// batch than with the interval's alone), and the spacing bounds it once checkpoints cost.
    pub async fn now(&self, rel: &str, table: &DeltaTable) -> crate::error::Result<bool> {
        let Some(version) = table.version() else { return Ok(false) };
        if !self.claim(rel, version) {
            return Ok(false);
        }
        let started = Instant::now();
        let written = write(&self.handles, rel, table).await;
        spaced(&self.queued, rel, started);
        written.map(|_| true)
    }

    /// Takes the table's next checkpoint slot for `version`: false when a checkpoint of it (or
    /// a later version) was taken already, or the last one is within its spacing.
    fn claim(&self, rel: &str, version: u64) -> bool {
        let mut queued = self.queued.lock().expect("checkpoint queue");
        if queued.get(rel).is_some_and(|(v, not_before)| *v >= version || Instant::now() < *not_before) {
            return false;
        }
        // Until the checkpoint's cost is known.
        queued.insert(rel.to_string(), (version, Instant::now() + MIN_SPACING));
        true
    }

    /// Waits until every queued checkpoint is written, at most `limit`; false if some were not.
    pub async fn settle(&self, limit: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        matches!(tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await, Ok(Ok(_)))
    }
}

type Queued = Arc<Mutex<HashMap<String, (u64, Instant)>>>;

async fn work(
    mut rx: mpsc::UnboundedReceiver<Job>,
    pending: watch::Sender<usize>,
    queued: Queued,
    handles: Arc<Handles>,
) {
    while let Some(job) = rx.recv().await {
        let started = Instant::now();
        let written = write(&handles, &job.rel, &job.table).await;
        spaced(&queued, &job.rel, started);
        match written {
            Ok(cleaned) => debug!(
                table = job.rel,
                version = job.table.version(),
                cleaned,
                ms = started.elapsed().as_millis() as u64,
                "checkpoint written"
            ),
            // Readers only replay a few more commits; the next interval writes one again.
            Err(e) => warn!(table = job.rel, version = job.table.version(),
                error = %crate::redact::redact(&e.to_string()), "could not write a checkpoint (readers replay more of the log until the next)"),
        }
        pending.send_modify(|n| *n -= 1);
    }
}

/// Spaces the table's next checkpoint by what the one started at `started` cost.
fn spaced(queued: &Queued, rel: &str, started: Instant) {
    if let Some((_, not_before)) = queued.lock().expect("checkpoint queue").get_mut(rel) {
        *not_before = started + spacing(started.elapsed());
    }
}

/// The checkpoint at `table`'s version, then (unless the table turned it off) the removal of the
/// commit files it covers that are past the log retention, and the kept handle re-read from the
/// checkpoint. Returns how many files went.
async fn write(handles: &Handles, rel: &str, table: &DeltaTable) -> crate::error::Result<usize> {
    deltalake::checkpoints::create_checkpoint(table, None).await?;
    let cleaned = super::log_cleanup::cleanup(table).await?;
    // The checkpoint is written: a handle that could not be re-read only stays as it was.
    if let Err(e) = handles.reread(rel, table).await {
        debug!(table = rel, error = %e, "kept handle not re-read from its checkpoint");
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_spaced_by_their_own_cost_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(spacing(ms(100)), MIN_SPACING, "a cheap checkpoint: at most one per 10 s");
        assert_eq!(spacing(ms(2_000)), Duration::from_secs(100), "a 2 s checkpoint takes 2 % of the time");
        assert_eq!(spacing(Duration::from_secs(60)), MAX_SPACING, "readers replay at most 10 minutes");
    }
}
