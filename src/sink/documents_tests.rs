use mongodb::bson::{Bson, doc};

use super::*;
use crate::decode::decimal::format_cents;

fn dec(s: &str) -> Bson {
    Bson::Decimal128(s.parse().expect("decimal"))
}

#[test]
fn cents_are_the_decimal_the_formatted_amount_parses_to() {
    let mut samples = vec![0, 1, -1, 5, -5, 99, 100, 1234, -1234, 1_000_000_007, i64::MAX, i64::MIN, i64::MIN + 1];
    samples.extend((0..2000).map(|i: i64| i * 7919 - 5_000_000));
    for c in samples {
        let parsed: Decimal128 = format_cents(c).parse().expect("formatted cents parse");
        assert_eq!(cents_decimal(c).bytes(), parsed.bytes(), "{c} cents");
        assert_eq!(cents_decimal(c).to_string(), parsed.to_string(), "{c} cents");
    }
}

fn order_frames() -> OrderFrames {
    OrderFrames {
        order_lines: df! {
            "order_id" => ["o1", "o1", "o2"],
            "item_id" => ["i2", "i1", "i3"],
            "product_id" => [Some("p2"), Some("p1"), None],
            "product_name" => [Some("Mug"), Some("Lamp"), None],
            "quantity" => [Some(3i64), Some(1), None],
            "unit_price" => [Some(250i64), Some(1999), None],
            "line_amount" => [Some(750i64), Some(1999), Some(-5)],
        }
        .expect("lines"),
        order_totals: df! {
            "order_id" => ["o1", "o2"],
            "customer_id" => [Some("c1"), None],
            "country" => ["UK", "France"],
            "order_date" => [19_723i32, 19_724],
            "status" => ["completed", "cancelled"],
            "cancelled" => [false, true],
            "lines" => [2i64, 1],
            "units" => [4i64, 0],
            "total_amount" => [2749i64, -5],
            "updated_at" => [1_700_000_000_123_456i64, 1_700_000_001_000_000],
        }
        .expect("totals"),
        deleted_orders: Vec::new(),
        version: 7,
    }
}

#[test]
fn an_order_document_nests_its_lines_sorted_by_item() {
    let docs = OrderDocs::new(&order_frames()).expect("docs");
    assert_eq!(docs.len(), 2);
    let orders: Vec<_> = docs.orders(0..2).iter().map(|d| d.to_document().expect("valid bson")).collect();
    assert_eq!(
        orders[0],
        doc! {
            "_id": "o1",
            "customer_id": "c1",
            "country": "UK",
            "order_date": DateTime::from_millis(1_704_067_200_000),
            "status": "completed",
            "items": [
                {"item_id": "i1", "product_id": "p1", "name": "Lamp", "quantity": 1i64,
                 "unit_price": dec("19.99"), "amount": dec("19.99")},
                {"item_id": "i2", "product_id": "p2", "name": "Mug", "quantity": 3i64,
                 "unit_price": dec("2.50"), "amount": dec("7.50")},
            ],
            "total_amount": dec("27.49"),
            "updated_at": DateTime::from_millis(1_700_000_000_123),
        }
    );
    let items = orders[1].get_array("items").expect("items");
    assert_eq!(
        items[0],
        Bson::Document(doc! {"item_id": "i3", "product_id": Bson::Null, "name": Bson::Null,
        "quantity": Bson::Null, "unit_price": Bson::Null, "amount": dec("-0.05")})
    );
    assert_eq!(orders[1].get("customer_id"), Some(&Bson::Null));
}

#[test]
fn an_order_totals_document_carries_the_order_figures() {
    let docs = OrderDocs::new(&order_frames()).expect("docs");
    let totals: Vec<_> = docs.totals(1..2).iter().map(|d| d.to_document().expect("valid bson")).collect();
    assert_eq!(
        totals,
        vec![doc! {
            "_id": "o2",
            "customer_id": Bson::Null,
            "country": "France",
            "order_date": DateTime::from_millis(1_704_153_600_000),
            "status": "cancelled",
            "cancelled": true,
            "lines": 1i64,
            "units": 0i64,
            "total_amount": dec("-0.05"),
            "updated_at": DateTime::from_millis(1_700_000_001_000),
        }]
    );
}

#[test]
fn customer_and_daily_documents_follow_the_contract() {
    let customers = df! {
        "customer_id" => ["c1"],
        "country" => ["UK"],
        "orders" => [3i64],
        "units" => [12i64],
        "revenue" => [123_456i64],
        "first_order_date" => [19_723i32],
        "last_order_date" => [Some(19_724i32)],
        "updated_at" => [2_000_000i64],
    }
    .expect("customers");
    let got = customer_docs(&customers, 0..1).expect("docs")[0].to_document().expect("bson");
    assert_eq!(
        got,
        doc! {
            "_id": "c1", "country": "UK", "orders": 3i64, "units": 12i64, "revenue": dec("1234.56"),
            "first_order_date": DateTime::from_millis(1_704_067_200_000),
            "last_order_date": DateTime::from_millis(1_704_153_600_000),
            "updated_at": DateTime::from_millis(2_000),
        }
    );
    let days = df! {
        "order_date" => [19_723i32],
        "country" => ["UK"],
        "orders" => [2i64],
        "units" => [5i64],
        "revenue" => [900i64],
        "cancelled_orders" => [1i64],
        "cancelled_amount" => [-100i64],
    }
    .expect("days");
    let got = daily_docs(&days, 0..1).expect("docs")[0].to_document().expect("bson");
    assert_eq!(
        got,
        doc! {
            "_id": "2024-01-01|UK", "order_date": DateTime::from_millis(1_704_067_200_000), "country": "UK",
            "orders": 2i64, "units": 5i64, "revenue": dec("9.00"), "cancelled_orders": 1i64,
            "cancelled_amount": dec("-1.00"),
        }
    );
    assert_eq!(daily_ids(&days).expect("ids"), vec!["2024-01-01|UK".to_string()]);
}
