//! Re-basing bronze: making a table's live rows readable commit by commit again. Catching up from
//! bronze (and so `rebuild`) replays the files each commit added, but maintenance packs each
//! closed day into bigger files, VACUUM removes the originals a week later, and log cleanup
//! removes commits after 30 days. A silver rebuild of an older lake re-bases first: it rewrites
//! the files that were live when it started, a group of about a batch's rows per commit, each
//! commit removing the originals and adding the same rows as new data. The layers' markers are
//! set to the re-base's start, so the ordinary catch-up replays exactly those commits, a batch at
//! a time, as it replays any other.
//!
//! Bronze records `<group>/rebase/<topic>` → the version of its start while it runs, and
//! [`NOT_RUNNING`] when done. An interrupted re-base is finished by `rebuild --resume`: the files
//! live at its start that are still live are what is left. A `run` meanwhile is refused, as its
//! catch-up would miss the rows not yet re-based.

use std::collections::{BTreeSet, HashMap};

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::TryStreamExt;
use tracing::info;

use super::rewrite::conform;
use super::{Lake, mark, schema, version_of};
use crate::error::Result;

/// The marker value of a re-base that is not running (finished, or never started).
pub const NOT_RUNNING: i64 = -1;

pub fn app_id(group: &str, topic: &str) -> String {
    format!("{group}/rebase/{topic}")
}

/// While a scrub's re-base runs: the time (µs) before which values are rewritten with the PII
/// rules, so that `--resume` applies them to the rest too.
pub fn scrub_app_id(group: &str, topic: &str) -> String {
    format!("{group}/scrub/{topic}")
}

/// What a scrub does to each re-based row: the topic's PII rules, on the values ingested before
/// `before_us` (see `orderlake scrub`).
#[derive(Clone, Copy)]
pub struct Scrub<'a> {
    pub cdc: &'a crate::cdc_config::CdcSettings,
    pub topic: &'a str,
    pub before_us: i64,
}

impl Scrub<'_> {
    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        use arrow::array::{Array, AsArray, StringArray};
        use arrow::datatypes::TimestampMicrosecondType;
        let schema = batch.schema();
        let (Ok(vi), Ok(ti)) = (schema.index_of("value"), schema.index_of("ingested_at")) else { return Ok(batch) };
        let values = batch.column(vi).as_string::<i32>();
        let times = batch.column(ti).as_primitive::<TimestampMicrosecondType>();
        let mut events: Vec<crate::model::RawEvent> = (0..batch.num_rows())
            .map(|i| crate::model::RawEvent {
                topic: self.topic.to_string(),
                partition: 0,
                offset: i as i64,
                key: None,
                value: (values.is_valid(i) && times.value(i) < self.before_us).then(|| values.value(i).to_string()),
                timestamp_ms: None,
            })
            .collect();
        crate::decode::redact_topic(self.topic, &mut events, Some(self.cdc));
        let new: StringArray = (0..batch.num_rows())
            .map(|i| match &events[i].value {
                Some(v) => Some(v.clone()),
                None => values.is_valid(i).then(|| values.value(i).to_string()),
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[vi] = std::sync::Arc::new(new);
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// The version a re-base of `table` by `group` started at, while it has not finished.
pub async fn running(lake: &Lake, table: &DeltaTable, group: &str, topic: &str) -> Result<Option<u64>> {
    Ok(lake.txn_version(table, &app_id(group, topic)).await?.and_then(|v| u64::try_from(v).ok()))
}

/// Records that a re-base starts; returns the table and the version of that commit (the start).
pub async fn start(
    lake: &Lake,
    rel: &str,
    table: DeltaTable,
    group: &str,
    topic: &str,
    scrub_before_us: Option<i64>,
) -> Result<(DeltaTable, u64)> {
    let at = version_of(&table) + 1;
    let mut txns = vec![Transaction::new(app_id(group, topic), at as i64)];
    txns.extend(scrub_before_us.map(|t| Transaction::new(scrub_app_id(group, topic), t)));
    let table = mark(table, &schema::BRONZE, txns).await?;
    lake.keep(rel, &table);
    let v = version_of(&table);
    Ok((table, v))
}

/// Rewrites the files live at version `started` that are still live, about a batch of rows
/// (`batch.max_records`) per commit (a bigger file alone), with `scrub`'s rules when given, then records the re-base of
/// `topic` by `group` as finished.
/// Returns the table and the rows rewritten. A packed file makes one commit of its rows, which
/// the catch-up reads at once: no more than the 50 batches a catch-up step may read anyway.
pub async fn finish(
    lake: &Lake,
    settings: &crate::config::Settings,
    table: DeltaTable,
    topic: &str,
    started: u64,
    scrub: Option<Scrub<'_>>,
) -> Result<(DeltaTable, u64)> {
    let (group, rows, fail_at) = (&settings.group, settings.batch.max_records as u64, settings.fail_at.as_deref());
    let rel = &super::bronze::table_name(&settings.bronze_prefix, topic);
    let mut then = table.clone();
    then.load_version(started).await?;
    let originals: BTreeSet<String> = then.snapshot()?.log_data().iter().map(|f| f.path().to_string()).collect();
    let mut left: Vec<(String, u64, i64)> = table
        .snapshot()?
        .log_data()
        .iter()
        .filter(|f| originals.contains(f.path().as_ref()))
        .map(|f| (f.path().to_string(), f.num_records().unwrap_or(0) as u64, f.modification_time()))
        .collect();
    // Oldest first: the commits replay in about the order the rows first arrived.
    left.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut in_group = u64::MAX;
    for (path, n, _) in left {
        if in_group.saturating_add(n) > rows.max(1) {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += n;
        groups.last_mut().expect("a group").push(path);
    }
    let (mut table, mut rewritten) = (table, 0u64);
    let total = groups.len();
    for (i, paths) in groups.into_iter().enumerate() {
        let (t, n) = rewrite(table, &paths, scrub).await?;
        lake.keep(rel, &t);
        table = t;
        rewritten += n;
        info!(table = rel, commit = i + 1, of = total, rows = rewritten, "re-basing bronze");
        if i + 1 < total {
            // Test-only: a crash between two re-base commits.
            crate::config::fault_point(fail_at, "mid-rebase")?;
        }
    }
    let mut done = vec![Transaction::new(app_id(group, topic), NOT_RUNNING)];
    done.extend(scrub.map(|_| Transaction::new(scrub_app_id(group, topic), NOT_RUNNING)));
    let table = mark(table, &schema::BRONZE, done).await?;
    lake.keep(rel, &table);
    Ok((table, rewritten))
}

/// One commit: the rows of `paths` in new files, added as data, and `paths` removed.
async fn rewrite(table: DeltaTable, paths: &[String], scrub: Option<Scrub<'_>>) -> Result<(DeltaTable, u64)> {
    let ctx = super::read::session();
    table.update_datafusion_session(&ctx.state())?;
    let mut writer = RecordBatchWriter::for_table(&table)?.with_writer_properties(super::splice::writer_properties());
    let schema = writer.arrow_schema();
    let provider = table.table_provider().with_file_paths(paths.iter().cloned()).await?;
    let mut stream = ctx.read_table(provider)?.execute_stream().await?;
    let mut rows = 0u64;
    while let Some(b) = stream.try_next().await? {
        rows += b.num_rows() as u64;
        let b = conform(&b, &schema)?;
        writer
            .write(match scrub {
                Some(s) => s.apply(b)?,
                None => b,
            })
            .await?;
    }
    // Added as data, unlike a compaction's rewrite: the catch-up reads exactly these commits.
    let adds: Vec<Action> = writer.flush().await?.into_iter().map(Action::Add).collect();
    let op = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: Some("orderlake re-base: the same rows, readable commit by commit".into()),
    };
    let gone: BTreeSet<String> = paths.iter().cloned().collect();
    let (table, _) = super::compact::commit_replacing(table, adds, &gone, true, op).await?;
    Ok((table, rows))
}

/// Topics of `topics` whose re-base by `group` has started and not finished, by start version.
pub async fn unfinished(
    lake: &Lake,
    bronze_prefix: &str,
    group: &str,
    topics: &[String],
) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for t in topics {
        if let Some(table) = lake.open(&super::bronze::table_name(bronze_prefix, t)).await?
            && let Some(v) = running(lake, &table, group, t).await?
        {
            out.insert(t.clone(), v);
        }
    }
    Ok(out)
}
