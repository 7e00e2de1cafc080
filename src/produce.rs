//! `orderlake produce`: publishes sales events in the Kaggle "Online Shop Business" format, from a
//! CSV file or from a seeded generator, keyed by TransactionNo, with a progress line.

use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::info;

use crate::config::Settings;
use crate::decode::decimal::{format_cents, parse_cents};
use crate::error::{Error, Result};
use crate::source::kafka;

/// One sales line, as in the CSV.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct SaleRecord {
    #[serde(rename = "TransactionNo")]
    pub transaction_no: String,
    #[serde(rename = "Date")]
    pub date: String,
    #[serde(rename = "ProductNo")]
    pub product_no: String,
    #[serde(rename = "ProductName")]
    pub product_name: String,
    #[serde(rename = "Price")]
    pub price: String,
    #[serde(rename = "Quantity")]
    pub quantity: String,
    #[serde(rename = "CustomerNo")]
    pub customer_no: String,
    #[serde(rename = "Country")]
    pub country: String,
}

impl SaleRecord {
    /// The JSON event. Price and Quantity keep their literal text as JSON numbers when they are
    /// numbers; CustomerNo is a number when numeric and null when missing, as exported data has it.
    pub fn to_json(&self) -> String {
        let s = |v: &str| serde_json::to_string(v).expect("string serialises");
        let num_or_str = |v: &str| {
            if parse_cents(v).is_ok() { v.trim().to_string() } else { s(v) }
        };
        let qty = if self.quantity.trim().parse::<i64>().is_ok() {
            self.quantity.trim().to_string()
        } else {
            s(&self.quantity)
        };
        let cust = match self.customer_no.trim() {
            "" | "NA" => "null".to_string(),
            c if c.bytes().all(|b| b.is_ascii_digit()) => c.to_string(),
            c => s(c),
        };
        format!(
            r#"{{"TransactionNo":{},"Date":{},"ProductNo":{},"ProductName":{},"Price":{},"Quantity":{},"CustomerNo":{},"Country":{}}}"#,
            s(&self.transaction_no),
            s(&self.date),
            s(&self.product_no),
            s(&self.product_name),
            num_or_str(&self.price),
            qty,
            cust,
            s(&self.country)
        )
    }
}

pub fn read_csv(path: &std::path::Path) -> Result<Vec<SaleRecord>> {
    let mut r = csv::Reader::from_path(path)
        .map_err(|e| Error::Config(format!("--csv: cannot read {}: {e}", path.display())))?;
    r.deserialize()
        .enumerate()
        .map(|(i, rec)| rec.map_err(|e| Error::Config(format!("--csv {}: line {}: {e}", path.display(), i + 2))))
        .collect()
}

pub fn write_csv(path: &std::path::Path, records: &[SaleRecord]) -> Result<()> {
    let err = |e: csv::Error| Error::Config(format!("--to-csv: cannot write {}: {e}", path.display()));
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    for r in records {
        w.serialize(r).map_err(err)?;
    }
    w.flush()?;
    Ok(())
}

const COUNTRIES: [&str; 8] =
    ["United Kingdom", "France", "Germany", "Netherlands", "EIRE", "Spain", "Australia", "Norway"];
const WORDS: [&str; 16] = [
    "Vintage",
    "Heart",
    "Wooden",
    "Ceramic",
    "Glass",
    "Paper",
    "Garden",
    "Christmas",
    "Lantern",
    "Mug",
    "Bag",
    "Candle",
    "Frame",
    "Cushion",
    "Clock",
    "Tin",
];

/// Seeded, realistic sales lines: transactions of 1–6 lines over 14 days and 8 countries, ~5 %
/// cancellations (`C…`, negative quantities of an earlier order's lines), ~8 % without customer,
/// products whose price changes now and then.
pub fn synthetic(n: usize, seed: u64) -> Vec<SaleRecord> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let products: Vec<(String, String, i64)> = (0..200)
        .map(|i| {
            let name =
                format!("{} {} {}", WORDS[i % 16], WORDS[(i / 16 + 3) % 16], ["Set", "Small", "Large", "Pink"][i % 4]);
            (format!("{}{}", 21000 + i * 7, ["", "A", "B", "F"][i % 4]), name, rng.gen_range(85..2500))
        })
        .collect();
    let mut prices: Vec<i64> = products.iter().map(|p| p.2).collect();
    let customers: Vec<(u32, &str)> =
        (0..400).map(|i| (12000 + i * 3, COUNTRIES[(i as usize * 7) % COUNTRIES.len()])).collect();
    let mut out: Vec<SaleRecord> = Vec::with_capacity(n);
    let mut tx = 536000u32;
    let mut last_orders: Vec<usize> = Vec::new();
    while out.len() < n {
        tx += 1;
        let day = (out.len() * 14 / n.max(1)) as u32 + 1;
        let date = format!("12/{day}/2019");
        let cancel = rng.gen_bool(0.05) && !last_orders.is_empty();
        if cancel {
            // Cancel some lines of a recent order: same products, customer, country, negative quantity.
            let start = last_orders[rng.gen_range(0..last_orders.len())];
            let orig: Vec<SaleRecord> =
                out[start..].iter().take_while(|r| r.transaction_no == out[start].transaction_no).cloned().collect();
            for r in orig.iter().take(rng.gen_range(1..=orig.len())) {
                if out.len() >= n {
                    break;
                }
                let q: i64 = r.quantity.parse().unwrap_or(1);
                out.push(SaleRecord {
                    transaction_no: format!("C{tx}"),
                    date: date.clone(),
                    quantity: (-q).to_string(),
                    ..r.clone()
                });
            }
            continue;
        }
        if rng.gen_bool(0.03) {
            let p = rng.gen_range(0..prices.len());
            prices[p] = (prices[p] * rng.gen_range(80..130) / 100).max(10);
        }
        let (cust, country) = if rng.gen_bool(0.08) {
            (String::new(), COUNTRIES[rng.gen_range(0..COUNTRIES.len())])
        } else {
            let c = customers[rng.gen_range(0..customers.len())];
            (c.0.to_string(), c.1)
        };
        last_orders.push(out.len());
        if last_orders.len() > 50 {
            last_orders.remove(0);
        }
        for _ in 0..rng.gen_range(1..=6) {
            if out.len() >= n {
                break;
            }
            let p = rng.gen_range(0..products.len());
            out.push(SaleRecord {
                transaction_no: tx.to_string(),
                date: date.clone(),
                product_no: products[p].0.clone(),
                product_name: products[p].1.clone(),
                price: format_cents(prices[p]),
                quantity: rng.gen_range(1..=24).to_string(),
                customer_no: cust.clone(),
                country: country.to_string(),
            });
        }
    }
    out
}

/// Enqueues a record now (so records keep their order within a partition), waiting while the
/// producer's queue is full; the returned future resolves on delivery.
pub(crate) async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut rec: FutureRecord<'_, K, P>,
) -> Result<impl std::future::Future<Output = Result<()>> + use<K, P>>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(rec) {
            Ok(delivery) => {
                return Ok(async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(Error::Kafka(e)),
                        Err(_) => Err(Error::Other("producer dropped a delivery report".into())),
                    }
                });
            }
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(Error::Kafka(e)),
        }
    }
}

/// Reads `{"table": "orders", "key": {...}, "value": {...} | null}` lines.
pub fn read_cdc_jsonl(path: &std::path::Path) -> Result<Vec<crate::cdc_gen::CdcRecord>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("--file: cannot read {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let bad = |m: String| Error::Config(format!("--file {} line {}: {m}", path.display(), i + 1));
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| bad(e.to_string()))?;
            let table = v.get("table").and_then(|t| t.as_str()).unwrap_or_default();
            let entity = crate::model::Entity::from_table(table)
                .ok_or_else(|| bad(format!("\"table\" '{table}' is not orders, order_items, products or customers")))?;
            let value = v.get("value").filter(|x| !x.is_null()).map(|x| x.to_string());
            Ok(crate::cdc_gen::CdcRecord {
                entity,
                key: v.get("key").map(|k| k.to_string()).unwrap_or_default(),
                value,
            })
        })
        .collect()
}

/// Publishes CDC records to `<prefix>.<table>`, keyed as the connector keys them (so every change
/// of a row lands in the same partition, in order).
pub async fn publish_cdc(settings: &Settings, prefix: &str, records: &[crate::cdc_gen::CdcRecord]) -> Result<u64> {
    let topics: Vec<String> = crate::model::Entity::ALL.iter().map(|e| format!("{prefix}.{}", e.table())).collect();
    kafka::ensure_topics(settings, &topics).await?;
    let producer: FutureProducer =
        kafka::config_with(settings, &[("enable.idempotence", "true"), ("linger.ms", "5")]).create()?;
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    for r in records {
        let topic = format!("{prefix}.{}", r.entity.table());
        let mut rec = FutureRecord::<String, String>::to(&topic).key(&r.key);
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        inflight.push(enqueue(&producer, rec).await?);
        while inflight.len() >= 10_000 {
            inflight.next().await.expect("non-empty")?;
            sent += 1;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
        sent += 1;
    }
    info!(prefix, sent, "produced CDC events");
    Ok(sent)
}

/// Whether `topic` exists and holds at least one message.
pub async fn topic_has_messages(settings: &Settings, topic: &str) -> Result<bool> {
    kafka::ensure_topics(settings, &[topic.to_string()]).await?;
    let consumer: rdkafka::consumer::BaseConsumer = kafka::base_config(settings).create()?;
    Ok(kafka::end_offsets(&consumer, settings, topic)?.values().any(|hi| *hi > 0))
}

/// Publishes `records` to `topic` (created if missing), at most `rate` events per second.
pub async fn publish(settings: &Settings, topic: &str, records: &[SaleRecord], rate: Option<u32>) -> Result<u64> {
    kafka::ensure_topics(settings, &[topic.to_string()]).await?;
    let producer: FutureProducer = kafka::config_with(
        settings,
        &[("enable.idempotence", "true"), ("linger.ms", "5"), ("message.timeout.ms", "60000")],
    )
    .create()?;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    for (i, r) in records.iter().enumerate() {
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        // Enqueued here, in order (a key's lines stay in order in their partition); delivery
        // reports are collected as they come so a paced run really is paced.
        let payload = r.to_json();
        let rec = FutureRecord::to(topic).key(&r.transaction_no).payload(&payload);
        inflight.push(enqueue(&producer, rec).await?);
        while let Some(Some(r)) = inflight.next().now_or_never() {
            r?;
            sent += 1;
        }
        while inflight.len() >= 10_000 {
            inflight.next().await.expect("non-empty")?;
            sent += 1;
        }
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            info!(
                topic,
                sent = i,
                total = records.len(),
                rate = (i as f64 / started.elapsed().as_secs_f64()) as u64,
                "producing"
            );
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
        sent += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    info!(topic, sent, seconds = format!("{secs:.1}"), "produced");
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_seeded_and_realistic() {
        let a = synthetic(3000, 7);
        assert_eq!(a.len(), 3000);
        assert_eq!(a, synthetic(3000, 7));
        assert_ne!(a, synthetic(3000, 8));
        assert!(a.iter().any(|r| r.transaction_no.starts_with('C') && r.quantity.starts_with('-')));
        assert!(a.iter().any(|r| r.customer_no.is_empty()));
        let days: std::collections::BTreeSet<_> = a.iter().map(|r| &r.date).collect();
        assert!(days.len() >= 10);
        let countries: std::collections::BTreeSet<_> = a.iter().map(|r| &r.country).collect();
        assert!(countries.len() >= 5);
    }

    #[test]
    fn json_keeps_literal_numbers() {
        let r = SaleRecord {
            transaction_no: "581482".into(),
            date: "12/9/2019".into(),
            product_no: "22485".into(),
            product_name: "Crates \"big\"".into(),
            price: "21.47".into(),
            quantity: "12".into(),
            customer_no: "17490".into(),
            country: "United Kingdom".into(),
        };
        let j = r.to_json();
        assert!(j.contains(r#""Price":21.47"#), "{j}");
        assert!(j.contains(r#""CustomerNo":17490"#), "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["ProductName"], "Crates \"big\"");
        let missing = SaleRecord { customer_no: String::new(), ..r };
        assert!(missing.to_json().contains(r#""CustomerNo":null"#));
    }
}
