//! Where each partition stands for this consumer, by the lake's own offsets: what to do with an
//! event read from Kafka (keep, skip, or reposition first), and whether a `--once` run has reached
//! its end offsets. The group's committed offsets are written for lag tools only.

use std::collections::HashMap;

use tracing::debug;

use super::Pipeline;
use super::retry::Retry;
use crate::error::Result;
use crate::lake::bronze;
use crate::model::RawEvent;
use crate::source::feed::{Fed, Feed};
use crate::source::kafka::{self, OrderConsumer, TopicPartition};

/// Where one partition stands for this consumer.
pub(super) struct Part {
    /// The generation of the events accepted from it (see [`kafka::Epochs`]).
    epoch: u64,
    /// The next offset the lake expects; `None`: bronze has nothing, read from the beginning.
    expected: Option<i64>,
    /// Reading is known to continue from `expected`.
    positioned: bool,
    /// The generation a requested seek will produce; events until then are stale.
    seeking: Option<u64>,
}

pub(super) type Positions = HashMap<TopicPartition, Part>;

impl Pipeline {
    /// [`Self::expected_for`], retried while the lake is unreachable.
    pub(super) async fn expected_for_retrying(&self, tp: &TopicPartition, once: bool) -> Result<Option<i64>> {
        let mut retry = Retry::new(&self.settings, once);
        loop {
            match self.expected_for(tp).await {
                Err(e) => retry.after(e, "cannot read the partition's position from bronze", &self.shutdown).await?,
                ok => return ok,
            }
        }
    }

    /// Loads the lake's position for a newly seen partition.
    pub(super) async fn expected_for(&self, tp: &TopicPartition) -> Result<Option<i64>> {
        let st = &self.topics[&tp.0];
        let stored = bronze::stored_offsets(&self.lake, &st.bronze, &self.settings.group, &tp.0, [tp.1]).await?;
        Ok(stored.get(&tp.1).map(|o| o + 1))
    }

    /// Decides what to do with an event read from Kafka: keep it for the batch, or drop it because
    /// bronze already holds it, it is stale (read before a revoke or seek), or its partition first
    /// has to be repositioned to where the lake says it stands. The group's committed offsets are
    /// not trusted for that; they are written for lag tools only.
    pub(super) async fn accept(
        &self,
        feed: &Feed,
        pos: &mut Positions,
        fed: Fed,
        once: bool,
    ) -> Result<Option<RawEvent>> {
        let Fed { event, epoch, .. } = fed;
        let tp = (event.topic.clone(), event.partition);
        let known = pos.get(&tp).map(|p| (p.epoch, p.seeking));
        if known.is_some_and(|(k, _)| epoch < k) {
            return Ok(None);
        }
        if known.map(|(k, _)| k) != Some(epoch) {
            // A new generation: the partition came back after a revoke, or a seek took effect.
            let expected = self.expected_for_retrying(&tp, once).await?;
            let positioned = known.is_some_and(|(_, seeking)| seeking == Some(epoch));
            pos.insert(tp.clone(), Part { epoch, expected, positioned, seeking: None });
        }
        let part = pos.get_mut(&tp).expect("partition known");
        if part.seeking.is_some() {
            return Ok(None);
        }
        let off = event.offset;
        if part.expected.is_some_and(|e| off < e) {
            debug!(topic = %tp.0, partition = tp.1, offset = off, "skipping an offset already in bronze");
            return Ok(None);
        }
        if !part.positioned {
            // Offset 0 is where a partition with nothing in bronze starts anyway (unless retention
            // has removed it: then the seek goes to what the broker still has).
            if part.expected.unwrap_or(0) != off {
                part.seeking = Some(feed.seek(tp, part.expected));
                return Ok(None);
            }
            part.positioned = true;
        }
        part.expected = Some(off + 1);
        Ok(Some(event))
    }

    /// True when every assigned partition has reached its end offset from the start of the run.
    pub(super) async fn caught_up(
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
            if !pos.contains_key(&tp) {
                let expected = self.expected_for_retrying(&tp, true).await?;
                pos.insert(tp.clone(), Part { epoch: 0, expected, positioned: false, seeking: None });
            }
            let target = targets.get(&tp).copied().unwrap_or(0);
            if pos[&tp].expected.unwrap_or(0) < target {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
