//! Gold: order lines and order totals recomputed for exactly the orders a batch touched, from
//! silver, then written over the old rows of those orders (only the files holding them, found
//! within the batch's date window) with the bronze version applied in each table's `txn`; the
//! aggregates follow by the batch's difference (`aggregates`). Recompute is idempotent, and the
//! aggregates only move from the exact version they equal, so a replay after a crash heals
//! instead of double counting.

pub mod aggregates;
pub mod bridge;
pub mod carried;
pub mod incremental;
pub mod republish;
pub mod rollup;
pub mod totals;
pub mod whole_orders;
pub mod window;

use std::collections::{BTreeSet, HashMap};

use deltalake::kernel::Transaction;
use polars::prelude::*;

use crate::error::Result;
use crate::lake::merge::with_deleted_flag;
use crate::lake::read::scan_keys;
use crate::lake::schema::{self, TableSpec};
use crate::lake::{Lake, rewrite, silver, version_of};
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

/// The order-level gold of one batch as committed: what MongoDB's `orders` and `order_totals`
/// are published from, as soon as the order tables are written.
pub struct OrderFrames {
    pub order_totals: DataFrame,
    pub order_lines: DataFrame,
    pub deleted_orders: Vec<String>,
    /// Version of `gold/order_totals` the frames correspond to (the MongoDB staleness guard).
    pub version: i64,
}

/// The aggregate gold of one batch: what MongoDB's `customer_totals` and `daily_sales` are
/// published from.
pub struct AggregateFrames {
    pub customer_totals: DataFrame,
    pub daily_sales: DataFrame,
    pub deleted_customers: Vec<String>,
    /// `order_date`, `country` of day/country rows that no longer have any order.
    pub deleted_days: DataFrame,
    /// Versions of `gold/customer_totals` and `gold/daily_sales` the frames correspond to.
    pub customers_version: i64,
    pub days_version: i64,
    /// The frames hold the whole table: MongoDB's documents of any other key are gone rows (the
    /// lake could not say which keys changed since MongoDB's position, see `republish`). Report
    /// it to [`republish::Walks::heard`] once published.
    pub customers_whole: Option<republish::WholeAt>,
    pub days_whole: Option<republish::WholeAt>,
}

/// The order tables of one batch, written, and what the aggregates need to move by the difference.
pub struct OrderGold {
    /// The batch's keys, widened by [`expand`].
    touched: Touched,
    order_totals: DataFrame,
    lines: DataFrame,
    /// The touched orders' rows as read before the write (totals: [`TOTALS_DIFF`]; lines: [`LINES_DIFF`]).
    old_totals: DataFrame,
    old_lines: DataFrame,
    gone_orders: DataFrame,
    totals_c: Committed,
    lines_c: Committed,
    ot_read: i64,
    ol_read: i64,
    /// Every order, to publish whole: the log could not say which orders MongoDB missed.
    whole: Option<std::sync::Arc<whole_orders::WholeOrders>>,
    laps: Laps,
}

impl OrderGold {
    /// What MongoDB's order collections are published from (cheap: frames share their columns).
    pub fn frames(&self) -> Result<OrderFrames> {
        Ok(OrderFrames {
            order_totals: self.order_totals.clone(),
            order_lines: self.lines.clone(),
            deleted_orders: strings(&self.gone_orders, "order_id")?.into_iter().collect(),
            version: self.totals_c.after,
        })
    }

    /// Every order, when MongoDB must get them all (see [`whole_orders`]); after [`Self::frames`].
    pub fn whole_orders(&self) -> Option<std::sync::Arc<whole_orders::WholeOrders>> {
        self.whole.clone()
    }
}

/// The gold tables, in the order they are written.
pub const TABLES: [(&str, &TableSpec); 5] = [
    ("order_lines", &schema::GOLD_ORDER_LINES),
    ("order_totals", &schema::GOLD_ORDER_TOTALS),
    ("customer_totals", &schema::GOLD_CUSTOMER_TOTALS),
    ("daily_sales", &schema::GOLD_DAILY_SALES),
    ("product_sales", &schema::GOLD_PRODUCT_SALES),
];

/// The gold tables [`orders`] writes; the others are the aggregates ([`rollup::aggregates`]).
pub const ORDER_TABLES: [&str; 2] = ["order_lines", "order_totals"];

pub fn app_id(group: &str, topic: &str) -> String {
    format!("{group}/gold/{topic}")
}

/// Which gold tables still need the version being applied, and the `txn` to record with it.
pub struct GoldCommit<'a> {
    pub app_id: &'a str,
    pub version: i64,
    /// Effective applied version per gold table name.
    pub applied: &'a HashMap<String, i64>,
    /// When this batch will publish to MongoDB: the bronze version its publish starts after. The
    /// aggregates then also carry the rows MongoDB has not heard of beyond the batch's keys: those
    /// of this topic's commits past that version, and those a rebuild changed (`republish`).
    pub publish_after: Option<i64>,
    /// What earlier walks of the log for `publish_after` found.
    pub walks: &'a republish::Walks,
}

impl GoldCommit<'_> {
    pub(crate) fn needs(&self, table: &str) -> bool {
        self.applied.get(table).is_none_or(|a| *a < self.version)
    }
}

/// Rows of a table whose string `column` is one of `keys` (nothing when the table or `keys` is empty).
pub(crate) async fn read_keys(
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

/// [`read_some`] that also says which version of the table was read ([`aggregates::ABSENT`] when
/// it does not exist): the batch's difference is only exact against that version.
async fn read_at(
    lake: &Lake,
    rel: &str,
    spec: &TableSpec,
    column: &str,
    keys: &BTreeSet<String>,
    columns: &[&str],
) -> Result<(DataFrame, i64)> {
    let (batches, version) = match lake.open(rel).await? {
        Some(t) => {
            let b = if keys.is_empty() { Vec::new() } else { scan_keys(&t, column, keys, Some(columns)).await? };
            (b, version_of(&t) as i64)
        }
        None => (Vec::new(), aggregates::ABSENT),
    };
    let df = bridge::to_frame(&batches, &spec.arrow_schema())?;
    Ok((df.select(columns.iter().copied())?, version))
}

/// Every row of a table, only `columns`, and the version read.
pub(crate) async fn read_all(lake: &Lake, rel: &str, spec: &TableSpec, columns: &[&str]) -> Result<(DataFrame, i64)> {
    let (batches, version) = match lake.open(rel).await? {
        Some(t) => (crate::lake::read::scan_columns(&t, columns).await?, version_of(&t) as i64),
        None => (Vec::new(), aggregates::ABSENT),
    };
    let df = bridge::to_frame(&batches, &spec.arrow_schema())?;
    Ok((df.select(columns.iter().copied())?, version))
}

pub(crate) fn strings(df: &DataFrame, c: &str) -> Result<BTreeSet<String>> {
    Ok(df.column(c)?.str()?.iter().flatten().map(String::from).collect())
}

pub(crate) fn dates(df: &DataFrame, c: &str) -> Result<BTreeSet<i32>> {
    let s = df.column(c)?.cast(&DataType::Int32)?;
    Ok(s.i32()?.iter().flatten().collect())
}

pub(crate) fn key_frame(name: &str, keys: impl IntoIterator<Item = String>) -> Result<DataFrame> {
    let v: Vec<String> = keys.into_iter().collect();
    Ok(DataFrame::new(v.len(), vec![Column::new(name.into(), v)])?)
}

/// A gold MERGE's outcome: the table version it started from and ended at (equal, and
/// `merged` false, when there was nothing to write or the version was applied already).
struct Committed {
    before: i64,
    after: i64,
    merged: bool,
}

impl Committed {
    fn unchanged(v: i64) -> Self {
        Committed { before: v, after: v, merged: false }
    }
}

/// Replaces the rows of the batch's orders in gold table `name` with `new` and deletes `gone` keys,
/// unless the table already has `c.version`. `window` is the batch's date window and the version
/// the table was read at: only the files holding the batch's orders are rewritten (found within the
/// window) and the new rows get files of their own (`lake::rewrite`).
///
/// The commit lands only on the version the batch read: gold rows are derived from what the batch
/// read of silver and gold, and a writer that committed in between (another instance) may have
/// written them from fresher reads. Two instances showed it: one totalled an order before the
/// product's price reached silver, the other re-priced the order, and the first one's write, run
/// again as a MERGE over the newer table, put the stale total back for good. So a table that moved
/// since the read, or a commit race, fails the batch as a conflict, and it is retried on fresh reads.
#[allow(clippy::too_many_arguments)]
async fn commit(
    lake: &Lake,
    prefix: &str,
    name: &str,
    spec: &TableSpec,
    new: &DataFrame,
    gone: &DataFrame,
    c: &GoldCommit<'_>,
    (window, read): (&window::DateWindow, i64),
) -> Result<Committed> {
    let rel = format!("{prefix}/{name}");
    if !c.needs(name) || (new.height() == 0 && gone.height() == 0) {
        let v = lake.open(&rel).await?.map_or(aggregates::ABSENT, |t| version_of(&t) as i64);
        return Ok(Committed::unchanged(v));
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
    let txns = vec![Transaction::new(c.app_id, c.version)];
    let table = lake.open_or_create(&rel, spec).await?;
    let before = version_of(&table) as i64;
    if lake.has_applied(&table, c.app_id, c.version).await? {
        return Ok(Committed::unchanged(before)); // another instance applied this version already
    }
    // The window only covers the rows as they were read; an empty table created since is fine.
    if read != before && !(read == aggregates::ABSENT && before == 0) {
        // Another writer committed since the batch read this table: its rows may be fresher.
        return Err(deltalake::DeltaTableError::VersionAlreadyExists(before as u64).into());
    }
    let search = rewrite::Search::Within(window.expr("order_date"));
    let table = rewrite::replace_keys(table, spec.key[0], source, search, None, spec.cluster_column(), txns).await?;
    lake.keep(&rel, &table);
    Ok(Committed { before, after: version_of(&table) as i64, merged: true })
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
        // Lines can only carry a stale name for products whose product-sales row names them
        // otherwise (or is missing): product sales is committed after the lines of every batch
        // and takes the name silver gave those lines. Reading only those products' lines keeps
        // this step from reading every line of every product a sales batch mentions.
        let named = ["product_id", "product_name"];
        let (products_path, sales_path) = (format!("{silver_prefix}/products"), format!("{gold_prefix}/product_sales"));
        let (products, sold) = tokio::try_join!(
            read_keys(lake, &products_path, &schema::SILVER_PRODUCTS, "product_id", &t.products),
            read_some(lake, &sales_path, &schema::GOLD_PRODUCT_SALES, "product_id", &t.products, Some(&named)),
        )?;
        let touched = key_frame("product_id", t.products.iter().cloned())?;
        let check = strings(&totals::renamed_products(&products, &sold, &touched)?, "product_id")?;
        if !check.is_empty() {
            let cols = ["order_id", "product_id", "product_name"];
            let lines = read_some(lake, &gp, lines_spec, "product_id", &check, Some(&cols)).await?;
            t.orders.extend(strings(&totals::stale_lines(&lines, &products)?, "order_id")?);
        }
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

/// Recomputes the order tables (`order_lines`, `order_totals`) for `touched` and commits what `c`
/// says is still needed; [`rollup::aggregates`] then moves the aggregates by the difference.
pub async fn orders(
    lake: &Lake,
    silver_prefix: &str,
    gold_prefix: &str,
    touched: &Touched,
    c: &GoldCommit<'_>,
    now_us: i64,
) -> Result<OrderGold> {
    let sp = |t: &str| format!("{silver_prefix}/{t}");
    let gp = |t: &str| format!("{gold_prefix}/{t}");
    let mut laps = Laps::new();
    let totals_rel = gp("order_totals");
    let (mut touched, (unheard, whole)) =
        tokio::try_join!(expand(lake, silver_prefix, gold_prefix, touched), unheard_orders(lake, &totals_rel, c))?;
    touched.orders.extend(unheard);
    laps.mark("expand");
    let ids = &touched.orders;

    // Independent reads and commits run concurrently: on object storage each is a few round trips
    // of waiting, which dominated small batches.
    let (orders_path, items_path, ot_path, ol_path) =
        (sp("orders"), sp("order_items"), gp("order_totals"), gp("order_lines"));
    // What gold held for these orders, and at which versions: the aggregates move by the difference.
    let (orders, items, (old_totals, ot_read), (old_lines, ol_read)) = tokio::try_join!(
        read_keys(lake, &orders_path, &schema::SILVER_ORDERS, "order_id", ids),
        read_keys(lake, &items_path, &schema::SILVER_ORDER_ITEMS, "order_id", ids),
        read_at(lake, &ot_path, &schema::GOLD_ORDER_TOTALS, "order_id", ids, &TOTALS_DIFF),
        read_at(lake, &ol_path, &schema::GOLD_ORDER_LINES, "order_id", ids, &LINES_READ),
    )?;
    let mut product_ids = strings(&items, "product_id")?;
    product_ids.extend(touched.products.iter().cloned());
    let products = read_keys(lake, &sp("products"), &schema::SILVER_PRODUCTS, "product_id", &product_ids).await?;
    laps.mark("read_orders");

    let lines = totals::order_lines(&items, &orders, &products)?;
    let order_totals = totals::order_totals(&orders, &lines, now_us)?;
    laps.mark("compute_orders");
    let gone_lines = totals::missing_keys(&old_lines, &lines, &["item_id"])?;
    let gone_orders =
        totals::missing_keys(&key_frame("order_id", touched.orders.iter().cloned())?, &order_totals, &["order_id"])?;
    let lines_window = window::DateWindow::of(&old_lines, &lines, "order_date")?;
    let totals_window = window::DateWindow::of(&old_totals, &order_totals, "order_date")?;
    let old_lines = old_lines.select(LINES_DIFF)?;
    let (lines_c, totals_c) = tokio::try_join!(
        commit(
            lake,
            gold_prefix,
            "order_lines",
            &schema::GOLD_ORDER_LINES,
            &lines,
            &gone_lines,
            c,
            (&lines_window, ol_read)
        ),
        commit(
            lake,
            gold_prefix,
            "order_totals",
            &schema::GOLD_ORDER_TOTALS,
            &order_totals,
            &gone_orders,
            c,
            (&totals_window, ot_read)
        ),
    )?;
    laps.mark("merge_orders");
    let whole = match whole {
        Some(at) => whole_orders::WholeOrders::open(lake, gold_prefix, at).await?.map(std::sync::Arc::new),
        None => None,
    };
    Ok(OrderGold {
        touched,
        order_totals,
        lines,
        old_totals,
        old_lines,
        gone_orders,
        totals_c,
        lines_c,
        ot_read,
        ol_read,
        whole,
        laps,
    })
}

/// Orders whose rows changed in commits of this topic MongoDB has not heard of (the publish was
/// lost, or MongoDB was away): they are recomputed and published with the batch's. `expand` finds
/// the order an item left from gold, which is already past the change by then, so without these
/// the documents of an order that lost an item would stay as they were. When the log no longer
/// reaches MongoDB's position, no orders but a whole publish instead (`whole_orders`).
async fn unheard_orders(
    lake: &Lake,
    rel: &str,
    c: &GoldCommit<'_>,
) -> Result<(BTreeSet<String>, Option<republish::WholeAt>)> {
    let (Some(after), Some(t)) = (c.publish_after, lake.open(rel).await?) else { return Ok(Default::default()) };
    match republish::unheard_keys(c.walks, lake, &t, c.app_id, after, &schema::GOLD_ORDER_TOTALS).await? {
        None => Ok(Default::default()),
        // Recomputing every order of the lake in one batch is not an option; publishing what
        // gold holds of them, a slice at a time, is.
        Some(republish::Unheard::Whole(w)) => {
            if w.news {
                tracing::warn!(
                    after,
                    "the Delta log of gold/order_totals no longer shows what changed since MongoDB's position: \
                     republishing every order document, and removing MongoDB's documents of orders the lake no \
                     longer holds"
                );
            }
            Ok((BTreeSet::new(), Some(w)))
        }
        Some(republish::Unheard::Keys(k)) => {
            tracing::debug!(orders = k.height(), after, "orders changed in commits MongoDB has not heard of");
            Ok((strings(&k, "order_id")?, None))
        }
    }
}

/// The order columns the aggregates are computed from (and the difference carries).
pub(crate) const TOTALS_DIFF: [&str; 7] =
    ["order_id", "customer_id", "order_date", "country", "cancelled", "units", "total_amount"];
/// The line columns product sales are computed from.
pub(crate) const LINES_DIFF: [&str; 5] = ["order_id", "item_id", "product_id", "quantity", "line_amount"];
/// What is read of the touched orders' lines: the difference and where the lines lie (the window).
const LINES_READ: [&str; 6] = ["order_id", "item_id", "product_id", "quantity", "line_amount", "order_date"];

/// Silver table names, for `status`.
pub fn silver_tables() -> impl Iterator<Item = &'static str> {
    silver::TABLES.iter().map(|(n, _)| *n)
}
