//! How far each stage of one topic has got, in bronze versions, read from the `txn` actions of
//! the tables themselves (and MongoDB's progress document). A stage is complete up to the larger
//! of its own marker and the batch log's, because layers are always applied in order.

use std::collections::HashMap;

use crate::config::Settings;
use crate::error::Result;
use crate::lake::{Lake, dead_letter};
use crate::sink::mongo::MongoSink;
use crate::{gold, lake::silver};

/// `-1` means "nothing applied yet".
pub const NONE: i64 = -1;

pub fn batches_table() -> &'static str {
    "_orderlake/batches"
}

pub fn batches_app_id(group: &str, topic: &str) -> String {
    format!("{group}/batches/{topic}")
}

pub fn dead_letters_app_id(group: &str, topic: &str) -> String {
    format!("{group}/dead_letters/{topic}")
}

/// A MongoDB publish running in the background while the lake works on the next batch. Until it
/// is settled, MongoDB's confirmed position (`Progress::mongo`) does not move: a crash loses only
/// the publish, which the next start redoes from bronze.
pub struct InFlight {
    /// The bronze version MongoDB stands at once this publish (and its progress write) succeeds.
    pub upto: i64,
    pub task: tokio::task::JoinHandle<Result<super::publish::Published>>,
    /// Set when the next batch is ready and waits for this publish: its aggregates may then ride
    /// with the next publish (`super::publish`).
    pub next_waiting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// MongoDB's stored position while this publish runs: where `Progress::mongo` goes back to
    /// if it is lost (it may carry aggregates of batches before it).
    pub back_to: i64,
    /// When it was handed over (it starts once the publishes queued before it are done).
    pub handed_over: std::time::Instant,
    /// How far it has got, for the batch loop (`super::pace`).
    pub watch: std::sync::Arc<super::pace::Watch>,
    /// Set when it was handed over while the batch held the line: waiting for it means opening
    /// this first (see `sink::queue`).
    pub gate: Option<crate::sink::queue::Gate>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("upto", &self.upto).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct Progress {
    /// Effective applied version per lake stage: `dead_letters`, `silver/<t>`, `gold/<t>`.
    pub lake: HashMap<String, i64>,
    /// Every lake layer is complete up to here (the batch log's marker).
    pub lake_done: i64,
    /// MongoDB is confirmed up to here; `None` when publishing is off.
    pub mongo: Option<i64>,
    /// While MongoDB is unreachable: when to try publishing again, and how long to wait after that.
    pub mongo_retry: Option<(std::time::Instant, std::time::Duration)>,
    /// The publish in flight, if any.
    pub publishing: Option<InFlight>,
    /// Aggregates the last publish left for the next one, and MongoDB's stored position (which
    /// is behind `mongo` until they are in).
    pub carried: Option<(super::publish::Carried, i64)>,
    /// The aggregates and batch log of the last batch, if still being written.
    pub tail: Option<super::tail::InFlightTail>,
    /// When the batch being worked on was cut (for [`super::pace::Pace`]).
    pub cut_at: Option<std::time::Instant>,
    /// This topic's recent lake and publish timings.
    pub pace: super::pace::Pace,
}

impl Progress {
    /// The oldest bronze version some stage still lacks (exclusive lower bound of catch-up).
    pub fn lowest(&self) -> i64 {
        let lake = self.lake.values().copied().min().unwrap_or(NONE).min(self.lake_done.max(NONE));
        match self.mongo_planned() {
            Some(m) if self.mongo_due() => lake.min(m),
            _ => lake,
        }
    }

    /// Where MongoDB stands once the publish in flight succeeds (work after it can be planned).
    pub fn mongo_planned(&self) -> Option<i64> {
        self.publishing.as_ref().map(|f| f.upto).or(self.mongo)
    }

    /// A publish that will not complete (failed, or dropped with its batch), or aggregates left
    /// for a publish that will not come: MongoDB is where its stored position says, so the next
    /// catch-up republishes what was only in memory.
    pub fn publish_lost(&mut self, back_to: i64) {
        self.mongo = self.mongo.map(|m| m.min(back_to));
    }

    /// Whether MongoDB should be written now (not waiting out a backoff after a failure).
    pub fn mongo_due(&self) -> bool {
        self.mongo_retry.is_none_or(|(at, _)| std::time::Instant::now() >= at)
    }

    /// Whether MongoDB is behind the lake (counting the publish in flight as done).
    pub fn mongo_behind(&self) -> bool {
        self.mongo_planned().is_some_and(|m| m < self.lake_done)
    }

    pub fn get(&self, stage: &str) -> i64 {
        self.lake.get(stage).copied().unwrap_or(NONE)
    }

    /// Effective applied versions of the gold tables, keyed by bare table name.
    pub fn gold(&self) -> HashMap<String, i64> {
        gold::TABLES.iter().map(|(n, _)| (n.to_string(), self.get(&format!("gold/{n}")))).collect()
    }

    pub fn mark_lake_done(&mut self, v: i64) {
        for s in self.lake.values_mut() {
            *s = (*s).max(v);
        }
        self.lake_done = self.lake_done.max(v);
    }
}

pub fn lake_stages() -> Vec<String> {
    let mut v = vec!["dead_letters".to_string()];
    v.extend(silver::TABLES.iter().map(|(n, _)| format!("silver/{n}")));
    v.extend(gold::TABLES.iter().map(|(n, _)| format!("gold/{n}")));
    v
}

async fn marker(lake: &Lake, rel: &str, app_id: &str) -> Result<i64> {
    Ok(match lake.open(rel).await? {
        Some(t) => lake.txn_version(&t, app_id).await?.unwrap_or(NONE),
        None => NONE,
    })
}

pub async fn load(lake: &Lake, s: &Settings, topic: &str, mongo: Option<&MongoSink>) -> Result<Progress> {
    let done = marker(lake, batches_table(), &batches_app_id(&s.group, topic)).await?;
    let mut p = Progress { lake_done: done, ..Default::default() };
    let dl = marker(lake, &dead_letter::table_name(&s.bronze_prefix), &dead_letters_app_id(&s.group, topic)).await?;
    p.lake.insert("dead_letters".into(), dl.max(done));
    for (n, _) in silver::TABLES {
        let v = marker(lake, &format!("{}/{n}", s.silver_prefix), &silver::app_id(&s.group, topic)).await?;
        p.lake.insert(format!("silver/{n}"), v.max(done));
    }
    for (n, _) in gold::TABLES {
        let v = marker(lake, &format!("{}/{n}", s.gold_prefix), &gold::app_id(&s.group, topic)).await?;
        p.lake.insert(format!("gold/{n}"), v.max(done));
    }
    if let Some(m) = mongo {
        p.mongo = Some(m.progress(topic).await?.unwrap_or(NONE));
    }
    Ok(p)
}
