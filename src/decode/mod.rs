//! Decoders: raw Kafka messages in, canonical rows (or a dead-letter reason) out.

pub mod decimal;
pub mod sales;

use crate::model::{Changes, DeadLetter, RawEvent};

/// What a batch of raw events decodes to.
#[derive(Debug, Default)]
pub struct Decoded {
    pub changes: Changes,
    pub dead: Vec<DeadLetter>,
}

/// Decodes raw events of the sales topic; undecodable ones become dead letters with the reason.
pub fn decode_sales(events: &[RawEvent], now_us: i64, out: &mut Decoded) {
    for e in events {
        let meta = sales::MessageMeta {
            topic: &e.topic,
            partition: e.partition,
            offset: e.offset,
            timestamp_ms: e.timestamp_ms,
        };
        match sales::decode(&meta, e.value.as_deref().map(str::as_bytes), now_us) {
            Ok(line) => {
                out.changes.orders.push(line.order);
                out.changes.products.push(line.product);
                out.changes.items.push(line.item);
            }
            Err(error) => out.dead.push(DeadLetter {
                topic: e.topic.clone(),
                partition: e.partition,
                offset: e.offset,
                key: e.key.clone(),
                value: e.value.clone(),
                error,
            }),
        }
    }
}
