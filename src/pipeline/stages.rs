//! Bringing every layer of one topic up to a bronze version: dead letters, silver, the order
//! tables of gold, then (in the background, see `tail`) the aggregates and the batch log, and
//! MongoDB. Works the same for a fresh batch (its events are in memory) and for
//! catch-up after a crash (events are read back from bronze commits), so there is one code path
//! to get right. Each stage only takes the bronze versions it has not applied yet.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use tracing::{info, warn};

use super::progress::{self, InFlight, Progress};
use super::tail;
use crate::config::Settings;
use crate::decode::{Decoded, decode_topic};
use crate::error::Result;
use crate::gold::{self, GoldCommit, Touched};
use crate::lake::{Lake, bronze, dead_letter, schema, silver};
use crate::model::{Changes, RawEvent};
use crate::sink::mongo::{MongoSink, PublishStats};

pub struct Stages<'a> {
    pub settings: &'a Settings,
    pub lake: &'a Lake,
    pub mongo: Option<&'a Arc<MongoSink>>,
    pub walks: &'a Arc<gold::republish::Walks>,
}

/// Decoded events of one bronze version.
struct Unit {
    version: i64,
    events: usize,
    decoded: Decoded,
}

fn merged(units: &[Unit], after: i64) -> impl Iterator<Item = &Unit> {
    units.iter().filter(move |u| u.version > after)
}

/// The changes of the units after `after`: borrowed when one unit has them (a live batch), so the
/// silver tables and gold, which all read them at once, share one copy instead of each cloning it.
fn changes_after(units: &[Unit], after: i64) -> Cow<'_, Changes> {
    let mut pending = merged(units, after);
    match (pending.next(), pending.next()) {
        (Some(only), None) => Cow::Borrowed(&only.decoded.changes),
        _ => {
            let mut c = Changes::default();
            for u in merged(units, after) {
                c.extend(&u.decoded.changes);
            }
            Cow::Owned(c)
        }
    }
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Stages<'_> {
    /// Applies bronze of `topic` up to `upto` to every stage that lacks it. `fresh` carries the
    /// events of version `upto` when the caller just wrote them.
    pub async fn advance(
        &self,
        topic: &str,
        bronze_table: &DeltaTable,
        p: &mut Progress,
        upto: i64,
        fresh: Option<&[RawEvent]>,
    ) -> Result<()> {
        while p.lowest() < upto {
            let after = p.lowest();
            let end = (after + self.settings.catch_up_versions).min(upto);
            let log_end = if fresh.is_some() && end == upto { upto - 1 } else { end };
            let mut raw: Vec<(i64, Cow<'_, [RawEvent]>)> = Vec::new();
            if log_end > after {
                let from = (after >= 0).then_some(after as u64);
                for (v, recs) in bronze::read_commits(bronze_table, from, log_end as u64).await? {
                    raw.push((v as i64, Cow::Owned(recs)));
                }
                info!(topic, from = after + 1, to = log_end, of = upto, "catching up from bronze");
            }
            if let (Some(f), true) = (fresh, end == upto) {
                raw.push((upto, Cow::Borrowed(f)));
            }
            let now = now_us();
            let units: Vec<Unit> = raw
                .into_iter()
                .map(|(version, events)| {
                    let mut decoded = Decoded::default();
                    decode_topic(topic, &events, self.settings.cdc.as_ref(), now, &mut decoded);
                    Unit { version, events: events.len(), decoded }
                })
                .collect();
            self.apply(topic, p, &units, end).await?;
        }
        Ok(())
    }

    async fn apply(&self, topic: &str, p: &mut Progress, units: &[Unit], upto: i64) -> Result<()> {
        let s = self.settings;
        let started = Instant::now();
        let now = now_us();
        let events: usize = units.iter().map(|u| u.events).sum();
        if events == 0 {
            // Only commits without events (e.g. the table's creation): nothing to apply anywhere.
            // MongoDB may only move past them once what is in flight is confirmed.
            tail::settle(p, true).await?;
            settle(topic, p, s.max_backoff, true).await?;
            p.mark_lake_done(upto);
            p.mongo = p.mongo.map(|m| m.max(upto));
            return Ok(());
        }

        // Dead letters first: silver's marker then vouches for them too.
        let mut dl_after = p.get("dead_letters");
        if units.iter().any(|u| u.version > dl_after && !u.decoded.dead.is_empty()) {
            let t = self.lake.open_or_create(&dead_letter::table_name(&s.bronze_prefix), &schema::DEAD_LETTERS).await?;
            let app_id = progress::dead_letters_app_id(&s.group, topic);
            // Another instance may have listed some of these versions already.
            dl_after = dl_after.max(self.lake.txn_version(&t, &app_id).await?.unwrap_or(progress::NONE));
            let dead: Vec<_> = merged(units, dl_after).flat_map(|u| u.decoded.dead.iter().cloned()).collect();
            if !dead.is_empty() {
                let t = dead_letter::append(t, &dead, Transaction::new(app_id, upto), now).await?;
                self.lake.keep(&dead_letter::table_name(&s.bronze_prefix), &t);
                crate::metrics::global().dead_letters(dead.len() as u64);
                tracing::warn!(topic, count = dead.len(), first_error = %dead[0].error, "dead-lettered undecodable events");
            }
        }
        p.lake.insert("dead_letters".into(), upto.max(dl_after));

        // The silver tables are independent: their MERGEs run concurrently (each is mostly waiting
        // on storage), and each records its own marker, so a failure of one leaves the others done.
        // Deletes also write the one shared tombstone table, so batches with deletes go one table
        // at a time rather than race themselves there.
        let batch = &silver::Batch::new(self.lake, &s.silver_prefix, now);
        let silver_work = silver::TABLES.iter().map(|(name, spec)| {
            let after = p.get(&format!("silver/{name}"));
            let changes = changes_after(units, after);
            let txn = Transaction::new(silver::app_id(&s.group, topic), upto);
            async move {
                let t = silver::apply_table(batch, name, spec, &changes, after, txn).await?;
                if let Some(t) = &t {
                    self.lake.keep(&format!("{}/{name}", s.silver_prefix), t);
                }
                Ok::<_, crate::error::Error>((*name, t))
            }
        });
        let deletes =
            units.iter().any(|u| !u.decoded.changes.deletes.is_empty() || !u.decoded.changes.truncates.is_empty());
        let written = if deletes {
            let mut written = Vec::new();
            for work in silver_work {
                written.push(work.await?);
            }
            written
        } else {
            futures::future::try_join_all(silver_work).await?
        };
        for (name, _) in silver::TABLES {
            p.lake.insert(format!("silver/{name}"), upto);
        }
        let silver_done = started.elapsed();
        s.checkpoint("after-silver")?;

        // The previous batch's aggregates must be in before this batch's gold reads gold.
        let t0 = Instant::now();
        tail::settle(p, true).await?;
        tracing::debug!(waited_ms = t0.elapsed().as_millis() as u64, "previous aggregates settled");
        // Gold covers what gold or MongoDB still lacks; tables that already have `upto` skip the commit.
        let gold_after = gold::TABLES.iter().map(|(n, _)| p.get(&format!("gold/{n}"))).min().unwrap_or(progress::NONE);
        let touched_after = p.mongo_planned().map_or(gold_after, |m| m.min(gold_after));
        let is_cdc = s.cdc.as_ref().is_some_and(|c| c.table_for_topic(topic).is_some());
        let touched = Touched::from_changes(&changes_after(units, touched_after), is_cdc);
        let applied = p.gold();
        let app_id = gold::app_id(&s.group, topic);
        // Decided once: a publish that goes out must carry what `publish_after` makes the
        // aggregates collect (see `gold::republish`).
        let may_publish = self.mongo.is_some() && p.mongo.is_some() && p.mongo_due();
        let publish_after = may_publish.then_some(touched_after);
        let commit = GoldCommit { app_id: &app_id, version: upto, applied: &applied, publish_after, walks: self.walks };
        let order_gold = if touched.is_empty() {
            None
        } else {
            Some(gold::orders(self.lake, &s.silver_prefix, &s.gold_prefix, &touched, &commit, now).await?)
        };
        let gold_done = started.elapsed();
        let orders = match (self.mongo, &order_gold) {
            (Some(_), Some(g)) => Some(g.frames()?),
            _ => None,
        };
        let whole_orders = order_gold.as_ref().and_then(gold::OrderGold::whole_orders);

        // The aggregates and the batch log go on in the background (`tail`) while the next batch
        // is cut and written to bronze and silver, with silver `products` as this batch left it.
        let products_rel = format!("{}/products", s.silver_prefix);
        let products = match written.into_iter().find_map(|(n, t)| (n == "products").then_some(t).flatten()) {
            Some(t) => Some(t),
            None if order_gold.is_some() => self.lake.open(&products_rel).await?,
            None => None,
        };
        let log = (p.lake_done < upto).then(|| {
            let dead_letters = merged(units, p.lake_done).map(|u| u.decoded.dead.len()).sum::<usize>() as i64;
            let landed = merged(units, p.lake_done).map(|u| u.events).sum::<usize>() as i64;
            tail::LogRow { events: events as i64, dead_letters, decoded: (landed - dead_letters).max(0) as u64 }
        });
        let (to_mongo, aggregates_for_mongo) = tokio::sync::oneshot::channel::<Option<gold::AggregateFrames>>();
        tail::Tail {
            lake: self.lake.clone(),
            walks: Arc::clone(self.walks),
            group: s.group.clone(),
            topic: topic.to_string(),
            gold_prefix: s.gold_prefix.clone(),
            fail_at: s.fail_at.clone(),
            upto,
            now_us: now,
            order_gold,
            products,
            applied,
            publish_after,
            log,
            to_mongo,
        }
        .spawn(p);

        // MongoDB: the previous batch's publish must be confirmed first (publishes stay in order).
        // This batch's order documents then go out at once, and its aggregate documents as soon
        // as the tail hands them over.
        let mut published = None;
        if let (Some(m), Some(_)) = (self.mongo, p.mongo) {
            let t0 = Instant::now();
            published = settle(topic, p, s.max_backoff, true).await?;
            tracing::debug!(waited_ms = t0.elapsed().as_millis() as u64, "previous MongoDB publish settled");
            let mv = p.mongo.unwrap_or(progress::NONE);
            // The frames cover (touched_after, upto]: publish them only if MongoDB stands there
            // (after a failed publish, a later catch-up from bronze covers the gap instead).
            if may_publish && mv < upto && mv >= touched_after && p.mongo_due() {
                let (m, topic, fail_at, walks) =
                    (Arc::clone(m), topic.to_string(), s.fail_at.clone(), Arc::clone(self.walks));
                let mut turn = m.queue();
                let task = tokio::spawn(async move {
                    // After every publish queued before it, of any topic (see `Turn`).
                    turn.wait().await;
                    let (mut stats, t0) = (None, Instant::now());
                    if let Some(o) = &orders {
                        stats = Some(m.publish_orders(o, fail_at.as_deref()).await?);
                    }
                    if let Some(w) = &whole_orders {
                        *stats.get_or_insert_default() +=
                            publish_whole_orders(&m, w, &topic, fail_at.as_deref()).await?;
                        walks.heard(&w.at, w.version());
                    }
                    let orders_ms = t0.elapsed().as_millis() as u64;
                    // A tail that fails before handing its aggregates over drops this publish;
                    // MongoDB stays behind and a later catch-up republishes from bronze.
                    let aggregates = aggregates_for_mongo.await.map_err(|_| crate::error::Error::Abandoned)?;
                    let waited_ms = t0.elapsed().as_millis() as u64 - orders_ms;
                    if let Some(a) = &aggregates {
                        *stats.get_or_insert_default() += m.publish_aggregates(a).await?;
                        heard_whole(&walks, &topic, a);
                    }
                    crate::config::fault_point(fail_at.as_deref(), "before-mongo-progress")?;
                    m.set_progress(&topic, upto).await?;
                    tracing::debug!(
                        bronze_version = upto,
                        orders_ms,
                        waited_ms,
                        total_ms = t0.elapsed().as_millis() as u64,
                        "MongoDB publish (ms)"
                    );
                    Ok(stats)
                });
                p.publishing = Some(InFlight { upto, task });
            } else {
                tracing::debug!(topic, mongo = mv, touched_after, upto, "MongoDB publish of this batch skipped");
            }
        }

        if let Some(m) = p.mongo {
            crate::metrics::global().mongo_behind(topic, p.lake_done - m);
        }
        info!(
            topic,
            bronze_version = upto,
            events,
            dead_letters = merged(units, progress::NONE).map(|u| u.decoded.dead.len()).sum::<usize>(),
            orders = touched.orders.len(),
            silver_ms = silver_done.as_millis() as u64,
            gold_ms = (gold_done - silver_done).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            cpu_ms = crate::metrics::cpu_ms_since_last(),
            rss_mib = crate::metrics::resident_bytes().map_or(0, |b| b >> 20),
            mongo_published = ?published.map(|p| (p.upserted, p.deleted, p.stale)),
            "batch committed"
        );
        Ok(())
    }
}

/// Sends every order ([`gold::whole_orders`]) a slice at a time, then deletes the documents of
/// orders it did not send. Killed halfway, MongoDB's position has not moved: the rerun's catch-up
/// finds the log as short as before and starts again.
async fn publish_whole_orders(
    m: &MongoSink,
    w: &gold::whole_orders::WholeOrders,
    topic: &str,
    fail_at: Option<&str>,
) -> Result<PublishStats> {
    let (slices, version) = (w.slices(gold::whole_orders::SLICE).await?, w.version());
    let orders: usize = slices.iter().map(Vec::len).sum();
    let mut st = PublishStats::default();
    let mut sent = 0;
    for ids in &slices {
        st += m.publish_orders(&w.frames(ids).await?, None).await?;
        sent += ids.len();
        info!(topic, sent, orders, order_totals_version = version, "MongoDB: order documents republished");
        crate::config::fault_point(fail_at, "mid-whole-orders")?;
    }
    let swept = m.sweep_orders(version).await?;
    st += swept;
    for coll in ["order_totals", "orders"] {
        crate::metrics::global().whole_publish(topic, coll);
    }
    info!(topic, orders, deleted = swept.deleted, "MongoDB: every order document republished");
    Ok(st)
}

/// Tells the walks of the whole tables MongoDB now holds, so the next publishes of the topic need
/// not send them whole again.
fn heard_whole(walks: &gold::republish::Walks, topic: &str, a: &gold::AggregateFrames) {
    for (coll, whole, version) in
        [("customer_totals", &a.customers_whole, a.customers_version), ("daily_sales", &a.days_whole, a.days_version)]
    {
        if let Some(w) = whole {
            walks.heard(w, version);
            crate::metrics::global().whole_publish(topic, coll);
        }
    }
}

/// Waits for (or, without `wait`, only collects a finished) MongoDB publish in flight and records
/// its outcome: MongoDB's position moves on success; a transient failure puts publishing into
/// backoff while the lake goes on (a later catch-up republishes from bronze); anything else fails
/// the batch. Returns the publish's figures when one was settled.
pub async fn settle(topic: &str, p: &mut Progress, max_backoff: Duration, wait: bool) -> Result<Option<PublishStats>> {
    let Some(f) = p.publishing.take_if(|f| wait || f.task.is_finished()) else { return Ok(None) };
    let outcome = f.task.await.map_err(|e| crate::error::Error::Other(format!("MongoDB publish task: {e}")))?;
    match outcome {
        Ok(stats) => {
            if p.mongo_retry.take().is_some() {
                info!(topic, bronze_version = f.upto, "MongoDB reachable again: publishing caught up");
            }
            p.mongo = Some(p.mongo.map_or(f.upto, |m| m.max(f.upto)));
            Ok(stats)
        }
        // Its batch failed before the aggregates were in: MongoDB simply stays where it is.
        Err(crate::error::Error::Abandoned) => Ok(None),
        Err(e) if !e.is_transient() => Err(e),
        Err(e) => {
            let wait = p.mongo_retry.map_or(Duration::from_secs(1), |(_, w)| (w * 2).min(max_backoff));
            p.mongo_retry = Some((Instant::now() + wait, wait));
            warn!(topic, error = %crate::redact::redact(&e.to_string()), retry_in_ms = wait.as_millis() as u64,
                published_up_to = ?p.mongo, "MongoDB unavailable: the lake goes on, publishing will catch up (degraded)");
            Ok(None)
        }
    }
}
