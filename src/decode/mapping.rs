//! Maps decoded CDC changes onto the canonical tables through the configured column map.
//! Source columns that are not mapped are kept as text extras (silver grows a column for each).

use std::collections::BTreeMap;

use super::connect::FieldValue;
use super::debezium::{CdcChange, CdcOp};
use crate::cdc_config::{CdcTable, TruncateMode, canonical_columns};
use crate::model::{Changes, CustomerRow, DeleteRow, Entity, Extra, ItemRow, OrderRow, ProductRow, Truncate};

struct Row<'a> {
    t: &'a CdcTable,
    fields: &'a BTreeMap<String, FieldValue>,
}

impl Row<'_> {
    fn get(&self, canonical: &str) -> &FieldValue {
        self.fields.get(self.t.source(canonical)).unwrap_or(&FieldValue::Null)
    }
    fn text(&self, c: &str) -> Option<String> {
        self.get(c).to_text()
    }
    fn required(&self, c: &str) -> Result<String, String> {
        self.text(c).filter(|s| !s.is_empty()).ok_or_else(|| format!("{} is missing ({})", c, self.t.source(c)))
    }
    fn cents(&self, c: &str) -> Result<Option<i64>, String> {
        self.get(c).to_cents().map_err(|e| format!("{c}: {e}"))
    }
    fn extra(&self) -> Extra {
        let mapped: Vec<&str> = canonical_columns(self.t.entity).iter().map(|c| self.t.source(c)).collect();
        self.fields
            .iter()
            .filter(|(k, _)| !mapped.contains(&k.as_str()) && !k.is_empty())
            .map(|(k, v)| (k.clone(), v.to_text()))
            .collect()
    }
}

/// The key of a delete: from the before image, else from the Kafka key.
fn delete_key(c: &CdcChange, t: &CdcTable) -> Result<String, String> {
    let col = t.source(t.entity.key_column());
    c.row
        .get(col)
        .and_then(FieldValue::to_text)
        .or_else(|| c.key.get(col).and_then(FieldValue::to_text))
        .or_else(|| (c.key.len() == 1).then(|| c.key.values().next().and_then(FieldValue::to_text)).flatten())
        .ok_or_else(|| format!("delete without a key ({col}) in before image or message key"))
}

/// Adds the effect of one change to `out`. Returns `Ok(false)` for an ignored truncate.
pub fn apply(
    c: &CdcChange,
    t: &CdcTable,
    truncate: TruncateMode,
    fallback_ts_us: i64,
    out: &mut Changes,
) -> Result<bool, String> {
    match c.op {
        CdcOp::Delete => {
            out.deletes.push(DeleteRow { entity: t.entity, key: delete_key(c, t)?, pos: c.pos.clone() });
            return Ok(true);
        }
        CdcOp::Truncate => {
            if truncate == TruncateMode::Delete {
                out.truncates.push(Truncate { entity: t.entity, pos: c.pos.clone() });
            }
            return Ok(truncate == TruncateMode::Delete);
        }
        CdcOp::Upsert => {}
    }
    let r = Row { t, fields: &c.row };
    let updated_at_us =
        match (r.get("updated_at").to_timestamp_us().map_err(|e| format!("updated_at: {e}"))?, c.source_ts_ms) {
            (Some(us), _) => us,
            (None, Some(ms)) => super::connect::mul(ms, 1000, "source ts_ms")?,
            (None, None) => fallback_ts_us,
        };
    let (pos, extra) = (c.pos.clone(), r.extra());
    match t.entity {
        Entity::Orders => out.orders.push(OrderRow {
            order_id: r.required("order_id")?,
            customer_id: r.text("customer_id"),
            country: r.text("country"),
            order_date: r.get("order_date").to_date().map_err(|e| format!("order_date: {e}"))?,
            status: r.text("status").unwrap_or_default(),
            updated_at_us,
            pos,
            extra,
        }),
        Entity::OrderItems => out.items.push(ItemRow {
            item_id: r.required("item_id")?,
            order_id: r.required("order_id")?,
            product_id: r.required("product_id")?,
            quantity: r.get("quantity").to_i64().map_err(|e| format!("quantity: {e}"))?.unwrap_or(0),
            unit_price: r.cents("unit_price")?,
            updated_at_us,
            pos,
            extra,
            once: false,
        }),
        Entity::Products => out.products.push(ProductRow {
            product_id: r.required("product_id")?,
            name: r.text("name"),
            category: r.text("category"),
            price: r.cents("price")?,
            updated_at_us,
            pos,
            extra,
        }),
        Entity::Customers => out.customers.push(CustomerRow {
            customer_id: r.required("customer_id")?,
            name: r.text("name"),
            email: r.text("email"),
            country: r.text("country"),
            updated_at_us,
            pos,
            extra,
        }),
    }
    Ok(true)
}
