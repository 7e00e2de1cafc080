//! Any bytes as a message of the sales topic or of one of the four CDC topics, through the
//! same calls the pipeline makes (PII rules, then the topic's decoder). A panic here is a bug
//! (the pipeline would dead-letter the message as "decoder panicked"); anything a decoder does
//! not take must come out as one dead letter with its reason.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use orderlake::cdc_config::{CdcFile, CdcSettings, CdcTableFile, PiiRule};
use orderlake::decode::{Decoded, decode_topic, redact_topic};
use orderlake::model::{RawEvent, value_text};

const TOPICS: [&str; 5] = ["shop.sales", "f.orders", "f.order_items", "f.products", "f.customers"];

static SETTINGS: LazyLock<CdcSettings> = LazyLock::new(settings);

fn settings() -> CdcSettings {
    let mut file = CdcFile { prefix: Some("f".into()), pii_salt: Some("fuzz-salt".into()), ..Default::default() };
    let pii = [("email", PiiRule::Mask), ("name", PiiRule::Hash), ("phone", PiiRule::Drop)];
    let customers =
        CdcTableFile { pii: pii.into_iter().map(|(c, r)| (c.to_string(), r)).collect(), ..Default::default() };
    file.tables.insert("customers".into(), customers);
    CdcSettings::from_file(file, None).expect("settings").expect("cdc on")
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let topic = TOPICS[sel as usize % TOPICS.len()];
    // Key and value split at the first 0xff, which UTF-8 text never holds.
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
        assert_eq!(d.offset, 7);
    }
    let c = &out.changes;
    if topic == "shop.sales" {
        let rows = (c.orders.len(), c.products.len(), c.items.len());
        assert_eq!(rows, if out.dead.is_empty() { (1, 1, 1) } else { (0, 0, 0) }, "a sales line is whole or dead");
    } else if !out.dead.is_empty() {
        assert!(c.is_empty(), "a dead-lettered change leaves no rows behind");
    }
});
