//! Packing of bronze's day partitions (`ingest_date`). Each batch adds one small file to bronze,
//! and delta-rs replays every live file of a table after each commit to it (its snapshot update):
//! at two batches a second a day's bronze reached ≈ 170,000 files, and the bronze commit's own
//! cost grew with them (15 µs per file and commit, so seconds by the evening). So the day being
//! appended to is packed as it fills, by size tier: once it holds more than
//! `maintenance.today_small_files` small files, files of about the same size are packed
//! [`FAN_IN`] at a time, up to a cap. A row is rewritten once per tier (three or four times), a
//! round's work is what arrived since the last, and the live small files stay a few dozen. A
//! closed day is the last tier: its files under half the target size are packed together into
//! files of about the target size, a group per maintenance step, so the day's end costs a step
//! per group rather than one stall for the whole day.
//!
//! Only `dataChange = false` actions are committed: catch-up reads bronze's commits and skips
//! them, and a concurrent append never conflicts with them (nor they with it).

use std::collections::{BTreeMap, BTreeSet};

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::compact::{Compacted, commit_rewrite, live_groups};
use super::rewrite::conform;
use crate::error::Result;

/// How many files of one tier are packed into one of the next.
pub const FAN_IN: usize = 8;

/// A file of the partition being packed.
#[derive(Debug, Clone, PartialEq)]
pub struct DayFile {
    pub path: String,
    pub bytes: u64,
    /// When it was written (ms): a tier is packed oldest first.
    pub modified: i64,
}

/// The tier of a file of `bytes` under `cap`: 0 within a factor [`FAN_IN`] of the cap, 1 within
/// a factor [`FAN_IN`] of that, and so on.
fn tier(bytes: u64, cap: u64) -> u32 {
    let (mut size, mut t) = (bytes.max(1), 0);
    while size.saturating_mul(FAN_IN as u64) < cap {
        size = size.saturating_mul(FAN_IN as u64);
        t += 1;
    }
    t
}

/// The groups of today's files to pack, once more than `keep` of them are small (under half of
/// `cap`): per tier, oldest first, [`FAN_IN`] files at a time, or fewer when the next would take
/// the group past `cap` (two always fit). A tier's last, unfilled group waits for more files.
/// Files of half the cap or more are done: a pair of them would pass it, and one that is left in
/// a tier stops its newer neighbours from packing. Up to `keep`, nothing is packed: a commit's
/// replay of a few dozen files costs about a millisecond, and waiting costs no extra rewrite.
pub fn plan(mut files: Vec<DayFile>, cap: u64, keep: usize) -> Vec<Vec<DayFile>> {
    files.retain(|f| f.bytes < cap / 2);
    if files.len() <= keep {
        return Vec::new();
    }
    let mut tiers: BTreeMap<u32, Vec<DayFile>> = BTreeMap::new();
    for f in files {
        tiers.entry(tier(f.bytes, cap)).or_default().push(f);
    }
    let mut groups = Vec::new();
    // The smallest files first: they are the most, and the cheapest to pack.
    for (_, files) in tiers.into_iter().rev() {
        let mut tier = oldest_first_in_groups(files, cap, FAN_IN);
        tier.pop_if(|last| last.len() < FAN_IN);
        groups.extend(tier);
    }
    groups
}

/// `files`, oldest first, cut into groups of at most `most` files and `cap` bytes (two files
/// under half the cap always fit); the last group is what is left, maybe short.
fn oldest_first_in_groups(mut files: Vec<DayFile>, cap: u64, most: usize) -> Vec<Vec<DayFile>> {
    files.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
    let (mut groups, mut current, mut bytes) = (Vec::new(), Vec::<DayFile>::new(), 0u64);
    for f in files {
        if current.len() == most || (!current.is_empty() && bytes + f.bytes > cap) {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += f.bytes;
        current.push(f);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The groups that finish a closed day, whose files no batch adds to any more: its files under
/// half of `cap`, oldest first, packed together up to `cap`; a group of one is left as it is.
/// A day is finished in one round: a group closes only when the next file would take it past
/// `cap`, so it is past half the cap, and at most one small file of the day is left over.
pub fn plan_closed(mut files: Vec<DayFile>, cap: u64) -> Vec<Vec<DayFile>> {
    files.retain(|f| f.bytes < cap / 2);
    let mut groups = oldest_first_in_groups(files, cap, usize::MAX);
    groups.retain(|g| g.len() > 1);
    groups
}

/// The files of `table` by the value of its partition column `column`.
pub fn files_by_partition(table: &DeltaTable, column: &str) -> Result<BTreeMap<String, Vec<DayFile>>> {
    let mut days: BTreeMap<String, Vec<DayFile>> = BTreeMap::new();
    for f in table.snapshot()?.log_data().iter() {
        let Some(Some(day)) = f.partition_values_map().get(column).cloned() else { continue };
        let file =
            DayFile { path: f.path().to_string(), bytes: f.size().max(0) as u64, modified: f.modification_time() };
        days.entry(day).or_default().push(file);
    }
    Ok(days)
}

/// Packs `groups` (from [`plan`] or [`plan_closed`]) in one commit that changes no data: each group's rows, read a
/// batch at a time, into one new file. A file another writer removed since the plan is left
/// out, and so is a group left with one file.
/// `cap` is what the log records the rewrite aimed at.
pub async fn pack(table: DeltaTable, groups: Vec<Vec<DayFile>>, cap: u64) -> Result<(DeltaTable, Compacted)> {
    let groups = live_groups(&table, groups.into_iter().map(|g| g.into_iter().map(|f| f.path).collect()).collect())?;
    if groups.is_empty() {
        return Ok((table, Compacted::default()));
    }
    let ctx = super::read::session();
    table.update_datafusion_session(&ctx.state())?;
    // Row groups of 64k rows: the writer streams the file to storage but holds a row group's
    // pages until it is full (a million rows by default), which put 85 MiB on the full
    // benchmark's peak RSS for a 12 MB group.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 16))
        .build();
    let mut writer = RecordBatchWriter::for_table(&table)?.with_writer_properties(props);
    let schema = writer.arrow_schema();
    let mut added = Vec::new();
    let mut gone = BTreeSet::new();
    for paths in groups {
        let provider = table.table_provider().with_file_paths(paths.iter().cloned()).await?;
        // A batch at a time: the writer holds the new file's encoded pages, not the rows.
        let mut rows = ctx.read_table(provider)?.execute_stream().await?;
        while let Some(b) = rows.try_next().await? {
            writer.write(conform(&b, &schema)?).await?;
        }
        // One file per group: flushed before the next group's rows.
        added.extend(writer.flush().await?);
        gone.extend(paths);
    }
    let adds = added
        .into_iter()
        .map(|mut add| {
            add.data_change = false;
            Action::Add(add)
        })
        .collect();
    commit_rewrite(table, adds, &gone, cap as i64).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, bytes: u64, modified: i64) -> DayFile {
        DayFile { path: path.into(), bytes, modified }
    }

    fn paths(groups: &[Vec<DayFile>]) -> Vec<Vec<&str>> {
        groups.iter().map(|g| g.iter().map(|f| f.path.as_str()).collect()).collect()
    }

    #[test]
    fn tiers_are_factors_of_the_fan_in_below_the_cap() {
        let cap = 8 * 8 * 8 * 100;
        assert_eq!(tier(cap - 1, cap), 0);
        assert_eq!(tier(cap / 8, cap), 0);
        assert_eq!(tier(cap / 8 - 1, cap), 1);
        assert_eq!(tier(100, cap), 2);
        assert_eq!(tier(99, cap), 3);
        assert_eq!(tier(0, cap), tier(1, cap), "an empty file counts as the smallest");
    }

    #[test]
    fn a_tier_is_packed_oldest_first_fan_in_files_at_a_time_and_the_rest_waits() {
        // Twenty batch files of one tier: two groups of eight, the four newest wait.
        let files: Vec<DayFile> = (0..20).map(|i| f(&format!("b{i:02}"), 1_000, 100 - i)).collect();
        let groups = plan(files, 1_000_000, 0);
        assert_eq!(groups.len(), 2);
        let oldest: Vec<String> = (12..20).map(|i| format!("b{i:02}")).rev().collect();
        assert_eq!(paths(&groups)[0], oldest.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(groups.iter().all(|g| g.len() == FAN_IN));
    }

    #[test]
    fn tiers_are_not_mixed_and_the_smallest_come_first() {
        let cap = 1_000_000;
        let mut files: Vec<DayFile> = (0..8).map(|i| f(&format!("big{i}"), 20_000, i)).collect();
        files.extend((0..8).map(|i| f(&format!("small{i}"), 1_000, i)));
        files.push(f("lone", 150_000, 0));
        let planned = plan(files, cap, 0);
        let groups = paths(&planned);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert!(groups[0].iter().all(|p| p.starts_with("small")));
        assert!(groups[1].iter().all(|p| p.starts_with("big")));
    }

    #[test]
    fn a_group_stops_short_of_the_cap_and_files_at_the_cap_are_done() {
        let cap = 1_000;
        // Top tier: 300 + 300 + 300 fit, the fourth would pass the cap.
        let files = vec![f("a", 300, 1), f("b", 300, 2), f("c", 300, 3), f("d", 300, 4), f("done", 1_000, 0)];
        assert_eq!(paths(&plan(files, cap, 0)), vec![vec!["a", "b", "c"]]);
        // Files of half the cap or more are done, even when a smaller one would fit with them.
        assert!(plan(vec![f("x", 500, 1), f("y", 400, 2)], cap, 0).is_empty());
        assert!(plan(vec![f("only", 10, 1)], cap, 0).is_empty());
    }

    #[test]
    fn up_to_keep_small_files_are_left_and_past_it_every_tier_is_packed() {
        let cap = 1_000_000;
        let mut files: Vec<DayFile> = (0..40).map(|i| f(&format!("s{i:02}"), 1_000, i)).collect();
        files.extend((0..24).map(|i| f(&format!("m{i:02}"), 20_000, i)));
        files.push(f("done", 600_000, 0));
        assert!(plan(files.clone(), cap, 64).is_empty(), "64 small files are kept");
        files.push(f("s40", 1_000, 40));
        let groups = plan(files, cap, 64);
        assert_eq!(groups.len(), 5 + 3, "every full group of both tiers");
        assert!(groups.iter().all(|g| g.len() == FAN_IN && g.iter().all(|f| f.path != "done")));
    }

    #[test]
    fn a_closed_day_is_packed_up_to_the_cap_and_a_lone_file_left_as_it_is() {
        let cap = 1_000;
        // Oldest first: 300 + 300 + 300 fit, the fourth starts a group that stays alone.
        let files = vec![f("d", 300, 4), f("a", 300, 1), f("c", 300, 3), f("b", 300, 2), f("done", 500, 0)];
        assert_eq!(paths(&plan_closed(files, cap)), vec![vec!["a", "b", "c"]]);
        let files = vec![f("a", 100, 1), f("b", 100, 2), f("c", 400, 3), f("d", 450, 4), f("e", 100, 5)];
        assert_eq!(paths(&plan_closed(files, cap)), vec![vec!["a", "b", "c"], vec!["d", "e"]]);
        assert!(plan_closed(vec![f("only", 10, 1)], cap).is_empty());
        assert!(plan_closed(Vec::new(), cap).is_empty());
    }

    /// Packs each group of `plan` into one new file in `files`; the bytes written.
    fn apply(files: &mut Vec<DayFile>, groups: Vec<Vec<DayFile>>, next: &mut i64) -> u64 {
        let mut written = 0;
        for group in groups {
            let gone: BTreeSet<&str> = group.iter().map(|g| g.path.as_str()).collect();
            let bytes = group.iter().map(|g| g.bytes).sum();
            files.retain(|f| !gone.contains(f.path.as_str()));
            files.push(f(&format!("f{next}"), bytes, *next));
            written += bytes;
            *next += 1;
        }
        written
    }

    #[test]
    fn a_day_of_batches_keeps_its_small_files_few_and_rewrites_each_row_a_few_times() {
        // 2 batches/s for a day, a round every 20 batches, each batch file 100 kB, cap 16 MB,
        // then the closed day's packing to 128 MB.
        let (cap, target, batch, keep) = (16_000_000u64, 128_000_000u64, 100_000u64, 64);
        let mut files: Vec<DayFile> = Vec::new();
        let (mut written, mut next) = (0u64, 0i64);
        let mut most = 0;
        for _round in 0..(86_400 * 2 / 20) {
            for _ in 0..20 {
                files.push(f(&format!("f{next}"), batch, next));
                written += batch;
                next += 1;
            }
            let groups = plan(files.clone(), cap, keep);
            written += apply(&mut files, groups, &mut next);
            most = most.max(files.iter().filter(|f| f.bytes < cap / 2).count());
        }
        let data = 86_400 * 2 / 20 * 20 * batch;
        assert!(most <= keep + 20, "small files peaked at {most}");
        assert!(files.len() < 1_500, "{} files at the end of the day", files.len());
        let today = written as f64 / data as f64;
        assert!(today < 4.5, "each byte written {today:.1} times during the day");
        let groups = plan_closed(files.clone(), target);
        written += apply(&mut files, groups, &mut next);
        assert!(files.len() < 160, "{} files once the day is closed", files.len());
        assert!(plan_closed(files.clone(), target).is_empty(), "a closed day is finished in one round");
        let all = written as f64 / data as f64;
        assert!(all < 5.5, "each byte written {all:.1} times in all");
    }
}
