//! The gold computations in Polars, as pure functions of silver (and gold) frames: order lines,
//! order totals, customer totals, daily sales and product sales. Money columns are integer
//! hundredths here (see `bridge`), so every total is exact.
//!
//! Definitions (also in README): `line_amount = unit_price × quantity`, an item without a unit
//! price takes its product's current price; an order's total is the sum of its lines. An order
//! counts towards net `units` and `revenue` when it is not cancelled, or when it is a cancellation
//! document with a negative total (the flat sales feed's `C…` orders), which nets out the sale it
//! cancels; a CDC order whose status became `cancelled` simply stops counting. `orders` counts
//! non-cancelled orders; `cancelled_amount` is the absolute amount of cancelled orders.

use polars::prelude::*;

/// Country used in `daily_sales` for orders that have none (the key column cannot be null).
pub const UNKNOWN_COUNTRY: &str = "Unknown";

/// `items` ⋈ `orders` ⋈ `products` → one row per item with its amount. Items whose order has not
/// arrived (or was deleted) have no line: they appear once their order does.
pub fn order_lines(items: &DataFrame, orders: &DataFrame, products: &DataFrame) -> PolarsResult<DataFrame> {
    items
        .clone()
        .lazy()
        .select([col("item_id"), col("order_id"), col("product_id"), col("quantity"), col("unit_price")])
        .inner_join(
            orders.clone().lazy().select([col("order_id"), col("order_date"), col("customer_id"), col("country")]),
            col("order_id"),
            col("order_id"),
        )
        .left_join(
            products.clone().lazy().select([
                col("product_id"),
                col("name").alias("product_name"),
                col("price").alias("product_price"),
            ]),
            col("product_id"),
            col("product_id"),
        )
        .with_columns([when(col("unit_price").is_null())
            .then(col("product_price"))
            .otherwise(col("unit_price"))
            .alias("unit_price")])
        .with_columns([(col("unit_price") * col("quantity")).alias("line_amount")])
        .collect()
}

/// One row per order in `orders` with its lines, units and total.
pub fn order_totals(orders: &DataFrame, lines: &DataFrame, now_us: i64) -> PolarsResult<DataFrame> {
    let agg = lines.clone().lazy().group_by([col("order_id")]).agg([
        len().cast(DataType::Int64).alias("lines"),
        col("quantity").sum().alias("units"),
        col("line_amount").sum().alias("total_amount"),
    ]);
    orders
        .clone()
        .lazy()
        .select([col("order_id"), col("customer_id"), col("country"), col("order_date"), col("status")])
        .left_join(agg, col("order_id"), col("order_id"))
        .with_columns([
            col("lines").fill_null(lit(0i64)),
            col("units").fill_null(lit(0i64)),
            col("total_amount").fill_null(lit(0i64)),
            col("status").eq(lit("cancelled")).fill_null(lit(false)).alias("cancelled"),
            lit(now_us).alias("updated_at"),
        ])
        .collect()
}

fn not_cancelled_count() -> Expr {
    col("cancelled").not().cast(DataType::Int64).sum()
}

/// Whether an order's amounts count towards net sales (see the module comment).
pub(super) fn counts() -> Expr {
    col("cancelled").not().or(col("total_amount").lt(lit(0i64)))
}

fn net(c: &str) -> Expr {
    when(counts()).then(col(c)).otherwise(lit(0i64)).sum()
}

/// Totals per customer over the given order totals (all orders of the customers to recompute).
pub fn customer_totals(order_totals: &DataFrame, now_us: i64) -> PolarsResult<DataFrame> {
    order_totals
        .clone()
        .lazy()
        .filter(col("customer_id").is_not_null())
        .sort(["order_date", "order_id"], SortMultipleOptions::default())
        .group_by_stable([col("customer_id")])
        .agg([
            col("country").drop_nulls().last().alias("country"),
            not_cancelled_count().alias("orders"),
            net("units").alias("units"),
            net("total_amount").alias("revenue"),
            col("order_date").min().alias("first_order_date"),
            col("order_date").max().alias("last_order_date"),
        ])
        .with_columns([lit(now_us).alias("updated_at")])
        .collect()
}

/// Sales per day and country over the given order totals (all orders of the days to recompute).
pub fn daily_sales(order_totals: &DataFrame) -> PolarsResult<DataFrame> {
    order_totals
        .clone()
        .lazy()
        .filter(col("order_date").is_not_null())
        .with_columns([col("country").fill_null(lit(UNKNOWN_COUNTRY))])
        .group_by_stable([col("order_date"), col("country")])
        .agg([
            not_cancelled_count().alias("orders"),
            net("units").alias("units"),
            net("total_amount").alias("revenue"),
            col("cancelled").cast(DataType::Int64).sum().alias("cancelled_orders"),
            when(col("cancelled").and(col("total_amount").lt(lit(0i64))))
                .then(lit(0i64) - col("total_amount"))
                .when(col("cancelled"))
                .then(col("total_amount"))
                .otherwise(lit(0i64))
                .sum()
                .alias("cancelled_amount"),
        ])
        .collect()
}

/// Sales per product over the given order lines (all lines of the products to recompute), named
/// with the products' current names; `orders` are the order totals of those lines' orders, which
/// say whether each counts (see the module comment).
pub fn product_sales(lines: &DataFrame, products: &DataFrame, orders: &DataFrame) -> PolarsResult<DataFrame> {
    let counted = orders.clone().lazy().select([col("order_id"), counts().alias("__counts"), col("cancelled")]);
    lines
        .clone()
        .lazy()
        .left_join(counted, col("order_id"), col("order_id"))
        .with_columns([col("__counts").fill_null(lit(true)), col("cancelled").fill_null(lit(false))])
        .group_by_stable([col("product_id")])
        .agg([
            col("order_id").filter(col("cancelled").not()).n_unique().cast(DataType::Int64).alias("orders"),
            when(col("__counts")).then(col("quantity")).otherwise(lit(0i64)).sum().alias("units"),
            when(col("__counts")).then(col("line_amount")).otherwise(lit(0i64)).sum().alias("revenue"),
        ])
        .left_join(
            products.clone().lazy().select([col("product_id"), col("name").alias("product_name")]),
            col("product_id"),
            col("product_id"),
        )
        .collect()
}

/// Gold lines whose product name differs from the product's current name in silver (a rename,
/// or a product that arrived after its lines).
pub fn stale_lines(lines: &DataFrame, products: &DataFrame) -> PolarsResult<DataFrame> {
    lines
        .clone()
        .lazy()
        .select([col("order_id"), col("product_id"), col("product_name")])
        .left_join(
            products.clone().lazy().select([col("product_id"), col("name")]),
            col("product_id"),
            col("product_id"),
        )
        .filter(col("product_name").eq_missing(col("name")).not())
        .select([col("order_id")])
        .collect()
}

/// Of the `touched` products (a `product_id` frame), those whose silver name (`products`:
/// product_id, name) differs from the name their product-sales row (`sold`: product_id,
/// product_name) carries, or that have no such row: only their order lines may carry a stale name.
pub fn renamed_products(products: &DataFrame, sold: &DataFrame, touched: &DataFrame) -> PolarsResult<DataFrame> {
    touched
        .clone()
        .lazy()
        .left_join(
            products.clone().lazy().select([col("product_id"), col("name")]),
            col("product_id"),
            col("product_id"),
        )
        .left_join(
            sold.clone().lazy().select([col("product_id"), col("product_name"), lit(true).alias("__sold")]),
            col("product_id"),
            col("product_id"),
        )
        .filter(col("__sold").is_null().or(col("product_name").eq_missing(col("name")).not()))
        .select([col("product_id")])
        .collect()
}

/// Rows of `old` whose key (columns `keys`) is not in `new`: the keys a recompute deleted.
pub fn missing_keys(old: &DataFrame, new: &DataFrame, keys: &[&str]) -> PolarsResult<DataFrame> {
    let key_exprs: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    let present = new
        .clone()
        .lazy()
        .select(key_exprs.clone())
        .unique(None, UniqueKeepStrategy::Any)
        .with_columns([lit(true).alias("__present")]);
    old.clone()
        .lazy()
        .select(key_exprs.clone())
        .unique(None, UniqueKeepStrategy::Any)
        .join(present, key_exprs.clone(), key_exprs, JoinArgs::new(JoinType::Left))
        .filter(col("__present").is_null())
        .select(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> i32 {
        crate::lake::rows::days_since_epoch(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    fn fixtures() -> (DataFrame, DataFrame, DataFrame) {
        let orders = df!(
            "order_id" => ["A", "B", "CA"],
            "customer_id" => [Some("c1"), None, Some("c1")],
            "country" => ["UK", "FR", "UK"],
            "order_date" => [d("2019-12-01"), d("2019-12-01"), d("2019-12-02")],
            "status" => ["completed", "completed", "cancelled"],
        )
        .unwrap()
        .lazy()
        .with_columns([col("order_date").cast(DataType::Date)])
        .collect()
        .unwrap();
        let items = df!(
            "item_id" => ["i1", "i2", "i3", "i4"],
            "order_id" => ["A", "A", "B", "CA"],
            "product_id" => ["p1", "p2", "p1", "p1"],
            "quantity" => [2i64, 1, 5, -1],
            "unit_price" => [Some(150i64), None, Some(100), Some(150)],
        )
        .unwrap();
        let products = df!(
            "product_id" => ["p1", "p2"],
            "name" => ["Mug", "Plate"],
            "price" => [120i64, 999],
        )
        .unwrap();
        (orders, items, products)
    }

    fn get_i64(df: &DataFrame, key_col: &str, key: &str, c: &str) -> i64 {
        let m = df.column(key_col).unwrap().str().unwrap().equal(key);
        df.filter(&m).unwrap().column(c).unwrap().i64().unwrap().get(0).unwrap()
    }

    #[test]
    fn totals_follow_the_contract() {
        let (orders, items, products) = fixtures();
        let lines = order_lines(&items, &orders, &products).unwrap();
        // i2 has no unit price: it takes its product's current price.
        assert_eq!(get_i64(&lines, "item_id", "i2", "line_amount"), 999);
        let ot = order_totals(&orders, &lines, 7).unwrap();
        assert_eq!(get_i64(&ot, "order_id", "A", "total_amount"), 2 * 150 + 999);
        assert_eq!(get_i64(&ot, "order_id", "A", "lines"), 2);
        assert_eq!(get_i64(&ot, "order_id", "CA", "total_amount"), -150);
        let ct = customer_totals(&ot, 7).unwrap();
        assert_eq!(ct.height(), 1, "orders without a customer are not in customer totals");
        assert_eq!(get_i64(&ct, "customer_id", "c1", "revenue"), 1299 - 150);
        assert_eq!(get_i64(&ct, "customer_id", "c1", "orders"), 1);
        let ds = daily_sales(&ot).unwrap();
        assert_eq!(ds.height(), 3);
        let ps = product_sales(&lines, &products, &ot).unwrap();
        assert_eq!(get_i64(&ps, "product_id", "p1", "revenue"), 300 + 500 - 150);
        assert_eq!(get_i64(&ps, "product_id", "p1", "orders"), 2);
        assert_eq!(get_i64(&ps, "product_id", "p1", "units"), 6);
    }

    #[test]
    fn only_products_whose_sales_row_names_them_otherwise_are_checked() {
        let silver = df!("product_id" => ["same", "renamed", "unsold", "gone"], "name" => [Some("Mug"), Some("Jug"), Some("Cup"), None]).unwrap();
        let sold = df!(
            "product_id" => ["same", "renamed", "gone", "late", "both_null"],
            "product_name" => [Some("Mug"), Some("Pot"), Some("Bowl"), None, None],
        )
        .unwrap();
        let touched =
            df!("product_id" => ["same", "renamed", "unsold", "gone", "late", "both_null", "nowhere"]).unwrap();
        let mut silver = silver;
        silver.vstack_mut(&df!("product_id" => ["late"], "name" => [Some("Plate")]).unwrap()).unwrap();
        let check = renamed_products(&silver, &sold, &touched).unwrap();
        let mut got: Vec<&str> = check.column("product_id").unwrap().str().unwrap().iter().flatten().collect();
        got.sort();
        // Equal names (also both unknown) are skipped; a rename, a missing sales row, a product
        // that left silver and one that arrived late are checked.
        assert_eq!(got, ["gone", "late", "nowhere", "renamed", "unsold"]);
    }

    #[test]
    fn missing_keys_is_an_anti_join() {
        let old = df!("k" => ["a", "b", "c"]).unwrap();
        let new = df!("k" => ["b"]).unwrap();
        let m = missing_keys(&old, &new, &["k"]).unwrap();
        let mut got: Vec<&str> = m.column("k").unwrap().str().unwrap().iter().flatten().collect();
        got.sort();
        assert_eq!(got, ["a", "c"]);
    }
}
