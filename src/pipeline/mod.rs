//! The consume loop: read from Kafka, cut micro-batches (max records, max bytes, max latency, idle
//! flush), write each topic's batch to bronze with its offsets, then bring every downstream stage
//! up to that bronze version. `--once` records the end offsets at start and stops once they are
//! all in the lake.

pub mod progress;
pub mod retry;
pub mod shutdown;
pub mod stages;

use std::collections::HashMap;
use std::time::Duration;

use deltalake::DeltaTable;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::error::Result;
use crate::lake::{Lake, bronze, schema, version_of};
use crate::model::RawEvent;
use crate::sink::mongo::MongoSink;
use crate::source::kafka::{self, OrderConsumer, RebalanceLog, TopicPartition};
use progress::Progress;
use retry::Retry;
use stages::Stages;

/// Summary of a run, printed by `run --once`.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub events: u64,
    pub batches: u64,
}

struct TopicState {
    bronze: DeltaTable,
    progress: Progress,
}

/// Where each assigned partition stands: the next offset the lake expects.
#[derive(Default)]
struct Positions {
    /// `None`: bronze has nothing for the partition, read it from the beginning.
    expected: HashMap<TopicPartition, Option<i64>>,
    /// Partitions already repositioned since they were assigned.
    sought: std::collections::HashSet<TopicPartition>,
}

pub struct Pipeline {
    settings: Settings,
    lake: Lake,
    mongo: Option<MongoSink>,
    topics: HashMap<String, TopicState>,
    shutdown: shutdown::Shutdown,
}

impl Pipeline {
    /// Connects to everything and creates what is missing (topics, tables), failing fast with a
    /// clear message when a service is unreachable.
    pub async fn start(settings: Settings) -> Result<Pipeline> {
        let lake = Lake::new(&settings);
        lake.check().await?;
        kafka::ensure_topics(&settings, &settings.topics()).await?;
        let mongo = match &settings.mongodb_uri {
            Some(uri) => {
                Some(MongoSink::connect(uri, &settings.mongodb_database, &settings.group).await.map_err(|e| {
                    crate::error::Error::Config(format!(
                        "--mongodb-uri / ORDERLAKE_MONGODB_URI: cannot reach MongoDB: {e}"
                    ))
                })?)
            }
            None => {
                info!("MongoDB publishing is off (no --mongodb-uri / ORDERLAKE_MONGODB_URI)");
                None
            }
        };
        let mut topics = HashMap::new();
        for t in settings.topics() {
            let bronze = lake.open_or_create(&bronze::table_name(&settings.bronze_prefix, &t), &schema::BRONZE).await?;
            let progress = progress::load(&lake, &settings, &t, mongo.as_ref()).await?;
            topics.insert(t, TopicState { bronze, progress });
        }
        Ok(Pipeline { settings, lake, mongo, topics, shutdown: shutdown::Shutdown::on_signals() })
    }

    fn stages(&self) -> Stages<'_> {
        Stages { settings: &self.settings, lake: &self.lake, mongo: self.mongo.as_ref() }
    }

    /// Finishes whatever a previous run left between bronze and the last stage.
    pub async fn catch_up(&mut self) -> Result<()> {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for t in names {
            let mut st = self.topics.remove(&t).expect("topic state");
            let v = version_of(&st.bronze) as i64;
            let r = self.stages().advance(&t, &st.bronze, &mut st.progress, v, None).await;
            self.topics.insert(t, st);
            r?;
        }
        Ok(())
    }

    /// Writes the pending events of every topic to bronze and brings every stage up to date.
    /// Idempotent, so a failed flush can simply be retried: events bronze already holds (by the
    /// offsets in its `txn` actions, re-read before every append) are never appended twice.
    /// `pending` is emptied only on success.
    async fn flush(&mut self, consumer: &OrderConsumer, pending: &mut HashMap<String, Vec<RawEvent>>) -> Result<usize> {
        let mut n = 0;
        let mut next: HashMap<TopicPartition, i64> = HashMap::new();
        let topics: Vec<String> = pending.keys().cloned().collect();
        for topic in topics {
            let mut events = pending[&topic].clone();
            // A partition revoked and re-assigned mid-batch is read again from bronze's position.
            let mut seen = std::collections::HashSet::new();
            events.retain(|e| seen.insert((e.partition, e.offset)));
            crate::decode::redact_topic(&topic, &mut events, self.settings.cdc.as_ref());
            let mut st = self.topics.remove(&topic).expect("topic state");
            let res = async {
                st.bronze.update_state().await?;
                let parts: std::collections::BTreeSet<i32> = events.iter().map(|e| e.partition).collect();
                let stored = bronze::stored_offsets(&st.bronze, &self.settings.group, &topic, parts).await?;
                events.retain(|e| stored.get(&e.partition).is_none_or(|o| e.offset > *o));
                let v = if events.is_empty() {
                    version_of(&st.bronze) as i64
                } else {
                    let (table, v) =
                        bronze::append(st.bronze.clone(), &self.settings.group, &events, stages::now_us()).await?;
                    st.bronze = table;
                    v as i64
                };
                self.settings.checkpoint("after-bronze")?;
                let fresh = (!events.is_empty()).then_some(events.as_slice());
                self.stages().advance(&topic, &st.bronze, &mut st.progress, v, fresh).await
            }
            .await;
            self.topics.insert(topic.clone(), st);
            res?;
            for e in &pending[&topic] {
                let o = next.entry((e.topic.clone(), e.partition)).or_insert(0);
                *o = (*o).max(e.offset + 1);
            }
            n += pending.remove(&topic).map_or(0, |v| v.len());
        }
        if !next.is_empty() {
            kafka::commit_for_lag_tools(consumer, &next);
        }
        Ok(n)
    }

    /// [`Self::catch_up`], retried like a batch: another instance committing to the same tables,
    /// or a service that is briefly away, must not stop the run.
    async fn catch_up_retrying(&mut self, once: bool) -> Result<()> {
        let (mut retry, shutdown) = (Retry::new(&self.settings, once), self.shutdown.clone());
        loop {
            match self.catch_up().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    retry.after(e, "catching up failed", &shutdown).await?;
                    self.reload_progress().await;
                }
            }
        }
    }

    /// [`Self::flush`], retried on failures that can pass (unreachable broker, storage or MongoDB,
    /// commit conflicts); see [`Retry`] for the policy.
    async fn flush_retrying(
        &mut self,
        consumer: &OrderConsumer,
        pending: &mut HashMap<String, Vec<RawEvent>>,
        once: bool,
    ) -> Result<usize> {
        let (mut retry, shutdown) = (Retry::new(&self.settings, once), self.shutdown.clone());
        loop {
            match self.flush(consumer, pending).await {
                Ok(n) => {
                    if retry.attempt > 1 {
                        info!(attempts = retry.attempt, "batch committed after retrying: recovered");
                    }
                    return Ok(n);
                }
                Err(e) => {
                    retry.after(e, "batch failed", &shutdown).await?;
                    self.reload_progress().await;
                }
            }
        }
    }

    /// Re-reads every stage's progress from the tables (after a failure, or when other instances
    /// may have moved it). MongoDB's position and backoff are kept: MongoDB may be what failed.
    async fn reload_progress(&mut self) {
        for (topic, st) in self.topics.iter_mut() {
            match progress::load(&self.lake, &self.settings, topic, None).await {
                Ok(mut p) => {
                    p.mongo = st.progress.mongo;
                    p.mongo_retry = st.progress.mongo_retry;
                    st.progress = p;
                }
                Err(e) => {
                    warn!(topic, error = %crate::redact::redact(&e.to_string()), "could not re-read progress; keeping what is known")
                }
            }
        }
    }

    /// [`Self::expected_for`], retried while the lake is unreachable.
    async fn expected_for_retrying(&self, tp: &TopicPartition, once: bool) -> Result<Option<i64>> {
        let mut retry = Retry::new(&self.settings, once);
        loop {
            match self.expected_for(tp).await {
                Err(e) => retry.after(e, "cannot read the partition's position from bronze", &self.shutdown).await?,
                ok => return ok,
            }
        }
    }

    /// Loads the lake's position for a newly seen partition.
    async fn expected_for(&self, tp: &TopicPartition) -> Result<Option<i64>> {
        let st = &self.topics[&tp.0];
        let stored = bronze::stored_offsets(&st.bronze, &self.settings.group, &tp.0, [tp.1]).await?;
        Ok(stored.get(&tp.1).map(|o| o + 1))
    }

    /// Runs until stopped (ctrl-c), or with `once` until the end offsets seen at start are in the lake.
    pub async fn run(&mut self, once: bool) -> Result<RunSummary> {
        match self.run_inner(once).await {
            Err(crate::error::Error::Stopped) => {
                warn!("stopped while retrying: the batch in hand was not written; it is read again on the next start");
                Ok(RunSummary::default())
            }
            other => other,
        }
    }

    async fn run_inner(&mut self, once: bool) -> Result<RunSummary> {
        self.catch_up_retrying(once).await?;
        let (consumer, rebalances) = kafka::consumer(&self.settings)?;
        let mut targets: HashMap<TopicPartition, i64> = HashMap::new();
        if once {
            for t in self.settings.topics() {
                for (p, hi) in kafka::end_offsets(&consumer, &self.settings, &t)? {
                    targets.insert((t.clone(), p), hi);
                }
            }
            let total: i64 = targets.values().sum();
            info!(
                partitions = targets.len(),
                end_offsets_total = total,
                "run --once: consuming up to the end offsets seen at start"
            );
        }
        let res = self.consume(&consumer, &rebalances, once.then_some(&targets)).await;
        consumer.unsubscribe();
        res
    }

    async fn consume(
        &mut self,
        consumer: &OrderConsumer,
        rebalances: &RebalanceLog,
        targets: Option<&HashMap<TopicPartition, i64>>,
    ) -> Result<RunSummary> {
        let b = self.settings.batch.clone();
        let mut summary = RunSummary::default();
        let mut pos = Positions::default();
        let mut pending: HashMap<String, Vec<RawEvent>> = HashMap::new();
        let (mut pending_n, mut pending_bytes) = (0usize, 0usize);
        let mut deadline: Option<Instant> = None;
        let idle = Duration::from_millis(200).min(b.max_latency);
        let mut last_progress = Instant::now();
        let sd = self.shutdown.clone();
        let mut stop = std::pin::pin!(async move { sd.wait().await });
        let once = targets.is_some();
        loop {
            // A revoked partition's position is re-read from bronze if it comes back. Its pending events
            // stay: they are valid data, and if the new owner writes the same offsets first, the
            // per-partition `txn` conflict and the pre-append offset check keep bronze exactly once.
            // (Dropping them livelocks under frequent rebalances: no batch ever completes.)
            for tp in rebalances.take_revoked() {
                pos.expected.remove(&tp);
                pos.sought.remove(&tp);
            }
            let wait = deadline.map_or(idle, |d| d.saturating_duration_since(Instant::now()).min(idle));
            let msg = tokio::select! {
                m = tokio::time::timeout(wait, consumer.recv()) => m,
                signal = &mut stop => {
                    info!(signal, pending = pending_n, timeout_ms = self.settings.shutdown_timeout.as_millis() as u64,
                        "stopping: committing the batch in hand, then leaving the group");
                    let limit = self.settings.shutdown_timeout;
                    let flush = self.flush_retrying(consumer, &mut pending, once);
                    match tokio::time::timeout(limit, flush).await {
                        Ok(r) => summary.events += r? as u64,
                        Err(_) => warn!("shutdown timeout: the batch in hand was given up; it is read again on the next start"),
                    }
                    return Ok(summary);
                }
            };
            match msg {
                Ok(Ok(m)) => {
                    let tp = (m.topic().to_string(), m.partition());
                    if !pos.expected.contains_key(&tp) {
                        let e = self.expected_for_retrying(&tp, once).await?;
                        pos.expected.insert(tp.clone(), e);
                    }
                    let expected = pos.expected[&tp];
                    let off = m.offset();
                    if expected.is_some_and(|e| off < e) {
                        debug!(topic = %tp.0, partition = tp.1, offset = off, "skipping an offset already in bronze");
                        continue;
                    }
                    // The group's offset is not trusted: the first time a partition is read,
                    // reposition it to where the lake says it stands unless it is already there.
                    if !pos.sought.contains(&tp) && expected != Some(off) {
                        pos.sought.insert(tp.clone());
                        kafka::seek(consumer, &tp, expected)?;
                        continue;
                    }
                    pos.sought.insert(tp.clone());
                    pos.expected.insert(tp.clone(), Some(off + 1));
                    let ev = RawEvent {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        offset: off,
                        key: m.key().map(crate::model::value_text),
                        value: m.payload().map(crate::model::value_text),
                        timestamp_ms: m.timestamp().to_millis(),
                    };
                    pending_bytes += ev.size();
                    pending_n += 1;
                    pending.entry(tp.0).or_default().push(ev);
                    deadline.get_or_insert_with(|| Instant::now() + b.max_latency);
                }
                Ok(Err(e)) => warn!(error = %e, "kafka consumer error (retrying)"),
                Err(_) => {
                    // Idle: a MongoDB that was down may be back.
                    if self.topics.values().any(|t| t.progress.mongo_behind() && t.progress.mongo_due()) {
                        self.catch_up_retrying(once).await?;
                    }
                }
            }
            let due = deadline.is_some_and(|d| Instant::now() >= d);
            if pending_n > 0 && (pending_n >= b.max_records || pending_bytes >= b.max_bytes || due) {
                summary.events += self.flush_retrying(consumer, &mut pending, once).await? as u64;
                summary.batches += 1;
                (pending_n, pending_bytes, deadline) = (0, 0, None);
            }
            if let Some(targets) = targets {
                if pending_n == 0 && self.caught_up(consumer, &mut pos, targets).await? {
                    self.finish_mongo().await?;
                    return Ok(summary);
                }
                if last_progress.elapsed() >= Duration::from_secs(5) {
                    last_progress = Instant::now();
                    info!(events = summary.events, batches = summary.batches, "run --once progress");
                }
            }
        }
    }

    /// `--once` ends with MongoDB caught up, or fails saying so: a scheduled job must not report
    /// success while the documents lag the lake.
    async fn finish_mongo(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.settings.once_retry_limit;
        while self.topics.values().any(|t| t.progress.mongo_behind()) {
            if Instant::now() >= deadline {
                return Err(crate::error::Error::Other(
                    "the lake is complete but MongoDB publishing is behind (MongoDB unreachable); run again to publish"
                        .into(),
                ));
            }
            let wait = self.topics.values().filter_map(|t| t.progress.mongo_retry.map(|(at, _)| at)).max();
            if let Some(at) = wait {
                tokio::time::sleep_until(at.into()).await;
            }
            self.catch_up_retrying(true).await?;
        }
        Ok(())
    }

    /// True when every assigned partition has reached its end offset from the start of the run.
    async fn caught_up(
        &self,
        consumer: &OrderConsumer,
        pos: &mut Positions,
        targets: &HashMap<TopicPartition, i64>,
    ) -> Result<bool> {
        let assigned = kafka::assignment(consumer)?;
        if assigned.is_empty() {
            return Ok(false);
        }
        for tp in assigned {
            if !pos.expected.contains_key(&tp) {
                let e = self.expected_for_retrying(&tp, true).await?;
                pos.expected.insert(tp.clone(), e);
            }
            let target = targets.get(&tp).copied().unwrap_or(0);
            if pos.expected[&tp].unwrap_or(0) < target {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
