//! Totals computed directly from sales lines by the simplest possible code, independent of the
//! pipeline, to compare the lake and MongoDB against.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use orderlake::decode::decimal::parse_cents;
use orderlake::produce::SaleRecord;

#[derive(Debug, Default)]
pub struct Reference {
    /// order_id → [lines, units, total]
    pub orders: BTreeMap<String, Vec<i64>>,
    /// customer_id → [orders, units, revenue]
    pub customers: BTreeMap<String, Vec<i64>>,
    /// "YYYY-MM-DD|country" → [orders, units, revenue, cancelled_orders, cancelled_amount]
    pub daily: BTreeMap<String, Vec<i64>>,
}

pub fn day(date: &str) -> NaiveDate {
    NaiveDate::parse_from_str(date, "%m/%d/%Y").unwrap()
}

pub fn compute(lines: &[SaleRecord]) -> Reference {
    let mut r = Reference::default();
    let mut order_meta: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for l in lines {
        let amount = parse_cents(&l.price).unwrap() * l.quantity.parse::<i64>().unwrap();
        let o = r.orders.entry(l.transaction_no.clone()).or_insert_with(|| vec![0, 0, 0]);
        o[0] += 1;
        o[1] += l.quantity.parse::<i64>().unwrap();
        o[2] += amount;
        order_meta.insert(l.transaction_no.clone(), (l.customer_no.clone(), l.date.clone(), l.country.clone()));
    }
    let mut cust_orders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, t) in &r.orders {
        let (cust, date, country) = &order_meta[id];
        let cancelled = id.starts_with('C');
        if !cust.is_empty() {
            let c = r.customers.entry(cust.clone()).or_insert_with(|| vec![0, 0, 0]);
            if !cancelled {
                cust_orders.entry(cust.clone()).or_default().insert(id.clone());
            }
            c[1] += t[1];
            c[2] += t[2];
        }
        let country = if country.is_empty() { "Unknown" } else { country };
        let k = format!("{}|{country}", day(date).format("%Y-%m-%d"));
        let d = r.daily.entry(k).or_insert_with(|| vec![0, 0, 0, 0, 0]);
        if cancelled {
            d[3] += 1;
            d[4] -= t[2];
        } else {
            d[0] += 1;
        }
        d[1] += t[1];
        d[2] += t[2];
    }
    for (c, v) in r.customers.iter_mut() {
        v[0] = cust_orders.get(c).map_or(0, |s| s.len() as i64);
    }
    r
}
