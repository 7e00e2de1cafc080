//! Materialised aggregates: `customer_totals`, `daily_sales` and `product_sales` moved forward by a
//! batch's per-order difference (what gold held for the touched orders before, what it holds now)
//! instead of re-reading every order of every touched customer, day and product, which grew with
//! the tables. Pure functions of frames; when and whether they may be used is decided in
//! `gold::aggregates`.
//!
//! Sums move by `new − old`. What a difference cannot move (a customer's first/last date and
//! country when one of its orders left or changed date, a product that lost a line) makes the
//! function answer `None`, and the caller recomputes the table instead.

use polars::prelude::*;

use super::totals::{UNKNOWN_COUNTRY, counts};

fn net(c: &str) -> Expr {
    when(counts()).then(col(c)).otherwise(lit(0i64))
}

fn signed(df: &DataFrame, sign: i64) -> LazyFrame {
    df.clone().lazy().with_columns([lit(sign).alias("__s")])
}

fn both(old: &DataFrame, new: &DataFrame) -> PolarsResult<LazyFrame> {
    concat([signed(old, -1), signed(new, 1)], UnionArgs::default())
}

fn sum_signed(e: Expr, name: &str) -> Expr {
    (col("__s") * e.cast(DataType::Int64)).sum().alias(name)
}

/// Keys of `old` rows (filtered by `keep`) that have no row in `new` agreeing on every column of
/// `same` (nulls equal): the keys a difference cannot move.
fn unmovable(old: &DataFrame, new: &DataFrame, on: &str, same: &[&str], key: &str) -> PolarsResult<usize> {
    let right: Vec<Expr> =
        std::iter::once(col(on)).chain(same.iter().map(|c| col(*c).alias(format!("__n_{c}")))).collect();
    let mut agree = col("__n_present").is_not_null();
    for c in same {
        agree = agree.and(col(*c).eq_missing(col(format!("__n_{c}"))));
    }
    let n = old
        .clone()
        .lazy()
        .join(
            new.clone().lazy().select(right).with_columns([lit(true).alias("__n_present")]),
            [col(on)],
            [col(on)],
            JoinArgs::new(JoinType::Left),
        )
        .filter(col(key).is_not_null().and(agree.not()))
        .collect()?
        .height();
    Ok(n)
}

/// Adds `delta` (key + `d_*` columns) to `old` aggregate rows (key + columns), missing sides as 0.
fn add(old: LazyFrame, delta: LazyFrame, keys: &[&str], sums: &[&str]) -> LazyFrame {
    let k: Vec<Expr> = keys.iter().map(|c| col(*c)).collect();
    let joined =
        old.join(delta, k.clone(), k, JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns));
    joined.with_columns(
        sums.iter()
            .map(|c| (col(*c).fill_null(lit(0i64)) + col(format!("d_{c}")).fill_null(lit(0i64))).alias(*c))
            .collect::<Vec<_>>(),
    )
}

/// `customer_totals` rows of the customers whose orders changed, from their rows before (`old_rows`)
/// and the changed orders before and after. `None` when a customer's dates or country cannot be
/// moved by the difference (an order left it or changed date/country, or a new order's country is
/// not clearly the latest).
pub fn customers(
    old_rows: &DataFrame,
    old_orders: &DataFrame,
    new_orders: &DataFrame,
    now_us: i64,
) -> PolarsResult<Option<DataFrame>> {
    if unmovable(old_orders, new_orders, "order_id", &["customer_id", "order_date", "country"], "customer_id")? > 0 {
        return Ok(None);
    }
    let sums =
        both(old_orders, new_orders)?.filter(col("customer_id").is_not_null()).group_by([col("customer_id")]).agg([
            sum_signed(col("cancelled").not(), "d_orders"),
            sum_signed(net("units"), "d_units"),
            sum_signed(net("total_amount"), "d_revenue"),
        ]);
    // Only additions reach here, so the new orders alone can move first/last date and country.
    let latest = new_orders
        .clone()
        .lazy()
        .filter(col("customer_id").is_not_null())
        .sort(["order_date", "order_id"], SortMultipleOptions::default())
        .group_by([col("customer_id")])
        .agg([
            col("order_date").min().alias("n_first"),
            col("order_date").max().alias("n_last"),
            col("country").drop_nulls().last().alias("n_country"),
            col("order_date").filter(col("country").is_not_null()).last().alias("n_country_date"),
        ]);
    let delta = sums.join(latest, [col("customer_id")], [col("customer_id")], JoinArgs::new(JoinType::Left));
    let rows = add(old_rows.clone().lazy(), delta, &["customer_id"], &["orders", "units", "revenue"])
        .with_columns([
            col("n_country").is_null().or(col("n_country").eq_missing(col("country"))).alias("__keep"),
            col("n_country_date")
                .is_not_null()
                .and(col("last_order_date").is_null().or(col("n_country_date").gt(col("last_order_date"))))
                .alias("__newer"),
        ])
        .with_columns([
            col("__keep").not().and(col("__newer").not()).alias("__undecided"),
            when(col("__keep")).then(col("country")).otherwise(col("n_country")).alias("country"),
            when(col("first_order_date").is_null().or(col("n_first").lt(col("first_order_date"))))
                .then(col("n_first"))
                .otherwise(col("first_order_date"))
                .alias("first_order_date"),
            when(col("last_order_date").is_null().or(col("n_last").gt(col("last_order_date"))))
                .then(col("n_last"))
                .otherwise(col("last_order_date"))
                .alias("last_order_date"),
            lit(now_us).alias("updated_at"),
        ])
        .collect()?;
    if rows.column("__undecided")?.bool()?.any() {
        return Ok(None);
    }
    let cols = ["customer_id", "country", "orders", "units", "revenue", "first_order_date", "last_order_date"];
    let mut out: Vec<Expr> = cols.iter().map(|c| col(*c)).collect();
    out.push(col("updated_at"));
    rows.lazy().select(out).collect().map(Some)
}

/// `daily_sales` rows of the days and countries whose orders changed, and the keys left with no
/// order at all (to delete). Every column is a sum, so this never needs a recompute.
pub fn days(
    old_rows: &DataFrame,
    old_orders: &DataFrame,
    new_orders: &DataFrame,
) -> PolarsResult<(DataFrame, DataFrame)> {
    let cancelled_amount = when(col("cancelled").and(col("total_amount").lt(lit(0i64))))
        .then(lit(0i64) - col("total_amount"))
        .when(col("cancelled"))
        .then(col("total_amount"))
        .otherwise(lit(0i64));
    let delta = both(old_orders, new_orders)?
        .filter(col("order_date").is_not_null())
        .with_columns([col("country").fill_null(lit(UNKNOWN_COUNTRY))])
        .group_by([col("order_date"), col("country")])
        .agg([
            sum_signed(col("cancelled").not(), "d_orders"),
            sum_signed(net("units"), "d_units"),
            sum_signed(net("total_amount"), "d_revenue"),
            sum_signed(col("cancelled"), "d_cancelled_orders"),
            sum_signed(cancelled_amount, "d_cancelled_amount"),
        ]);
    let sums = ["orders", "units", "revenue", "cancelled_orders", "cancelled_amount"];
    let all = add(old_rows.clone().lazy(), delta, &["order_date", "country"], &sums)
        .select([col("order_date"), col("country")].into_iter().chain(sums.iter().map(|c| col(*c))).collect::<Vec<_>>())
        .collect()?;
    // Every order is cancelled or not, so a row with neither has no order left.
    let empty = (col("orders") + col("cancelled_orders")).eq(lit(0i64));
    let rows = all.clone().lazy().filter(empty.clone().not()).collect()?;
    let gone = all.lazy().filter(empty).select([col("order_date"), col("country")]).collect()?;
    Ok((rows, gone))
}

/// A side's contribution per (order, product): a non-cancelled order counts once per product it
/// has a line of; units and revenue follow the net rule of its order.
fn product_part(lines: &DataFrame, orders: &DataFrame, sign: i64) -> LazyFrame {
    let flags = orders.clone().lazy().select([col("order_id"), counts().alias("__counts"), col("cancelled")]);
    lines
        .clone()
        .lazy()
        .join(flags, [col("order_id")], [col("order_id")], JoinArgs::new(JoinType::Left))
        .with_columns([col("__counts").fill_null(lit(true)), col("cancelled").fill_null(lit(false))])
        .group_by([col("order_id"), col("product_id")])
        .agg([
            col("cancelled").first().alias("cancelled"),
            when(col("__counts")).then(col("quantity")).otherwise(lit(0i64)).sum().alias("units"),
            when(col("__counts")).then(col("line_amount")).otherwise(lit(0i64)).sum().alias("revenue"),
        ])
        .with_columns([lit(sign).alias("__s")])
}

/// `product_sales` rows of the products whose lines changed or that were touched, named from
/// `products` (silver). `None` when a product lost a line (its row might have to go).
pub fn products(
    old_rows: &DataFrame,
    old: (&DataFrame, &DataFrame),
    new: (&DataFrame, &DataFrame),
    products: &DataFrame,
) -> PolarsResult<Option<DataFrame>> {
    let ((old_lines, old_orders), (new_lines, new_orders)) = (old, new);
    if unmovable(old_lines, new_lines, "item_id", &["product_id"], "product_id")? > 0 {
        return Ok(None);
    }
    let delta = concat(
        [product_part(old_lines, old_orders, -1), product_part(new_lines, new_orders, 1)],
        UnionArgs::default(),
    )?
    .group_by([col("product_id")])
    .agg([
        sum_signed(col("cancelled").not(), "d_orders"),
        sum_signed(col("units"), "d_units"),
        sum_signed(col("revenue"), "d_revenue"),
    ]);
    let names = products.clone().lazy().select([col("product_id"), col("name").alias("__name")]);
    let old_rows = old_rows.clone().lazy().select([col("product_id"), col("orders"), col("units"), col("revenue")]);
    let rows = add(old_rows, delta, &["product_id"], &["orders", "units", "revenue"])
        .join(names, [col("product_id")], [col("product_id")], JoinArgs::new(JoinType::Left))
        .select([col("product_id"), col("__name").alias("product_name"), col("orders"), col("units"), col("revenue")])
        .collect()?;
    Ok(Some(rows))
}

#[cfg(test)]
mod tests;
