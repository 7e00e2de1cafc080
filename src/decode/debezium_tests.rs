//! Decoder tests over fixtures in the exact Debezium formats (`data/fixtures/debezium/`): Postgres
//! and MySQL connectors, schema on and off, flattened records, every decimal and time encoding.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::cdc_config::{CdcTable, TruncateMode};
use crate::decode::connect::FieldValue;
use crate::decode::debezium::{CdcChange, CdcOp, Decoder};
use crate::decode::mapping::apply;
use crate::decode::sales::MessageMeta;
use crate::model::{Changes, Entity};

fn fixture(name: &str) -> (Option<String>, Option<String>) {
    let path = format!("{}/data/fixtures/debezium/{name}", env!("CARGO_MANIFEST_DIR"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let s = |k: &str| v.get(k).filter(|x| !x.is_null()).map(|x| x.to_string());
    (s("key"), s("value"))
}

/// One message through a fresh decoder (no schema remembered).
fn decode(meta: &MessageMeta<'_>, key: Option<&str>, value: Option<&str>) -> Result<Option<CdcChange>, String> {
    Decoder::default().decode(meta, key, value)
}

fn meta() -> MessageMeta<'static> {
    MessageMeta { topic: "shop.public.x", partition: 1, offset: 9, timestamp_ms: Some(1) }
}

fn table(e: Entity) -> CdcTable {
    CdcTable { entity: e, topic: "t".into(), columns: BTreeMap::new(), pii: BTreeMap::new() }
}

fn changes(name: &str, e: Entity) -> Changes {
    let (k, v) = fixture(name);
    let c = decode(&meta(), k.as_deref(), v.as_deref()).unwrap().expect("not a tombstone");
    let mut out = Changes::default();
    apply(&c, &table(e), TruncateMode::Delete, 0, &mut out).unwrap();
    out
}

#[test]
fn postgres_create_with_schema() {
    let c = changes("pg_orders_create_schema.json", Entity::Orders);
    let o = &c.orders[0];
    assert_eq!(o.order_id, "1001");
    assert_eq!(o.customer_id.as_deref(), Some("42"));
    assert_eq!(o.order_date, NaiveDate::from_ymd_opt(2024, 12, 1));
    assert_eq!(o.updated_at_us, 1_733_050_800_123_456);
    assert_eq!(o.pos.primary, 24_023_960, "ordered by LSN");
    assert_eq!(o.extra, vec![("coupon_code".to_string(), Some("XMAS".to_string()))], "unmapped columns are kept");
}

#[test]
fn postgres_update_payload_only_orders_after_the_create() {
    let a = changes("pg_orders_create_schema.json", Entity::Orders).orders.remove(0);
    let b = changes("pg_orders_update_noschema.json", Entity::Orders).orders.remove(0);
    assert_eq!(b.status, "shipped");
    assert_eq!(b.order_date, a.order_date, "schemaless Date is days since the epoch");
    assert!(b.pos > a.pos && b.pos.render() > a.pos.render());
}

#[test]
fn decimal_bytes_variable_scale_string_and_double() {
    assert_eq!(changes("pg_items_create_decimal_bytes.json", Entity::OrderItems).items[0].unit_price, Some(1999));
    assert_eq!(changes("pg_products_variable_scale.json", Entity::Products).products[0].price, Some(2147));
    let p = changes("mysql_products_snapshot_string_decimal.json", Entity::Products).products.remove(0);
    assert_eq!(p.price, Some(42));
    assert_eq!(p.updated_at_us, 1_733_047_200_500_000, "ZonedTimestamp");
    assert_eq!(
        (p.pos.primary >> 40, p.pos.primary & 0xff_ffff_ffff, p.pos.secondary),
        (3, 154, 2),
        "binlog file, pos, row"
    );
    assert_eq!(
        changes("pg_products_double.json", Entity::Products).products[0].price,
        Some(1999),
        "doubles round to cents"
    );
}

#[test]
fn deletes_take_the_key_from_before_or_the_message_key_and_tombstones_change_nothing() {
    let c = changes("pg_items_delete.json", Entity::OrderItems);
    assert_eq!((c.deletes[0].entity, c.deletes[0].key.as_str()), (Entity::OrderItems, "5001"));
    let (k, _) = fixture("pg_items_delete.json");
    assert_eq!(decode(&meta(), k.as_deref(), None).unwrap(), None, "tombstone");
    let flat = changes("flat_customers_delete.json", Entity::Customers);
    assert_eq!(flat.deletes[0].key, "42");
    assert_eq!(flat.deletes[0].pos.primary, 24_090_000);
}

#[test]
fn flattened_records() {
    let c = changes("flat_customers_upsert.json", Entity::Customers).customers.remove(0);
    assert_eq!((c.customer_id.as_str(), c.email.as_deref()), ("42", Some("ada@example.com")));
    assert_eq!(c.updated_at_us, 1_733_050_800_123_000, "connect Timestamp is ms");
    assert_eq!(c.pos.primary, 24_020_000, "__lsn");
    assert!(c.extra.iter().any(|(k, v)| k == "credit_card" && v.as_deref() == Some("4111111111111111")));
    assert!(c.extra.iter().all(|(k, _)| !k.starts_with("__")), "metadata fields are not columns");
}

#[test]
fn time_types() {
    let (k, v) = fixture("pg_orders_time_types.json");
    let c = decode(&meta(), k.as_deref(), v.as_deref()).unwrap().unwrap();
    assert_eq!(c.row["t_time"], FieldValue::Time(3_723_000_000));
    assert_eq!(c.row["t_micro"], FieldValue::Time(3_723_000_001));
    assert_eq!(c.row["t_ts"], FieldValue::Timestamp(1_733_050_800_123_000));
    assert_eq!(c.row["t_nano"], FieldValue::Timestamp(1_733_050_800_123_456));
    assert_eq!(c.row["t_zoned"], FieldValue::Timestamp(1_733_047_200_000_000));
    assert_eq!(c.row["order_date"], FieldValue::Date(20058));
    assert_eq!(c.row["t_time"].to_text().as_deref(), Some("01:02:03.000000"));
}

#[test]
fn truncate_is_configurable() {
    let (k, v) = fixture("pg_orders_truncate.json");
    let c = decode(&meta(), k.as_deref(), v.as_deref()).unwrap().unwrap();
    assert_eq!(c.op, CdcOp::Truncate);
    let mut out = Changes::default();
    assert!(!apply(&c, &table(Entity::Orders), TruncateMode::Ignore, 0, &mut out).unwrap());
    assert!(out.is_empty());
    assert!(apply(&c, &table(Entity::Orders), TruncateMode::Delete, 0, &mut out).unwrap());
    assert_eq!(out.truncates.len(), 1);
}

#[test]
fn column_maps_rename_source_columns() {
    let (k, v) = fixture("pg_orders_create_schema.json");
    let c = decode(&meta(), k.as_deref(), v.as_deref()).unwrap().unwrap();
    let mut t = table(Entity::Orders);
    t.columns.insert("status".into(), "coupon_code".into());
    let mut out = Changes::default();
    apply(&c, &t, TruncateMode::Ignore, 0, &mut out).unwrap();
    assert_eq!(out.orders[0].status, "XMAS");
    assert!(out.orders[0].extra.iter().any(|(k, _)| k == "status"), "the unmapped source 'status' is an extra now");
}

#[test]
fn bad_changes_say_why() {
    let m = meta();
    let err = |v: &str| decode(&m, None, Some(v)).unwrap_err();
    assert!(err("{not json").contains("value is not valid JSON"));
    assert!(err(r#"{"op":"x","after":{}}"#).contains("unknown Debezium op 'x'"));
    assert!(err(r#"{"op":"c"}"#).contains("without 'after'"));
    assert!(err(r#"{"op":"c","after":5}"#).contains("not an object"));
    let bad_dec = r#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"price"}]}]},"payload":{"op":"c","after":{"price":"%%%"}}}"#;
    assert!(err(bad_dec).contains("column price"));
    let c = decode(&m, None, Some(r#"{"op":"c","after":{"name":"x"}}"#)).unwrap().unwrap();
    let mut out = Changes::default();
    assert!(
        apply(&c, &table(Entity::Products), TruncateMode::Ignore, 0, &mut out)
            .unwrap_err()
            .contains("product_id is missing")
    );
    let c = decode(&m, None, Some(r#"{"op":"c","after":{"product_id":"p","price":"1.234"}}"#)).unwrap().unwrap();
    assert!(
        apply(&c, &table(Entity::Products), TruncateMode::Ignore, 0, &mut out)
            .unwrap_err()
            .contains("more than 2 decimal places")
    );
}

/// One decoder reads a whole topic's batch and parses a schema once; a message with another
/// schema (the table changed) must be read with its own, and the one after it with the first again.
#[test]
fn a_decoder_reads_each_message_with_its_own_schema() {
    let msg = |scale: u32, price: &str| {
        format!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","field":"after","fields":[{{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{{"scale":"{scale}"}},"field":"price"}}]}}]}},"payload":{{"op":"c","after":{{"price":"{price}"}},"source":{{"lsn":"77","ts_ms":5}}}}}}"#
        )
    };
    let key = |t: &str, v: &str| {
        format!(r#"{{"schema":{{"type":"struct","fields":[{{"type":"{t}","field":"id"}}]}},"payload":{{"id":{v}}}}}"#)
    };
    let mut d = Decoder::default();
    let mut read = |k: &str, v: &str| d.decode(&meta(), Some(k), Some(v)).unwrap().unwrap();
    // 0x07CF = 1999
    let a = read(&key("int64", "1"), &msg(2, "B88="));
    let b = read(&key("string", "\"p1\""), &msg(3, "B88="));
    let c = read(&key("int64", "2"), &msg(2, "B88="));
    assert_eq!(a.row["price"], FieldValue::Decimal { unscaled: 1999, scale: 2 });
    assert_eq!(b.row["price"], FieldValue::Decimal { unscaled: 1999, scale: 3 });
    assert_eq!(c.row["price"], FieldValue::Decimal { unscaled: 1999, scale: 2 });
    assert_eq!((a.key["id"].clone(), b.key["id"].clone()), (FieldValue::Int(1), FieldValue::Str("p1".into())));
    assert_eq!((a.pos.primary, a.source_ts_ms), (77, Some(5)), "an LSN written as a string");
}

/// Nanoseconds in a `ts_ms` field (the fuzzer's input, from a misconfigured transform): the change
/// is refused with the reason rather than given a wrapped time (or, in a debug build, a panic).
#[test]
fn a_source_time_beyond_range_is_refused_not_wrapped() {
    let v = r#"{"customer_id":7,"__deleted":"false","__source_ts_ms":1733060033060000000,"__lsn":24090001}"#;
    let c = decode(&meta(), None, Some(v)).unwrap().expect("not a tombstone");
    let err = apply(&c, &table(Entity::Customers), TruncateMode::Delete, 0, &mut Changes::default()).unwrap_err();
    assert!(err.contains("source ts_ms 1733060033060000000 is out of range"), "{err}");
    // An `updated_at` column takes precedence over the source time, as before.
    let v = r#"{"customer_id":7,"updated_at":"2024-01-02T03:04:05Z","__source_ts_ms":1733060033060000000,"__lsn":1}"#;
    let c = decode(&meta(), None, Some(v)).unwrap().expect("not a tombstone");
    let mut out = Changes::default();
    apply(&c, &table(Entity::Customers), TruncateMode::Delete, 0, &mut out).unwrap();
    assert_eq!(out.customers[0].updated_at_us, 1_704_164_645_000_000);
}
