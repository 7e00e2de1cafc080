//! The consume ceiling: a bare rdkafka consumer that only counts messages and bytes, reading the
//! same topics from the same broker with the same fetch settings as orderlake. Nothing a pipeline
//! does can be faster than this, so every other figure is reported as a ratio to it.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::source::kafka;

#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub events: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Reads `topics` from the beginning to the end offsets seen at start.
pub async fn measure(settings: &Settings, topics: &[String]) -> Result<Ceiling> {
    let settings = settings.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || read_all(&settings, &topics))
        .await
        .map_err(|e| Error::Other(format!("ceiling reader: {e}")))?
}

fn read_all(settings: &Settings, topics: &[String]) -> Result<Ceiling> {
    let consumer: BaseConsumer = kafka::base_config(settings)
        .set("group.id", format!("{}-ceiling", settings.group))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    // (topic, partition, end offset) of the partitions not read to their end yet: a handful, so a
    // scan per message costs less than hashing the topic name.
    let mut remaining: Vec<(String, i32, i64)> = Vec::new();
    for topic in topics {
        for (p, hi) in kafka::end_offsets(&consumer, settings, topic)? {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            if hi > 0 {
                remaining.push((topic.clone(), p, hi));
            }
        }
    }
    consumer.assign(&tpl)?;
    let target: i64 = remaining.iter().map(|r| r.2).sum();
    let (mut events, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    while !remaining.is_empty() {
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(Error::Other(format!("ceiling reader: {events} of {target} events after 30 min")));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                events += 1;
                bytes += (m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)) as u64;
                let (p, next) = (m.partition(), m.offset() + 1);
                remaining.retain(|(t, rp, hi)| !(*rp == p && next >= *hi && t == m.topic()));
            }
            Some(Err(e)) => tracing::warn!(error = %e, "ceiling reader: kafka error"),
            None => {}
        }
    }
    Ok(Ceiling { events, bytes, seconds: started.elapsed().as_secs_f64() })
}
