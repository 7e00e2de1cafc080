//! The consume loop: read from Kafka, cut micro-batches (max records, max bytes, max latency, idle
//! flush), write each topic's batch to bronze with its offsets, then bring every downstream stage
//! up to that bronze version. `--once` records the end offsets at start and stops once they are
//! all in the lake.

mod eta;
mod pace;
mod positions;
pub mod progress;
pub mod publish;
pub mod retry;
pub mod shutdown;
pub mod stages;
pub mod tail;

use std::collections::HashMap;
use std::time::Duration;

use deltalake::DeltaTable;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::error::Result;
use crate::lake::{Lake, bronze, schema, version_of};
use crate::model::RawEvent;
use crate::sink::mongo::MongoSink;
use crate::source::feed::Feed;
use crate::source::kafka::{self, OrderConsumer, TopicPartition};
use positions::Positions;
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

pub struct Pipeline {
    settings: Settings,
    lake: Lake,
    mongo: Option<std::sync::Arc<MongoSink>>,
    topics: HashMap<String, TopicState>,
    shutdown: shutdown::Shutdown,
    maintenance: crate::maintain::Rounds,
    walks: std::sync::Arc<crate::gold::republish::Walks>,
}

/// A bronze table belongs to the consumer group whose offsets it records: they are where that
/// group reads on. Another group has none there, so it would read the topic again from its start
/// into the same table and land every event twice (silver keys a sales line by its Kafka
/// position, so twice there too). Refused at start, naming the group that wrote it.
async fn refuse_another_groups_bronze(settings: &Settings, lake: &Lake) -> Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = kafka::base_config(settings).create()?;
    for topic in settings.topics() {
        let rel = bronze::table_name(&settings.bronze_prefix, &topic);
        let Some(table) = lake.open(&rel).await? else { continue };
        if table.snapshot()?.log_data().num_files() == 0 {
            continue;
        }
        let parts = kafka::partitions(&consumer, settings, &topic)?;
        if !bronze::stored_offsets(lake, &table, &settings.group, &topic, parts).await?.is_empty() {
            continue;
        }
        let writers = bronze::writers(&table, &topic).await?;
        let (by, fix) = match writers.iter().next() {
            Some(g) if writers.len() == 1 => (format!("group '{g}'"), format!("run with --group {g}")),
            Some(_) => {
                let all = writers.iter().map(|g| format!("'{g}'")).collect::<Vec<_>>().join(", ");
                (format!("groups {all}"), "run with the group that owns it".to_string())
            }
            None => ("another group".to_string(), "run with the group that wrote it".to_string()),
        };
        let group = &settings.group;
        return Err(crate::error::Error::Config(format!(
            "--group / ORDERLAKE_GROUP: {rel} in {} holds events of '{topic}' that {by} consumed, none of group              '{group}', which would read the topic again from its start and land every event twice; {fix}, or give              group '{group}' a lake (or tables.bronze folder) of its own",
            settings.lake
        )));
    }
    Ok(())
}

impl Pipeline {
    /// Connects to everything and creates what is missing (topics, tables), failing fast with a
    /// clear message when a service is unreachable.
    pub async fn start(settings: Settings) -> Result<Pipeline> {
        let lake = Lake::new(&settings);
        lake.check().await?;
        kafka::ensure_topics(&settings, &settings.topics()).await?;
        refuse_another_groups_bronze(&settings, &lake).await?;
        let topics = settings.topics();
        let rebasing =
            crate::lake::rebase::unfinished(&lake, &settings.bronze_prefix, &settings.group, &topics).await?;
        if let Some(topic) = rebasing.keys().next() {
            return Err(crate::error::Error::Other(format!(
                "{}: an interrupted `orderlake rebuild` is re-basing it, and a run now would miss the rows it has not \
                 re-based yet; finish it with `orderlake rebuild --resume`",
                bronze::table_name(&settings.bronze_prefix, topic)
            )));
        }
        let mongo = match &settings.mongodb_uri {
            Some(uri) => Some(
                MongoSink::connect(uri, &settings.mongodb_database, &settings.group)
                    .await
                    .map(std::sync::Arc::new)
                    .map_err(|e| {
                        crate::error::Error::Config(format!(
                            "--mongodb-uri / ORDERLAKE_MONGODB_URI: cannot reach MongoDB: {e}"
                        ))
                    })?,
            ),
            None => {
                info!("MongoDB publishing is off (no --mongodb-uri / ORDERLAKE_MONGODB_URI)");
                None
            }
        };
        Self::with(settings, lake, mongo).await
    }

    /// The pipeline over the lake alone, without Kafka or MongoDB: for `rebuild`, which only
    /// catches the layers up from bronze.
    pub async fn open_lake(settings: Settings) -> Result<Pipeline> {
        let lake = Lake::new(&settings);
        lake.check().await?;
        Self::with(settings, lake, None).await
    }

    async fn with(settings: Settings, lake: Lake, mongo: Option<std::sync::Arc<MongoSink>>) -> Result<Pipeline> {
        let mut topics = HashMap::new();
        for t in settings.topics() {
            let bronze = lake.open_or_create(&bronze::table_name(&settings.bronze_prefix, &t), &schema::BRONZE).await?;
            let progress = progress::load(&lake, &settings, &t, mongo.as_deref()).await?;
            topics.insert(t, TopicState { bronze, progress });
        }
        let shutdown = shutdown::Shutdown::on_signals();
        let (maintenance, walks) = Default::default();
        Ok(Pipeline { settings, lake, mongo, topics, shutdown, maintenance, walks })
    }

    fn stages(&self) -> Stages<'_> {
        Stages { settings: &self.settings, lake: &self.lake, mongo: self.mongo.as_ref(), walks: &self.walks }
    }

    /// Finishes whatever a previous run left between bronze and the last stage.
    pub async fn catch_up(&mut self) -> Result<()> {
        if self.settings.bronze_only {
            return Ok(());
        }
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for t in names {
            let mut st = self.topics.remove(&t).expect("topic state");
            let v = version_of(&st.bronze) as i64;
            let r = match self.settle_tails().await {
                Ok(()) => self.stages().advance(&t, &st.bronze, &mut st.progress, v, None).await,
                Err(e) => Err(e),
            };
            self.topics.insert(t, st);
            r?;
        }
        // Done means written: the last aggregates and batch log too.
        self.settle_tails().await
    }

    /// Writes the pending events of every topic to bronze and brings every stage up to date.
    /// Idempotent, so a failed flush can simply be retried: events bronze already holds (by the
    /// offsets in its `txn` actions, re-read before every append) are never appended twice.
    /// `pending` is emptied only on success.
    async fn flush(&mut self, consumer: &OrderConsumer, pending: &mut HashMap<String, Vec<RawEvent>>) -> Result<usize> {
        let mut n = 0;
        let mut next: HashMap<TopicPartition, i64> = HashMap::new();
        // In a fixed order, so that a batch over several topics runs the same way every time.
        let mut topics: Vec<String> = pending.keys().cloned().collect();
        topics.sort();
        // The topics' publishes start together once all are in line, so each leaves out the
        // orders a later one writes (CDC: an order and its items); dropped on return, error or not.
        let _hold = self.mongo.as_ref().filter(|_| topics.len() > 1).map(|m| m.hold_publishes());
        for topic in topics {
            let mut events = pending[&topic].clone();
            // A partition revoked and re-assigned mid-batch is read again from bronze's position.
            let mut seen = std::collections::HashSet::new();
            events.retain(|e| seen.insert((e.partition, e.offset)));
            crate::decode::redact_topic(&topic, &mut events, self.settings.cdc.as_ref());
            let mut st = self.topics.remove(&topic).expect("topic state");
            let others = self.settle_tails().await;
            let res = async {
                others?;
                // Another instance may have appended since (a rebalance): the stored offsets must be current.
                st.bronze = crate::lake::refresh(st.bronze.clone()).await?;
                let parts: std::collections::BTreeSet<i32> = events.iter().map(|e| e.partition).collect();
                let stored =
                    bronze::stored_offsets(&self.lake, &st.bronze, &self.settings.group, &topic, parts).await?;
                events.retain(|e| stored.get(&e.partition).is_none_or(|o| e.offset > *o));
                let v = if events.is_empty() {
                    version_of(&st.bronze) as i64
                } else {
                    let (table, v) =
                        bronze::append(st.bronze.clone(), &self.settings.group, &events, stages::now_us()).await?;
                    self.lake.keep(&bronze::table_name(&self.settings.bronze_prefix, &topic), &table);
                    st.bronze = table;
                    v as i64
                };
                self.settings.checkpoint("after-bronze")?;
                if self.settings.bronze_only {
                    return Ok(());
                }
                let fresh = (!events.is_empty()).then_some(events.as_slice());
                self.stages().advance(&topic, &st.bronze, &mut st.progress, v, fresh).await
            }
            .await;
            st.progress.cut_at = None;
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
            for ((t, p), o) in &next {
                // The high watermark librdkafka cached from its last fetch: no broker round trip.
                if let Some(hi) = kafka::cached_high_watermark(consumer, t, *p) {
                    crate::metrics::global().lag(t, *p, hi - o);
                }
            }
        }
        Ok(n)
    }

    /// Waits for the aggregates the topics in `self.topics` left writing in the background. The
    /// gold tables are shared by every topic, so one topic's batch must not write gold beside
    /// another topic's aggregates (the topic being worked on is taken out of `self.topics`, so its
    /// own aggregates still overlap its next batch's bronze and silver).
    async fn settle_tails(&mut self) -> Result<()> {
        for st in self.topics.values_mut() {
            tail::settle(&mut st.progress, true).await?;
        }
        Ok(())
    }

    /// [`Self::catch_up`], retried like a batch: another instance committing to the same tables,
    /// or a service that is briefly away, must not stop the run.
    async fn catch_up_retrying(&mut self, once: bool) -> Result<()> {
        let (mut retry, shutdown) = (Retry::new(&self.settings, once), self.shutdown.clone());
        loop {
            match self.catch_up().await {
                Ok(()) => {
                    if retry.attempt > 1 {
                        info!(attempts = retry.attempt, "caught up after retrying: recovered");
                    }
                    return Ok(());
                }
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
        let started = Instant::now();
        let newest_kafka_ms = pending.values().flatten().filter_map(|e| e.timestamp_ms).max();
        if tracing::enabled!(tracing::Level::DEBUG) {
            let oldest_kafka_ms = pending.values().flatten().filter_map(|e| e.timestamp_ms).min();
            let now_ms = chrono::Utc::now().timestamp_millis();
            tracing::debug!(
                oldest_lag_ms = oldest_kafka_ms.map(|t| now_ms - t),
                newest_lag_ms = newest_kafka_ms.map(|t| now_ms - t),
                "batch starts"
            );
        }
        let limit = self.settings.shutdown_timeout;
        loop {
            // A stop request during an attempt leaves it `shutdown_timeout` to finish; past that it
            // is dropped like a crash would drop it: nothing is marked done before it is committed.
            let attempt = {
                let mut attempt = std::pin::pin!(self.flush(consumer, pending));
                tokio::select! {
                    r = &mut attempt => r,
                    _ = shutdown.wait() => match tokio::time::timeout(limit, &mut attempt).await {
                        Ok(r) => r,
                        Err(_) => return Err(crate::error::Error::Stopped),
                    },
                }
            };
            match attempt {
                Ok(n) => {
                    crate::metrics::global().batch(n as u64, started.elapsed(), newest_kafka_ms);
                    if retry.attempt > 1 {
                        info!(attempts = retry.attempt, "batch committed after retrying: recovered");
                    }
                    return Ok(n);
                }
                Err(e) => {
                    crate::metrics::global().retry(e.is_commit_conflict());
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
            // A tail still writing would move markers after they are read; its outcome is in the
            // tables either way (and a failed one has dropped its publish).
            if let Err(e) = tail::settle(&mut st.progress, true).await {
                debug!(topic, error = %crate::redact::redact(&e.to_string()), "the last batch's aggregates failed too");
            }
            match progress::load(&self.lake, &self.settings, topic, None).await {
                Ok(mut p) => {
                    if let Some((_, back_to)) = st.progress.carried.take() {
                        st.progress.publish_lost(back_to);
                    }
                    p.mongo = st.progress.mongo;
                    p.mongo_retry = st.progress.mongo_retry;
                    p.publishing = st.progress.publishing.take();
                    p.pace = st.progress.pace;
                    st.progress = p;
                }
                Err(e) => {
                    warn!(topic, error = %crate::redact::redact(&e.to_string()), "could not re-read progress; keeping what is known")
                }
            }
        }
    }

    /// Events between bronze's stored position and the end offsets of a `--once` run.
    async fn events_to_do(&self, targets: &HashMap<TopicPartition, i64>) -> Result<u64> {
        let mut n = 0;
        for (tp, end) in targets {
            let next = self.expected_for_retrying(tp, true).await?.unwrap_or(0);
            n += (end - next).max(0) as u64;
        }
        Ok(n)
    }

    /// Runs until stopped (ctrl-c), or with `once` until the end offsets seen at start are in the lake.
    pub async fn run(&mut self, once: bool) -> Result<RunSummary> {
        let r = match self.run_inner(once).await {
            Err(crate::error::Error::Stopped) => {
                warn!("stopped while retrying: the batch in hand was not written; it is read again on the next start");
                Ok(RunSummary::default())
            }
            other => other,
        };
        self.settle_checkpoints().await;
        r
    }

    /// Closes the MongoDB client cleanly (see [`MongoSink::close`]): the last use of the pipeline.
    pub async fn close(self) {
        if let Some(m) = &self.mongo {
            m.close().await;
        }
    }

    /// Lets the checkpoints queued by this run's commits be written before the process ends.
    pub async fn settle_checkpoints(&self) {
        if !self.lake.settle_checkpoints(self.settings.shutdown_timeout).await {
            warn!("some table checkpoints were not written in time; readers replay a few more commits until the next");
        }
    }

    async fn run_inner(&mut self, once: bool) -> Result<RunSummary> {
        self.catch_up_retrying(once).await?;
        self.maintenance.resume(&self.lake).await;
        let (consumer, epochs) = kafka::consumer(&self.settings)?;
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
        // Alignment in time matters where topics meet, in gold (an order and its items); one
        // topic's partitions, and bronze tables, are independent of each other.
        let aligned = self.settings.topics().len() > 1 && !self.settings.bronze_only;
        let align = aligned.then_some(self.settings.batch.align_topics);
        let mut feed = Feed::start(consumer, epochs, self.settings.batch.max_in_flight_bytes, align);
        let res = self.consume(&mut feed, once.then_some(&targets)).await;
        feed.close().await;
        res
    }

    async fn consume(&mut self, feed: &mut Feed, targets: Option<&HashMap<TopicPartition, i64>>) -> Result<RunSummary> {
        let b = self.settings.batch.clone();
        let mut summary = RunSummary::default();
        let mut pos = Positions::new();
        let mut pending: HashMap<String, Vec<RawEvent>> = HashMap::new();
        let (mut pending_n, mut pending_bytes) = (0usize, 0usize);
        let mut deadline: Option<Instant> = None;
        // The batch in hand waited past its deadline for MongoDB (`pace`).
        let mut held = false;
        let idle = Duration::from_millis(200).min(b.max_latency);
        let mut eta = match targets {
            Some(t) => Some(eta::Eta::new(self.events_to_do(t).await?)),
            None => None,
        };
        if let Some(e) = &eta {
            info!(events = e.to_do(), "run --once: events between the lake's position and the end offsets");
        }
        let sd = self.shutdown.clone();
        let mut stop = std::pin::pin!(async move { sd.wait().await });
        let once = targets.is_some();
        crate::metrics::global().set_ready(true);
        loop {
            let cut_at = deadline.map(|d| self.cut_time(&pending, d));
            let wait = cut_at.map_or(idle, |d| d.saturating_duration_since(Instant::now()).min(idle));
            let fed = tokio::select! {
                m = feed.next(wait) => m,
                signal = &mut stop => {
                    crate::metrics::global().set_ready(false);
                    info!(signal, pending = pending_n, timeout_ms = self.settings.shutdown_timeout.as_millis() as u64,
                        "stopping: committing the batch in hand, then leaving the group");
                    let limit = self.settings.shutdown_timeout;
                    let flush_and_publish = async {
                        let n = self.flush_retrying(feed.consumer(), &mut pending, once).await?;
                        self.catch_up_retrying(once).await?;
                        self.settle_publishes(true).await?;
                        Ok::<_, crate::error::Error>(n)
                    };
                    match tokio::time::timeout(limit, flush_and_publish).await {
                        Ok(r) => summary.events += r? as u64,
                        Err(_) => warn!("shutdown timeout: the batch in hand was given up; it is read again on the next start"),
                    }
                    return Ok(summary);
                }
            };
            // A due batch first takes what the poll loop already holds (up to the size limits),
            // so a backlog goes out in one batch rather than one event at a time.
            let drained = fed.is_none();
            match fed {
                Some(fed) => {
                    let (size, read_at) = (fed.event.size(), fed.read_at);
                    match self.accept(feed, &mut pos, fed, once).await? {
                        Some(ev) => {
                            pending_bytes += size;
                            pending_n += 1;
                            pending.entry(ev.topic.clone()).or_default().push(ev);
                            deadline.get_or_insert(read_at + b.max_latency);
                        }
                        None => feed.release(size),
                    }
                }
                None => {
                    // The liveness probe's heartbeat: once per idle wait and per batch, not per event.
                    crate::metrics::global().tick();
                    // Idle: collect finished publishes and aggregates; a MongoDB that was down
                    // may be back; layers a failed batch left behind bronze are brought up.
                    self.settle_publishes(false).await?;
                    let behind = |t: &TopicState| {
                        (t.progress.mongo_behind() && t.progress.mongo_due())
                            || t.progress.lowest() < version_of(&t.bronze) as i64
                    };
                    // Idle time is free: a round under way goes on without waiting for events
                    // (after the catch-up, like between batches).
                    let step = pending_n == 0 && self.maintenance.busy();
                    if step || (!self.settings.bronze_only && self.topics.values().any(behind)) {
                        self.catch_up_retrying(once).await?;
                    }
                    if step {
                        self.maintenance.step(&self.lake, &self.settings, once).await;
                    }
                }
            }
            let now = Instant::now();
            let due = deadline.is_some_and(|d| now >= self.cut_time(&pending, d));
            held |= deadline.is_some_and(|d| now >= d) && !due;
            if pending_n > 0 && (pending_n >= b.max_records || pending_bytes >= b.max_bytes || (due && drained)) {
                for (t, st) in self.topics.iter_mut().filter(|(t, _)| pending.contains_key(*t)) {
                    st.progress.cut_at = Some(now.into_std());
                    if held {
                        pace::next_on_its_way(&st.progress);
                        crate::metrics::global().batch_held(t);
                    }
                }
                summary.events += self.flush_retrying(feed.consumer(), &mut pending, once).await? as u64;
                summary.batches += 1;
                crate::metrics::global().tick();
                self.maintenance.batch_committed(&self.settings);
                if self.maintenance.busy() {
                    // Between batches, so this instance never races its own writes.
                    self.catch_up_retrying(once).await?;
                    self.maintenance.step(&self.lake, &self.settings, once).await;
                }
                feed.release(pending_bytes);
                (pending_n, pending_bytes, deadline, held) = (0, 0, None, false);
            }
            if let Some(targets) = targets {
                if pending_n == 0 && self.caught_up(feed.consumer(), &mut pos, targets).await? {
                    self.catch_up_retrying(true).await?;
                    self.maintenance.finish(&self.lake, &self.settings).await;
                    self.finish_mongo().await?;
                    if let Some(e) = &eta {
                        info!("{}", e.done(summary.events, summary.batches));
                    }
                    return Ok(summary);
                }
                if let Some(line) = eta.as_mut().and_then(|e| e.tick(summary.events)) {
                    info!("{line}");
                }
            }
        }
    }

    /// When the batch in hand, due at `deadline`, is cut (see [`pace`]).
    fn cut_time(&self, pending: &HashMap<String, Vec<RawEvent>>, deadline: Instant) -> Instant {
        let topics = pending.keys().filter_map(|t| self.topics.get(t)).map(|st| &st.progress);
        pace::cut_time(deadline.into_std(), self.settings.hold_batches, topics).into()
    }

    /// `--once` ends with MongoDB caught up, or fails saying so: a scheduled job must not report
    /// success while the documents lag the lake.
    async fn finish_mongo(&mut self) -> Result<()> {
        if self.settings.bronze_only {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings.once_retry_limit;
        loop {
            self.settle_publishes(true).await?;
            if !self.topics.values().any(|t| t.progress.mongo_behind()) {
                return Ok(());
            }
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
    }

    /// Settles the MongoDB publishes in flight: all of them with `wait`, else those that finished.
    /// Aggregates that failed (they finish in the background) leave their topic's progress
    /// where it was before them: the idle catch-up (or the next batch) writes them again.
    async fn settle_publishes(&mut self, wait: bool) -> Result<()> {
        for (topic, st) in self.topics.iter_mut() {
            match tail::settle(&mut st.progress, wait).await {
                Err(e) if e.is_transient() => {
                    warn!(topic, error = %crate::redact::redact(&e.to_string()),
                        "writing a batch's aggregates failed: they are written again");
                }
                other => other?,
            }
            publish::settle(topic, &mut st.progress, self.settings.max_backoff, wait).await?;
        }
        Ok(())
    }
}
