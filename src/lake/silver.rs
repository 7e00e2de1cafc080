//! Silver: the current state of orders, items, products and customers, MERGEd by key. A change
//! applies only when its source position is newer than the row's, so replays and out-of-order
//! arrivals can never move a row back in time. Deletes remove the row and leave a tombstone in
//! `silver/_deletes`, so an older change arriving after the delete cannot bring the row back.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::datatypes::{Field, Schema};
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::{col, lit};
use deltalake::kernel::Transaction;

use super::Lake;
use super::merge::{MergeSpec, merge, with_deleted_flag};
use super::read::{scan, str_lits};
use super::rows::{self, str_col, ts_col};
use super::schema::{self, TableSpec};
use crate::error::Result;
use crate::model::{Changes, DeleteRow, Entity, SourcePos};

/// The silver tables in the order they are written.
pub const TABLES: [(&str, &TableSpec); 4] = [
    ("products", &schema::SILVER_PRODUCTS),
    ("customers", &schema::SILVER_CUSTOMERS),
    ("orders", &schema::SILVER_ORDERS),
    ("order_items", &schema::SILVER_ORDER_ITEMS),
];

pub const TOMBSTONES: &str = "_deletes";

pub fn app_id(group: &str, topic: &str) -> String {
    format!("{group}/silver/{topic}")
}

/// Keeps the newest change per key: MERGE needs unique source keys, and the newest one wins anyway.
pub fn newest_per_key<T, K: Eq + Hash>(rows: &[T], key: impl Fn(&T) -> K, pos: impl Fn(&T) -> &SourcePos) -> Vec<&T> {
    let mut best: HashMap<K, &T> = HashMap::with_capacity(rows.len());
    for r in rows {
        match best.entry(key(r)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if pos(r) >= pos(e.get()) {
                    e.insert(r);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
    }
    best.into_values().collect()
}

/// A change of one entity reduced to what the merge needs to pick winners.
struct Pick<'a> {
    key: &'a str,
    pos: &'a SourcePos,
    /// Index into the upserts, or `None` for a delete.
    upsert: Option<usize>,
}

/// The tombstone table as a batch found it. Every silver table of the batch reads it, so it is
/// opened once, by the first table that needs it: in a stream without deletes it does not exist,
/// and each open of an absent table is a storage LIST. A batch only ever adds tombstones of the
/// entity it is applying, after reading that entity's, so one snapshot per batch sees everything
/// each table must respect.
#[derive(Default)]
struct Tombstones(tokio::sync::OnceCell<Option<DeltaTable>>);

async fn write_tombstones(lake: &Lake, prefix: &str, deletes: &[&DeleteRow], now_us: i64) -> Result<()> {
    if deletes.is_empty() {
        return Ok(());
    }
    let spec = &schema::SILVER_TOMBSTONES;
    let pos: Vec<String> = deletes.iter().map(|d| d.pos.render()).collect();
    let b = rows::batch(
        spec,
        vec![
            str_col(deletes.iter().map(|d| Some(d.entity.table()))),
            str_col(deletes.iter().map(|d| Some(d.key.as_str()))),
            str_col(pos.iter().map(|p| Some(p.as_str()))),
            ts_col(deletes.iter().map(|_| Some(now_us))),
        ],
    )?;
    let t = lake.open_or_create(&format!("{prefix}/{TOMBSTONES}"), spec).await?;
    merge(t, &MergeSpec { spec, guard: Some("source_pos"), strict: false }, b, vec![]).await?;
    Ok(())
}

/// Delete markers shaped like `schema`: key and position set, everything else null.
fn delete_markers(schema: &Arc<Schema>, key_col: &str, deletes: &[&DeleteRow]) -> Result<RecordBatch> {
    let pos: Vec<String> = deletes.iter().map(|d| d.pos.render()).collect();
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            n if n == key_col => str_col(deletes.iter().map(|d| Some(d.key.as_str()))),
            "source_pos" => str_col(pos.iter().map(|p| Some(p.as_str()))),
            _ => new_null_array(f.data_type(), deletes.len()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

fn relaxed(spec: &TableSpec) -> Arc<Schema> {
    Arc::new(Schema::new(
        spec.arrow_schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<Field>>(),
    ))
}

/// What every silver table of one batch shares: where silver lives, the batch's clock and the
/// tombstones as the batch found them.
pub struct Batch<'a> {
    lake: &'a Lake,
    prefix: &'a str,
    now_us: i64,
    stones: Tombstones,
}

impl<'a> Batch<'a> {
    pub fn new(lake: &'a Lake, prefix: &'a str, now_us: i64) -> Batch<'a> {
        Batch { lake, prefix, now_us, stones: Tombstones::default() }
    }

    /// Tombstones of `entity` for `keys`: key → position of the delete.
    async fn tombstones(&self, entity: Entity, keys: &[String]) -> Result<HashMap<String, String>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rel = format!("{}/{TOMBSTONES}", self.prefix);
        let open = self.stones.0.get_or_try_init(|| self.lake.open(&rel)).await?;
        let Some(t) = open else { return Ok(HashMap::new()) };
        let filter = col("entity").eq(lit(entity.table())).and(col("key").in_list(str_lits(keys), false));
        let batches = scan(t, Some(filter)).await?;
        let mut out = HashMap::new();
        for b in &batches {
            let k = arrow::compute::cast(b.column_by_name("key").expect("key"), &arrow::datatypes::DataType::Utf8)?;
            let p = arrow::compute::cast(
                b.column_by_name("source_pos").expect("source_pos"),
                &arrow::datatypes::DataType::Utf8,
            )?;
            let (k, p) = (arrow::array::AsArray::as_string::<i32>(&k), arrow::array::AsArray::as_string::<i32>(&p));
            for i in 0..b.num_rows() {
                out.insert(k.value(i).to_string(), p.value(i).to_string());
            }
        }
        Ok(out)
    }
}

/// Applies the changes of one entity to its silver table, recording `txn`. `changes` are those of
/// the bronze versions after `after`. Returns `None` when the batch has nothing for that table (no
/// commit is made).
pub async fn apply_table(
    b: &Batch<'_>,
    name: &str,
    spec: &TableSpec,
    changes: &Changes,
    after: i64,
    txn: Transaction,
) -> Result<Option<DeltaTable>> {
    let (lake, prefix, now_us) = (b.lake, b.prefix, b.now_us);
    let Some(entity) = Entity::from_table(name) else { return Ok(None) };
    let rel = format!("{prefix}/{name}");
    let truncates: Vec<_> = changes.truncates.iter().filter(|t| t.entity == entity).collect();
    if let Some(newest) = truncates.iter().map(|t| t.pos.render()).max()
        && let Some(t) = lake.open(&rel).await?
    {
        let t = t.delete().with_predicate(format!("source_pos < '{newest}'")).await?.0;
        tracing::warn!(table = %rel, version = super::version_of(&t), "truncate applied: older rows deleted");
    }
    // Upserts of this entity, as (key, pos) with their index.
    let upsert_keys: Vec<(String, &SourcePos)> = match entity {
        Entity::Orders => changes.orders.iter().map(|r| (r.order_id.clone(), &r.pos)).collect(),
        Entity::OrderItems => changes.items.iter().map(|r| (r.item_id.clone(), &r.pos)).collect(),
        Entity::Products => changes.products.iter().map(|r| (r.product_id.clone(), &r.pos)).collect(),
        Entity::Customers => changes.customers.iter().map(|r| (r.customer_id.clone(), &r.pos)).collect(),
    };
    let deletes: Vec<&DeleteRow> = changes.deletes_of(entity).collect();
    if upsert_keys.is_empty() && deletes.is_empty() {
        return Ok(None);
    }
    let mut picks: Vec<Pick<'_>> =
        upsert_keys.iter().enumerate().map(|(i, (k, p))| Pick { key: k, pos: p, upsert: Some(i) }).collect();
    picks.extend(deletes.iter().map(|d| Pick { key: &d.key, pos: &d.pos, upsert: None }));
    let winners = newest_per_key(&picks, |p| p.key.to_string(), |p| p.pos);

    // An upsert older than a delete already applied (tombstone) must not resurrect the row.
    let upsert_winners: Vec<String> =
        winners.iter().filter(|w| w.upsert.is_some()).map(|w| w.key.to_string()).collect();
    let stones = b.tombstones(entity, &upsert_winners).await?;
    let keep = |w: &&&Pick<'_>| stones.get(w.key).is_none_or(|t| w.pos.render() > *t);
    let ups: Vec<usize> = winners.iter().filter(keep).filter_map(|w| w.upsert).collect();
    let dels: Vec<&DeleteRow> = winners
        .iter()
        .filter(|w| w.upsert.is_none())
        .filter_map(|w| deletes.iter().find(|d| d.key == w.key && &d.pos == w.pos).copied())
        .collect();
    // Tombstones first: written idempotently, they must exist even if a crash follows the merge.
    write_tombstones(lake, prefix, &dels, now_us).await?;

    let upserts = match entity {
        Entity::Orders => rows::orders(&ups.iter().map(|i| &changes.orders[*i]).collect::<Vec<_>>())?,
        Entity::OrderItems => rows::items(&ups.iter().map(|i| &changes.items[*i]).collect::<Vec<_>>())?,
        Entity::Products => rows::products(&ups.iter().map(|i| &changes.products[*i]).collect::<Vec<_>>())?,
        Entity::Customers => rows::customers(&ups.iter().map(|i| &changes.customers[*i]).collect::<Vec<_>>())?,
    };
    let schema = if upserts.num_rows() > 0 { upserts.schema() } else { relaxed(spec) };
    let upserts = RecordBatch::try_new(
        schema.clone(),
        if upserts.num_rows() > 0 {
            upserts.columns().to_vec()
        } else {
            schema.fields().iter().map(|f| new_null_array(f.data_type(), 0)).collect()
        },
    )?;
    let markers = delete_markers(&schema, entity.key_column(), &dels)?;
    let flags: Vec<bool> =
        std::iter::repeat_n(false, upserts.num_rows()).chain(std::iter::repeat_n(true, markers.num_rows())).collect();
    let source = with_deleted_flag(&arrow::compute::concat_batches(&schema, [&upserts, &markers])?, flags)?;
    let table = lake.open_or_create(&rel, spec).await?;
    let marker = lake.txn_version(&table, &txn.app_id).await?;
    if marker.is_some_and(|m| m >= txn.version) {
        return Ok(Some(table)); // another instance applied this version already
    }
    if source.num_rows() == 0 {
        // Everything was older than what silver has: record progress only.
        let t = super::mark(table, spec, vec![txn]).await?;
        return Ok(Some(t));
    }
    // The same columns as the table: replace the batch's keys in only the files that hold them
    // (a MERGE rewrites the whole file its inserts land in: one file, rewritten every batch).
    // Other shapes (a column added mid-stream, or one the source lacks) keep MERGE's semantics.
    let table_cols: BTreeSet<String> = table.snapshot()?.schema().fields().map(|f| f.name().clone()).collect();
    let source_cols: BTreeSet<String> =
        source.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != super::merge::DELETED).collect();
    // Items keyed by their own Kafka position are new by construction: bronze holds each offset
    // once, and the table holds none of the versions after `after` (another instance catching up
    // may have applied some of them: then they are searched for as usual), so nothing is read.
    let new_keys = entity == Entity::OrderItems
        && marker.is_none_or(|m| m <= after)
        && dels.is_empty()
        && truncates.is_empty()
        && ups.iter().all(|i| changes.items[*i].once);
    let table = if table_cols == source_cols {
        let (key, guard) = (entity.key_column(), Some("source_pos"));
        let search = if new_keys { super::rewrite::Search::Nowhere } else { super::rewrite::Search::All };
        match super::rewrite::replace_keys(
            table,
            key,
            source.clone(),
            search,
            guard,
            spec.cluster_column(),
            vec![txn.clone()],
        )
        .await
        {
            Ok(t) => return Ok(Some(t)),
            Err(e) if e.is_commit_conflict() => {
                tracing::info!(table = %rel, "silver write raced another writer: running it again as a MERGE");
                let table = lake.open_or_create(&rel, spec).await?;
                if lake.has_applied(&table, &txn.app_id, txn.version).await? {
                    return Ok(Some(table));
                }
                table
            }
            Err(e) => return Err(e),
        }
    } else {
        table
    };
    let m = MergeSpec { spec, guard: Some("source_pos"), strict: false };
    Ok(Some(merge(table, &m, source, vec![txn]).await?))
}

#[cfg(test)]
mod tests;
