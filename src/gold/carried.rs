//! Gold frames that leave keys to a later MongoDB publish (`pipeline::publish`).
//!
//! Aggregates: when a batch's `customer_totals` and `daily_sales` go out together with a later
//! batch's, a key both batches touched needs only the later row: that row is newer, and MongoDB's
//! version guard keeps it either way. Each frame keeps its own version, so a key only the earlier
//! batch touched is still written at the version it was read at (another topic may have moved it
//! since).
//!
//! Orders: a publish leaves out the orders a publish queued behind it writes (`sink::queue`).

use std::collections::HashSet;
use std::sync::Arc;

use polars::prelude::*;

use super::{AggregateFrames, OrderFrames};
use crate::error::Result;

/// The `(order_date, country)` keys of a `daily_sales`-shaped frame, as days since the epoch.
fn day_keys(df: &DataFrame) -> Result<Vec<Option<(i32, String)>>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    let days = df.column("order_date")?.cast(&DataType::Int32)?.i32()?.clone();
    let countries = df.column("country")?.str()?.clone();
    Ok(days.iter().zip(countries.iter()).map(|(d, c)| Some((d?, c?.to_string()))).collect())
}

fn customer_keys(df: &DataFrame) -> Result<Vec<Option<String>>> {
    string_keys(df, "customer_id")
}

fn string_keys(df: &DataFrame, column: &str) -> Result<Vec<Option<String>>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    Ok(df.column(column)?.str()?.iter().map(|c| c.map(str::to_string)).collect())
}

/// `df` without the rows whose key `newer` holds (rows without a key stay: they name nothing).
fn keep_unless<K: std::hash::Hash + Eq>(df: &DataFrame, keys: Vec<Option<K>>, newer: &HashSet<K>) -> Result<DataFrame> {
    if newer.is_empty() || df.height() == 0 {
        return Ok(df.clone());
    }
    let mask: BooleanChunked = keys.into_iter().map(|k| k.is_none_or(|k| !newer.contains(&k))).collect();
    Ok(df.filter(&mask)?)
}

impl AggregateFrames {
    /// These frames without the keys `newer` writes or deletes. Whole-table frames are not
    /// carried (`pipeline::publish`), so neither side is one here.
    pub fn without_keys_of(&self, newer: &AggregateFrames) -> Result<AggregateFrames> {
        let customers: HashSet<String> = customer_keys(&newer.customer_totals)?
            .into_iter()
            .flatten()
            .chain(newer.deleted_customers.iter().cloned())
            .collect();
        let days: HashSet<(i32, String)> =
            day_keys(&newer.daily_sales)?.into_iter().chain(day_keys(&newer.deleted_days)?).flatten().collect();
        Ok(AggregateFrames {
            customer_totals: keep_unless(&self.customer_totals, customer_keys(&self.customer_totals)?, &customers)?,
            daily_sales: keep_unless(&self.daily_sales, day_keys(&self.daily_sales)?, &days)?,
            deleted_customers: self.deleted_customers.iter().filter(|c| !customers.contains(*c)).cloned().collect(),
            deleted_days: keep_unless(&self.deleted_days, day_keys(&self.deleted_days)?, &days)?,
            customers_version: self.customers_version,
            days_version: self.days_version,
            customers_whole: self.customers_whole.clone(),
            days_whole: self.days_whole.clone(),
        })
    }

    /// Nothing left to publish.
    pub fn is_empty(&self) -> bool {
        self.customer_totals.height() == 0
            && self.daily_sales.height() == 0
            && self.deleted_customers.is_empty()
            && self.deleted_days.height() == 0
    }

    /// Either frame holds its whole table (a publish that must be followed by a sweep).
    pub fn is_whole(&self) -> bool {
        self.customers_whole.is_some() || self.days_whole.is_some()
    }
}

impl OrderFrames {
    /// The ids of the orders whose documents these frames write or delete.
    pub fn order_ids(&self) -> Result<HashSet<String>> {
        let written = string_keys(&self.order_totals, "order_id")?.into_iter().flatten();
        Ok(written.chain(self.deleted_orders.iter().cloned()).collect())
    }

    /// These frames without the orders `later` publishes write (their documents at a newer
    /// version), and how many orders that leaves out.
    pub fn without_orders(self, later: &[Arc<HashSet<String>>]) -> Result<(OrderFrames, usize)> {
        let later: HashSet<String> = later.iter().flat_map(|s| s.iter().cloned()).collect();
        if later.is_empty() {
            return Ok((self, 0));
        }
        let before = self.order_totals.height() + self.deleted_orders.len();
        let totals = keep_unless(&self.order_totals, string_keys(&self.order_totals, "order_id")?, &later)?;
        let lines = keep_unless(&self.order_lines, string_keys(&self.order_lines, "order_id")?, &later)?;
        let deleted: Vec<String> = self.deleted_orders.into_iter().filter(|o| !later.contains(o)).collect();
        let left_out = before - totals.height() - deleted.len();
        Ok((
            OrderFrames { order_totals: totals, order_lines: lines, deleted_orders: deleted, version: self.version },
            left_out,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customers(ids: &[&str], orders: &[i64]) -> DataFrame {
        df!("customer_id" => ids, "orders" => orders).unwrap()
    }

    fn days(rows: &[(i32, &str)]) -> DataFrame {
        let d: Vec<i32> = rows.iter().map(|r| r.0).collect();
        let c: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let mut df = df!("order_date" => d, "country" => c, "orders" => vec![1i64; rows.len()]).unwrap();
        df.apply("order_date", |s| s.cast(&DataType::Date).unwrap()).unwrap();
        df
    }

    fn frames(
        cust: DataFrame,
        gone_cust: &[&str],
        day: DataFrame,
        gone_days: &[(i32, &str)],
        version: i64,
    ) -> AggregateFrames {
        AggregateFrames {
            customer_totals: cust,
            daily_sales: day,
            deleted_customers: gone_cust.iter().map(|s| s.to_string()).collect(),
            deleted_days: days(gone_days).select(["order_date", "country"]).unwrap(),
            customers_version: version,
            days_version: version + 100,
            customers_whole: None,
            days_whole: None,
        }
    }

    #[test]
    fn an_earlier_batch_keeps_only_the_keys_the_later_one_does_not_write_or_delete() {
        let older = frames(
            customers(&["c1", "c2", "c3", "c4"], &[1, 2, 3, 4]),
            &["c5", "c6"],
            days(&[(100, "France"), (100, "Spain"), (101, "France")]),
            &[(102, "France"), (103, "Spain")],
            7,
        );
        // The later batch writes c2, deletes c3, re-creates c5; writes 100/France, deletes 101/France
        // and re-creates 102/France.
        let newer = frames(
            customers(&["c2", "c5"], &[20, 50]),
            &["c3"],
            days(&[(100, "France"), (102, "France")]),
            &[(101, "France")],
            9,
        );
        let left = older.without_keys_of(&newer).unwrap();
        assert_eq!(customer_keys(&left.customer_totals).unwrap(), vec![Some("c1".into()), Some("c4".into())]);
        assert_eq!(left.customer_totals.column("orders").unwrap().i64().unwrap().to_vec(), vec![Some(1), Some(4)]);
        assert_eq!(left.deleted_customers, vec!["c6".to_string()]);
        assert_eq!(day_keys(&left.daily_sales).unwrap(), vec![Some((100, "Spain".into()))]);
        assert_eq!(day_keys(&left.deleted_days).unwrap(), vec![Some((103, "Spain".into()))]);
        assert_eq!((left.customers_version, left.days_version), (7, 107), "the earlier batch's versions stay");
        assert!(!left.is_empty());

        // A later batch that touches every key leaves nothing to publish.
        let all = frames(
            customers(&["c1", "c2", "c3", "c4", "c5", "c6"], &[0; 6]),
            &[],
            days(&[(100, "France"), (100, "Spain"), (101, "France"), (102, "France"), (103, "Spain")]),
            &[],
            9,
        );
        assert!(older.without_keys_of(&all).unwrap().is_empty());
        // Nothing in common: everything stays.
        let other = frames(customers(&["c9"], &[1]), &[], days(&[(200, "Japan")]), &[], 9);
        let same = older.without_keys_of(&other).unwrap();
        assert_eq!(same.customer_totals.height(), 4);
        assert_eq!(same.daily_sales.height(), 3);
        assert_eq!(same.deleted_customers.len(), 2);
        assert_eq!(same.deleted_days.height(), 2);
    }

    #[test]
    fn an_order_a_later_publish_writes_is_left_out_with_its_lines() {
        let frames = || OrderFrames {
            order_totals: df!("order_id" => ["o1", "o2", "o3"], "lines" => [2i64, 1, 1]).unwrap(),
            order_lines: df!("order_id" => ["o1", "o1", "o2", "o3"], "item_id" => ["a", "b", "c", "d"]).unwrap(),
            deleted_orders: vec!["o4".into(), "o5".into()],
            version: 12,
        };
        let f = frames();
        assert_eq!(f.order_ids().unwrap(), ["o1", "o2", "o3", "o4", "o5"].map(String::from).into());
        // Two publishes behind it: one rewrites o1 and deletes o3, the other re-creates o4.
        let later = [Arc::new(["o1", "o3"].map(String::from).into()), Arc::new(["o4", "o9"].map(String::from).into())];
        let (left, left_out) = f.without_orders(&later).unwrap();
        assert_eq!(left_out, 3);
        assert_eq!(string_keys(&left.order_totals, "order_id").unwrap(), vec![Some("o2".into())]);
        assert_eq!(string_keys(&left.order_lines, "item_id").unwrap(), vec![Some("c".into())]);
        assert_eq!(left.deleted_orders, vec!["o5".to_string()]);
        assert_eq!(left.version, 12);
        // None behind it: the frames as they were.
        let (same, none) = frames().without_orders(&[]).unwrap();
        assert_eq!(
            (same.order_totals.height(), same.order_lines.height(), same.deleted_orders.len(), none),
            (3, 4, 2, 0)
        );
    }
}
