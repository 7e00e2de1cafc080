//! Reading tables back: filtered scans for gold recompute (only the keys a batch touched) and whole
//! scans for status and tests.

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::{Expr, SessionContext, col, lit};

use crate::error::Result;

/// Rows of `table` where `column` is one of `values`. Empty `values` reads nothing.
pub async fn scan_where_in(table: &DeltaTable, column: &str, values: Vec<Expr>) -> Result<Vec<RecordBatch>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    scan(table, Some(col(format!("\"{column}\"")).in_list(values, false))).await
}

/// Rows of `table` matching `filter` (all rows when `None`).
pub async fn scan(table: &DeltaTable, filter: Option<Expr>) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    let mut df = ctx.read_table(provider)?;
    if let Some(f) = filter {
        df = df.filter(f)?;
    }
    Ok(df.collect().await?)
}

/// Number of rows in a table.
pub async fn count(table: &DeltaTable) -> Result<usize> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    Ok(ctx.read_table(provider)?.count().await?)
}

pub fn str_lits<'a>(v: impl IntoIterator<Item = &'a String>) -> Vec<Expr> {
    v.into_iter().map(|s| lit(s.clone())).collect()
}
