//! `orderlake rebuild`: rebuilds silver and/or gold from bronze alone, without Kafka, through the
//! same catch-up path a restarted run takes, so it ends in the state the streaming path would have.
//!
//! A rebuild first resets the layer: gold keeps its rows (recompute is idempotent and heals every
//! key touched since `--from-version`), its markers go back to just before that version (which
//! also makes the aggregates recompute from the order tables: their proof of equality names an
//! order-table version before the marker commit, see `lake::commits`); silver is
//! emptied (its ordering guard would otherwise keep whatever it holds), and gold with it, and so
//! are the dead letters of its topics (silver decodes bronze again, perhaps under new settings). The
//! batch log's marker is lowered first, so a crash during the reset never makes a half-reset lake
//! look complete. Then every stage below bronze catches up, 50 bronze versions per commit, each
//! with its markers: an interrupted rebuild continues with `--resume` (or any `run`, but for a
//! re-base, which only `--resume` finishes). A bronze
//! that cannot be replayed commit by commit (packed and vacuumed, or its log cleaned up) is
//! re-based first (`lake::rebase`), and its layers' markers set to the re-base's start.

use deltalake::kernel::Transaction;
use tracing::info;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::lake::schema::{self, TableSpec};
use std::collections::HashMap;

use crate::lake::{Lake, bronze, commit_with, dead_letter, mark, rebase, silver, version_of};
use crate::pipeline::{Pipeline, progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    /// Silver from the first bronze version, then gold
    Silver,
    /// Gold only, from --from-version
    Gold,
}

/// Lowers each app id to its version in `rel` with one commit without data (the rows stay).
async fn lower_markers(lake: &Lake, rel: &str, spec: &TableSpec, markers: &[(String, i64)]) -> Result<()> {
    let Some(t) = lake.open(rel).await? else { return Ok(()) };
    let txns = markers.iter().map(|(a, v)| Transaction::new(a, *v)).collect();
    let t = mark(t, spec, txns).await?;
    lake.keep(rel, &t);
    Ok(())
}

/// Empties `rel` (with `predicate`, of the rows it selects) and sets each app id to its version
/// ("nothing applied", or a re-base's start) in the same commit.
async fn empty_table(lake: &Lake, rel: &str, predicate: Option<String>, markers: &[(String, i64)]) -> Result<()> {
    let Some(t) = lake.open(rel).await? else { return Ok(()) };
    let txns = markers.iter().map(|(a, v)| Transaction::new(a, *v)).collect();
    let props = commit_with(txns);
    let delete = t.delete().with_commit_properties(props);
    let (t, metrics) = match predicate {
        Some(p) => delete.with_predicate(p).await?,
        None => delete.await?,
    };
    lake.keep(rel, &t);
    info!(table = rel, version = version_of(&t), rows = metrics.num_deleted_rows, "emptied for the rebuild");
    Ok(())
}

/// Resets `layer` to just before bronze version `from` for every topic, or to the start of its
/// re-base for a topic in `rebased` (the versions after it hold all of its rows).
async fn reset(lake: &Lake, s: &Settings, layer: Layer, from: i64, rebased: &HashMap<String, u64>) -> Result<()> {
    let topics = s.topics();
    let before = |t: &str| rebased.get(t).map_or(from - 1, |v| *v as i64);
    let ids = |f: fn(&str, &str) -> String| topics.iter().map(|t| (f(&s.group, t), before(t))).collect::<Vec<_>>();
    let batches = &schema::BATCH_LOG;
    lower_markers(lake, progress::batches_table(), batches, &ids(progress::batches_app_id)).await?;
    if layer == Layer::Silver {
        // Silver decodes bronze again, with today's code and settings: the dead letters of these
        // topics are listed afresh, so an event that decodes now leaves the list, and one that no
        // longer does joins it rather than vanish from silver without a trace.
        let listed = topics.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let dead_letters = dead_letter::table_name(&s.bronze_prefix);
        let dl_ids = ids(progress::dead_letters_app_id);
        empty_table(lake, &dead_letters, Some(format!("topic IN ({listed})")), &dl_ids).await?;
        for (n, _) in silver::TABLES {
            empty_table(lake, &format!("{}/{n}", s.silver_prefix), None, &ids(silver::app_id)).await?;
        }
        empty_table(lake, &format!("{}/{}", s.silver_prefix, silver::TOMBSTONES), None, &[]).await?;
    }
    for (n, spec) in crate::gold::TABLES {
        lower_markers(lake, &format!("{}/{n}", s.gold_prefix), spec, &ids(crate::gold::app_id)).await?;
    }
    info!(?layer, from_version = from, "layer reset; rebuilding from bronze");
    Ok(())
}

/// Rebuilds `layer` from bronze version `from` (silver always from the first), or with `resume`
/// only finishes an interrupted rebuild.
pub async fn run(settings: Settings, layer: Layer, from: i64, resume: bool) -> Result<String> {
    rebuild(settings, layer, from, resume, None).await
}

/// `orderlake scrub`: applies the PII rules of today to the values of every CDC topic that has
/// rules, as ingested before `before_us` (when the rules were turned on: masking and dropping
/// twice change nothing, hashing twice does), by re-basing its bronze with them, then rebuilds
/// silver and gold from it. The dead letters are listed afresh from the rewritten values.
pub async fn scrub(settings: Settings, before_us: i64) -> Result<String> {
    if !settings.cdc.as_ref().is_some_and(|c| c.tables.iter().any(|t| !t.pii.is_empty())) {
        return Err(Error::Config(
            "cdc.tables.<table>.pii: no CDC table has PII rules, so there is nothing to scrub (docs/security.md)"
                .into(),
        ));
    }
    let mut out = rebuild(settings, Layer::Silver, 0, false, Some(before_us)).await?;
    out.push_str(
        "Older versions of bronze and the dead letters keep the values until VACUUM removes their files: with no \
         reader running, `orderlake maintain` with maintenance.vacuum_retention_hours = 0 and \
         maintenance.allow_short_retention = true.\n",
    );
    Ok(out)
}

async fn rebuild(settings: Settings, layer: Layer, from: i64, resume: bool, scrub: Option<i64>) -> Result<String> {
    if layer == Layer::Silver && from > 0 {
        return Err(Error::Config(
            "--from-version: silver is rebuilt from the first bronze version (its ordering guard keeps newer rows); use --layer gold to start later".into(),
        ));
    }
    let mut settings = settings;
    // MongoDB is not part of a rebuild: gold recomputes to the same rows it already published.
    settings.mongodb_uri = None;
    let lake = Lake::new(&settings);
    lake.check().await?;
    let topics = settings.topics();
    // A re-base an earlier rebuild started and did not finish: this one finishes it, silver too.
    let mut rebased = rebase::unfinished(&lake, &settings.bronze_prefix, &settings.group, &topics).await?;
    if scrub.is_some() && !rebased.is_empty() {
        return Err(Error::Other(
            "scrub: an interrupted rebuild is re-basing bronze; finish it with `orderlake rebuild --resume` first"
                .into(),
        ));
    }
    let (layer, from) = if rebased.is_empty() { (layer, from) } else { (Layer::Silver, 0) };
    let mut versions = Vec::new();
    let mut unreadable = Vec::new();
    for t in &topics {
        let rel = bronze::table_name(&settings.bronze_prefix, t);
        let Some(b) = lake.open(&rel).await? else {
            return Err(Error::Other(format!("no bronze table for topic '{t}' under {}", settings.lake)));
        };
        // Before anything is emptied: a rebuild that cannot read its way back through bronze
        // would leave silver empty and every later run stuck at the same commit.
        let ruled = settings.cdc.as_ref().and_then(|c| c.table_for_topic(t)).is_some_and(|c| !c.pii.is_empty());
        if scrub.is_some() && ruled {
            info!(table = rel, "scrubbing: re-basing bronze with the PII rules");
            unreadable.push((t.clone(), rel, b));
        } else if !resume
            && !rebased.contains_key(t)
            && let Some(why) = bronze::history_gone(&b, u64::try_from(from - 1).ok()).await?
        {
            if layer != Layer::Silver {
                return Err(Error::Other(format!(
                    "rebuild: nothing changed, as it could not finish: {why}. `--layer silver` re-bases bronze first"
                )));
            }
            info!(table = rel, "bronze cannot be replayed commit by commit ({why}); re-basing it first");
            unreadable.push((t.clone(), rel, b));
        }
        versions.push(t.clone());
    }
    if !resume || !rebased.is_empty() {
        for (topic, rel, b) in unreadable {
            let (_, started) = rebase::start(&lake, &rel, b, &settings.group, &topic, scrub).await?;
            rebased.insert(topic, started);
        }
        reset(&lake, &settings, layer, from, &rebased).await?;
        for (topic, started) in &rebased {
            let rel = bronze::table_name(&settings.bronze_prefix, topic);
            let b = lake.open(&rel).await?.expect("bronze exists");
            // A scrub's time, recorded with its start, so that a resumed one redacts the rest.
            let before_us =
                lake.txn_version(&b, &rebase::scrub_app_id(&settings.group, topic)).await?.filter(|t| *t >= 0);
            let cdc = settings.cdc.as_ref();
            let with = cdc.zip(before_us).map(|(cdc, before_us)| rebase::Scrub { cdc, topic, before_us });
            let (_, n) = rebase::finish(&lake, &settings, b, topic, *started, with).await?;
            info!(table = rel, rows = n, "bronze re-based");
        }
    }
    let started = std::time::Instant::now();
    lake.settle_checkpoints(settings.shutdown_timeout).await;
    let prefix = settings.bronze_prefix.clone();
    let mut p = Pipeline::open_lake(settings).await?;
    p.catch_up().await?;
    p.settle_checkpoints().await;
    let mut upto = Vec::new();
    for t in versions {
        let b = lake.open(&bronze::table_name(&prefix, &t)).await?.map_or(0, |b| version_of(&b));
        upto.push(format!("{t}: bronze version {b}"));
    }
    Ok(format!("rebuilt up to {} in {:.1} s\n", upto.join(", "), started.elapsed().as_secs_f64()))
}
