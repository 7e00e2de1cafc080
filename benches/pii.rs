//! How much the PII rules cost the CDC decoder: Debezium `customers` changes with their Connect
//! schema (what `orderlake bench --cdc` publishes), decoded without rules (the baseline) and
//! with `credit_card = "mask"` and `email = "hash"` (the rewrite, then the same decoding).
//! `make bench-pii` runs it; it prints messages/s for each and the ratio. Without `--bench`
//! (`cargo test --all-targets`) it runs once on a few messages, to check that it works.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use orderlake::cdc_config::{CdcFile, CdcSettings, CdcTableFile, PiiRule};
use orderlake::decode::{Decoded, decode_topic, redact_topic};
use orderlake::model::{Entity, RawEvent};

const TOPIC: &str = "shop.public.customers";

fn settings(pii: &[(&str, PiiRule)]) -> CdcSettings {
    let customers = CdcTableFile { pii: pii.iter().map(|(c, r)| (c.to_string(), *r)).collect(), ..Default::default() };
    let file = CdcFile {
        prefix: Some("shop.public".into()),
        pii_salt: Some("bench-salt-0123".into()),
        tables: BTreeMap::from([("customers".to_string(), customers)]),
        ..Default::default()
    };
    CdcSettings::from_file(file, None).expect("valid settings").expect("a CDC source")
}

/// The customers changes of a synthetic history of `changes`, repeated to at least `n` messages.
fn events(changes: usize, n: usize) -> Vec<RawEvent> {
    let history = orderlake::cdc_gen::synthetic(changes, 11, true);
    let one: Vec<_> = history.records.into_iter().filter(|r| r.entity == Entity::Customers).collect();
    one.iter()
        .cycle()
        .take(n.max(one.len()))
        .enumerate()
        .map(|(i, r)| RawEvent {
            topic: TOPIC.into(),
            partition: 0,
            offset: i as i64,
            key: Some(r.key.clone()),
            value: r.value.clone(),
            timestamp_ms: Some(1),
        })
        .collect()
}

/// The median over `rounds` of one pass of `f` over a fresh copy of the events.
fn median(events: &[RawEvent], rounds: usize, mut f: impl FnMut(&mut [RawEvent])) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let mut copy = events.to_vec();
            let t0 = Instant::now();
            f(&mut copy);
            let t = t0.elapsed();
            black_box(copy);
            t
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (events, rounds) = if smoke { (events(5_000, 500), 1) } else { (events(200_000, 60_000), 7) };
    let bytes: usize = events.iter().filter_map(|e| e.value.as_ref()).map(String::len).sum();
    let (plain, ruled) = (settings(&[]), settings(&[("credit_card", PiiRule::Mask), ("email", PiiRule::Hash)]));
    let decode = |s: &CdcSettings, ev: &mut [RawEvent]| {
        let mut out = Decoded::default();
        decode_topic(TOPIC, ev, Some(s), 0, &mut out);
        assert!(out.dead.is_empty(), "every generated change decodes");
        black_box(out);
    };
    // The rules do what they say before their cost counts: clear card numbers (all start with 4)
    // are in the input and nowhere in the rewrite.
    let clear = |ev: &[RawEvent]| ev.iter().filter_map(|e| e.value.as_ref()).any(|v| v.contains(r#""credit_card":"4"#));
    let mut check = events.clone();
    redact_topic(TOPIC, &mut check, Some(&ruled));
    assert!(clear(&events) && !clear(&check), "the mask rule rewrites every card number");

    let baseline = median(&events, rounds, |ev| decode(&plain, ev));
    let rewrite = median(&events, rounds, |ev| redact_topic(TOPIC, ev, Some(&ruled)));
    let both = median(&events, rounds, |ev| {
        redact_topic(TOPIC, ev, Some(&ruled));
        decode(&ruled, ev);
    });
    let rate = |t: Duration| events.len() as f64 / t.as_secs_f64();
    println!(
        "{} customers changes with Connect schemas, {:.0} bytes each; median of {rounds} passes",
        events.len(),
        bytes as f64 / events.len() as f64
    );
    println!("  decode, no PII rules (baseline)   {:>9.0} messages/s", rate(baseline));
    println!("  PII rewrite alone                 {:>9.0} messages/s", rate(rewrite));
    println!("  PII rewrite + decode              {:>9.0} messages/s", rate(both));
    println!("  ratio with rules / baseline       {:>9.2}", baseline.as_secs_f64() / both.as_secs_f64());
}
