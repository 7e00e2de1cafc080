//! What must hold for any bytes a producer can send, checked by the fuzz targets (`fuzz/`,
//! nightly) and, over the inputs fuzzing kept (`fuzz/regressions/`), by a unit test on stable: a
//! decoder bug fuzzing once found stays found in `make test`. A broken invariant panics with the
//! input, as a fuzz target must. Compiled only for tests and the `fuzzing` feature.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::cdc_config::{CdcFile, CdcSettings, CdcTableFile, PiiRule};
use crate::decode::connect::FieldValue;
use crate::decode::debezium::{CdcChange, Decoder};
use crate::decode::pii::{mask, redact};
use crate::decode::sales::MessageMeta;
use crate::decode::{Decoded, decode_topic, redact_topic};
use crate::model::{RawEvent, value_text};

const TOPICS: [&str; 5] = ["shop.sales", "f.orders", "f.order_items", "f.products", "f.customers"];

/// The customers table's rules in the `decode` input's configuration.
static SETTINGS: LazyLock<CdcSettings> = LazyLock::new(|| {
    let mut file = CdcFile { prefix: Some("f".into()), pii_salt: Some("fuzz-salt".into()), ..Default::default() };
    let pii = [("email", PiiRule::Mask), ("name", PiiRule::Hash), ("phone", PiiRule::Drop)];
    let customers =
        CdcTableFile { pii: pii.into_iter().map(|(c, r)| (c.to_string(), r)).collect(), ..Default::default() };
    file.tables.insert("customers".into(), customers);
    CdcSettings::from_file(file, None).expect("settings").expect("cdc on")
});

/// `data` as one message: its first byte picks the topic (sales or one of the four CDC tables;
/// its top bit makes the value a tombstone), then the key, a `0xff` byte (which UTF-8 text never
/// holds) and the value. It goes through the calls the pipeline makes: the PII rules, then the
/// topic's decoder. Nothing may panic (the pipeline's guard would dead-letter it as "decoder
/// panicked", which this check refuses too); a message gives at most one dead letter, with a
/// reason; a sales line is whole or dead; a dead-lettered change leaves no row behind.
pub fn decode_message(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let topic = TOPICS[sel as usize % TOPICS.len()];
    let (key, value) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (Some(value_text(&rest[..i])), &rest[i + 1..]),
        None => (None, rest),
    };
    let value = (sel & 0x80 == 0).then(|| value_text(value));
    let mut events = vec![RawEvent {
        topic: topic.into(),
        partition: 0,
        offset: 7,
        key,
        value,
        timestamp_ms: Some(1_700_000_000_000),
    }];
    let cdc = &*SETTINGS;
    redact_topic(topic, &mut events, Some(cdc));
    let mut out = Decoded::default();
    decode_topic(topic, &events, Some(cdc), 1_700_000_000_000_000, &mut out);
    assert!(out.dead.len() <= 1, "one message, at most one dead letter");
    for d in &out.dead {
        assert!(!d.error.trim().is_empty(), "a dead letter says why");
        assert!(!d.error.starts_with("decoder panicked"), "{topic}: {}", d.error);
        assert_eq!(d.offset, 7);
    }
    let c = &out.changes;
    if topic == "shop.sales" {
        let rows = (c.orders.len(), c.products.len(), c.items.len());
        assert_eq!(rows, if out.dead.is_empty() { (1, 1, 1) } else { (0, 0, 0) }, "a sales line is whole or dead");
    } else if !out.dead.is_empty() {
        assert!(c.is_empty(), "a dead-lettered change leaves no rows behind");
    }
}

const META: MessageMeta<'static> = MessageMeta { topic: "f.customers", partition: 0, offset: 7, timestamp_ms: Some(1) };

fn decoded(value: &str) -> Result<Option<CdcChange>, String> {
    Decoder::default().decode(&META, None, Some(value))
}

fn text(v: Option<&FieldValue>) -> Option<String> {
    v.and_then(FieldValue::to_text)
}

/// `data` as a Debezium value of any envelope through the PII rules (email masked, name dropped,
/// phone hashed): a JSON value stays JSON and only one that is not is withheld; a change the
/// decoder read before the rewrite it still reads after it, with the same operation, position,
/// key and unruled columns; a ruled column's clear value is gone from what it reads.
pub fn redact_value(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else { return };
    let rules: BTreeMap<String, PiiRule> =
        [("email", PiiRule::Mask), ("name", PiiRule::Drop), ("phone", PiiRule::Hash)]
            .into_iter()
            .map(|(c, r)| (c.to_string(), r))
            .collect();
    let out = match redact(value, &rules, "fuzz-salt") {
        Ok(out) => out,
        Err(withheld) => {
            assert!(
                serde_json::from_str::<serde_json::Value>(value).is_err(),
                "only a value that is not JSON is withheld"
            );
            assert!(serde_json::from_str::<serde_json::Value>(&withheld).is_ok(), "the withheld marker is JSON");
            return;
        }
    };
    // (A number beyond f64 is JSON that a value tree refuses: such an input is only copied.)
    if serde_json::from_str::<serde_json::Value>(value).is_ok() {
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "a JSON value stays JSON: {out}");
    }
    let Ok(Some(before)) = decoded(value) else { return };
    let after = match decoded(&out) {
        Ok(Some(c)) => c,
        // A flattened row of ruled columns only may have nothing left to read once they are dropped.
        Err(_) if before.row.keys().all(|k| rules.contains_key(k)) => return,
        other => panic!("{value}\n decoded before the rules, not after:\n {out}\n {other:?}"),
    };
    assert_eq!((&after.op, &after.pos, &after.key), (&before.op, &before.pos, &before.key));
    assert!(after.row.get("name").is_none_or(|v| *v == FieldValue::Null), "a dropped column is gone: {out}");
    for col in ["email", "phone"] {
        // (A value already masked masks to itself.)
        if let Some(clear) = text(before.row.get(col)).filter(|s| mask(s) != *s) {
            assert_ne!(text(after.row.get(col)), Some(clear), "{col} in the clear: {out}");
        }
    }
    // A column holding an object may be an image the rules rewrote inside (a message with images
    // but no `op` decodes as a flat row of them): only the other columns must stay as they were.
    let plain = |(k, v): &(&String, &FieldValue)| !rules.contains_key(*k) && !matches!(v, FieldValue::Json(_));
    for (k, v) in before.row.iter().filter(plain) {
        assert_eq!(after.row.get(k), Some(v), "{k} changed: {value} → {out}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn inputs(target: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        files
    }

    /// Runs `check` on every kept input of `target`, and names each one that breaks it.
    fn replay(target: &str, check: fn(&[u8])) -> usize {
        let files = inputs(target);
        let failed: Vec<String> = files
            .iter()
            .filter(|f| {
                let data = std::fs::read(f).expect("input");
                std::panic::catch_unwind(|| check(&data)).is_err()
            })
            .map(|f| f.display().to_string())
            .collect();
        assert!(failed.is_empty(), "{} of {} inputs break `{target}`: {failed:#?}", failed.len(), files.len());
        files.len()
    }

    #[test]
    fn every_kept_decode_input_holds() {
        assert!(replay("decode", decode_message) >= 100, "the kept corpus is missing");
    }

    #[test]
    fn every_kept_redact_input_holds() {
        assert!(replay("redact", redact_value) >= 100, "the kept corpus is missing");
    }

    #[test]
    fn what_fuzzing_found_is_kept() {
        // Session 47's findings: a flattened row with an `after` object kept its email in the
        // clear, and nanoseconds in `__source_ts_ms` overflowed into a wrapped `updated_at`.
        let kept = |target: &str, name: &str| inputs(target).iter().any(|f| f.ends_with(name));
        assert!(kept("redact", "s47-row-with-an-after-object"));
        assert!(kept("decode", "s47-nanosecond-source-time"));
    }
}
