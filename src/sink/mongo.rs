//! MongoDB publishing of gold, after the gold commit. Writes are bulk upserts/deletes by business
//! key (`_id`), guarded by the lake version stored in each document (`_v`) so a late, older
//! publish never replaces a newer document. Progress (the last bronze version published per
//! topic) lives in MongoDB itself, so a restart republishes exactly what was not confirmed.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, RawArrayBuf, RawBson, RawDocumentBuf, doc, rawdoc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use super::documents::{OrderDocs, customer_docs, daily_docs, daily_ids};
use super::queue::{Hold, Queue, Turn};
use super::tombstones::Tombstones;
use crate::error::{Error, Result};
use crate::gold::{AggregateFrames, OrderFrames};

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
    queue: Queue,
    tombstones: Tombstones,
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
        Ok(MongoSink {
            db,
            group: group.to_string(),
            mostly_existing: Default::default(),
            queue: Queue::default(),
            tombstones: Tombstones::default(),
        })
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

    /// Removes the delete tombstones older than `horizon` (see `tombstones`); returns how many.
    /// Publishing does this by itself now and then with [`super::tombstones::HORIZON`].
    pub async fn prune_tombstones(&self, horizon: Duration) -> Result<u64> {
        self.tombstones.prune(&self.db, horizon).await
    }

    /// Queues a publish that writes the documents of `orders` (see [`Queue::turn`]).
    pub fn queue(&self, orders: std::collections::HashSet<String>) -> Turn {
        self.queue.turn(orders)
    }

    /// Holds back the publishes queued from now until the hold is dropped (see [`Queue::hold`]).
    pub fn hold_publishes(&self) -> Hold {
        self.queue.hold()
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
        self.delete("order_totals", &g.deleted_orders, g.version, &mut st).await?;
        self.delete("orders", &g.deleted_orders, g.version, &mut st).await?;
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
        self.delete("customer_totals", &g.deleted_customers, g.customers_version, &mut st).await?;
        self.delete("daily_sales", &daily_ids(&g.deleted_days)?, g.days_version, &mut st).await?;
        if g.customers_whole.is_some() {
            self.sweep("customer_totals", g.customers_version, &mut st).await?;
        }
        if g.days_whole.is_some() {
            self.sweep("daily_sales", g.days_version, &mut st).await?;
        }
        Ok(st)
    }

    /// After every order was published at `version` (`gold::whole_orders`): deletes the
    /// `order_totals` and `orders` documents of orders the lake no longer holds.
    pub async fn sweep_orders(&self, version: i64) -> Result<PublishStats> {
        let mut st = PublishStats::default();
        self.sweep("order_totals", version, &mut st).await?;
        self.sweep("orders", version, &mut st).await?;
        Ok(st)
    }

    /// After a publish of a whole table at `version`: every document of `coll` it did not write
    /// and no newer publish wrote (`_v` below `version`) is a row the table no longer holds.
    async fn sweep(&self, coll: &str, version: i64, st: &mut PublishStats) -> Result<()> {
        let mut older = self
            .db
            .collection::<Document>(coll)
            .find(doc! {"_v": {"$lt": version}})
            .projection(doc! {"_id": 1})
            .await?;
        let mut ids = Vec::new();
        while let Some(d) = older.try_next().await? {
            match d.get("_id") {
                Some(Bson::String(id)) => ids.push(id.clone()),
                other => {
                    tracing::warn!(collection = coll, id = ?other, "a document not written by orderlake: left alone")
                }
            }
        }
        if !ids.is_empty() {
            tracing::info!(
                collection = coll,
                documents = ids.len(),
                version,
                "documents of rows the lake no longer holds: deleted"
            );
            self.delete(coll, &ids, version, st).await?;
        }
        Ok(())
    }

    /// Publishes `rows` documents built `CHUNK` at a time by `docs` (a range of frame rows in,
    /// their documents out), so only one chunk of a batch's documents is in memory at once.
    async fn upsert(
        &self,
        coll: &str,
        rows: usize,
        version: i64,
        st: &mut PublishStats,
        docs: impl Fn(Range<usize>) -> Result<Vec<RawDocumentBuf>>,
    ) -> Result<()> {
        let existing_first = self.mostly_existing.lock().expect("sink lock").get(coll).copied().unwrap_or(false);
        let (mut inserted_or_not, mut existing) = (0, 0);
        let mut ids = Vec::with_capacity(rows);
        for start in (0..rows).step_by(CHUNK) {
            let mut chunk = docs(start..(start + CHUNK).min(rows))?;
            for d in &mut chunk {
                d.append("_v", version);
                if let Ok(id) = d.get_str("_id") {
                    ids.push(id.to_string());
                }
            }
            if !existing_first && !chunk.is_empty() {
                inserted_or_not += chunk.len();
                chunk = self.insert_new(coll, chunk, st).await?;
                existing += chunk.len();
            }
            self.update(coll, &chunk, version, st).await?;
        }
        // Another instance may have deleted some of these documents at a newer version while
        // this publish was on its way (see `tombstones`): delete them again.
        let undone = self.tombstones.newer(&self.db, coll, &ids, version).await?;
        if !undone.is_empty() {
            tracing::info!(
                collection = coll,
                documents = undone.len(),
                "documents another instance deleted meanwhile: deleted again"
            );
            let undone: Vec<(&str, i64)> = undone.iter().map(|(id, v)| (id.as_str(), *v)).collect();
            self.remove(coll, &undone, st).await?;
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
    async fn update(&self, coll: &str, docs: &[RawDocumentBuf], version: i64, st: &mut PublishStats) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut updates = RawArrayBuf::new();
        for d in docs {
            let id = d.get("_id").ok().flatten().map_or(RawBson::Null, |id| id.to_raw_bson());
            updates.push(rawdoc! {"q": guard(id, version), "u": d.clone(), "upsert": true});
        }
        let reply = self.db.run_raw_command(rawdoc! {"update": coll, "updates": updates, "ordered": false}).await?;
        let reply = WriteReply::read(&reply);
        st.upserted += reply.n;
        st.stale += reply.duplicates(coll)?.len() as u64;
        Ok(())
    }

    /// Inserts the documents (at most `CHUNK`) that do not exist yet; returns those that do
    /// (duplicate `_id`), for the guarded upsert. An insert needs no guard: no stored document
    /// means nothing newer.
    async fn insert_new(
        &self,
        coll: &str,
        mut docs: Vec<RawDocumentBuf>,
        st: &mut PublishStats,
    ) -> Result<Vec<RawDocumentBuf>> {
        let mut documents = RawArrayBuf::new();
        for d in &docs {
            documents.push(d.clone());
        }
        let reply = self.db.run_raw_command(rawdoc! {"insert": coll, "documents": documents, "ordered": false}).await?;
        let reply = WriteReply::read(&reply);
        st.upserted += reply.n;
        let mut existing = Vec::new();
        for i in reply.duplicates(coll)? {
            match docs.get_mut(i) {
                Some(d) => existing.push(std::mem::take(d)),
                None => {
                    return Err(Error::Other(format!(
                        "mongodb {coll}: the server reported a duplicate key at position {i} of an insert of {}",
                        docs.len()
                    )));
                }
            }
        }
        Ok(existing)
    }

    /// Deletes `ids` at `version`, after laying their tombstones.
    async fn delete(&self, coll: &str, ids: &[String], version: i64, st: &mut PublishStats) -> Result<()> {
        self.tombstones.lay(&self.db, coll, ids, version).await?;
        let versioned: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), version)).collect();
        self.remove(coll, &versioned, st).await
    }

    /// Guarded deletes, each at its own version.
    async fn remove(&self, coll: &str, ids: &[(&str, i64)], st: &mut PublishStats) -> Result<()> {
        for chunk in ids.chunks(CHUNK) {
            let mut deletes = RawArrayBuf::new();
            for (id, version) in chunk {
                deletes.push(rawdoc! {"q": guard(RawBson::String(id.to_string()), *version), "limit": 1});
            }
            let reply = self.db.run_raw_command(rawdoc! {"delete": coll, "deletes": deletes, "ordered": false}).await?;
            let reply = WriteReply::read(&reply);
            // A guarded delete that finds a newer document simply matches nothing; any write
            // error (a duplicate key cannot happen here) fails the publish.
            reply.duplicates(coll)?;
            st.deleted += reply.n;
        }
        Ok(())
    }
}

/// The document `_id` unless it holds a newer gold version: `_v` missing or `<= version`. Written
/// as one `$not`/`$gt` predicate beside the `_id` equality rather than an `$or`, so every server
/// resolves it by the `_id` index (SecantusDB scanned the collection per update for the `$or`
/// form: 2,000 upserts took 19 s instead of 0.5 s).
fn guard(id: RawBson, version: i64) -> RawDocumentBuf {
    rawdoc! {"_id": id, "_v": {"$not": {"$gt": version}}}
}

/// What a bulk `insert`/`update`/`delete` command reports: the documents it affected and the
/// statements that failed, by code and position.
pub(super) struct WriteReply {
    n: u64,
    errors: Vec<(i64, Option<usize>, String)>,
}

impl WriteReply {
    pub(super) fn read(reply: &Document) -> WriteReply {
        let int = |d: &Document, key: &str| match d.get(key) {
            Some(Bson::Int32(v)) => Some(i64::from(*v)),
            Some(Bson::Int64(v)) => Some(*v),
            Some(Bson::Double(v)) => Some(*v as i64),
            _ => None,
        };
        let n = int(reply, "n").unwrap_or(0).max(0) as u64;
        let errors = reply
            .get_array("writeErrors")
            .map(|list| {
                list.iter()
                    .filter_map(Bson::as_document)
                    .map(|e| {
                        let index = int(e, "index").and_then(|i| usize::try_from(i).ok());
                        (int(e, "code").unwrap_or(0), index, e.get_str("errmsg").unwrap_or("?").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        WriteReply { n, errors }
    }

    /// The positions of the statements that failed on a duplicate key (11000): for an insert, a
    /// document that exists; for a guarded upsert, one whose stored version is newer. Any other
    /// write error fails the publish.
    pub(super) fn duplicates(&self, coll: &str) -> Result<Vec<usize>> {
        let mut at = Vec::new();
        for (code, index, message) in &self.errors {
            match (code, index) {
                (11000, Some(i)) => at.push(*i),
                _ => return Err(Error::Other(format!("mongodb {coll}: write error {code}: {message}"))),
            }
        }
        Ok(at)
    }
}
