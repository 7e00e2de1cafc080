//! Tombstones of MongoDB deletes: what lets a delete hold against an older publish from another
//! instance. Within one process every publish writes after the ones queued before it, but two
//! instances of a group (one reading `orders`, the other `order_items`) publish side by side,
//! and a deleted document leaves no `_v` for the older publish's guard to compare against.
//!
//! So a delete first records what it deletes, and an upsert looks afterwards whether a newer
//! delete covers any of its documents, and deletes those again:
//!
//! - `_orderlake_tombstones` holds one marker per collection, `{_id: "<collection>", _v}`: the
//!   newest version any delete of it carried, and one tombstone per deleted document,
//!   `{_id: "<collection>|<id>", _v, at}`.
//! - A delete raises the marker, then writes the tombstones, then deletes.
//! - An upsert writes, then reads the marker. Only when a delete newer than its own version
//!   exists does it look up its documents' tombstones (so a stream without deletes, or one
//!   instance publishing in order, pays one small read per collection and publish).
//!
//! Either the upserter's read of the marker sees the newer delete, or that delete's marker write,
//! and so its delete, came after the upsert and removed the document itself. A reader can see the
//! resurrected document only between the two steps of the older publish.
//!
//! Tombstones older than [`HORIZON`] are removed: an older publish reads gold a moment before it
//! writes (a retried publish reads gold again), so an hour is far beyond any publish's window.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mongodb::Database;
use mongodb::bson::{Bson, DateTime, Document, RawArrayBuf, doc, rawdoc};

use super::mongo::WriteReply;
use crate::error::{Error, Result};

pub const TOMBSTONES: &str = "_orderlake_tombstones";
/// How long a tombstone is kept.
pub const HORIZON: Duration = Duration::from_secs(3600);
/// How often a process removes expired tombstones (on its next delete).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Tombstones written or looked up per command.
const CHUNK: usize = 1000;

#[derive(Default)]
pub struct Tombstones {
    last_prune: Mutex<Option<Instant>>,
}

fn tombstone_id(coll: &str, id: &str) -> String {
    format!("{coll}|{id}")
}

impl Tombstones {
    /// Records that `ids` of `coll` are deleted at `version`: call it before deleting them.
    pub async fn lay(&self, db: &Database, coll: &str, ids: &[String], version: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.prune_now_and_then(db).await?;
        let t = db.collection::<Document>(TOMBSTONES);
        t.update_one(doc! {"_id": coll}, doc! {"$max": {"_v": version}}).upsert(true).await?;
        let at = DateTime::now();
        for chunk in ids.chunks(CHUNK) {
            // Most deleted ids have no tombstone yet: plain inserts (an upsert costs SecantusDB
            // about five times as much); the few that have one (deleted, created again, deleted
            // again) are raised to this version.
            let mut docs = RawArrayBuf::new();
            for id in chunk {
                docs.push(rawdoc! {"_id": tombstone_id(coll, id), "_v": version, "at": at});
            }
            let reply = db.run_raw_command(rawdoc! {"insert": TOMBSTONES, "documents": docs, "ordered": false}).await?;
            let mut again = RawArrayBuf::new();
            for i in WriteReply::read(&reply).duplicates(TOMBSTONES)? {
                let Some(id) = chunk.get(i) else { continue };
                again.push(rawdoc! {
                    "q": {"_id": tombstone_id(coll, id)},
                    "u": {"$max": {"_v": version}, "$set": {"at": at}},
                    "upsert": true,
                });
            }
            if !again.is_empty() {
                let reply =
                    db.run_raw_command(rawdoc! {"update": TOMBSTONES, "updates": again, "ordered": false}).await?;
                if !WriteReply::read(&reply).duplicates(TOMBSTONES)?.is_empty() {
                    return Err(Error::Other(format!("mongodb {TOMBSTONES}: a duplicate key on an upsert by _id")));
                }
            }
        }
        Ok(())
    }

    /// The documents among `ids` of `coll` that a delete newer than `version` removed, with that
    /// delete's version: call it after upserting them, and delete those again.
    pub async fn newer(&self, db: &Database, coll: &str, ids: &[String], version: i64) -> Result<Vec<(String, i64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let t = db.collection::<Document>(TOMBSTONES);
        let latest = t.find_one(doc! {"_id": coll}).await?.and_then(|d| version_in(&d));
        if latest.is_none_or(|v| v <= version) {
            return Ok(Vec::new());
        }
        let prefix = tombstone_id(coll, "");
        let mut found = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let wanted: Vec<String> = chunk.iter().map(|id| tombstone_id(coll, id)).collect();
            let mut cursor = t.find(doc! {"_id": {"$in": wanted}, "_v": {"$gt": version}}).await?;
            while cursor.advance().await? {
                let d = cursor.deserialize_current()?;
                if let (Ok(tid), Some(v)) = (d.get_str("_id"), version_in(&d))
                    && let Some(id) = tid.strip_prefix(&prefix)
                {
                    found.push((id.to_string(), v));
                }
            }
        }
        Ok(found)
    }

    /// Removes tombstones older than [`HORIZON`]; returns how many.
    pub async fn prune(&self, db: &Database, horizon: Duration) -> Result<u64> {
        let cutoff = DateTime::from_millis(DateTime::now().timestamp_millis() - horizon.as_millis() as i64);
        let gone = db.collection::<Document>(TOMBSTONES).delete_many(doc! {"at": {"$lt": cutoff}}).await?;
        *self.last_prune.lock().expect("prune lock") = Some(Instant::now());
        Ok(gone.deleted_count)
    }

    async fn prune_now_and_then(&self, db: &Database) -> Result<()> {
        let due = self.last_prune.lock().expect("prune lock").is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        if due {
            let gone = self.prune(db, HORIZON).await?;
            if gone > 0 {
                tracing::debug!(removed = gone, "expired MongoDB tombstones removed");
            }
        }
        Ok(())
    }
}

fn version_in(d: &Document) -> Option<i64> {
    match d.get("_v") {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Double(v)) => Some(*v as i64),
        _ => None,
    }
}
