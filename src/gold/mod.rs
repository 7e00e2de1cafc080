//! Gold: recomputed (never incremented) for exactly the keys a batch touched, from silver, then
//! MERGEd with the bronze version applied in each table's `txn`. Recompute is idempotent, so a
//! replay after a crash heals instead of double counting.

pub mod bridge;
pub mod incremental;
pub mod totals;

use std::collections::{BTreeSet, HashMap};

use deltalake::datafusion::prelude::lit;
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::kernel::Transaction;
use polars::prelude::*;

use crate::error::Result;
use crate::lake::merge::{MergeSpec, merge, with_deleted_flag};
use crate::lake::read::{scan_keys, scan_where_in};
use crate::lake::schema::{self, TableSpec};
use crate::lake::{Lake, silver, version_of};
use crate::model::{Changes, Entity};

/// Elapsed time per gold step, logged at debug level (`ORDERLAKE_LOG=orderlake::gold=debug`) to
/// see where a batch's gold time goes.
struct Laps {
    start: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, u128)>,
}

impl Laps {
    fn new() -> Self {
        let now = std::time::Instant::now();
        Laps { start: now, last: now, steps: Vec::new() }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((step, (now - self.last).as_millis()));
        self.last = now;
    }

    fn log(&self) {
        let steps: Vec<String> = self.steps.iter().map(|(s, ms)| format!("{s}={ms}")).collect();
        tracing::debug!(total_ms = self.start.elapsed().as_millis() as u64, steps = %steps.join(" "), "gold steps (ms)");
    }
}

/// The keys a batch changed, by entity.
#[derive(Debug, Default, Clone)]
pub struct Touched {
    pub orders: BTreeSet<String>,
    /// Items changed or deleted by CDC (their previous order must be re-totaled too).
    pub items: BTreeSet<String>,
    pub products: BTreeSet<String>,
    pub customers: BTreeSet<String>,
    /// Entities truncated: everything of theirs is recomputed.
    pub truncated: BTreeSet<Entity>,
    /// CDC items may lack a unit price and take their product's: price changes then matter.
    pub cdc: bool,
}

impl Touched {
    /// `cdc` is false for flat sales events, whose items always carry their price and never move.
    pub fn from_changes(c: &Changes, cdc: bool) -> Self {
        let mut t = Touched { cdc, ..Default::default() };
        t.orders.extend(c.orders.iter().map(|o| o.order_id.clone()));
        t.orders.extend(c.items.iter().map(|i| i.order_id.clone()));
        if cdc {
            t.items.extend(c.items.iter().map(|i| i.item_id.clone()));
        }
        t.products.extend(c.products.iter().map(|p| p.product_id.clone()));
        t.customers.extend(c.customers.iter().map(|c| c.customer_id.clone()));
        for d in &c.deletes {
            match d.entity {
                Entity::Orders => t.orders.insert(d.key.clone()),
                Entity::OrderItems => t.items.insert(d.key.clone()),
                Entity::Products => t.products.insert(d.key.clone()),
                Entity::Customers => t.customers.insert(d.key.clone()),
            };
        }
        t.truncated.extend(c.truncates.iter().map(|t| t.entity));
        t
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.items.is_empty()
            && self.products.is_empty()
            && self.customers.is_empty()
            && self.truncated.is_empty()
    }
}

/// The recomputed gold rows (and deleted keys) of one batch; the MongoDB sink publishes these.
pub struct GoldFrames {
    pub order_totals: DataFrame,
    pub order_lines: DataFrame,
    pub customer_totals: DataFrame,
    pub daily_sales: DataFrame,
    pub deleted_orders: Vec<String>,
    pub deleted_customers: Vec<String>,
    /// `order_date`, `country` of day/country rows that no longer have any order.
    pub deleted_days: DataFrame,
    /// Version of each gold table the frames correspond to (the MongoDB staleness guard).
    pub versions: HashMap<String, i64>,
}

/// The gold tables, in the order they are written.
pub const TABLES: [(&str, &TableSpec); 5] = [
    ("order_lines", &schema::GOLD_ORDER_LINES),
    ("order_totals", &schema::GOLD_ORDER_TOTALS),
    ("customer_totals", &schema::GOLD_CUSTOMER_TOTALS),
    ("daily_sales", &schema::GOLD_DAILY_SALES),
    ("product_sales", &schema::GOLD_PRODUCT_SALES),
];

pub fn app_id(group: &str, topic: &str) -> String {
    format!("{group}/gold/{topic}")
}

/// Which gold tables still need the version being applied, and the `txn` to record with it.
pub struct GoldCommit<'a> {
    pub app_id: &'a str,
    pub version: i64,
    /// Effective applied version per gold table name.
    pub applied: &'a HashMap<String, i64>,
}

impl GoldCommit<'_> {
    fn needs(&self, table: &str) -> bool {
        self.applied.get(table).is_none_or(|a| *a < self.version)
    }
}

/// Rows of a table whose string `column` is one of `keys` (nothing when the table or `keys` is empty).
async fn read_keys(
    lake: &Lake,
    rel: &str,
    spec: &TableSpec,
    column: &str,
    keys: &BTreeSet<String>,
) -> Result<DataFrame> {
    read_some(lake, rel, spec, column, keys, None).await
}

/// [`read_keys`] with only `columns` (must include `column`): the wide reads of a batch (every
/// line of the touched products, every order of the touched customers) need a few columns.
async fn read_some(
    lake: &Lake,
    rel: &str,
    spec: &TableSpec,
    column: &str,
    keys: &BTreeSet<String>,
    columns: Option<&[&str]>,
) -> Result<DataFrame> {
    let batches = match lake.open(rel).await? {
        Some(t) if !keys.is_empty() => scan_keys(&t, column, keys, columns).await?,
        _ => Vec::new(),
    };
    bridge::to_frame(&batches, &spec.arrow_schema())
}

/// Rows of a table whose date `column` is one of `days` (a short list: an `IN` filter prunes files).
async fn read_days(lake: &Lake, rel: &str, spec: &TableSpec, column: &str, days: &BTreeSet<i32>) -> Result<DataFrame> {
    let batches = match lake.open(rel).await? {
        Some(t) if !days.is_empty() => {
            let lits = days.iter().map(|d| lit(ScalarValue::Date32(Some(*d)))).collect();
            scan_where_in(&t, column, lits).await?
        }
        _ => Vec::new(),
    };
    bridge::to_frame(&batches, &spec.arrow_schema())
}

fn strings(df: &DataFrame, c: &str) -> Result<BTreeSet<String>> {
    Ok(df.column(c)?.str()?.iter().flatten().map(String::from).collect())
}

fn dates(df: &DataFrame, c: &str) -> Result<BTreeSet<i32>> {
    let s = df.column(c)?.cast(&DataType::Int32)?;
    Ok(s.i32()?.iter().flatten().collect())
}

fn key_frame(name: &str, keys: impl IntoIterator<Item = String>) -> Result<DataFrame> {
    let v: Vec<String> = keys.into_iter().collect();
    Ok(DataFrame::new(v.len(), vec![Column::new(name.into(), v)])?)
}

/// MERGEs `new` rows and deletes `gone` keys into gold table `name`, unless it already has `c.version`.
/// Returns the table's version afterwards.
async fn commit(
    lake: &Lake,
    prefix: &str,
    name: &str,
    spec: &TableSpec,
    new: &DataFrame,
    gone: &DataFrame,
    c: &GoldCommit<'_>,
) -> Result<i64> {
    let rel = format!("{prefix}/{name}");
    if !c.needs(name) || (new.height() == 0 && gone.height() == 0) {
        return Ok(lake.open(&rel).await?.map_or(0, |t| version_of(&t) as i64));
    }
    let mut batches = vec![bridge::to_batch(new, spec)?];
    if gone.height() > 0 {
        // Delete markers carry only their key; the other columns are typed nulls.
        let mut gone_full = gone.clone();
        for col_spec in spec.columns {
            if gone_full.column(col_spec.name).is_err() {
                let t = bridge::polars_type(col_spec.kind);
                gone_full.with_column(Column::full_null(col_spec.name.into(), gone.height(), &t))?;
            }
        }
        batches.push(bridge::to_batch(&gone_full, spec)?);
    }
    let flags: Vec<bool> =
        std::iter::repeat_n(false, new.height()).chain(std::iter::repeat_n(true, gone.height())).collect();
    let source = with_deleted_flag(&arrow::compute::concat_batches(&batches[0].schema(), &batches)?, flags)?;
    let table = lake.open_or_create(&rel, spec).await?;
    if crate::lake::has_applied(&table, c.app_id, c.version).await? {
        return Ok(version_of(&table) as i64); // another instance applied this version already
    }
    let table =
        merge(table, &MergeSpec { spec, guard: None }, source, vec![Transaction::new(c.app_id, c.version)]).await?;
    Ok(version_of(&table) as i64)
}

/// Widens the touched orders to every order whose gold rows a change can affect: the previous
/// order of a changed or deleted item; orders with lines of a product whose name no longer matches
/// gold (rename, late-arriving product) or whose items take the product's price; everything of a
/// truncated table. Decided from gold and silver as they are, so it holds on replay too.
async fn expand(lake: &Lake, silver_prefix: &str, gold_prefix: &str, t: &Touched) -> Result<Touched> {
    let mut t = t.clone();
    let gp = format!("{gold_prefix}/order_lines");
    let lines_spec = &schema::GOLD_ORDER_LINES;
    if !t.truncated.is_empty() {
        // A truncate touches everything gold knows of: re-totaling from silver then drops what went.
        let all = match lake.open(&gp).await? {
            Some(tbl) => bridge::to_frame(&crate::lake::read::scan(&tbl, None).await?, &lines_spec.arrow_schema())?,
            None => bridge::to_frame(&[], &lines_spec.arrow_schema())?,
        };
        t.orders.extend(strings(&all, "order_id")?);
        t.products.extend(strings(&all, "product_id")?);
        t.customers.extend(strings(&all, "customer_id")?);
        if let Some(tbl) = lake.open(&format!("{gold_prefix}/order_totals")).await? {
            let ot = bridge::to_frame(
                &crate::lake::read::scan(&tbl, None).await?,
                &schema::GOLD_ORDER_TOTALS.arrow_schema(),
            )?;
            t.orders.extend(strings(&ot, "order_id")?);
        }
    }
    if !t.items.is_empty() {
        let lines = read_keys(lake, &gp, lines_spec, "item_id", &t.items).await?;
        t.orders.extend(strings(&lines, "order_id")?);
    }
    if !t.products.is_empty() {
        let cols = ["order_id", "product_id", "product_name"];
        let lines = read_some(lake, &gp, lines_spec, "product_id", &t.products, Some(&cols)).await?;
        let products =
            read_keys(lake, &format!("{silver_prefix}/products"), &schema::SILVER_PRODUCTS, "product_id", &t.products)
                .await?;
        t.orders.extend(strings(&totals::stale_lines(&lines, &products)?, "order_id")?);
        if t.cdc {
            let items = read_keys(
                lake,
                &format!("{silver_prefix}/order_items"),
                &schema::SILVER_ORDER_ITEMS,
                "product_id",
                &t.products,
            )
            .await?;
            let priced_by_product = items.lazy().filter(col("unit_price").is_null()).collect()?;
            t.orders.extend(strings(&priced_by_product, "order_id")?);
        }
    }
    Ok(t)
}

/// Recomputes every gold table for `touched` and commits what `c` says is still needed.
pub async fn recompute(
    lake: &Lake,
    silver_prefix: &str,
    gold_prefix: &str,
    touched: &Touched,
    c: &GoldCommit<'_>,
    now_us: i64,
) -> Result<GoldFrames> {
    let sp = |t: &str| format!("{silver_prefix}/{t}");
    let gp = |t: &str| format!("{gold_prefix}/{t}");
    let mut laps = Laps::new();
    let touched = &expand(lake, silver_prefix, gold_prefix, touched).await?;
    laps.mark("expand");
    let ids = &touched.orders;

    // Independent reads and commits run concurrently: on object storage each is a few round trips
    // of waiting, which dominated small batches.
    let (orders_path, items_path, ot_path, ol_path) =
        (sp("orders"), sp("order_items"), gp("order_totals"), gp("order_lines"));
    // What gold held for these orders: only where they were (customer, day) and their lines' keys.
    let (ot_cols, ol_cols) = (["order_id", "customer_id", "order_date"], ["order_id", "item_id", "product_id"]);
    let (orders, items, old_totals, old_lines) = tokio::try_join!(
        read_keys(lake, &orders_path, &schema::SILVER_ORDERS, "order_id", ids),
        read_keys(lake, &items_path, &schema::SILVER_ORDER_ITEMS, "order_id", ids),
        read_some(lake, &ot_path, &schema::GOLD_ORDER_TOTALS, "order_id", ids, Some(&ot_cols)),
        read_some(lake, &ol_path, &schema::GOLD_ORDER_LINES, "order_id", ids, Some(&ol_cols)),
    )?;
    let mut product_ids = strings(&items, "product_id")?;
    product_ids.extend(touched.products.iter().cloned());
    let products = read_keys(lake, &sp("products"), &schema::SILVER_PRODUCTS, "product_id", &product_ids).await?;
    laps.mark("read_orders");

    let mut versions = HashMap::new();
    let lines = totals::order_lines(&items, &orders, &products)?;
    let order_totals = totals::order_totals(&orders, &lines, now_us)?;
    laps.mark("compute_orders");
    let gone_lines = totals::missing_keys(&old_lines, &lines, &["item_id"])?;
    let gone_orders =
        totals::missing_keys(&key_frame("order_id", touched.orders.iter().cloned())?, &order_totals, &["order_id"])?;
    let (lines_v, totals_v) = tokio::try_join!(
        commit(lake, gold_prefix, "order_lines", &schema::GOLD_ORDER_LINES, &lines, &gone_lines, c),
        commit(lake, gold_prefix, "order_totals", &schema::GOLD_ORDER_TOTALS, &order_totals, &gone_orders, c),
    )?;
    versions.insert("order_lines".to_string(), lines_v);
    versions.insert("order_totals".to_string(), totals_v);
    laps.mark("merge_orders");

    // Totals of everything those orders belong to, now and before (a moved order re-totals both).
    let mut customers = strings(&order_totals, "customer_id")?;
    customers.extend(strings(&old_totals, "customer_id")?);
    customers.extend(touched.customers.iter().cloned());
    let mut days = dates(&order_totals, "order_date")?;
    days.extend(dates(&old_totals, "order_date")?);
    let mut products_touched = strings(&lines, "product_id")?;
    products_touched.extend(strings(&old_lines, "product_id")?);
    products_touched.extend(touched.products.iter().cloned());

    // The three aggregates read what was just committed and are independent of each other.
    let ot_spec = &schema::GOLD_ORDER_TOTALS;
    let (ot_path, ol_path) = (gp("order_totals"), gp("order_lines"));
    let customers_part = async {
        let cols = ["customer_id", "order_id", "order_date", "country", "cancelled", "units", "total_amount"];
        let cust_orders = read_some(lake, &ot_path, ot_spec, "customer_id", &customers, Some(&cols)).await?;
        let rows = totals::customer_totals(&cust_orders, now_us)?;
        let gone =
            totals::missing_keys(&key_frame("customer_id", customers.iter().cloned())?, &rows, &["customer_id"])?;
        let v = commit(lake, gold_prefix, "customer_totals", &schema::GOLD_CUSTOMER_TOTALS, &rows, &gone, c).await?;
        Ok::<_, crate::error::Error>((rows, gone, v))
    };
    let days_part = async {
        let ds_path = gp("daily_sales");
        let (day_orders, old_days) = tokio::try_join!(
            read_days(lake, &ot_path, ot_spec, "order_date", &days),
            read_days(lake, &ds_path, &schema::GOLD_DAILY_SALES, "order_date", &days),
        )?;
        let rows = totals::daily_sales(&day_orders)?;
        let gone = totals::missing_keys(&old_days, &rows, &["order_date", "country"])?;
        let v = commit(lake, gold_prefix, "daily_sales", &schema::GOLD_DAILY_SALES, &rows, &gone, c).await?;
        Ok::<_, crate::error::Error>((rows, gone, v))
    };
    let products_part = async {
        let line_cols = ["product_id", "order_id", "quantity", "line_amount"];
        let lines_spec = &schema::GOLD_ORDER_LINES;
        let product_lines =
            read_some(lake, &ol_path, lines_spec, "product_id", &products_touched, Some(&line_cols)).await?;
        let line_orders = strings(&product_lines, "order_id")?;
        let (p_path, cols) = (sp("products"), ["order_id", "cancelled", "total_amount"]);
        let (product_rows, line_totals) = tokio::try_join!(
            read_keys(lake, &p_path, &schema::SILVER_PRODUCTS, "product_id", &products_touched),
            read_some(lake, &ot_path, ot_spec, "order_id", &line_orders, Some(&cols)),
        )?;
        let rows = totals::product_sales(&product_lines, &product_rows, &line_totals)?;
        let gone =
            totals::missing_keys(&key_frame("product_id", products_touched.iter().cloned())?, &rows, &["product_id"])?;
        commit(lake, gold_prefix, "product_sales", &schema::GOLD_PRODUCT_SALES, &rows, &gone, c).await
    };
    let ((customer_totals, gone_customers, cv), (daily_sales, gone_days, dv), pv) =
        tokio::try_join!(customers_part, days_part, products_part)?;
    versions.insert("customer_totals".to_string(), cv);
    versions.insert("daily_sales".to_string(), dv);
    versions.insert("product_sales".to_string(), pv);
    laps.mark("aggregates");
    laps.log();

    Ok(GoldFrames {
        deleted_orders: strings(&gone_orders, "order_id")?.into_iter().collect(),
        deleted_customers: strings(&gone_customers, "customer_id")?.into_iter().collect(),
        deleted_days: gone_days,
        order_totals,
        order_lines: lines,
        customer_totals,
        daily_sales,
        versions,
    })
}

/// Silver table names, for `status`.
pub fn silver_tables() -> impl Iterator<Item = &'static str> {
    silver::TABLES.iter().map(|(n, _)| *n)
}
