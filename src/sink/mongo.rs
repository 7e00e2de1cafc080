//! MongoDB publishing of gold, after the gold commit. Writes are bulk upserts/deletes by business
//! key (`_id`), guarded by the lake version stored in each document (`_v`) so a late, older
//! publish never replaces a newer document. Progress (the last bronze version published per
//! topic) lives in MongoDB itself, so a restart republishes exactly what was not confirmed.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Decimal128, Document, RawArrayBuf, RawDocumentBuf, doc, rawdoc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use polars::prelude::*;

use crate::decode::decimal::format_cents;
use crate::error::{Error, Result};
use crate::gold::{AggregateFrames, OrderFrames};
use crate::lake::rows::date_from_days;

pub const PROGRESS: &str = "_orderlake_progress";
/// Statements per `update`/`delete` command: well under MongoDB's 100,000 and 48 MB limits.
const CHUNK: usize = 1000;

pub struct MongoSink {
    db: Database,
    group: String,
    /// Per collection: did most documents of the last publish already exist? Then updates go
    /// straight to guarded upserts; otherwise plain inserts go first (5x cheaper on SecantusDB,
    /// cheaper on MongoDB too) and only the documents that exist take the upsert path.
    mostly_existing: std::sync::Mutex<HashMap<String, bool>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PublishStats {
    pub upserted: u64,
    pub deleted: u64,
    /// Skipped because the stored document is newer.
    pub stale: u64,
}

impl std::ops::AddAssign for PublishStats {
    fn add_assign(&mut self, o: PublishStats) {
        self.upserted += o.upserted;
        self.deleted += o.deleted;
        self.stale += o.stale;
    }
}

fn money(c: Option<i64>) -> Bson {
    match c {
        Some(c) => {
            Bson::Decimal128(format_cents(c).parse::<Decimal128>().expect("formatted cents parse as Decimal128"))
        }
        None => Bson::Null,
    }
}

fn date(d: Option<i32>) -> Bson {
    match d {
        Some(d) => {
            let ms = date_from_days(d).and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
            Bson::DateTime(DateTime::from_millis(ms))
        }
        None => Bson::Null,
    }
}

fn opt_str(v: Option<&str>) -> Bson {
    v.map_or(Bson::Null, |s| Bson::String(s.to_string()))
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

impl MongoSink {
    /// Connects and pings, so a wrong URI or credentials fail at start.
    pub async fn connect(uri: &str, database: &str, group: &str) -> Result<MongoSink> {
        let mut opts = ClientOptions::parse(uri).await?;
        opts.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        opts.connect_timeout.get_or_insert(Duration::from_secs(5));
        opts.app_name.get_or_insert_with(|| "orderlake".into());
        let client = Client::with_options(opts)?;
        let db = client.database(database);
        db.run_command(doc! {"ping": 1}).await?;
        Ok(MongoSink { db, group: group.to_string(), mostly_existing: Default::default() })
    }

    /// Ends the driver's sessions and stops its background tasks while the runtime still runs.
    /// A client that is only dropped ends its sessions in a task of its own; when the process
    /// exits right after, that task can outlive the connection pool's and the driver panics
    /// (mongodb 3.9, `connection_requester.rs`: a backtrace printed after a successful run).
    pub async fn close(&self) {
        let shutdown = self.db.client().clone().shutdown().immediate(true);
        if tokio::time::timeout(Duration::from_secs(5), shutdown).await.is_err() {
            tracing::debug!("MongoDB client shutdown took over 5 s; leaving it to the process exit");
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    fn progress_id(&self, topic: &str) -> String {
        format!("{}/{}", self.group, topic)
    }

    /// The last bronze version of `topic` whose gold is confirmed in MongoDB.
    pub async fn progress(&self, topic: &str) -> Result<Option<i64>> {
        let d = self.db.collection::<Document>(PROGRESS).find_one(doc! {"_id": self.progress_id(topic)}).await?;
        Ok(d.and_then(|d| d.get_i64("bronze_version").ok()))
    }

    pub async fn set_progress(&self, topic: &str, bronze_version: i64) -> Result<()> {
        self.db
            .collection::<Document>(PROGRESS)
            .update_one(
                doc! {"_id": self.progress_id(topic)},
                doc! {"$max": {"bronze_version": bronze_version}, "$set": {"updated_at": DateTime::now()}},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Upserts the `order_totals` and `orders` documents of one batch and deletes its gone orders.
    /// Totals go first: they are what real-time readers poll. `fault` is the test-only
    /// fault-injection point (`mid-mongo` stops after the first collection).
    pub async fn publish_orders(&self, g: &OrderFrames, fault: Option<&str>) -> Result<PublishStats> {
        let mut st = PublishStats::default();
        let o = OrderDocs::new(g)?;
        self.upsert("order_totals", o.len(), g.version, &mut st, |r| Ok(o.totals(r))).await?;
        if fault == Some("mid-mongo") {
            return Err(Error::InjectedFault("mid-mongo".into()));
        }
        self.upsert("orders", o.len(), g.version, &mut st, |r| Ok(o.orders(r))).await?;
        let ids: Vec<Bson> = g.deleted_orders.iter().map(|s| Bson::String(s.clone())).collect();
        self.delete("order_totals", ids.clone(), g.version, &mut st).await?;
        self.delete("orders", ids, g.version, &mut st).await?;
        Ok(st)
    }

    /// Upserts the `customer_totals` and `daily_sales` documents of one batch and applies its deletions.
    pub async fn publish_aggregates(&self, g: &AggregateFrames) -> Result<PublishStats> {
        let mut st = PublishStats::default();
        let (customers, days) = (&g.customer_totals, &g.daily_sales);
        self.upsert("customer_totals", customers.height(), g.customers_version, &mut st, |r| {
            customer_docs(customers, r)
        })
        .await?;
        self.upsert("daily_sales", days.height(), g.days_version, &mut st, |r| daily_docs(days, r)).await?;
        let gone: Vec<Bson> = g.deleted_customers.iter().map(|s| Bson::String(s.clone())).collect();
        self.delete("customer_totals", gone, g.customers_version, &mut st).await?;
        let gone_days = daily_ids(&g.deleted_days)?.into_iter().map(Bson::String).collect();
        self.delete("daily_sales", gone_days, g.days_version, &mut st).await?;
        Ok(st)
    }

    /// Publishes `rows` documents built `CHUNK` at a time by `docs` (a range of frame rows in,
    /// their documents out), so only one chunk of a batch's documents is in memory at once.
    async fn upsert(
        &self,
        coll: &str,
        rows: usize,
        version: i64,
        st: &mut PublishStats,
        docs: impl Fn(Range<usize>) -> Result<Vec<Document>>,
    ) -> Result<()> {
        let existing_first = self.mostly_existing.lock().expect("sink lock").get(coll).copied().unwrap_or(false);
        let (mut inserted_or_not, mut existing) = (0, 0);
        for start in (0..rows).step_by(CHUNK) {
            let mut chunk = docs(start..(start + CHUNK).min(rows))?;
            for d in &mut chunk {
                d.insert("_v", version);
            }
            if !existing_first && !chunk.is_empty() {
                inserted_or_not += chunk.len();
                chunk = self.insert_new(coll, chunk, st).await?;
                existing += chunk.len();
            }
            self.update(coll, &chunk, version, st).await?;
        }
        let mut adaptive = self.mostly_existing.lock().expect("sink lock");
        if existing_first {
            // Re-check now and then whether new documents have become the common case.
            adaptive.remove(coll);
        } else if inserted_or_not > 0 {
            adaptive.insert(coll.to_string(), existing * 2 > inserted_or_not);
        }
        Ok(())
    }

    /// Guarded upserts of documents (at most `CHUNK`) that may exist.
    async fn update(&self, coll: &str, docs: &[Document], version: i64, st: &mut PublishStats) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let updates: Vec<Document> = docs
            .iter()
            .map(|d| {
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                doc! {
                    "q": guard(id, version),
                    "u": d.clone(),
                    "upsert": true,
                }
            })
            .collect();
        let reply = self.db.run_command(doc! {"update": coll, "updates": updates, "ordered": false}).await?;
        let (n, stale) = check_reply(coll, &reply)?;
        st.upserted += n;
        st.stale += stale;
        Ok(())
    }

    /// Inserts the documents (at most `CHUNK`) that do not exist yet; returns those that do
    /// (duplicate `_id`), for the guarded upsert. An insert needs no guard: no stored document
    /// means nothing newer.
    async fn insert_new(&self, coll: &str, mut docs: Vec<Document>, st: &mut PublishStats) -> Result<Vec<Document>> {
        // Serialised straight into the command: `doc!` deep-copied every document first, and that
        // copy (built, serialised, dropped) was 11 % of orderlake's CPU in a 1M run.
        let mut documents = RawArrayBuf::new();
        for d in &docs {
            documents.push(RawDocumentBuf::from_document(d).map_err(|e| Error::Other(format!("mongodb {coll}: {e}")))?);
        }
        let command = rawdoc! {"insert": coll, "documents": documents, "ordered": false};
        let reply = self.db.run_raw_command(command).await?;
        let n = reply.get_i32("n").map(|n| n as u64).or_else(|_| reply.get_i64("n").map(|n| n as u64)).unwrap_or(0);
        st.upserted += n;
        let mut existing = Vec::new();
        if let Ok(errs) = reply.get_array("writeErrors") {
            for e in errs.iter().filter_map(Bson::as_document) {
                let code = e.get_i32("code").map(i64::from).or_else(|_| e.get_i64("code")).unwrap_or(0);
                let index = e.get_i32("index").map(|i| i as usize).or_else(|_| e.get_i64("index").map(|i| i as usize));
                match (code, index) {
                    (11000, Ok(i)) if i < docs.len() => existing.push(std::mem::take(&mut docs[i])),
                    _ => {
                        return Err(Error::Other(format!(
                            "mongodb {coll}: insert error {code}: {}",
                            e.get_str("errmsg").unwrap_or("?")
                        )));
                    }
                }
            }
        }
        Ok(existing)
    }

    async fn delete(&self, coll: &str, ids: Vec<Bson>, version: i64, st: &mut PublishStats) -> Result<()> {
        for chunk in ids.chunks(CHUNK) {
            let deletes: Vec<Document> =
                chunk.iter().map(|id| doc! {"q": guard(id.clone(), version), "limit": 1}).collect();
            let reply = self.db.run_command(doc! {"delete": coll, "deletes": deletes, "ordered": false}).await?;
            st.deleted += check_reply(coll, &reply)?.0;
        }
        Ok(())
    }
}

/// The document `_id` unless it holds a newer gold version: `_v` missing or `<= version`. Written
/// as one `$not`/`$gt` predicate beside the `_id` equality rather than an `$or`, so every server
/// resolves it by the `_id` index (SecantusDB scanned the collection per update for the `$or`
/// form: 2,000 upserts took 19 s instead of 0.5 s).
fn guard(id: Bson, version: i64) -> Document {
    doc! {"_id": id, "_v": {"$not": {"$gt": version}}}
}

/// Counts affected documents; a duplicate-key error means "the stored document is newer" (the
/// guarded filter did not match, so the upsert tried to insert an existing `_id`).
fn check_reply(coll: &str, reply: &Document) -> Result<(u64, u64)> {
    let n = reply.get_i32("n").map(|n| n as u64).or_else(|_| reply.get_i64("n").map(|n| n as u64)).unwrap_or(0);
    let mut stale = 0;
    if let Ok(errs) = reply.get_array("writeErrors") {
        for e in errs.iter().filter_map(Bson::as_document) {
            let code = e.get_i32("code").map(i64::from).or_else(|_| e.get_i64("code")).unwrap_or(0);
            if code == 11000 {
                stale += 1;
            } else {
                return Err(Error::Other(format!(
                    "mongodb {coll}: write error {code}: {}",
                    e.get_str("errmsg").unwrap_or("?")
                )));
            }
        }
    }
    Ok((n, stale))
}

/// The `orders` and `order_totals` documents of a batch, built a row range at a time; an order's
/// lines (sorted by item) are nested in its `orders` document.
struct OrderDocs {
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
    fn new(g: &OrderFrames) -> Result<Self> {
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

    fn len(&self) -> usize {
        self.id.len()
    }

    fn updated(&self, i: usize) -> Bson {
        Bson::DateTime(DateTime::from_millis(self.updated.get(i).unwrap_or(0) / 1000))
    }

    fn orders(&self, rows: Range<usize>) -> Vec<Document> {
        rows.filter_map(|i| {
            let oid = self.id.get(i)?;
            let items: Vec<Document> = self
                .lines_of
                .get(oid)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|&j| {
                    doc! {
                        "item_id": opt_str(self.item.get(j)),
                        "product_id": opt_str(self.product.get(j)),
                        "name": opt_str(self.name.get(j)),
                        "quantity": self.qty.get(j),
                        "unit_price": money(self.price.get(j)),
                        "amount": money(self.amount.get(j)),
                    }
                })
                .collect();
            Some(doc! {
                "_id": oid,
                "customer_id": opt_str(self.customer.get(i)),
                "country": opt_str(self.country.get(i)),
                "order_date": date(self.date.get(i)),
                "status": opt_str(self.status.get(i)),
                "items": items,
                "total_amount": money(self.total.get(i)),
                "updated_at": self.updated(i),
            })
        })
        .collect()
    }

    fn totals(&self, rows: Range<usize>) -> Vec<Document> {
        rows.filter_map(|i| {
            Some(doc! {
                "_id": self.id.get(i)?,
                "customer_id": opt_str(self.customer.get(i)),
                "country": opt_str(self.country.get(i)),
                "order_date": date(self.date.get(i)),
                "status": opt_str(self.status.get(i)),
                "cancelled": self.cancelled.get(i).unwrap_or(false),
                "lines": self.lines.get(i),
                "units": self.units.get(i),
                "total_amount": money(self.total.get(i)),
                "updated_at": self.updated(i),
            })
        })
        .collect()
    }
}

fn customer_docs(df: &DataFrame, rows: Range<usize>) -> Result<Vec<Document>> {
    let c = Cols(df);
    let (id, country, orders, units, revenue) =
        (c.s("customer_id")?, c.s("country")?, c.i("orders")?, c.i("units")?, c.i("revenue")?);
    let (first, last, upd) = (c.d("first_order_date")?, c.d("last_order_date")?, c.i("updated_at")?);
    Ok(rows
        .filter_map(|i| {
            Some(doc! {
                "_id": id.get(i)?,
                "country": opt_str(country.get(i)),
                "orders": orders.get(i),
                "units": units.get(i),
                "revenue": money(revenue.get(i)),
                "first_order_date": date(first.get(i)),
                "last_order_date": date(last.get(i)),
                "updated_at": DateTime::from_millis(upd.get(i).unwrap_or(0) / 1000),
            })
        })
        .collect())
}

/// `_id` of a daily row: `"<YYYY-MM-DD>|<country>"`.
pub fn daily_id(days: i32, country: &str) -> String {
    format!("{}|{country}", date_from_days(days).format("%Y-%m-%d"))
}

fn daily_ids(df: &DataFrame) -> Result<Vec<String>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    let c = Cols(df);
    let (d, country) = (c.d("order_date")?, c.s("country")?);
    Ok((0..df.height()).filter_map(|i| Some(daily_id(d.get(i)?, country.get(i)?))).collect())
}

fn daily_docs(df: &DataFrame, rows: Range<usize>) -> Result<Vec<Document>> {
    let c = Cols(df);
    let (d, country, orders, units, revenue) =
        (c.d("order_date")?, c.s("country")?, c.i("orders")?, c.i("units")?, c.i("revenue")?);
    let (cancelled, cancelled_amount) = (c.i("cancelled_orders")?, c.i("cancelled_amount")?);
    Ok(rows
        .filter_map(|i| {
            let (day, ctry) = (d.get(i)?, country.get(i)?);
            Some(doc! {
                "_id": daily_id(day, ctry),
                "order_date": date(Some(day)),
                "country": ctry,
                "orders": orders.get(i),
                "units": units.get(i),
                "revenue": money(revenue.get(i)),
                "cancelled_orders": cancelled.get(i),
                "cancelled_amount": money(cancelled_amount.get(i)),
            })
        })
        .collect())
}
