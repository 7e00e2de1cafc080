//! Command-line interface: clap definitions and dispatch to the library. Flags override the
//! config file; each common flag also reads an `ORDERLAKE_*` environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, Settings};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::{produce, status};

#[derive(Debug, Parser)]
#[command(
    name = "orderlake",
    version,
    about = "Exactly-once Kafka → Delta Lake (bronze/silver/gold) → MongoDB ingestion for order events",
    long_about = "orderlake consumes sales events and CDC changes from Kafka in micro-batches, lands them exactly \
once in Delta Lake tables (bronze: raw; silver: current state by key; gold: totals recomputed with Polars) \
and publishes gold to MongoDB.\n\nQuick start against the local stack:\n  make demo\n\nTypical use:\n  \
orderlake produce --synthetic 10000\n  orderlake run --once --lake az://lake/orders --mongodb-uri mongodb://127.0.0.1:27017\n  \
orderlake status"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Common {
    /// TOML config file for batch triggers, table names, log level (see orderlake.example.toml)
    #[arg(long, global = true, env = "ORDERLAKE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port] [default: 127.0.0.1:9092]
    #[arg(long, global = true, env = "ORDERLAKE_BROKERS")]
    pub brokers: Option<String>,
    /// Lake root: file:///abs/path, a local path, az://container/path or abfss://container@account.dfs.core.windows.net/path [default: ./lake]
    #[arg(long, global = true, env = "ORDERLAKE_LAKE")]
    pub lake: Option<String>,
    /// MongoDB connection string; when unset, publishing to MongoDB is off
    #[arg(long, global = true, env = "ORDERLAKE_MONGODB_URI")]
    pub mongodb_uri: Option<String>,
    /// MongoDB database [default: orderlake]
    #[arg(long, global = true, env = "ORDERLAKE_MONGODB_DATABASE")]
    pub mongodb_database: Option<String>,
    /// Consumer group id, also the pipeline id in the lake's progress markers [default: orderlake]
    #[arg(long, global = true, env = "ORDERLAKE_GROUP")]
    pub group: Option<String>,
    /// Topic of flat sales events [default: shop.sales]
    #[arg(long, global = true, env = "ORDERLAKE_SALES_TOPIC")]
    pub sales_topic: Option<String>,
    /// Debezium topic prefix <server>.<schema>: consume <prefix>.orders, .order_items, .products, .customers
    #[arg(long, global = true, env = "ORDERLAKE_CDC_PREFIX")]
    pub cdc_prefix: Option<String>,
    /// Object-store option KEY=VALUE, repeatable (e.g. azure_storage_use_emulator=true); AZURE_STORAGE_* variables are read too
    #[arg(long = "storage-option", global = true, value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
    /// Log lines on stderr as text, or as one JSON object per line for a log collector [default: text, or log.format]
    #[arg(long, global = true, env = "ORDERLAKE_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume continuously (ctrl-c stops after committing the batch in hand), or with --once up to
    /// the end offsets seen at start, then exit 0 (the scheduled-job mode)
    Run {
        #[arg(long)]
        once: bool,
        /// Land events in bronze only (raw, exactly once) and skip silver, gold and MongoDB; a later
        /// run without this flag brings them up to date from bronze, without re-reading Kafka
        #[arg(long)]
        bronze_only: bool,
        /// Serve Prometheus /metrics and the /healthz, /readyz probes on this address (e.g.
        /// 0.0.0.0:9464 in a container); off when unset
        #[arg(long, env = "ORDERLAKE_METRICS_ADDR", value_name = "HOST:PORT")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Publish sales events (Online Shop CSV format, keyed by TransactionNo) to a topic
    Produce {
        /// Topic to publish to [default: the sales topic]
        #[arg(long)]
        topic: Option<String>,
        /// CSV file with the columns TransactionNo,Date,ProductNo,ProductName,Price,Quantity,CustomerNo,Country
        #[arg(long, conflicts_with_all = ["synthetic", "cdc"], required_unless_present_any = ["synthetic", "cdc"])]
        csv: Option<PathBuf>,
        /// Emit Debezium (Postgres connector) change events for orders, order_items, products and
        /// customers to <cdc-prefix>.<table> instead of sales events: snapshot first, then
        /// creates, updates and deletes with tombstones
        #[arg(long)]
        cdc: bool,
        /// With --cdc: a JSON-lines file of {"table": T, "key": {...}, "value": {...} | null} to publish
        #[arg(long, requires = "cdc", conflicts_with = "synthetic")]
        file: Option<PathBuf>,
        /// With --cdc: send keys and values with their Connect schema (JSON converter schemas.enable=true)
        #[arg(long, requires = "cdc")]
        schema_envelope: bool,
        /// Generate N realistic events instead (days, countries, cancellations, missing customers, price changes)
        #[arg(long, value_name = "N")]
        synthetic: Option<usize>,
        /// Seed of the generator (same seed, same events)
        #[arg(long, default_value_t = 42, requires = "synthetic")]
        seed: u64,
        /// Limit the publishing rate
        #[arg(long, value_name = "EVENTS_PER_S")]
        rate: Option<u32>,
        /// Publish only if the topic holds no message yet (makes a demo safe to re-run)
        #[arg(long)]
        skip_if_not_empty: bool,
        /// Write the events to this CSV file instead of publishing them
        #[arg(long, value_name = "FILE")]
        to_csv: Option<PathBuf>,
    },
    /// Show offsets and lag per partition, table versions and row counts, MongoDB progress
    Status {
        /// One JSON document instead of text (partitions, tables, mongodb), for scripts and monitors
        #[arg(long)]
        json: bool,
    },
    /// Rebuild silver and/or gold from bronze alone (no Kafka, MongoDB untouched), through the same
    /// path a restarted run takes. Gold keeps serving its rows while it is recomputed; silver is
    /// emptied and refilled. Interrupted? `--resume` (or any `run`, except while bronze is being
    /// re-based) continues where it stopped
    Rebuild {
        /// silver: silver from the first bronze version, then gold; gold: gold only
        #[arg(long, value_enum, default_value_t = crate::rebuild::Layer::Gold)]
        layer: crate::rebuild::Layer,
        /// With --layer gold: recompute what bronze versions from this one touched
        #[arg(long, default_value_t = 0, value_name = "V")]
        from_version: i64,
        /// Continue an interrupted rebuild without resetting again
        #[arg(long)]
        resume: bool,
    },
    /// Apply the current PII rules (cdc.tables.<table>.pii) to what was ingested before they were
    /// turned on: bronze's values of those topics are rewritten (a re-base, as a rebuild of old
    /// bronze does), then silver and gold are rebuilt and the dead letters listed afresh. Give the
    /// time the rules started: masking and dropping twice change nothing, but hashing twice does.
    /// Older table versions keep the values until VACUUM removes their files. Interrupted?
    /// `orderlake rebuild --resume` finishes it
    Scrub {
        /// Rewrite the values ingested before this time: 2026-11-20T09:30:00Z, or a day (midnight UTC)
        #[arg(long, value_name = "TIME")]
        ingested_before: String,
    },
    /// Run SQL over the lake's tables (DataFusion) and print the result as a table. Tables are named
    /// by layer: gold.order_totals, gold.order_lines, gold.customer_totals, gold.daily_sales,
    /// gold.product_sales, silver.orders, silver.order_items, silver.products, silver.customers,
    /// bronze."<topic>", bronze._dead_letters, orderlake.batches. Example:
    /// orderlake query "SELECT country, sum(revenue) AS revenue FROM gold.daily_sales GROUP BY country ORDER BY revenue DESC"
    Query {
        /// The SQL statement
        sql: String,
        /// Print at most this many rows
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Compact small files (silver and gold by key range; bronze's finished days into files of
    /// maintenance.target_file_mb, and today's, past maintenance.today_small_files, eight files of
    /// one size at a time; the other tables by OPTIMIZE), checkpoint, clean up expired
    /// log entries and VACUUM unreferenced files (also orphans of writers that died mid-write)
    /// older than maintenance.vacuum_retention_hours, in every table; prints files and MiB before
    /// and after. Safe while `run` is going: a compaction that loses a commit race is skipped.
    /// `run` also does this (without the orphan scan): a round every maintenance.every_batches
    /// batches, a step per batch boundary (a table, or a group of a big table's or a day's files)
    Maintain {
        /// Only compact, checkpoint and clean up the log; delete no files
        #[arg(long)]
        no_vacuum: bool,
    },
    /// Measure throughput, freshness and memory against the consume ceiling and a Python peer, on
    /// fresh topics of the configured broker, lake and MongoDB. Prints one table of figures and
    /// ratios and writes them as JSON to --out (see docs/performance.md). Run it from a release
    /// build: `make bench`
    Bench {
        /// Synthetic sales events in the throughput topic
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Partitions of the benchmark topics
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Producer pace of the freshness phase
        #[arg(long, value_name = "EVENTS_PER_S", default_value_t = 5_000)]
        rate: u32,
        /// Length of the freshness phase
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        freshness_secs: u64,
        /// batch.max_latency_ms of the benchmarked runs
        #[arg(long, default_value_t = 500)]
        max_latency_ms: u64,
        /// mongodb.hold_batches_ms of the benchmarked runs (0: cut every batch at its deadline)
        /// [default: orderlake's]
        #[arg(long)]
        hold_batches_ms: Option<u64>,
        /// batch.align_topics_ms of the benchmarked runs (0: read the CDC topics unaligned)
        /// [default: orderlake's]
        #[arg(long)]
        align_topics_ms: Option<u64>,
        /// batch.max_records of the benchmarked runs, and the Python peer's batch size
        #[arg(long, default_value_t = 50_000)]
        max_records: usize,
        /// Skip the Python peer
        #[arg(long)]
        no_peer: bool,
        /// Events the Python peer processes (it reads the same topic) [default: all]
        #[arg(long)]
        peer_events: Option<usize>,
        /// Skip the N/10 runs (bare consumer and full pipeline) that check linear scaling
        #[arg(long)]
        no_scaling: bool,
        /// Debezium changes (Connect-schema envelopes over orders, order_items, products and
        /// customers) for the CDC phases: bare consumer, bronze only, full pipeline; 0 skips them
        #[arg(long, value_name = "CHANGES", default_value_t = 200_000)]
        cdc: usize,
        /// Python with confluent-kafka, polars, deltalake, pymongo for the peer
        #[arg(long, env = "ORDERLAKE_BENCH_PYTHON")]
        python: Option<PathBuf>,
        /// Where the JSON results and the per-phase logs go
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Keep each phase's lake directory and MongoDB database; by default each is removed
        /// once its phase is measured (a failed phase keeps its own), so runs do not fill the storage
        #[arg(long)]
        keep: bool,
    },
}

impl Common {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            brokers: self.brokers.clone(),
            lake: self.lake.clone(),
            mongodb_uri: self.mongodb_uri.clone(),
            mongodb_database: self.mongodb_database.clone(),
            group: self.group.clone(),
            sales_topic: self.sales_topic.clone(),
            storage_options: self.storage_options.clone(),
            cdc_prefix: self.cdc_prefix.clone(),
            log_format: self.log_format,
        }
    }
}

/// Loads the settings, so `main` can set up logging from them before running.
pub fn settings(cli: &Cli) -> Result<Settings> {
    Settings::load(cli.common.config.as_deref(), cli.common.overrides())
}

pub async fn execute(cli: Cli, settings: Settings) -> Result<()> {
    match cli.command {
        Command::Run { once, bronze_only, metrics_addr } => {
            let mut settings = settings;
            settings.bronze_only = bronze_only;
            if let Some(addr) = metrics_addr {
                // Stuck: no turn of the consume loop for longer than a slow batch and its retries.
                let stuck_after = (4 * settings.max_backoff).max(std::time::Duration::from_secs(120));
                crate::metrics::serve(addr, stuck_after.as_millis() as i64).await?;
            }
            let mut p = Pipeline::start(settings).await?;
            let s = p.run(once).await;
            p.close().await;
            let s = s?;
            let (reads, from_memory) = crate::lake::store::stats().reads();
            tracing::info!(
                events = s.events,
                batches = s.batches,
                storage_reads = reads,
                storage_reads_from_memory = from_memory,
                "run finished"
            );
            Ok(())
        }
        Command::Produce {
            topic,
            csv,
            cdc,
            file,
            schema_envelope,
            synthetic,
            seed,
            rate,
            skip_if_not_empty,
            to_csv,
        } => {
            if cdc {
                let prefix = settings
                    .cdc
                    .as_ref()
                    .and_then(|c| c.tables.first())
                    .and_then(|t| t.topic.rsplit_once('.').map(|(p, _)| p.to_string()))
                    .unwrap_or_else(|| "shop.public".to_string());
                if skip_if_not_empty && produce::topic_has_messages(&settings, &format!("{prefix}.orders")).await? {
                    eprintln!("topic {prefix}.orders already holds messages: nothing published (--skip-if-not-empty)");
                    return Ok(());
                }
                let records = match (file, synthetic) {
                    (Some(f), _) => produce::read_cdc_jsonl(&f)?,
                    (None, Some(n)) => crate::cdc_gen::synthetic(n, seed, schema_envelope).records,
                    (None, None) => {
                        return Err(Error::Config("produce --cdc: give --synthetic N or --file FILE.jsonl".into()));
                    }
                };
                produce::publish_cdc(&settings, &prefix, &records).await?;
                return Ok(());
            }
            let records = match (csv, synthetic) {
                (Some(p), _) => produce::read_csv(&p)?,
                (None, Some(n)) => produce::synthetic(n, seed),
                (None, None) => {
                    return Err(Error::Config("produce: give --csv FILE or --synthetic N".into()));
                }
            };
            if let Some(path) = to_csv {
                produce::write_csv(&path, &records)?;
                eprintln!("wrote {} events to {}", records.len(), path.display());
                return Ok(());
            }
            let topic = topic.unwrap_or_else(|| settings.sales_topic.clone());
            if skip_if_not_empty && produce::topic_has_messages(&settings, &topic).await? {
                eprintln!("topic {topic} already holds messages: nothing published (--skip-if-not-empty)");
                return Ok(());
            }
            produce::publish(&settings, &topic, &records, rate).await?;
            Ok(())
        }
        Command::Maintain { no_vacuum } => {
            use crate::maintain::{Vacuum, all, render};
            let lake = crate::lake::Lake::new(&settings);
            lake.check().await?;
            let vacuum = if no_vacuum { Vacuum::Off } else { Vacuum::Orphans };
            print!("{}", render(&all(&lake, &settings, vacuum).await?));
            Ok(())
        }
        Command::Rebuild { layer, from_version, resume } => {
            print!("{}", crate::rebuild::run(settings, layer, from_version.max(0), resume).await?);
            Ok(())
        }
        Command::Scrub { ingested_before } => {
            let before_us = parse_time(&ingested_before)?;
            print!("{}", crate::rebuild::scrub(settings, before_us).await?);
            Ok(())
        }
        Command::Query { sql, limit } => {
            print!("{}", crate::query::run(&settings, &sql, limit).await?);
            Ok(())
        }
        Command::Status { json } => {
            print!("{}", status::report(&settings, json).await?);
            Ok(())
        }
        Command::Bench {
            events,
            partitions,
            rate,
            freshness_secs,
            max_latency_ms,
            hold_batches_ms,
            align_topics_ms,
            max_records,
            no_peer,
            peer_events,
            no_scaling,
            cdc,
            python,
            out,
            keep,
        } => {
            if events < 10 || rate == 0 || freshness_secs == 0 || partitions < 1 || max_records == 0 {
                return Err(Error::Config(
                    "bench: --events must be at least 10, --rate, --freshness-secs, --partitions and --max-records at least 1"
                        .into(),
                ));
            }
            let args = crate::bench::BenchArgs {
                events,
                partitions,
                rate,
                freshness_secs,
                max_latency_ms,
                hold_batches_ms,
                align_topics_ms,
                max_records,
                peer: !no_peer,
                peer_events,
                scaling: !no_scaling,
                cdc,
                out,
                python,
                keep,
            };
            let report = crate::bench::run(&settings, &args).await?;
            println!("{report}");
            Ok(())
        }
    }
}

/// `--ingested-before`: an RFC 3339 time, or a day (midnight UTC), as microseconds since the epoch.
fn parse_time(text: &str) -> Result<i64> {
    let t = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(t.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros());
    }
    Err(crate::error::Error::Config(format!(
        "--ingested-before: '{text}' is neither an RFC 3339 time (2026-11-20T09:30:00Z) nor a day (2026-11-20)"
    )))
}
