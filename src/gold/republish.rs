//! What a MongoDB publish of an aggregate must carry beyond the batch's own keys.
//!
//! A batch moves an aggregate by the difference of the orders it touched and publishes the rows
//! of those keys. That is every row it changed, but not every row MongoDB has yet to hear of:
//!
//! - a rebuild rewrites the whole table, and corrects rows of orders the batch never saw (another
//!   instance's change, an attempt that failed after the order tables);
//! - commits of the batch's topic can be in the lake while their publish was lost: a crash or a
//!   failed tail after the aggregates, or another instance that stopped before publishing. The
//!   rerun no longer sees where a moved or deleted order was: the lake is already past it.
//!
//! So a publish that starts after bronze version `after` also carries the keys each commit of its
//! topic past `after` changed (comparing the table at that commit with the one before), and a
//! rebuild the keys it changed. Both are rare paths; a batch in step with MongoDB pays one cached
//! marker lookup.
//!
//! When the log no longer reaches MongoDB's position (maintenance removed the expired commits, or
//! more commits than [`commits_of`] walks back passed while MongoDB was away), the publish
//! carries the whole table instead, and says so: the sink then also removes the documents of rows
//! the table no longer holds, which no key list could name.

use deltalake::DeltaTable;
use polars::prelude::*;

use super::aggregates::pick_keys;
use super::bridge;
use crate::error::Result;
use crate::lake::schema::TableSpec;
use crate::lake::{Lake, commits_of, read};

/// The whole table.
pub async fn read_whole(t: &DeltaTable, spec: &TableSpec) -> Result<DataFrame> {
    bridge::to_frame(&read::scan(t, None).await?, &spec.arrow_schema())
}

/// What a publish must carry beyond the batch's keys.
pub struct Unheard {
    /// The keys to publish (their rows, or their deletion).
    pub keys: DataFrame,
    /// `keys` is every key the table holds, because what changed could not be read: MongoDB's
    /// documents of any other key are gone rows.
    pub whole: bool,
}

/// The keys changed by the commits of `app_id` that recorded a bronze version past `after`
/// (`None` when there are none: MongoDB has heard of everything this topic wrote). When the log
/// or an old state can no longer be read, every key the table holds now.
pub async fn unheard_keys(
    lake: &Lake,
    t: &DeltaTable,
    app_id: &str,
    after: i64,
    spec: &TableSpec,
) -> Result<Option<Unheard>> {
    if lake.txn_version(t, app_id).await?.is_none_or(|m| m <= after) {
        return Ok(None);
    }
    let whole = async || -> Result<Option<Unheard>> {
        let keys = read_whole(t, spec).await?.select(spec.key.iter().copied())?;
        Ok(Some(Unheard { keys, whole: true }))
    };
    let Some(versions) = commits_of(t, app_id, after).await? else {
        tracing::warn!(table = ?t.table_url().as_str(), after, "the log no longer reaches MongoDB's position: republishing the whole table");
        return whole().await;
    };
    let mut changed: Vec<LazyFrame> = Vec::new();
    // Newest first: the state before one commit is the state after the next one when they are
    // consecutive, so it is read once.
    let mut known: Option<(u64, DataFrame)> = None;
    for v in versions {
        match commit_changes(t, v, spec, known.take()).await {
            Ok((k, before)) => {
                changed.push(k.lazy());
                known = v.checked_sub(1).map(|b| (b, before));
            }
            Err(e) => {
                tracing::warn!(version = v, error = %e, "cannot read what a commit changed: republishing the whole table");
                return whole().await;
            }
        }
    }
    tracing::debug!(commits = changed.len(), after, "aggregate commits MongoDB has not heard of");
    let keys = concat(changed, UnionArgs::default())?.unique(None, UniqueKeepStrategy::Any).collect()?;
    Ok(Some(Unheard { keys, whole: false }))
}

/// The keys commit `v` changed, and the table's state before it. `known` is a state already read.
async fn commit_changes(
    t: &DeltaTable,
    v: u64,
    spec: &TableSpec,
    known: Option<(u64, DataFrame)>,
) -> Result<(DataFrame, DataFrame)> {
    let state = async |version: u64| {
        let mut old = t.clone();
        old.load_version(version).await?;
        read_whole(&old, spec).await
    };
    let after = match known {
        Some((k, df)) if k == v => df,
        _ => state(v).await?,
    };
    let before = match v {
        0 => bridge::to_frame(&[], &spec.arrow_schema())?,
        _ => state(v - 1).await?,
    };
    Ok((changed_keys(&before, &after, spec)?, before))
}

/// The keys whose rows differ between two whole states of a table: added, removed, or with any
/// value changed (`updated_at` aside: a rebuild stamps every row).
pub fn changed_keys(before: &DataFrame, after: &DataFrame, spec: &TableSpec) -> Result<DataFrame> {
    let cols = || spec.columns.iter().filter(|c| c.name != "updated_at").map(|c| col(c.name)).collect::<Vec<_>>();
    let key: Vec<Expr> = spec.key.iter().map(|k| col(*k)).collect();
    let unmatched = |a: &DataFrame, b: &DataFrame| {
        let marked = b.clone().lazy().select(cols()).with_columns([lit(true).alias("__same")]);
        let args = JoinArgs { nulls_equal: true, ..JoinArgs::new(JoinType::Left) };
        a.clone()
            .lazy()
            .select(cols())
            .join(marked, cols(), cols(), args)
            .filter(col("__same").is_null())
            .select(key.clone())
    };
    Ok(concat([unmatched(after, before), unmatched(before, after)], UnionArgs::default())?
        .unique(None, UniqueKeepStrategy::Any)
        .collect()?)
}

/// A batch's picked rows and gone keys, widened to the `extra` keys: their rows in `all` (the
/// table as the publish's version holds it), or gone.
pub fn widen(
    picked: (DataFrame, DataFrame),
    all: &DataFrame,
    extra: &DataFrame,
    key: &[&str],
) -> Result<(DataFrame, DataFrame)> {
    if extra.height() == 0 {
        return Ok(picked);
    }
    let k = || key.iter().map(|c| col(*c)).collect::<Vec<_>>();
    let (rows, gone) = picked;
    let keys = concat(
        [rows.lazy().select(k()), gone.lazy().select(k()), extra.clone().lazy().select(k())],
        UnionArgs::default(),
    )?
    .collect()?;
    pick_keys(all, &keys, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::schema::GOLD_CUSTOMER_TOTALS;

    fn customers(rows: &[(&str, i64, i64)], stamp: i64) -> DataFrame {
        let n = rows.len();
        let df = df! {
            "customer_id" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "country" => vec![Some("France"); n],
            "orders" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "units" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "revenue" => vec![100i64; n],
            "first_order_date" => vec![None::<i32>; n],
            "last_order_date" => vec![None::<i32>; n],
            "updated_at" => vec![stamp; n],
        }
        .unwrap();
        df.lazy()
            .with_columns([col("first_order_date").cast(DataType::Date), col("last_order_date").cast(DataType::Date)])
            .collect()
            .unwrap()
    }

    fn ids(df: &DataFrame, c: &str) -> Vec<String> {
        let mut v: Vec<String> = df.column(c).unwrap().str().unwrap().iter().flatten().map(String::from).collect();
        v.sort();
        v
    }

    #[test]
    fn changed_keys_are_the_added_removed_and_changed_rows_but_not_a_new_stamp() {
        let before = customers(&[("1", 1, 2), ("2", 1, 3), ("3", 2, 5)], 10);
        let after = customers(&[("1", 1, 2), ("2", 1, 4), ("4", 1, 1)], 20);
        let changed = changed_keys(&before, &after, &GOLD_CUSTOMER_TOTALS).unwrap();
        assert_eq!(ids(&changed, "customer_id"), ["2", "3", "4"]);
        let same = changed_keys(&before, &before, &GOLD_CUSTOMER_TOTALS).unwrap();
        assert_eq!(same.height(), 0, "nulls compare equal");
    }

    #[test]
    fn widening_adds_the_rows_and_gone_keys_of_the_extra_keys() {
        let all = customers(&[("1", 1, 2), ("2", 1, 4), ("4", 1, 1)], 20);
        let keys = df! { "customer_id" => ["1", "9"] }.unwrap();
        let picked = pick_keys(&all, &keys, &["customer_id"]).unwrap();
        let extra = df! { "customer_id" => ["3", "4"] }.unwrap();
        let (rows, gone) = widen(picked, &all, &extra, &["customer_id"]).unwrap();
        assert_eq!(ids(&rows, "customer_id"), ["1", "4"]);
        assert_eq!(ids(&gone, "customer_id"), ["3", "9"]);
    }
}
