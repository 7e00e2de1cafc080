//! Any text as a Debezium value through the PII rules: the rewrite must keep every change the
//! decoder read before it (same operation, position and unruled columns), and a masked, hashed
//! or dropped column's clear value must be gone from what the decoder reads after it.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use orderlake::cdc_config::PiiRule;
use orderlake::decode::connect::FieldValue;
use orderlake::decode::debezium::{CdcChange, Decoder};
use orderlake::decode::pii::{mask, redact};
use orderlake::decode::sales::MessageMeta;

const META: MessageMeta<'static> = MessageMeta { topic: "f.customers", partition: 0, offset: 7, timestamp_ms: Some(1) };

fn decoded(value: &str) -> Result<Option<CdcChange>, String> {
    Decoder::default().decode(&META, None, Some(value))
}

fn text(v: Option<&FieldValue>) -> Option<String> {
    v.and_then(FieldValue::to_text)
}

fuzz_target!(|data: &[u8]| {
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
});
