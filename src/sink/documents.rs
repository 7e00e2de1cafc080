//! Gold rows as the MongoDB documents of the data contract (`orders`, `order_totals`,
//! `customer_totals`, `daily_sales`), written straight into BSON bytes. Building `Document`s
//! first (a map of owned keys and values per document, serialised and dropped afterwards) was
//! about 8 % of orderlake's CPU in a 1M run; SecantusDB bounds the full pipeline and shares the
//! cores with it, so CPU saved here is publishing speed.

use std::collections::HashMap;
use std::ops::Range;

use mongodb::bson::{DateTime, Decimal128, RawArrayBuf, RawBsonRef, RawDocumentBuf};
use polars::prelude::*;

use crate::error::Result;
use crate::gold::OrderFrames;
use crate::lake::rows::date_from_days;

/// An amount in cents as a decimal with two places, e.g. 1234 → `12.34`: IEEE 754 decimal128
/// in its binary-integer encoding (sign, exponent biased by 6176, coefficient), which is what
/// BSON stores. Formatting and parsing a string per amount cost more than the rest of a document.
pub fn cents_decimal(c: i64) -> Decimal128 {
    const EXPONENT_CENTS: u128 = 6176 - 2;
    let bits = (u128::from(c < 0) << 127) | (EXPONENT_CENTS << 113) | u128::from(c.unsigned_abs());
    Decimal128::from_bytes(bits.to_le_bytes())
}

fn money(c: Option<i64>) -> RawBsonRef<'static> {
    c.map_or(RawBsonRef::Null, |c| RawBsonRef::Decimal128(cents_decimal(c)))
}

/// Days since the epoch as a BSON date at midnight UTC.
fn date(d: Option<i32>) -> RawBsonRef<'static> {
    d.map_or(RawBsonRef::Null, |d| RawBsonRef::DateTime(DateTime::from_millis(i64::from(d) * 86_400_000)))
}

/// Microseconds since the epoch (how the lake stores `updated_at`) as a BSON date.
fn micros(us: Option<i64>) -> RawBsonRef<'static> {
    RawBsonRef::DateTime(DateTime::from_millis(us.unwrap_or(0) / 1000))
}

fn text(v: Option<&str>) -> RawBsonRef<'_> {
    v.map_or(RawBsonRef::Null, RawBsonRef::String)
}

fn int(v: Option<i64>) -> RawBsonRef<'static> {
    v.map_or(RawBsonRef::Null, RawBsonRef::Int64)
}

/// Column accessors that tolerate any integer width Polars produced.
struct Cols<'a>(&'a DataFrame);
impl Cols<'_> {
    fn s(&self, c: &str) -> Result<StringChunked> {
        Ok(self.0.column(c)?.str()?.clone())
    }
    fn i(&self, c: &str) -> Result<Int64Chunked> {
        Ok(self.0.column(c)?.cast(&DataType::Int64)?.i64()?.clone())
    }
    fn d(&self, c: &str) -> Result<Int32Chunked> {
        Ok(self.0.column(c)?.cast(&DataType::Int32)?.i32()?.clone())
    }
    fn b(&self, c: &str) -> Result<BooleanChunked> {
        Ok(self.0.column(c)?.bool()?.clone())
    }
}

/// The `orders` and `order_totals` documents of a batch, built a row range at a time; an order's
/// lines (sorted by item) are nested in its `orders` document.
pub struct OrderDocs {
    lines_of: HashMap<String, Vec<usize>>,
    item: StringChunked,
    product: StringChunked,
    name: StringChunked,
    qty: Int64Chunked,
    price: Int64Chunked,
    amount: Int64Chunked,
    id: StringChunked,
    customer: StringChunked,
    country: StringChunked,
    date: Int32Chunked,
    status: StringChunked,
    cancelled: BooleanChunked,
    lines: Int64Chunked,
    units: Int64Chunked,
    total: Int64Chunked,
    updated: Int64Chunked,
}

impl OrderDocs {
    pub fn new(g: &OrderFrames) -> Result<Self> {
        let (l, t) = (Cols(&g.order_lines), Cols(&g.order_totals));
        let line_order = l.s("order_id")?;
        let item = l.s("item_id")?;
        let mut lines_of: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, order) in line_order.iter().enumerate() {
            if let Some(order) = order {
                lines_of.entry(order.to_string()).or_default().push(i);
            }
        }
        for rows in lines_of.values_mut() {
            rows.sort_by(|&a, &b| item.get(a).unwrap_or("").cmp(item.get(b).unwrap_or("")));
        }
        Ok(OrderDocs {
            lines_of,
            item,
            product: l.s("product_id")?,
            name: l.s("product_name")?,
            qty: l.i("quantity")?,
            price: l.i("unit_price")?,
            amount: l.i("line_amount")?,
            id: t.s("order_id")?,
            customer: t.s("customer_id")?,
            country: t.s("country")?,
            date: t.d("order_date")?,
            status: t.s("status")?,
            cancelled: t.b("cancelled")?,
            lines: t.i("lines")?,
            units: t.i("units")?,
            total: t.i("total_amount")?,
            updated: t.i("updated_at")?,
        })
    }

    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn orders(&self, rows: Range<usize>) -> Vec<RawDocumentBuf> {
        rows.filter_map(|i| {
            let oid = self.id.get(i)?;
            let mut items = RawArrayBuf::new();
            for &j in self.lines_of.get(oid).map_or(&[][..], Vec::as_slice) {
                let mut item = RawDocumentBuf::new();
                item.append_ref("item_id", text(self.item.get(j)));
                item.append_ref("product_id", text(self.product.get(j)));
                item.append_ref("name", text(self.name.get(j)));
                item.append_ref("quantity", int(self.qty.get(j)));
                item.append_ref("unit_price", money(self.price.get(j)));
                item.append_ref("amount", money(self.amount.get(j)));
                items.push(item);
            }
            let mut d = RawDocumentBuf::new();
            d.append_ref("_id", oid);
            d.append_ref("customer_id", text(self.customer.get(i)));
            d.append_ref("country", text(self.country.get(i)));
            d.append_ref("order_date", date(self.date.get(i)));
            d.append_ref("status", text(self.status.get(i)));
            d.append_ref("items", &items);
            d.append_ref("total_amount", money(self.total.get(i)));
            d.append_ref("updated_at", micros(self.updated.get(i)));
            Some(d)
        })
        .collect()
    }

    pub fn totals(&self, rows: Range<usize>) -> Vec<RawDocumentBuf> {
        rows.filter_map(|i| {
            let mut d = RawDocumentBuf::new();
            d.append_ref("_id", self.id.get(i)?);
            d.append_ref("customer_id", text(self.customer.get(i)));
            d.append_ref("country", text(self.country.get(i)));
            d.append_ref("order_date", date(self.date.get(i)));
            d.append_ref("status", text(self.status.get(i)));
            d.append_ref("cancelled", self.cancelled.get(i).unwrap_or(false));
            d.append_ref("lines", int(self.lines.get(i)));
            d.append_ref("units", int(self.units.get(i)));
            d.append_ref("total_amount", money(self.total.get(i)));
            d.append_ref("updated_at", micros(self.updated.get(i)));
            Some(d)
        })
        .collect()
    }
}

pub fn customer_docs(df: &DataFrame, rows: Range<usize>) -> Result<Vec<RawDocumentBuf>> {
    let c = Cols(df);
    let (id, country, orders, units, revenue) =
        (c.s("customer_id")?, c.s("country")?, c.i("orders")?, c.i("units")?, c.i("revenue")?);
    let (first, last, upd) = (c.d("first_order_date")?, c.d("last_order_date")?, c.i("updated_at")?);
    Ok(rows
        .filter_map(|i| {
            let mut d = RawDocumentBuf::new();
            d.append_ref("_id", id.get(i)?);
            d.append_ref("country", text(country.get(i)));
            d.append_ref("orders", int(orders.get(i)));
            d.append_ref("units", int(units.get(i)));
            d.append_ref("revenue", money(revenue.get(i)));
            d.append_ref("first_order_date", date(first.get(i)));
            d.append_ref("last_order_date", date(last.get(i)));
            d.append_ref("updated_at", micros(upd.get(i)));
            Some(d)
        })
        .collect())
}

/// `_id` of a daily row: `"<YYYY-MM-DD>|<country>"`.
pub fn daily_id(days: i32, country: &str) -> String {
    format!("{}|{country}", date_from_days(days).format("%Y-%m-%d"))
}

pub fn daily_ids(df: &DataFrame) -> Result<Vec<String>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    let c = Cols(df);
    let (d, country) = (c.d("order_date")?, c.s("country")?);
    Ok((0..df.height()).filter_map(|i| Some(daily_id(d.get(i)?, country.get(i)?))).collect())
}

pub fn daily_docs(df: &DataFrame, rows: Range<usize>) -> Result<Vec<RawDocumentBuf>> {
    let c = Cols(df);
    let (d, country, orders, units, revenue) =
        (c.d("order_date")?, c.s("country")?, c.i("orders")?, c.i("units")?, c.i("revenue")?);
    let (cancelled, cancelled_amount) = (c.i("cancelled_orders")?, c.i("cancelled_amount")?);
    Ok(rows
        .filter_map(|i| {
            let (day, ctry) = (d.get(i)?, country.get(i)?);
            let mut doc = RawDocumentBuf::new();
            doc.append_ref("_id", daily_id(day, ctry).as_str());
            doc.append_ref("order_date", date(Some(day)));
            doc.append_ref("country", ctry);
            doc.append_ref("orders", int(orders.get(i)));
            doc.append_ref("units", int(units.get(i)));
            doc.append_ref("revenue", money(revenue.get(i)));
            doc.append_ref("cancelled_orders", int(cancelled.get(i)));
            doc.append_ref("cancelled_amount", money(cancelled_amount.get(i)));
            Some(doc)
        })
        .collect())
}

#[cfg(test)]
#[path = "documents_tests.rs"]
mod tests;
