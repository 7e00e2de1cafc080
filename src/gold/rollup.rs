//! The aggregates of one batch: `customer_totals`, `daily_sales` and `product_sales`, moved by
//! the difference between the touched orders as they were and as the batch wrote them (or
//! recomputed from the order tables when that difference is not exact, see [`aggregates`]). A
//! step of its own so MongoDB can publish the order documents while it runs.

use deltalake::datafusion::prelude::lit;
use deltalake::datafusion::scalar::ScalarValue;
use polars::prelude::*;

use std::collections::BTreeSet;

use deltalake::DeltaTable;

use super::{
    AggregateFrames, GoldCommit, LINES_DIFF, OrderGold, TOTALS_DIFF, aggregates, bridge, dates, incremental, key_frame,
    read_all, strings, totals,
};
use crate::error::Result;
use crate::lake::Lake;
use crate::lake::read::{scan_columns, scan_keys, scan_where_in};
use crate::lake::schema::{self, TableSpec};

/// Moves (or recomputes) the aggregates for the orders `og` wrote, committing what `c` says is
/// still needed. `products` is silver `products` as the batch's silver write left it (`None`:
/// no such table): product sales must name products as the batch's order lines do, even when the
/// next batch has renamed some in silver since (see [`super::expand`]).
pub async fn aggregates(
    lake: &Lake,
    products: Option<&DeltaTable>,
    gold_prefix: &str,
    og: OrderGold,
    c: &GoldCommit<'_>,
    now_us: i64,
) -> Result<AggregateFrames> {
    let gp = |t: &str| format!("{gold_prefix}/{t}");
    let (ot_path, ol_path) = (gp("order_totals"), gp("order_lines"));
    let OrderGold {
        touched,
        order_totals,
        lines,
        old_totals,
        old_lines,
        totals_c,
        lines_c,
        ot_read,
        ol_read,
        mut laps,
        ..
    } = og;
    // The difference: what the touched orders were and are. A MERGE that did not run (applied
    // before) changed nothing, so its side of the difference is empty.
    let ot_step = aggregates::Step::new(ot_read, totals_c.before, totals_c.after, totals_c.merged);
    let ol_step = aggregates::Step::new(ol_read, lines_c.before, lines_c.after, lines_c.merged);
    let new_totals = if totals_c.merged { order_totals.select(TOTALS_DIFF)? } else { old_totals.clone() };
    let new_lines = if lines_c.merged { lines.select(LINES_DIFF)? } else { old_lines.clone() };

    // Everything those orders belong to, now and before (a moved order changes both).
    let mut customers = strings(&new_totals, "customer_id")?;
    customers.extend(strings(&old_totals, "customer_id")?);
    customers.extend(strings(&order_totals, "customer_id")?);
    customers.extend(touched.customers.iter().cloned());
    let mut days = dates(&order_totals, "order_date")?;
    days.extend(dates(&old_totals, "order_date")?);
    let mut products_touched = strings(&lines, "product_id")?;
    products_touched.extend(strings(&old_lines, "product_id")?);
    products_touched.extend(touched.products.iter().cloned());

    let agg = |name: &'static str, spec: &'static TableSpec, steps| aggregates::Agg {
        lake,
        rel: gp(name),
        name,
        spec,
        c,
        steps,
        published: true,
    };
    let ot_spec = &schema::GOLD_ORDER_TOTALS;
    let customers_part = async {
        let a = agg("customer_totals", &schema::GOLD_CUSTOMER_TOTALS, vec![(aggregates::BASE_TOTALS, ot_step)]);
        let keys = key_frame("customer_id", customers.iter().cloned())?;
        let pick = |all: &DataFrame| aggregates::pick_keys(all, &keys, &["customer_id"]);
        a.update(
            async |t| {
                let rows = scan_keys(t, "customer_id", &customers, None).await?;
                bridge::to_frame(&rows, &schema::GOLD_CUSTOMER_TOTALS.arrow_schema())
            },
            |old| match incremental::customers(old, &old_totals, &new_totals, now_us)? {
                Some(rows) => Ok(Some(pick(&rows)?)),
                None => Ok(None),
            },
            async || {
                let (all, v) = read_all(lake, &ot_path, ot_spec, &TOTALS_DIFF).await?;
                Ok(aggregates::Rebuilt {
                    all: totals::customer_totals(&all, now_us)?,
                    bases: vec![(aggregates::BASE_TOTALS, v)],
                })
            },
            pick,
        )
        .await
    };
    let days_part = async {
        let a = agg("daily_sales", &schema::GOLD_DAILY_SALES, vec![(aggregates::BASE_TOTALS, ot_step)]);
        let day_keys = ["order_date", "country"];
        let keys = concat(
            [&old_totals, &order_totals].map(|f| {
                f.clone().lazy().filter(col("order_date").is_not_null()).select([
                    col("order_date"),
                    col("country").fill_null(polars::prelude::lit(totals::UNKNOWN_COUNTRY)),
                ])
            }),
            UnionArgs::default(),
        )?
        .collect()?;
        let pick = |all: &DataFrame| aggregates::pick_keys(all, &keys, &day_keys);
        a.update(
            async |t| {
                let lits = days.iter().map(|d| lit(ScalarValue::Date32(Some(*d)))).collect();
                let rows = if days.is_empty() { Vec::new() } else { scan_where_in(t, "order_date", lits).await? };
                bridge::to_frame(&rows, &schema::GOLD_DAILY_SALES.arrow_schema())
            },
            |old| Ok(Some(incremental::days(old, &old_totals, &new_totals)?)),
            async || {
                let (all, v) = read_all(lake, &ot_path, ot_spec, &TOTALS_DIFF).await?;
                Ok(aggregates::Rebuilt { all: totals::daily_sales(&all)?, bases: vec![(aggregates::BASE_TOTALS, v)] })
            },
            pick,
        )
        .await
    };
    let products_part = async {
        let steps = vec![(aggregates::BASE_TOTALS, ot_step), (aggregates::BASE_LINES, ol_step)];
        // MongoDB has no product documents: nothing to carry.
        let a = aggregates::Agg { published: false, ..agg("product_sales", &schema::GOLD_PRODUCT_SALES, steps) };
        let keys = key_frame("product_id", products_touched.iter().cloned())?;
        let pick = |all: &DataFrame| aggregates::pick_keys(all, &keys, &["product_id"]);
        let names = silver_products(products, Some(&products_touched)).await?;
        a.update(
            async |t| {
                let rows = scan_keys(t, "product_id", &products_touched, None).await?;
                bridge::to_frame(&rows, &schema::GOLD_PRODUCT_SALES.arrow_schema())
            },
            |old| {
                let moved = incremental::products(old, (&old_lines, &old_totals), (&new_lines, &new_totals), &names)?;
                match moved {
                    Some(rows) => Ok(Some(pick(&rows)?)),
                    None => Ok(None),
                }
            },
            async || {
                let ((lines, lv), (orders, ov)) = tokio::try_join!(
                    read_all(lake, &ol_path, &schema::GOLD_ORDER_LINES, &LINES_DIFF),
                    read_all(lake, &ot_path, ot_spec, &TOTALS_DIFF),
                )?;
                let all_products = silver_products(products, None).await?;
                Ok(aggregates::Rebuilt {
                    all: totals::product_sales(&lines, &all_products, &orders)?,
                    bases: vec![(aggregates::BASE_TOTALS, ov), (aggregates::BASE_LINES, lv)],
                })
            },
            pick,
        )
        .await
    };
    let (cust, day, _) = tokio::try_join!(customers_part, days_part, products_part)?;
    laps.mark("aggregates");
    laps.log();

    Ok(AggregateFrames {
        deleted_customers: strings(&cust.gone, "customer_id")?.into_iter().collect(),
        deleted_days: day.gone,
        customer_totals: cust.rows,
        daily_sales: day.rows,
        customers_version: cust.version,
        days_version: day.version,
        customers_whole: cust.whole,
        days_whole: day.whole,
    })
}

/// Silver `products` as of `table`'s version: the rows of `keys`, or with `None` the id and name
/// of every product.
async fn silver_products(table: Option<&DeltaTable>, keys: Option<&BTreeSet<String>>) -> Result<DataFrame> {
    let batches = match (table, keys) {
        (None, _) => Vec::new(),
        (Some(_), Some(k)) if k.is_empty() => Vec::new(),
        (Some(t), Some(k)) => scan_keys(t, "product_id", k, None).await?,
        (Some(t), None) => scan_columns(t, &["product_id", "name"]).await?,
    };
    let df = bridge::to_frame(&batches, &schema::SILVER_PRODUCTS.arrow_schema())?;
    Ok(if keys.is_none() { df.select(["product_id", "name"])? } else { df })
}
