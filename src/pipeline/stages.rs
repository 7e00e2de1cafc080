//! Bringing every layer of one topic up to a bronze version: dead letters, silver, the order
//! tables of gold, then (in the background, see `tail`) the aggregates and the batch log, and
//! MongoDB. Works the same for a fresh batch (its events are in memory) and for
//! catch-up after a crash (events are read back from bronze commits), so there is one code path
//! to get right. Each stage only takes the bronze versions it has not applied yet.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use tracing::info;

use super::progress::{self, Progress};
use super::publish;
use super::tail;
use crate::config::Settings;
use crate::decode::{Decoded, decode_topic};
use crate::error::Result;
use crate::gold::{self, GoldCommit, Touched};
use crate::lake::{Lake, bronze, dead_letter, schema, silver};
use crate::model::{Changes, RawEvent};
use crate::sink::mongo::MongoSink;

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
                // Bronze's compactions between two batches hold no events: nothing to report.
                if raw.iter().any(|(_, r)| !r.is_empty()) {
                    info!(topic, from = after + 1, to = log_end, of = upto, "catching up from bronze");
                }
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
            publish::settle(topic, p, s.max_backoff, true).await?;
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
        // Test-only: one topic of a multi-topic batch fails, after the topics before it are done.
        s.checkpoint(&format!("after-silver:{topic}"))?;

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
            if let Some(cut) = p.cut_at.take() {
                p.pace.lake_took(cut.elapsed());
            }
            let t0 = Instant::now();
            if let Some(f) = p.publishing.as_ref().filter(|_| may_publish) {
                f.next_waiting.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            published = publish::settle(topic, p, s.max_backoff, true).await?;
            tracing::debug!(waited_ms = t0.elapsed().as_millis() as u64, "previous MongoDB publish settled");
            let mv = p.mongo.unwrap_or(progress::NONE);
            let carried = p.carried.take();
            // The frames cover (touched_after, upto]: publish them only if MongoDB stands there
            // (after a failed publish, a later catch-up from bronze covers the gap instead).
            if may_publish && mv < upto && mv >= touched_after && p.mongo_due() {
                let back_to = carried.as_ref().map_or(mv, |(_, b)| *b);
                let publish = publish::Publish {
                    mongo: Arc::clone(m),
                    walks: Arc::clone(self.walks),
                    topic: topic.to_string(),
                    fail_at: s.fail_at.clone(),
                    upto,
                    orders,
                    whole_orders,
                    aggregates: aggregates_for_mongo,
                    carried: carried.map(|(c, _)| c),
                    lag: s.aggregates_lag,
                };
                p.publishing = Some(publish.spawn(back_to));
            } else {
                if let Some((_, back_to)) = carried {
                    p.publish_lost(back_to);
                }
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
