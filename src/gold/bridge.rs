//! Arrow ⇄ Polars through the Arrow C data interface (zero-copy), because deltalake speaks
//! arrow-rs and Polars has its own Arrow implementation. Money crosses as integer hundredths
//! (`Int64`), so every Polars sum and product on money is exact integer arithmetic.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Int64Array, RecordBatch, make_array};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType as ArrowType, Decimal128Type, Field, Schema, SchemaRef};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use polars::prelude::{Column, CompatLevel, DataFrame, IntoColumn, Series};

use crate::error::{Error, Result};
use crate::lake::schema::{Col, MONEY_PRECISION, MONEY_SCALE, TableSpec};

/// The Polars type a lake column has inside gold computations (money and timestamps as Int64).
pub fn polars_type(c: Col) -> polars::prelude::DataType {
    use polars::prelude::DataType as P;
    match c {
        Col::Str => P::String,
        Col::Int => P::Int32,
        Col::Long | Col::Money | Col::Ts => P::Int64,
        Col::Bool => P::Boolean,
        Col::Date => P::Date,
    }
}

fn money_to_cents(a: &ArrayRef) -> ArrayRef {
    let d = a.as_primitive::<Decimal128Type>();
    let scale = match a.data_type() {
        ArrowType::Decimal128(_, s) => *s,
        _ => MONEY_SCALE,
    };
    // All lake money is decimal(18,2); rescale defensively should another scale ever appear.
    let factor = 10i128.pow((MONEY_SCALE - scale).unsigned_abs() as u32);
    let vals =
        d.values().iter().map(|v| if scale <= MONEY_SCALE { (*v * factor) as i64 } else { (*v / factor) as i64 });
    Arc::new(Int64Array::new(vals.collect(), d.nulls().cloned()))
}

fn cents_to_money(a: &ArrayRef) -> Result<ArrayRef> {
    let a = cast(a, &ArrowType::Int64)?;
    let i = a.as_primitive::<arrow::datatypes::Int64Type>();
    let vals = i.values().iter().map(|v| *v as i128);
    Ok(Arc::new(
        Decimal128Array::new(vals.collect(), i.nulls().cloned())
            .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?,
    ))
}

fn array_to_series(name: &str, a: &ArrayRef) -> Result<Series> {
    let a = match a.data_type() {
        ArrowType::Decimal128(..) => money_to_cents(a),
        _ => a.clone(),
    };
    let (arr, schema) = arrow::ffi::to_ffi(&a.to_data())?;
    // SAFETY: arrow-rs and polars-arrow both implement the Arrow C data interface; the structs have
    // the same #[repr(C)] layout, and ownership (the release callbacks) moves with the value.
    let (arr, schema): (polars_arrow::ffi::ArrowArray, polars_arrow::ffi::ArrowSchema) = unsafe {
        (
            std::mem::transmute::<FFI_ArrowArray, polars_arrow::ffi::ArrowArray>(arr),
            std::mem::transmute::<FFI_ArrowSchema, polars_arrow::ffi::ArrowSchema>(schema),
        )
    };
    let field = unsafe { polars_arrow::ffi::import_field_from_c(&schema)? };
    let parr = unsafe { polars_arrow::ffi::import_array_from_c(arr, field.dtype().clone())? };
    Ok(Series::from_arrow(name.into(), parr)?)
}

fn series_to_array(s: &Series) -> Result<ArrayRef> {
    let s = s.rechunk();
    let parr = s.to_arrow(0, CompatLevel::oldest());
    let field = polars_arrow::datatypes::Field::new(s.name().clone(), parr.dtype().clone(), true);
    let schema = polars_arrow::ffi::export_field_to_c(&field);
    let arr = polars_arrow::ffi::export_array_to_c(parr);
    // SAFETY: see `array_to_series`.
    let (arr, schema): (FFI_ArrowArray, FFI_ArrowSchema) = unsafe {
        (
            std::mem::transmute::<polars_arrow::ffi::ArrowArray, FFI_ArrowArray>(arr),
            std::mem::transmute::<polars_arrow::ffi::ArrowSchema, FFI_ArrowSchema>(schema),
        )
    };
    let data = unsafe { arrow::ffi::from_ffi(arr, &schema)? };
    Ok(make_array(data))
}

/// Concatenates scan results into one DataFrame; `schema` gives the columns when there are no rows.
pub fn to_frame(batches: &[RecordBatch], schema: &SchemaRef) -> Result<DataFrame> {
    let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| schema.clone());
    let b = concat_batches(&schema, batches)?;
    let cols = schema
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, a)| array_to_series(f.name(), a).map(IntoColumn::into_column))
        .collect::<Result<Vec<Column>>>()?;
    Ok(DataFrame::new(b.num_rows(), cols)?)
}

/// Converts a frame into a record batch in the column order and types of `spec`, every column
/// nullable: it is a MERGE source, and delete markers carry only their key.
pub fn to_batch(df: &DataFrame, spec: &TableSpec) -> Result<RecordBatch> {
    let schema = spec.arrow_schema();
    let mut cols = Vec::with_capacity(spec.columns.len());
    for (c, f) in spec.columns.iter().zip(schema.fields()) {
        let s = df
            .column(c.name)
            .map_err(|e| Error::Other(format!("gold frame lacks {}: {e}", c.name)))?
            .as_materialized_series();
        let a = series_to_array(s).map_err(|e| Error::Other(format!("column {} ({}): {e}", c.name, s.dtype())))?;
        let a = match f.data_type() {
            ArrowType::Decimal128(..) => cents_to_money(&a)?,
            t if a.data_type() != t => cast(&a, t)?,
            _ => a,
        };
        cols.push(a);
    }
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}
