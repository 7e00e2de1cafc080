//! `orderlake bench`: one reproducible run that measures orderlake against the consume ceiling
//! and a Python peer on the same broker, lake and MongoDB, and prints figures with their ratios.
//! Every orderlake phase runs as its own `orderlake run` process (as a user runs it), on its own
//! group, lake directory and database, so phases never share state and peak RSS is per phase.

pub mod batches;
pub mod cdc;
pub mod ceiling;
pub mod child;
mod cleanup;
pub mod freshness;
mod report;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tracing::info;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::produce;
use batches::BatchCost;
use child::{Measured, Running};
pub use report::Report;

#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub events: usize,
    pub partitions: i32,
    pub rate: u32,
    pub freshness_secs: u64,
    pub max_latency_ms: u64,
    /// `mongodb.hold_batches_ms` of the benchmarked runs (`None`: orderlake's default).
    pub hold_batches_ms: Option<u64>,
    /// `batch.align_topics_ms` of the benchmarked runs (`None`: orderlake's default).
    pub align_topics_ms: Option<u64>,
    pub max_records: usize,
    pub peer: bool,
    pub peer_events: Option<usize>,
    pub scaling: bool,
    /// Debezium changes for the CDC phases (0: none).
    pub cdc: usize,
    pub out: PathBuf,
    pub python: Option<PathBuf>,
    /// Keep each phase's lake and database (removed once measured otherwise).
    pub keep: bool,
}

/// One throughput phase: an `orderlake run --once` over a whole topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    pub events: u64,
    pub m: Measured,
    /// orderlake's lake work per event early and late in the run (`None` for the peer and for
    /// bronze only, which refine nothing).
    pub batches: Option<BatchCost>,
}

impl Phase {
    pub fn per_s(&self) -> f64 {
        self.events as f64 / self.m.seconds
    }
}

struct Ctx<'a> {
    settings: &'a Settings,
    args: &'a BenchArgs,
    id: String,
    dir: PathBuf,
    config: PathBuf,
}

impl Ctx<'_> {
    fn lake(&self, phase: &str) -> String {
        format!("{}{}/{phase}", self.settings.lake, self.id)
    }

    fn database(&self, phase: &str) -> String {
        format!("{}_{}_{phase}", self.settings.mongodb_database, self.id.replace('-', "_"))
    }

    /// `orderlake run` for one phase, configured by environment like any deployment.
    fn orderlake(&self, phase: &str, topic: &str, mongo: bool) -> Result<Command> {
        let exe = std::env::current_exe().map_err(|e| Error::Other(format!("own executable: {e}")))?;
        let mut c = Command::new(exe);
        c.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("ORDERLAKE_BROKERS", &self.settings.brokers)
            .env("ORDERLAKE_LAKE", self.lake(phase))
            .env("ORDERLAKE_GROUP", format!("{}-{phase}", self.id))
            .env("ORDERLAKE_SALES_TOPIC", topic)
            .env("ORDERLAKE_MONGODB_DATABASE", self.database(phase))
            .env("ORDERLAKE_MONGODB_URI", if mongo { self.settings.mongodb_uri.as_deref().unwrap_or("") } else { "" })
            .env_remove("ORDERLAKE_CDC_PREFIX")
            .env_remove("ORDERLAKE_TEST_FAIL_AT")
            // The figures are read back from the children's text log lines.
            .env("ORDERLAKE_LOG_FORMAT", "text");
        for (k, v) in &self.settings.storage_options {
            c.arg("--storage-option").arg(format!("{k}={v}"));
        }
        Ok(c)
    }

    /// Times `cmd` (an [`Ctx::orderlake`]) reading its topics once to their end.
    async fn once(&self, phase: &str, mut cmd: Command, events: u64) -> Result<Phase> {
        cmd.arg("--once");
        info!(phase, events, "bench: running");
        let log = self.dir.join(format!("{phase}.log"));
        let m = Running::spawn(cmd, log.clone())?.wait(Duration::from_secs(4 * 3600)).await?;
        info!(phase, seconds = format!("{:.1}", m.seconds), per_s = (events as f64 / m.seconds) as u64, "bench: done");
        let batches = BatchCost::from_log(&std::fs::read_to_string(&log).unwrap_or_default());
        Ok(Phase { events, m, batches })
    }
}

/// Runs every phase and returns the report (also written as JSON under `args.out`).
pub async fn run(settings: &Settings, args: &BenchArgs) -> Result<Report> {
    if settings.mongodb_uri.is_none() {
        return Err(Error::Config(
            "bench: --mongodb-uri / ORDERLAKE_MONGODB_URI is needed (the full pipeline publishes to MongoDB)".into(),
        ));
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let id = format!("bench-{stamp}");
    let dir = args.out.join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Config(format!("--out {}: {e}", args.out.display())))?;
    let config = dir.join("orderlake.toml");
    let mut toml = format!("[batch]\nmax_latency_ms = {}\nmax_records = {}\n", args.max_latency_ms, args.max_records);
    if let Some(ms) = args.align_topics_ms {
        toml.push_str(&format!("align_topics_ms = {ms}\n"));
    }
    if let Some(ms) = args.hold_batches_ms {
        toml.push_str(&format!("[mongodb]\nhold_batches_ms = {ms}\n"));
    }
    std::fs::write(&config, toml).map_err(|e| Error::Other(e.to_string()))?;
    let ctx = Ctx { settings, args, id: id.clone(), dir: dir.clone(), config };
    let mut s = settings.clone();
    s.partitions = args.partitions;

    let topic = id.clone();
    let records = produce::synthetic(args.events, 2026);
    let orders = distinct_orders(&records);
    info!(events = records.len(), topic, partitions = args.partitions, "bench: publishing the test topic");
    let t = std::time::Instant::now();
    produce::publish(&s, &topic, &records, None).await?;
    let produce_per_s = records.len() as f64 / t.elapsed().as_secs_f64();
    drop(records);

    info!("bench: ceiling (bare consumer)");
    let ceiling = ceiling::measure(&s, std::slice::from_ref(&topic)).await?;
    let n = ceiling.events;
    let mut bronze_only = ctx.orderlake("bronze", &topic, false)?;
    bronze_only.arg("--bronze-only");
    let bronze = ctx.once("bronze", bronze_only, n).await?;
    ctx.clean("bronze").await;
    let full = ctx.once("full", ctx.orderlake("full", &topic, true)?, n).await?;
    verify(&ctx, "full", orders).await?;
    ctx.clean("full").await;

    let scaling = if args.scaling {
        let small_topic = format!("{id}-small");
        let small = produce::synthetic(args.events / 10, 2027);
        produce::publish(&s, &small_topic, &small, None).await?;
        // The broker's own time at N/10: scaling is only orderlake's to answer for where it
        // grows faster than the bare consumer's (tansu's fetch slows with the partition's size).
        let small_ceiling = ceiling::measure(&s, std::slice::from_ref(&small_topic)).await?;
        let phase =
            ctx.once("full-small", ctx.orderlake("full-small", &small_topic, true)?, small.len() as u64).await?;
        verify(&ctx, "full-small", distinct_orders(&small)).await?;
        ctx.clean("full-small").await;
        Some((phase, small_ceiling))
    } else {
        None
    };

    let cdc = if args.cdc > 0 { Some(cdc::run(&ctx, &s, args.cdc).await?) } else { None };
    let fresh = freshness(&ctx, &s).await?;
    let peer = if args.peer {
        let p = peer(&ctx, &topic, n).await?;
        ctx.clean("peer").await;
        Some(p)
    } else {
        None
    };

    let report = Report::new(&ctx, produce_per_s, ceiling, bronze, full, scaling, fresh, peer, cdc);
    report.write(&args.out, &id)?;
    Ok(report)
}

fn distinct_orders(records: &[produce::SaleRecord]) -> u64 {
    records.iter().map(|r| r.transaction_no.as_str()).collect::<std::collections::HashSet<_>>().len() as u64
}

/// A benchmark must not time a pipeline that skipped work (or left deleted orders behind): the
/// phase's MongoDB holds one order total and one order document per order of the source.
async fn verify(ctx: &Ctx<'_>, phase: &str, orders: u64) -> Result<()> {
    let uri = ctx.settings.mongodb_uri.as_deref().unwrap_or_default();
    let db = mongodb::Client::with_uri_str(uri).await?.database(&ctx.database(phase));
    for coll in ["order_totals", "orders"] {
        let found = db.collection::<mongodb::bson::Document>(coll).count_documents(mongodb::bson::doc! {}).await?;
        if found != orders {
            return Err(Error::Other(format!(
                "bench {phase}: MongoDB {coll} holds {found} documents, expected {orders}"
            )));
        }
    }
    Ok(())
}

/// Freshness phase: a continuous `orderlake run` on its own paced topic.
async fn freshness(ctx: &Ctx<'_>, s: &Settings) -> Result<(freshness::Latencies, Measured)> {
    let topic = format!("{}-fresh", ctx.id);
    crate::source::kafka::ensure_topics(s, std::slice::from_ref(&topic)).await?;
    let mut run = Running::spawn(ctx.orderlake("fresh", &topic, true)?, ctx.dir.join("fresh.log"))?;
    // Measure from the moment the consumer owns its partitions, not its start-up.
    let ready = std::time::Instant::now();
    while !std::fs::read_to_string(&run.log).unwrap_or_default().contains("partitions assigned") {
        run.sample();
        if ready.elapsed() > Duration::from_secs(60) {
            return Err(Error::Other(format!(
                "freshness: orderlake did not join the group; see {}",
                run.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = ctx.args.rate as usize * ctx.args.freshness_secs as usize;
    info!(rate = ctx.args.rate, seconds = ctx.args.freshness_secs, "bench: freshness");
    let records = produce::synthetic(events, 2028);
    let mut fresh_settings = s.clone();
    fresh_settings.mongodb_database = ctx.database("fresh");
    let measuring = freshness::measure(&fresh_settings, &topic, &records, ctx.args.rate, Duration::from_secs(30));
    tokio::pin!(measuring);
    let lat = loop {
        tokio::select! {
            r = &mut measuring => break r?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => run.sample(),
        }
    };
    let m = run.stop(Duration::from_secs(120)).await?;
    ctx.clean("fresh").await;
    Ok((lat, m))
}

/// The Python peer on the same topic: what a user would write without orderlake.
async fn peer(ctx: &Ctx<'_>, topic: &str, available: u64) -> Result<Phase> {
    let events = ctx.args.peer_events.map_or(available, |p| (p as u64).min(available));
    let python = ctx.args.python.clone().unwrap_or_else(|| PathBuf::from("python3"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/python_peer.py");
    let script = if script.exists() { script } else { PathBuf::from("bench/python_peer.py") };
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--brokers", &ctx.settings.brokers, "--topic", topic, "--group", &format!("{}-peer", ctx.id)])
        .args(["--lake", &ctx.lake("peer"), "--events", &events.to_string()])
        .args(["--mongodb-uri", ctx.settings.mongodb_uri.as_deref().unwrap_or_default()])
        .args(["--database", &ctx.database("peer")])
        .args(["--batch", &ctx.args.max_records.to_string()]);
    for (k, v) in &ctx.settings.storage_options {
        cmd.arg("--storage-option").arg(format!("{k}={v}"));
    }
    info!(events, python = %python.display(), "bench: python peer");
    let m = Running::spawn(cmd, ctx.dir.join("peer.log"))?.wait(Duration::from_secs(4 * 3600)).await?;
    Ok(Phase { events, m, batches: None })
}
