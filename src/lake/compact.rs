//! Compaction of the keyed tables (silver, gold) that keeps what their batches rely on. A batch
//! finds the files holding its keys by the key column's statistics and copies those files whole
//! ([`super::rewrite`]), so each file must keep covering a narrow range of keys and stay small.
//! delta-rs' OPTIMIZE packs files by size alone: after it, one file held every key of the table,
//! the next batch copied all of it (3 million rows, 1.5 GiB of memory at 5 million events), and
//! every later round packed that file again with the new ones. Here only small files are packed,
//! in key order, into files of at most `maintenance.keyed_file_rows` rows, sorted by the cluster
//! column, and a file past half that size is not packed again: the cost of a round follows the
//! files written since the last one, whatever the size of the table. Inside `run` files are
//! packed by size tier ([`plan_tiered`]), so each row is rewritten a few times at most and the
//! newest keys stay in small files.

use std::collections::BTreeSet;

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::RecordBatchWriter;

use super::keys::family;
use super::rewrite::{conform, write_clustered};
use crate::error::Result;

/// A file and what its statistics say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStat {
    pub path: String,
    pub rows: u64,
    /// The smallest value of the cluster column (`None` without statistics).
    pub min_key: Option<String>,
}

/// What one call of [`compact`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub files_removed: u64,
    pub files_added: u64,
}

/// The groups of files to pack together: files under half of `max_rows` (the others are packed
/// already, or were written big), in key order, cut so that no group exceeds `max_rows` or mixes
/// key families (`581470`, `1000470` and `C581476`: the writer splits them again, and packing a family's
/// last small file with the other's would rewrite the same two files every round). Only groups
/// of two or more files are worth a rewrite.
pub fn plan(mut files: Vec<FileStat>, max_rows: u64) -> Vec<Vec<FileStat>> {
    files.retain(|f| f.rows < max_rows / 2);
    fn fam(f: &FileStat) -> Option<(&str, usize)> {
        f.min_key.as_deref().map(family)
    }
    files.sort_by(|a, b| (fam(a), &a.min_key, &a.path).cmp(&(fam(b), &b.min_key, &b.path)));
    let mut groups: Vec<Vec<FileStat>> = Vec::new();
    let mut current: Vec<FileStat> = Vec::new();
    let mut rows = 0;
    for f in files {
        let other_family = current.last().is_some_and(|last| fam(last) != fam(&f));
        if !current.is_empty() && (rows + f.rows > max_rows || other_family) {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += f.rows;
        current.push(f);
    }
    groups.push(current);
    groups.retain(|g| g.len() > 1);
    groups
}

/// Files packed together by [`plan_tiered`].
const FAN_IN: usize = 8;

/// The size tier of a file under half of `max_rows`: 0 below `max_rows / 64`, then one tier per
/// factor of [`FAN_IN`].
fn tier(rows: u64, max_rows: u64) -> u32 {
    let (mut tier, mut bound) = (0, (max_rows / 64).max(1));
    while rows >= bound && bound < max_rows / 2 {
        tier += 1;
        bound = bound.saturating_mul(FAN_IN as u64);
    }
    tier
}

/// The groups to pack inside a continuous `run`: as [`plan`], but only files of one size tier
/// together, [`FAN_IN`] at a time (or fewer whose rows reach `max_rows`), and a group only once it
/// is full; the rest wait for later rounds. Packing every small file at every round re-packed the
/// newest packed file with each round's new files until it reached half of `max_rows`: each row
/// was rewritten ≈ 8 times at 5,000 events/s, a round's work grew for tens of minutes, and the
/// packed file holding the newest keys was the one the next batch's updates copied whole. In
/// tiers a row is rewritten once per tier (3 times), and the newest keys stay in small files.
pub fn plan_tiered(mut files: Vec<FileStat>, max_rows: u64) -> Vec<Vec<FileStat>> {
    files.retain(|f| f.rows < max_rows / 2);
    fn fam(f: &FileStat) -> Option<(&str, usize)> {
        f.min_key.as_deref().map(family)
    }
    files.sort_by(|a, b| {
        (fam(a), tier(a.rows, max_rows), &a.min_key, &a.path).cmp(&(
            fam(b),
            tier(b.rows, max_rows),
            &b.min_key,
            &b.path,
        ))
    });
    let mut groups: Vec<Vec<FileStat>> = Vec::new();
    let mut current: Vec<FileStat> = Vec::new();
    let mut rows = 0;
    for f in files {
        let other = current
            .last()
            .is_some_and(|last| fam(last) != fam(&f) || tier(last.rows, max_rows) != tier(f.rows, max_rows));
        if other || (!current.is_empty() && rows + f.rows > max_rows) {
            // Full when the next file of its tier would not fit; not full when the tier ran out.
            if !other && current.len() > 1 {
                groups.push(std::mem::take(&mut current));
            }
            current.clear();
            rows = 0;
        }
        rows += f.rows;
        current.push(f);
        if current.len() == FAN_IN {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
    }
    groups
}

/// The groups of the table's files to pack (see [`plan`]; [`plan_tiered`] with `tiered`).
pub fn plan_table(table: &DeltaTable, cluster: &str, max_rows: u64, tiered: bool) -> Result<Vec<Vec<FileStat>>> {
    let files = file_stats(table, cluster)?;
    Ok(if tiered { plan_tiered(files, max_rows) } else { plan(files, max_rows) })
}

/// The table's files with their row counts and smallest `cluster` value.
fn file_stats(table: &DeltaTable, cluster: &str) -> Result<Vec<FileStat>> {
    let data = table.snapshot()?.log_data();
    Ok(data
        .iter()
        .map(|f| {
            let stats: Option<serde_json::Value> = f.stats().and_then(|s| serde_json::from_str(&s).ok());
            let min_key = stats.as_ref().and_then(|s| s["minValues"][cluster].as_str().map(str::to_string));
            // A file without a row count is treated as big: it is never packed blindly.
            FileStat { path: f.path().to_string(), rows: f.num_records().map_or(u64::MAX, |n| n as u64), min_key }
        })
        .collect())
}

/// Packs `groups` of the table's files (from [`plan_table`]) in one commit that changes no data.
/// The groups may have been planned batches ago (`run` packs one group per batch boundary,
/// 0.3–1 s, where a whole table after 50 batches paused ingestion 2–3 s): a file a batch has
/// rewritten since is left out, and so is a group left with one file.
pub async fn compact(
    table: DeltaTable,
    cluster: &str,
    max_rows: u64,
    groups: Vec<Vec<FileStat>>,
) -> Result<(DeltaTable, Compacted)> {
    let groups = live_groups(&table, groups.into_iter().map(|g| g.into_iter().map(|f| f.path).collect()).collect())?;
    if groups.is_empty() {
        return Ok((table, Compacted::default()));
    }
    let ctx = super::read::session();
    table.update_datafusion_session(&ctx.state())?;
    let mut writer = RecordBatchWriter::for_table(&table)?.with_writer_properties(super::splice::writer_properties());
    let schema = writer.arrow_schema();
    let mut actions: Vec<Action> = Vec::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    // One group in memory at a time: at most `max_rows` rows.
    for paths in groups {
        let provider = table.table_provider().with_file_paths(paths.iter().cloned()).await?;
        let parts = ctx.read_table(provider)?.collect().await?;
        let parts = parts.iter().map(|b| conform(b, &schema)).collect::<Result<Vec<_>>>()?;
        for a in write_clustered(&mut writer, parts, cluster).await? {
            if let Action::Add(mut add) = a {
                add.data_change = false;
                actions.push(Action::Add(add));
            }
        }
        gone.extend(paths);
    }
    commit_rewrite(table, actions, &gone, max_rows as i64).await
}

/// The planned `groups` of file paths without the files a writer has removed since the plan, and
/// without the groups that leaves with one file (nothing to pack).
pub(super) fn live_groups(table: &DeltaTable, groups: Vec<Vec<String>>) -> Result<Vec<Vec<String>>> {
    let live: BTreeSet<String> = table.snapshot()?.log_data().iter().map(|f| f.path().to_string()).collect();
    Ok(groups
        .into_iter()
        .map(|g| g.into_iter().filter(|p| live.contains(p)).collect::<Vec<_>>())
        .filter(|g| g.len() > 1)
        .collect())
}

/// Commits a rewrite that changes no data: `adds` (already `dataChange = false`) in place of the
/// live files among `gone`, as an OPTIMIZE. `target_size` is what the log records the rewrite
/// aimed at.
pub(super) async fn commit_rewrite(
    table: DeltaTable,
    actions: Vec<Action>,
    gone: &BTreeSet<String>,
    target_size: i64,
) -> Result<(DeltaTable, Compacted)> {
    let op = DeltaOperation::Optimize { predicate: None, target_size };
    commit_replacing(table, actions, gone, false, op).await
}

/// Commits `actions` (the new files) with the removal of the live files among `gone`, marked
/// `data_change` as the adds are; the checkpoint and log cleanup are left to `lake::checkpoints`.
pub(super) async fn commit_replacing(
    table: DeltaTable,
    mut actions: Vec<Action>,
    gone: &BTreeSet<String>,
    data_change: bool,
    op: DeltaOperation,
) -> Result<(DeltaTable, Compacted)> {
    let mut done = Compacted { files_added: actions.len() as u64, ..Compacted::default() };
    for f in table.snapshot()?.log_data().iter() {
        if gone.contains(f.path().as_ref()) {
            actions.push(Action::Remove(f.remove_action(data_change)));
            done.files_removed += 1;
        }
    }
    let props = CommitProperties::default().with_create_checkpoint(false).with_cleanup_expired_logs(Some(false));
    let finalized =
        CommitBuilder::from(props).with_actions(actions).build(Some(table.snapshot()?), table.log_store(), op).await?;
    let mut table = table;
    table.state = Some(finalized.snapshot());
    Ok((table, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, rows: u64, min: &str) -> FileStat {
        FileStat { path: path.into(), rows, min_key: Some(min.into()) }
    }

    fn paths(groups: &[Vec<FileStat>]) -> Vec<Vec<&str>> {
        groups.iter().map(|g| g.iter().map(|f| f.path.as_str()).collect()).collect()
    }

    #[test]
    fn small_files_are_packed_in_key_order_up_to_the_row_limit() {
        let files = vec![
            f("c", 40, "300"),
            f("a", 40, "100"),
            f("big", 600, "150"),
            f("b", 40, "200"),
            f("d", 40, "400"),
            f("e", 30, "C100"),
        ];
        // Limit 100: files of 50 rows or more are left; the rest in key order, at most 100 rows each.
        assert_eq!(paths(&plan(files, 100)), vec![vec!["a", "b"], vec!["c", "d"]], "'e' alone is not worth a rewrite");
    }

    #[test]
    fn key_families_are_packed_apart() {
        let files =
            vec![f("a", 10, "100"), f("b", 10, "200"), f("c", 10, "C100"), f("d", 10, "C200"), f("e", 10, "900")];
        assert_eq!(paths(&plan(files, 100)), vec![vec!["a", "b", "e"], vec!["c", "d"]]);
        // One small file of each family: nothing to do, this round or the next.
        assert!(plan(vec![f("a", 10, "100"), f("c", 10, "C100")], 100).is_empty());
    }

    #[test]
    fn a_packed_file_is_not_packed_again_and_lone_files_stay() {
        assert!(plan(vec![f("packed", 60, "1"), f("new", 10, "2")], 100).is_empty());
        assert!(plan(vec![f("only", 10, "1")], 100).is_empty());
        assert!(plan(vec![], 100).is_empty());
        // Without a row count a file counts as big.
        let unknown = FileStat { path: "x".into(), rows: u64::MAX, min_key: None };
        assert!(plan(vec![unknown, f("y", 10, "1")], 100).is_empty());
    }

    #[test]
    fn tiers_are_factors_of_eight_below_half_the_limit() {
        let t = |rows| tier(rows, 256_000);
        assert_eq!([t(0), t(3_999), t(4_000), t(31_999), t(32_000), t(127_999)], [0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn inside_run_only_full_groups_of_one_tier_are_packed() {
        let small = |i: usize| f(&format!("s{i}"), 100, &format!("{}", 100 + i));
        let mut files: Vec<FileStat> = (0..11).map(small).collect();
        files.push(f("mid", 10_000, "50"));
        files.push(f("c", 100, "C100"));
        // Eight of the eleven small files (in key order); the rest, the lone tier-1 file and the
        // other family's file wait.
        assert_eq!(paths(&plan_tiered(files, 256_000)), vec![(0..8).map(|i| format!("s{i}")).collect::<Vec<_>>()]);
        // The top tier is full when the next file would not fit.
        let big: Vec<FileStat> = (0..5).map(|i| f(&format!("b{i}"), 60_000, &format!("{}", 200 + i))).collect();
        assert_eq!(paths(&plan_tiered(big, 256_000)), vec![vec!["b0", "b1", "b2", "b3"]]);
    }

    /// Rows written per row ingested, the most live files under half the limit, and the rows of
    /// the file holding the newest keys after each round: 600 batches of 760 new keys, a round
    /// every ten batches.
    fn simulate(planner: fn(Vec<FileStat>, u64) -> Vec<Vec<FileStat>>) -> (f64, usize, u64) {
        let (max_rows, batch) = (250_000, 760);
        let (mut files, mut written, mut ingested, mut most_small, mut newest) = (Vec::new(), 0, 0, 0, 0);
        for b in 0..600u64 {
            files.push(f(&format!("n{b}"), batch, &format!("{:07}", 1_000_000 + b * batch)));
            written += batch;
            ingested += batch;
            if b % 10 == 9 {
                for (i, g) in planner(files.clone(), max_rows).into_iter().enumerate() {
                    let rows: u64 = g.iter().map(|f| f.rows).sum();
                    let min = g.iter().filter_map(|f| f.min_key.clone()).min().unwrap();
                    files.retain(|f| !g.contains(f));
                    files.push(f(&format!("p{b}-{i}"), rows, &min));
                    written += rows;
                    assert!(rows <= max_rows);
                }
                most_small = most_small.max(files.iter().filter(|f| f.rows < max_rows / 2).count());
                newest = newest.max(files.iter().max_by_key(|f| f.min_key.clone()).unwrap().rows);
            }
        }
        (written as f64 / ingested as f64, most_small, newest)
    }

    #[test]
    fn tiers_write_each_row_fewer_times_and_keep_the_newest_keys_in_small_files() {
        let (whole, whole_files, whole_newest) = simulate(plan);
        let (tiered, tiered_files, tiered_newest) = simulate(plan_tiered);
        assert!(whole > 6.0, "every small file at every round: {whole:.1} writes per row");
        assert!(tiered <= 4.0, "in tiers: {tiered:.1} writes per row (whole: {whole:.1})");
        assert!(tiered_files <= 40, "at most {tiered_files} small files (whole: {whole_files})");
        assert!(tiered_newest < whole_newest / 4, "newest keys' file: {tiered_newest} rows (whole: {whole_newest})");
    }
}
