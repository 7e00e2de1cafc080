//! What a MongoDB publish must carry beyond the batch's own keys.
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
//! topic past `after` changed (the rows of the files the commit removed against those of the
//! files it added), and a rebuild the keys it changed. The order documents have the same hole
//! (an item deleted or moved away names only itself, or its new order), so `gold::orders` asks
//! the same of `order_totals`. Both are rare paths; a batch in step with MongoDB pays one cached
//! marker lookup.
//!
//! When the log no longer reaches MongoDB's position (maintenance removed the expired commits, or
//! more commits than [`commits_of`] walks back passed while MongoDB was away), the publish
//! carries the whole table instead, and says so: the sink then also removes the documents of rows
//! the table no longer holds, which no key list could name. [`Walks`] remembers both where the log
//! ends and, once MongoDB confirms it, the version a whole publish was read at: the later steps of
//! a long catch-up neither walk back to the log's end again nor send the whole table again.

use std::collections::HashMap;
use std::sync::Mutex;

use deltalake::DeltaTable;
use polars::prelude::*;

use super::aggregates::pick_keys;
use super::bridge;
use crate::error::Result;
use crate::lake::commits::{self, AtVersion};
use crate::lake::schema::TableSpec;
use crate::lake::{Lake, commits_of, read, version_of};

/// The whole table.
pub async fn read_whole(t: &DeltaTable, spec: &TableSpec) -> Result<DataFrame> {
    bridge::to_frame(&read::scan(t, None).await?, &spec.arrow_schema())
}

/// What a publish must carry beyond the batch's keys.
pub enum Unheard {
    /// These keys (their rows, or their deletion).
    Keys(DataFrame),
    /// Every key the table holds, because what changed could not be read: MongoDB's documents of
    /// any other key are gone rows. Not read here: the caller has the table in hand, or no use
    /// for it (the order tables).
    Whole(WholeAt),
}

/// A whole-table publish of a topic's aggregate, to report to [`Walks::heard`] once MongoDB holds
/// it: from then on the topic's walks need only start at the version it was read at.
#[derive(Clone, Debug)]
pub struct WholeAt {
    id: (String, String),
    after: i64,
    /// Found by this call rather than remembered from an earlier one: the caller says once what
    /// that means for its documents, not at every step of a catch-up.
    pub news: bool,
}

impl WholeAt {
    /// For a publish of the whole `table` (its URL) for the topic of `app_id`, from position `after`.
    pub fn new(table: &str, app_id: &str, after: i64) -> WholeAt {
        WholeAt { id: (table.to_string(), app_id.to_string()), after, news: true }
    }
}

impl Unheard {
    pub fn whole(&self) -> Option<&WholeAt> {
        match self {
            Unheard::Keys(_) => None,
            Unheard::Whole(w) => Some(w),
        }
    }

    /// The keys to carry, given every row of the table as the publish's version holds it.
    pub fn keys_in(&self, all: &DataFrame, key: &[&str]) -> Result<DataFrame> {
        match self {
            Unheard::Keys(k) => Ok(k.clone()),
            Unheard::Whole(_) => Ok(all.select(key.iter().copied())?),
        }
    }
}

/// The keys each commit of a topic changed in a gold table, as walks of the log found them,
/// kept for the run. MongoDB catches up in chunks of bronze versions, each asking for the commits
/// past its own start: without this, every chunk would read the states of the same commits again,
/// and a catch-up after a long outage would cost the square of its length.
#[derive(Default)]
pub struct Walks(Mutex<HashMap<(String, String), Walk>>);

/// Every commit of the topic with a marker past `after`, up to table version `top`: its marker and
/// the keys it changed.
struct Walk {
    after: i64,
    top: u64,
    commits: Vec<(i64, DataFrame)>,
    /// A publish from a position below this one cannot learn what changed: the commits that would
    /// say are out of the log's reach, now and later (the log only loses commits at its start,
    /// and gains them past its end). Found once, so that each step of a long catch-up does not
    /// walk the log back as far as it goes only to find that again.
    whole_below: i64,
}

impl Walk {
    fn from(after: i64) -> Walk {
        Walk { after, top: 0, commits: vec![], whole_below: i64::MIN }
    }
}

impl Walks {
    fn take(&self, id: &(String, String)) -> Option<Walk> {
        self.0.lock().expect("walks lock").remove(id)
    }

    fn put(&self, id: (String, String), w: Walk) {
        self.0.lock().expect("walks lock").insert(id, w);
    }

    /// MongoDB now holds the whole table as of `version` (a publish of [`Unheard::Whole`] went
    /// through): whatever the commits up to it changed, MongoDB has. So later publishes of the
    /// topic from no earlier a start walk only the commits past `version`, instead of each
    /// republishing the whole table while their start is out of the log's reach.
    pub fn heard(&self, w: &WholeAt, version: i64) {
        let Ok(top) = u64::try_from(version) else { return };
        let mut walks = self.0.lock().expect("walks lock");
        let known = walks.remove(&w.id);
        // A walk that knows a later version is a fact of the log: it stays.
        let walk = match known {
            Some(k) if k.top > top => k,
            k => Walk { top, whole_below: k.map_or(i64::MIN, |k| k.whole_below), ..Walk::from(w.after) },
        };
        walks.insert(w.id.clone(), walk);
    }
}

/// The keys changed by the commits of `app_id` that recorded a bronze version past `after`
/// (`None` when there are none: MongoDB has heard of everything this topic wrote). When the log
/// or an old state can no longer be read, every key the table holds now.
pub async fn unheard_keys(
    walks: &Walks,
    lake: &Lake,
    t: &DeltaTable,
    app_id: &str,
    after: i64,
    spec: &TableSpec,
) -> Result<Option<Unheard>> {
    let Some(marker) = lake.txn_version(t, app_id).await?.filter(|m| *m > after) else {
        return Ok(None);
    };
    let newest = version_of(t);
    let id = (t.table_url().to_string(), app_id.to_string());
    let whole = |news| Ok(Some(Unheard::Whole(WholeAt { news, ..WholeAt::new(&id.0, &id.1, after) })));
    let mut walk = walks.take(&id).unwrap_or(Walk::from(after));
    // A walk from no later a start, of this table as it was or an older version of it, still
    // holds: only the commits past it are read.
    let holds = walk.after <= after && walk.top <= newest && (walk.top > 0 || !walk.commits.is_empty());
    if !holds {
        if after < walk.whole_below {
            tracing::debug!(table = %t.table_url(), after, "still out of the log's reach");
            walks.put(id.clone(), walk);
            return whole(false);
        }
        walk = Walk { whole_below: walk.whole_below, ..Walk::from(after) };
    }
    let above = holds.then_some(walk.top);
    let walked = commits_of(t, app_id, after, above).await?;
    if !walked.reached {
        // Every commit the walk found is past `after`; a start below the oldest of them (or below
        // the newest marker, when the walk found none) would walk off the log's end as well.
        // A walk this one extended goes too: it would only lead here again.
        let whole_below = walked.commits.last().map_or(marker, |(_, m)| *m);
        walk = Walk { whole_below, ..Walk::from(after) };
        tracing::debug!(table = %t.table_url(), after, whole_below = walk.whole_below, "the log does not reach back");
        walks.put(id.clone(), walk);
        return whole(true);
    }
    // Oldest first: each version is reached from the one before by reading only the commits in
    // between, instead of replaying the log from a checkpoint per commit.
    let mut prev: Option<AtVersion> = None;
    let mut new = Vec::with_capacity(walked.commits.len());
    for (v, marker) in walked.commits.into_iter().rev() {
        match commit_changes(t, v, spec, prev.take()).await {
            Ok((k, after)) => {
                new.push((marker, k));
                prev = Some(after);
            }
            Err(e) => {
                tracing::warn!(table = %t.table_url(), version = v, error = %e, "cannot read what a commit changed");
                walks.put(id.clone(), walk);
                return whole(true);
            }
        }
    }
    tracing::debug!(
        table = %t.table_url(),
        read = new.len(),
        known = walk.commits.len(),
        after,
        "commits MongoDB has not heard of"
    );
    walk.commits.retain(|(m, _)| *m > after);
    walk.commits.extend(new);
    (walk.after, walk.top) = (after, newest);
    let changed: Vec<LazyFrame> = walk.commits.iter().map(|(_, k)| k.clone().lazy()).collect();
    let keys = match changed.is_empty() {
        true => None,
        false => Some(concat(changed, UnionArgs::default())?.unique(None, UniqueKeepStrategy::Any).collect()?),
    };
    walks.put(id, walk);
    Ok(keys.map(Unheard::Keys))
}

/// The keys commit `v` changed, from the files it removed and added, and the table at `v`.
/// `prev` is an older version already loaded.
async fn commit_changes(
    t: &DeltaTable,
    v: u64,
    spec: &TableSpec,
    prev: Option<AtVersion>,
) -> Result<(DataFrame, AtVersion)> {
    let before = match (v, prev) {
        (0, _) => None,
        (_, Some(p)) if p.version == v - 1 => Some(p),
        (_, Some(p)) if p.version < v - 1 => Some(p.at(v - 1).await?),
        _ => Some(AtVersion::load(t, v - 1).await?),
    };
    let after = match &before {
        Some(b) => b.at(v).await?,
        None => AtVersion::load(t, v).await?,
    };
    let (out, into) = commits::touched(before.as_ref(), &after).await?;
    let schema = spec.arrow_schema();
    let keys = changed_keys(&bridge::to_frame(&out, &schema)?, &bridge::to_frame(&into, &schema)?, spec)?;
    Ok((keys, after))
}

/// The keys whose rows differ between two states of a table (or the rows a commit took out and
/// put in): added, removed, or with any value changed (`updated_at` aside: a rebuild stamps
/// every row, a rewrite may stamp rows it did not change).
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

    /// Overwrites `rel` with `state`, recording `marker` for `app`.
    async fn commit(lake: &Lake, rel: &str, state: &DataFrame, app: &str, marker: i64) {
        use crate::lake::commit_with;
        let spec = &GOLD_CUSTOMER_TOTALS;
        let t = lake.open_or_create(rel, spec).await.unwrap();
        let props = commit_with(vec![deltalake::kernel::Transaction::new(app, marker)]);
        let t = t
            .write(vec![bridge::to_batch(state, spec).unwrap()])
            .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
            .with_commit_properties(props)
            .await
            .unwrap();
        lake.keep(rel, &t);
    }

    /// The keys of a walk that could read what changed.
    fn keys(u: &Unheard) -> Vec<String> {
        match u {
            Unheard::Keys(k) => ids(k, "customer_id"),
            Unheard::Whole(_) => panic!("a walk that reaches back is not whole"),
        }
    }

    fn first(n: usize) -> Vec<(String, i64, i64)> {
        (1..=n).map(|i| (format!("c{i}"), i as i64, 1)).collect()
    }

    fn state(rows: &[(String, i64, i64)]) -> DataFrame {
        let rows: Vec<(&str, i64, i64)> = rows.iter().map(|(k, o, u)| (k.as_str(), *o, *u)).collect();
        customers(&rows, 1)
    }

    /// Customers c1..c4 committed one by one (markers 10..40), checkpointed, and the commits before
    /// the checkpoint moved to `kept` as log cleanup would remove them.
    async fn four_then_expired(lake: &Lake, root: &std::path::Path, rel: &str, app: &str, kept: &std::path::Path) {
        for i in 1..=4 {
            commit(lake, rel, &state(&first(i)), app, 10 * i as i64).await;
        }
        let t = lake.open(rel).await.unwrap().unwrap();
        deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
        let log = root.join(rel).join("_delta_log");
        for v in 0..crate::lake::version_of(&t) {
            let name = format!("{v:020}.json");
            std::fs::rename(log.join(&name), kept.join(&name)).unwrap();
        }
    }

    /// A later publish (a later catch-up chunk) reads only the commits since the last walk, and
    /// still gets every key changed past its own start; a walk the log no longer reaches is whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_walk_reads_only_the_commits_since_and_forgets_what_it_no_longer_needs() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let (rel, app, spec) = ("gold/customer_totals", "g/gold/t", &GOLD_CUSTOMER_TOTALS);
        // Version i holds customers c1..ci and marks bronze version 10 * i.
        for i in 1..=6 {
            commit(&lake, rel, &state(&first(i)), app, 10 * i as i64).await;
        }
        let walks = Walks::default();
        let t = lake.open(rel).await.unwrap().unwrap();
        let u = unheard_keys(&walks, &lake, &t, app, 20, spec).await.unwrap().unwrap();
        assert_eq!(keys(&u), ["c3", "c4", "c5", "c6"]);

        // Maintenance checkpoints and removes the commits before: a walk that read them again
        // could not, and would fall back to the whole table.
        let t = lake.open(rel).await.unwrap().unwrap();
        deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
        for v in 0..crate::lake::version_of(&t) {
            std::fs::remove_file(dir.path().join(rel).join(format!("_delta_log/{v:020}.json"))).unwrap();
        }
        commit(&lake, rel, &state(&first(7)), app, 70).await;
        let mut without_c2 = first(7);
        without_c2.remove(1);
        commit(&lake, rel, &state(&without_c2), app, 80).await;
        let t = lake.open(rel).await.unwrap().unwrap();
        let u = unheard_keys(&walks, &lake, &t, app, 40, spec).await.unwrap().unwrap();
        assert_eq!(keys(&u), ["c2", "c5", "c6", "c7"]);

        // Nothing past MongoDB's position: nothing to carry.
        assert!(unheard_keys(&walks, &lake, &t, app, 80, spec).await.unwrap().is_none());
        // An earlier start than the walks know of needs the removed commits.
        let u = unheard_keys(&walks, &lake, &t, app, 10, spec).await.unwrap().unwrap();
        assert!(u.whole().is_some());
        let all = read_whole(&t, spec).await.unwrap();
        assert_eq!(u.keys_in(&all, spec.key).unwrap().height(), 6, "every key the table holds");
    }

    /// A walk that runs off the log's end is not walked again by the next steps of a catch-up:
    /// each would read as far back as the log goes only to learn the same. The test puts the
    /// removed commits back after the first walk: a second walk would now reach them, so only the
    /// remembered answer still says whole. A start past the oldest commit the walk found reaches
    /// back again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_walk_off_the_logs_end_is_remembered_for_every_start_below_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let (rel, app, spec) = ("gold/customer_totals", "g/gold/t", &GOLD_CUSTOMER_TOTALS);
        let kept = tempfile::tempdir().unwrap();
        four_then_expired(&lake, dir.path(), rel, app, kept.path()).await;
        let log = dir.path().join(rel).join("_delta_log");
        commit(&lake, rel, &state(&first(5)), app, 50).await;
        commit(&lake, rel, &state(&first(6)), app, 60).await;
        let t = lake.open(rel).await.unwrap().unwrap();

        let walks = Walks::default();
        assert!(unheard_keys(&walks, &lake, &t, app, 10, spec).await.unwrap().unwrap().whole().is_some());
        for e in std::fs::read_dir(kept.path()).unwrap() {
            let e = e.unwrap();
            std::fs::rename(e.path(), log.join(e.file_name())).unwrap();
        }
        // The oldest commit the walk found marks 40 (the checkpoint's): every start below is whole.
        for after in [10, 20, 39] {
            let u = unheard_keys(&walks, &lake, &t, app, after, spec).await.unwrap().unwrap();
            assert!(u.whole().is_some(), "start {after}: remembered, not walked again");
        }
        let u = unheard_keys(&walks, &lake, &t, app, 40, spec).await.unwrap().unwrap();
        assert_eq!(keys(&u), ["c5", "c6"]);
        // A fresh memory walks, and finds the commits put back.
        let u = unheard_keys(&Walks::default(), &lake, &t, app, 20, spec).await.unwrap().unwrap();
        assert_eq!(keys(&u), ["c3", "c4", "c5", "c6"]);
    }

    /// Once MongoDB holds a whole publish, later starts of the topic from no earlier a position
    /// walk only the commits past the version it was read at, though the log still does not reach
    /// them: a long catch-up republishes the whole table once, not at every step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_whole_publish_is_heard_later_starts_walk_only_the_commits_since() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let (rel, app, spec) = ("gold/customer_totals", "g/gold/t", &GOLD_CUSTOMER_TOTALS);
        let kept = tempfile::tempdir().unwrap();
        four_then_expired(&lake, dir.path(), rel, app, kept.path()).await;
        commit(&lake, rel, &state(&first(5)), app, 50).await;
        let t = lake.open(rel).await.unwrap().unwrap();
        let walks = Walks::default();
        let u = unheard_keys(&walks, &lake, &t, app, 10, spec).await.unwrap().unwrap();
        let w = u.whole().expect("the log does not reach 10").clone();
        assert!(
            unheard_keys(&walks, &lake, &t, app, 20, spec).await.unwrap().unwrap().whole().is_some(),
            "not heard yet"
        );

        walks.heard(&w, crate::lake::version_of(&t) as i64);
        assert!(unheard_keys(&walks, &lake, &t, app, 20, spec).await.unwrap().is_none(), "MongoDB has it all");
        commit(&lake, rel, &state(&first(6)), app, 60).await;
        let t = lake.open(rel).await.unwrap().unwrap();
        let u = unheard_keys(&walks, &lake, &t, app, 30, spec).await.unwrap().unwrap();
        assert_eq!(keys(&u), ["c6"]);
        // A start before the heard publish's is still out of reach.
        assert!(unheard_keys(&walks, &lake, &t, app, 5, spec).await.unwrap().unwrap().whole().is_some());
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
