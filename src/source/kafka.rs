//! The Kafka side: consumer-group consumer, topic creation, end offsets, and the rebalance
//! bookkeeping the pipeline needs to re-seek to the offsets stored in bronze. Positions come from
//! the lake; the group's committed offsets are written only for lag tools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// A generation number per partition, bumped whenever the partition's read position stops being
/// continuous with what was handed over before: revoked by a rebalance, or repositioned by a seek.
/// Events carry the generation they were read in, so the pipeline can tell stale ones apart.
#[derive(Default, Clone)]
pub struct Epochs {
    next: Arc<std::sync::atomic::AtomicU64>,
    current: Arc<Mutex<HashMap<TopicPartition, u64>>>,
}

impl Epochs {
    /// A fresh generation number, greater than every one handed out before.
    pub fn allocate(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    pub fn set(&self, tp: TopicPartition, epoch: u64) {
        self.current.lock().expect("epochs lock").insert(tp, epoch);
    }

    pub fn get(&self, tp: &TopicPartition) -> u64 {
        self.current.lock().expect("epochs lock").get(tp).copied().unwrap_or(0)
    }
}

pub struct Ctx {
    epochs: Epochs,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Revoke(tpl) => {
                let parts: Vec<TopicPartition> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                info!(partitions = ?parts, "partitions revoked");
                for tp in parts {
                    let e = self.epochs.allocate();
                    self.epochs.set(tp, e);
                }
            }
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

pub type OrderConsumer = StreamConsumer<Ctx>;

/// [`base_config`] with `defaults` underneath the user's librdkafka settings, which win (e.g. a
/// longer `linger.ms` for a producer on a busy broker).
pub fn config_with(settings: &Settings, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &settings.kafka_options {
        c.set(k, v);
    }
    c
}

pub fn base_config(settings: &Settings) -> ClientConfig {
    config_with(settings, &[])
}

/// A group consumer subscribed to the pipeline's topics. Offsets are never auto-committed:
/// the pipeline commits them after the Delta commit, for lag tools only.
pub fn consumer(settings: &Settings) -> Result<(OrderConsumer, Epochs)> {
    let epochs = Epochs::default();
    // librdkafka's own prefetch queue counts against the in-flight budget too.
    let prefetch_kib = (settings.batch.max_in_flight_bytes / 4 / 1024).clamp(1024, 65536);
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "30000")
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", prefetch_kib.to_string());
    // The user's librdkafka settings win over these defaults (e.g. a shorter session timeout)...
    for (k, v) in &settings.kafka_options {
        c.set(k, v);
    }
    // ...but offsets are never auto-committed: the lake is the truth about positions.
    c.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    let consumer: OrderConsumer = c.create_with_context(Ctx { epochs: epochs.clone() })?;
    let topics = settings.topics();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok((consumer, epochs))
}

/// Remembers the last client-level error librdkafka reported (it retries on its own and would
/// otherwise only say "timed out"), so a start-up failure can name the real cause.
#[derive(Default, Clone)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl ConsumerContext for LastError {}

impl LastError {
    fn take(&self) -> Option<String> {
        self.0.lock().expect("last error lock").take()
    }
}

/// Connects a throw-away client and serves its error callbacks for a moment: the admin client
/// never delivers them (librdkafka reports e.g. a rejected SASL login only there).
async fn diagnose(settings: &Settings) -> Option<String> {
    let config = base_config(settings);
    tokio::task::spawn_blocking(move || {
        let last = LastError::default();
        let c: BaseConsumer<LastError> = config.create_with_context(last.clone()).ok()?;
        let _ = c.fetch_metadata(None, std::time::Duration::from_millis(1500));
        for _ in 0..20 {
            if let Some(e) = last.take() {
                return Some(e);
            }
            let _ = c.poll(std::time::Duration::from_millis(100));
        }
        last.take()
    })
    .await
    .ok()
    .flatten()
}

impl ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error");
        *self.0.lock().expect("last error lock") = Some(format!("{error} ({reason})"));
    }
}

/// Creates the topics that do not exist yet (`partitions` each); existing ones are left alone.
pub async fn ensure_topics(settings: &Settings, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings).create().map_err(client_config)?;
    // Topics that exist are left alone without asking to create them: a locked-down cluster (or
    // Event Hubs with a Listen-only key) may not grant CreateTopics at all.
    let timeout = settings.connect_timeout;
    let md = match admin.inner().fetch_metadata(None, timeout) {
        Ok(md) => md,
        Err(_) => return Err(start_failure(settings, diagnose(settings).await)),
    };
    let existing: std::collections::HashSet<&str> =
        md.topics().iter().filter(|t| t.error().is_none() && !t.partitions().is_empty()).map(|t| t.name()).collect();
    let missing: Vec<&String> = topics.iter().filter(|t| !existing.contains(t.as_str())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic<'_>> =
        missing.iter().map(|t| NewTopic::new(t, settings.partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(settings.connect_timeout));
    let results = match tokio::time::timeout(settings.connect_timeout, admin.create_topics(&new, &opts)).await {
        Ok(r) => r?,
        Err(_) => return Err(start_failure(settings, diagnose(settings).await)),
    };
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, partitions = settings.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(Error::Other(format!("cannot create topic {t}: {e}"))),
        }
    }
    Ok(())
}

/// A client librdkafka refuses to create is a configuration problem (e.g. a `[kafka.options]`
/// key it does not know).
fn client_config(e: rdkafka::error::KafkaError) -> Error {
    Error::Config(format!("[kafka.options]: librdkafka rejected the client settings: {e}"))
}

/// Why the broker did not answer in time, as precisely as librdkafka told us.
fn start_failure(settings: &Settings, last: Option<String>) -> Error {
    let Some(last) = last else { return unreachable_broker(settings) };
    let l = last.to_ascii_lowercase();
    if l.contains("sasl") || l.contains("authentication") {
        Error::Config(format!(
            "[kafka.options] sasl.*: the broker at {} rejected the credentials: {last} (check sasl.mechanisms, sasl.username and sasl.password)",
            settings.brokers
        ))
    } else if l.contains("ssl") || l.contains("certificate") || l.contains("tls") {
        Error::Config(format!(
            "[kafka.options] ssl.* / security.protocol: the TLS connection to {} failed: {last} (check security.protocol and ssl.ca.location)",
            settings.brokers
        ))
    } else {
        Error::Config(format!("{} (last error: {last})", unreachable_message(settings)))
    }
}

fn unreachable_broker(settings: &Settings) -> Error {
    Error::Config(unreachable_message(settings))
}

fn unreachable_message(settings: &Settings) -> String {
    format!(
        "--brokers / ORDERLAKE_BROKERS: no Kafka broker answered at {} within {} ms (is it running? `make services-up` starts the local one; kafka.connect_timeout_ms sets the wait)",
        settings.brokers,
        settings.connect_timeout.as_millis()
    )
}

/// The partition ids of `topic`, from the broker's metadata.
pub fn partitions<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    settings: &Settings,
    topic: &str,
) -> Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), settings.connect_timeout).map_err(|e| match e {
        rdkafka::error::KafkaError::MetadataFetch(_) => unreachable_broker(settings),
        e => Error::Kafka(e),
    })?;
    Ok(md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect())
}

/// Partitions of `topic` and their high watermarks (the offset the next message will get).
pub fn end_offsets<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    settings: &Settings,
    topic: &str,
) -> Result<HashMap<i32, i64>> {
    let mut out = HashMap::new();
    for p in partitions(consumer, settings, topic)? {
        let (_lo, hi) = consumer.fetch_watermarks(topic, p, settings.connect_timeout)?;
        out.insert(p, hi);
    }
    Ok(out)
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

/// The high watermark librdkafka cached from its last fetch response for a partition (no broker
/// round trip, unlike `fetch_watermarks`); `None` before the first fetch.
pub fn cached_high_watermark(consumer: &OrderConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the out-parameters are locals.
    let err = unsafe {
        rdkafka_sys::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
