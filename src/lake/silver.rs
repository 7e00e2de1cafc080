//! Silver: the current state of orders, items, products and customers, MERGEd by key. A change
//! updates a row only when its source position is newer than the row's, so replays and
//! out-of-order arrivals can never move a row back in time.

use std::collections::HashMap;
use std::hash::Hash;

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;

use super::merge::{MergeSpec, merge};
use super::schema::{self, TableSpec};
use super::{Lake, rows};
use crate::error::Result;
use crate::model::{Changes, SourcePos};

/// The silver tables in the order they are written.
pub const TABLES: [(&str, &TableSpec); 4] = [
    ("products", &schema::SILVER_PRODUCTS),
    ("customers", &schema::SILVER_CUSTOMERS),
    ("orders", &schema::SILVER_ORDERS),
    ("order_items", &schema::SILVER_ORDER_ITEMS),
];

pub fn app_id(group: &str, topic: &str) -> String {
    format!("{group}/silver/{topic}")
}

/// Keeps the newest change per key: MERGE needs unique source keys, and the newest one wins anyway.
pub fn newest_per_key<'a, T, K: Eq + Hash>(
    rows: &'a [T],
    key: impl Fn(&T) -> K,
    pos: impl Fn(&T) -> &SourcePos,
) -> Vec<&'a T> {
    let mut best: HashMap<K, &T> = HashMap::with_capacity(rows.len());
    for r in rows {
        match best.entry(key(r)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if pos(r) >= pos(e.get()) {
                    e.insert(r);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
    }
    best.into_values().collect()
}

/// Applies `changes` to one silver table (by name), recording `txn`. Returns `None` when the batch
/// has nothing for that table (no commit is made).
pub async fn apply_table(
    lake: &Lake,
    prefix: &str,
    name: &str,
    spec: &TableSpec,
    changes: &Changes,
    txn: Transaction,
) -> Result<Option<DeltaTable>> {
    let batch = match name {
        "orders" if !changes.orders.is_empty() => {
            rows::orders(&newest_per_key(&changes.orders, |r| r.order_id.clone(), |r| &r.pos))?
        }
        "order_items" if !changes.items.is_empty() => {
            rows::items(&newest_per_key(&changes.items, |r| r.item_id.clone(), |r| &r.pos))?
        }
        "products" if !changes.products.is_empty() => {
            rows::products(&newest_per_key(&changes.products, |r| r.product_id.clone(), |r| &r.pos))?
        }
        "customers" if !changes.customers.is_empty() => {
            rows::customers(&newest_per_key(&changes.customers, |r| r.customer_id.clone(), |r| &r.pos))?
        }
        _ => return Ok(None),
    };
    let table = lake.open_or_create(&format!("{prefix}/{name}"), spec).await?;
    let m = MergeSpec { spec, guard: Some("source_pos") };
    Ok(Some(merge(table, &m, batch, vec![txn]).await?))
}
