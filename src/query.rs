//! `orderlake query "<SQL>"`: the analyst's first look at the lake without Python. Every table
//! of `maintain::catalog` is registered in DataFusion under its layer as a schema
//! (`gold.order_totals`, `silver.orders`, `bronze."shop.sales"`, `orderlake.batches`) and read
//! at its latest version through delta-rs' table provider, so the answer is what any Delta
//! reader would see.

use std::sync::Arc;

use deltalake::datafusion::catalog::MemorySchemaProvider;
use deltalake::datafusion::common::TableReference;
use deltalake::datafusion::prelude::SessionContext;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Runs `sql` over the lake and renders at most `limit` rows as a text table.
pub async fn run(settings: &Settings, sql: &str, limit: usize) -> Result<String> {
    let lake = Lake::new(settings);
    lake.check().await?;
    let ctx = SessionContext::new();
    let df_catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
    let mut known = Vec::new();
    for crate::maintain::TableRef { layer: schema, name, rel, .. } in crate::maintain::catalog(settings) {
        let Some(table) = lake.open(&rel).await? else { continue };
        if df_catalog.schema(schema).is_none() {
            df_catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        table.update_datafusion_session(&ctx.state())?;
        ctx.register_table(TableReference::partial(schema, name.as_str()), table.table_provider().await?)?;
        known.push(if name.contains(['.', '-']) { format!("{schema}.\"{name}\"") } else { format!("{schema}.{name}") });
    }
    if known.is_empty() {
        return Err(Error::Other(format!("no tables under {} yet: run `orderlake run` first", settings.lake)));
    }
    let explain = |e: deltalake::datafusion::error::DataFusionError| {
        Error::Other(format!("query: {e}\ntables: {}", known.join(", ")))
    };
    let df = ctx.sql(sql).await.map_err(explain)?;
    let batches = df.limit(0, Some(limit + 1)).map_err(explain)?.collect().await.map_err(explain)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let shown: Vec<_> = if rows > limit {
        let mut left = limit;
        batches
            .iter()
            .map(|b| {
                let n = left.min(b.num_rows());
                left -= n;
                b.slice(0, n)
            })
            .collect()
    } else {
        batches
    };
    let mut out = arrow::util::pretty::pretty_format_batches(&shown)?.to_string();
    out.push('\n');
    if rows > limit {
        out.push_str(&format!("(first {limit} rows; there are more: raise --limit)\n"));
    } else {
        out.push_str(&format!("({rows} row{})\n", if rows == 1 { "" } else { "s" }));
    }
    Ok(out)
}
