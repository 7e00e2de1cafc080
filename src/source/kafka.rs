//! The Kafka side: consumer-group consumer, topic creation, end offsets, and the rebalance
//! bookkeeping the pipeline needs to re-seek to the offsets stored in bronze. Positions come from
//! the lake; the group's committed offsets are written only for lag tools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::Settings;
use crate::error::{Error, Result};

pub type TopicPartition = (String, i32);

/// Collects partitions revoked by a rebalance, for the pipeline to forget their positions.
#[derive(Default, Clone)]
pub struct RebalanceLog {
    revoked: Arc<Mutex<Vec<TopicPartition>>>,
}

impl RebalanceLog {
    pub fn take_revoked(&self) -> Vec<TopicPartition> {
        std::mem::take(&mut *self.revoked.lock().expect("rebalance log lock"))
    }
}

pub struct Ctx {
    log: RebalanceLog,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Revoke(tpl) => {
                let parts: Vec<TopicPartition> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                info!(partitions = ?parts, "partitions revoked");
                self.log.revoked.lock().expect("rebalance log lock").extend(parts);
            }
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

pub type OrderConsumer = StreamConsumer<Ctx>;

pub fn base_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    for (k, v) in &settings.kafka_options {
        c.set(k, v);
    }
    c
}

/// A group consumer subscribed to the pipeline's topics. Offsets are never auto-committed:
/// the pipeline commits them after the Delta commit, for lag tools only.
pub fn consumer(settings: &Settings) -> Result<(OrderConsumer, RebalanceLog)> {
    let log = RebalanceLog::default();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "30000")
        .set("fetch.wait.max.ms", "100");
    // The user's librdkafka settings win over these defaults (e.g. a shorter session timeout)...
    for (k, v) in &settings.kafka_options {
        c.set(k, v);
    }
    // ...but offsets are never auto-committed: the lake is the truth about positions.
    c.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    let consumer: OrderConsumer = c.create_with_context(Ctx { log: log.clone() })?;
    let topics = settings.topics();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok((consumer, log))
}

/// Creates the topics that do not exist yet (`partitions` each); existing ones are left alone.
pub async fn ensure_topics(settings: &Settings, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings).create()?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, settings.partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(settings.connect_timeout));
    let results = tokio::time::timeout(settings.connect_timeout, admin.create_topics(&new, &opts))
        .await
        .map_err(|_| unreachable_broker(settings))??;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, partitions = settings.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(Error::Other(format!("cannot create topic {t}: {e}"))),
        }
    }
    Ok(())
}

fn unreachable_broker(settings: &Settings) -> Error {
    Error::Config(format!(
        "--brokers / ORDERLAKE_BROKERS: no Kafka broker answered at {} within {} ms (is it running? `make services-up` starts the local one; kafka.connect_timeout_ms sets the wait)",
        settings.brokers,
        settings.connect_timeout.as_millis()
    ))
}

/// Partitions of `topic` and their high watermarks (the offset the next message will get).
pub fn end_offsets<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    settings: &Settings,
    topic: &str,
) -> Result<HashMap<i32, i64>> {
    let timeout = settings.connect_timeout;
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| match e {
        rdkafka::error::KafkaError::MetadataFetch(_) => unreachable_broker(settings),
        e => Error::Kafka(e),
    })?;
    let mut out = HashMap::new();
    for t in md.topics() {
        for p in t.partitions() {
            let (_lo, hi) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            out.insert(p.id(), hi);
        }
    }
    Ok(out)
}

/// Repositions a partition; `None` means the beginning of what the broker retains.
pub fn seek(consumer: &OrderConsumer, tp: &TopicPartition, offset: Option<i64>) -> Result<()> {
    let o = offset.map_or(Offset::Beginning, Offset::Offset);
    consumer.seek(&tp.0, tp.1, o, Duration::from_secs(10))?;
    Ok(())
}

/// Commits the group's offsets (next offset to read) for lag tools; never read back for recovery.
pub fn commit_for_lag_tools(consumer: &OrderConsumer, next: &HashMap<TopicPartition, i64>) {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in next {
        if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
        warn!(error = %e, "could not commit group offsets (lag tools only; recovery uses the lake)");
    }
}

/// The partitions currently assigned to this consumer.
pub fn assignment(consumer: &OrderConsumer) -> Result<Vec<TopicPartition>> {
    Ok(consumer.assignment()?.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect())
}
