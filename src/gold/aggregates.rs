//! Keeping the aggregate gold tables (`customer_totals`, `daily_sales`, `product_sales`) current:
//! moved by the batch's difference (`incremental`) when they provably equal the order tables the
//! difference was read from, rebuilt from the whole order tables otherwise (a new lake with old
//! tables, a crash between the order MERGE and the aggregates, a concurrent writer, or a change a
//! difference cannot move). Moving costs what the batch touched; only a rebuild grows with the lake.
//!
//! The proof is a `txn` per source table in every aggregate commit (`orderlake/base/order_totals`,
//! and `…/order_lines` for product sales): the version of that table the aggregate equals. The
//! commits are strict (they fail as a conflict instead of landing on a newer version), so a marker
//! is never recorded over a change it did not see; the batch is then retried. A marker behind the
//! source only by compactions (commits that change no row, [`commits::only_rearranged`]) still
//! proves equality: maintenance must not cost the next batch a rebuild.

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use polars::prelude::*;

use super::{GoldCommit, bridge, republish};
use crate::error::Result;
use crate::lake::merge::{MergeSpec, merge, with_deleted_flag};
use crate::lake::schema::TableSpec;
use crate::lake::{Lake, commit_with, commits, version_of};

pub const BASE_TOTALS: &str = "orderlake/base/order_totals";
pub const BASE_LINES: &str = "orderlake/base/order_lines";

/// The version of a table that does not exist.
pub const ABSENT: i64 = -1;

/// How an order table moved in this batch: the difference read at `from` is exactly what lies
/// between `from` and `to` when `exact` (nobody else committed in between).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub from: i64,
    pub to: i64,
    pub exact: bool,
}

impl Step {
    /// `read`: the version the old rows were read at; `before`/`after`: around this batch's MERGE
    /// (`merged` false when it was skipped: nothing to write, or already applied).
    pub fn new(read: i64, before: i64, after: i64, merged: bool) -> Step {
        let exact = if merged {
            // A table created since the read is empty at version 0, like the absent one read.
            (before == read || (read == ABSENT && before == 0)) && after == before + 1
        } else {
            after == read
        };
        Step { from: read, to: after, exact }
    }
}

/// One aggregate table and what this batch knows about its sources.
pub struct Agg<'a> {
    pub lake: &'a Lake,
    pub rel: String,
    pub name: &'static str,
    pub spec: &'static TableSpec,
    pub c: &'a GoldCommit<'a>,
    pub steps: Vec<(&'static str, Step)>,
    /// MongoDB holds the table's rows: a publish carries what it has not heard of.
    pub published: bool,
}

/// The batch's rows of an aggregate (for MongoDB), the keys whose rows went, the table version.
pub struct Updated {
    pub rows: DataFrame,
    pub gone: DataFrame,
    pub version: i64,
    /// `rows` is the whole table (see [`republish::Unheard::Whole`]).
    pub whole: Option<republish::WholeAt>,
}

/// A full recompute: every row of the aggregate and the source versions it was computed from.
pub struct Rebuilt {
    pub all: DataFrame,
    pub bases: Vec<(&'static str, i64)>,
}

impl Agg<'_> {
    /// Brings the table to the batch's version. `read_old` reads the table's rows of the batch's
    /// keys; `moved` turns them into the new rows and gone keys, or `None` (then `rebuild`);
    /// `pick` selects the batch's rows and gone keys from a rebuilt or already-current table.
    pub async fn update(
        &self,
        read_old: impl AsyncFnOnce(&DeltaTable) -> Result<DataFrame>,
        moved: impl FnOnce(&DataFrame) -> Result<Option<(DataFrame, DataFrame)>>,
        rebuild: impl AsyncFnOnce() -> Result<Rebuilt>,
        pick: impl Fn(&DataFrame) -> Result<(DataFrame, DataFrame)>,
    ) -> Result<Updated> {
        let table = self.lake.open(&self.rel).await?;
        // Commits of this topic MongoDB may not have heard of go out with this batch's rows.
        let unheard = match (&table, self.publish_after()) {
            (Some(t), Some(after)) => {
                republish::unheard_keys(self.c.walks, self.lake, t, self.c.app_id, after, self.spec).await?
            }
            _ => None,
        };
        if unheard.as_ref().and_then(republish::Unheard::whole).is_some_and(|w| w.news) {
            tracing::warn!(
                table = self.name,
                after = self.publish_after(),
                "the Delta log no longer shows what changed since MongoDB's position: republishing the whole \
                 table, and removing MongoDB's documents of rows it no longer holds"
            );
        }
        if let Some(t) = &table
            && (!self.c.needs(self.name) || self.lake.has_applied(t, self.c.app_id, self.c.version).await?)
        {
            // Another attempt or instance got here first: publish what the table holds.
            let picked = match &unheard {
                None => pick(&read_old(t).await?)?,
                Some(extra) => {
                    let all = republish::read_whole(t, self.spec).await?;
                    republish::widen(pick(&all)?, &all, &extra.keys_in(&all, self.spec.key)?, self.spec.key)?
                }
            };
            return self.done("applied before", picked, version_of(t), unheard.as_ref());
        }
        let mut matches = self.steps.iter().all(|(_, s)| s.exact);
        for (app, step) in &self.steps {
            if !matches {
                break;
            }
            let marker = match &table {
                None => ABSENT,
                Some(t) => self.lake.txn_version(t, app).await?.unwrap_or(i64::MIN),
            };
            matches = marker == step.from || self.only_rearranged(app, marker, step.from).await?;
        }
        if matches {
            let old = match &table {
                Some(t) => read_old(t).await?,
                None => bridge::to_frame(&[], &self.spec.arrow_schema())?,
            };
            if let Some(picked) = moved(&old)? {
                let bases = self.steps.iter().map(|(app, s)| (*app, s.to)).collect();
                let t = self.write_moved(table, &picked.0, &picked.1, bases).await?;
                let picked = match &unheard {
                    None => picked,
                    Some(extra) => {
                        let all = republish::read_whole(&t, self.spec).await?;
                        republish::widen(picked, &all, &extra.keys_in(&all, self.spec.key)?, self.spec.key)?
                    }
                };
                return self.done("moved", picked, version_of(&t), unheard.as_ref());
            }
        }
        let rebuilt = rebuild().await?;
        tracing::info!(table = self.name, rows = rebuilt.all.height(), "aggregate recomputed from the order tables");
        // With MongoDB, every row the rebuild changed goes out too, not only the batch's keys.
        let before = match (&table, self.publish_after()) {
            (_, None) => None,
            (Some(t), Some(_)) => Some(republish::read_whole(t, self.spec).await?),
            (None, Some(_)) => Some(bridge::to_frame(&[], &self.spec.arrow_schema())?),
        };
        let t = match table {
            Some(t) => t,
            None => self.lake.open_or_create(&self.rel, self.spec).await?,
        };
        let props = commit_with(self.txns(rebuilt.bases)).with_max_retries(0);
        let t = t
            .write(vec![bridge::to_batch(&rebuilt.all, self.spec)?])
            .with_save_mode(SaveMode::Overwrite)
            .with_commit_properties(props)
            .await?;
        self.lake.keep(&self.rel, &t);
        let mut picked = pick(&rebuilt.all)?;
        let changed = before.map(|b| republish::changed_keys(&b, &rebuilt.all, self.spec)).transpose()?;
        let unheard_keys = unheard.as_ref().map(|u| u.keys_in(&rebuilt.all, self.spec.key)).transpose()?;
        for extra in changed.iter().chain(&unheard_keys) {
            picked = republish::widen(picked, &rebuilt.all, extra, self.spec.key)?;
        }
        self.done("rebuilt", picked, version_of(&t), unheard.as_ref())
    }

    /// Where the batch's MongoDB publish starts, for a table MongoDB holds.
    fn publish_after(&self) -> Option<i64> {
        self.c.publish_after.filter(|_| self.published)
    }

    fn done(
        &self,
        how: &str,
        (rows, gone): (DataFrame, DataFrame),
        version: u64,
        unheard: Option<&republish::Unheard>,
    ) -> Result<Updated> {
        let whole = unheard.and_then(republish::Unheard::whole).cloned();
        tracing::debug!(
            table = self.name,
            how,
            version,
            rows = rows.height(),
            gone = gone.height(),
            publish_after = self.publish_after(),
            unheard = unheard.is_some(),
            whole = whole.is_some(),
            "aggregate updated"
        );
        Ok(Updated { rows, gone, version: version as i64, whole })
    }

    /// Whether the source table of marker `app` changed no row from version `marker` to `read`
    /// (maintenance compacted it in between): the aggregate still equals it.
    async fn only_rearranged(&self, app: &str, marker: i64, read: i64) -> Result<bool> {
        // A base marker is named for its source table, a sibling of the aggregate.
        let (prefix, source) =
            (self.rel.rsplit_once('/').map_or("", |(p, _)| p), app.rsplit('/').next().unwrap_or(app));
        match self.lake.open(&format!("{prefix}/{source}")).await? {
            Some(t) if commits::only_rearranged(&t, marker, read).await? => {
                tracing::debug!(
                    table = self.name,
                    source,
                    marker,
                    read,
                    "source only compacted since the aggregate's marker"
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn txns(&self, bases: Vec<(&'static str, i64)>) -> Vec<Transaction> {
        let mut txns = vec![Transaction::new(self.c.app_id, self.c.version)];
        txns.extend(bases.into_iter().map(|(app, v)| Transaction::new(app, v)));
        txns
    }

    /// MERGEs moved rows and deletes gone keys on exactly the version the markers were read from.
    async fn write_moved(
        &self,
        table: Option<DeltaTable>,
        rows: &DataFrame,
        gone: &DataFrame,
        bases: Vec<(&'static str, i64)>,
    ) -> Result<DeltaTable> {
        let t = match table {
            Some(t) => t,
            None => self.lake.open_or_create(&self.rel, self.spec).await?,
        };
        let txns = self.txns(bases);
        if rows.height() == 0 && gone.height() == 0 {
            // Nothing to change, but the markers move with the order tables.
            let empty = arrow::array::RecordBatch::new_empty(self.spec.arrow_schema());
            let props = commit_with(txns).with_max_retries(0);
            let t = t.write(vec![empty]).with_save_mode(SaveMode::Append).with_commit_properties(props).await?;
            self.lake.keep(&self.rel, &t);
            return Ok(t);
        }
        let mut batches = vec![bridge::to_batch(rows, self.spec)?];
        if gone.height() > 0 {
            let mut full = gone.clone();
            for c in self.spec.columns {
                if full.column(c.name).is_err() {
                    full.with_column(Column::full_null(c.name.into(), gone.height(), &bridge::polars_type(c.kind)))?;
                }
            }
            batches.push(bridge::to_batch(&full, self.spec)?);
        }
        let flags = std::iter::repeat_n(false, rows.height()).chain(std::iter::repeat_n(true, gone.height())).collect();
        let source = with_deleted_flag(&arrow::compute::concat_batches(&batches[0].schema(), &batches)?, flags)?;
        let m = MergeSpec { spec: self.spec, guard: None, strict: true };
        let t = merge(t, &m, source, txns).await?;
        self.lake.keep(&self.rel, &t);
        Ok(t)
    }
}

/// Rows of `all` whose `key` is among `keys`, and the keys with no row.
pub fn pick_keys(all: &DataFrame, keys: &DataFrame, key: &[&str]) -> Result<(DataFrame, DataFrame)> {
    let k: Vec<Expr> = key.iter().map(|c| col(*c)).collect();
    let marked = keys.clone().lazy().unique(None, UniqueKeepStrategy::Any).with_columns([lit(true).alias("__want")]);
    let rows =
        all.clone().lazy().join(marked, k.clone(), k, JoinArgs::new(JoinType::Inner)).collect()?.drop("__want")?;
    let gone = super::totals::missing_keys(keys, &rows, key)?;
    Ok((rows, gone))
}
