//! MongoDB publishing of gold, after the gold commit. Writes are bulk upserts/deletes by business
//! key (`_id`), guarded by the lake version stored in each document (`_v`) so a late, older
//! publish never replaces a newer document. Progress (the last bronze version published per
//! topic) lives in MongoDB itself, so a restart republishes exactly what was not confirmed.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Decimal128, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use polars::prelude::*;

use crate::decode::decimal::format_cents;
use crate::error::{Error, Result};
use crate::gold::GoldFrames;
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
    mostly_existing: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PublishStats {
    pub upserted: u64,
    pub deleted: u64,
    /// Skipped because the stored document is newer.
    pub stale: u64,
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

    /// Upserts the documents and applies the deletions of one batch's gold frames.
    /// `fault` is the test-only fault-injection point (`mid-mongo` stops after the first collection).
    pub async fn publish(&self, g: &GoldFrames, fault: Option<&str>) -> Result<PublishStats> {
        let mut st = PublishStats::default();
        let v = |t: &str| g.versions.get(t).copied().unwrap_or(0);
        let (orders, totals) = order_docs(g)?;
        self.upsert("orders", orders, v("order_totals"), &mut st).await?;
        if fault == Some("mid-mongo") {
            return Err(Error::InjectedFault("mid-mongo".into()));
        }
        self.upsert("order_totals", totals, v("order_totals"), &mut st).await?;
        self.upsert("customer_totals", customer_docs(&g.customer_totals)?, v("customer_totals"), &mut st).await?;
        self.upsert("daily_sales", daily_docs(&g.daily_sales)?, v("daily_sales"), &mut st).await?;
        let ids = |v: &[String]| v.iter().map(|s| Bson::String(s.clone())).collect::<Vec<_>>();
        self.delete("orders", ids(&g.deleted_orders), v("order_totals"), &mut st).await?;
        self.delete("order_totals", ids(&g.deleted_orders), v("order_totals"), &mut st).await?;
        self.delete("customer_totals", ids(&g.deleted_customers), v("customer_totals"), &mut st).await?;
        let gone_days = daily_ids(&g.deleted_days)?.into_iter().map(Bson::String).collect();
        self.delete("daily_sales", gone_days, v("daily_sales"), &mut st).await?;
        Ok(st)
    }

    async fn upsert(&self, coll: &str, docs: Vec<Document>, version: i64, st: &mut PublishStats) -> Result<()> {
        let mut docs: Vec<Document> = docs
            .into_iter()
            .map(|mut d| {
                d.insert("_v", version);
                d
            })
            .collect();
        let existing_first = self.mostly_existing.lock().expect("sink lock").get(coll).copied().unwrap_or(false);
        if !existing_first && !docs.is_empty() {
            let total = docs.len();
            docs = self.insert_new(coll, docs, st).await?;
            self.mostly_existing.lock().expect("sink lock").insert(coll.to_string(), docs.len() * 2 > total);
        }
        for chunk in docs.chunks(CHUNK) {
            let updates: Vec<Document> = chunk
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
        }
        if existing_first {
            // Re-check now and then whether new documents have become the common case.
            self.mostly_existing.lock().expect("sink lock").remove(coll);
        }
        Ok(())
    }

    /// Inserts the documents that do not exist yet; returns those that do (duplicate `_id`), for
    /// the guarded upsert. An insert needs no guard: no stored document means nothing newer.
    async fn insert_new(&self, coll: &str, docs: Vec<Document>, st: &mut PublishStats) -> Result<Vec<Document>> {
        let mut existing = Vec::new();
        for chunk in docs.chunks(CHUNK) {
            let reply = self.db.run_command(doc! {"insert": coll, "documents": chunk, "ordered": false}).await?;
            let n = reply.get_i32("n").map(|n| n as u64).or_else(|_| reply.get_i64("n").map(|n| n as u64)).unwrap_or(0);
            st.upserted += n;
            if let Ok(errs) = reply.get_array("writeErrors") {
                for e in errs.iter().filter_map(Bson::as_document) {
                    let code = e.get_i32("code").map(i64::from).or_else(|_| e.get_i64("code")).unwrap_or(0);
                    let index =
                        e.get_i32("index").map(|i| i as usize).or_else(|_| e.get_i64("index").map(|i| i as usize));
                    match (code, index) {
                        (11000, Ok(i)) if i < chunk.len() => existing.push(chunk[i].clone()),
                        _ => {
                            return Err(Error::Other(format!(
                                "mongodb {coll}: insert error {code}: {}",
                                e.get_str("errmsg").unwrap_or("?")
                            )));
                        }
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

fn order_docs(g: &GoldFrames) -> Result<(Vec<Document>, Vec<Document>)> {
    let l = Cols(&g.order_lines);
    let (l_order, l_item, l_prod, l_name) =
        (l.s("order_id")?, l.s("item_id")?, l.s("product_id")?, l.s("product_name")?);
    let (l_qty, l_price, l_amount) = (l.i("quantity")?, l.i("unit_price")?, l.i("line_amount")?);
    let mut items: std::collections::HashMap<&str, Vec<Document>> = std::collections::HashMap::new();
    for i in 0..g.order_lines.height() {
        let Some(order) = l_order.get(i) else {
            continue;
        };
        items.entry(order).or_default().push(doc! {
            "item_id": opt_str(l_item.get(i)),
            "product_id": opt_str(l_prod.get(i)),
            "name": opt_str(l_name.get(i)),
            "quantity": l_qty.get(i),
            "unit_price": money(l_price.get(i)),
            "amount": money(l_amount.get(i)),
        });
    }
    for v in items.values_mut() {
        v.sort_by(|a, b| a.get_str("item_id").unwrap_or("").cmp(b.get_str("item_id").unwrap_or("")));
    }
    let t = Cols(&g.order_totals);
    let (id, cust, country, odate, status) =
        (t.s("order_id")?, t.s("customer_id")?, t.s("country")?, t.d("order_date")?, t.s("status")?);
    let (cancelled, lines, units, total, upd) =
        (t.b("cancelled")?, t.i("lines")?, t.i("units")?, t.i("total_amount")?, t.i("updated_at")?);
    let mut orders = Vec::with_capacity(g.order_totals.height());
    let mut totals = Vec::with_capacity(g.order_totals.height());
    for i in 0..g.order_totals.height() {
        let Some(oid) = id.get(i) else { continue };
        let updated = Bson::DateTime(DateTime::from_millis(upd.get(i).unwrap_or(0) / 1000));
        orders.push(doc! {
            "_id": oid,
            "customer_id": opt_str(cust.get(i)),
            "country": opt_str(country.get(i)),
            "order_date": date(odate.get(i)),
            "status": opt_str(status.get(i)),
            "items": items.remove(oid).unwrap_or_default(),
            "total_amount": money(total.get(i)),
            "updated_at": updated.clone(),
        });
        totals.push(doc! {
            "_id": oid,
            "customer_id": opt_str(cust.get(i)),
            "country": opt_str(country.get(i)),
            "order_date": date(odate.get(i)),
            "status": opt_str(status.get(i)),
            "cancelled": cancelled.get(i).unwrap_or(false),
            "lines": lines.get(i),
            "units": units.get(i),
            "total_amount": money(total.get(i)),
            "updated_at": updated,
        });
    }
    Ok((orders, totals))
}

fn customer_docs(df: &DataFrame) -> Result<Vec<Document>> {
    let c = Cols(df);
    let (id, country, orders, units, revenue) =
        (c.s("customer_id")?, c.s("country")?, c.i("orders")?, c.i("units")?, c.i("revenue")?);
    let (first, last, upd) = (c.d("first_order_date")?, c.d("last_order_date")?, c.i("updated_at")?);
    Ok((0..df.height())
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

fn daily_docs(df: &DataFrame) -> Result<Vec<Document>> {
    let c = Cols(df);
    let (d, country, orders, units, revenue) =
        (c.d("order_date")?, c.s("country")?, c.i("orders")?, c.i("units")?, c.i("revenue")?);
    let (cancelled, cancelled_amount) = (c.i("cancelled_orders")?, c.i("cancelled_amount")?);
    Ok((0..df.height())
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
