//! Property tests: random bytes and random mutations of valid events, fed to every decoder, never
//! panic; whatever decodes satisfies the contract's invariants, and everything else says why.

use proptest::prelude::*;

use crate::cdc_config::{CdcTable, TruncateMode};
use crate::decode::debezium;
use crate::decode::decimal::{format_cents, parse_cents};
use crate::decode::mapping::apply;
use crate::decode::sales::{MessageMeta, decode};
use crate::model::{Changes, Entity};

const SALE: &str = r#"{"TransactionNo":"C581484","Date":"12/9/2019","ProductNo":"23843","ProductName":"Paper Craft","Price":"6.19","Quantity":-80,"CustomerNo":17490,"Country":"United Kingdom"}"#;
const CDC: &str = r#"{"before":null,"after":{"order_id":1001,"customer_id":42,"country":"France","order_date":20058,"status":"placed","price":{"scale":2,"value":"B88="}},"source":{"lsn":24023960,"ts_ms":1},"op":"c","ts_ms":2}"#;
const FLAT: &str = r#"{"order_id":7,"status":"paid","__deleted":"false","__op":"u","__lsn":99}"#;

fn meta() -> MessageMeta<'static> {
    MessageMeta { topic: "t", partition: 0, offset: 1, timestamp_ms: Some(1) }
}

/// A mutation of `base`: a byte replaced, removed, inserted, or the text cut short.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (0..base.len(), any::<u8>(), 0u8..4).prop_map(move |(i, b, kind)| {
        let mut v = base.as_bytes().to_vec();
        match kind {
            0 => v[i] = b,
            1 => {
                v.remove(i);
            }
            2 => v.insert(i, b),
            _ => v.truncate(i),
        }
        v
    })
}

fn check_cdc(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(Some(c)) = debezium::Decoder::default().decode(&meta(), None, Some(text)) {
        for e in Entity::ALL {
            let t = CdcTable { entity: e, topic: "t".into(), columns: Default::default(), pii: Default::default() };
            let mut out = Changes::default();
            if let Err(reason) = apply(&c, &t, TruncateMode::Delete, 0, &mut out) {
                assert!(!reason.is_empty());
            }
            for p in out.products.iter().filter_map(|p| p.price) {
                assert!(p.unsigned_abs() < 1_000_000_000_000_000_000, "price fits decimal(18,2)");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn sales_decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Err(reason) = decode(&meta(), Some(&bytes), 0) {
            prop_assert!(!reason.is_empty());
        }
    }

    #[test]
    fn sales_decoder_on_mutated_events(bytes in mutated(SALE)) {
        match decode(&meta(), Some(&bytes), 0) {
            Ok(line) => {
                prop_assert!(!line.order.order_id.is_empty());
                prop_assert!(line.item.unit_price.is_some_and(|p| (0..1_000_000_000_000_000_000).contains(&p)));
                prop_assert_eq!(line.order.status == "cancelled", line.order.order_id.starts_with('C'));
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn debezium_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_cdc(&bytes);
    }

    #[test]
    fn debezium_decoder_on_mutated_envelopes(a in mutated(CDC), b in mutated(FLAT)) {
        check_cdc(&a);
        check_cdc(&b);
    }

    #[test]
    fn amounts_round_trip_or_say_why(s in "[-+]?[0-9]{0,20}(\\.[0-9]{0,5})?([eE][0-9])?") {
        match parse_cents(&s) {
            Ok(c) => prop_assert_eq!(parse_cents(&format_cents(c)), Ok(c)),
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn connect_values_of_any_shape(v in any::<i64>(), scale in 0u64..200, name in prop::sample::select(vec![
        "io.debezium.time.Date", "io.debezium.time.Time", "io.debezium.time.Timestamp", "io.debezium.time.MicroTimestamp",
        "io.debezium.time.NanoTimestamp", "io.debezium.data.VariableScaleDecimal", "org.apache.kafka.connect.data.Decimal"])) {
        let schema = crate::decode::connect::FieldSchema { type_: "int64".into(), name: Some(name.into()), scale: Some(scale as u32) };
        for value in [serde_json::json!(v), serde_json::json!({"scale": scale, "value": "AQID"}), serde_json::json!("AQID")] {
            if let Ok(f) = crate::decode::connect::decode_field(&value, Some(&schema)) {
                let _ = f.to_text();
                let _ = f.to_cents();
                let _ = f.to_date();
                let _ = f.to_timestamp_us();
                let _ = f.to_i64();
            }
        }
    }
}
