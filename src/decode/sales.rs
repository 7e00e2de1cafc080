//! Decoder for flat sales events (the Kaggle "Online Shop Business" columns as JSON).
//! One line becomes an order upsert, a product upsert and an order item keyed by its Kafka
//! coordinates, so a replayed message never counts twice while two identical real lines do.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::decimal::parse_cents;
use crate::model::{Cents, ItemRow, OrderRow, ProductRow, SourcePos};

/// The Kafka coordinates of a message, as the decoder needs them.
#[derive(Debug, Clone)]
pub struct MessageMeta<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Kafka message timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl<'a> MessageMeta<'a> {
    pub fn of(e: &'a crate::model::RawEvent) -> Self {
        MessageMeta { topic: &e.topic, partition: e.partition, offset: e.offset, timestamp_ms: e.timestamp_ms }
    }
}

/// One decoded sales line.
#[derive(Debug, Clone, PartialEq)]
pub struct SaleLine {
    pub order: OrderRow,
    pub product: ProductRow,
    pub item: ItemRow,
}

#[derive(Deserialize)]
struct RawSale<'a> {
    #[serde(rename = "TransactionNo", borrow)]
    transaction_no: Option<&'a RawValue>,
    #[serde(rename = "Date", borrow)]
    date: Option<&'a RawValue>,
    #[serde(rename = "ProductNo", borrow)]
    product_no: Option<&'a RawValue>,
    #[serde(rename = "ProductName", borrow)]
    product_name: Option<&'a RawValue>,
    #[serde(rename = "Price", borrow)]
    price: Option<&'a RawValue>,
    #[serde(rename = "Quantity", borrow)]
    quantity: Option<&'a RawValue>,
    #[serde(rename = "CustomerNo", borrow)]
    customer_no: Option<&'a RawValue>,
    #[serde(rename = "Country", borrow)]
    country: Option<&'a RawValue>,
}

/// A scalar JSON field seen as text: strings unquoted, numbers as their literal, null as `None`.
fn scalar_text(field: &str, v: Option<&RawValue>) -> Result<Option<String>, String> {
    let Some(v) = v else { return Ok(None) };
    let raw = v.get().trim();
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw).map(Some).map_err(|e| format!("{field}: {e}")),
        Some(b'n') if raw == "null" => Ok(None),
        Some(b'-' | b'0'..=b'9') => Ok(Some(raw.to_string())),
        _ => Err(format!("{field}: expected a string or number, got {raw}")),
    }
}

fn required(field: &str, v: Option<&RawValue>) -> Result<String, String> {
    match scalar_text(field, v)? {
        Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(format!("{field} is missing")),
    }
}

fn optional(field: &str, v: Option<&RawValue>) -> Result<Option<String>, String> {
    Ok(scalar_text(field, v)?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
}

/// `M/D/YYYY` as in the Kaggle file; ISO `YYYY-MM-DD` is accepted too.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%m/%d/%Y")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
        .map_err(|_| format!("Date '{s}' is not M/D/YYYY"))
        .and_then(|d| {
            if (1900..=2200).contains(&chrono::Datelike::year(&d)) {
                Ok(d)
            } else {
                Err(format!("Date '{s}' is out of range (years 1900-2200)"))
            }
        })
}

fn parse_quantity(s: &str) -> Result<i64, String> {
    let t = s.trim();
    // "3.0" appears when a spreadsheet touched the file; a real fraction is an error.
    let int = t.strip_suffix(".0").unwrap_or(t);
    int.parse::<i64>()
        .ok()
        .filter(|q| q.unsigned_abs() <= 1_000_000_000)
        .ok_or_else(|| format!("Quantity '{t}' is not a whole number of units"))
}

/// CustomerNo arrives as a string, a number (`17490` or `17490.0`) or null/empty/"NA".
fn normalise_customer(s: Option<String>) -> Option<String> {
    let s = s?;
    if s.eq_ignore_ascii_case("na") || s.eq_ignore_ascii_case("nan") || s.eq_ignore_ascii_case("null") {
        return None;
    }
    Some(s.strip_suffix(".0").unwrap_or(&s).to_string())
}

/// Decodes one message value. `Err` carries the reason that goes to the dead-letter table.
pub fn decode(meta: &MessageMeta<'_>, value: Option<&[u8]>, now_us: i64) -> Result<SaleLine, String> {
    let bytes = value.ok_or("empty message (null value)")?;
    let text = std::str::from_utf8(bytes).map_err(|e| format!("value is not UTF-8: {e}"))?;
    let raw: RawSale<'_> = serde_json::from_str(text).map_err(|e| format!("invalid sales event JSON: {e}"))?;

    let order_id = required("TransactionNo", raw.transaction_no)?;
    let order_date = parse_date(&required("Date", raw.date)?)?;
    let product_id = required("ProductNo", raw.product_no)?;
    let product_name = optional("ProductName", raw.product_name)?;
    let price: Cents = parse_cents(&required("Price", raw.price)?).map_err(|e| format!("Price: {e}"))?;
    if price < 0 {
        return Err(format!("Price is negative ({price} hundredths)"));
    }
    let quantity = parse_quantity(&required("Quantity", raw.quantity)?)?;
    let customer_id = normalise_customer(optional("CustomerNo", raw.customer_no)?);
    let country = optional("Country", raw.country)?;
    let cancelled = order_id.starts_with('C');

    let pos = SourcePos {
        primary: meta.timestamp_ms.unwrap_or(0),
        secondary: 0,
        partition: meta.partition,
        offset: meta.offset,
    };
    // When the sale happened as far as the stream knows: the Kafka timestamp.
    // One beyond microseconds' range counts as none, as bronze stores it.
    let updated_at_us = meta.timestamp_ms.and_then(|ms| ms.checked_mul(1000)).unwrap_or(now_us);
    let item_id = format!("{}-{}-{}", meta.topic, meta.partition, meta.offset);
    Ok(SaleLine {
        order: OrderRow {
            order_id: order_id.clone(),
            customer_id,
            country,
            order_date: Some(order_date),
            status: if cancelled { "cancelled" } else { "completed" }.to_string(),
            updated_at_us,
            extra: Vec::new(),
            pos: pos.clone(),
        },
        product: ProductRow {
            product_id: product_id.clone(),
            name: product_name,
            category: None,
            price: Some(price),
            updated_at_us,
            extra: Vec::new(),
            pos: pos.clone(),
        },
        item: ItemRow {
            item_id,
            order_id,
            product_id,
            quantity,
            unit_price: Some(price),
            updated_at_us,
            extra: Vec::new(),
            pos,
            once: true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MessageMeta<'static> {
        MessageMeta { topic: "shop.sales", partition: 2, offset: 41, timestamp_ms: Some(1_700_000_000_000) }
    }

    fn dec(v: &str) -> Result<SaleLine, String> {
        decode(&meta(), Some(v.as_bytes()), 0)
    }

    #[test]
    fn decodes_a_kaggle_line() {
        let l = dec(r#"{"TransactionNo":"581482","Date":"12/9/2019","ProductNo":"22485","ProductName":"Set Of 2 Wooden Market Crates","Price":21.47,"Quantity":12,"CustomerNo":17490,"Country":"United Kingdom"}"#).unwrap();
        assert_eq!(l.order.order_id, "581482");
        assert_eq!(l.order.order_date, NaiveDate::from_ymd_opt(2019, 12, 9));
        assert_eq!(l.order.customer_id.as_deref(), Some("17490"));
        assert_eq!(l.order.status, "completed");
        assert_eq!(l.item.unit_price, Some(2147));
        assert_eq!(l.item.quantity, 12);
        assert_eq!(l.item.item_id, "shop.sales-2-41");
        assert_eq!(l.product.name.as_deref(), Some("Set Of 2 Wooden Market Crates"));
        assert_eq!(l.product.price, Some(2147));
        assert_eq!(l.order.pos.render(), "00000001700000000000-0000000000-000002-00000000000000000041");
    }

    #[test]
    fn edge_cases_cancellation_string_price_missing_customer() {
        let l = dec(r#"{"TransactionNo":"C581484","Date":"2019-12-09","ProductNo":"23843","ProductName":"Paper Craft","Price":"6.19","Quantity":"-80","CustomerNo":"","Country":"United Kingdom","Extra":1}"#).unwrap();
        assert_eq!(l.order.status, "cancelled");
        assert_eq!(l.item.quantity, -80);
        assert_eq!(l.item.unit_price, Some(619));
        assert_eq!(l.order.customer_id, None);
        for c in [r#"null"#, r#""NA""#] {
            let v = format!(
                r#"{{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1,"CustomerNo":{c}}}"#
            );
            assert_eq!(dec(&v).unwrap().order.customer_id, None, "{c}");
        }
        let l = dec(r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":0.1,"Quantity":3.0,"CustomerNo":"17490.0"}"#).unwrap();
        assert_eq!(l.order.customer_id.as_deref(), Some("17490"));
        assert_eq!(l.item.unit_price, Some(10));
        assert_eq!(l.item.quantity, 3);
        assert_eq!(l.order.country, None);
    }

    #[test]
    fn invalid_events_say_why() {
        let cases = [
            (r#"not json"#, "invalid sales event JSON"),
            (r#"{"Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1}"#, "TransactionNo is missing"),
            (
                r#"{"TransactionNo":"1","Date":"31/31/2019","ProductNo":"P","Price":1,"Quantity":1}"#,
                "Date '31/31/2019'",
            ),
            (r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":"abc","Quantity":1}"#, "Price:"),
            (
                r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1.005,"Quantity":1}"#,
                "more than 2 decimal places",
            ),
            (r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":-1,"Quantity":1}"#, "negative"),
            (r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1.5}"#, "whole number"),
            (
                r#"{"TransactionNo":{"a":1},"Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1}"#,
                "TransactionNo: expected",
            ),
            (r#"{"TransactionNo":"1","Date":"1/2/0019","ProductNo":"P","Price":1,"Quantity":1}"#, "out of range"),
            (r#"[1,2]"#, "invalid sales event JSON"),
        ];
        for (v, want) in cases {
            let err = dec(v).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
        assert!(decode(&meta(), None, 0).unwrap_err().contains("null value"));
        // A producer sets the Kafka timestamp; one beyond microseconds' range counts as none
        // (the line's time is then the decoding's), never a wrapped time.
        let line = r#"{"TransactionNo":"1","Date":"1/2/2019","ProductNo":"P","Price":1,"Quantity":1}"#;
        let far = MessageMeta { timestamp_ms: Some(i64::MAX / 10), ..meta() };
        assert_eq!(decode(&far, Some(line.as_bytes()), 42).unwrap().order.updated_at_us, 42);
        assert!(decode(&meta(), Some(&[0xff, 0xfe]), 0).unwrap_err().contains("UTF-8"));
    }
}
