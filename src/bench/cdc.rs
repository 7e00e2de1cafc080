//! The CDC phases of `orderlake bench`: a Debezium history of the shop database (creates, updates,
//! deletes with tombstones, a column added half-way, Connect-schema envelopes as the JsonConverter
//! writes them by default) over the four table topics, read by the bare consumer, by orderlake
//! bronze only and by the full pipeline. Sales events are the yardstick; these figures make
//! the other half of what orderlake consumes reproducible too.

use tracing::info;

use super::ceiling::{self, Ceiling};
use super::{Ctx, Phase, verify};
use crate::cdc_gen;
use crate::config::Settings;
use crate::error::Result;
use crate::model::Entity;
use crate::produce;

/// What the CDC phases measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Changes generated (tombstones included): the ceiling's `events` is what the topics hold.
    pub changes: u64,
    pub ceiling: Ceiling,
    pub bronze: Phase,
    pub full: Phase,
}

/// Publishes `changes` changes under a prefix of their own and times the three readers on them.
pub(super) async fn run(ctx: &Ctx<'_>, s: &Settings, changes: usize) -> Result<Figures> {
    let prefix = format!("{}-cdc.public", ctx.id);
    let history = cdc_gen::synthetic(changes, 2029, true);
    info!(changes = history.records.len(), prefix, "bench: publishing the CDC topics");
    produce::publish_cdc(s, &prefix, &history.records).await?;
    let orders = history.db.orders.len() as u64;
    let changes = history.records.len() as u64;
    drop(history);

    let topics: Vec<String> = Entity::ALL.iter().map(|e| format!("{prefix}.{}", e.table())).collect();
    info!("bench: CDC ceiling (bare consumer over the four table topics)");
    let ceiling = ceiling::measure(s, &topics).await?;
    let n = ceiling.events;
    // No sales topic: these runs read the CDC topics only.
    let cdc = |phase: &str, mongo: bool| {
        ctx.orderlake(phase, "", mongo).map(|mut c| {
            c.env("ORDERLAKE_CDC_PREFIX", &prefix);
            c
        })
    };
    let mut bronze_only = cdc("cdc-bronze", false)?;
    bronze_only.arg("--bronze-only");
    let mut bronze = ctx.once("cdc-bronze", bronze_only, n).await?;
    ctx.clean("cdc-bronze").await;
    let mut full = ctx.once("cdc-full", cdc("cdc-full", true)?, n).await?;
    verify(ctx, "cdc-full", orders).await?;
    ctx.clean("cdc-full").await;
    // Not a figure of table growth here: the four topics' batches differ up to tenfold in cost per
    // event, and a batch's CPU counts the background work of the one before, so which batches fall
    // into the first and last thirds decides it (the same binary gave 1.25 and 2.6; per topic, the
    // order items grew 1.0–1.4 over the run). The sales phase measures it.
    (bronze.batches, full.batches) = (None, None);
    Ok(Figures { changes, ceiling, bronze, full })
}
