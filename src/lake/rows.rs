//! Turning canonical rows into Arrow record batches in each table's declared column order.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use std::collections::BTreeSet;

use arrow::datatypes::{DataType, Field, Schema};
use chrono::NaiveDate;

use super::schema::{self, MONEY_PRECISION, MONEY_SCALE, TableSpec};
use crate::error::Result;
use crate::model::{Cents, CustomerRow, DeadLetter, Extra, ItemRow, OrderRow, ProductRow, SourcePos};

pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

pub fn date_from_days(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(days as i64)
}

pub fn str_col<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}
/// The `source_pos` column.
pub fn pos_col<'a>(v: impl ExactSizeIterator<Item = &'a SourcePos>) -> ArrayRef {
    let mut col = StringBuilder::with_capacity(v.len(), v.len() * SourcePos::WIDTH);
    for p in v {
        p.append_to(&mut col);
    }
    Arc::new(col.finish())
}
pub fn int_col(v: impl IntoIterator<Item = Option<i32>>) -> ArrayRef {
    Arc::new(Int32Array::from_iter(v))
}
pub fn long_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(v))
}
pub fn bool_col(v: impl IntoIterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(v))
}
pub fn date_col(v: impl IntoIterator<Item = Option<NaiveDate>>) -> ArrayRef {
    Arc::new(Date32Array::from_iter(v.into_iter().map(|d| d.map(days_since_epoch))))
}
pub fn ts_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(v).with_timezone("UTC"))
}
pub fn money_col(v: impl IntoIterator<Item = Option<Cents>>) -> ArrayRef {
    Arc::new(
        Decimal128Array::from_iter(v.into_iter().map(|c| c.map(i128::from)))
            .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)
            .expect("valid decimal(18,2)"),
    )
}

pub fn batch(spec: &TableSpec, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(spec.arrow_schema(), columns)?)
}

/// Like [`batch`], plus one nullable text column per extra (unmapped) source column seen in
/// `extras`; every column is nullable because the batch is a MERGE source that may carry delete markers.
fn with_extras(spec: &TableSpec, mut columns: Vec<ArrayRef>, extras: &[&Extra]) -> Result<RecordBatch> {
    let names: BTreeSet<&str> = extras.iter().flat_map(|e| e.iter().map(|(k, _)| k.as_str())).collect();
    let mut fields: Vec<Field> =
        spec.arrow_schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    for n in names {
        if spec.names().any(|c| c == n) {
            continue; // never shadow a canonical column
        }
        fields.push(Field::new(n, DataType::Utf8, true));
        columns.push(str_col(extras.iter().map(|e| e.iter().find(|(k, _)| k == n).and_then(|(_, v)| v.as_deref()))));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

pub fn dead_letters(rows: &[DeadLetter], now_us: i64) -> Result<RecordBatch> {
    batch(
        &schema::DEAD_LETTERS,
        vec![
            str_col(rows.iter().map(|r| Some(r.topic.as_str()))),
            int_col(rows.iter().map(|r| Some(r.partition))),
            long_col(rows.iter().map(|r| Some(r.offset))),
            str_col(rows.iter().map(|r| r.key.as_deref())),
            str_col(rows.iter().map(|r| r.value.as_deref())),
            str_col(rows.iter().map(|r| Some(r.error.as_str()))),
            ts_col(rows.iter().map(|_| Some(now_us))),
        ],
    )
}

pub fn orders(rows: &[&OrderRow]) -> Result<RecordBatch> {
    let extras: Vec<&Extra> = rows.iter().map(|r| &r.extra).collect();
    with_extras(
        &schema::SILVER_ORDERS,
        vec![
            str_col(rows.iter().map(|r| Some(r.order_id.as_str()))),
            str_col(rows.iter().map(|r| r.customer_id.as_deref())),
            str_col(rows.iter().map(|r| r.country.as_deref())),
            date_col(rows.iter().map(|r| r.order_date)),
            str_col(rows.iter().map(|r| Some(r.status.as_str()))),
            ts_col(rows.iter().map(|r| Some(r.updated_at_us))),
            pos_col(rows.iter().map(|r| &r.pos)),
        ],
        &extras,
    )
}

pub fn items(rows: &[&ItemRow]) -> Result<RecordBatch> {
    let extras: Vec<&Extra> = rows.iter().map(|r| &r.extra).collect();
    with_extras(
        &schema::SILVER_ORDER_ITEMS,
        vec![
            str_col(rows.iter().map(|r| Some(r.item_id.as_str()))),
            str_col(rows.iter().map(|r| Some(r.order_id.as_str()))),
            str_col(rows.iter().map(|r| Some(r.product_id.as_str()))),
            long_col(rows.iter().map(|r| Some(r.quantity))),
            money_col(rows.iter().map(|r| r.unit_price)),
            ts_col(rows.iter().map(|r| Some(r.updated_at_us))),
            pos_col(rows.iter().map(|r| &r.pos)),
        ],
        &extras,
    )
}

pub fn products(rows: &[&ProductRow]) -> Result<RecordBatch> {
    let extras: Vec<&Extra> = rows.iter().map(|r| &r.extra).collect();
    with_extras(
        &schema::SILVER_PRODUCTS,
        vec![
            str_col(rows.iter().map(|r| Some(r.product_id.as_str()))),
            str_col(rows.iter().map(|r| r.name.as_deref())),
            str_col(rows.iter().map(|r| r.category.as_deref())),
            money_col(rows.iter().map(|r| r.price)),
            ts_col(rows.iter().map(|r| Some(r.updated_at_us))),
            pos_col(rows.iter().map(|r| &r.pos)),
        ],
        &extras,
    )
}

pub fn customers(rows: &[&CustomerRow]) -> Result<RecordBatch> {
    let extras: Vec<&Extra> = rows.iter().map(|r| &r.extra).collect();
    with_extras(
        &schema::SILVER_CUSTOMERS,
        vec![
            str_col(rows.iter().map(|r| Some(r.customer_id.as_str()))),
            str_col(rows.iter().map(|r| r.name.as_deref())),
            str_col(rows.iter().map(|r| r.email.as_deref())),
            str_col(rows.iter().map(|r| r.country.as_deref())),
            ts_col(rows.iter().map(|r| Some(r.updated_at_us))),
            pos_col(rows.iter().map(|r| &r.pos)),
        ],
        &extras,
    )
}
