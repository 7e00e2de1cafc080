//! Decoders: raw Kafka messages in, canonical rows (or a dead-letter reason) out.

#[cfg(any(test, feature = "fuzzing"))]
pub mod checks;
pub mod connect;
pub mod debezium;
pub mod decimal;
pub mod mapping;
pub mod pii;
pub mod sales;
pub mod shallow;

use crate::cdc_config::{CdcSettings, TruncateMode};
use crate::model::{Changes, DeadLetter, RawEvent};

/// What a batch of raw events decodes to.
#[derive(Debug, Default)]
pub struct Decoded {
    pub changes: Changes,
    pub dead: Vec<DeadLetter>,
}

/// A sales line is a few hundred bytes; anything this large is not one.
pub const MAX_SALES_EVENT_BYTES: usize = 1 << 20;
/// A CDC change carries a whole row, which may hold large text columns.
pub const MAX_CDC_EVENT_BYTES: usize = 8 << 20;

fn too_large(e: &RawEvent, limit: usize) -> Option<String> {
    let n = e.value.as_ref().map_or(0, String::len);
    (n > limit).then(|| format!("event of {n} bytes exceeds the {} MiB limit for this topic", limit >> 20))
}

/// Decodes raw events of the sales topic; undecodable ones become dead letters with the reason.
pub fn decode_sales(events: &[RawEvent], now_us: i64, out: &mut Decoded) {
    // Sized once: grown by doubling, three vectors of a 50,000-event batch held up to twice their rows.
    let c = &mut out.changes;
    c.orders.reserve(events.len());
    c.products.reserve(events.len());
    c.items.reserve(events.len());
    for e in events {
        if let Some(reason) =
            crate::model::undecodable(e.value.as_deref()).or_else(|| too_large(e, MAX_SALES_EVENT_BYTES))
        {
            out.dead.push(dead(e, reason));
            continue;
        }
        guarded(e, out, |changes| {
            let meta = sales::MessageMeta::of(e);
            let line = sales::decode(&meta, e.value.as_deref().map(str::as_bytes), now_us)?;
            let injected = *PANIC_FAULT && line.product.product_id == "PANIC";
            changes.orders.push(line.order);
            changes.products.push(line.product);
            // After a row went in, so the guard must take it back.
            assert!(!injected, "injected decoder panic (ORDERLAKE_TEST_FAIL_AT=decoder-panic)");
            changes.items.push(line.item);
            Ok(())
        });
    }
}

/// Test-only (`ORDERLAKE_TEST_FAIL_AT=decoder-panic`, read once): the sales decoder panics on a
/// line of product `PANIC`, as a decoder bug would, so the guard below is proven end to end.
static PANIC_FAULT: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    crate::config::fault_is(std::env::var("ORDERLAKE_TEST_FAIL_AT").ok().as_deref(), "decoder-panic")
});

/// Decodes one event with `f`; an error, or a panic, makes the event a dead letter and takes back
/// any row `f` added for it. Decoding runs again on every restart (silver catches up from
/// bronze), so a decoder bug that panicked on one message would otherwise stop silver, gold and
/// MongoDB at that message for good. Returns whether `f` panicked.
fn guarded(e: &RawEvent, out: &mut Decoded, f: impl FnOnce(&mut Changes) -> Result<(), String>) -> bool {
    let mark = out.changes.mark();
    let changes = &mut out.changes;
    let (error, panicked) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(changes))) {
        Ok(Ok(())) => return false,
        Ok(Err(error)) => (error, false),
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!(
                topic = %e.topic, partition = e.partition, offset = e.offset,
                "the decoder panicked on this event ({why}); it goes to the dead letters and the batch goes on. \
                 This is a bug in orderlake: please report it with the event from bronze/_dead_letters"
            );
            (format!("decoder panicked (a bug in orderlake, please report it with this event): {why}"), true)
        }
    };
    out.changes.truncate(mark);
    out.dead.push(dead(e, error));
    panicked
}

fn dead(e: &RawEvent, error: String) -> DeadLetter {
    DeadLetter {
        topic: e.topic.clone(),
        partition: e.partition,
        offset: e.offset,
        key: e.key.clone(),
        value: e.value.clone(),
        error,
    }
}

/// Decodes raw events of one topic: the sales topic, or a CDC topic found in `cdc`.
pub fn decode_topic(topic: &str, events: &[RawEvent], cdc: Option<&CdcSettings>, now_us: i64, out: &mut Decoded) {
    let Some((table, truncate)) = cdc.and_then(|c| c.table_for_topic(topic).map(|t| (t, c.truncate))) else {
        decode_sales(events, now_us, out);
        return;
    };
    let mut decoder = debezium::Decoder::default();
    for e in events {
        if let Some(reason) =
            crate::model::undecodable(e.value.as_deref()).or_else(|| too_large(e, MAX_CDC_EVENT_BYTES))
        {
            out.dead.push(dead(e, reason));
            continue;
        }
        let panicked = guarded(e, out, |changes| {
            let meta = sales::MessageMeta::of(e);
            match decoder.decode(&meta, e.key.as_deref(), e.value.as_deref())? {
                Some(c) => {
                    let applied = mapping::apply(&c, table, truncate, now_us, changes)?;
                    if !applied && truncate == TruncateMode::Ignore {
                        tracing::warn!(topic, offset = e.offset, "truncate ignored (cdc.truncate = \"ignore\")");
                    }
                    Ok(())
                }
                None => Ok(()), // tombstone: the delete before it did the work
            }
        });
        if panicked {
            // Its cached schemas may be half-updated.
            decoder = debezium::Decoder::default();
        }
    }
}

/// Applies the topic's PII rules to raw events before they are written anywhere.
pub fn redact_topic(topic: &str, events: &mut [RawEvent], cdc: Option<&CdcSettings>) {
    let Some(c) = cdc else { return };
    let Some(table) = c.table_for_topic(topic).filter(|t| !t.pii.is_empty()) else { return };
    let mut redactor = pii::Redactor::new(&table.pii, &c.pii_salt);
    for e in events.iter_mut() {
        let Some(v) = &e.value else { continue };
        let (value, panicked) = redacted_or_withheld(v, |v| redactor.redact(v));
        if panicked {
            tracing::error!(
                topic,
                partition = e.partition,
                offset = e.offset,
                "PII redaction panicked on this event; its value is withheld and it goes to the dead letters. \
                 This is a bug in orderlake: please report it"
            );
            redactor = pii::Redactor::new(&table.pii, &c.pii_salt);
        }
        e.value = Some(value);
    }
}

/// The value `redact` makes of `v`, or a marker that withholds all of it when `redact` says it
/// cannot check `v` or panics. Redaction runs before bronze, again on every restart, so a bug that
/// panicked here would stop ingestion at this message; and the value may hold PII, so none of it
/// is kept. Returns whether `redact` panicked.
fn redacted_or_withheld(v: &str, redact: impl FnOnce(&str) -> Result<String, String>) -> (String, bool) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| redact(v))) {
        Ok(r) => (r.unwrap_or_else(|withheld| withheld), false),
        Err(_) => {
            let n = v.len();
            (format!("{{\"withheld\":\"PII redaction failed on this value ({n} bytes), which may hold PII\"}}"), true)
        }
    }
}

#[cfg(test)]
mod prop_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder bug that panics must cost one dead letter, not the pipeline: decoding runs again
    /// on every restart, so the panic would recur at the same message for good.
    #[test]
    fn a_decoder_panic_dead_letters_the_event_and_takes_back_its_rows() {
        let good = r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1}"#.to_string();
        let mut out = Decoded::default();
        decode_sales(&[raw(0, good.clone())], 0, &mut out);
        let e = raw(1, good.clone());
        let panicked = guarded(&e, &mut out, |c| {
            c.orders.push(c.orders[0].clone());
            c.deletes.push(crate::model::DeleteRow {
                entity: crate::model::Entity::Orders,
                key: "1".into(),
                pos: c.orders[0].pos.clone(),
            });
            panic!("index out of bounds: the len is 3 but the index is 7")
        });
        assert!(panicked);
        assert_eq!((out.changes.orders.len(), out.changes.deletes.len()), (1, 0), "the event's rows are taken back");
        assert_eq!(out.dead.len(), 1);
        assert_eq!((out.dead[0].offset, out.dead[0].value.as_deref()), (1, Some(good.as_str())));
        assert!(out.dead[0].error.contains("decoder panicked") && out.dead[0].error.contains("index out of bounds"));
        // The batch goes on.
        decode_sales(&[raw(2, good)], 0, &mut out);
        assert_eq!((out.changes.items.len(), out.dead.len()), (2, 1));
    }

    #[test]
    fn a_redaction_panic_withholds_the_whole_value() {
        let v = r#"{"after":{"customer_id":1,"email":"ann@example.org"},"op":"c"}"#;
        let (out, panicked) = redacted_or_withheld(v, |_| panic!("a bug"));
        assert!(panicked);
        assert!(!out.contains("ann@"), "{out}");
        let marker: serde_json::Value = serde_json::from_str(&out).expect("the marker is JSON");
        assert!(marker["withheld"].as_str().is_some_and(|s| s.contains("redaction failed")), "{out}");
        assert_eq!(redacted_or_withheld(v, |v| Ok(v.replace("ann", "***"))), (v.replace("ann", "***"), false));
        assert_eq!(redacted_or_withheld(v, |_| Err("{}".into())), ("{}".to_string(), false));
    }

    fn raw(offset: i64, value: String) -> RawEvent {
        RawEvent {
            topic: "t".into(),
            partition: 0,
            offset,
            key: Some(offset.to_string()),
            value: Some(value),
            timestamp_ms: None,
        }
    }

    /// The 10 MB case of the bad-input corpus at the decoder (the local broker cannot carry a
    /// record that large; the pipeline test uses 2 MB): dead-lettered with the reason, and the
    /// events around it decode.
    #[test]
    fn a_10_mb_event_is_dead_lettered_and_its_neighbours_decode() {
        let good = r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1}"#.to_string();
        let huge = format!(
            r#"{{"TransactionNo":"2","Date":"1/2/2019","ProductNo":"P","ProductName":"{}","Price":1,"Quantity":1}}"#,
            "x".repeat(10 << 20)
        );
        let mut out = Decoded::default();
        decode_sales(&[raw(0, good.clone()), raw(1, huge), raw(2, good)], 0, &mut out);
        assert_eq!(out.dead.len(), 1);
        assert_eq!(out.dead[0].offset, 1);
        assert!(out.dead[0].error.contains("exceeds the 1 MiB limit"), "{}", out.dead[0].error);
        assert_eq!(out.changes.items.len(), 2);
    }
}
